"""One probe: the protocol's recall stage with the probe's changes, tested, appended to a results file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from emma import EmmaConfig, Extractor, TrainConfig, cap_per_relation, evaluate

from ..protocol import RunSpec, append_record, load_run_data
from .patches import PATCHES, patch_freeze_layers, typed_descriptions

# The protocol run whose recall stage every probe trains (its split and budget; no copy of its numbers here).
CONTROL = RunSpec(m=15, seed="ori", variant="no_classifier")


def apply_patches(changes: dict, set_attr=setattr) -> None:
    """Patch in every change of the library that `changes` switches on."""
    for flag, patch in PATCHES.items():
        if changes.get(flag):
            patch(set_attr)
    if changes.get("freeze_layers"):
        patch_freeze_layers(changes["freeze_layers"], set_attr)


def probe_config(changes: dict, max_per_relation: int | None) -> TrainConfig:
    """The recall stage's training config with the probe's library options (lr, windows, τ, ...)."""
    arch = EmmaConfig(max_length=changes["max_length"], max_description_length=changes["max_description_length"],
                      use_classifier=False, temperature=changes["temperature"], description_pooling=changes["description_pooling"])
    return TrainConfig(
        model=arch, epochs=CONTROL.epochs, batch_size=CONTROL.batch_size, lr=changes["lr"], head_lr=changes["head_lr"],
        seed=changes["train_seed"], max_per_relation=max_per_relation, warmup_steps=changes["warmup_steps"],
        weight_decay=changes["weight_decay"], max_grad_norm=changes["max_grad_norm"], precision=changes["precision"],
        freeze_word_embeddings=changes["freeze_word_embeddings"])


def run_probe(name: str, changes: dict, *, data_dir: Path, results: Path, runs_dir: Path, dry_run: int = 0,
              set_attr=setattr) -> dict:
    """Train the probe's recall stage in `runs_dir/name` (resuming), test it, append its record to `results`.

    Args:
        changes: every probe option (the record keeps them all: `probe-table` shows where they depart
            from the defaults).
        dry_run: N train and N test sentences per relation (a check of the code, not a probe).
        set_attr: how patches are applied (`setattr`: to this process for good).
    """
    from emma.train import train  # not exported by emma: the name would hide the emma.train module

    apply_patches(changes, set_attr)
    data = load_run_data(CONTROL, data_dir)
    train_descriptions, test_descriptions = data.train_descriptions, data.test_descriptions
    if changes.get("typed_descriptions"):
        typed = typed_descriptions(data_dir, changes["typed_descriptions"])
        train_descriptions = {r: typed[r] for r in train_descriptions}
        test_descriptions = {r: typed[r] for r in test_descriptions}
    test = cap_per_relation(data.test, dry_run, seed=0) if dry_run else data.test
    out = runs_dir / name
    t0 = time.perf_counter()
    train(probe_config(changes, dry_run or CONTROL.max_per_relation), data.train, train_descriptions, out, resume=True)
    extractor = Extractor.load(out)
    extractor.set_relations(test_descriptions)
    report = evaluate(extractor, test)
    meta = json.loads((out / "training.json").read_text())
    record = {"name": name, "changes": changes, "recall_only": report["recall_only"], "n_test": len(test),
              "steps": meta["step"], "train_wall_s": meta["wall_time_s"], "wall_s": round(time.perf_counter() - t0),
              "device": meta["device"], "mixed_precision": meta["mixed_precision"]}
    append_record(results, record)
    return record
