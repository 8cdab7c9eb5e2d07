"""Few-shot table (issue 13): K labelled examples per relation, used at once (no training), per set.

Sets: each CrossRE domain (examples from its `train` file, scored on `dev`, all 16 types as
candidates) and FewRel's 16 `val_wiki` relations (a pool of 30 instances per relation is set aside
for examples; 200 of the other 670 per relation are scored, a sample that keeps the table within a
2-core budget; examples and scored instances never meet and every K scores the same instances). K = 0 is plain zero-shot. Each (set, K, seed) is one JSON line in the
results file; runs already there are skipped, so an interrupted table resumes.

    python -m research fewshot --checkpoint checkpoints/emma-minilm --shots 0,1,5,10
    python -m research fewshot-table
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import emma
from emma.index import EXAMPLES_COUNTED, EXAMPLES_LIKE_DESCRIPTION, LEVEL_SHARE

from .jsonl import append, read

CROSSRE_DOMAINS = ("ai", "science", "music", "literature", "politics", "news")
SET_NAMES = (*(f"crossre-{d}" for d in CROSSRE_DOMAINS), "fewrel-val")  # what `load_sets` loads, in its order
FEWREL_POOL = 30  # instances per relation set aside as the FewRel example pool (more than the largest K, so seeds differ)
FEWREL_SCORED = 200  # instances per relation scored
# How a relation's n examples count: recall weighs them m / (m + 5) with m = min(n, 20) (emma.index.example_weight),
# and the fused rule weighs the classifier by 1 − the candidates' mean weight (emma.pipeline.fuse). Records scored
# before the cap read UNCAPPED_RULE, before the classifier's share "n/(n+5)".
_m = f"min(n,{EXAMPLES_COUNTED})"
EXAMPLE_RULE = f"{_m}/({_m}+{EXAMPLES_LIKE_DESCRIPTION}), classifier 1-w"
UNCAPPED_RULE = f"n/(n+{EXAMPLES_LIKE_DESCRIPTION}), classifier 1-w"
EARLIER_RULE = "0.5"  # records without "example_rule": the fixed weight used before
LEVELS = f", levels x{LEVEL_SHARE}"  # added to the rule of runs whose checkpoint moves mixed scores to the descriptions' level


def rule_of(extractor: emma.Extractor) -> str:
    """The example rule `extractor` scores with: `EXAMPLE_RULE`, with `LEVELS` when its checkpoint has example levels
    (`emma.index.ExampleLevels`; where every relation has K examples they change no recall ranking, only how far the
    fused decision trusts recall)."""
    return EXAMPLE_RULE + (LEVELS if extractor.example_levels is not None else "")


def scored_rule(record: dict) -> str:
    """The example weighting a record (of `fewshot` or `finetune-compare`) was scored with. A record of the uncapped
    rule drawn with at most `EXAMPLES_COUNTED` examples per relation holds under the cap too: the weights are equal."""
    rule = record.get("example_rule", EARLIER_RULE)
    most = record.get("shots", record.get("rows_per_relation"))
    if rule == UNCAPPED_RULE and most is not None and most <= EXAMPLES_COUNTED:
        return EXAMPLE_RULE
    return rule


def example_rule(record: dict) -> str | None:
    """`scored_rule` of a few-shot record; None for K = 0, which no rule changes."""
    return scored_rule(record) if record["shots"] else None


@dataclass
class FewShotSet:
    """Instances to score and labelled instances to draw examples from, over one relation set."""

    name: str
    descriptions: dict[str, str]
    scored: list[emma.Instance]
    pool: list[emma.Instance]


def load_sets(data: Path, names: list[str] | None = None, crossre_split: str = "dev") -> list[FewShotSet]:
    """The CrossRE domains (scoring their `crossre_split` file) and FewRel val_wiki, as `FewShotSet`s (those in `names`, or all)."""
    sets = []
    crossre = data / "crossre"
    for domain in CROSSRE_DOMAINS:
        if names is None or f"crossre-{domain}" in names:
            sets.append(FewShotSet(f"crossre-{domain}", emma.read_descriptions(crossre / "descriptions.json"),
                                   emma.read_instances(crossre / f"{domain}-{crossre_split}.jsonl"),
                                   emma.read_instances(crossre / f"{domain}-train.jsonl")))
    if names is None or "fewrel-val" in names:
        fewrel = data / "fewrel"
        instances = emma.read_instances(fewrel / "val_wiki.json")
        relations = {i.relation for i in instances}
        descriptions = emma.read_descriptions(fewrel / "relation_description" / "relation_description_processed.json")
        pool = emma.cap_per_relation(instances, FEWREL_POOL, seed=1234)
        pooled = {id(i) for i in pool}
        rest = [i for i in instances if id(i) not in pooled]
        sets.append(FewShotSet("fewrel-val", {r: d for r, d in descriptions.items() if r in relations},
                               emma.cap_per_relation(rest, FEWREL_SCORED, seed=1234), pool))
    return sets


def use_relations(extractor: emma.Extractor, descriptions: dict[str, str], examples: dict | None = None) -> None:
    """Put `descriptions` in force on `extractor` (dropping any examples), then each relation's `examples` rows."""
    extractor.set_relations(descriptions)
    for relation, rows in (examples or {}).items():
        extractor.add_examples(relation, rows)


def run_one(extractor: emma.Extractor, fs: FewShotSet, shots: int, seed: int) -> dict:
    """Score `fs` with `shots` examples per relation drawn with `seed`; returns the results record."""
    drawn = emma.draw_shots(fs.pool, shots, seed=seed, exclude=fs.scored)
    use_relations(extractor, fs.descriptions, drawn)
    start = time.perf_counter()
    report = emma.evaluate(extractor, fs.scored)
    return {"set": fs.name, "shots": shots, "seed": seed, "examples": sum(len(v) for v in drawn.values()),
            "checkpoint": emma.checkpoint_id(extractor.checkpoint), "precision": extractor.precision,
            "recall_only": report["recall_only"]["f1"],
            "emma": report["emma"]["f1"], "emma_fused": report["emma_fused"]["f1"],
            "decision": report["decision"], "n_instances": report["n_instances"],
            "wall_time_s": round(time.perf_counter() - start, 1),
            "budget": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, no training",
            "example_rule": rule_of(extractor)}


def run(checkpoint: str | None, data: Path, results: Path, shots: list[int], seeds: list[int],
        names: list[str] | None = None, precision: str = "auto", split: str = "dev") -> None:
    """Every (set, K, seed) not yet in `results` for this checkpoint and precision, one JSON line each as it finishes."""
    extractor = emma.Extractor.load(checkpoint, precision=precision)
    done = {(r["set"], r["shots"], r["seed"], r["checkpoint"], r["precision"], r.get("split", "dev"), example_rule(r))
            for r in read(results)}
    model = emma.checkpoint_id(extractor.checkpoint)
    for fs in load_sets(data, names, crossre_split=split):
        for k in shots:
            for seed in (seeds if k else seeds[:1]):
                if (fs.name, k, seed, model, extractor.precision, split, rule_of(extractor) if k else None) in done:
                    continue
                record = {**run_one(extractor, fs, k, seed), "split": split}
                append(results, record)
                print(f"{fs.name} K={k} seed={seed}: fused {record['emma_fused']:.2f} "
                      f"(recall {record['recall_only']:.2f}) in {record['wall_time_s']} s", flush=True)


def table(records: list[dict], split: str = "dev", checkpoint: str | None = None, rule: str | None = None) -> str:
    """Markdown: macro F1 of the shipped rule (recall-only in brackets) per set and K, mean over seeds, for the
    example weighting `rule` (None: that of the latest run with examples, e.g. with the checkpoint's levels) and the
    checkpoint whose id starts with `checkpoint` (None: the records must hold one)."""
    records = [r for r in records if r.get("split", "dev") == split and (checkpoint is None or r["checkpoint"].startswith(checkpoint))]
    if rule is None:
        rule = next((example_rule(r) for r in reversed(records) if r["shots"]), EXAMPLE_RULE)
    records = [r for r in records if example_rule(r) in (None, rule)]
    checkpoints = sorted({r["checkpoint"] for r in records})
    if len(checkpoints) > 1:
        raise ValueError(f"the records hold {len(checkpoints)} checkpoints ({', '.join(checkpoints)}): choose one")
    sets = [s for s in SET_NAMES if any(r["set"] == s for r in records)]
    shots = sorted({r["shots"] for r in records})
    cell: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        cell.setdefault((r["set"], r["shots"]), []).append(r)

    def fmt(rs: list[dict]) -> str:
        fused = [r["emma_fused"] for r in rs]
        spread = f" ± {statistics.stdev(fused):.1f}" if len(fused) > 1 else ""
        return f"{statistics.mean(fused):.1f}{spread} ({statistics.mean(r['recall_only'] for r in rs):.1f})"

    lines = ["| set | " + " | ".join(f"K = {k}" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    for s in sets:
        lines.append(f"| {s} | " + " | ".join(fmt(cell[(s, k)]) if (s, k) in cell else "—" for k in shots) + " |")
    crossre = [s for s in sets if s.startswith("crossre-")]
    if crossre:
        means = []
        for k in shots:
            values = [statistics.mean(r["emma_fused"] for r in cell[(s, k)]) for s in crossre if (s, k) in cell]
            means.append(f"{statistics.mean(values):.1f}" if len(values) == len(crossre) else "—")
        lines.append("| CrossRE mean | " + " | ".join(means) + " |")
    return "\n".join(lines)
