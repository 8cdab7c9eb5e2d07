"""The probes' results file as markdown: one row per run, or one per probe (mean ± std over training seeds)."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..protocol import read_records


def changes_label(changes: dict, defaults: dict) -> str:
    """The probe's departures from the control, e.g. "no dropout, lr=3e-05" (records predating an option lack its key)."""
    parts = []
    for key, value in changes.items():
        if key == "train_seed" or value == defaults.get(key, value):
            continue
        shown = f"{value:g}" if isinstance(value, float) else value
        parts.append(key.replace("_", " ") if value is True else f"{key.replace('_', ' ')}={shown}")
    return ", ".join(parts) or "none (the library's recall)"


def runs_table(results: Path, defaults: dict) -> str:
    """One row per run."""
    rows = ["| probe | changes | train seed | P | R | F1 | steps | training (device, precision) |", "|---|---|---|---|---|---|---|---|"]
    for r in read_records(results):
        m = r["recall_only"]
        precision = "fp32" if r["mixed_precision"] == "no" else r["mixed_precision"]
        wall = r["train_wall_s"]
        wall = f"{wall / 60:.0f} min" if wall >= 600 else f"{wall:.0f} s"
        rows.append(f"| {r['name']} | {changes_label(r['changes'], defaults)} | {r['changes']['train_seed']} | {m['precision']:.2f} "
                    f"| {m['recall']:.2f} | {m['f1']:.2f} | {r['steps']} | {wall} ({r['device']}, {precision}) |")
    return "\n".join(rows)


def summary_table(results: Path, defaults: dict) -> str:
    """One row per probe and device: mean ± std over its training seeds, and its paired difference to the
    same device's control over the seeds both ran (seed noise is ± 0.7–1.1 F1, so single runs mislead).
    "auto" precision is fp32 on a CPU without bf16 and bf16 on a GPU."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for r in read_records(results):
        key = (changes_label(r["changes"], defaults), r["device"])  # a precision other than auto's is a change
        groups.setdefault(key, {})[r["changes"]["train_seed"]] = r["recall_only"]["f1"]
    controls = {device: f1s for (label, device), f1s in groups.items() if label.startswith("none")}
    rows = ["| changes | device | seeds | F1 mean ± std | best | vs control, same seeds |", "|---|---|---|---|---|---|"]
    for (label, device), f1s in sorted(groups.items(), key=lambda kv: (kv[0][1], -statistics.mean(kv[1].values()))):
        values = list(f1s.values())
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        control = controls.get(device, {})
        shared = sorted(set(f1s) & set(control))
        versus = "—"
        if shared and not label.startswith("none"):
            diffs = [f1s[seed] - control[seed] for seed in shared]
            versus = f"{statistics.mean(diffs):+.2f} over {len(shared)}"
        rows.append(f"| {label} | {device} | {len(values)} | {statistics.mean(values):.2f}{spread} | {max(values):.2f} | {versus} |")
    return "\n".join(rows)
