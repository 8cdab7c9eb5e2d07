"""How a relation known by a name and labelled examples alone (no description) should be scored beside described ones.

In the workbench a user can teach a relation by naming it as the correct relation of a sentence: it has no description,
and recall scored it by its examples' prototype alone. An instance's cosine with other instances runs higher than its
cosine with descriptions, so such a relation took sentences of every other relation. This probe scores, on the six
CrossRE domains (dev, examples from train) and FewRel val_wiki (the sets of `research.fewshot`), a relation set in
which every other relation is bare (its name and K examples; the two halves in turn) and the rest are described and
have no examples, as a user's new relations sit beside the catalogue. Two rules for a bare relation:

    prototype alone:   cos(prototype)
    name as description: (1 − w)·cos(name) + w·cos(prototype), w = n / (n + 5) as for a described relation
                       (`emma.index.example_weight`), the name's row being what the encoder reads for it

Recall top-1 macro F1 over all relations, and over the bare and the described ones apart; K = 1, 5, 20, draws 0-2.

`--mixed` scores the workbench's usual case with descriptions everywhere: every other relation has K examples, the rest
none. Two rules for a relation with examples:

    mix alone: (1 − w)·cos(description) + w·cos(prototype), w = n / (n + 5) (shipped before)
    centred:  the same with cos(prototype) moved, per sentence, by the mean description cosine minus the mean prototype
              cosine over the relations with examples (so that the two sources share a level before they mix)
    scaled:   cos(prototype) given, per sentence, the mean and spread of the description cosines over those relations
    by count: cos(prototype) − c(n), c(n) the mean gap between prototype and description cosines of sentences of other
              relations, for prototypes of n examples, measured once on FewRel's training relations (`count_levels`):
              a level that does not depend on how many relations have examples
    by count, spread: cos(prototype) given the mean and spread of description cosines, both measured there as c(n)
    mean and spread: the mix given the mean and spread of description cosines of sentences of other relations, both
              measured per count on all 64 training relations (`research.example_levels`): where every relation has
              n examples, no recall ranking changes
    mean x0.5 (shipped): the mix moved half of the way to that mean alone (`emma.index.ExampleLevels`, `LEVEL_SHARE`)

`--levels` chooses the share and the kind: recall top-1 macro F1 of all relations with every relation labelled (up to
K examples each, as the K-shot tables: rare relations have fewer, and relations with fewer examples are rarer) and
with every other one labelled (as `--mixed`), the mix moved 0, 1/4, 1/2, 3/4 or all of the way to the descriptions'
mean, or to their mean and spread.

    python -m research.bare_relations_probe [--mixed | --levels] [--checkpoint C]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter

import torch

import emma
from emma.evaluate import label_counts, macro_prf_counts

from emma.index import ExampleLevels

from . import DATA_DIR, example_levels
from .examples_probe import draws, encode_set, prototypes
from .fewshot import load_sets

SHOTS = (1, 5, 20)
SEEDS = (0, 1, 2)
RULES = ("prototype alone", "name as description")
MIXED_RULES = ("mix alone", "centred", "scaled", "by count", "by count, spread", "mean and spread", "mean x0.5 (shipped)")
LEVEL_SHOTS = (1, 5, 10, 20)
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # `--levels`: how far the levels move a mixed score (`emma.index.LEVEL_SHARE`)
LEVEL_KINDS = ("mean", "mean and spread")
LEVEL_RELATIONS, LEVEL_SCORED = 24, 20  # FewRel training relations and sentences each for `count_levels`


def relation_names(fs) -> dict[str, str]:
    """{relation id: the name a user would give it}: CrossRE's "name: description" texts, FewRel's pid2name."""
    if fs.name == "fewrel-val":
        pid2name = json.loads((DATA_DIR / "fewrel" / "pid2name.json").read_text())
        return {r: pid2name[r][0] for r in fs.descriptions}
    return {r: text.split(":")[0].strip() for r, text in fs.descriptions.items()}


def macro_f1_of(gold: list[str], picked: list[str], relations: set[str]) -> float:
    """The whole set's macro F1 (`emma.macro_prf`), or, for a part of its relations, the mean of their per-relation
    F1 (those with scored instances; every instance still counts, so a relation that takes others' loses precision)."""
    if relations >= set(gold):
        return emma.macro_prf(gold, picked)["f1"]
    counts = label_counts(gold, picked)
    # Only the part's gold counts: `macro_prf_counts` averages F1 over the relations with gold instances.
    part = Counter({key: v for key, v in counts.items()
                    if not (isinstance(key, tuple) and key[0] == "gold" and key[1] not in relations)})
    return macro_prf_counts(part)["per_class_f1"] if any(counts["gold", r] for r in relations) else float("nan")


def labelled_halves(encoded, fs):
    """For each K, draw and half of the relations: (K, (B, N) prototype cosines, (N,) example counts, (N,) which
    relations have examples: every other one, the two halves in turn)."""
    names = encoded.names
    for k in SHOTS:
        for seed in SEEDS:
            drawn = draws(fs.pool, names, k, seed)
            proto = encoded.scored @ prototypes(encoded.pool, drawn, len(names)).T
            counts = torch.tensor([float(len(drawn.get(n, []))) for n in range(len(names))])
            for half in (0, 1):
                yield k, proto, counts, torch.tensor([n % 2 == half and counts[n] > 0 for n in range(len(names))])


def add_f1(out: dict[str, list[float]], key: str, scores: torch.Tensor, encoded, marked: torch.Tensor,
           groups: tuple[str, str]) -> None:
    """Append to `out["{key} {group}"]` the F1 of the top-1 picks of `scores` over all relations and over the
    `marked` ones and the others (named by `groups`)."""
    names = encoded.names
    picked = [names[j] for j in scores.argmax(1).tolist()]
    parts = {"all": set(names), groups[0]: {names[n] for n in range(len(names)) if marked[n]},
             groups[1]: {names[n] for n in range(len(names)) if not marked[n]}}
    for group, relations in parts.items():
        out.setdefault(f"{key} {group}", []).append(macro_f1_of(encoded.gold, picked, relations))


def set_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{"K{k} {rule} {all|bare|described}": [F1 per draw and half]} for one set."""
    encoded = encode_set(ex, fs)
    by_name = relation_names(fs)
    name_rows = torch.stack([r.vector for r in ex.encode_descriptions([by_name[n] for n in encoded.names])])
    name_cos = encoded.scored @ name_rows.T
    out: dict[str, list[float]] = {}
    for k, proto, counts, bare in labelled_halves(encoded, fs):
        w = emma.index.example_weight(counts)
        for rule, bare_scores in {"prototype alone": proto, "name as description": (1 - w) * name_cos + w * proto}.items():
            add_f1(out, f"K{k} {rule}", torch.where(bare[None], bare_scores, encoded.desc), encoded, bare, ("bare", "described"))
    return out


def count_levels(ex: emma.Extractor) -> dict[int, dict]:
    """{n: {"gap": mean cos(sentence, prototype of n examples) − cos(sentence, description), "d" and "p": (mean, standard
    deviation) of each cosine}} over sentences of other relations, for n in `SHOTS`, on `LEVEL_RELATIONS` of FewRel's training relations (the checkpoint's own; never an evaluated set)."""
    fs = example_levels.training_set(DATA_DIR, LEVEL_RELATIONS, LEVEL_SCORED)  # a pool of max(COUNTS) ≥ max(SHOTS)
    encoded = encode_set(ex, fs)
    other = torch.tensor([[g != r for r in encoded.names] for g in encoded.gold])  # (B, N)
    levels = {}
    for k in SHOTS:
        drawn = draws(fs.pool, encoded.names, k, seed=0)
        proto = encoded.scored @ prototypes(encoded.pool, drawn, len(encoded.names)).T
        d, p = encoded.desc[other], proto[other]
        levels[k] = {"gap": float((p - d).mean()), "d": (float(d.mean()), float(d.std())), "p": (float(p.mean()), float(p.std()))}
    return levels


def moved(mix: torch.Tensor, counts: torch.Tensor, stats: dict[int, tuple[float, float]], share: float,
          spread: bool) -> torch.Tensor:
    """(B, N) `mix` moved `share` of the way to the descriptions' mean score on other relations' sentences (shipped:
    `emma.index.ExampleLevels.shift`), or to their mean and spread (`spread`), by each relation's count (0: unmoved);
    `stats` from `research.example_levels.measure_stats`."""
    ns = tuple(stats)
    means = ExampleLevels(ns, tuple(m for m, _ in stats.values()))
    if not spread:
        return mix + means.shift(counts, share)
    sds = ExampleLevels(ns, tuple(sd for _, sd in stats.values()))
    m, sd = means.means[0] - means.shift(counts, 1.0), sds.means[0] - sds.shift(counts, 1.0)  # interpolated at `counts`
    full = (mix - m) / sd * sds.means[0] + means.means[0]
    return mix + share * (full - mix)


def mixed_scores(ex: emma.Extractor, fs, levels: dict[int, dict], stats: dict[int, tuple[float, float]]) -> dict[str, list[float]]:
    """{"K{k} {rule} {all|with examples|without}": [F1 per draw and half]} for one set (`--mixed`), `levels` from
    `count_levels`, `stats` from `research.example_levels.measure_stats`."""
    encoded = encode_set(ex, fs)
    out: dict[str, list[float]] = {}
    for k, proto, counts, has in labelled_halves(encoded, fs):
        w = torch.where(has, emma.index.example_weight(counts), torch.zeros_like(counts))
        d, p = encoded.desc[:, has], proto[:, has]
        level = (d.mean(1) - p.mean(1))[:, None]  # (B, 1)
        scaled = (proto - p.mean(1, keepdim=True)) / p.std(1, keepdim=True).clamp(min=1e-6) * d.std(1, keepdim=True) \
            + d.mean(1, keepdim=True)
        lv = levels[k]
        (md, sd), (mp, sp) = lv["d"], lv["p"]
        for rule, examples in (("mix alone", proto), ("centred", proto + level), ("scaled", scaled),
                               ("by count", proto - lv["gap"]), ("by count, spread", (proto - mp) / sp * sd + md)):
            scores = (1 - w) * encoded.desc + w * torch.where(has[None], examples, encoded.desc)
            add_f1(out, f"K{k} {rule}", scores, encoded, has, ("with examples", "without"))
        mix = (1 - w) * encoded.desc + w * torch.where(has[None], proto, encoded.desc)
        n = torch.where(has, counts, torch.zeros_like(counts))
        for rule, share, spread in (("mean and spread", 1.0, True), ("mean x0.5 (shipped)", emma.index.LEVEL_SHARE, False)):
            add_f1(out, f"K{k} {rule}", moved(mix, n, stats, share, spread), encoded, has, ("with examples", "without"))
    return out


def level_scores(ex: emma.Extractor, fs, stats: dict[int, tuple[float, float]]) -> dict[str, list[float]]:
    """{"{every|half} K{k} {kind} {share}": [recall top-1 macro F1 per draw (and half)]} for one set (`--levels`): every
    relation with up to K examples (the K-shot tables; a rare relation has fewer), or every other one with K and the
    rest none (as `--mixed`), the mixed scores moved each share of `SHARES` of the way to the descriptions' mean, or
    mean and spread (`LEVEL_KINDS`, `moved`)."""
    encoded = encode_set(ex, fs)
    names, out = encoded.names, {}

    def add(key: str, proto: torch.Tensor, counts: torch.Tensor) -> None:
        w = emma.index.example_weight(counts)
        mix = (1 - w) * encoded.desc + w * torch.where(counts[None] > 0, proto, encoded.desc)
        for kind in LEVEL_KINDS:
            for share in SHARES:
                picked = [names[j] for j in moved(mix, counts, stats, share, kind != "mean").argmax(1).tolist()]
                out.setdefault(f"{key} {kind} {share}", []).append(emma.macro_prf(encoded.gold, picked)["f1"])

    for k in LEVEL_SHOTS:
        for seed in SEEDS:
            drawn = draws(fs.pool, names, k, seed)
            add(f"every K{k}", encoded.scored @ prototypes(encoded.pool, drawn, len(names)).T,
                torch.tensor([float(len(drawn.get(n, []))) for n in range(len(names))]))
    for k, proto, counts, has in labelled_halves(encoded, fs):
        add(f"half K{k}", proto, torch.where(has, counts, torch.zeros_like(counts)))
    return out


def print_levels_table(means: dict[str, dict[str, float]]) -> None:
    crossre = [name for name in means if name.startswith("crossre")]
    print("\n| relations with examples | K | moved to the descriptions' | share | CrossRE mean | FewRel val_wiki |\n"
          "|---|---|---|---|---|---|")
    for setting, shots in (("every", LEVEL_SHOTS), ("half", SHOTS)):
        for k in shots:
            for kind in LEVEL_KINDS:
                for share in SHARES:
                    key = f"{setting} K{k} {kind} {share}"
                    cells = [statistics.mean(means[s][key] for s in group) for group in (crossre, ["fewrel-val"])]
                    print(f"| {setting} | {k} | {kind} | {share} | {cells[0]:.1f} | {cells[1]:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixed", action="store_true", help="described relations, every other one with examples")
    parser.add_argument("--levels", action="store_true", help="how far the example levels should move a mixed score")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    ex = emma.Extractor.load(args.checkpoint)
    if args.levels:
        stats = example_levels.measure_stats(ex)
        means = {fs.name: {key: statistics.mean(v) for key, v in level_scores(ex, fs, stats).items()}
                 for fs in load_sets(DATA_DIR)}
        print_levels_table(means)
        return
    if args.mixed:
        levels, stats = count_levels(ex), example_levels.measure_stats(ex)
        print("levels by count:", levels, "\nlevels of the mix (mean, spread):", stats, flush=True)
        score, rules, groups = ((lambda ex_, fs_: mixed_scores(ex_, fs_, levels, stats)), MIXED_RULES,
                                ("all", "with examples", "without"))
    else:
        score, rules, groups = set_scores, RULES, ("all", "bare", "described")
    means: dict[str, dict[str, float]] = {}
    for fs in load_sets(DATA_DIR):
        means[fs.name] = {key: statistics.mean(v) for key, v in score(ex, fs).items()}
        print(fs.name, {key: round(v, 1) for key, v in means[fs.name].items() if " all" in key}, flush=True)
    print_table(means, rules, groups)


if __name__ == "__main__":
    main()
