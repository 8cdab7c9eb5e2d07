"""The Annotate tab in a real browser (Debian's Chromium through Playwright): import a small file, judge
items by keyboard only (1, Enter, N, U, S), check keys do nothing while typing, reload, find the position
kept, export. Prints (does not assert) the judgement → next item time the page measured itself.

EMMA_ANNOTATE_CHECKPOINT=checkpoints/emma-minilm runs it on that checkpoint and the full catalogue (135
relations in force) instead of the tiny model and four toy relations: how the README's figure was measured.
"""

from __future__ import annotations

import json
import os

import pytest

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.layout import build_demo, launch
from app.storage import Store
from app.workbench import Workbench
from conftest import TOY_SENTENCES
from test_app_browser import ARGS, CHROMIUM, TIMEOUT_MS, _require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def progress_is(page, text: str) -> None:
    page.wait_for_function("(t) => { const el = document.querySelector('#annotate-progress'); return el && el.innerText.includes(t); }",
                           arg=text, polling=10)


def test_browser_import_judge_by_keyboard_reload_keeps_position(tiny_extractor, toy_descriptions, tmp_path, capsys):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    rows = []
    for relation, sentence, head, tail in TOY_SENTENCES[:6]:
        h, t = sentence.index(head), sentence.index(tail)
        rows.append({"text": sentence, "head": [h, h + len(head)], "tail": [t, t + len(tail)]})
    source = tmp_path / "sentences.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")

    store = Store(tmp_path / "workbench.db")
    checkpoint = os.environ.get("EMMA_ANNOTATE_CHECKPOINT")
    if checkpoint:
        from emma import Extractor

        wb = Workbench(Engine(Extractor.load(checkpoint, device="cpu")), store, Catalogue.load(), load_examples())
    else:
        wb = Workbench(Engine(tiny_extractor), store, Catalogue.from_descriptions(toy_descriptions), load_examples())
    demo = build_demo(wb)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.get_by_role("tab", name="Annotate").click()
            with page.expect_file_chooser() as chooser:
                page.click("#annotate-file")
            chooser.value.set_files(str(source))
            expect(page.locator("#annotate-report")).to_contain_text("Imported 6 instances")
            expect(page.locator("#annotate-report")).to_contain_text("line 7: not JSON")
            progress_is(page, "1 / 6")
            expect(page.locator("#annotate-sentence")).to_contain_text("Apple")
            page.locator("#annotate-suggestion").click()  # focus leaves the upload widgets

            for key, expected in (("1", "2 / 6"), ("Enter", "3 / 6"), ("n", "4 / 6"), ("u", "3 / 6"), ("s", "4 / 6")):
                page.keyboard.press(key)
                progress_is(page, expected)

            # Keys typed in a text box are text, not shortcuts: "/" focuses the search box, "n" and "s" go into it.
            page.keyboard.press("/")
            page.keyboard.type("ns")
            page.wait_for_timeout(500)
            progress_is(page, "4 / 6")
            page.keyboard.press("Escape")
            page.locator("#annotate-suggestion").click()

            queue_id, owner = queue_of(store)
            judged = [(j["position"], j["verdict"]) for j in store.judgements(queue_id, owner)]
            assert judged == [(0, "accepted"), (1, "accepted"), (2, "skipped")]
            timings = page.evaluate("() => window.emmaAnnotateTimings")

            # Reload: the tab opens the same queue at the first item not judged.
            page.reload()
            page.get_by_role("tab", name="Annotate").click()
            progress_is(page, "4 / 6")
            expect(page.locator("#annotate-progress [data-position]")).to_have_attribute("data-position", "3")

            page.locator("#annotate-suggestion").click()
            page.keyboard.press("Enter")
            progress_is(page, "5 / 6")
            page.get_by_text("Export your judgements of this queue").click()
            page.click("#annotate-export")
            expect(page.locator("#annotate-export-status textarea")).to_have_value(
                "Exported 3 judged items (0 none of these: relation null and negative true in the JSONL, no_relation in Label Studio and doccano).")
            browser.close()
    finally:
        demo.close()
    with capsys.disabled():
        print(f"\njudgement key → next item shown (ms, measured in the page): {[round(t) for t in timings]}")


def queue_of(store):
    """(id, owner) of the one queue the test imported."""
    with store.connect() as db:
        return db.execute("select id, owner from annotation_queues").fetchone()
