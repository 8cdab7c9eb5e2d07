"""Take the README screenshot: the workbench after predicting the first example, in Debian's Chromium.

    python -m app.screenshot                                   # checkpoints/emma-minilm -> assets/workbench.png
    python -m app.screenshot --checkpoint runs/demo --out /tmp/workbench.png

Uses a throw-away database and never downloads a browser (it drives /usr/bin/chromium through the
playwright package).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import emma

from .browser import missing, open_page
from .catalogue import ASSETS
from .layout import launch
from .main import AppError, create_app



def take(checkpoint: Path, out: Path, width: int = 1400) -> Path:
    """Launch the app on `checkpoint`, predict the prefilled example, save a full-page screenshot to `out`."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        demo = create_app(checkpoint, Path(tmp) / "workbench.db")
        _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
        try:
            with sync_playwright() as p:
                page = open_page(p, url, width, timeout_ms=60_000)
                page.locator("#sentence textarea").wait_for()
                page.locator("#mark-hint textarea").wait_for()
                page.wait_for_timeout(1000)
                page.click("#predict")
                page.locator("#recall-plot").get_by_text("Recall: top").wait_for()
                page.locator("#attention-plot").get_by_text("Which description words").wait_for()
                page.wait_for_timeout(300)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                page.context.browser.close()
        finally:
            demo.close()
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m app.screenshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path(emma.DEFAULT_CHECKPOINT), help="default: %(default)s")
    parser.add_argument("--out", type=Path, default=ASSETS / "workbench.png", help="default: %(default)s")
    args = parser.parse_args(argv)
    if missing():
        parser.error(missing())
    try:
        print(take(args.checkpoint, args.out))
    except AppError as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
