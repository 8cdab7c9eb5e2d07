"""Generalized zero-shot on a FewRel split (issue 18), as the GZSL literature measures it.

A model trained on the train relations of FewRel m = 15 `ori` (e.g. a transfer-grid run, which
trains on at most `trained_cap` instances per relation, drawn as `research.transfer_grid` draws
them) is scored with all 80 FewRel relations in force. Seen: instances of its train relations it
was *not* trained on (held back). Unseen: the split's `eval` relations (dev) and `test` relations
(test). The seen instances are halved into dev and test. For each margin δ taken off the trained
relations' recall scores (`RelationIndex.with_offsets`, the workbench's `seen_margin`), the record
gives seen / unseen accuracy and their harmonic mean H on dev and on test; δ is chosen on dev (the
highest dev H) and its test figures are the result.

    python -m research gzsl-split --checkpoint runs/transfer-grid/control_n100_recall_s42
"""

from __future__ import annotations

import platform
import random
import time
from pathlib import Path

import torch

import emma

from .gzsl import accuracy
from .jsonl import append
from .protocol import dataset_files, fewrel_pool
from .transfer_grid import m15_split, trained_on

RULES = ("recall", "fused")


def sets(data: Path, trained_cap: int, seen_per_relation: int, unseen_per_relation: int, seed: int = 1234) -> dict:
    """{"dev": (seen, unseen), "test": (seen, unseen)}, the trained relations, and the 80 descriptions."""
    split, pool = m15_split(data), fewrel_pool(data)
    trained = set(trained_on(pool, split, trained_cap))
    train_relations = set(split.train)
    held = emma.cap_per_relation([i for i in pool if i.relation in train_relations and i not in trained],
                                 2 * seen_per_relation, seed=seed)
    rng = random.Random(seed)
    rng.shuffle(held)
    halves: dict[str, list] = {"dev": [], "test": []}
    count: dict[str, int] = {}
    for i in held:  # alternate per relation, so each half has about seen_per_relation of each
        count[i.relation] = count.get(i.relation, 0) + 1
        halves["dev" if count[i.relation] % 2 else "test"].append(i)
    unseen = {name: emma.cap_per_relation([i for i in pool if i.relation in set(relations)], unseen_per_relation, seed=seed)
              for name, relations in (("dev", split.eval), ("test", split.test))}
    descriptions = emma.read_descriptions(dataset_files("fewrel", data)[1])
    return {"dev": (halves["dev"], unseen["dev"]), "test": (halves["test"], unseen["test"]),
            "trained": train_relations, "descriptions": descriptions}


def scores(extractor: emma.Extractor, seen: list, unseen: list, trained: set[str], margin: float) -> dict:
    view = extractor.with_index(extractor.index.with_offsets({name: -margin for name in trained}))
    predictions = view.predict_batch(seen + unseen, top_k=2)
    out = {}
    for rule in RULES if extractor.model.classifier is not None else ("recall",):
        labels = [p.choice(rule) for p in predictions]
        s = accuracy(labels[: len(seen)], [i.relation for i in seen])
        u = accuracy(labels[len(seen):], [i.relation for i in unseen])
        out[rule] = {"seen": round(s, 1), "unseen": round(u, 1), "H": round(2 * s * u / (s + u) if s + u else 0.0, 1)}
    return out


def run(checkpoint: str, data: Path, results: Path, margins: list[float], trained_cap: int, seen_per_relation: int = 10,
        unseen_per_relation: int = 100) -> dict:
    """Score every margin on dev and test; append one record (with the δ chosen on dev) to `results`."""
    extractor = emma.Extractor.load(checkpoint)
    got = sets(data, trained_cap, seen_per_relation, unseen_per_relation)
    extractor.set_relations(got["descriptions"])
    start = time.perf_counter()
    rows = [{"margin": m, **{part: scores(extractor, *got[part], got["trained"], m) for part in ("dev", "test")}} for m in margins]
    rule = "fused" if extractor.model.classifier is not None else "recall"
    chosen = max(rows, key=lambda r: r["dev"][rule]["H"])
    record = {"checkpoint": emma.checkpoint_id(checkpoint), "folder": Path(checkpoint).name, "split": "fewrel m15 ori",
              "candidates": len(got["descriptions"]), "trained_relations": len(got["trained"]), "rule": rule,
              "sizes": {part: {"seen": len(got[part][0]), "unseen": len(got[part][1])} for part in ("dev", "test")},
              "rows": rows, "chosen_margin": chosen["margin"], "wall_time_s": round(time.perf_counter() - start, 1),
              "budget": f"{platform.machine()}, {torch.get_num_threads()} threads, precision {extractor.precision}, no training"}
    append(results, record)
    return record


def table(records: list[dict]) -> str:
    """Per model: test seen / unseen / H at δ = 0 and at the δ chosen on dev."""
    lines = ["| model | rule | δ = 0: seen / unseen / **H** (test) | δ chosen on dev | at that δ: seen / unseen / **H** (test) |",
             "|---|---|---|---|---|"]
    for r in records:
        rule, by_margin = r["rule"], {row["margin"]: row for row in r["rows"]}
        zero, best = by_margin.get(0.0), by_margin[r["chosen_margin"]]
        fmt = lambda x: f"{x['seen']} / {x['unseen']} / **{x['H']}**"  # noqa: E731
        lines.append(f"| {r['folder']} | {rule} | {fmt(zero['test'][rule]) if zero else '—'} | {r['chosen_margin']} | "
                     f"{fmt(best['test'][rule])} |")
    return "\n".join(lines)
