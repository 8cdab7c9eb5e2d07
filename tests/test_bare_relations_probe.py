"""research.bare_relations_probe: the F1 of a part of the relations, and the two rules it scores for a bare relation."""

from __future__ import annotations

import pytest

import emma
from research.bare_relations_probe import RULES, SHOTS, macro_f1_of, set_scores
from research.fewshot import FewShotSet


def test_the_f1_of_some_relations_counts_every_instance_against_them():
    gold, picked = ["a", "a", "b", "c"], ["a", "b", "b", "b"]
    assert macro_f1_of(gold, picked, {"a", "b", "c"}) == emma.macro_prf(gold, picked)["f1"]
    # a: P 1, R 1/2 → 66.7; b: P 1/3 (it took an "a" and the "c"), R 1 → 50
    assert macro_f1_of(gold, picked, {"a"}) == pytest.approx(200 / 3)
    assert macro_f1_of(gold, picked, {"b"}) == pytest.approx(50.0)
    assert macro_f1_of(gold, picked, {"a", "b"}) == pytest.approx((200 / 3 + 50) / 2)


def test_both_rules_are_scored_for_every_count_draw_half_and_group(tiny_extractor, toy_descriptions, toy_instances):
    # Descriptions in CrossRE's "name: description" form give each relation its name.
    descriptions = {r: f"{r}: {text}" for r, text in toy_descriptions.items()}
    fs = FewShotSet("crossre-toy", descriptions, toy_instances, toy_instances)
    scores = set_scores(tiny_extractor, fs)
    assert set(scores) == {f"K{k} {rule} {group}" for k in SHOTS for rule in RULES for group in ("all", "bare", "described")}
    assert all(len(v) == 3 * 2 for v in scores.values())  # three draws, each half of the relations bare in turn
    assert all(0.0 <= f <= 100.0 for v in scores.values() for f in v)


def test_the_mixed_case_scores_both_rules_with_and_without_examples(tiny_extractor, toy_descriptions, toy_instances):
    from research.bare_relations_probe import MIXED_RULES, mixed_scores

    fs = FewShotSet("crossre-toy", dict(toy_descriptions), toy_instances, toy_instances)
    levels = {k: {"gap": 0.05, "d": (0.3, 0.1), "p": (0.35, 0.12)} for k in SHOTS}
    scores = mixed_scores(tiny_extractor, fs, levels, {0: (0.3, 0.1), 5: (0.35, 0.12)})
    assert set(scores) == {f"K{k} {rule} {group}" for k in SHOTS for rule in MIXED_RULES
                           for group in ("all", "with examples", "without")}
    assert all(len(v) == 6 and all(0.0 <= f <= 100.0 for f in v) for v in scores.values())


def test_the_levels_by_count_are_measured_on_fewrel_training_relations(tiny_extractor, shared_data, monkeypatch):
    import research.bare_relations_probe as probe

    monkeypatch.setattr(probe, "DATA_DIR", shared_data)
    monkeypatch.setattr(probe, "LEVEL_RELATIONS", 3)
    monkeypatch.setattr(probe, "LEVEL_SCORED", 4)
    levels = probe.count_levels(tiny_extractor)
    assert set(levels) == set(SHOTS) and all(-2.0 < v["gap"] < 2.0 and v["p"][1] > 0 for v in levels.values())
    assert levels == probe.count_levels(tiny_extractor)  # one fixed draw


def test_the_level_shares_are_scored_with_every_relation_labelled_and_half(tiny_extractor, toy_descriptions, toy_instances):
    from research.bare_relations_probe import LEVEL_KINDS, LEVEL_SHOTS, SEEDS, SHARES, level_scores

    fs = FewShotSet("crossre-toy", dict(toy_descriptions), toy_instances, toy_instances)
    scores = level_scores(tiny_extractor, fs, {0: (0.3, 0.1), 5: (0.35, 0.12)})
    assert set(scores) == {f"{setting} K{k} {kind} {s}" for setting, shots in (("every", LEVEL_SHOTS), ("half", SHOTS))
                           for k in shots for kind in LEVEL_KINDS for s in SHARES}
    assert all(len(v) == len(SEEDS) for key, v in scores.items() if key.startswith("every"))
    assert all(0.0 <= f <= 100.0 for v in scores.values() for f in v)


def test_a_mix_is_moved_to_the_descriptions_mean_or_mean_and_spread_by_its_count():
    import torch

    from research.bare_relations_probe import moved

    stats = {0: (0.3, 0.1), 5: (0.4, 0.2)}
    mix, counts = torch.tensor([[0.5, 0.6]]), torch.tensor([0.0, 5.0])
    assert moved(mix, counts, stats, 1.0, spread=False)[0].tolist() == pytest.approx([0.5, 0.5])
    assert moved(mix, counts, stats, 0.5, spread=False)[0].tolist() == pytest.approx([0.5, 0.55])
    # mean and spread: (0.6 − 0.4) / 0.2 · 0.1 + 0.3 = 0.4; a relation without examples stays where it was
    assert moved(mix, counts, stats, 1.0, spread=True)[0].tolist() == pytest.approx([0.5, 0.4])
