"""Bounded work, file permissions, passwords and login rate limits, idempotent writes, input hygiene
(handlers and helpers called directly; the HTTP-level checks are in test_app_client.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import gradio as gr
import pytest

from app import feedback_tab
from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.feedback_tab import FeedbackTab
from app.predict_tab import PredictTab
from app.relations_tab import RelationsTab
from app.security import MAX_FAILURES, WINDOW_S, AuthFileError, Authenticator, hash_password, read_auth_file, verify_password
from app.session import BadInput, resolve_entities
from app.storage import Store
from app.workbench import Workbench

SENTENCE = "Apple was founded by Steve Jobs in 1976 ."


@pytest.fixture
def wb(tiny_extractor, toy_descriptions, tmp_path):
    return Workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions), load_examples())


def mode(path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


# ---------------------------------------------------------------------- passwords and logins


def test_password_hashes_are_salted_scrypt(tmp_path):
    a, b = hash_password("secret"), hash_password("secret")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert verify_password("secret", a) and not verify_password("Secret", a) and not verify_password("secret", "md5$x")
    path = tmp_path / "users.txt"
    path.write_text(f"# comment\n\nann:{a}\n")
    assert read_auth_file(path) == {"ann": a}
    path.write_text("ann:secret\n")
    with pytest.raises(AuthFileError, match="line 1"):
        read_auth_file(path)


def test_failed_logins_are_rate_limited_per_user():
    now = [0.0]
    auth = Authenticator({"ann": hash_password("pw"), "bob": hash_password("pw2")}, clock=lambda: now[0])
    assert auth("ann", "pw")
    for _ in range(MAX_FAILURES):
        assert not auth("ann", "guess")
    assert not auth("ann", "pw"), "locked: even the right password is refused"
    assert auth("bob", "pw2"), "another user is not locked out"
    now[0] += WINDOW_S + 1
    assert auth("ann", "pw")
    for _ in range(MAX_FAILURES + 2):
        assert not auth("nobody", "pw")


# ---------------------------------------------------------------------- files


def test_database_and_exports_are_private(tiny_extractor, toy_descriptions, tmp_path):
    db = tmp_path / "new" / "folder" / "wb.db"
    wb = Workbench(Engine(tiny_extractor), Store(db), Catalogue.from_descriptions(toy_descriptions))
    assert mode(db) == 0o600 and mode(db.parent) == 0o700
    assert all(mode(p) == 0o600 for p in db.parent.iterdir())  # -wal and -shm too
    session = wb.open_session("user:ann")
    _, session = PredictTab(wb).predict(SENTENCE, "Apple", "Steve Jobs", {}, session)
    FeedbackTab(wb).feedback("correct", None, None, session)
    paths, _ = FeedbackTab(wb).export_feedback("all", "", False, session)
    paths.append(RelationsTab(wb).export_relations(session))
    assert all(mode(p) == 0o600 and mode(Path(p).parent) == 0o700 for p in paths)


def test_old_exports_are_deleted_on_a_timer(wb, monkeypatch):
    first = wb.export_folder()
    (first / "feedback.jsonl").write_text("{}")
    monkeypatch.setattr("app.workbench.EXPORT_TTL_S", -1)
    wb.export_folder()
    assert not first.exists()


# ---------------------------------------------------------------------- bounded work


def test_every_sentence_handler_has_a_length_limit(wb):
    tab = PredictTab(wb)
    long = "Apple was founded by Steve Jobs " + "x" * 2000
    marked, hint = tab.preview(long, "Apple", "Steve Jobs", {})
    assert hint == "The sentence is longer than 2000 characters; shorten it." and marked["entities"] == []
    with pytest.warns(UserWarning, match="longer than 2000"):
        head, _, spans, _, _ = tab.mark_head(long, [0, 5], "", "", {})
    assert head == "" and spans == {}
    with pytest.raises(gr.Error, match="at most 2000"):
        tab.predict(long, "Apple", "Steve Jobs", {}, wb.open_session("user:ann"))


def test_export_rows_are_capped(wb, monkeypatch):
    session = wb.open_session("user:ann")
    _, session = PredictTab(wb).predict(SENTENCE, "Apple", "Steve Jobs", {}, session)
    fb = FeedbackTab(wb)
    for n in range(3):
        fb.feedback("correct", None, f"note {n}", session)  # three judgements (the same one again is saved once)
    monkeypatch.setattr(feedback_tab, "MAX_EXPORT_ROWS", 2)
    with pytest.raises(gr.Error, match="More than 2 rows match; narrow the filters"):
        fb.export_feedback("all", "", False, session)
    monkeypatch.setattr(feedback_tab, "MAX_TABLE_ROWS", 2)
    assert len(fb.feedback_view("all", "", False, session)) == 2


# ---------------------------------------------------------------------- idempotent writes


def test_a_repeated_request_id_returns_the_first_result_and_writes_nothing(wb):
    relations, fb = RelationsTab(wb), FeedbackTab(wb)
    session = wb.open_session("user:ann")
    session, first = relations.add_relation("employer", "person who works for it", session, "add-1")
    again, second = relations.add_relation("employer", "person who works for it", session, "add-1")
    assert first == second and again["user"] == {"employer": "person who works for it"}
    session, _ = relations.edit_relation("employer", "pays this person", session, "edit-1")
    assert relations.edit_relation("employer", "something else", session, "edit-1")[1].startswith("Updated 'employer'")
    assert wb.store.user_relations("user:ann") == {"employer": "pays this person"}
    session, deleted = relations.delete_relation("employer", session, "del-1")
    assert relations.delete_relation("employer", session, "del-1")[1] == deleted  # not "You have no relation named"

    _, session = PredictTab(wb).predict(SENTENCE, "Apple", "Steve Jobs", {}, session)
    _, status = fb.feedback("correct", None, "once", session, "fb-1")
    assert fb.feedback("correct", None, "once", session, "fb-1")[1] == status
    assert wb.store.count_feedback() == 1
    fb.feedback("correct", None, "no id: a new row each time", session)
    assert wb.store.count_feedback() == 2
    with pytest.raises(gr.Error, match="already used for another action"):
        fb.feedback("correct", None, None, session, "add-1")
    # Ids belong to their owner: bob's "fb-1" is his own, saved as a new row (his first: his numbers say nothing of
    # how many rows ann has).
    bob = {**wb.open_session("user:bob"), "last": session["last"]}
    assert fb.feedback("correct", None, None, bob, "fb-1")[1].startswith("Saved feedback #1:")
    assert wb.store.count_feedback() == 3


def test_a_repeated_import_writes_nothing(wb, tmp_path):
    relations = RelationsTab(wb)
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"employer": "person who works for it"}))
    session, first = relations.import_relations(str(path), wb.open_session("user:ann"), "imp-1")
    path.write_text(json.dumps({"employer": "changed in between"}))
    _, second = relations.import_relations(str(path), session, "imp-1")
    assert first == second and wb.store.user_relations("user:ann") == {"employer": "person who works for it"}


def test_repeated_example_writes_write_nothing(wb, tmp_path):
    relations, fb = RelationsTab(wb), FeedbackTab(wb)
    _, session = PredictTab(wb).predict(SENTENCE, "Apple", "Steve Jobs", {}, wb.open_session("user:ann"))
    fb.feedback("correct", None, None, session)
    [example] = wb.store.examples("user:ann")
    _, first = relations.remove_example(str(example["id"]), session, "rm-1")
    assert relations.remove_example(str(example["id"]), session, "rm-1")[1] == first  # not "You have no example"
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps({"tokens": SENTENCE.split(), "head": [0, 1], "tail": [4, 6], "relation": "born in"}) + "\n")
    _, first = relations.import_examples(str(path), session, "imp-ex")
    assert relations.import_examples(str(path), session, "imp-ex")[1] == first  # not "already an example"
    assert [e["relation"] for e in wb.store.examples("user:ann")] == ["born in"]


# ---------------------------------------------------------------------- input hygiene


@pytest.mark.parametrize("head", ["\u200b", "\u200b\u200d", "\x07", "\ufeff"])
def test_invisible_entities_are_refused(head):
    sentence = f"Apple {head} was founded by Steve Jobs ."
    with pytest.raises(BadInput, match="The head entity has no visible characters"):
        resolve_entities(sentence, head, "Steve Jobs", {})


def test_invisible_names_and_selections_are_refused(wb):
    session = wb.open_session("user:ann")
    with pytest.raises(gr.Error, match="Give the relation a name"):
        RelationsTab(wb).add_relation("\u200b\u200c", "a description", session)
    with pytest.raises(gr.Error, match="The description has no visible characters"):
        RelationsTab(wb).add_relation("employer", "\u2063\u200b", session)
    sentence = "Apple \u200b was founded by Steve Jobs ."
    with pytest.warns(UserWarning, match="Select some words"):
        PredictTab(wb).mark_head(sentence, [6, 7], "", "", {})


def test_malformed_choices_get_the_apps_own_message(wb):
    session = wb.open_session("user:ann")
    with pytest.raises(gr.Error, match="Tick relations of the catalogue"):
        RelationsTab(wb).set_shown_enabled([{"label": "x"}], "", session)
    with pytest.raises(gr.Error, match="'no such' is not in the catalogue"):
        RelationsTab(wb).set_shown_enabled(["no such"], "", session)
    assert len(FeedbackTab(wb).feedback_view(["junk"], "", False, session)) == 0  # an unknown filter shows all rows


def test_a_racing_duplicate_gets_the_first_result_and_the_stored_session(wb, monkeypatch):
    relations = RelationsTab(wb)
    session, _ = relations.add_relation("employer", "person who works for it", wb.open_session("user:ann"))
    session, first = relations.edit_relation("employer", "pays this person", session, "e-1")
    monkeypatch.setattr(wb, "replay", lambda *args: None)  # both requests passed the first check before either wrote
    again, second = relations.edit_relation("employer", "other words", session, "e-1")
    assert second == first and again["user"] == {"employer": "pays this person"} == wb.store.user_relations("user:ann")
