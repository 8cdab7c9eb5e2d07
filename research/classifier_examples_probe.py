"""Can the classifier learn from a user's examples at prediction time? Its head, fitted on the examples' own pairs.

The classifier reads (sentence, description) pairs and has never seen the user's examples, so the fused rule
lets it count less as examples come in (`emma.pipeline.fuse`). Here its small head (the MLP over each pair's
state) is fitted, at prediction time, on pairs the examples themselves make: each example with its own
relation's description (the answer) and with the descriptions recall confuses it with (description-only top
`NEGATIVES`), softmax over that set as in training. The encoder is not touched: a pair's state is computed once,
so fitting is a few hundred steps over cached vectors (well under a second).

Scored at K = 5, draws 0-2, on the six CrossRE dev files and FewRel val_wiki (the sets of `research.fewshot`):
the shipped fused pick among recall's top k beside picks whose classifier probabilities come from the fitted head,
fused with classifier share 1 − w̄ (shipped) or 1 (the fitted classifier has read the examples too).

    python -m research.classifier_examples_probe [--checkpoint C] [--steps 0,50,200] [--pull 1] [--seeds 0,1,2] [--sets crossre-ai,fewrel-val]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F

import emma
from emma.features import encode_instances
from emma.precision import autocast

from . import DATA_DIR
from .fewshot import SET_NAMES, load_sets, use_relations

SHOTS = 5
SEEDS = (0, 1, 2)
NEGATIVES = 3  # wrong descriptions each example is contrasted with: those its description cosines rank first
LEARNING_RATE = 1e-3
PULL = 1.0  # L2 pull of the fitted head toward the trained one (per parameter, summed)


def pair_states(ex: emma.Extractor, sentences: list[list[int]], rows: list[list[int]]) -> torch.Tensor:
    """(Σ len(rows[i]), F) the classifier's pair states of each sentence (marked ids) with the descriptions at its
    index rows, in order."""
    out = []
    for start in range(0, len(sentences), 32):
        pairs = ex.pair_inputs(sentences[start : start + 32], rows[start : start + 32])
        with autocast(ex.device, ex.precision):
            out.append(ex.model.classifier.pair_features(**pairs).float().cpu())
    return torch.cat(out)


def fit_head(head: torch.nn.Module, states: torch.Tensor, groups: list[int], targets: list[int], steps: int,
             pull: float = PULL) -> torch.nn.Module:
    """A copy of the shared `head` fitted for `steps` Adam steps on softmax groups of `states` (sizes `groups`, the
    answer at `targets`' position in each), pulled toward the trained weights."""
    fitted = copy.deepcopy(head).float()
    start = [p.detach().clone() for p in fitted.parameters()]
    optimiser = torch.optim.Adam(fitted.parameters(), lr=LEARNING_RATE)
    offsets = torch.tensor([0, *groups[:-1]]).cumsum(0)
    size = max(groups)
    # Each group padded to the largest, the padding's logits masked, so the softmax runs over one (G, size) matrix.
    slots = offsets[:, None] + torch.arange(size)[None]
    valid = torch.arange(size)[None] < torch.tensor(groups)[:, None]
    slots = slots.where(valid, torch.zeros_like(slots))
    answer = torch.tensor(targets)
    with torch.enable_grad():
        for _ in range(steps):
            logits = fitted(states).squeeze(-1)[slots].masked_fill(~valid, float("-inf"))
            loss = F.cross_entropy(logits, answer)
            loss = loss + pull * sum(((p - s) ** 2).sum() for p, s in zip(fitted.parameters(), start))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return fitted.eval()


def draw_scores(ex: emma.Extractor, fs, drawn: dict[str, list[emma.Instance]], steps_grid: list[int],
                pull: float = PULL) -> dict[str, float]:
    """{rule: macro F1} on `fs.scored` with `drawn` in force: "shipped" (the library's pick) and, per steps S,
    "fit{S}-share1-w" and "fit{S}-share1" (the fitted head's probabilities fused with share 1 − w̄ or 1)."""
    use_relations(ex, fs.descriptions, drawn)
    names = ex.index.names
    gold = [i.relation for i in fs.scored]
    predictions = ex.predict_batch(fs.scored, top_k=ex.config.k)
    out = {"shipped": emma.macro_prf(gold, [p.label for p in predictions])["f1"]}
    scored_ids = encode_instances(ex.tokenizer, fs.scored, ex.config.max_length).ids
    candidate_rows = [[names.index(c) for c in p.candidates] for p in predictions]
    scored_states = pair_states(ex, scored_ids, candidate_rows)

    examples = [(r, inst) for r, rows in drawn.items() for inst in rows]
    example_ids = encode_instances(ex.tokenizer, [inst for _, inst in examples], ex.config.max_length).ids
    vectors = torch.stack([row.vector for row in ex.encode_examples([inst for _, inst in examples])])
    description = vectors @ ex.index.vectors.T  # (E, N) description cosines: an example's confusions before examples count
    example_rows = []
    for (relation, _), scores in zip(examples, description):
        own = names.index(relation)
        wrong = [j for j in scores.argsort(descending=True).tolist() if j != own][:NEGATIVES]
        example_rows.append([own, *wrong])
    example_states = pair_states(ex, example_ids, example_rows)

    head = ex.model.classifier.mlp
    k = ex.config.k
    for steps in steps_grid:
        fitted = fit_head(head, example_states, [len(r) for r in example_rows], [0] * len(example_rows), steps, pull)
        with torch.no_grad():
            probs = torch.softmax(fitted(scored_states).squeeze(-1).reshape(-1, k), dim=-1).tolist()
        for share_rule in ("1-w", "1"):
            picks = []
            for p, prob, rows in zip(predictions, probs, candidate_rows):
                share = ex.index.description_share(rows) if share_rule == "1-w" else 1.0
                fused = emma.pipeline.fuse(prob, [s for _, s in p.recall[:k]], ex.config.temperature, share)
                picks.append(p.candidates[max(range(k), key=fused.__getitem__)])
            out[f"fit{steps}-share{share_rule}"] = emma.macro_prf(gold, picks)["f1"]
    return out


@torch.no_grad()  # not inference mode: the head fit needs autograd on the cached states
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    parser.add_argument("--steps", default="0,50,200", help="Adam steps of the head fit, comma-separated")
    parser.add_argument("--sets", default=",".join(SET_NAMES), help="sets scored, comma-separated")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--pull", type=float, default=PULL, help="L2 pull toward the trained head")
    args = parser.parse_args()
    ex = emma.Extractor.load(args.checkpoint)
    if ex.model.classifier is None or ex.model.config.classifier_head != "shared":
        parser.error("the probe fits a shared classifier head; this checkpoint has none")
    steps_grid = [int(s) for s in args.steps.split(",")]
    means = {}
    for fs in load_sets(DATA_DIR, args.sets.split(",")):
        per_draw = [draw_scores(ex, fs, emma.draw_shots(fs.pool, SHOTS, seed=seed, exclude=fs.scored), steps_grid, args.pull)
                    for seed in map(int, args.seeds.split(","))]
        means[fs.name] = {rule: statistics.mean(d[rule] for d in per_draw) for rule in per_draw[0]}
        print(fs.name, {rule: round(v, 1) for rule, v in means[fs.name].items()}, flush=True)
    crossre = [s for s in means if s.startswith("crossre-")]
    rules = list(next(iter(means.values())))
    print(f"| rule (K = {SHOTS}, fused) | " + " | ".join(s.removeprefix("crossre-") for s in means)
          + (" | CrossRE mean |" if crossre else " |") + "\n|---|" + "---|" * (len(means) + bool(crossre)))
    for rule in rules:
        cells = [f"{means[s][rule]:.1f}" for s in means]
        if crossre:
            cells.append(f"{statistics.mean(means[s][rule] for s in crossre):.1f}")
        print(f"| {rule} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
