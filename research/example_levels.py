"""A checkpoint's example levels (`emma.index.ExampleLevels`, kept as `EmmaConfig.example_levels`).

Recall mixes a relation's description cosine with its examples' prototype cosine. An instance's cosine with a
prototype runs higher than with a description, so where some relations have examples and others none (the workbench's
usual case), the ones with examples took the others' sentences. The levels say where the scores of *other* relations'
sentences sit on average: for the description alone (n = 0) and for the mix with n examples, n in `COUNTS`; recall
lowers each mixed score by part of the gap with them (`emma.index.LEVEL_SHARE`).

Measured on FewRel's 64 training relations (the checkpoint's own, never an evaluated set): `SCORED` sentences of each
are scored against every relation, with prototypes of n examples drawn from other sentences of that relation (draws
`SEEDS`). About a minute on 2 CPU threads.

    python -m research example-levels [--checkpoint C] [--set-config]
"""

from __future__ import annotations

import torch

import emma
from emma.index import ExampleLevels, example_weight

from . import DATA_DIR
from .examples_probe import draws, encode_set, prototypes
from .fewshot import FewShotSet

COUNTS = (1, 2, 3, 5, 10, 20)
SCORED = 20  # sentences of each relation that are scored
SEEDS = (0, 1, 2)


def training_set(data_dir=None, relations: int | None = None, scored: int = SCORED) -> FewShotSet:
    """FewRel's training relations (the first `relations` by id; None: all): `scored` sentences each to score, and
    `max(COUNTS)` others to draw examples from (`data_dir` None: ../shared/data)."""
    fewrel = (data_dir or DATA_DIR) / "fewrel"
    rows = emma.read_instances(fewrel / "partial" / "train_wiki_partial_union.json.gz")
    descriptions = emma.read_descriptions(fewrel / "relation_description" / "relation_description_processed.json")
    names = sorted({i.relation for i in rows})[:relations]
    kept = set(names)
    capped = emma.cap_per_relation([i for i in rows if i.relation in kept], scored + max(COUNTS), seed=7)
    scored_rows = emma.cap_per_relation(capped, scored, seed=8)
    taken = {id(i) for i in scored_rows}
    return FewShotSet("fewrel-train", {r: descriptions[r] for r in names}, scored_rows,
                      [i for i in capped if id(i) not in taken])


def measure_stats(ex: emma.Extractor, fs: FewShotSet | None = None) -> dict[int, tuple[float, float]]:
    """{n: (mean, standard deviation)} of the scores of other relations' sentences on `fs` (default: `training_set`),
    for descriptions alone (n = 0) and for the mix with each count of `COUNTS` (draws `SEEDS` pooled)."""
    fs = fs or training_set()
    encoded = encode_set(ex, fs)
    other = torch.tensor([[g != r for r in encoded.names] for g in encoded.gold])  # (B, N)
    values = {0: encoded.desc[other]}
    for n in COUNTS:
        w = example_weight(n)
        mixed = []
        for seed in SEEDS:
            drawn = draws(fs.pool, encoded.names, n, seed)
            proto = encoded.scored @ prototypes(encoded.pool, drawn, len(encoded.names)).T
            mixed.append(((1 - w) * encoded.desc + w * proto)[other])
        values[n] = torch.cat(mixed)
    return {n: (float(v.mean()), float(v.std())) for n, v in values.items()}


def measure(ex: emma.Extractor, fs: FewShotSet | None = None) -> ExampleLevels:
    """The levels of `ex` (`measure_stats`' means)."""
    stats = measure_stats(ex, fs)
    return ExampleLevels(tuple(stats), tuple(mean for mean, _ in stats.values()))


def main(checkpoint: str | None, set_config: bool, precision: str = "auto") -> ExampleLevels:
    """Measure the levels of `checkpoint` (None: the shipped one) at `precision`; with `set_config`, write them into
    its config.json."""
    from . import write_config_value

    levels = measure(emma.Extractor.load(checkpoint, precision=precision))
    if set_config:
        write_config_value(checkpoint, "example_levels", levels.to_config())
    return levels
