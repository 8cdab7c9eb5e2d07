"""The recall probes (research.probes): each patch still applies to the library and trains; the tables and sweep plan."""

from __future__ import annotations

import json
import math

import pytest

from emma import EmmaConfig, TrainConfig
from research import RESULTS_DIR
from research.probes.commands import probe_defaults
from research.probes.patches import PATCHES
from research.probes.records import changes_label, runs_table, summary_table
from research.probes.run import CONTROL, apply_patches, probe_config, run_probe
from research.probes.sweep import CONFIRM_SEEDS, PHASE1, confirm_jobs

RECORDED = RESULTS_DIR / "recall_probes.jsonl"


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_accelerate")
@pytest.mark.parametrize("flag", [*PATCHES, "freeze_layers"])
def test_each_patch_still_applies_and_trains(flag, monkeypatch, tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    """The patches reach the library's internals: a restructured library must still take them."""
    from emma.train import train

    apply_patches({flag: 1 if flag == "freeze_layers" else True}, monkeypatch.setattr)  # undone after the test
    config = TrainConfig(model=EmmaConfig(max_length=32, use_classifier=False), encoder=tiny_encoder_dir, max_steps=2,
                         batch_size=4, precision="fp32", warmup_steps=0)
    out = train(config, toy_instances, toy_descriptions, tmp_path / "run")
    assert json.loads((out / "training.json").read_text())["step"] == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log if "loss" in r)


def test_the_control_is_the_protocols_recall_stage():
    defaults = probe_defaults()
    config = probe_config(defaults, CONTROL.max_per_relation)
    assert not config.model.use_classifier and config.model.description_pooling == "attention"
    assert (config.lr, config.batch_size, config.epochs, config.seed, config.max_per_relation) == (
        CONTROL.lr, CONTROL.batch_size, CONTROL.epochs, CONTROL.train_seed, CONTROL.max_per_relation)
    assert changes_label(defaults, defaults) == "none (the library's recall)"
    assert changes_label({**defaults, "no_dropout": True, "lr": 3e-5}, defaults) == "no dropout, lr=3e-05"


def test_recorded_probes_render_with_their_controls():
    if not RECORDED.is_file():
        pytest.skip("no results/recall_probes.jsonl")
    defaults = probe_defaults()
    summary = summary_table(RECORDED, defaults)
    assert "| none (the library's recall) | cpu |" in summary and "| none (the library's recall) | cuda |" in summary
    assert len(runs_table(RECORDED, defaults).splitlines()) == 2 + len(RECORDED.read_text().splitlines())


def test_the_sweep_confirms_the_best_candidates_and_pairs_the_best_two():
    scores = {name: 70.0 for name, _ in PHASE1}
    scores.update({"control": 73.0, "cls": 80.0, "no_dropout": 74.0, "wd0": 73.5, "lr3e-5": 72.0})
    jobs = confirm_jobs(scores, scores["control"], confirm=2)
    names = {name for name, _, _ in jobs}
    assert names == {"control", "no_dropout", "wd0", "no_dropout+wd0"}, "cls is a reference, not a candidate"
    assert {seed for name, _, seed in jobs if name == "no_dropout"} == set(CONFIRM_SEEDS)
    pair = next(flags for name, flags, _ in jobs if name == "no_dropout+wd0")
    assert pair == ["--no-dropout", "--weight-decay", "0"]


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_accelerate")
def test_a_dry_run_probe_trains_tests_and_records(shared_data, tiny_encoder_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("EMMA_DEFAULT_ENCODER", tiny_encoder_dir)
    changes = {**probe_defaults(), "no_dropout": True, "precision": "fp32", "max_length": 32}
    results = tmp_path / "probes.jsonl"
    record = run_probe("dry", changes, data_dir=shared_data, results=results, runs_dir=tmp_path / "runs", dry_run=2,
                       set_attr=monkeypatch.setattr)
    assert record["n_test"] == 2 * 15 and 0 <= record["recall_only"]["f1"] <= 100
    assert json.loads(results.read_text())["changes"]["no_dropout"] is True
