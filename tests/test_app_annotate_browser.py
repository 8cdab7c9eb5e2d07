"""The Annotate tab in a real browser (Debian's Chromium through Playwright): import a small file, judge
items by keyboard only (1, Enter, N, U, S), check keys do nothing while typing, reload, find the position
kept, export. Prints (does not assert) the judgement → next item time the page measured itself.

EMMA_ANNOTATE_CHECKPOINT=checkpoints/emma-minilm runs it on that checkpoint and the full catalogue (135
relations in force) instead of the tiny model and four toy relations: how the README's figure was measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.layout import build_demo, launch
from app.storage import Store
from app.workbench import Workbench
from conftest import TOY_SENTENCES
from app import browser
from test_app_browser import TIMEOUT_MS, _require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def progress_is(page, text: str) -> None:
    page.wait_for_function("(t) => { const el = document.querySelector('#annotate-progress'); return el && el.innerText.includes(t); }",
                           arg=text, polling=10)


KEYS = ["1", "Enter", "n", "u", "n", "s", "Enter", "2", "Enter", "n", "Enter", "Enter"]  # ten judged, one undone


def test_browser_import_judge_by_keyboard_reload_export_reimport(tiny_extractor, toy_descriptions, tmp_path, capsys):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    rows = []
    for relation, sentence, head, tail in TOY_SENTENCES:
        h, t = sentence.index(head), sentence.index(tail)
        rows.append({"text": sentence, "head": [h, h + len(head)], "tail": [t, t + len(tail)]})
    source = tmp_path / "sentences.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    n = len(rows)

    store = Store(tmp_path / "workbench.db")
    checkpoint = os.environ.get("EMMA_ANNOTATE_CHECKPOINT")
    if checkpoint:
        from emma import Extractor

        wb = Workbench(Engine(Extractor.load(checkpoint, device="cpu")), store, Catalogue.load(), load_examples())
    else:
        wb = Workbench(Engine(tiny_extractor), store, Catalogue.from_descriptions(toy_descriptions), load_examples())
    in_force = list(wb.relations(wb.new_session()))
    target = "capital of" if "capital of" in in_force else in_force[0]  # a relation to find by typing
    demo = build_demo(wb)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            page = browser.open_page(p, url, timeout_ms=TIMEOUT_MS)
            page.get_by_role("tab", name="Annotate").click()
            upload(page, source)
            expect(page.locator("#annotate-report")).to_contain_text(f"Imported {n} instances")
            expect(page.locator("#annotate-report")).to_contain_text(f"line {n + 1}: not JSON")
            progress_is(page, f"1 / {n}")
            expect(page.locator("#annotate-sentence")).to_contain_text("Apple")
            page.locator("#annotate-suggestion").click()  # focus leaves the upload widgets

            done = 0
            for key in KEYS:
                page.keyboard.press(key)
                done += -1 if key == "u" else 1
                progress_is(page, f"{done + 1} / {n}")
            assert done == 10

            # Keys typed in a text box are text, not shortcuts: "/" focuses the search box, where the letters of a
            # relation's name (n, s, u in "capital of") only filter the relations; Enter picks the match and accepts it.
            page.keyboard.press("/")
            page.keyboard.type(target)
            expect(page.get_by_role("option", name=target, exact=True)).to_be_visible()
            progress_is(page, f"11 / {n}")
            page.keyboard.press("Enter")
            progress_is(page, f"12 / {n}")
            assert store.judgements(*queue_of(store))[-1]["relation"] == target
            page.keyboard.press("u")  # the focus left the box: keys act again
            progress_is(page, f"11 / {n}")

            queue_id, owner = queue_of(store)
            verdicts = [j["verdict"] for j in store.judgements(queue_id, owner)]
            assert verdicts == ["accepted", "accepted", "none", "skipped", "accepted", "accepted", "accepted", "none",
                                "accepted", "accepted"]
            timings = page.evaluate("() => window.emmaAnnotateTimings")

            # Reload: the tab opens the same queue at the first item not judged.
            page.reload()
            page.get_by_role("tab", name="Annotate").click()
            progress_is(page, f"11 / {n}")
            expect(page.locator("#annotate-progress [data-position]")).to_have_attribute("data-position", "10")

            # Skipping the last two finishes the queue; Enter then is refused in a toast, one panel marked, not five.
            page.locator("#annotate-suggestion").click()
            page.keyboard.press("s")
            progress_is(page, f"12 / {n}")
            page.keyboard.press("s")
            progress_is(page, f"Every item of this queue is done ({n} / {n}, judged or skipped)")
            page.keyboard.press("Enter")
            expect(page.locator(".toast-body")).to_contain_text("Every item of this queue is done: press U to undo")
            expect(page.locator("#annotate-status")).to_contain_text("Error")
            for panel in ("#annotate-sentence", "#annotate-progress", "#annotate-suggestion", "#annotate-order"):
                expect(page.locator(panel)).not_to_contain_text("Error")

            # Export, then import the Label Studio file again: the same sentences, spans and labels.
            page.get_by_text("Export your judgements of this queue").click()
            page.click("#annotate-export")
            expect(page.locator("#annotate-export-status textarea")).to_have_value(
                "Exported 9 judged items (2 none of these: relation null and negative true in the JSONL, no_relation in Label Studio and doccano).")
            expect(page.locator("#annotate-files")).to_contain_text("annotations.labelstudio")
            (labelstudio,) = Path(wb._exports.name).glob("*/annotations.labelstudio.json")
            again = tmp_path / "again.json"
            again.write_bytes(labelstudio.read_bytes())
            page.locator("#annotate-name input, #annotate-name textarea").first.fill("again")
            upload(page, again)
            expect(page.locator("#annotate-report")).to_contain_text("Imported 9 instances into the queue 'again' (labelstudio format).")
            page.context.browser.close()
    finally:
        demo.close()
    items = {i["position"]: i for i in store.queue_items(queue_id)}
    expected = sorted((tuple(items[j["position"]]["tokens"]), tuple(items[j["position"]]["head"]), tuple(items[j["position"]]["tail"]),
                       j["relation"] or "no_relation") for j in store.judgements(queue_id, owner) if j["verdict"] != "skipped")
    (reimported,) = [q for q in store.queues(owner) if q["name"] == "again"]
    got = sorted((tuple(i["tokens"]), tuple(i["head"]), tuple(i["tail"]), i["gold"]) for i in store.queue_items(reimported["id"]))
    assert got == expected and len(got) == 9
    with capsys.disabled():
        print(f"\njudgement key → next item shown (ms, measured in the page): {[round(t) for t in timings]}")


def upload(page, path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click("#annotate-file")
    chooser.value.set_files(str(path))


def queue_of(store):
    """(id, owner) of the one queue the test imported."""
    with store.connect() as db:
        return db.execute("select id, owner from annotation_queues").fetchone()


def test_browser_a_first_visit_tries_the_queue_on_the_example_sentences(tiny_extractor, toy_descriptions, tmp_path):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    examples = load_examples()
    store = Store(tmp_path / "workbench.db")
    demo = build_demo(Workbench(Engine(tiny_extractor), store, Catalogue.from_descriptions(toy_descriptions), examples))
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            page = browser.open_page(p, url, timeout_ms=TIMEOUT_MS)
            page.get_by_role("tab", name="Annotate").click()
            expect(page.locator("#annotate-progress")).to_contain_text("try the example sentences")
            page.click("#annotate-sample")
            expect(page.locator("#annotate-report")).to_contain_text(
                f"Imported {len(examples)} instances into the queue 'Example sentences'")
            progress_is(page, f"1 / {len(examples)}")
            expect(page.locator("#annotate-sentence")).to_contain_text(examples[0]["head_text"])
            page.locator("#annotate-suggestion").click()  # focus on the page, not a button
            page.keyboard.press("Enter")  # accept the suggestion
            progress_is(page, f"2 / {len(examples)}")
            page.context.browser.close()
    finally:
        demo.close()
    with store.connect() as db:
        assert db.execute("select name from annotation_queues").fetchall() == [("Example sentences",)]
        assert db.execute("select verdict from annotation_judgements").fetchall() == [("accepted",)]
