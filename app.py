"""Start the EMMA workbench (a Gradio app on 127.0.0.1:7860 by default).

    python app.py                                   # the shipped checkpoint, checkpoints/emma-minilm
    python app.py --checkpoint runs/demo --port 7861 --auth ann:secret

Everything but argument parsing lives in `app/` (`app.main.create_app` builds the Blocks).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import emma  # noqa: E402
from app.layout import launch  # noqa: E402
from app.main import AppError, create_app, default_db_path  # noqa: E402


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD, e.g. --auth ann:secret")
    return user, password


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="EMMA workbench: mark two entities in a sentence, see which relation EMMA predicts and why, give feedback.",
        epilog="Example: python app.py --checkpoint checkpoints/emma-minilm --port 7860",
    )
    parser.add_argument("--checkpoint", type=Path, default=Path(emma.DEFAULT_CHECKPOINT),
                        help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--db", type=Path, default=default_db_path(),
                        help="SQLite file for your relations and feedback (default: %(default)s, i.e. "
                             "$XDG_DATA_HOME/emma/workbench.db, else ~/.local/share/emma/workbench.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for the LAN)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--auth", type=parse_auth, action="append", metavar="USER:PASSWORD",
                        help="require a login; repeat for several users. Each user's relations and feedback are kept apart.")
    parser.add_argument("--admin", action="append", default=[], metavar="USER",
                        help="a login (from --auth) who may view and export everyone's feedback; repeatable. "
                             "Without it nobody sees another user's rows.")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    args = parser.parse_args(argv)
    users = {user for user, _ in args.auth or []}
    unknown = [a for a in args.admin if a not in users]
    if unknown:
        parser.error(f"--admin {unknown[0]} is not a login given with --auth; admins need a login")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = create_app(args.checkpoint, args.db, admins=args.admin)
    except AppError as e:
        parser.exit(2, f"error: {e}\n")
    launch(demo, host=args.host, port=args.port, auth=args.auth, share=args.share)


if __name__ == "__main__":
    main()
