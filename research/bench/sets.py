"""Relation sets of each size and their sentences, for the benchmark.

Sizes up to the labelled relations are subsets of them; larger ones add a pool (e.g. the FewRel 80),
the other real descriptions, then synthetic ones, so every sentence's gold relation is a candidate
and macro F1 stays measurable at 10,000 relations.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from emma import Instance, cap_per_relation


@dataclass
class Setting:
    """One relation-set size: the relations, and the sentences whose gold relation is among them."""

    n: int
    relations: dict[str, str]
    instances: list[Instance]
    n_synthetic: int = 0

    @property
    def labelled(self) -> bool:
        return bool(self.instances) and all(i.relation in self.relations for i in self.instances)


def synthetic_descriptions(real: dict[str, str], count: int, seed: int = 0) -> dict[str, str]:
    """`count` distinct made-up descriptions for scale, with the length profile of the real ones.

    Each is the first half of one real description's words followed by the second half of
    another's, so its word pieces and length look like a real description's. Ids are
    ``synthetic-00000`` and up; texts differ from every real text and from each other.

    Example:
        >>> synthetic_descriptions({"a": "born in a city", "b": "capital of a country"}, 2)
    """
    if count <= 0:
        return {}
    if not real:
        raise ValueError("synthetic descriptions need at least one real description to mix")
    rng = random.Random(seed)
    words = [t.split() for t in real.values()]
    seen = set(real.values())
    out: dict[str, str] = {}
    for i in range(count):
        for attempt in range(20):
            a, b = rng.choice(words), rng.choice(words)
            text = " ".join(a[: (len(a) + 1) // 2] + b[(len(b) + 1) // 2 :])
            if attempt == 19 or (text not in seen):
                break
        if text in seen:  # a tiny catalogue runs out of mixtures
            text = f"{text} ({i})"
        seen.add(text)
        out[f"synthetic-{i:05d}"] = text
    return out


def sample_instances(instances: Sequence[Instance], limit: int, seed: int = 0) -> list[Instance]:
    """At most `limit` instances, balanced over their relations, seeded."""
    if len(instances) <= limit:
        return list(instances)
    n_rel = len({i.relation for i in instances})
    picked = cap_per_relation(instances, math.ceil(limit / max(1, n_rel)), seed=seed)
    if len(picked) > limit:
        picked = random.Random(seed).sample(picked, limit)
    return picked


def relation_sets(
    instances: Sequence[Instance], descriptions: dict[str, str], sizes: Sequence[int],
    limit: int, pool: Sequence[str] = (), seed: int = 0,
) -> list[Setting]:
    """A relation set and its sentences for each size n.

    Sizes up to the number of labelled relations use a seeded subset of them (nested: the 5 are
    among the 15) and only their sentences. Larger sizes take every labelled relation, then the
    relations of `pool` (e.g. the FewRel 80), then the other real descriptions (seeded order), then
    synthetic ones, so every sentence's gold relation is a candidate and F1 stays measurable.
    Sentences with no label, or none described, are used only when there are no labelled ones.
    """
    labelled = sorted({i.relation for i in instances if i.relation in descriptions})
    rng = random.Random(seed)
    gold = list(labelled)
    rng.shuffle(gold)
    in_gold = set(gold)
    pool_ids = list(dict.fromkeys(r for r in pool if r in descriptions and r not in in_gold))
    rest = [r for r in descriptions if r not in in_gold and r not in set(pool_ids)]
    rng.shuffle(rest)
    fill = gold + pool_ids + rest
    settings = []
    for n in sizes:
        chosen = fill[:n]
        relations = {r: descriptions[r] for r in chosen}
        synthetic = synthetic_descriptions(descriptions, n - len(relations), seed)
        relations.update(synthetic)
        pool_instances = [i for i in instances if i.relation in set(chosen)] if labelled else list(instances)
        settings.append(Setting(n, relations, sample_instances(pool_instances, limit, seed), len(synthetic)))
    return settings

