"""Start the EMMA workbench (a Gradio app on 127.0.0.1:7860 by default).

    python app.py                                   # the shipped checkpoint, checkpoints/emma-minilm
    python app.py --hash-password >> users.txt      # asks for a password, prints its scrypt hash (prefix it with "ann:")
    python app.py --auth-file users.txt --admin ann --port 7861

Everything but argument parsing lives in `app/` (`app.main.create_app` builds the Blocks).
"""

from __future__ import annotations

import argparse
import atexit
import getpass
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue rebuilds a pandas summary of up to 10,000 past events after every event (for its monitoring
# page, unused here): 2-6 ms of CPU per request on the cores that serve the model. Once per 1,000 events is enough.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Gradio's uploads and its copies of exported files go to a folder only this user can read (mkdtemp: 0700),
# removed when the process ends.
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="emma-workbench-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], True)

import emma  # noqa: E402
from app.layout import launch  # noqa: E402
from app.main import AppError, create_app, default_db_path  # noqa: E402
from app.security import AuthFileError, Authenticator, hash_password, read_auth_file  # noqa: E402


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD, e.g. --auth ann:secret")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="EMMA workbench: mark two entities in a sentence, see which relation EMMA predicts and why, give feedback.",
        epilog="Example: python app.py --checkpoint checkpoints/emma-minilm --port 7860 --auth-file users.txt --admin ann",
    )
    parser.add_argument("--checkpoint", type=Path, default=Path(emma.DEFAULT_CHECKPOINT),
                        help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--db", type=Path, default=default_db_path(),
                        help="SQLite file for your relations and feedback (default: %(default)s, i.e. "
                             "$XDG_DATA_HOME/emma/workbench.db, else ~/.local/share/emma/workbench.db; created 0600)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for the LAN)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--auth-file", type=Path, metavar="FILE",
                        help="require a login; FILE holds USER:HASH lines (HASH from --hash-password). "
                             "Each user's relations and feedback are kept apart.")
    parser.add_argument("--auth", type=parse_auth, action="append", metavar="USER:PASSWORD",
                        help="a login given on the command line (visible in ps; prefer --auth-file); repeatable")
    parser.add_argument("--admin", action="append", default=[], metavar="USER",
                        help="a login (from --auth-file or --auth) who may view and export everyone's feedback; repeatable. "
                             "Without it nobody sees another user's rows.")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a host name the server also answers to (besides the --host address), e.g. behind a proxy; repeatable")
    parser.add_argument("--finetune-from", type=Path, action="append", default=[], metavar="CHECKPOINT",
                        help="another model 'Improve the model from my labels' can start from, e.g. checkpoints/emma-mpnet "
                             "(larger: more gain from the same labels in a new domain, several times slower to train and "
                             "to predict; results/FINETUNE.md); repeatable")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password (twice, not echoed) and print its hash for an --auth-file line, then exit")
    return parser


def read_users(parser: argparse.ArgumentParser, args) -> Authenticator | None:
    """The logins of --auth-file and --auth as one rate-limited `Authenticator` (None: no login)."""
    users = {}
    if args.auth_file:
        try:
            users.update(read_auth_file(args.auth_file))
        except (OSError, AuthFileError) as e:
            parser.error(f"--auth-file: {e}")
    if args.auth:
        users.update(Authenticator.from_passwords(args.auth).users)
    unknown = [a for a in args.admin if a not in users]
    if unknown:
        parser.error(f"--admin {unknown[0]} is not a login given with --auth-file or --auth; admins need a login")
    return Authenticator(users) if users else None


def print_hash() -> None:
    password = getpass.getpass("Password: ")
    if not password or password != getpass.getpass("Again: "):
        sys.exit("error: the passwords are empty or differ")
    print(hash_password(password))


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hash_password:
        return print_hash()
    auth = read_users(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = create_app(args.checkpoint, args.db, admins=args.admin, finetune_from=args.finetune_from)
    except AppError as e:
        parser.exit(2, f"error: {e}\n")
    launch(demo, host=args.host, port=args.port, auth=auth, share=args.share, allowed_host=args.allowed_host)


if __name__ == "__main__":
    main()
