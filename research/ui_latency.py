"""Perceived latency of the workbench (issue 15): in Chromium, Predict click → prediction shown → every panel drawn.

Starts `app.py` on a checkpoint (its own temporary database, torch limited to `threads`) on a loopback
port, opens it in Debian's Chromium through Playwright, and for each everyday sentence types the
sentence, head and tail, clicks Predict and takes two timestamps: when the prediction's summary
appears, and when the recall chart, the attention heatmap and the reranking table show this
prediction. Beside them, the server's own total (the latency line of the page). Medians over
`rounds` passes over the sentences, after one warm-up prediction.

    python -m research ui-latency --output results/ui_latency.json
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

SENTENCES = [  # (sentence, head, tail): everyday sentences, not FewRel's
    ("Marie Curie worked at the University of Paris, where she taught physics.", "Marie Curie", "University of Paris"),
    ("Toyota was founded by Kiichiro Toyoda in 1937.", "Toyota", "Kiichiro Toyoda"),
    ("The novel Dune was written by Frank Herbert.", "Dune", "Frank Herbert"),
    ("Lyon is a city in the east of France.", "Lyon", "France"),
    ("Barack Obama was born in Honolulu, Hawaii.", "Barack Obama", "Honolulu"),
]

WARM_UP = ("Apple was founded by Steve Jobs.", "Apple", "Steve Jobs")


def measure(checkpoint: Path, threads: int = 2, rounds: int = 3) -> dict:
    """Start the workbench, drive Chromium, return per-click timings and their medians (ms)."""
    from playwright.sync_api import sync_playwright

    from .loadtest import start_server

    from app.browser import missing, open_page

    if missing():
        raise RuntimeError(missing())
    clicks = []
    with tempfile.TemporaryDirectory(prefix="emma-ui-latency-") as tmp:
        process, url = start_server(checkpoint, threads, Path(tmp))
        try:
            with sync_playwright() as p:
                page = open_page(p, url)
                page.locator("#sentence textarea").wait_for()
                for i, item in enumerate([WARM_UP] + SENTENCES * rounds):  # never the same sentence twice in a row
                    timing = _click(page, *item)
                    if i:  # the first is the warm-up
                        clicks.append(timing)
        finally:
            process.kill()
            process.wait()
    keys = ("click_to_prediction_ms", "click_to_all_panels_ms", "server_total_ms")
    return {"checkpoint": str(checkpoint), "threads": threads, "clicks": clicks,
            "median": {k: round(statistics.median(c[k] for c in clicks), 1) for k in keys},
            "max": {k: round(max(c[k] for c in clicks), 1) for k in keys}}


WATCH = """() => {
  // Installed once: each panel's last change, and the first frame the summary shows a new prediction.
  window.__lat = {};
  for (const id of ['recall-plot', 'attention-plot', 'rerank']) {
    new MutationObserver(() => { if (window.__lat.click) window.__lat[id] = performance.now(); })
      .observe(document.querySelector('#' + id), {subtree: true, childList: true, attributes: true, characterData: true});
  }
  document.querySelector('#predict').addEventListener('mousedown', () => {
    const old = document.querySelector('#summary textarea').value;
    window.__lat = {click: performance.now()};
    const frame = () => {
      const v = document.querySelector('#summary textarea').value;
      if (v.startsWith('Predicted') && v !== old) window.__lat.shown = performance.now();
      else requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }, true);
}"""
QUIET_MS = 300  # no panel changed for this long: every panel is drawn


def _click(page, sentence: str, head: str, tail: str) -> dict:
    """One prediction; times measured in the page from the mouse-down on Predict."""
    if not page.evaluate("() => !!window.__lat"):
        page.evaluate(WATCH)
    page.locator("#sentence textarea").fill(sentence)
    page.locator("#head textarea").fill(head)
    page.locator("#tail textarea").fill(tail)
    page.wait_for_function("() => document.querySelector('#mark-hint textarea').value.startsWith('Ready')", polling=10)
    page.wait_for_timeout(200)  # the marking preview's own event is over before the click
    page.click("#predict")
    page.wait_for_function(f"""() => {{
        const t = window.__lat, now = performance.now();
        const panels = ['recall-plot', 'attention-plot', 'rerank'].map(id => t[id]);
        return t.shown && panels.every(x => x) && now - Math.max(...panels) > {QUIET_MS};
    }}""", polling=20)
    t = page.evaluate("() => window.__lat")
    latency = page.locator("#latency").inner_text()
    return {"sentence": sentence, "click_to_prediction_ms": round(t["shown"] - t["click"], 1),
            "click_to_all_panels_ms": round(max(t[k] for k in ("recall-plot", "attention-plot", "rerank")) - t["click"], 1),
            "server_total_ms": float(latency.split("total")[1].split("ms")[0])}
