"""Macro P/R/F1 as ZS-BERT / RE-Matching / EMMA compute it, and `evaluate` on the tiny extractor."""

from __future__ import annotations

import pytest

from emma.data import Instance
from emma.evaluate import evaluate, macro_prf, markdown_table


def _check(metrics, **expected):
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_docstring_example():
    # P_a = 1/1, P_b = 1/2 → P = 1.5/2; R_a = 1/2, R_b = 1 → R = 1.5/2
    _check(macro_prf(["a", "a", "b"], ["a", "b", "b"]), precision=75.0, recall=75.0, f1=75.0,
           accuracy=200 / 3, per_class_f1=100 * (2 / 3 + 2 / 3) / 2)


def test_precision_is_divided_by_distinct_predicted_labels():
    gold = ["a", "a", "b", "b", "c", "c"]
    pred = ["a", "a", "a", "b", "a", "b"]  # c is never predicted
    # P_a = 2/4, P_b = 1/2, P_c = 0; two distinct predicted labels → P = (0.5 + 0.5 + 0) / 2 (not / 3)
    # R_a = 2/2, R_b = 1/2, R_c = 0 → R = 1.5 / 3
    m = macro_prf(gold, pred)
    f_a, f_b = 2 * 0.5 * 1 / 1.5, 0.5
    _check(m, precision=50.0, recall=50.0, f1=50.0, accuracy=50.0, per_class_f1=100 * (f_a + f_b + 0) / 3)


def test_predicted_label_outside_gold_counts_in_the_denominator_only():
    gold = ["a", "a", "b"]
    pred = ["a", "x", "b"]
    # P_a = 1, P_b = 1, x has no gold instance: sum over gold relations 2, over 3 distinct predictions
    p, r = 2 / 3, (0.5 + 1) / 2
    _check(macro_prf(gold, pred), precision=100 * p, recall=100 * r, f1=100 * 2 * p * r / (p + r), accuracy=200 / 3)


def test_unbalanced_classes():
    gold = ["a"] * 4 + ["b"]
    pred = ["a", "a", "a", "b", "b"]
    # P_a = 3/3, P_b = 1/2 → 1.5/2; R_a = 3/4, R_b = 1 → 1.75/2
    p, r = 0.75, 0.875
    _check(macro_prf(gold, pred), precision=100 * p, recall=100 * r, f1=100 * 2 * p * r / (p + r), accuracy=80.0)


def test_perfect_and_hopeless():
    _check(macro_prf(["a", "b", "c"], ["a", "b", "c"]), precision=100, recall=100, f1=100, accuracy=100, per_class_f1=100)
    _check(macro_prf(["a", "b"], ["b", "a"]), precision=0, recall=0, f1=0, accuracy=0, per_class_f1=0)


def test_macro_prf_argument_checks():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        macro_prf(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        macro_prf([], [])


def test_evaluate_on_the_tiny_extractor(tiny_extractor, toy_instances):
    report = evaluate(tiny_extractor, toy_instances)
    assert report["n_instances"] == 12 and report["n_relations"] == 4 and report["k"] == 2
    assert report["reranked"] is True
    preds = tiny_extractor.predict_batch(toy_instances)
    gold = [i.relation for i in toy_instances]
    assert report["recall_only"] == macro_prf(gold, [p.recall_label for p in preds])
    assert report["emma_fused"] == macro_prf(gold, [p.label for p in preds])  # the shipped rule decides
    assert report["emma"] == macro_prf(gold, [p.choice("classifier") for p in preds])
    table = markdown_table(report)
    assert table.count("\n") == 4 and "recall only" in table and "EMMA" in table and "fused" in table
    assert f"{report['emma']['f1']:.2f}" in table


def test_evaluate_rejects_relations_outside_the_index(tiny_extractor, toy_instances):
    stray = Instance(("a", "b"), (0, 1), (1, 2), "unknown relation")
    with pytest.raises(ValueError, match="gold relations missing from the relation set: unknown relation"):
        evaluate(tiny_extractor, [*toy_instances[:2], stray])


def test_fuse_weighs_classifier_against_recall_confidence():
    from emma.pipeline import fuse

    # recall prefers a by exp(0.01 / 0.02) ≈ 1.65 : 1, i.e. softmax 0.62 : 0.38
    confident = fuse([0.2, 0.8], [0.50, 0.49], 0.02)
    assert confident[1] > confident[0]  # 0.2·0.62 < 0.8·0.38: a confident classifier overrides
    hesitant = fuse([0.45, 0.55], [0.50, 0.49], 0.02)
    assert hesitant[0] > hesitant[1]  # 0.45·0.62 > 0.55·0.38: a hesitant one does not
    assert sum(hesitant) == pytest.approx(1.0)
    assert hesitant[0] == pytest.approx(0.45 * 0.6225 / (0.45 * 0.6225 + 0.55 * 0.3775), rel=1e-3)


def test_the_decision_rule_picks_the_label_and_evaluate_reports_both(tiny_checkpoint, toy_instances, toy_descriptions):
    import dataclasses

    from emma.pipeline import Extractor

    paper = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    paper.model.config = dataclasses.replace(paper.model.config, decision="classifier")
    paper.config = paper.model.config
    fused = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    for ex in (paper, fused):
        ex.set_relations(toy_descriptions)
    a, b = paper.predict_batch(toy_instances), fused.predict_batch(toy_instances)
    for p, q in zip(a, b):
        assert p.probabilities == q.probabilities and p.fused == q.fused and len(p.fused) == 2
        assert p.label == p.candidates[max(range(2), key=p.probabilities.__getitem__)] and p.score == max(p.probabilities)
        assert q.label == q.candidates[max(range(2), key=q.fused.__getitem__)] and q.score == max(q.fused)
    r1, r2 = evaluate(paper, toy_instances), evaluate(fused, toy_instances)
    assert (r1["decision"], r2["decision"]) == ("classifier", "fused")
    assert r1["emma"] == r2["emma"] and r1["emma_fused"] == r2["emma_fused"]  # both rules reported, whatever the checkpoint's
    gold = [i.relation for i in toy_instances]
    assert r2["emma_fused"] == macro_prf(gold, [q.label for q in b])
    inside = [(p, g) for p, g in zip(a, gold) if g in p.candidates]
    diag = r1["top_k"]
    assert diag["n_gold_in_top_k"] == len(inside) and diag["gold_in_top_k"] == pytest.approx(100 * len(inside) / len(gold))
    if inside:
        acc = diag["accuracy_when_gold_in_top_k"]
        assert acc["recall"] == pytest.approx(100 * sum(p.recall_label == g for p, g in inside) / len(inside))
        assert acc["classifier"] == pytest.approx(100 * sum(p.label == g for p, g in inside) / len(inside))
