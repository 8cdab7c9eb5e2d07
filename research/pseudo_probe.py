"""Would a user's unlabelled sentences help their examples? Pseudo-labels from recall, measured before any is built.

A user who imports a corpus has many sentences with marked entities and few labels. Recall (the descriptions mixed
with the drawn examples: the shipped rule) labels every unlabelled sentence; the m it is surest of per relation join
that relation's examples as if labelled, and the scored file is scored again (recall top-1 macro F1, as
`research.examples_probe --by-count`). Sets of `research.fewshot.load_sets`, K = 0, 1, 5, 10 examples per relation
(draws 0-2; K = 0: one). The unlabelled sentences are the pool (each CrossRE domain's train file, FewRel's 30 per
relation) less the drawn examples; their labels serve only to report the pseudo-labels' precision. Every CrossRE pair
holds one of its 16 relations, while a real corpus has many pairs with none, so the precision here is an upper bound.
Beside it, the scored sentences themselves as the corpus (the sentences a user extracts from; a sentence may then be
among its own relation's examples, which flatters this rule a little).

    python -m research.pseudo_probe
"""

from __future__ import annotations

import argparse

import torch

import emma

from .examples_probe import draws, encode_set, mixed_scores, print_grid, set_means, top1_f1

PSEUDO_SHOTS = (0, 1, 5, 10)
PSEUDO_PER_RELATION = (5, 10, 20)


def pseudo_labels(scores: torch.Tensor, per_relation: int, temperature: float,
                  skip: set[int]) -> dict[int, list[int]]:
    """{relation: the rows of `scores` (U, N) recall is surest go to it, at most `per_relation`}, rows in `skip` left
    out; sureness is the top relation's softmax(score / τ)."""
    sure, best = torch.softmax(scores / temperature, dim=1).max(1)
    out: dict[int, list[int]] = {}
    for row in sure.argsort(descending=True).tolist():
        n = int(best[row])
        if row not in skip and len(out.setdefault(n, [])) < per_relation:
            out[n].append(row)
    return {n: rows for n, rows in out.items() if rows}


def pseudo_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{"K{K}-{rule}": [value per draw]} for one `research.fewshot.FewShotSet`: recall top-1 macro F1 of the shipped
    mix ("shipped"), with m pseudo-labels per relation from the pool added ("pseudo-{m}") and those labels' precision
    in % ("precision-{m}"), and with m from the scored sentences themselves ("corpus-{m}")."""
    names, gold, q, pool, desc, pool_desc = encode_set(ex, fs)
    out: dict[str, list[float]] = {}
    for shots in PSEUDO_SHOTS:
        for seed in ((0,) if shots == 0 else (0, 1, 2)):
            drawn = draws(fs.pool, names, shots, seed) if shots else {}
            out.setdefault(f"K{shots}-shipped", []).append(top1_f1(gold, names, mixed_scores(q, desc, pool, drawn, len(names))))
            pool_scores = mixed_scores(pool, pool_desc, pool, drawn, len(names))
            labelled = {j for rows in drawn.values() for j in rows}
            scored_scores = mixed_scores(q, desc, pool, drawn, len(names))
            for m in PSEUDO_PER_RELATION:
                pseudo = pseudo_labels(pool_scores, m, ex.config.temperature, labelled)
                right = sum(fs.pool[j].relation == names[n] for n, rows in pseudo.items() for j in rows)
                out.setdefault(f"K{shots}-precision-{m}", []).append(100 * right / max(1, sum(map(len, pseudo.values()))))
                both = {n: drawn.get(n, []) + pseudo.get(n, []) for n in set(drawn) | set(pseudo)}
                out.setdefault(f"K{shots}-pseudo-{m}", []).append(top1_f1(gold, names, mixed_scores(q, desc, pool, both, len(names))))
                # The scored sentences themselves as the corpus: drawn rows index `pool`, pseudo rows `q`.
                own = pseudo_labels(scored_scores, m, ex.config.temperature, set())
                vectors = torch.cat([pool, q])
                both = {n: drawn.get(n, []) + [len(pool) + j for j in own.get(n, [])] for n in set(drawn) | set(own)}
                out.setdefault(f"K{shots}-corpus-{m}", []).append(top1_f1(gold, names, mixed_scores(q, desc, vectors, both, len(names))))
    return out


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    args = parser.parse_args()
    means = set_means(emma.Extractor.load(args.checkpoint), pseudo_scores)
    rows = {"examples only (shipped mix)": "K{K}-shipped"}
    for m in PSEUDO_PER_RELATION:
        rows |= {f"+ {m} pseudo-labels per relation from the pool": f"K{{K}}-pseudo-{m}",
                 f"  their precision (%), m = {m}": f"K{{K}}-precision-{m}",
                 f"+ {m} pseudo-labels per relation from the scored sentences": f"K{{K}}-corpus-{m}"}
    print_grid(means, "recall top-1", rows, PSEUDO_SHOTS)


if __name__ == "__main__":
    main()
