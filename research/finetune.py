"""Fine-tune table (issue 13, part 2): 20 labelled rows per relation in a new domain, examples vs fine-tuning.

Per CrossRE domain and fine-tune recipe: draw `rows` labelled rows per relation from the domain's
`train` file; score its `dev` file (all 16 types as candidates) with the starting checkpoint using
those rows as examples ("examples only", no training), then fine-tune on the same rows
(`emma.finetune.finetune`, nothing held back) and score dev with the fine-tuned model, without
and with the rows as examples. Recipe `workbench` runs as the workbench does: a first model trained
without about a fifth of the rows (whole sentences) is scored on them, then the new version is trained
on every row; `selected` is what a user who switches only when that held-back score improved ends up
with (the new version with the rows as examples, or the starting one with them). Forgetting: FewRel m = 15 `ori` test relations (at most
`fewrel_cap` instances each), before and after. One JSON line per (domain, recipe) in the results
file; runs already there are skipped. CrossRE is measured on, never shipped: the fine-tuned
folders are written under `runs/` (ignored by git) and deleted unless `--keep`; `blend_grid` scores kept
ones averaged with their start at several shares, to choose `FinetuneConfig.blend` without training again.

    python -m research finetune-compare --domains ai --recipes default,anchor-0.02,anchor-0.1,replay
    python -m research finetune-table
    python -m research finetune-blend --recipe no-blend   # after finetune-compare --recipes no-blend --keep
    python -m research finetune-sweep --domains ai --seeds 0,1,2   # each training once, scored at several shares
    python -m research finetune-sweep-table
"""

from __future__ import annotations

import platform
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch

import emma
from emma.checkpoint import load_checkpoint, save_checkpoint
from emma.evaluate import REPORT_RULES
from emma.finetune import FinetuneConfig, finetune
from emma.train import blend_toward

from .fewshot import CROSSRE_DOMAINS, rule_of, scored_rule, use_relations
from .jsonl import append, read
from .protocol import dataset_files, fewrel_pool, split_file

RECIPES = {  # "default" is FinetuneConfig's own (the shipped recipe); the others are named by what they change
    "default": FinetuneConfig(held_back=0.0),
    # The workbench's own run: a fifth of the rows (whole sentences) held back to score a first model, which decides
    # whether to switch ("selected" in the record); the new version is then trained on every row.
    "workbench": FinetuneConfig(),
    # Measured before the blend was shipped (each record's config says so): the trained weights as they are.
    "no-blend": FinetuneConfig(held_back=0.0, blend=1.0),
    "workbench-no-blend": FinetuneConfig(blend=1.0),
    "workbench-sentences": FinetuneConfig(refit=False, blend=1.0),  # the model that scored is the new version (trained on 4/5)
    "lr-2e-5": FinetuneConfig(held_back=0.0, lr=2e-5, blend=1.0),  # the first recipe; the rest of this group was measured beside it
    "anchor-0.02": FinetuneConfig(held_back=0.0, lr=2e-5, anchor=0.02, blend=1.0),
    "anchor-0.1": FinetuneConfig(held_back=0.0, lr=2e-5, anchor=0.1, blend=1.0),
    "epochs-8": FinetuneConfig(held_back=0.0, lr=2e-5, epochs=8, blend=1.0),
    "lr-1e-4": FinetuneConfig(held_back=0.0, lr=1e-4, blend=1.0),
    "epochs-8-lr-5e-5": FinetuneConfig(held_back=0.0, epochs=8),  # the shipped recipe trained twice as long
    # + a recall loss on the mixed score recall uses with the rows as examples (TrainConfig.prototype_weight)
    "prototypes-1": FinetuneConfig(held_back=0.0, prototype_weight=1.0),
    "replay": FinetuneConfig(held_back=0.0, blend=1.0),  # + FewRel replay rows
    "recall-only": FinetuneConfig(held_back=0.0, add_classifier=False),  # a start without classifier stays without
}


def fewrel_check(data: Path, cap: int, seed: str = "ori") -> tuple[list[emma.Instance], dict[str, str]]:
    """FewRel m = 15 test relations of split `seed`: instances (at most `cap` each) and their descriptions."""
    split = emma.read_split(split_file("fewrel", 15, seed, data))
    descriptions = emma.read_descriptions(dataset_files("fewrel", data)[1])
    instances = fewrel_pool(data)
    test = set(split.test)
    return emma.cap_per_relation([i for i in instances if i.relation in test], cap, seed=1234), {r: descriptions[r] for r in test}


def replay_data(data: Path) -> tuple[list[emma.Instance], dict[str, str]]:
    fewrel = data / "fewrel"
    return (emma.read_instances(fewrel / "partial" / "train_wiki_partial_union.json.gz"),
            emma.read_descriptions(fewrel / "relation_description" / "relation_description_processed.json"))


def labelled_rows(crossre: Path, domain: str, rows: int, seed: int) -> tuple[list[emma.Instance], dict[str, list[emma.Instance]]]:
    """(dev instances, {relation: `rows` labelled rows drawn from train}) of a CrossRE domain: what a recipe trains on."""
    dev = emma.read_instances(crossre / f"{domain}-dev.jsonl")
    return dev, emma.draw_shots(emma.read_instances(crossre / f"{domain}-train.jsonl"), rows, seed=seed, exclude=dev)


def macro_f1_by_rule(extractor: emma.Extractor, instances, descriptions, examples: dict | None = None) -> dict[str, float]:
    """Macro F1 of each decision rule (`emma.evaluate.REPORT_RULES`) on `instances`, `examples` counting as examples."""
    use_relations(extractor, descriptions, examples)
    report = emma.evaluate(extractor, instances)
    return {rule: round(report[rule]["f1"], 2) for rule in REPORT_RULES}


def fused(extractor: emma.Extractor, instances, descriptions, examples: dict | None = None) -> float:
    return macro_f1_by_rule(extractor, instances, descriptions, examples)["emma_fused"]


def tuned_scores(extractor: emma.Extractor, dev, descriptions, drawn: dict, check, check_descriptions) -> dict[str, float]:
    """What a fine-tuned model is scored on: dev fused without and with the labelled rows as examples, and FewRel."""
    return {"finetuned": fused(extractor, dev, descriptions), "finetuned_examples": fused(extractor, dev, descriptions, drawn),
            "fewrel_ori_after": fused(extractor, check, check_descriptions)}


def run(checkpoint: str, data: Path, results: Path, domains: list[str], recipes: list[str], rows: int, seed: int,
        fewrel_cap: int, runs: Path, keep: bool) -> None:
    done = {(r["domain"], r["recipe"], r["rows_per_relation"], r["seed"], scored_rule(r)) for r in read(results)}
    crossre = data / "crossre"
    descriptions = emma.read_descriptions(crossre / "descriptions.json")
    check, check_descriptions = fewrel_check(data, fewrel_cap)
    base = emma.Extractor.load(checkpoint)
    rule = rule_of(base)  # a fine-tune keeps its start's example levels
    fewrel_before = fused(base, check, check_descriptions)
    for domain in domains:
        dev, drawn = labelled_rows(crossre, domain, rows, seed)
        labelled = [i for group in drawn.values() for i in group]
        zero = fused(base, dev, descriptions)
        examples_only = fused(base, dev, descriptions, drawn)
        for recipe in recipes:
            if (domain, recipe, rows, seed, rule) in done:
                continue
            output = runs / f"finetune-{domain}-{recipe}-{rows}-{seed}"
            shutil.rmtree(output, ignore_errors=True)
            config = replace(RECIPES[recipe], seed=seed)
            start = time.perf_counter()
            report = finetune(checkpoint, labelled, {r: descriptions[r] for r in drawn}, output, config,
                              replay=replay_data(data) if recipe == "replay" else None)
            minutes = round((time.perf_counter() - start) / 60, 1)
            tuned = emma.Extractor.load(output)
            record = {"domain": domain, "recipe": recipe, "rows_per_relation": rows, "seed": seed,
                      "rows": len(labelled), "relations": len(drawn), "checkpoint": emma.checkpoint_id(checkpoint),
                      "zero_shot": zero, "examples_only": examples_only, "fewrel_ori_before": fewrel_before,
                      **tuned_scores(tuned, dev, descriptions, drawn, check, check_descriptions),
                      "fewrel_cap": fewrel_cap, "finetune_minutes": minutes, "example_rule": rule,
                      "held_back_before": report.before.get("emma_fused"), "held_back_after": report.after.get("emma_fused"),
                      "improved": report.improved, "chance_better": report.chance_better,
                      "held_back_sentences": report.held_back_sentences,
                      "budget": f"{device_name()}, precision {tuned.precision}, config {config}"}
            if report.improved is not None:  # what a user who switches only on a better held-back score ends up with
                record["selected"] = record["finetuned_examples"] if report.improved else examples_only
            append(results, record)
            print(f"{domain} {recipe}: zero {zero} examples {examples_only} finetuned {record['finetuned']} "
                  f"(+examples {record['finetuned_examples']}); FewRel ori {fewrel_before} → {record['fewrel_ori_after']} "
                  f"in {minutes} min", flush=True)
            if not keep:
                shutil.rmtree(output, ignore_errors=True)


@contextmanager
def blended_with_start(tuned: Path, start: dict, share: float) -> Iterator[emma.Extractor]:
    """The fine-tune in folder `tuned` averaged with its start, θ₀ + share·(θ − θ₀), loaded as an `Extractor` from a
    temporary folder: scored as a fine-tune saves it (float16 on disk)."""
    model, tokenizer = load_checkpoint(tuned, device="cpu")
    blend_toward(model, start, share)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(model, tokenizer, folder)
        yield emma.Extractor.load(folder)


# Trainings of `sweep`: each trained once with the change kept whole, then scored at several blend shares.
SWEEP_TRAININGS = {
    "epochs-4-lr-5e-5": FinetuneConfig(held_back=0.0, blend=1.0),  # the shipped training (its blend 0.7 is one share)
    "epochs-8-lr-5e-5": FinetuneConfig(held_back=0.0, epochs=8, blend=1.0),
    "epochs-4-lr-1e-4": FinetuneConfig(held_back=0.0, lr=1e-4, blend=1.0),
    "epochs-8-lr-1e-4": FinetuneConfig(held_back=0.0, epochs=8, lr=1e-4, blend=1.0),
    "epochs-16-lr-5e-5": FinetuneConfig(held_back=0.0, epochs=16, blend=1.0),
    "epochs-4-lr-2e-4": FinetuneConfig(held_back=0.0, lr=2e-4, blend=1.0),
    # Low-rank adapters (rank 16) over a frozen encoder, at the adapters' rate (`head_lr`): less to forget.
    "adapters-16-epochs-4-lr-5e-4": FinetuneConfig(held_back=0.0, adapter_rank=16, head_lr=5e-4, blend=1.0),
}


SHIPPED_CELL = ("epochs-4-lr-5e-5", FinetuneConfig().blend)  # FinetuneConfig's own training and blend share


def sweep(checkpoint: str, data: Path, results: Path, domains: list[str], trainings: list[str], blends: list[float],
          rows: int, seeds: list[int], fewrel_cap: int, runs: Path, minutes: float | None = None) -> None:
    """Training strength against the blend share, on several draws: per (domain, training, draw), one fine-tune with the
    change kept whole (`SWEEP_TRAININGS`), then scored as `run` scores (dev fused with and without the rows as
    examples; FewRel m = 15 `ori`) at each blend share, θ₀ + b·(θ − θ₀), saved as a fine-tune saves it. Trainings run
    in `trainings` order, each on every draw before the next, so a `minutes` budget (no new fine-tune starts after
    it) drops whole trainings, not draws. One JSON line per (domain, training, draw, blend); ones there are skipped."""
    stop = None if minutes is None else time.monotonic() + 60 * minutes
    done = {(r["domain"], r["training"], r["seed"], r["blend"]) for r in read(results)}
    crossre = data / "crossre"
    descriptions = emma.read_descriptions(crossre / "descriptions.json")
    check, check_descriptions = fewrel_check(data, fewrel_cap)
    start = load_checkpoint(checkpoint, device="cpu")[0].state_dict()
    base = emma.Extractor.load(checkpoint)
    fewrel_before = fused(base, check, check_descriptions)
    for domain in domains:
        draws = {seed: labelled_rows(crossre, domain, rows, seed) for seed in seeds}
        dev = draws[seeds[0]][0]
        zero = fused(base, dev, descriptions)
        examples_only = {seed: fused(base, dev, descriptions, drawn) for seed, (_, drawn) in draws.items()}
        for training in trainings:
            for seed, (_, drawn) in draws.items():
                if all((domain, training, seed, b) in done for b in blends):
                    continue
                if stop is not None and time.monotonic() > stop:
                    print(f"{domain}: the {minutes}-minute budget is spent; {training} draw {seed} and later not run", flush=True)
                    return
                labelled = [i for group in drawn.values() for i in group]
                output = runs / f"sweep-{domain}-{training}-{rows}-{seed}"
                shutil.rmtree(output, ignore_errors=True)
                config = replace(SWEEP_TRAININGS[training], seed=seed)
                began = time.perf_counter()
                finetune(checkpoint, labelled, {r: descriptions[r] for r in drawn}, output, config)
                trained_minutes = round((time.perf_counter() - began) / 60, 2)
                for share in blends:
                    if (domain, training, seed, share) in done:
                        continue
                    with blended_with_start(output, start, share) as blended:
                        record = {"domain": domain, "training": training, "blend": share, "rows_per_relation": rows,
                                  "seed": seed, "rows": len(labelled), "checkpoint": emma.checkpoint_id(checkpoint),
                                  "zero_shot": zero, "examples_only": examples_only[seed], "fewrel_ori_before": fewrel_before,
                                  **tuned_scores(blended, dev, descriptions, drawn, check, check_descriptions),
                                  "fewrel_cap": fewrel_cap, "finetune_minutes": trained_minutes, "example_rule": rule_of(base),
                                  "budget": f"{device_name()}, precision {blended.precision}, config {config}"}
                    append(results, record)
                    print(f"{domain} {training} draw {seed} blend {share}: examples {examples_only[seed]} → fine-tuned + "
                          f"examples {record['finetuned_examples']}; FewRel ori {fewrel_before} → "
                          f"{record['fewrel_ori_after']} ({trained_minutes} min training)", flush=True)
                shutil.rmtree(output, ignore_errors=True)


def sweep_table(records: list[dict]) -> str:
    """Markdown: per (training, blend share), the mean over domains and draws of examples only, fine-tuned + examples,
    Δ, each draw's Δ, how many (domain, draw) pairs reach Δ ≥ 5, FewRel ori after (mean, lowest), the largest drop, and
    fine-tuned + examples paired against the shipped recipe's cell on the same (domain, draw) pairs (`SHIPPED_CELL`:
    mean difference, a seeded bootstrap 95 % interval, how often better). Only complete cells (every domain on every
    draw of the cell) get a row."""
    cells: dict[tuple[str, float], list[dict]] = {}
    for r in records:
        cells.setdefault((r["training"], r["blend"]), []).append(r)
    order = {name: i for i, name in enumerate(SWEEP_TRAININGS)}
    shipped = {(r["domain"], r["seed"]): r["finetuned_examples"] for r in cells.get(SHIPPED_CELL, [])}
    lines = ["| training | blend | draws | examples only | fine-tuned + examples | Δ (per draw) | Δ ≥ 5 | FewRel ori after: mean (lowest) | largest FewRel drop | paired against the shipped cell |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (training, share), rows in sorted(cells.items(), key=lambda c: (order.get(c[0][0], len(order)), -c[0][1])):
        seeds = sorted({r["seed"] for r in rows})
        if len(rows) != len(seeds) * len(CROSSRE_DOMAINS) or {r["domain"] for r in rows} != set(CROSSRE_DOMAINS):
            continue
        mean = lambda key, rs=rows: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        per_draw = [sum(r["finetuned_examples"] - r["examples_only"] for r in rows if r["seed"] == s) / len(CROSSRE_DOMAINS)
                    for s in seeds]
        wins = sum(r["finetuned_examples"] - r["examples_only"] >= 5 for r in rows)
        drop = max(r["fewrel_ori_before"] - r["fewrel_ori_after"] for r in rows)
        lines.append(f"| {training} | {share} | {len(seeds)} | {mean('examples_only'):.1f} | {mean('finetuned_examples'):.1f} | "
                     f"{mean('finetuned_examples') - mean('examples_only'):+.1f} ({' / '.join(f'{d:+.1f}' for d in per_draw)}) | "
                     f"{wins} of {len(rows)} | {mean('fewrel_ori_after'):.1f} ({min(r['fewrel_ori_after'] for r in rows):.1f}) | "
                     f"{drop:.1f} | {_paired(rows, shipped)} |")
    return "\n".join(lines)


def _paired(rows: list[dict], shipped: dict[tuple[str, int], float]) -> str:
    """Mean difference of fine-tuned + examples against the shipped cell's on the same (domain, draw) pairs, with a
    bootstrap 95 % interval over the pairs (seeded: the table reads the same every time) and how often it is better."""
    diffs = [r["finetuned_examples"] - shipped[(r["domain"], r["seed"])] for r in rows if (r["domain"], r["seed"]) in shipped]
    if not diffs or all(d == 0 for d in diffs):
        return "—"
    rng = random.Random(0)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(2000))
    return (f"{sum(diffs) / len(diffs):+.1f} ({means[50]:+.1f} to {means[1949]:+.1f}), "
            f"better in {sum(d > 0 for d in diffs)} of {len(diffs)}")


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def blend_grid(checkpoint: str, data: Path, results: Path, domains: list[str], recipe: str, rows: int, seed: int,
               blends: list[float], fewrel_cap: int, runs: Path) -> None:
    """Score fine-tunes kept by `run(..., keep=True)` averaged with their start, θ₀ + b·(θ − θ₀), for each b in
    `blends`, as `run` scores them (dev fused with the rows as examples; FewRel m = 15 `ori`): the blend share
    costs no training to choose. One JSON line per (domain, recipe, seed, blend); ones already there are skipped."""
    done = {(r["domain"], r["recipe"], r["seed"], r["blend"]) for r in read(results)}
    crossre = data / "crossre"
    descriptions = emma.read_descriptions(crossre / "descriptions.json")
    check, check_descriptions = fewrel_check(data, fewrel_cap)
    start = load_checkpoint(checkpoint, device="cpu")[0].state_dict()
    for domain in domains:
        tuned = runs / f"finetune-{domain}-{recipe}-{rows}-{seed}"
        if not tuned.is_dir():
            raise FileNotFoundError(f"{tuned}: run finetune-compare --recipes {recipe} --seed {seed} --keep first")
        dev, drawn = labelled_rows(crossre, domain, rows, seed)
        for share in blends:
            if (domain, recipe, seed, share) in done:
                continue
            with blended_with_start(tuned, start, share) as blended:
                record = {"domain": domain, "recipe": recipe, "rows_per_relation": rows, "seed": seed, "blend": share,
                          "checkpoint": emma.checkpoint_id(checkpoint), "finetuned": emma.checkpoint_id(tuned),
                          "finetuned_examples": fused(blended, dev, descriptions, drawn),
                          "fewrel_ori_after": fused(blended, check, check_descriptions), "fewrel_cap": fewrel_cap}
            append(results, record)
            print(f"{domain} {recipe} blend {share}: fine-tuned + examples {record['finetuned_examples']}, "
                  f"FewRel ori {record['fewrel_ori_after']}", flush=True)


def blend_table(records: list[dict], compared: list[dict]) -> str:
    """Markdown: per blend share, dev (fine-tuned + examples) per domain and mean, and FewRel `ori` after (mean, worst),
    beside examples only and FewRel before from the `finetune-compare` records of the same draw."""
    base = {(r["domain"], r["seed"]): r for r in compared}
    lines = ["| blend | " + " | ".join(CROSSRE_DOMAINS) + " | mean | Δ (− examples only) | FewRel ori after: mean (lowest) |",
             "|---|" + "---|" * (len(CROSSRE_DOMAINS) + 3)]
    for share in sorted({r["blend"] for r in records}, reverse=True):
        rows = {r["domain"]: r for r in records if r["blend"] == share}
        if sorted(rows) != sorted(CROSSRE_DOMAINS):
            continue
        mean = sum(r["finetuned_examples"] for r in rows.values()) / len(rows)
        examples = sum(base[(d, r["seed"])]["examples_only"] for d, r in rows.items()) / len(rows)
        fewrel = [r["fewrel_ori_after"] for r in rows.values()]
        lines.append(f"| {share} | " + " | ".join(f"{rows[d]['finetuned_examples']:.1f}" for d in CROSSRE_DOMAINS)
                     + f" | {mean:.1f} | {mean - examples:+.1f} | {sum(fewrel) / len(fewrel):.1f} ({min(fewrel):.1f}) |")
    return "\n".join(lines)


def table(records: list[dict], rule: str | None = None) -> str:
    """Markdown: per recipe (in `RECIPES` order), draw of the labelled rows and domain, dev macro F1 (fused) zero-shot, examples only,
    fine-tuned, the held-back verdict where there is one, and FewRel ori; a mean row for a recipe run on
    every domain. `rule`: only the records scored with that example weighting (None: all)."""
    if rule is not None:
        records = [r for r in records if scored_rule(r) == rule]
    lines = ["| recipe | domain | rows | zero-shot | examples only | fine-tuned | fine-tuned + examples | Δ (fine-tuned + examples − examples only) | held-back verdict → selected if followed (Δ) | FewRel ori before → after | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate([*RECIPES, *sorted({r["recipe"] for r in records} - set(RECIPES))])}
    rank = {d: i for i, d in enumerate(CROSSRE_DOMAINS)}
    by_recipe: dict[str, list[dict]] = {}  # recipe and draw: each draw of a recipe gets its own rows and mean
    for r in sorted(records, key=lambda r: (order[r["recipe"]], r.get("seed", 0), rank.get(r["domain"], len(rank)))):
        name = r["recipe"] if "example_rule" not in r else f"{r['recipe']}, examples at {scored_rule(r)}"
        name = name if not r.get("seed") else f"{name}, draw {r['seed']}"
        by_recipe.setdefault(name, []).append(r)
    for recipe, rows in by_recipe.items():
        for r in rows:
            lines.append(_row(recipe, r["domain"], r))
        if sorted(r["domain"] for r in rows) == sorted(CROSSRE_DOMAINS):  # each domain once
            mean = {key: sum(r[key] for r in rows) / len(rows) for key in
                    ("zero_shot", "examples_only", "finetuned", "finetuned_examples", "fewrel_ori_before", "fewrel_ori_after")}
            if all(r.get("selected") is not None for r in rows):
                mean["selected"] = sum(r["selected"] for r in rows) / len(rows)
            lines.append(_row(recipe, "**mean of six**", {**mean, "rows": "", "finetune_minutes": ""}))
    return "\n".join(lines)


def _row(recipe: str, domain: str, r: dict) -> str:
    # Δ is the workbench's setting after a fine-tune (the new model, the user's labels still counting as
    # examples) against the labels as examples alone.
    gain = r["finetuned_examples"] - r["examples_only"]
    verdict = "—"
    if r.get("selected") is not None:
        verdict = f"{r['selected']:.1f} ({r['selected'] - r['examples_only']:+.1f})"
        if "improved" in r:
            chance = f", better in {r['chance_better']:.0%}" if r.get("chance_better") is not None else ""
            verdict = (f"{'better' if r['improved'] else 'worse'} ({r['held_back_before']:.1f} → {r['held_back_after']:.1f}"
                       f"{chance}) → {verdict}")
    return (f"| {recipe} | {domain} | {r['rows']} | {r['zero_shot']:.1f} | {r['examples_only']:.1f} | {r['finetuned']:.1f} | "
            f"{r['finetuned_examples']:.1f} | {gain:+.1f} | {verdict} | {r['fewrel_ori_before']:.1f} → "
            f"{r['fewrel_ori_after']:.1f} | {r['finetune_minutes']} |")


DOMAINS = CROSSRE_DOMAINS
