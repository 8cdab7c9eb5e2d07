"""Offsets on recall scores (generalized zero-shot): trained relations lowered by the checkpoint's seen_margin."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from app.catalogue import Catalogue
from app.engine import Engine
from emma import EmmaConfig, RelationIndex
from emma.index import recall


def _rows(extractor, texts):
    return extractor.encode_descriptions(texts)


def test_offsets_shift_the_ranking_score_not_the_description_cosine(tiny_extractor, toy_descriptions):
    names, texts = list(toy_descriptions), list(toy_descriptions.values())
    plain = RelationIndex.build(names, _rows(tiny_extractor, texts))
    shifted = plain.with_offsets({names[0]: -0.5, "not a relation": 3.0})
    assert shifted.offsets == {names[0]: -0.5}
    q = torch.randn(3, plain.vectors.shape[1])
    a, b = plain.scores(q), shifted.scores(q)
    assert torch.allclose(b.description, a.description)
    assert torch.allclose(b.combined[:, 0], a.combined[:, 0] - 0.5) and torch.allclose(b.combined[:, 1:], a.combined[:, 1:])
    # The parts recall reports stay the description's cosine; the ranking uses the shifted score.
    found = recall(shifted, q, width=len(names))
    for scores, rows, parts in zip(found.scores, found.rows, found.parts):
        for s, r, (d, e) in zip(scores, rows, parts):
            assert e is None and d == pytest.approx(s + (0.5 if r == 0 else 0.0), abs=1e-5)


def test_offsets_survive_every_change_of_the_index(tiny_extractor, toy_descriptions, toy_instances):
    names, texts = list(toy_descriptions), list(toy_descriptions.values())
    index = RelationIndex.build(names, _rows(tiny_extractor, texts), offsets={names[1]: -0.2})
    index = index.with_relations(["new"], _rows(tiny_extractor, ["new: something else"]))
    assert index.offsets == {names[1]: -0.2}
    examples = tiny_extractor.encode_examples([i for i in toy_instances if i.relation == names[2]][:1])
    assert index.with_examples(names[2], examples).offsets == {names[1]: -0.2}
    assert index.without(names[0]).offsets == {names[1]: -0.2}
    assert index.without(names[1]).offsets == {}
    assert index.with_offsets({}).offsets == {}


def test_set_relations_lowers_only_the_seen_ones_by_the_checkpoints_margin(tiny_extractor, toy_descriptions, toy_instances):
    inst = toy_instances[0]
    tiny_extractor.set_relations(toy_descriptions)
    first = tiny_extractor.predict_batch([inst], top_k=None)[0]
    winner = first.label
    # Without a margin in the checkpoint, `seen` changes nothing.
    tiny_extractor.set_relations(toy_descriptions, seen=[winner])
    assert tiny_extractor.index.offsets == {}
    tiny_extractor.config = dataclasses.replace(tiny_extractor.config, seen_margin=0.9)
    tiny_extractor.set_relations(toy_descriptions, seen=[winner])
    assert tiny_extractor.index.offsets == {winner: -0.9}
    assert tiny_extractor.predict_batch([inst], top_k=None)[0].label != winner


def test_seen_margin_is_checked():
    with pytest.raises(ValueError, match="seen_margin must be in"):
        EmmaConfig(seen_margin=1.5)


def test_the_engine_lowers_every_catalogue_relation_beside_the_users_own(tiny_extractor, toy_descriptions):
    names = list(toy_descriptions)
    # trained (FewRel) and untrained (Wiki-ZSL) catalogue relations alike
    catalogue = Catalogue.from_descriptions({n: toy_descriptions[n] for n in names[:2]}, source="FewRel")
    catalogue = Catalogue(catalogue.entries + Catalogue.from_descriptions({n: toy_descriptions[n] for n in names[2:]},
                                                                          source="Wiki-ZSL").entries)
    tiny_extractor.config = dataclasses.replace(tiny_extractor.config, seen_margin=0.1)
    engine = Engine(tiny_extractor, built_in=catalogue.texts())
    mine = {**toy_descriptions, "my relation": "my relation: something new"}
    assert engine.index(mine).offsets == {name: -0.1 for name in toy_descriptions}
    # The margin only orders the user's relations against the catalogue's: with none of theirs in force, no
    # offsets at all, so the scores shown (and thresholds read on them) are the plain cosines.
    assert engine.index(toy_descriptions).offsets == {}
    inst_text, head, tail = "Apple was founded by Steve Jobs .", (0, 5), (21, 31)
    alone = engine.predict(inst_text, head, tail, toy_descriptions)
    plain = Engine(tiny_extractor).predict(inst_text, head, tail, toy_descriptions)
    assert alone.recall == plain.recall and alone.label == plain.label
    assert Engine(tiny_extractor).index(mine).offsets == {}


def test_a_prediction_says_which_scores_were_lowered_and_the_recall_chart_shows_it(tiny_extractor, toy_descriptions):
    from app import plots
    from app.records import prediction_record
    from emma import instance_from_text

    tiny_extractor.config = dataclasses.replace(tiny_extractor.config, seen_margin=0.1)
    engine = Engine(tiny_extractor, built_in=Catalogue.from_descriptions(toy_descriptions).texts())
    mine = {**toy_descriptions, "my relation": "my relation: something new"}
    sentence, head, tail = "Apple was founded by Steve Jobs .", (0, 5), (21, 31)
    prediction = engine.predict(sentence, head, tail, mine)
    assert prediction.recall_offsets == {name: pytest.approx(-0.1) for name in toy_descriptions}
    for name, score in prediction.recall:  # the bar is the cosine plus the offset; the parts keep the cosine
        assert score == pytest.approx(prediction.recall_parts[name][0] + prediction.recall_offsets.get(name, 0.0), abs=1e-5)
    record = prediction_record(sentence, head, tail, instance_from_text(sentence, head, tail), prediction, mine, "c", {}, [])
    chart = plots.recall_html(record)
    assert chart.count(" ↓</span>") == len(toy_descriptions) and "↓ = a catalogue relation, scored 0.10 below that" in chart
    alone = engine.predict(sentence, head, tail, toy_descriptions)
    assert alone.recall_offsets == {}
    record = prediction_record(sentence, head, tail, instance_from_text(sentence, head, tail), alone, toy_descriptions, "c", {}, [])
    assert "↓" not in plots.recall_html(record)
