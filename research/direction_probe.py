"""Does a model tell a relation's direction apart, and does training with swapped pairs teach it? (probe)

Extraction predicts both orders of every pair, and the shipped model gives a pair and its reverse the same relation
about as often as not (results/EXTRACTION.md, last section). `TrainConfig.swap_negatives` adds each training instance
read the other way round (head and tail states swapped) as one more negative of its own description; the transfer
grid measured it for accuracy only (results/TRANSFER_GRID.md: within noise). This probe measures direction itself:

- on FewRel m = 15 `ori`'s 15 test relations (unseen in training; `per_relation` sentences each), the share of
  sentences predicted their gold relation as given and with head and tail swapped (lower is better), and how often
  the gold relation's recall cosine is higher as given;
- on CrossRE dev (16 types, every sentence whose reversed pair is not also gold), the same three figures.

Recipes train as in the transfer grid (`research transfer-grid`: the split's train relations, `--per-relation`
instances each, one epoch, recall only, resumable in the grid's runs/ folders); "shipped" is the shipped checkpoint,
untrained here (its FewRel figures are not zero-shot: it was trained on all 80 relations).

    python -m research.direction_probe --recipes shipped,control,swap --seeds 42,43
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import emma
from emma.train import train

from . import DATA_DIR, RUNS_DIR
from .fewshot import CROSSRE_DOMAINS
from .protocol import dataset_files, fewrel_pool
from .transfer_grid import SHIPPED, config_for, m15_split, training_set

FIGURES = ("gold as given", "gold when swapped", "gold cosine higher as given")


def direction_scores(extractor: emma.Extractor, instances: list[emma.Instance]) -> dict[str, float]:
    """With `extractor`'s relations in force: % of `instances` predicted their gold relation as given, % predicted it
    with head and tail swapped, and % whose gold relation has the higher recall cosine as given."""
    swapped = [emma.Instance(i.tokens, i.tail, i.head, i.relation) for i in instances]
    width = len(extractor.index)
    given = extractor.predict_batch(instances, top_k=width)
    turned = extractor.predict_batch(swapped, top_k=width)
    n = len(instances)
    return {"gold as given": 100 * sum(p.label == i.relation for i, p in zip(instances, given)) / n,
            "gold when swapped": 100 * sum(p.label == i.relation for i, p in zip(instances, turned)) / n,
            "gold cosine higher as given": 100 * sum(dict(p.recall)[i.relation] > dict(q.recall)[i.relation]
                                                     for i, p, q in zip(instances, given, turned)) / n}


def one_way(instances: list[emma.Instance]) -> list[emma.Instance]:
    """The instances whose reversed pair (same sentence) is not an instance too."""
    pairs = {i.pair for i in instances}
    return [i for i in instances if (i.tokens, i.tail, i.head) not in pairs]


def checkpoint(recipe: str, per_relation: int, seed: int, split: emma.Split, pool: list[emma.Instance]) -> Path:
    """The recipe's model, trained now unless its folder is done (the transfer grid's folder and budget)."""
    if recipe == SHIPPED:
        return Path(emma.DEFAULT_CHECKPOINT)
    folder = RUNS_DIR / "transfer-grid" / f"{recipe}_n{per_relation}_recall_s{seed}"
    instances, descriptions = training_set(DATA_DIR, pool, split, per_relation, False)
    train(config_for(recipe, per_relation, False, seed), instances, descriptions, folder, resume=True)
    return folder


def measure(folder: Path, per_relation: int, split: emma.Split, pool: list[emma.Instance]) -> dict[str, dict[str, float]]:
    """`direction_scores` of the model in `folder` on the split's test relations (FewRel, from `pool`) and CrossRE dev."""
    extractor = emma.Extractor.load(str(folder))
    test = set(split.test)
    fewrel = emma.cap_per_relation([i for i in pool if i.relation in test], per_relation, seed=0)
    extractor.set_relations({r: t for r, t in emma.read_descriptions(dataset_files("fewrel", DATA_DIR)[1]).items() if r in test})
    out = {"FewRel m15 test": direction_scores(extractor, fewrel)}
    extractor.set_relations(emma.read_descriptions(DATA_DIR / "crossre" / "descriptions.json"))
    crossre = one_way([i for d in CROSSRE_DOMAINS for i in emma.read_instances(DATA_DIR / "crossre" / f"{d}-dev.jsonl")])
    out["CrossRE dev"] = direction_scores(extractor, crossre)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="shipped,control,swap")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--per-relation", type=int, default=100, help="training instances per relation")
    parser.add_argument("--scored-per-relation", type=int, default=40, help="FewRel test sentences per relation")
    args = parser.parse_args()
    split, pool = m15_split(DATA_DIR), fewrel_pool(DATA_DIR)  # read once for every recipe and seed
    print("| recipe | seeds | FewRel: gold as given | gold when swapped | cosine higher as given | "
          "CrossRE: gold as given | gold when swapped | cosine higher as given |")
    print("|---|---|---|---|---|---|---|---|")
    for recipe in args.recipes.split(","):
        seeds = [None] if recipe == SHIPPED else [int(s) for s in args.seeds.split(",")]
        runs = []
        for seed in seeds:
            t0 = time.perf_counter()
            folder = checkpoint(recipe, args.per_relation, seed, split, pool)
            runs.append(measure(folder, args.scored_per_relation, split, pool))
            print(f"  {recipe} seed {seed}: {runs[-1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
        cells = [statistics.mean(r[where][f] for r in runs) for where in ("FewRel m15 test", "CrossRE dev") for f in FIGURES]
        print(f"| {recipe} | {','.join(str(s) for s in seeds) if seeds != [None] else '–'} | "
              + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
