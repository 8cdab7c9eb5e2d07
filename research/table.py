"""The evaluation tables: results files (JSON lines of `research.protocol.run`) → markdown and metrics rows.

Runs that differ only in the split seed share a row (mean ± std over splits); everything else that
changes results (budget, protocol, recipe) makes another row, labelled by where it departs from the
defaults. Records of every protocol are kept and shown:
    p1: before the classifier's candidate slots were shuffled in training (in recall order it learned
        "pick slot 0": its EMMA numbers are not valid, recall-only ones are);
    p2: shuffled slots, each stage clipped on its own;
    p3: fresh heads at head_lr 1e-3, warm-up capped at 10 % of the run;
    p4: entity markers start from the embeddings of "@"/"#" (before, all four started equal and
        stayed so), classifier head options, the two-stage schedule.

Example:
    >>> print(render_table(RESULTS_DIR / "experiments.jsonl"))
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import NamedTuple

from emma import TrainConfig

from . import REPO_ROOT
from .protocol import CLASSIFIER_VARIANTS, VARIANTS, WIKIZSL_SAMPLE, RunSpec, read_records

PAPER_F1 = {("fewrel", 5): 94.67, ("fewrel", 10): 87.22, ("fewrel", 15): 80.10,
            ("wikizsl", 5): 90.98, ("wikizsl", 10): 85.27, ("wikizsl", 15): 78.07}


class Budget(NamedTuple):
    """Everything but the split seed that makes runs comparable: runs share a table row iff these match."""

    per_relation: int | None
    epochs: int
    batch_size: int
    lr: float
    test_cap: int | None
    protocol: int
    schedule: str
    head: str | None
    features: str | None
    init: str | None
    train_seed: int
    max_length: int
    head_lr: float | None

    @classmethod
    def of(cls, spec: dict) -> "Budget":
        """A record's budget; keys a record predates take the value runs had before the key existed."""
        has_classifier = spec["variant"] in CLASSIFIER_VARIANTS
        classifier = lambda key, before: spec.get(key, before) if has_classifier else None  # noqa: E731
        return cls(spec["max_per_relation"], spec["epochs"], spec["batch_size"], spec["lr"], spec.get("eval_per_relation"),
                   spec.get("protocol", 1), spec.get("schedule", "joint"), classifier("classifier_head", "concat"),
                   classifier("classifier_features", "cls"), classifier("classifier_init", "base"),
                   spec.get("train_seed", 42), spec.get("max_length", 128), spec.get("head_lr"))


def shown_path(path: Path) -> str:
    """`path` relative to the repository when inside it (tables name no machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def summarize(results: Path) -> list[dict]:
    """One entry per table row: runs that differ only in the split seed, with mean/std of each metric.

    Each entry: dataset, m, variant, k, label (as in the table), splits, protocol, schedule, classifier
    settings, budget (text), paper_f1, and {"precision", "recall", "f1"} stats for recall_only, emma
    and emma_fused (None where the variant has no classifier). This is what metrics.json holds.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in read_records(results):
        s = r["spec"]
        # The Wiki-ZSL sample is its own dataset row: another protocol (FewRel-trained), no paper number.
        dataset = f"{s['dataset']}-{WIKIZSL_SAMPLE}" if s["seed"] == WIKIZSL_SAMPLE else s["dataset"]
        groups.setdefault((dataset, s["m"], s["variant"], s["k"], Budget.of(s)), []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], VARIANTS.index(k[2]), k[3], k[4].protocol, _extras(k[4]))):
        recs = groups[key]
        ds, m, variant, k, b = key
        entry = {"dataset": ds, "m": m, "variant": variant, "k": k, "label": _label(key),
                 "splits": sorted(str(r["spec"]["seed"]) for r in recs), "protocol": b.protocol, "schedule": b.schedule,
                 "classifier": {"head": b.head, "features": b.features, "init": b.init} if b.head else None,
                 "test_per_relation": b.test_cap, "budget": _budget(recs[0]["spec"], recs), "paper_f1": PAPER_F1.get((ds, m))}
        for stage in ("recall_only", "emma", "emma_fused"):
            valid = [r[stage] for r in recs if r.get(stage)] if not (stage != "recall_only" and b.protocol == 1) else []
            entry[stage] = {metric: _stats([v[metric] for v in valid if metric in v]) for metric in ("precision", "recall", "f1")} if valid else None
        out.append(entry)
    return out


def _budget(spec: dict, records: list[dict]) -> str:
    trains = [r["train"] for r in records if r.get("train")]
    if not trains:
        return "no training"
    per_rel = "all" if spec["max_per_relation"] is None else f"≤{spec['max_per_relation']}"
    steps = statistics.mean(t["steps"] for t in trains)
    by_device: dict[str, list[float]] = {}
    for t in trains:
        by_device.setdefault(t["device"].split(":")[0], []).append(t["wall_time_s"])
    walls = ", ".join(f"{statistics.mean(w) / 60:.1f} min ({dev}{f' ×{len(w)}' if len(by_device) > 1 else ''})"
                      for dev, w in by_device.items())
    return f"{per_rel}/rel, {spec['epochs']} ep, {steps:.0f} steps, {walls}"


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"mean": round(statistics.mean(values), 2), "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
            "values": [round(v, 2) for v in values]}


def _extras(b: Budget) -> str:
    """The settings where a row departs from the protocol's defaults (RunSpec, TrainConfig), for its label."""
    d, head_lr = RunSpec(), TrainConfig().head_lr
    extras = [f"lr {b.lr:g}" if b.lr != d.lr else "", f"batch {b.batch_size}" if b.batch_size != d.batch_size else "",
              f"train seed {b.train_seed}" if b.train_seed != d.train_seed else "",
              f"max length {b.max_length}" if b.max_length != d.max_length else "",
              ("heads at encoder lr" if b.head_lr is None else f"head lr {b.head_lr:g}") if b.protocol >= 3 and b.head_lr != head_lr else ""]
    return ", ".join(e for e in extras if e)


def _label(key: tuple) -> str:
    variant, k, b = key[2], key[3], key[4]
    text = variant if k == 2 else f"{variant}, k={k}"
    if variant != "untrained":
        tags = [f"p{b.protocol}"]
        if b.protocol >= 4:
            tags.append(b.schedule.replace("_", "-"))
            if b.head:
                tags.append(f"{b.head}/{b.features}" + (f", classifier from {b.init}" if b.schedule == "two_stage" else ""))
        extras = _extras(b)
        tags += [extras] if extras else []
        text += f" [{', '.join(tags)}]" + (" (classifier unshuffled: EMMA not valid)" if b.protocol == 1 else "")
    if b.test_cap:
        text += f", test ≤{b.test_cap}/rel"
    return text


def _cell(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{stats['mean']:.2f}" if stats["std"] is None else f"{stats['mean']:.2f} ± {stats['std']:.2f}"


TABLE_NOTES = [
    "split's train relations and tests on its m unseen relations. Macro P/R/F1 in percent (README: formula).",
    "Protocol: p1 = before the classifier's candidate slots were shuffled (its EMMA numbers are not valid,",
    "recall-only ones are); p2 = shuffled slots, per-stage clipping; p3 = p2 + fresh heads at lr 1e-3, warm-up ≤ 10 %;",
    "p4 = p3 + entity markers initialised from '@'/'#' (before, all four started equal and stayed so), with the",
    "schedule (joint, or two-stage: recall, then the classifier on frozen recall) and the classifier head",
    "(concat = the paper's MLP over the k concatenated pair states, shared = each pair scored alone; cls or",
    "cls_entities pair features; a two-stage classifier starts from the trained recall encoder or the base one).",
    "EMMA = the classifier decides among recall's top k (the paper's rule); fused = classifier probability ×",
    "recall softmax over the k candidates. Wall times on cuda were measured with up to 8 runs sharing one GPU.",
    "A row's settings in brackets after the protocol are where it departs from the defaults (lr 5e-5, batch 32,",
    "train seed 42, max length 128, pooling heads at lr 1e-3).",
]


def render_table(results: Path, title: str = "Evaluation results") -> str:
    """The markdown table of `summarize(results)`: mean ± std over splits."""
    rows = []
    for e in summarize(results):
        rec, emma, fused = e["recall_only"], e["emma"] or {}, e["emma_fused"] or {}
        cells = [e["dataset"], str(e["m"]), e["label"], f"{len(e['splits'])} ({','.join(e['splits'])})",
                 _cell(rec["precision"]), _cell(rec["recall"]), _cell(rec["f1"]),
                 _cell(emma.get("precision")), _cell(emma.get("recall")), _cell(emma.get("f1")), _cell(fused.get("f1")),
                 str(e["paper_f1"] or ""), e["budget"]]
        rows.append("| " + " | ".join(cells) + " |")
    header = ("| dataset | m | variant [protocol] | splits | recall-only P | R | F1 | EMMA P | R | F1 | fused F1 | paper EMMA F1 | training budget (mean per run) |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    generated = (f"Generated by `python -m research table --results {shown_path(results)}` from the results file; "
                 "every run trains a fresh model on the")
    return "\n".join([f"# {title}", "", generated, *TABLE_NOTES, "", header, *rows, ""])


def metrics_json(results: Path) -> dict:
    """What a checkpoint's metrics.json holds: a note and the rows of `summarize`."""
    note = ("Zero-shot scores of the recipe: each row from fresh models trained on a split's train relations "
            "only and tested on its m unseen ones (macro P/R/F1 in percent, mean/std over splits). "
            f"Generated by `python -m research table` from {shown_path(results)}.")
    return {"note": note, "rows": summarize(results)}
