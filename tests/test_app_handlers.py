"""The tabs' handlers called directly (no server): marking, prediction, relations, feedback, exports."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest
import torch

import emma
from app import plots
from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.feedback_tab import FeedbackTab
from app.predict_tab import PredictTab
from app.relations_tab import RelationsTab
from app.workbench import Workbench
from app.session import BadInput, resolve_entities, selection_span, utf16_to_index
from app.storage import Store

SENTENCE = "Apple was founded by Steve Jobs in 1976 ."


class Tabs:
    """The shared `Workbench` and its three tabs' handlers, reached as one object (`wb.predict`, `wb.store`, …)."""

    def __init__(self, wb: Workbench) -> None:
        self.shared, self.tabs = wb, (PredictTab(wb), RelationsTab(wb), FeedbackTab(wb))

    def __getattr__(self, name):
        for part in (*self.tabs, self.shared):
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)


def workbench(*args, **kwargs) -> Tabs:
    return Tabs(Workbench(*args, **kwargs))


@pytest.fixture
def wb(tiny_extractor, toy_descriptions, tmp_path):
    return workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions), load_examples())


@pytest.fixture
def session(wb):
    return wb.open_session("user:ann")


def predict(wb, session, sentence=SENTENCE, head="Apple", tail="Steve Jobs", spans=None):
    return wb.predict(sentence, head, tail, spans or {}, session)


# ---------------------------------------------------------------------- entities


def test_resolve_entities_uses_marked_span_then_typed_text():
    text = "Paris is in Paris , France ."
    assert resolve_entities(text, "Paris", "France", {}) == ((0, 5), (20, 26))
    assert resolve_entities(text, "Paris", "France", {"head": [12, 17]}) == ((12, 17), (20, 26))
    # The tail avoids the head: the same word twice is two entities.
    assert resolve_entities(text, "Paris", "paris", {}) == ((0, 5), (12, 17))
    # A stale span (the sentence changed) falls back to the typed text.
    assert resolve_entities("Rome is in Italy .", "Rome", "Italy", {"head": [12, 17]}) == ((0, 4), (11, 16))


@pytest.mark.parametrize("sentence, head, tail, spans, message", [
    ("", "a", "b", {}, "Enter a sentence first."),
    (SENTENCE, "Google", "Steve Jobs", {}, "The head entity 'Google' does not occur in the sentence."),
    (SENTENCE, "Apple", "", {}, "Mark the tail entity"),
    (SENTENCE, "Apple", "Apple", {}, "overlap"),
    (SENTENCE, "Steve Jobs", "Jobs", {"head": [21, 31], "tail": [27, 31]}, "overlap"),
])
def test_resolve_entities_refuses_bad_marks(sentence, head, tail, spans, message):
    with pytest.raises(BadInput, match=message):
        resolve_entities(sentence, head, tail, spans)


def test_selection_span_trims_and_converts_browser_offsets():
    assert selection_span("Apple was founded", [0, 6], "Apple ") == (0, 5)
    text = "😀 Apple"  # the emoji is 2 UTF-16 units in the browser, 1 character in Python
    assert utf16_to_index(text, 3) == 2
    assert selection_span(text, [3, 8], "Apple") == (2, 7)
    assert selection_span("abc", [1, 1], "") is None


def test_mark_buttons_and_preview(wb):
    head, tail, spans, _, hint = wb.mark_head(SENTENCE, [0, 5], "", "", {})
    assert (head, spans) == ("Apple", {"head": [0, 5]}) and hint == "Mark the tail entity: select it in the sentence and press Tail, or type it."
    # What the browser sends with the click: UTF-16 offsets and the selected text.
    head, tail, spans, value, hint = wb.mark_tail(SENTENCE, {"index": [21, 32], "value": "Steve Jobs "}, head, tail, spans)
    assert tail == "Steve Jobs" and spans["tail"] == [21, 31]
    assert (value, hint) == wb.preview(SENTENCE, head, tail, spans)
    assert value == {"text": SENTENCE, "entities": [{"entity": "HEAD", "start": 0, "end": 5}, {"entity": "TAIL", "start": 21, "end": 31}]}
    assert hint.startswith("Ready")
    # The segments HighlightedText receives keep their spaces.
    segments = gr.HighlightedText().postprocess(value).model_dump()
    assert "".join(s["token"] for s in segments) == SENTENCE
    with pytest.warns(UserWarning, match="Select some words"):
        assert wb.mark_head(SENTENCE, None, head, tail, spans)[:3] == (head, tail, spans)
    with pytest.warns(UserWarning, match="Select some words"):
        assert wb.mark_head(SENTENCE, "junk from a client", head, tail, spans)[:3] == (head, tail, spans)
    with pytest.warns(UserWarning, match="Select some words"):
        assert wb.mark_head(SENTENCE, {"index": ["a", None], "value": 3}, head, tail, spans)[:3] == (head, tail, spans)
    # A typed entity that differs from its marked span's text is looked up in the sentence.
    assert SENTENCE[slice(*spans["head"])] == "Apple"
    value, _ = wb.preview(SENTENCE, "1976", tail, spans)
    assert value["entities"][0] == {"entity": "HEAD", "start": 35, "end": 39}
    with pytest.warns(UserWarning, match="overlaps the tail"):
        wb.mark_head(SENTENCE, [27, 31], head, tail, spans)
    assert wb.preview(SENTENCE, "<i>x</i>", "Apple", {})[1] == "The head entity '<i>x</i>' does not occur in the sentence."
    value, hint = wb.preview(SENTENCE, "Apple", "Google", {})
    assert hint == "The tail entity 'Google' does not occur in the sentence."
    assert value["entities"] == [{"entity": "HEAD", "start": 0, "end": 5}]


def test_example_spans_are_exact(wb):
    ex = wb.examples[0]
    spans, marked, hint = wb.example_spans(ex["text"], ex["head_text"], ex["tail_text"])
    assert spans == {"head": ex["head"], "tail": ex["tail"]} and hint.startswith("Ready")
    assert resolve_entities(ex["text"], ex["head_text"], ex["tail_text"], {}) == (tuple(ex["head"]), tuple(ex["tail"]))


# ---------------------------------------------------------------------- prediction



def test_api_predictions_beyond_the_bound_are_refused_at_once(wb, session):
    """/predict from API clients runs outside Gradio's queue: while API_PREDICTIONS are running, one more is
    refused with a plain message (its worker thread is not held); every call gives its slot back."""
    from app.workbench import API_PREDICTIONS

    def free_slots() -> int:
        n = 0
        while wb.api_predictions.acquire(blocking=False):
            n += 1
        for _ in range(n):
            wb.api_predictions.release()
        return n

    assert free_slots() == API_PREDICTIONS
    for _ in range(API_PREDICTIONS):
        wb.api_predictions.acquire()
    with pytest.raises(gr.Error, match=f"busy with {API_PREDICTIONS} API predictions"):
        wb.predict_api(SENTENCE, "Apple", "Steve Jobs", {}, session)
    wb.api_predictions.release()
    record, _ = wb.predict_api(SENTENCE, "Apple", "Steve Jobs", {}, session)
    assert record["head_text"] == "Apple" and free_slots() == 1
    for _ in range(API_PREDICTIONS - 1):
        wb.api_predictions.release()
    with pytest.raises(gr.Error, match="does not occur"):  # a refused input gives its slot back too
        wb.predict_api(SENTENCE, "Google", "Steve Jobs", {}, session)
    assert free_slots() == API_PREDICTIONS


def test_predict_returns_record_and_keeps_it_for_feedback(wb, session, toy_descriptions):
    before = json.dumps(session, sort_keys=True)
    record, new = predict(wb, session)
    assert json.dumps(session, sort_keys=True) == before, "the input session must not be mutated"
    assert record["label"] in toy_descriptions
    assert [name for name, _ in record["recall"]] and len(record["recall"]) == 4
    assert record["recall"] == sorted(record["recall"], key=lambda r: -r[1])
    assert len(record["candidates"]) == wb.engine.k == 2
    assert record["reranked"] and abs(sum(c["probability"] for c in record["candidates_detail"]) - 1) < 1e-4
    assert sorted(c["classifier_rank"] for c in record["candidates_detail"]) == [1, 2]
    att = record["candidates_detail"][0]["attention"]
    assert len(att["tokens"]) == len(att["head"]) == len(att["tail"]) > 0
    assert set(record["timings_ms"]) >= {"encode", "recall", "rerank", "total"}
    assert (record["head"], record["tail"], record["head_text"]) == ([0, 5], [21, 31], "Apple")
    assert "relations" not in record and new["last"]["relations"] == toy_descriptions
    json.dumps(record)  # the API returns it as JSON


def test_predict_matches_the_library(wb, session, tiny_extractor):
    record, _ = predict(wb, session)
    direct = tiny_extractor.predict(SENTENCE, head=(0, 5), tail=(21, 31))
    assert record["label"] == direct.label
    assert record["recall"][0][0] == direct.recall[0][0]
    assert record["score"] == pytest.approx(direct.score, abs=1e-5)


def test_predict_button_fills_every_output_and_the_hint_says_what_was_predicted(wb, session):
    record, session, *panels, hint = wb.predict_and_show(SENTENCE, "Apple", "Steve Jobs", {}, session)
    assert len(panels) == len(wb.show_prediction(session)) and panels[2].startswith("Predicted '")
    assert hint.startswith(f"Predicted: {record['label']}.") and session["last"]["label"] == record["label"]


def test_a_refused_prediction_clears_the_panels_of_the_last_one(wb, session):
    record, session, *_ = wb.predict_and_show(SENTENCE, "Apple", "Steve Jobs", {}, session)
    with pytest.warns(UserWarning, match="does not occur in the sentence"):
        shown, after, marked, label, summary, recall, *rest, hint = wb.predict_and_show(SENTENCE, "Apple", "Wozniak", {},
                                                                                         session)
    assert shown is None and label is None and recall.startswith("<p class='emma-placeholder'>")
    assert summary == "Not predicted: The tail entity 'Wozniak' does not occur in the sentence." and hint == summary
    assert isinstance(marked, type(gr.skip()))  # the marks are the preview's
    # The last prediction is forgotten: Save feedback cannot judge it while the panels are blank.
    assert after["last"] is None and session["last"] is not None


def test_the_preview_says_which_occurrence_of_a_typed_entity_is_used(wb):
    sentence = "Paris is nice and Paris is big and France likes Paris."
    marked, hint = wb.preview(sentence, "Paris", "France", {})
    assert hint == ("Ready: press Predict. 'Paris' occurs 3 times; the head is the one marked above (to use another, "
                    "select it and press Head).")
    assert [e for e in marked["entities"] if e["entity"] == "HEAD"][0]["start"] == 0
    # A selected occurrence is what the user chose: nothing to point out.
    assert wb.preview(sentence, "Paris", "France", {"head": [18, 23]})[1] == "Ready: press Predict."


def test_the_preview_says_predicted_while_the_boxes_hold_the_last_prediction(wb, session):
    record, session, *_ = wb.predict_and_show(SENTENCE, "Apple", "Steve Jobs", {}, session)
    assert wb.preview(SENTENCE, "Apple", "Steve Jobs", {}, session)[1].startswith(f"Predicted: {record['label']}.")
    assert wb.preview(SENTENCE, "Apple", "1976", {}, session)[1] == "Ready: press Predict."  # another tail
    assert wb.preview(SENTENCE + " !", "Apple", "Steve Jobs", {}, session)[1] == "Ready: press Predict."
    assert wb.preview(SENTENCE, "Apple", "Steve Jobs", {})[1] == "Ready: press Predict."  # no session: nothing known


def test_show_prediction_builds_every_panel(wb, session):
    _, session = predict(wb, session)
    marked, label, summary, recall_fig, why, table, attention_fig, latency, dropdown, verdict, note, status = wb.show_prediction(session)
    assert "No labelled examples" in why
    assert (verdict, note, status) == (None, "", "")  # the feedback form is cleared for the new prediction
    assert [e["entity"] for e in marked["entities"]] == ["HEAD", "TAIL"]
    assert set(label) == set(session["last"]["candidates"])
    assert summary.startswith("Predicted '")
    assert list(table["recall rank"]) and table.loc[0, "classifier rank"] == 1
    assert attention_fig.count("class='emma-candidate'") == 2 and attention_fig.count("class='emma-att'") == 4  # head and tail rows
    assert recall_fig.count("class='emma-row'") == 4  # every relation in force (4 of them)
    assert "ms" in latency and dropdown["choices"]


@pytest.mark.parametrize("sentence, head, tail, message", [
    ("   ", "a", "b", "Enter a sentence first."),
    (SENTENCE, "Google", "Steve Jobs", "does not occur"),
    (SENTENCE, "Apple", "Apple", "overlap"),
    ("x" * 2001, "x", "x", "at most 2000"),
])
def test_predict_bad_input_is_a_plain_error(wb, session, sentence, head, tail, message):
    with pytest.raises(gr.Error, match=message):
        predict(wb, session, sentence, head, tail)


def test_predict_without_relations(wb, session):
    session = {**session, "enabled": []}
    with pytest.raises(gr.Error, match="No relation is switched on"):
        predict(wb, session)


def test_long_sentence_warns_and_still_predicts(wb, session):
    sentence = "Apple was founded by Steve Jobs " + "and many other people " * 40 + "."
    with pytest.warns(UserWarning, match="word pieces"):
        record, _ = predict(wb, session, sentence)
    assert record["warnings"]


def test_user_text_in_messages_is_escaped(wb, session):
    with pytest.raises(gr.Error) as e:
        predict(wb, session, SENTENCE, "<b>x</b>", "Apple")
    assert "<b>" not in str(e.value) and "&lt;b&gt;" in str(e.value)


# ---------------------------------------------------------------------- relations


def test_add_relation_is_ranked_and_persisted(wb, session, tiny_extractor, tmp_path, toy_descriptions):
    session, status = wb.add_relation("employer", "person who works for this organization", session)
    assert status.startswith("Added 'employer'; 5 relations")
    record, _ = predict(wb, session)
    assert "employer" in [name for name, _ in record["recall"]]
    # Survives a restart: a new Workbench on the same database file.
    again = workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions))
    assert again.open_session("user:ann")["user"] == {"employer": "person who works for this organization"}
    assert again.open_session("user:bob")["user"] == {}


def test_relation_text_is_name_colon_description(wb, session):
    session, _ = wb.add_relation("employer", "employer: person who works for it", session)
    assert wb.relations(session)["employer"] == "employer: person who works for it"
    session, _ = wb.add_relation("sibling", "brother or sister", session)
    assert wb.relations(session)["sibling"] == "sibling: brother or sister"


@pytest.mark.parametrize("name, description, message", [
    ("", "x", "Give the relation a name."),
    ("employer3", "\u200b \u2060", "The description has no visible characters"),
    ("born in", "anything", "is a catalogue relation"),
    ("birthplace", "most specific known birth location of a person", "already has this description"),
    ("employer2", "person who works for this organization", "already has this description"),
    ("employer", "other words", "already have a relation named"),
    ("Born In", "anything", "differs from the catalogue relation 'born in' only in capitals"),
    ("EMPLOYER", "other words", "You already have 'employer', which differs from 'EMPLOYER' only in capitals; press Save"),
    ("No_Relation", "never", "is reserved: corpora and exports use it for \"none of these\""),
])
def test_add_relation_refuses_bad_input_and_saves_nothing(wb, session, name, description, message):
    session, _ = wb.add_relation("employer", "person who works for this organization", session)
    with pytest.raises(gr.Error, match=message):
        wb.add_relation(name, description, session)
    assert wb.store.user_relations("user:ann") == {"employer": "person who works for this organization"}


def test_edit_and_delete_relation(wb, session):
    session, _ = wb.add_relation("employer", "person who works for this organization", session)
    session, status = wb.edit_relation("employer", "organization that pays this person", session)
    assert status.startswith("Updated") and session["user"]["employer"] == "organization that pays this person"
    with pytest.raises(gr.Error, match="no relation named 'boss' to edit .a relation cannot be renamed: delete it"):
        wb.edit_relation("boss", "x", session)
    with pytest.raises(gr.Error, match="You already have 'employer', which differs from 'Employer' only in capitals; edit it"):
        wb.edit_relation("Employer", "x", session)
    session, status = wb.delete_relation("employer", session)
    assert session["user"] == {} and wb.store.user_relations("user:ann") == {}
    assert status == "Deleted 'employer'; 4 relations in force. Add puts it back."
    with pytest.raises(gr.Error, match="no relation named"):
        wb.delete_relation("employer", session)


def test_sessions_do_not_share_relations(wb):
    ann, bob = wb.open_session("user:ann"), wb.open_session("user:bob")
    ann, _ = wb.add_relation("employer", "person who works for this organization", ann)
    bob, _ = wb.set_shown_enabled(["born in"], "", bob)
    rec_ann, _ = predict(wb, ann)
    rec_bob, _ = predict(wb, bob)
    assert {n for n, _ in rec_ann["recall"]} == {"founded by", "born in", "capital of", "member of", "employer"}
    assert {n for n, _ in rec_bob["recall"]} == {"born in"}
    assert "only 1 relation" in rec_bob["note"]
    # The shared Extractor is never touched.
    assert set(wb.engine.extractor.relations) == {"founded by", "born in", "capital of", "member of"}
    assert wb.open_session("user:bob")["enabled"] == ["born in"]


def test_a_tick_in_a_stale_window_changes_only_that_relation(wb):
    a, b = wb.open_session("user:ann"), wb.open_session("user:ann")
    *_, query_a, ticked_a = wb.relation_views_of("", a)
    *_, query_b, ticked_b = wb.relation_views_of("", b)  # both windows drawn: every relation on
    assert ticked_a == ticked_b == ["founded by", "born in", "capital of", "member of"]
    a, _ = wb.set_shown_enabled([n for n in ticked_a if n != "born in"], query_a, a, ticked_a)  # window A unticks "born in"
    b, ticked_b = wb.set_shown_enabled([n for n in ticked_b if n != "member of"], query_b, b, ticked_b)  # B, not redrawn
    assert wb.open_session("user:ann")["enabled"] == ["founded by", "capital of"]  # both changes stand
    assert ticked_b == ["founded by", "born in", "capital of"]  # B's boxes as B shows them until its redraw
    # B unticks "capital of", then ticks it again, before its boxes are redrawn: each change alone applies.
    b, ticked_b = wb.set_shown_enabled([n for n in ticked_b if n != "capital of"], query_b, b, ticked_b)
    assert wb.open_session("user:ann")["enabled"] == ["founded by"]
    b, ticked_b = wb.set_shown_enabled([*ticked_b, "capital of"], query_b, b, ticked_b)
    assert wb.open_session("user:ann")["enabled"] == ["founded by", "capital of"]


def test_catalogue_search_and_switches(wb, session):
    update, table, count = wb.catalogue_view("birth", session)
    assert update["choices"] == [("born in · born in · custom", "born in")] and list(table["relation"]) == ["born in"]
    session, ticked = wb.set_shown_enabled([], "birth", session)  # untick the only shown one
    assert ticked == []
    assert session["enabled"] == ["founded by", "capital of", "member of"]
    session = wb.disable_shown("", session)
    assert session["enabled"] == []
    session = wb.enable_shown("capital", session)
    assert session["enabled"] == ["capital of"]
    session = wb.reset_catalogue(session)
    assert len(session["enabled"]) == 4
    assert "4 relations in force" in wb.count_text(session)


def test_real_catalogue_loads_and_encodes(tiny_extractor, tmp_path):
    cat = Catalogue.load()
    assert len(cat) == 193 and len(cat.defaults()) == 135
    assert sum(e.source == "FewRel" for e in cat.entries) == 80
    wb = workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), cat, load_examples())
    ex = wb.examples[0]
    record, _ = wb.predict(ex["text"], ex["head_text"], ex["tail_text"], {}, wb.open_session("user:x"))
    assert record["n_relations"] == 135 and len(record["recall"]) == 135


def test_the_count_line_suggests_switching_off_a_crowded_catalogue_beside_own_relations(tiny_extractor, tmp_path):
    from app.relations_tab import CROWDED_CATALOGUE

    wb = workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.load(), load_examples())
    session = wb.open_session("user:x")
    assert "Switch off all shown" not in wb.count_text(session)  # the catalogue alone: nothing of yours to crowd out
    session, _ = wb.add_relation("works at", "person who is employed by this organization", session)
    assert "switch off those of the 135 catalogue relations your text does not need" in wb.count_text(session)
    session = wb.disable_shown("", session)
    session = wb.enable_shown("capital", session)
    assert 0 < len(session["enabled"]) < CROWDED_CATALOGUE
    assert "Switch off all shown" not in wb.count_text(session)


def test_import_export_relation_set_roundtrip(wb, session, tmp_path):
    session, _ = wb.add_relation("employer", "person who works for this organization", session)
    session = wb.disable_shown("capital", session)
    exported = json.loads(Path(wb.export_relations(session)).read_text())
    assert list(exported) == ["founded by", "born in", "member of", "employer"]
    assert emma.read_descriptions(wb.export_relations(session)) == exported  # usable as --descriptions
    other = wb.open_session("user:bob")
    other, status = wb.import_relations(wb.export_relations(session), other)
    assert wb.relations(other) == exported and "Imported 3 catalogue and 1 own" in status
    assert "The set replaces what was switched on: 1 catalogue relation not in it is now off" in status  # capital of
    assert wb.open_session("user:bob")["user"] == {"employer": "person who works for this organization"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": "same words", "b": "same words"}))
    with pytest.raises(gr.Error, match="same description"):
        wb.import_relations(str(bad), wb.open_session("user:carl"))
    bad.write_text("not json")
    with pytest.raises(gr.Error, match="not valid JSON"):
        wb.import_relations(str(bad), wb.open_session("user:carl"))
    assert wb.store.user_relations("user:carl") == {}


# ---------------------------------------------------------------------- feedback


def test_feedback_row_has_everything_to_reproduce(wb, session):
    session, _ = wb.add_relation("employer", "person who works for this organization", session)
    record, session = predict(wb, session)
    _, status = wb.feedback("wrong", "employer", "not really", session) if record["label"] != "employer" else \
        wb.feedback("wrong", "founded by", "not really", session)
    assert status.startswith("Saved feedback #1: wrong")
    row = wb.store.feedback().iloc[0].to_dict()
    assert row["owner"] == "user:ann" and row["sentence"] == SENTENCE
    assert (row["head_start"], row["head_end"], row["tail_start"], row["tail_end"]) == (0, 5, 21, 31)
    assert (row["head_text"], row["tail_text"]) == ("Apple", "Steve Jobs")
    assert row["predicted"] == record["label"] and row["verdict"] == "wrong" and row["note"] == "not really"
    assert json.loads(row["candidates"])[0]["relation"] == record["candidates"][0]
    assert json.loads(row["recall"])[0][0] == record["recall"][0][0]
    assert row["checkpoint"] == wb.engine.checkpoint_id and "@" in row["checkpoint"]
    assert row["created"].endswith("+00:00")
    relations = wb.store.relation_set(row["relation_set_id"])
    assert relations["employer"] == "employer: person who works for this organization" and len(relations) == 5
    assert row["user_label_description"] == relations[row["user_label"]]
    tokens = json.loads(row["tokens"])
    hs, he = json.loads(row["head_tokens"])
    assert tokens[hs:he] == ["Apple"]


def test_feedback_bad_input_saves_nothing(wb, session):
    with pytest.raises(gr.Error, match="Predict a relation first"):
        wb.feedback("correct", None, None, session)
    record, session = predict(wb, session)
    with pytest.raises(gr.Error, match="correct or wrong"):
        wb.feedback(None, None, None, session)
    with pytest.raises(gr.Error, match="chose the predicted relation"):
        wb.feedback("wrong", record["label"], None, session)
    other = next(n for n, _ in record["recall"] if n != record["label"])
    with pytest.raises(gr.Error, match="marked the prediction correct but chose another"):
        wb.feedback("correct", other, None, session)
    with pytest.raises(gr.Error, match="note is longer"):
        wb.feedback("correct", None, "x" * 3000, session)
    with pytest.raises(gr.Error, match="relation name is longer than 100 characters"):
        wb.feedback("wrong", "x" * 101, None, session)
    with pytest.raises(gr.Error, match="Choose whether the prediction was correct or wrong") as e:
        wb.feedback("maybe", None, None, session)
    assert "choices" not in str(e.value)
    with pytest.raises(gr.Error, match="request id must be"):
        wb.feedback("correct", None, None, session, "x" * 101)
    assert wb.store.count_feedback() == 0
    wb.feedback("correct", None, None, session)
    wb.feedback("wrong", None, None, session)  # wrong, correct relation unknown
    wb.feedback("wrong", other, None, session)
    rows = wb.store.feedback()
    assert list(rows["user_label"]) == [other, None, record["label"]]
    assert rows.iloc[0]["user_label_description"] == wb.relations(session)[other]


def test_the_page_saves_feedback_only_on_the_sentence_it_predicted(wb, session):
    record, session = predict(wb, session)
    spans = {"head": record["head"], "tail": record["tail"]}
    # Boxes changed after the prediction (its panels still on show): another sentence, entity, or an entity now
    # missing from the sentence. Each is refused, and nothing is saved against the prediction of before.
    for sentence, head, tail, marks in [("Microsoft was founded by Bill Gates .", "Microsoft", "Bill Gates", {}),
                                        (SENTENCE, "Steve Jobs", "Apple", {}), (SENTENCE, "Apple", "Wozniak", spans)]:
        # A toast and the status line under the button say so (an error event would leave a mark there for good).
        with pytest.warns(UserWarning, match="changed since the last prediction: press Predict"):
            kept, status = wb.feedback_on_screen("correct", None, None, sentence, head, tail, marks, session)
        assert status.startswith("Not saved: The sentence or its entities changed") and isinstance(kept, type(gr.skip()))
    assert wb.store.count_feedback() == 0
    _, status = wb.feedback_on_screen("correct", None, None, SENTENCE, "Apple", "Steve Jobs", spans, session)
    assert status.startswith("Saved feedback #1: correct") and wb.store.feedback().iloc[0]["sentence"] == SENTENCE
    with pytest.warns(UserWarning, match="Predict a relation first"):  # no prediction yet: the form's own message
        _, status = wb.feedback_on_screen("correct", None, None, SENTENCE, "Apple", "Steve Jobs", {},
                                          wb.open_session("user:bob"))
    assert status.startswith("Not saved: Predict a relation first")


def test_a_double_click_saves_one_judgement_and_a_changed_one_saves_again(wb, session):
    record, session = predict(wb, session)
    other = next(n for n, _ in record["recall"] if n != record["label"])
    _, first = wb.feedback("wrong", other, "hm", session)
    _, again = wb.feedback("wrong", other, "hm", session)  # no request id, as the page sends
    assert again == first and wb.store.count_feedback() == 1
    wb.feedback("correct", None, None, session)  # the user changed their mind: a new row
    assert wb.store.count_feedback() == 2
    assert [e["relation"] for e in wb.store.examples("user:ann")] == [record["label"]]
    _, back = wb.feedback("wrong", other, "hm", session)  # and back again: saved, and the example follows
    assert back != first and wb.store.count_feedback() == 3
    assert [e["relation"] for e in wb.store.examples("user:ann")] == [other]
    wb.feedback("wrong", other, "hm", session)  # a double click of that one is still saved once
    assert wb.store.count_feedback() == 3
    _, session = predict(wb, session)  # the same sentence predicted again is a new prediction
    wb.feedback("correct", None, None, session)
    assert wb.store.count_feedback() == 4


def test_a_stale_tab_neither_erases_nor_overwrites_what_another_tab_saved(wb):
    stale, fresh = wb.open_session("user:ann"), wb.open_session("user:ann")
    fresh, _ = wb.add_relation("acquired by", "company bought by this other company", fresh)
    with pytest.raises(gr.Error, match="already have a relation named 'acquired by'"):
        wb.add_relation("acquired by", "something else", stale)
    _, stale = predict(wb, stale)  # the stale tab does not know the relation; naming it must not re-create it
    stale, status = wb.feedback("wrong", "acquired by", None, stale)
    assert "defined by" not in status
    assert wb.store.user_relations("user:ann") == {"acquired by": "company bought by this other company"}
    assert stale["user"] == {"acquired by": "company bought by this other company"}
    fresh = wb.disable_shown("capital", fresh)
    stale = wb.disable_shown("born", stale)  # built on the stored switches, not the stale tab's copy
    assert "capital of" not in stale["enabled"] and "born in" not in stale["enabled"]


def test_an_example_removed_by_another_tab_mid_prediction_takes_its_relation_out_of_force(wb, session, monkeypatch):
    session, _ = wb.add_relation("taught at", "", session)
    _, session = predict(wb, session)
    session, _ = wb.feedback("wrong", "taught at", None, session)
    assert "taught at" in predict(wb, session)[1]["last"]["relations"]
    # The count of examples still says one while the examples, read next, have none (removed in between):
    # the prediction reads the examples once, so the relation and its examples agree.
    monkeypatch.setattr(wb.store, "labelled", lambda owner: [])
    record, session = predict(wb, session)
    assert "taught at" not in session["last"]["relations"] and record["n_examples"] == 0


def test_a_relation_defined_by_examples_survives_export_and_import(wb, session):
    session, _ = wb.add_relation("taught at", "", session)
    record, session = predict(wb, session)
    session, _ = wb.feedback("wrong", "taught at", None, session)
    exported = json.loads(Path(wb.export_relations(session)).read_text())
    assert exported["taught at"] == "taught at"
    bob, status = wb.import_relations(wb.export_relations(session), wb.open_session("user:bob"))
    assert wb.store.user_relations("user:bob") == {"taught at": ""}  # still defined by examples, not by its name
    bad = Path(wb.export_relations(session)).with_name("bad.json")
    bad.write_text(json.dumps({"x": "x:"}))
    with pytest.raises(gr.Error, match="empty description"):
        wb.import_relations(str(bad), wb.open_session("user:carl"))
    # Written by hand as "" (as the form allows), it is one too, waiting for its first example.
    bad.write_text(json.dumps({"mentor": "", "taught at": "taught at"}))
    carl, status = wb.import_relations(str(bad), wb.open_session("user:carl"))
    assert wb.store.user_relations("user:carl") == {"mentor": "", "taught at": ""} and status.startswith("Imported")
    bad.write_text(json.dumps({"mentor": "\u200b"}))
    with pytest.raises(gr.Error, match="no visible characters; leave it"):
        wb.import_relations(str(bad), wb.open_session("user:dora"))


@pytest.mark.parametrize("call, message", [
    (lambda wb, s: wb.feedback("wrong", 5, None, s), "should be a relation name"),
    (lambda wb, s: wb.feedback("wrong", ["x"], None, s), "should be a relation name"),
    (lambda wb, s: wb.remove_example("²", s), "Give the number of one of your examples"),
])
def test_odd_api_values_are_plain_errors(wb, session, call, message):
    _, session = predict(wb, session)
    with pytest.raises(gr.Error, match=message):
        call(wb, session)
    assert wb.store.count_feedback() == 0


def test_feedback_view_filters_and_exports(wb, session, tmp_path):
    sentences = [("Paris is the capital and largest city of France .", "Paris", "France"),
                 ("Marie Curie was born in Warsaw in 1867 .", "Marie Curie", "Warsaw"),
                 (SENTENCE, "Apple", "Steve Jobs")]
    for (sentence, head, tail), (verdict, label) in zip(sentences, [("correct", None), ("wrong", "born in"), ("wrong", None)]):
        record, session = predict(wb, session, sentence, head, tail)
        if label == record["label"]:
            label = next(n for n, _ in record["recall"] if n != label)
        wb.feedback(verdict, label, '=HYPERLINK("http://x")', session)  # a note a spreadsheet would run
    wb.feedback("correct", None, None, {**wb.open_session("user:bob"), "last": session["last"]})
    shown = wb.feedback_view("all", "", False, session)
    assert len(shown) == 3 and list(shown["score"]) == [round(s, 3) for s in wb.store.feedback(owner="user:ann")["score"]]
    admin = workbench(wb.engine, wb.store, wb.catalogue, admins=["ann"])

    class Ann:  # what gr.Request offers the handler
        username, session_hash = "ann", "h"

    assert len(admin.feedback_view("all", "", True, session, Ann())) == 4
    assert len(wb.feedback_view("wrong", "", False, session)) == 2
    assert list(wb.feedback_view("all", "warsaw", False, session)["head_text"]) == ["Marie Curie"]
    paths, status = wb.export_feedback("all", "", False, session)
    jsonl, descriptions, csv_file = map(Path, paths)
    assert status.startswith("Exported 2 labelled rows") and "1 rows marked wrong" in status
    instances = emma.read_instances(jsonl)
    assert len(instances) == 2 and instances[0].tokens[instances[0].head[0]] == "Paris"
    line = json.loads(jsonl.read_text().splitlines()[0])
    assert line["h"][2] == [[0]] and line["relation"] == instances[0].relation
    descs = emma.read_descriptions(descriptions)
    assert set(descs) == {i.relation for i in instances}
    assert len(pd.read_csv(csv_file)) == 3 and set(pd.read_csv(csv_file)["note"]) == {"'=HYPERLINK(\"http://x\")"}
    # ann's own numbers, never the row ids every user shares (bob's row is one of them).
    assert list(shown["number"]) == [3, 2, 1] and "id" not in pd.read_csv(csv_file).columns
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", t) for t in shown["created"])  # the export keeps ISO
    assert all("T" in t for t in pd.read_csv(csv_file)["created"])
    assert sorted(pd.read_csv(csv_file)["number"]) == [1, 2, 3]
    numbered = sorted(json.loads(x)["feedback_number"] for x in jsonl.read_text().splitlines())
    assert numbered == [1, 2]  # the rows with a known relation


def test_two_switches_at_once_both_stand(tmp_path):
    store = Store(tmp_path / "t.db")
    inside, done = threading.Event(), []

    def slow(stored):  # the first switch reads, then takes its time before writing
        inside.set()
        time.sleep(0.3)
        return (stored or []) + ["a"]

    first = threading.Thread(target=lambda: done.append(store.update_workspace("o", slow)))
    first.start()
    assert inside.wait(5)
    store.update_workspace("o", lambda stored: (stored or []) + ["b"])  # waits for the first, then builds on it
    first.join()
    assert store.workspace("o") == ["a", "b"] and done == [["a"]]


def test_store_is_safe_across_threads(tmp_path):
    store = Store(tmp_path / "t.db")
    relations = {"r": "r: x"}
    base = {"owner": "o", "sentence": "s", "predicted": "r", "verdict": "correct"}

    def work(i):
        for j in range(25):
            store.add_feedback({**base, "note": f"{i}-{j}"}, relations)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_feedback() == 200
    assert Store(tmp_path / "t.db").count_feedback() == 200  # migrations are idempotent on reopen
    assert store.secret() == Store(tmp_path / "t.db").secret()


# ---------------------------------------------------------------------- plots


def test_plots_escape_user_text(wb, session):
    session, _ = wb.add_relation("<b>bold</b>", "<i>x</i> a made up relation", session)
    session = wb.disable_shown("", session)
    session, _ = wb.add_relation("other", "another made up relation", session)
    _, session = predict(wb, session)
    record = session["last"]
    chart = plots.recall_html(record)
    assert "&lt;b&gt;bold&lt;/b&gt;" in chart and "<b>bold" not in chart
    att = plots.attention_html(record)
    assert "<i>" not in att and "&lt;" in att  # the description's own word pieces, escaped
    assert len(plots.rerank_table(record)) == 2


def test_charts_keep_quotes_in_user_text_inside_their_attributes(wb, session):
    name = "x' onmouseover='alert(1)"
    session, _ = wb.add_relation(name, "it's a made up relation, with 'quotes'", session)
    session = wb.disable_shown("", session)
    session, _ = wb.add_relation("other", "another made up relation", session)
    _, session = predict(wb, session)
    record = session["last"]
    for chart in (plots.recall_html(record), plots.attention_html(record)):
        assert "onmouseover='" not in chart and "' onmouseover" not in chart and "it's" not in chart
    assert "x&#x27; onmouseover=&#x27;alert(1)" in plots.recall_html(record)


def test_recall_chart_draws_the_shown_scores_on_a_zoomed_axis(wb, session):
    _, session = predict(wb, session)
    record = session["last"]
    chart = plots.recall_html(record)
    shown = record["recall"][: plots.RECALL_BARS]
    widths = [float(w) for w in re.findall(r"class='emma-bar' style='width:([0-9.]+)%", chart)]
    assert len(widths) == len(shown) and widths == sorted(widths, reverse=True)  # recall order, longest first
    assert 0 < min(widths) and max(widths) < 100  # zoomed around the scores, with a margin
    assert chart.count(plots.CANDIDATE_COLOR) == len(record["candidates"]) + 1  # the bars and the legend's key
    assert f"{shown[0][1]:.3f}" in chart and "★" in chart
    att = plots.attention_html(record)
    assert att.count("class='emma-candidate'") == len(record["candidates_detail"])
    words = [plots.whole_words(c["attention"]["tokens"], c["attention"]["head"]) for c in record["candidates_detail"]]
    assert att.count("head entity ·") == att.count("tail entity ·") == sum(len(w) for w in words)
    assert not any(word.startswith("##") for per in words for word, _ in per)


def test_attention_shows_words_with_the_sum_of_their_pieces_weights():
    assert plots.whole_words(["martin", "he", "##ide", "##gger", ":"], [0.1, 0.2, 0.3, 0.1, 0.3]) == [
        ("martin", 0.1), ("heidegger", 0.2 + 0.3 + 0.1), (":", 0.3)]
    assert plots.whole_words(["##x", "y"], [0.5, 0.5]) == [("##x", 0.5), ("y", 0.5)]  # nothing to join it to


def test_load_finds_the_owner(wb):
    class Request:  # what gr.Request offers the handler
        username = None
        session_hash = "not-hex-zz"  # no hex digest can contain it

    session, token, everyone = wb.load(None, Request())
    assert len(token) == 43 and session["owner"].startswith("browser:") and token not in session["owner"]
    assert everyone["visible"] is False
    session, _ = wb.add_relation("sibling", "brother or sister", session)
    again, same, _ = wb.load(token, Request())  # reload, or a restarted server: same token, same workspace
    assert same == token and again["user"] == {"sibling": "brother or sister"}
    # An owner id (or anything the server did not issue) is no token: a new, empty workspace.
    for forged in (session["owner"], session["owner"].split(":")[1], token[:-1]):
        other, new_token, _ = wb.load(forged, Request())
        assert new_token != forged and other["user"] == {} and other["owner"] != session["owner"]
    Request.username = "ann"
    assert wb.load(token, Request())[0]["owner"] == "user:ann"
    # An API client never loads the page: its session gets an owner at its first call.
    record, session = wb.predict(SENTENCE, "Apple", "Steve Jobs", {}, wb.new_session(), Request())
    assert session["owner"] == "user:ann"
    Request.username = None
    _, session = wb.predict(SENTENCE, "Apple", "Steve Jobs", {}, wb.new_session(), Request())
    assert session["owner"].startswith("session:") and "not-hex-zz" not in session["owner"]
    assert wb.identity.session_owner("not-hex-zz") == session["owner"]


def test_user_relation_table_and_picking_a_row(wb, session):
    session, _ = wb.add_relation("sibling", "brother or sister", session)
    checkboxes, catalogue_table, count, user_table, examples = wb.relation_views("", session)
    assert list(user_table["relation"]) == ["sibling"] and user_table.loc[0, "text the model reads"] == "sibling: brother or sister"
    assert len(catalogue_table) == 4 and "5 relations in force" in count

    class Select:  # what gr.SelectData carries for a Dataframe row click
        row_value = ["sibling", 0, "brother or sister", "sibling: brother or sister"]

    assert wb.pick_user_relation(session, Select()) == ("sibling", "brother or sister")


def test_engine_reuses_the_index_of_an_unchanged_relation_set(tiny_extractor, toy_descriptions):
    engine = Engine(tiny_extractor)
    first = engine.index(toy_descriptions)
    assert engine.index(dict(toy_descriptions)) is first  # same set: no re-stacking
    changed = {**toy_descriptions, "works for": "employer: organization a person works for"}
    other = engine.index(changed)
    assert other is not first and other.names[-1] == "works for"
    assert torch.equal(other.vectors[: len(first)], first.vectors)


def _two_candidate_record(decision: str) -> dict:
    """A prediction record where recall ranks a first, the classifier prefers b, and the rule decides."""
    from emma.pipeline import Prediction, fuse
    from app.records import prediction_record
    from emma.data import Instance

    probs, cos = [0.45, 0.55], [0.50, 0.49]
    fused = fuse(probs, cos, 0.02)  # recall's margin outweighs a hesitant classifier: a wins
    label = "b" if decision == "classifier" else "a"
    pred = Prediction(label=label, score=max(probs) if decision == "classifier" else max(fused), recall=list(zip("ab", cos)),
                      candidates=["a", "b"], probabilities=probs, reranked=True, recall_label="a", fused=fused, decision=decision)
    inst = Instance(("x", "y"), (0, 1), (1, 2))
    return prediction_record("x y", (0, 1), (2, 3), inst, pred, {"a": "one", "b": "two"}, "ckpt", {"total": 1.0}, [])


def test_records_and_panels_follow_the_checkpoints_decision_rule():
    from app.records import summary_text

    paper = _two_candidate_record("classifier")
    assert paper["decision"] == "classifier" and paper["label"] == "b"
    assert "the classifier preferred it over 'a'" in summary_text(paper)
    assert plots.rerank_table(paper)["relation"].tolist() == ["b", "a"]  # classifier order
    assert [c["deciding_score"] for c in paper["candidates_detail"]] == [0.45, 0.55]  # what the Label panel shows

    fused = _two_candidate_record("fused")
    combined = {c["relation"]: c["combined"] for c in fused["candidates_detail"]}
    assert combined["a"] > combined["b"] and sum(combined.values()) == pytest.approx(1.0)
    text = summary_text(fused)
    assert "combined with recall's confidence" in text and "not surely enough to overrule recall" in text
    table = plots.rerank_table(fused)
    assert table["relation"].tolist() == ["a", "b"] and table.loc[0, "final"] == "✔ predicted"
    assert {c["relation"]: c["deciding_score"] for c in fused["candidates_detail"]} == combined
    assert fused["classifier_share"] == 1.0 and "counted" not in text
    assert "counted 40% as much" in summary_text({**fused, "classifier_share": 0.4})  # the candidates have examples


# ---------------------------------------------------------------------- labelled examples

SIMILAR = "Apple was founded by Steve Jobs in 1977 ."


def _label_wrong(wb, session, sentence=SENTENCE, head="Apple", tail="Steve Jobs"):
    """Predict, then judge it wrong with another relation; returns (that relation, status, session)."""
    record, session = predict(wb, session, sentence, head, tail)
    other = next(n for n, _ in record["recall"] if n != record["label"])
    return other, wb.feedback("wrong", other, None, session)[1], session


def test_a_judged_sentence_is_an_example_at_once(wb, session, tiny_extractor):
    label, status, session = _label_wrong(wb, session)
    assert status.endswith(f"It is now an example of '{label}', used from your next prediction.")
    [row] = wb.store.examples("user:ann")
    assert (row["relation"], row["feedback_id"], row["tokens"], row["head"], row["tail"]) == (label, 1, SENTENCE.split(), [0, 1], [4, 6])
    record, session = predict(wb, session, SIMILAR)
    assert record["n_examples"] == 1
    parts = record["recall_parts"]
    assert parts[label][1] is not None and all(e is None for n, (_, e) in parts.items() if n != label)
    # The same scores as the library with that example added.
    tiny_extractor.add_examples(label, [emma.Instance(tuple(SENTENCE.split()), (0, 1), (4, 6))])
    direct = tiny_extractor.predict(SIMILAR, head=(0, 5), tail=(21, 31))
    assert [n for n, _ in record["recall"]] == [n for n, _ in direct.recall]
    assert [s for _, s in record["recall"]] == pytest.approx([s for _, s in direct.recall], abs=1e-5)
    assert parts[label][1] == pytest.approx(direct.recall_parts[label][1], abs=1e-5)
    if label in record["candidates"]:
        [near] = record["examples"][label]
        assert near["tokens"] == SENTENCE.split() and near["cosine"] > 0.5
        why = wb.show_prediction(session)[4]
        assert "[HEAD Apple]" in why and "[TAIL Steve Jobs]" in why and "cosine" in why
    chart = plots.recall_html(record)
    assert "description cosine" in chart and "examples' cosine" in chart and chart.count("class='emma-mark emma-ex'") == 1
    # The tiny checkpoint has no example levels: the chart does not say the score was moved; with levels it says how far.
    assert record["example_level_share"] == 0.0 and "usual difference" not in chart
    assert "lowered by 50% of that usual difference" in plots.recall_html({**record, "example_level_share": 0.5})
    # The Relations tab counts it.
    _, table, count, _, examples = wb.relation_views("", session)
    assert dict(zip(table["relation"], table["examples"]))[label] == 1 and "1 labelled example** of 1 relation." in count
    assert list(examples["relation"]) == [label] and examples.loc[0, "sentence"].startswith("[HEAD Apple] was founded by [TAIL Steve Jobs]")


def test_judging_again_replaces_the_example(wb, session):
    label, _, session = _label_wrong(wb, session)
    predicted = session["last"]["label"]
    _, status = wb.feedback("correct", None, None, session)
    assert f"It is now an example of '{predicted}' (it was one of '{label}')" in status
    assert [r["relation"] for r in wb.store.examples("user:ann")] == [predicted]
    # The same sentence predicted and judged again later: still one example, the latest judgement's.
    _, session = predict(wb, session)
    assert status != (status := wb.feedback("wrong", label, None, session)[1])
    assert [(r["relation"], r["feedback_id"]) for r in wb.store.examples("user:ann")] == [(label, 3)]
    _, status = wb.feedback("wrong", None, None, session)
    assert status.endswith(f"The sentence is no longer an example of '{label}'.") and wb.store.examples("user:ann") == []
    assert wb.store.count_feedback() == 4  # every judgement stays in the feedback table


def test_an_example_of_a_relation_not_in_force_is_kept_and_ignored(wb, session):
    record, session = predict(wb, session)
    other = next(n for n, _ in record["recall"] if n != record["label"])
    session, _ = wb.set_shown_enabled([n for n in session["enabled"] if n != other], "", session)
    _, status = wb.feedback("wrong", other, None, session)
    assert status.endswith(f"'{other}' is not in force, so the example is kept but counts only once you switch it on.")
    record, session = predict(wb, session, SIMILAR)
    assert record["n_examples"] == 0 and all(e is None for _, e in record["recall_parts"].values())
    _, _, count, _, examples = wb.relation_views("", session)
    assert examples.loc[0, "in force"].startswith("no: kept") and "ignored until you switch them on" in count
    session = wb.reset_catalogue(session)
    record, _ = predict(wb, session, SIMILAR)
    assert record["n_examples"] == 1 and record["recall_parts"][other][1] is not None


def test_an_example_of_a_deleted_relation_says_so(wb, session):
    _, session = predict(wb, session)
    session, _ = wb.feedback("wrong", "started by", None, session)  # a new relation, taught by this sentence
    session, status = wb.delete_relation("started by", session)
    assert status.endswith("Add puts it back, with its 1 labelled example (kept meanwhile).")
    _, _, _, _, examples = wb.relation_views("", session)
    assert examples.loc[0, "relation"] == "started by"
    assert examples.loc[0, "in force"] == "no: its relation is deleted; used again if you add it back"
    session, _ = wb.add_relation("started by", "", session)
    _, _, _, _, examples = wb.relation_views("", session)
    assert examples.loc[0, "in force"] == "yes"


def test_remove_example(wb, session):
    _label_wrong(wb, wb.open_session("user:bob"))  # bob's example is row 1: ann's first is her #1 in row 2
    label, _, session = _label_wrong(wb, session)
    [row] = wb.store.examples("user:ann")
    assert (row["number"], row["id"]) == (1, 2)
    examples = wb.relation_views("", session)[4]
    assert list(examples["#"]) == [1] and list(examples["from feedback"]) == ["#1"]  # her numbers, as she sees them
    with pytest.raises(gr.Error, match="You have no example #2."):
        wb.remove_example("2", session)  # the row id is no number of hers
    for bad in ("", "abc", "-1", None, "1" * 20):
        with pytest.raises(gr.Error, match="Give the number of one of your examples"):
            wb.remove_example(bad, session)
    _, status = wb.remove_example("#1", session)
    assert status == f"Removed example #1 of '{label}'." and wb.store.examples("user:ann") == []
    assert len(wb.store.examples("user:bob")) == 1  # bob's #1 is his own
    record, _ = predict(wb, session, SIMILAR)
    assert record["n_examples"] == 0

    class Select:
        row_value = [row["number"], label, "…"]

    assert wb.pick_example(session, Select()) == ""  # gone: nothing to pick


def test_a_new_name_as_the_correct_relation_teaches_a_relation_by_that_sentence(wb, session, tiny_extractor):
    record, session = predict(wb, session)
    assert "taught at" not in session["last"]["relations"]
    session, status = wb.feedback("wrong", "  taught   at ", None, session)
    assert status.startswith("Saved feedback #1: wrong (the correct relation is 'taught at').")
    assert "It is now an example of 'taught at', used from your next prediction." in status
    assert "'taught at' is a new relation of yours, defined by this example alone" in status
    assert session["user"]["taught at"] == "" and wb.store.user_relations("user:ann")["taught at"] == ""
    assert wb.store.feedback().iloc[0]["user_label_description"] == "taught at"
    # In force from now on, scored by its name and example; the library scores it the same way.
    record, session = predict(wb, session, SIMILAR)
    assert session["last"]["relations"]["taught at"] == "taught at" and record["n_examples"] == 1
    tiny_extractor.add_relation("taught at", examples=[emma.Instance(tuple(SENTENCE.split()), (0, 1), (4, 6))])
    direct = tiny_extractor.predict(SIMILAR, head=(0, 5), tail=(21, 31))
    assert dict(record["recall"])["taught at"] == pytest.approx(dict(direct.recall)["taught at"], abs=1e-5)
    name, example = record["recall_parts"]["taught at"]
    w = emma.index.example_weight(1)
    assert dict(record["recall"])["taught at"] == pytest.approx((1 - w) * name + w * example, abs=1e-5)
    assert "title='name cosine" in plots.recall_html(session["last"], bars=len(record["recall"]))  # the chart reads the full record
    _, table, count, mine, _ = wb.relation_views("", session)
    assert mine.set_index("relation").loc["taught at", "description"] == "none: defined by its examples"
    assert "1 of your own" in count
    # A retry with the same request id neither saves twice nor creates twice; the session comes back as stored.
    _, first = wb.feedback("wrong", "brand new", None, session, "teach-1")
    again, repeated = wb.feedback("wrong", "brand new", None, session, "teach-1")
    assert repeated == first and again["user"] == wb.store.user_relations("user:ann") == {"taught at": "", "brand new": ""}
    assert wb.store.count_feedback() == 2 and list(wb.store.user_relations("user:ann")) == ["taught at", "brand new"]


def test_a_relation_without_a_description_waits_for_its_first_example(wb, session, tmp_path):
    session, status = wb.add_relation("capital city of", "", session)
    assert "has no description, so it takes part from its first labelled example" in status
    assert "capital city of" not in wb.relations(session)
    _, _, count, mine, _ = wb.relation_views("", session)
    assert "1 relation of yours without a description waits" in count and "0 of your own" in count
    assert mine.loc[0, "description"] == "none: waiting for a first example"
    record, session = predict(wb, session)  # predictions work meanwhile, without it
    assert "capital city of" not in session["last"]["relations"]
    with pytest.raises(gr.Error, match="no visible characters"):
        wb.add_relation("other", "\u200b\u200b", session)
    # Its first examples from a file make it take part.
    paris = {"tokens": "Paris is the capital of France .".split(), "head": [0, 1], "tail": [5, 6], "relation": "capital city of"}
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps(paris) + "\n")
    session, status = wb.import_examples(str(path), session)
    assert status.startswith("Imported 1 labelled example")
    record, session = predict(wb, session, "Rome is the capital of Italy .", "Rome", "Italy")
    assert session["last"]["relations"]["capital city of"] == "capital city of" and record["recall_parts"]["capital city of"][1] is not None
    # Without its example it is out of force again, and says so.
    [row] = wb.store.examples("user:ann")
    _, status = wb.remove_example(str(row["number"]), session)
    assert status.endswith("'capital city of' has no description and no examples left: it is out of force until you label one.")
    assert "capital city of" not in wb.relations(session)
    _, session = predict(wb, session)
    assert "capital city of" not in session["last"]["relations"]


def test_import_examples_all_or_nothing(wb, session, tmp_path):
    def jsonl(*lines):
        path = tmp_path / "ex.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return str(path)

    paris = {"tokens": "Paris is the capital of France .".split(), "head": [0, 1], "tail": [5, 6], "relation": "capital of"}
    rome = {"tokens": "Rome is the capital of Italy .".split(), "head": [0, 1], "tail": [5, 6], "relation": "capital of"}
    cases = [
        ((paris, {**rome, "relation": "sibling"}), "'sibling' is not a relation in force"),
        ((paris, paris), "with the same entities twice"),
        ((paris, {**rome, "tail": [5, 9]}), r"Nothing was imported: line 2: tail span \[5, 9\] is outside the 7 tokens"),
        ((paris, {**rome, "head": [5, 6]}), "line 2: head and tail are the same span"),
        ((paris, {"text": "Rome is in Italy.", "head": [0, 4], "tail": [11, 16], "relation": None, "negative": True}),
         'line 2 is marked "none of these"; an example needs the relation'),
    ]
    for lines, message in cases:
        with pytest.raises(gr.Error, match=message) as e:
            wb.import_examples(jsonl(*lines), session)
        assert str(tmp_path) not in str(e.value)
        assert wb.store.examples("user:ann") == []
    # The Annotate tab's formats are read here too: a sentence as text with character spans.
    rome_text = {"text": "Rome is the capital of Italy.", "head": [0, 4], "tail": [23, 28], "relation": "capital of"}
    session, status = wb.import_examples(jsonl(paris, rome_text), session)
    assert status == "Imported 2 labelled examples of 1 relation, used from your next prediction."
    assert [r["feedback_id"] for r in wb.store.examples("user:ann")] == [None, None]
    with pytest.raises(gr.Error, match="is already an example of 'capital of'"):
        wb.import_examples(jsonl(paris), session)
    record, _ = predict(wb, session)
    assert record["n_examples"] == 2 and record["recall_parts"]["capital of"][1] is not None
    assert wb.open_session("user:bob") and wb.store.examples("user:bob") == []


def test_engine_encodes_each_example_once(tiny_extractor, toy_descriptions, toy_instances, monkeypatch):
    engine = Engine(tiny_extractor)
    calls = []
    real = tiny_extractor.encode_examples
    monkeypatch.setattr(tiny_extractor, "encode_examples", lambda inst: calls.append(len(inst)) or real(inst))
    examples = tuple(toy_instances[:2])
    first = engine.index(toy_descriptions, examples)
    assert engine.index(dict(toy_descriptions), tuple(examples)) is first and calls == [2]
    assert {n: len(r) for n, r in first.examples.items()} == {"founded by": 2}
    more = engine.index(toy_descriptions, examples + (toy_instances[3],))  # one new example: one more encoded
    assert calls == [2, 1] and more is not first
    # Examples of relations not in the set are ignored; the index equals the one without them.
    two = dict(list(toy_descriptions.items())[2:])
    assert engine.index(two, examples) is engine.index(two)
    # Stored rows are parsed once; a row the model cannot read is left out.
    good = ("r", json.dumps(["a", "b", "c"]), "[0, 1]", "[2, 3]")
    [inst] = engine.instances([good, ("r", '["a"]', "[0, 1]", "[0, 1]"), ("r", "not json", "[0]", "[1]")])
    assert (inst.tokens, inst.head, inst.tail, inst.relation) == (("a", "b", "c"), (0, 1), (2, 3), "r")
    assert engine.instances([good])[0] is inst


def test_store_migrates_an_old_database(tmp_path):
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    from app import storage

    path = tmp_path / "old.db"
    old = Migrations("emma-workbench")  # the schema before labelled examples
    old()(storage.m001_initial)
    old()(storage.m002_request_ids)
    db = Database(path)
    old.apply(db)
    db["feedback"].insert({"owner": "o", "sentence": "s", "predicted": "r", "verdict": "correct", "created": "t",
                           "relation_set_id": "x"})
    db.conn.close()
    store = Store(path)
    assert store.count_feedback() == 1 and store.examples("o") == []
    with store.transaction() as tx:
        assert storage.replace_example(tx, "o", ["a", "b", "c"], [0, 1], [2, 3], "r", 1) is None
        assert storage.replace_example(tx, "o", ["a", "b", "c"], [0, 1], [2, 3], "q", 2) == "r"
        storage.replace_example(tx, "p", ["a", "b", "c"], [0, 1], [2, 3], "r")
    assert [(e["relation"], e["feedback_id"]) for e in store.examples("o")] == [("q", 2)]
    assert store.example_counts("p") == {"r": 1}
    import sqlite3
    with pytest.raises(sqlite3.IntegrityError):  # one example per owner, sentence and spans
        with store.transaction() as tx:
            tx["examples"].insert({"owner": "o", "relation": "z", "tokens": '["a", "b", "c"]', "head": "[0, 1]",
                                   "tail": "[2, 3]", "created": "t"})
    Store(path)  # reopening applies nothing twice


def test_a_recall_only_checkpoint_serves_every_panel(tiny_encoder_dir, toy_descriptions, tmp_path):
    """The second shipped checkpoint (emma-mpnet) has no classifier: recall decides, and every panel says so."""
    from emma.checkpoint import load_tokenizer, save_checkpoint
    from emma.model import Emma, EmmaConfig

    tokenizer = load_tokenizer(tiny_encoder_dir)
    config = EmmaConfig(encoder="tiny", max_length=64, max_description_length=32, use_classifier=False)
    folder = save_checkpoint(Emma.from_encoder(config, len(tokenizer), pretrained=tiny_encoder_dir), tokenizer, tmp_path / "recall")
    extractor = emma.Extractor.load(str(folder), device="cpu", precision="fp32")
    wb = workbench(Engine(extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions), load_examples())
    record, session = predict(wb, wb.open_session("user:ann"))
    assert record["label"] == record["recall"][0][0]
    marked, label, summary, recall_chart, why, rerank, attention, latency, *_ = wb.show_prediction(session)
    assert label == record["label"] and "no classifier" in summary
    assert "Recall: top" in recall_chart and "Which description words" in attention and "rerank" not in latency.lower()
    _, status = wb.feedback("correct", None, None, session)
    assert status.startswith("Saved feedback #1: correct")


def test_a_built_in_example_is_compared_with_its_dataset_label(wb, session, toy_descriptions):
    from app.records import dataset_label_text

    ex = wb.examples[0]
    _, session = wb.predict(ex["text"], ex["head_text"], ex["tail_text"], {"head": ex["head"], "tail": ex["tail"]}, session)
    summary = wb.show_prediction(session)[2]
    # the toy relations do not include the example's FewRel relation
    assert f"The dataset labels this pair '{ex['relation']}' (not among the relations in force): the prediction is wrong." in summary
    record = session["last"]
    assert dataset_label_text(record, record["label"]).endswith("the prediction is right.")
    other = next(name for name, _ in record["recall"] if name != record["label"])
    rank = [name for name, _ in record["recall"]].index(other) + 1
    assert f"(recall ranked it #{rank} of {len(toy_descriptions)}): the prediction is wrong." in dataset_label_text(record, other)
    # a sentence that is not a built-in example gets no such line
    _, session = predict(wb, session)
    assert "The dataset labels" not in wb.show_prediction(session)[2]


def test_a_clicked_examples_preview_marks_its_own_spans_even_before_they_are_stored(tiny_extractor, toy_descriptions, tmp_path):
    # An example whose head text occurs twice: looked up by text, the first "Paris" would be marked.
    text = "Paris Hilton was born in New York, not in Paris ."
    example = {"text": text, "head": [42, 47], "tail": [25, 33], "head_text": "Paris", "tail_text": "New York",
               "relation": "place of birth"}
    wb = workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions), [example])
    stale = {"head": [0, 4], "tail": [5, 9]}  # the previous sentence's spans, still in the state
    value, hint = wb.preview(text, "Paris", "New York", stale)
    assert value["entities"] == [{"entity": "HEAD", "start": 42, "end": 47}, {"entity": "TAIL", "start": 25, "end": 33}]
    assert (value, hint) == wb.example_spans(text, "Paris", "New York")[1:]
    # Spans the user marked keep their say while they still hold the strings, here the first "Paris".
    value, _ = wb.preview(text, "Paris", "New York", {"head": [0, 5], "tail": [25, 33]})
    assert value["entities"][0] == {"entity": "HEAD", "start": 0, "end": 5}


def test_check_descriptions_against_own_examples(wb, session, tmp_path):
    path = tmp_path / "ex.jsonl"
    rows = [{"tokens": f"{c} is the capital of {k} .".split(), "head": [0, 1], "tail": [5, 6], "relation": "capital of"}
            for c, k in (("Paris", "France"), ("Rome", "Italy"), ("Oslo", "Norway"))]
    rows.append({"tokens": "Ann was born in Oslo .".split(), "head": [0, 1], "tail": [4, 5], "relation": "born in"})
    rows.append({"tokens": "Lima is the capital city of Peru .".split(), "head": [0, 1], "tail": [6, 7], "relation": "capital city of"})
    session, _ = wb.add_relation("capital city of", "", session)  # no description: known by its example alone
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    session, _ = wb.import_examples(str(path), session)

    summary, table = wb.description_fit(session)
    index = wb.shared.engine.index(wb.relations(session), wb.labelled(session))
    fits = {f.relation: f for f in index.description_fits()}
    assert set(fits) == {"capital of", "born in"} and list(table["relation"]) == sorted(fits, key=lambda r: fits[r].right / fits[r].examples)
    for row in table.to_dict("records"):
        fit = fits[row["relation"]]
        assert row["examples"] == fit.examples and row["its description ranks it first"] == f"{fit.right} of {fit.examples}"
        assert row["ranked first instead"] == (", ".join(f"{n} ({c})" for n, c in fit.taken_by) or "—")
    weak = [f for f in fits.values() if f.right * 2 < f.examples]
    assert ("fewer than half" in summary) == bool(weak) and all(f"**{f.relation}**" in summary for f in weak)
    assert "1 relation is known by examples alone: no description to check." in summary
    assert summary.startswith("4 labelled examples scored by the descriptions alone")  # Lima's relation has no description
    # Another user sees none of ann's examples.
    summary, table = wb.description_fit(wb.open_session("user:bob"))
    assert summary.startswith("No labelled examples") and table.empty


def test_fit_summary_names_the_weak_descriptions_and_says_why_they_matter():
    from app.relations_tab import fit_summary
    from emma import DescriptionFit

    weak = [DescriptionFit(f"r{i}", 4, 1, (("other", 3),)) for i in range(7)]
    text = fit_summary([*weak, DescriptionFit("fine", 2, 1, (("r0", 1),)), DescriptionFit("x_*y*", 3, 0, ())], 0)
    assert text.startswith("33 labelled examples scored by the descriptions alone")
    assert "8 descriptions of 9 rank fewer than half of their own examples first: **r0** (1 of 4)," in text
    assert "**r4** (1 of 4) and 3 more. " in text and "fine" not in text and "classifier" in text
    one = fit_summary([DescriptionFit("x_*y*", 2, 0, (("c", 2),)), DescriptionFit("c", 2, 2, ())], 2)
    assert "1 description of 2 ranks fewer than half of its own examples first: **x\\_\\*y\\*** (0 of 2)." in one
    assert one.endswith("2 relations are known by examples alone: no description to check.")
    assert fit_summary([DescriptionFit("c", 2, 1, ())], 0).endswith("The 1 description checked ranks at least half of its own examples first.")
    assert fit_summary([], 1) == "1 relation with examples, known by examples alone: no description to check."


def test_new_relations_and_examples_are_encoded_by_the_model_the_owner_predicts_with(wb, session, tiny_extractor, tmp_path, monkeypatch):
    mine = Engine(tiny_extractor)  # stands in for the owner's fine-tuned version
    monkeypatch.setattr(wb.shared, "engine_for", lambda s: mine if s["owner"] == "user:ann" else wb.shared.engine)
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps({"tokens": "Paris is the capital of France .".split(), "head": [0, 1], "tail": [5, 6],
                                "relation": "capital of"}) + "\n")
    wb.import_examples(str(path), session)
    key = (tuple("Paris is the capital of France .".split()), (0, 1), (5, 6))
    assert key in mine._examples and key not in wb.shared.engine._examples
    wb.add_relation("works at", "person employed by this organization", session)
    text = emma.relation_text("works at", "person employed by this organization")
    assert text in mine._cache and text not in wb.shared.engine._cache
