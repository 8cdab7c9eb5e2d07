"""How labelled examples should count in recall: the probe behind `emma.index.EXAMPLE_WEIGHT`.

Recall top-1 macro F1 on each CrossRE domain's dev file, with K = 1, 5, 10 examples per relation
drawn from its train file (seeds 0-2): the relation's prototype (mean example vector) or its nearest
example, mixed with the description's cosine at weight w. Prints the best rules; no rerank, so it
runs in about a minute on 2 CPU threads.

    python -m research.examples_probe
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

import emma

from . import DATA_DIR

DOMAINS = ("ai", "science", "music", "literature", "politics", "news")
WEIGHTS = (0.3, 0.5, 0.7, 1.0)


def instance_vectors(ex: emma.Extractor, instances: list[emma.Instance]) -> torch.Tensor:
    """(B, 3d) unit instance vectors."""
    return torch.stack([r.vector for r in ex.encode_examples(instances)])


def domain_scores(ex: emma.Extractor, names: list[str], domain: str) -> dict[str, list[float]]:
    """{rule: [F1 per draw]} for one domain."""
    dev = emma.read_instances(DATA_DIR / "crossre" / f"{domain}-dev.jsonl")
    train = emma.read_instances(DATA_DIR / "crossre" / f"{domain}-train.jsonl")
    q, tv = instance_vectors(ex, dev), instance_vectors(ex, train)
    gold = [i.relation for i in dev]
    desc = q @ ex.index.vectors.T  # (B, N)

    def f1(scores: torch.Tensor) -> float:
        return emma.macro_prf(gold, [names[j] for j in scores.argmax(1).tolist()])["f1"]

    out: dict[str, list[float]] = {"K0": [f1(desc)]}
    by_rel: dict[str, list[int]] = {}
    for j, inst in enumerate(train):
        by_rel.setdefault(inst.relation, []).append(j)
    sims = q @ tv.T  # (B, M)
    for k in (1, 5, 10):
        for seed in (0, 1, 2):
            rng = random.Random(seed)
            proto, nearest = torch.zeros_like(ex.index.vectors), desc.clone()
            has = torch.zeros(len(names), dtype=torch.bool)
            for r, idx in sorted(by_rel.items()):
                picked = rng.sample(idx, min(k, len(idx)))
                n = names.index(r)
                has[n] = True
                proto[n] = F.normalize(tv[picked].mean(0), dim=-1)
                nearest[:, n] = sims[:, picked].max(1).values
            for rule, examples in (("proto", q @ proto.T), ("nn", nearest)):
                examples = torch.where(has[None], examples, desc)  # relations without examples: description only
                for w in WEIGHTS:
                    out.setdefault(f"K{k}-{rule}-w{w}", []).append(f1((1 - w) * desc + w * examples))
    return out


@torch.inference_mode()
def main() -> None:
    ex = emma.Extractor.load()
    descriptions = emma.read_descriptions(DATA_DIR / "crossre" / "descriptions.json")
    ex.set_relations(descriptions)
    names = list(descriptions)
    per_domain = {d: domain_scores(ex, names, d) for d in DOMAINS}
    mean = {rule: sum(sum(v[rule]) / len(v[rule]) for v in per_domain.values()) / len(DOMAINS) for rule in per_domain["ai"]}
    for rule, value in sorted(mean.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{rule:18s} {value:.1f}")
    print(f"{'K0':18s} {mean['K0']:.1f}")


if __name__ == "__main__":
    main()
