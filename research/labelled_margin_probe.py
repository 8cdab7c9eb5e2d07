"""Should a catalogue relation the user has labelled still get the catalogue's margin? (probe)

Beside a user's own relations, the workbench lowers every catalogue relation's recall score by the checkpoint's
`seen_margin` (results/GZSL.md), so that the catalogue does not take the user's sentences. A user who labels
sentences of a catalogue relation ("place of birth") has made it one of theirs, yet its score is still lowered:
one example (weight 1/6 in the mix) did not turn "born in" from `residence` to `place of birth` in the workbench.

The setting is `research gzsl --whole-catalogue --margin-on catalogue` (the 80 FewRel and 55 other default catalogue
relations, lowered by δ, beside the 16 CrossRE types as the user's own), plus labelled examples: `--labelled` FewRel
relations of the catalogue (drawn with the seed) get K examples each from the FewRel pool, never a scored sentence.
Each rule is scored on the same sentences, fused decision:

- `every catalogue relation` (shipped): the margin on every catalogue relation, labelled or not;
- `by the description's share`: a labelled catalogue relation's margin × (1 − w), w its examples' weight in the mix
  (the margin corrects the description's cosine, which counts 1 − w);
- `not the labelled ones`: no margin on a catalogue relation with examples.

Reported: accuracy on the labelled relations' sentences, on the other catalogue (FewRel) relations' sentences, on the
CrossRE sentences, and the share of CrossRE sentences a labelled catalogue relation takes.

    python -m research.labelled_margin_probe --shots 1,5 [--labelled 10] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import random
import statistics

import emma
from emma.index import example_weight

from . import DATA_DIR, REPO_ROOT
from .gzsl import CROSSRE_PREFIX, accuracy, candidates, instances
from .protocol import fewrel_pool

RULES = ("every catalogue relation", "by the description's share", "not the labelled ones")
CATALOGUE = REPO_ROOT / "assets" / "relations.json"


def offsets(relations: dict[str, str], counts: dict[str, int], margin: float, rule: str) -> dict[str, float]:
    """{relation: −margin or less} for the catalogue relations in force under `rule` (`counts`: examples by relation)."""
    out = {}
    for name in relations:
        if name.startswith(CROSSRE_PREFIX):
            continue
        n = counts.get(name, 0)
        if rule == "every catalogue relation" or n == 0:
            out[name] = -margin
        elif rule == "by the description's share":
            out[name] = -margin * (1 - example_weight(n))
        elif rule != "not the labelled ones":
            raise ValueError(f"unknown rule {rule!r}")
    return out


def run_seed(extractor: emma.Extractor, relations: dict[str, str], trained: set[str], seen, unseen,
             pool: list[emma.Instance], shots: int, labelled: int, seed: int) -> dict[str, dict]:
    """Each rule's accuracies with `shots` examples (from `pool`, FewRel) for `labelled` catalogue relations drawn by
    `seed`."""
    rng = random.Random(seed)
    chosen = sorted(rng.sample(sorted(trained), labelled))
    scored = {i.pair for i in seen}
    examples = emma.draw_shots([i for i in pool if i.relation in chosen and i.pair not in scored], shots, seed=seed)
    base = extractor.index
    for name, rows in examples.items():
        extractor.add_examples(name, rows)
    labelled_index = extractor.index
    extractor.index = base
    counts = {name: len(rows) for name, rows in examples.items()}
    out = {}
    for rule in RULES:
        view = extractor.with_index(labelled_index.with_offsets(offsets(relations, counts, extractor.config.seen_margin, rule)))
        labels = [p.label for p in view.predict_batch(seen + unseen, top_k=2)]
        mine = [(i, l) for i, l in zip(seen, labels) if i.relation in chosen]
        rest = [(i, l) for i, l in zip(seen, labels) if i.relation not in chosen]
        crossre = labels[len(seen):]
        out[rule] = {"labelled": accuracy([l for _, l in mine], [i.relation for i, _ in mine]),
                     "other catalogue": accuracy([l for _, l in rest], [i.relation for i, _ in rest]),
                     "CrossRE": accuracy(crossre, [i.relation for i in unseen]),
                     "CrossRE taken by labelled": 100 * sum(l in chosen for l in crossre) / len(unseen)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--labelled", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--seen-per-relation", type=int, default=10)
    parser.add_argument("--unseen-per-domain", type=int, default=200)
    args = parser.parse_args()
    extractor = emma.Extractor.load(args.checkpoint)
    relations, trained = candidates(DATA_DIR, CATALOGUE, whole_catalogue=True)
    extractor.set_relations(relations, progress=True)
    seen, unseen = instances(DATA_DIR, trained, args.seen_per_relation, args.unseen_per_domain)
    pool = fewrel_pool(DATA_DIR)  # read once: every draw takes its examples from it
    print(f"{len(relations)} relations, {len(seen)} catalogue and {len(unseen)} CrossRE sentences, δ = "
          f"{extractor.config.seen_margin}, {args.labelled} catalogue relations labelled; mean of seeds {args.seeds}")
    print("| K | rule | labelled relations | other catalogue | CrossRE | CrossRE taken by labelled |")
    print("|---|---|---|---|---|---|")
    for shots in [int(x) for x in args.shots.split(",")]:
        runs = [run_seed(extractor, relations, trained, seen, unseen, pool, shots, args.labelled, int(s))
                for s in args.seeds.split(",")]
        for rule in RULES:
            cells = [statistics.mean(r[rule][k] for r in runs) for k in runs[0][rule]]
            print(f"| {shots} | {rule} | " + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
