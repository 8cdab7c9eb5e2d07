"""'Improve the model from my labels' in a real browser: log in, fine-tune (a real child process on the tiny
model), see the before/after table, switch to the new version, find the choice kept after a reload, then delete it."""

from __future__ import annotations

import re
import time

import pytest

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.layout import build_demo, launch
from app.storage import Store, replace_example
from app.workbench import Workbench

from app import browser
from test_app_browser import _require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("fresh_accelerate")]


def test_browser_improve_the_model_then_use_it(tiny_extractor, toy_instances, toy_descriptions, tmp_path, record_property):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    store = Store(tmp_path / "workbench.db")
    wb = Workbench(Engine(tiny_extractor), store, Catalogue.from_descriptions(toy_descriptions), load_examples())
    with store.transaction() as db:  # ann's earlier judgements: three labelled sentences of each of four relations
        for i in toy_instances:
            replace_example(db, "user:ann", list(i.tokens), list(i.head), list(i.tail), i.relation, None)
    _, url, _ = launch(build_demo(wb), port=None, prevent_thread_lock=True, quiet=True, auth=[("ann", "pw")])
    try:
        with sync_playwright() as p:
            page = browser.open_page(p, url, timeout_ms=30_000)
            page.get_by_label("username").fill("ann")
            page.get_by_label("password").fill("pw")
            page.get_by_role("button", name="Login").click()
            page.get_by_role("tab", name="Feedback").click()

            t0 = time.perf_counter()
            page.click("#improve-start")
            status = page.locator("#improve-status textarea")
            # The start's line, or the first progress line that replaces it within a second: both say what trains.
            expect(status).to_have_value(re.compile("^(Started: f|F)ine-tuning on 12 labelled sentences of 4 relations"))
            expect(status).to_have_value(re.compile("is ready"), timeout=300_000)
            record_property("finetune_tiny_s", round(time.perf_counter() - t0, 1))
            expect(page.locator("#improve-report")).to_contain_text("fused (the shipped rule)")
            [version] = store.model_versions("user:ann")

            page.locator("#improve-model input").click()
            page.get_by_role("option", name=re.compile(version["name"])).click()
            expect(status).to_have_value(re.compile(f"now use {version['name']}"))
            assert store.model_choice("user:ann") == version["name"]
            expect(page.locator("#model-line")).to_contain_text(f"{version['checkpoint']} (your fine-tuned version)")

            page.reload()
            page.get_by_role("tab", name="Feedback").click()
            expect(page.locator("#improve-model input")).to_have_value(re.compile(version["name"]))
            expect(page.locator("#model-line")).to_contain_text(f"{version['checkpoint']} (your fine-tuned version)")

            # The version in use cannot be deleted; once ann is back on the server's model it can, files and all.
            page.locator("#improve-delete-choice input").click()
            page.get_by_role("option", name=re.compile(version["name"])).click()
            page.click("#improve-delete")
            expect(page.locator(".toast-body")).to_contain_text("choose another model for them first")
            assert (wb.finetuner.models_dir / version["name"]).is_dir()
            page.locator("#improve-model input").click()
            page.get_by_role("option", name=re.compile("server model")).click()
            expect(status).to_have_value(re.compile("now use the server model"))
            expect(page.locator("#model-line")).not_to_contain_text("your fine-tuned version")
            page.click("#improve-delete")
            expect(status).to_have_value(re.compile(f"Deleted {version['name']}"))
            assert store.model_versions("user:ann") == [] and not (wb.finetuner.models_dir / version["name"]).exists()
            expect(page.locator("#improve-model input")).to_have_value(re.compile("server model"))

            # Log out ends this browser's login: the login form again, and nothing of ann's behind it.
            page.click("#logout")
            expect(page.get_by_label("username")).to_be_visible()
            expect(page.locator("#model-line")).to_have_count(0)
            page.context.browser.close()
    finally:
        wb.finetuner.close()
