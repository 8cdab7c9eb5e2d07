"""Debian's Chromium driven through playwright: the one browser the workbench's own tools and tests use.

Never a downloaded browser: `/usr/bin/chromium` (apt-get install chromium), headless, without the sandbox
(containers), GPU or background traffic. Used by `python -m app.screenshot`, `python -m research ui-latency`
and the real-browser tests.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def open_page(playwright, url: str, width: int = 1400, height: int = 1000, timeout_ms: int = 30_000):
    """A new Chromium page of `width` × `height` pixels at `url` (its browser closes with `playwright`)."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    return page
