"""Evaluation: macro precision / recall / F1 exactly as ZS-BERT, RE-Matching and EMMA compute them.

For gold relations G and predictions ŷ over n instances:

    P_r = |{i: ŷ_i = r and y_i = r}| / |{i: ŷ_i = r}|   (0 when r is never predicted)
    R_r = |{i: ŷ_i = r and y_i = r}| / |{i: y_i = r}|
    P   = Σ_{r∈G} P_r / |{distinct predicted labels}|
    R   = Σ_{r∈G} R_r / |G|
    F1  = 2PR / (P + R)

Note the precision denominator: the number of distinct *predicted* labels, not |G| (the
reference `compute_macro_PRF`). In the zero-shot protocol every prediction is one of the test
relations, so the two coincide unless some relation is never predicted. We also report accuracy
and the mean of per-relation F1 ("per_class_f1"), which has no such quirk.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from .data import Instance
from .pipeline import Extractor

REPORT_RULES = {"recall_only": "recall", "emma": "classifier", "emma_fused": "fused"}  # report key: the rule it scores


def macro_prf(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Macro P/R/F1 (percent) as in the reference code, plus accuracy and mean per-class F1.

    Args:
        gold: gold labels.
        predicted: predicted labels, same length.

    Example:
        >>> macro_prf(["a", "a", "b"], ["a", "b", "b"])["f1"]
        75.0
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("nothing to evaluate")
    return macro_prf_counts(label_counts(gold, predicted))


def label_counts(gold: Sequence[str], predicted: Sequence[str]) -> Counter:
    """The counts `macro_prf` is made of: ("tp", r), ("pred", r), ("gold", r) per label r, and "n". Counts of
    disjoint sets of instances add up, so a resample's counts are the sum of its parts'."""
    counts: Counter = Counter(n=len(gold))
    for g, p in zip(gold, predicted):
        counts["gold", g] += 1
        counts["pred", p] += 1
        if g == p:
            counts["tp", g] += 1
    return counts


def macro_prf_counts(counts: Counter) -> dict[str, float]:
    """`macro_prf` from `label_counts` (those of at least one instance)."""
    relations = sorted(key[1] for key in counts if isinstance(key, tuple) and key[0] == "gold" and counts[key])
    n_predicted = sum(1 for key in counts if isinstance(key, tuple) and key[0] == "pred" and counts[key])
    sum_p = sum_r = sum_f = 0.0
    for r in relations:
        p_r = counts["tp", r] / counts["pred", r] if counts["pred", r] else 0.0
        r_r = counts["tp", r] / counts["gold", r]
        sum_p += p_r
        sum_r += r_r
        sum_f += 2 * p_r * r_r / (p_r + r_r) if p_r + r_r else 0.0
    precision = sum_p / n_predicted
    recall = sum_r / len(relations)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(counts["tp", r] for r in relations) / counts["n"]
    return {
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "accuracy": 100 * accuracy,
        "per_class_f1": 100 * sum_f / len(relations),
    }


def evaluate(extractor: Extractor, instances: Sequence[Instance], progress: bool = False) -> dict:
    """Score recall-only and full EMMA on labelled instances against the extractor's relation set.

    Returns:
        {"recall_only", "emma" (the paper's rule: the classifier decides among the top k),
        "emma_fused" (classifier × recall over the top k), "decision" (the extractor's own rule),
        "top_k" (how often gold reaches the candidates and each rule's accuracy there),
        "n_instances", "n_relations", "k", "reranked"}, metrics as in `macro_prf`. Instances whose
        relation is not in the relation set are an error.
    """
    unknown = sorted({i.relation for i in instances} - set(extractor.relations))
    if unknown:
        raise ValueError(f"gold relations missing from the relation set: {', '.join(map(str, unknown[:10]))}")
    preds = extractor.predict_batch(instances, top_k=extractor.config.k, progress=progress)
    gold = [i.relation for i in instances]
    return {
        **{key: macro_prf(gold, [p.choice(rule) for p in preds]) for key, rule in REPORT_RULES.items()},
        "decision": extractor.config.decision,
        "top_k": _top_k_diagnostics(preds, gold),
        "n_instances": len(instances),
        "n_relations": len(extractor.relations),
        "k": extractor.config.k,
        "reranked": all(p.reranked for p in preds),
    }


def _top_k_diagnostics(preds, gold) -> dict:
    """Why EMMA does or does not beat recall: how often the gold relation reaches the k candidates, and
    how often each rule picks it when it does (percent). The classifier can only help if its
    accuracy there exceeds recall's own top-1 accuracy there."""
    inside = [(p, g) for p, g in zip(preds, gold) if p.reranked and g in p.candidates]
    reranked = sum(p.reranked for p in preds)
    if not inside:
        return {"gold_in_top_k": 0.0 if reranked else None, "n_gold_in_top_k": 0}
    return {
        "gold_in_top_k": 100 * len(inside) / reranked,
        "n_gold_in_top_k": len(inside),
        "accuracy_when_gold_in_top_k": {
            rule: 100 * sum(p.choice(rule) == g for p, g in inside) / len(inside) for rule in ("recall", "classifier", "fused")
        },
    }


def markdown_table(report: dict) -> str:
    """A small markdown table of a report from `evaluate`."""
    rows = ["| method | P | R | F1 | accuracy | per-class F1 |", "|---|---|---|---|---|---|"]
    for key, label in (("recall_only", "recall only"), ("emma", "EMMA (classifier decides)"), ("emma_fused", "EMMA fused (classifier × recall)")):
        m = report[key]
        rows.append(f"| {label} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | {m['accuracy']:.2f} | {m['per_class_f1']:.2f} |")
    return "\n".join(rows)
