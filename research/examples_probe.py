"""How labelled examples should count in recall: the probes behind `emma.index.example_weight`.

Recall top-1 macro F1 on each CrossRE domain's dev file, with K = 1, 5, 10 examples per relation
drawn from its train file (seeds 0-2): the relation's prototype (mean example vector) or its nearest
example, mixed with the description's cosine at weight w. Two rules that learn from the examples at
prediction time are scored beside them:
    lp: a linear probe started at the description vectors (cosine logits × 50, 50 Adam steps at lr 0.01,
        an L2 pull of 0.1 toward the descriptions) and trained on the examples;
    loo: the prototype mix with w chosen per draw from 0 … 1 by leave-one-out accuracy on the examples
        themselves (each scored against prototypes built without it), as a user's own labels could choose it.
Prints the best rules; no rerank, so it runs in a few minutes on 2 CPU threads.

`--by-count` scores, on the six CrossRE domains and FewRel val_wiki (the sets of `research.fewshot`), K = 1,
5, 10, 20 examples per relation (draws 0-2), the prototype mix at fixed weights w = 0.2 … 0.9 and at
w = n / (n + κ) for a relation with n examples, κ = 2.5, 5, 10 (the shipped rule is κ = 5; rare relations
have fewer than K examples in a train file).

`--alternatives` scores, at K = 5 (draws 0-2) on the six CrossRE domains and FewRel val_wiki (the sets of
`research.fewshot`), four other ways to use the same examples beside the prototype mix at w = 0.5 (the
weight shipped when they were measured):
    centred: query and examples centred on the mean of all drawn examples before the prototype (SimpleShot's CL2N);
    z-scored: each source's cosines z-scored over the relations before mixing (the two spread differently);
    entity part: prototypes of the h[E_h] ⊕ h[E_t] part alone (h[CLS] carries the topic, not the relation);
    NER types: a prior log P(head type | r) + log P(tail type | r) from the examples' spaCy NER labels
        (add-one counts), added to the mix's logits (cos / 0.02) at weight 0.5.

`--after-finetune S` scores, on each CrossRE domain's kept `default` fine-tune of draw S, recall top-1 with its own
20 rows per relation as examples at w = n / (n + κ), beside the starting checkpoint (and, with `--fused-kappas`, the
fine-tune's fused macro F1 at those κ).

`--classifier-share` scores, on the six CrossRE domains and FewRel val_wiki, K = 0, 5, 10 examples per relation (draws
0-2), how much the classifier's vote should count once recall has examples, and over how many candidates: the pick
among recall's top k = 2 (shipped), 3, 4 by α·log p(classifier) + log softmax(recall / τ), for α = 1 (the fused
rule before), 0.5, 0.25, 0 (recall alone) and α = 1 − w̄, w̄ the mean example weight of the k candidates (the
classifier reads descriptions only, so its vote counts as much as the descriptions count in recall; shipped since,
`emma.pipeline.fuse`; K = 0 is then exactly the rule before). `--split test` scores the CrossRE test files instead
(FewRel left out). With `--after-finetune S --picks`, the same grid on each kept fine-tune and its start,
the fine-tune's 20 rows per relation as examples (a fine-tuned classifier has read the domain).

`--calibrated` scores, at K = 1, 5, 10 (draws 0-2) on the same sets, recall top-1 with one offset per relation added
to the shipped mix, fitted on the examples themselves (each scored with its own prototype left out) at three penalties.

`--every-row` scores each CrossRE domain's dev file (fused, recall in brackets) with every row of its train file as
examples (up to 185 for one relation), the count in w = m / (m + 5) capped at m = min(n, 20) (shipped), at 10, or not
at all (`emma.index.EXAMPLES_COUNTED`); `--set fewrel-val` scores FewRel val_wiki with its whole pool, 30 per relation.

`--agreement` scores, at K = 1, 5, 10, 20 (draws 0-2) on the same sets, recall top-1 with each relation's example
weight made to follow how well the descriptions alone already label the drawn examples (`agreement_scores`).

`--enriched` scores, at K = 5 (draw 0) on the same sets, the fused decision with each description followed by its
examples' entity pairs ("… For example: X and Y; …"), which the classifier then reads too.

    python -m research.examples_probe [--alternatives | --by-count | --classifier-share | --calibrated | --every-row [--set NAME] | --agreement | --enriched | --after-finetune S [--picks | --fused-kappas 1,5,40]] [--checkpoint C]
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import NamedTuple

import torch
import torch.nn.functional as F

import emma

from . import DATA_DIR
from .fewshot import CROSSRE_DOMAINS as DOMAINS, SET_NAMES, load_sets, use_relations

WEIGHTS = (0.3, 0.5, 0.7, 1.0)
LOO_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


def instance_vectors(ex: emma.Extractor, instances: list[emma.Instance]) -> torch.Tensor:
    """(B, 3d) unit instance vectors."""
    return torch.stack([r.vector for r in ex.encode_examples(instances)])


class EncodedSet(NamedTuple):
    """One `research.fewshot.FewShotSet` encoded once, with its relations in force: what the recall-only probes score."""

    names: list[str]  # the relations, in index order
    gold: list[str]  # the scored instances' relations
    scored: torch.Tensor  # (B, 3d) unit vectors of the scored instances
    pool: torch.Tensor  # (M, 3d) unit vectors of the pool the examples are drawn from
    desc: torch.Tensor  # (B, N) the scored instances' description cosines
    pool_desc: torch.Tensor  # (M, N) the pool's


def encode_set(ex: emma.Extractor, fs) -> EncodedSet:
    """Put `fs`'s descriptions in force on `ex` and encode its scored instances and pool."""
    ex.set_relations(fs.descriptions)
    q, pool = instance_vectors(ex, fs.scored), instance_vectors(ex, fs.pool)
    return EncodedSet(list(fs.descriptions), [i.relation for i in fs.scored], q, pool,
                      q @ ex.index.vectors.T, pool @ ex.index.vectors.T)


def draws(pool: list[emma.Instance], names: list[str], k: int, seed: int) -> dict[int, list[int]]:
    """{row of `names`: indices into `pool` of up to `k` of its instances}, drawn with `seed` (relations in name order)."""
    by_rel: dict[str, list[int]] = {}
    for j, inst in enumerate(pool):
        by_rel.setdefault(inst.relation, []).append(j)
    rng = random.Random(seed)
    return {names.index(r): rng.sample(idx, min(k, len(idx))) for r, idx in sorted(by_rel.items()) if r in names}


def prototypes(vectors: torch.Tensor, drawn: dict[int, list[int]], relations: int) -> torch.Tensor:
    """(relations, dim) unit mean of each relation's drawn rows of `vectors`; zero rows for relations without any."""
    out = torch.zeros(relations, vectors.shape[1])
    for n, picked in drawn.items():
        out[n] = F.normalize(vectors[picked].mean(0), dim=-1)
    return out


def prototype_scores(q: torch.Tensor, desc: torch.Tensor, vectors: torch.Tensor, drawn: dict[int, list[int]],
                     relations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, relations) cosine of each query to each relation's prototype of its drawn rows of `vectors`, the
    description's cosine for a relation without any; (relations,) how many rows each relation has)."""
    count = torch.zeros(relations)
    for n, picked in drawn.items():
        count[n] = len(picked)
    return torch.where(count[None] > 0, q @ prototypes(vectors, drawn, relations).T, desc), count


def top1_f1(gold: list[str], names: list[str], scores: torch.Tensor) -> float:
    """Macro F1 of each row's best-scoring relation of `names` against `gold`."""
    return emma.macro_prf(gold, [names[j] for j in scores.argmax(1).tolist()])["f1"]


def domain_scores(ex: emma.Extractor, names: list[str], domain: str) -> dict[str, list[float]]:
    """{rule: [F1 per draw]} for one domain."""
    dev = emma.read_instances(DATA_DIR / "crossre" / f"{domain}-dev.jsonl")
    train = emma.read_instances(DATA_DIR / "crossre" / f"{domain}-train.jsonl")
    q, tv = instance_vectors(ex, dev), instance_vectors(ex, train)
    gold = [i.relation for i in dev]
    desc = q @ ex.index.vectors.T  # (B, N)

    def f1(scores: torch.Tensor) -> float:
        return top1_f1(gold, names, scores)

    out: dict[str, list[float]] = {"K0": [f1(desc)]}
    sims = q @ tv.T  # (B, M)
    for k in (1, 5, 10):
        for seed in (0, 1, 2):
            drawn = draws(train, names, k, seed)
            proto, nearest = prototypes(tv, drawn, len(names)), desc.clone()
            has = torch.zeros(len(names), dtype=torch.bool)
            for n, picked in drawn.items():
                has[n] = True
                nearest[:, n] = sims[:, picked].max(1).values
            # Relations without examples: description only.
            by_proto, by_nearest = torch.where(has[None], q @ proto.T, desc), torch.where(has[None], nearest, desc)
            for rule, examples in (("proto", by_proto), ("nn", by_nearest)):
                for w in WEIGHTS:
                    out.setdefault(f"K{k}-{rule}-w{w}", []).append(f1((1 - w) * desc + w * examples))
            out.setdefault(f"K{k}-lp", []).append(f1(q @ linear_probe(ex.index.vectors, tv, drawn).T))
            shipped = torch.tensor([emma.index.example_weight(len(drawn.get(n, []))) for n in range(len(names))])
            out.setdefault(f"K{k}-count", []).append(f1((1 - shipped) * desc + shipped * by_proto))
            w = loo_weight(ex.index.vectors, tv, drawn)
            out.setdefault(f"K{k}-loo", []).append(f1((1 - w) * desc + w * by_proto))
    return out


def linear_probe(descriptions: torch.Tensor, vectors: torch.Tensor, drawn: dict[int, list[int]]) -> torch.Tensor:
    """(N, 3d) relation vectors trained on the drawn examples from the description vectors (rule "lp")."""
    with torch.inference_mode(False), torch.enable_grad():  # normal tensors: the caller's are inference tensors
        x = vectors[[j for js in drawn.values() for j in js]].clone()
        y = torch.tensor([n for n, js in drawn.items() for _ in js])
        start = descriptions.float().clone()
        weights = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([weights], lr=0.01)
        for _ in range(50):
            loss = F.cross_entropy(50 * x @ F.normalize(weights, dim=-1).T, y) + 0.1 * ((weights - start) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return F.normalize(weights.detach(), dim=-1)


def loo_weight(descriptions: torch.Tensor, vectors: torch.Tensor, drawn: dict[int, list[int]]) -> float:
    """The mix weight whose leave-one-out accuracy on the drawn examples is best (rule "loo"; ties: nearest 0.5)."""
    sums = torch.zeros_like(descriptions)
    for n, js in drawn.items():
        sums[n] = vectors[js].sum(0)
    right = dict.fromkeys(LOO_WEIGHTS, 0)
    for n, js in drawn.items():
        for j in js:
            held = sums.clone()
            held[n] -= vectors[j]
            has = torch.tensor([m in drawn and (m != n or len(js) > 1) for m in range(len(descriptions))])
            desc = vectors[j] @ descriptions.T
            examples = torch.where(has, vectors[j] @ F.normalize(held, dim=-1).T, desc)
            for w in LOO_WEIGHTS:
                right[w] += int(((1 - w) * desc + w * examples).argmax().item() == n)
    return max(LOO_WEIGHTS, key=lambda w: (right[w], -abs(w - 0.5)))


def ner_types(instances: list[emma.Instance]) -> list[tuple[str, str]]:
    """(head, tail) spaCy NER label of each instance's entities ("O" where no NER entity overlaps it)."""
    from emma.entities import load_pipeline

    nlp, parsed, out = load_pipeline(), {}, []
    for inst in instances:
        if inst.tokens not in parsed:
            starts, at = [], 0
            for token in inst.tokens:
                starts.append(at)
                at += len(token) + 1
            doc = nlp(" ".join(inst.tokens))
            parsed[inst.tokens] = starts, [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        starts, ents = parsed[inst.tokens]

        def label(span: tuple[int, int]) -> str:
            first, last = starts[span[0]], starts[span[1] - 1] + len(inst.tokens[span[1] - 1])
            return next((lab for s, e, lab in ents if s < last and first < e), "O")

        out.append((label(inst.head), label(inst.tail)))
    return out


def alternative_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{rule: [recall top-1 macro F1 per draw]} at K = 5 for one `research.fewshot.FewShotSet`."""
    names, gold, q, tv, desc, _ = encode_set(ex, fs)
    d = q.shape[1] // 3
    q_types, pool_types = ner_types(fs.scored), ner_types(fs.pool)
    labels = {lab: i for i, lab in enumerate(sorted({t for pair in q_types + pool_types for t in pair}))}
    q_head = torch.tensor([labels[h] for h, _ in q_types])
    q_tail = torch.tensor([labels[t] for _, t in q_types])

    def f1(scores: torch.Tensor) -> float:
        return top1_f1(gold, names, scores)

    def z(scores: torch.Tensor) -> torch.Tensor:
        return (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True)

    out: dict[str, list[float]] = {"zero-shot": [f1(desc)]}
    for seed in (0, 1, 2):
        drawn = draws(fs.pool, names, 5, seed)
        has = torch.zeros(len(names), dtype=torch.bool)
        has[list(drawn)] = True

        def mixed(examples: torch.Tensor, zscore: bool = False) -> torch.Tensor:
            examples = torch.where(has[None], examples, desc)
            return 0.5 * z(desc) + 0.5 * z(examples) if zscore else 0.5 * desc + 0.5 * examples

        shipped = mixed(q @ prototypes(tv, drawn, len(names)).T)
        out.setdefault("prototype, w = 0.5", []).append(f1(shipped))
        mu = tv[[j for picked in drawn.values() for j in picked]].mean(0)
        centred = F.normalize(q - mu, dim=-1) @ prototypes(F.normalize(tv - mu, dim=-1), drawn, len(names)).T
        out.setdefault("centred (CL2N)", []).append(f1(mixed(centred)))
        out.setdefault("z-scored sources", []).append(f1(mixed(q @ prototypes(tv, drawn, len(names)).T, zscore=True)))
        ents = F.normalize(q[:, d:], dim=-1) @ prototypes(F.normalize(tv[:, d:], dim=-1), drawn, len(names)).T
        out.setdefault("entity part only", []).append(f1(mixed(ents)))
        head_counts, tail_counts = torch.ones(len(names), len(labels)), torch.ones(len(names), len(labels))
        for n, picked in drawn.items():
            for j in picked:
                head_counts[n, labels[pool_types[j][0]]] += 1
                tail_counts[n, labels[pool_types[j][1]]] += 1
        prior = ((head_counts / head_counts.sum(1, keepdim=True)).log()[:, q_head].T
                 + (tail_counts / tail_counts.sum(1, keepdim=True)).log()[:, q_tail].T)
        out.setdefault("NER type prior", []).append(f1(shipped / 0.02 + 0.5 * prior))
    return out


BY_COUNT_SHOTS = (1, 5, 10, 20)
BY_COUNT_WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BY_COUNT_KAPPAS = (2.5, 5.0, 10.0)


def count_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{rule: [recall top-1 macro F1 per draw]} for one `research.fewshot.FewShotSet`: "K{k}-w{w}" (fixed weight)
    and "K{k}-n/(n+{κ})" (weight by each relation's number of examples), and "K0"."""
    names, gold, q, tv, desc, _ = encode_set(ex, fs)
    out: dict[str, list[float]] = {"K0": [top1_f1(gold, names, desc)]}
    for k in BY_COUNT_SHOTS:
        for seed in (0, 1, 2):
            examples, count = prototype_scores(q, desc, tv, draws(fs.pool, names, k, seed), len(names))
            for w in BY_COUNT_WEIGHTS:
                out.setdefault(f"K{k}-w{w}", []).append(top1_f1(gold, names, (1 - w) * desc + w * examples))
            for kappa in BY_COUNT_KAPPAS:
                w = count / (count + kappa)
                out.setdefault(f"K{k}-n/(n+{kappa:g})", []).append(top1_f1(gold, names, (1 - w) * desc + w * examples))
    return out


def set_means(ex: emma.Extractor, score, split: str = "dev") -> dict[str, dict[str, float]]:
    """{set name: {rule: mean over draws}} of `score(ex, fs)` on every set of `research.fewshot.load_sets`, each set's
    line printed as it lands. `split` "test" scores the CrossRE test files and leaves FewRel out (its val_wiki is the
    only FewRel set, and the dev run scored it)."""
    names = None if split == "dev" else [f"crossre-{d}" for d in DOMAINS]
    means = {}
    for fs in load_sets(DATA_DIR, names, crossre_split=split):
        means[fs.name] = {rule: statistics.mean(v) for rule, v in score(ex, fs).items()}
        print(fs.name, {rule: round(v, 1) for rule, v in means[fs.name].items()}, flush=True)
    return means


def print_grid(means: dict[str, dict[str, float]], title: str, rows: dict[str, str], shots, split: str = "dev") -> None:
    """A markdown table with one row per `rows` item (label: rule key with "{K}" for the shots) and one column per K of
    `shots`, each cell "CrossRE `split` mean / FewRel val_wiki" (FewRel "—" when `means` has no FewRel set)."""
    crossre = [name for name in means if name.startswith("crossre-")]
    print(f"| {title} (CrossRE {split} mean / FewRel val_wiki) | " + " | ".join(f"K = {k}" for k in shots)
          + " |\n|---|" + "---|" * len(shots))
    for label, key in rows.items():
        cells = [f"{statistics.mean(means[s][key.format(K=k)] for s in crossre):.1f} / "
                 + (f"{means['fewrel-val'][key.format(K=k)]:.1f}" if "fewrel-val" in means else "—")
                 for k in shots]
        print(f"| {label} | " + " | ".join(cells) + " |")


def by_count(ex: emma.Extractor) -> None:
    """Print the `--by-count` table: per K and rule, CrossRE dev mean / FewRel val_wiki, mean of three draws."""
    means = set_means(ex, count_scores)
    crossre = [name for name in means if name.startswith("crossre-")]
    print(f"zero-shot: CrossRE dev mean {statistics.mean(means[s]['K0'] for s in crossre):.1f}, "
          f"FewRel val_wiki {means['fewrel-val']['K0']:.1f}")
    rows = {f"w = {w}": f"K{{K}}-w{w}" for w in BY_COUNT_WEIGHTS} | {f"n/(n+{kappa:g})": f"K{{K}}-n/(n+{kappa:g})" for kappa in BY_COUNT_KAPPAS}
    print_grid(means, "rule (recall top-1)", rows, BY_COUNT_SHOTS)


def alternatives(ex: emma.Extractor) -> None:
    """Print the `--alternatives` table: CrossRE dev mean and FewRel val_wiki, K = 5, mean of three draws."""
    scores = {}
    for fs in load_sets(DATA_DIR):
        scores[fs.name] = {rule: statistics.mean(v) for rule, v in alternative_scores(ex, fs).items()}
        print(fs.name, {rule: round(v, 1) for rule, v in scores[fs.name].items()}, flush=True)
    crossre = [name for name in scores if name.startswith("crossre-")]
    print("| rule (K = 5, recall top-1) | CrossRE dev mean | FewRel val_wiki |\n|---|---|---|")
    for rule in scores[crossre[0]]:
        print(f"| {rule} | {statistics.mean(scores[s][rule] for s in crossre):.1f} | {scores['fewrel-val'][rule]:.1f} |")


AFTER_FINETUNE_KAPPAS = (1.0, 2.5, 5.0, 10.0, 20.0, 40.0)


def weight_scores(ex: emma.Extractor, names: list[str], dev: list[emma.Instance],
                  rows: dict[str, list[emma.Instance]]) -> dict[str, float]:
    """Recall top-1 macro F1 on `dev` with `rows` as each relation's examples, mixed at w = n / (n + κ) for each κ of
    `AFTER_FINETUNE_KAPPAS` ("κ"), and the descriptions alone ("descriptions")."""
    q = instance_vectors(ex, dev)
    desc = q @ ex.index.vectors.T
    flat: list[emma.Instance] = []
    drawn: dict[int, list[int]] = {}  # row of `names`: indices of its rows in `flat`
    for n, name in enumerate(names):
        if rows.get(name):
            drawn[n] = list(range(len(flat), len(flat) + len(rows[name])))
            flat += rows[name]
    examples, count = prototype_scores(q, desc, instance_vectors(ex, flat), drawn, len(names))
    gold = [i.relation for i in dev]
    out = {"descriptions": top1_f1(gold, names, desc)}
    for kappa in AFTER_FINETUNE_KAPPAS:
        w = count / (count + kappa)
        out[f"{kappa:g}"] = top1_f1(gold, names, (1 - w) * desc + w * examples)
    return out


def fused_weight_scores(ex: emma.Extractor, descriptions: dict[str, str], dev: list[emma.Instance],
                        rows: dict[str, list[emma.Instance]], kappas) -> dict[str, float]:
    """Fused macro F1 (recall and classifier, as the workbench decides) on `dev` with `rows` as examples at
    w = n / (n + κ) for each κ of `kappas`: the library's rule with its constant set to κ for the scoring."""
    from unittest import mock

    from .finetune import fused

    out = {}
    for kappa in kappas:
        with mock.patch.object(emma.index, "EXAMPLES_LIKE_DESCRIPTION", kappa):
            out[f"{kappa:g}"] = fused(ex, dev, descriptions, rows)
    return out


EVERY_ROW_CAPS = (None, 20, 10)  # None: the count uncapped, the rule before the cap


def every_row_scores(ex: emma.Extractor, fs) -> dict[str, dict[str, float]]:
    """{cap: {"fused", "recall"} macro F1} on `fs` (a `research.fewshot.FewShotSet`) with every labelled row of
    its pool as examples, the example count capped at each of `EVERY_ROW_CAPS` (`emma.index.EXAMPLES_COUNTED`)."""
    from unittest import mock

    every = emma.draw_shots(fs.pool, len(fs.pool), seed=0, exclude=fs.scored)
    out = {}
    for cap in EVERY_ROW_CAPS:
        with mock.patch.object(emma.index, "EXAMPLES_COUNTED", cap or len(fs.pool)):
            use_relations(ex, fs.descriptions, every)
            report = emma.evaluate(ex, fs.scored)
        out["uncapped" if cap is None else f"capped at {cap}"] = {"fused": report["emma_fused"]["f1"],
                                                                  "recall": report["recall_only"]["f1"]}
    return out


def every_row(ex: emma.Extractor, names: list[str] | None = None) -> None:
    """Print fused (recall) macro F1 per set with every labelled row of its pool as examples, per cap on the count:
    the sets `names` of `research.fewshot.load_sets` (default: the six CrossRE domains, whose pool is a train file;
    "fewrel-val" has 30 per relation), and their mean when there are several."""
    sets = load_sets(DATA_DIR, names or [f"crossre-{d}" for d in DOMAINS])
    scores = {}
    for fs in sets:
        scores[fs.name] = every_row_scores(ex, fs)
        print(fs.name, {k: round(v["fused"], 1) for k, v in scores[fs.name].items()}, flush=True)
    rules = list(scores[sets[0].name])
    print("| examples: every row of the pool | " + " | ".join(fs.name.removeprefix("crossre-") for fs in sets) + " | mean |\n|---|"
          + "---|" * (len(sets) + 1))
    for rule in rules:
        cells = [scores[fs.name][rule] for fs in sets]
        print(f"| {rule} | " + " | ".join(f"{c['fused']:.1f} ({c['recall']:.1f})" for c in cells)
              + f" | {statistics.mean(c['fused'] for c in cells):.1f} ({statistics.mean(c['recall'] for c in cells):.1f}) |")


def kept_finetunes(runs, seed: int):
    """(domain, folder, dev instances, {relation: its 20 rows}) for each CrossRE domain with a kept `default` fine-tune of
    draw `seed` (`finetune-compare --recipes default --seed S --keep`)."""
    from .finetune import labelled_rows

    for domain in DOMAINS:
        tuned = runs / f"finetune-{domain}-default-20-{seed}"
        if tuned.is_dir():
            yield domain, tuned, *labelled_rows(DATA_DIR / "crossre", domain, 20, seed)


def after_finetune(checkpoint: str | None, runs, seed: int, fused_kappas=()) -> None:
    """Print, per CrossRE domain with a kept `default` fine-tune (`finetune-compare --recipes default --seed S --keep`),
    recall top-1 on dev with the fine-tune's own 20 rows per relation as examples at w = n / (n + κ), for the starting
    checkpoint and the fine-tune: whether a fine-tuned model wants its examples weighed otherwise. With `fused_kappas`,
    the fine-tune's fused macro F1 at those κ too (slower: the classifier reads every dev pair per κ)."""
    descriptions = emma.read_descriptions(DATA_DIR / "crossre" / "descriptions.json")
    base = emma.Extractor.load(checkpoint)
    header = ["descriptions"] + [f"{k:g}" for k in AFTER_FINETUNE_KAPPAS]
    print("| domain | model | descriptions alone | " + " | ".join(f"κ = {k:g}" for k in AFTER_FINETUNE_KAPPAS) + " |\n|---|---|"
          + "---|" * len(header))
    totals: dict[str, list[dict[str, float]]] = {"start": [], "fine-tuned": []}
    for domain, tuned, dev, drawn in kept_finetunes(runs, seed):
        finetuned = emma.Extractor.load(tuned)
        for label, ex in (("start", base), ("fine-tuned", finetuned)):
            ex.set_relations(descriptions)
            scores = weight_scores(ex, list(descriptions), dev, drawn)
            totals[label].append(scores)
            print(f"| {domain} | {label} | " + " | ".join(f"{scores[h]:.1f}" for h in header) + " |", flush=True)
        if fused_kappas:
            fused_scores = fused_weight_scores(finetuned, descriptions, dev, drawn, fused_kappas)
            totals.setdefault("fine-tuned, fused", []).append(fused_scores)
            print(f"| {domain} | fine-tuned, fused | " + " | ".join(f"κ = {k}: {v:.1f}" for k, v in fused_scores.items()) + " |",
                  flush=True)
    for label, rows in totals.items():
        if rows:
            keys = list(rows[0])
            print(f"| mean of {len(rows)} | {label} | " + " | ".join(f"{k}: {statistics.mean(r[k] for r in rows):.1f}" for k in keys) + " |")


CLASSIFIER_SHARE_SHOTS = (0, 5, 10)
CLASSIFIER_SHARES = ("1", "0.5", "0.25", "0", "1-w")
CANDIDATE_KS = (2, 3, 4)


def share_alpha(candidates: list[str], share: str, counts: dict[str, int]) -> float:
    """α of rule `share` over `candidates`: the number itself, or for "1-w" 1 − their mean example weight with
    `counts` examples per relation (the library's `classifier_share` for relations with descriptions)."""
    if share == "1-w":
        return 1 - statistics.mean(float(emma.index.example_weight(counts.get(c, 0))) for c in candidates)
    return float(share)


def share_pick(prediction: emma.Prediction, share: str, counts: dict[str, int], temperature: float, k: int | None = None) -> str:
    """The candidate among recall's first `k` (default: all the prediction's) that `emma.pipeline.fuse` ranks first
    with classifier share α = `share_alpha` (α·log p(classifier) + log softmax(recall score / τ)); recall's pick when
    the classifier did not run. The classifier scores each pair alone (its probabilities are a softmax over the
    candidates), so a smaller k is the same ranking renormalised over the first k."""
    if not prediction.reranked:
        return prediction.recall_label
    k = k or len(prediction.candidates)
    candidates = prediction.candidates[:k]
    fused = emma.pipeline.fuse(prediction.probabilities[:k], [s for _, s in prediction.recall[:k]], temperature,
                               share_alpha(candidates, share, counts))
    return candidates[max(range(k), key=fused.__getitem__)]


def pick_scores(ex: emma.Extractor, scored: list[emma.Instance], counts: dict[str, int]) -> dict[str, float]:
    """{"k{k}-α{share}": macro F1} on `scored` for each k of `CANDIDATE_KS` and share of `CLASSIFIER_SHARES`, from one
    prediction pass with the classifier reading recall's top max(k) (the relations and examples already in `ex`)."""
    from unittest import mock

    gold = [i.relation for i in scored]
    # Both configs: a quantized extractor keeps its own copy of the model's.
    with mock.patch.object(ex.config, "k", max(CANDIDATE_KS)), mock.patch.object(ex.model.config, "k", max(CANDIDATE_KS)):
        predictions = ex.predict_batch(scored, top_k=max(CANDIDATE_KS))
    return {f"k{k}-α{share}": emma.macro_prf(gold, [share_pick(p, share, counts, ex.config.temperature, k) for p in predictions])["f1"]
            for k in CANDIDATE_KS for share in CLASSIFIER_SHARES}


def share_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{"K{K}-k{k}-α{share}": [macro F1 per draw]} for one `research.fewshot.FewShotSet` (K = 0: one draw)."""
    out: dict[str, list[float]] = {}
    for shots in CLASSIFIER_SHARE_SHOTS:
        for seed in ((0,) if shots == 0 else (0, 1, 2)):
            drawn = emma.draw_shots(fs.pool, shots, seed=seed, exclude=fs.scored) if shots else {}
            use_relations(ex, fs.descriptions, drawn)
            for rule, f1 in pick_scores(ex, fs.scored, {r: len(v) for r, v in drawn.items()}).items():
                out.setdefault(f"K{shots}-{rule}", []).append(f1)
    return out


def classifier_share(ex: emma.Extractor, split: str = "dev") -> None:
    """Print the `--classifier-share` table: per (k, α) and K, CrossRE `split` mean / FewRel val_wiki (mean of the draws)."""
    rows = {f"k = {k}, α = {share}": f"K{{K}}-k{k}-α{share}" for k in CANDIDATE_KS for share in CLASSIFIER_SHARES}
    print_grid(set_means(ex, share_scores, split), "candidates, classifier share", rows, CLASSIFIER_SHARE_SHOTS, split)


CALIBRATION_SHOTS = (1, 5, 10)
CALIBRATION_PENALTIES = (0.01, 0.1, 1.0)


def mixed_scores(q: torch.Tensor, desc: torch.Tensor, vectors: torch.Tensor, drawn: dict[int, list[int]],
                 relations: int) -> torch.Tensor:
    """(B, relations) recall scores as the library mixes them: (1 − w)·description + w·prototype, w = n / (n + 5)."""
    examples, count = prototype_scores(q, desc, vectors, drawn, relations)
    w = emma.index.example_weight(count)
    return (1 - w) * desc + w * examples


def relation_biases(pool_desc: torch.Tensor, vectors: torch.Tensor, drawn: dict[int, list[int]], penalty: float,
                    temperature: float = 0.02) -> torch.Tensor:
    """(relations,) offsets b fitted so that softmax((score + b) / τ) labels the drawn rows of `vectors` themselves
    (their description cosines: the rows of `pool_desc`), each scored by the mixed rule with its own relation's
    prototype built without it (leave one out), + penalty·Σ(b/τ)²: relations whose scores run high for other
    relations' sentences are pulled down."""
    relations = pool_desc.shape[1]
    rows, labels = [], []
    for n, picked in drawn.items():
        for j in picked:
            others = {m: [i for i in js if i != j] for m, js in drawn.items()}
            others = {m: js for m, js in others.items() if js}
            rows.append(mixed_scores(vectors[j:j + 1], pool_desc[j:j + 1], vectors, others, relations)[0])
            labels.append(n)
    with torch.inference_mode(False), torch.enable_grad():  # normal tensors: the caller's are inference tensors
        scores, y = torch.stack(rows).float().clone(), torch.tensor(labels)
        b = torch.zeros(relations, requires_grad=True)
        optimizer = torch.optim.Adam([b], lr=0.002)
        for _ in range(200):
            loss = F.cross_entropy((scores + b) / temperature, y) + penalty * ((b / temperature) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return b.detach()


def calibration_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{"K{K}-shipped" | "K{K}-bias-{penalty}": [recall top-1 macro F1 per draw]} for one `research.fewshot.FewShotSet`."""
    names, gold, q, tv, desc, pool_desc = encode_set(ex, fs)
    out: dict[str, list[float]] = {}
    for shots in CALIBRATION_SHOTS:
        for seed in (0, 1, 2):
            drawn = draws(fs.pool, names, shots, seed)
            shipped = mixed_scores(q, desc, tv, drawn, len(names))
            out.setdefault(f"K{shots}-shipped", []).append(top1_f1(gold, names, shipped))
            for penalty in CALIBRATION_PENALTIES:
                b = relation_biases(pool_desc, tv, drawn, penalty, ex.config.temperature)
                out.setdefault(f"K{shots}-bias-{penalty:g}", []).append(top1_f1(gold, names, shipped + b))
    return out


def calibrated(ex: emma.Extractor) -> None:
    """Print the `--calibrated` table: per rule and K, CrossRE dev mean / FewRel val_wiki, recall top-1, three draws."""
    rows = {rule: f"K{{K}}-{rule}" for rule in ["shipped", *(f"bias-{p:g}" for p in CALIBRATION_PENALTIES)]}
    print_grid(set_means(ex, calibration_scores), "rule (recall top-1)", rows, CALIBRATION_SHOTS)


AGREEMENT_SHOTS = (1, 5, 10, 20)


def description_agreement(pool_desc: torch.Tensor, drawn: dict[int, list[int]], temperature: float) -> tuple[float, torch.Tensor]:
    """How well the descriptions alone label the drawn rows: (the fraction of all of them whose best description is
    their own relation's, (relations,) each relation's mean softmax(description cosines / τ) probability of its own)."""
    right, soft = [], torch.zeros(pool_desc.shape[1])
    for n, picked in drawn.items():
        rows = pool_desc[picked]
        right += (rows.argmax(1) == n).tolist()
        soft[n] = torch.softmax(rows / temperature, 1)[:, n].mean()
    return sum(right) / len(right), soft


def agreement_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{"K{K}-{rule}": [recall top-1 macro F1 per draw]} for one `research.fewshot.FewShotSet` ("K{K}-A": the agreement
    itself, in %): the shipped weight w beside weights that follow how well the descriptions already label the drawn examples (agreement A over all of
    them, or each relation's own soft agreement a_r): κ = 5·c^(2A − 1) in place of 5, w·(1 − βA), w·(1 − β·a_r)."""
    names, gold, q, tv, desc, pool_desc = encode_set(ex, fs)
    out: dict[str, list[float]] = {"K0": [top1_f1(gold, names, desc)]}
    for shots in AGREEMENT_SHOTS:
        for seed in (0, 1, 2):
            drawn = draws(fs.pool, names, shots, seed)
            examples, count = prototype_scores(q, desc, tv, drawn, len(names))
            agreement, own = description_agreement(pool_desc, drawn, ex.config.temperature)
            w = emma.index.example_weight(count)
            m = count.clamp(max=emma.index.EXAMPLES_COUNTED)
            out.setdefault(f"K{shots}-A", []).append(agreement * 100)
            rules = {"shipped": w}
            for c in (2, 4):
                rules[f"κ·{c}^(2A−1)"] = m / (m + emma.index.EXAMPLES_LIKE_DESCRIPTION * c ** (2 * agreement - 1))
            for beta in (0.5, 1.0):
                rules[f"w·(1−{beta:g}A)"] = w * (1 - beta * agreement)
            rules["w·(1−0.5a_r)"] = w * (1 - 0.5 * own)
            for rule, weight in rules.items():
                out.setdefault(f"K{shots}-{rule}", []).append(top1_f1(gold, names, (1 - weight) * desc + weight * examples))
    return out


def agreement(ex: emma.Extractor) -> None:
    """Print the `--agreement` table: per rule and K, CrossRE dev mean / FewRel val_wiki, recall top-1, three draws
    (the row "A" is the agreement itself, in %)."""
    rules = ["A", "shipped", "κ·2^(2A−1)", "κ·4^(2A−1)", "w·(1−0.5A)", "w·(1−1A)", "w·(1−0.5a_r)"]
    print_grid(set_means(ex, agreement_scores), "rule (recall top-1)", {r: f"K{{K}}-{r}" for r in rules}, AGREEMENT_SHOTS)


def enriched_descriptions(descriptions: dict[str, str], drawn: dict[str, list[emma.Instance]]) -> dict[str, str]:
    """Each description with its relation's drawn examples' entity pairs appended ("… For example: X and Y; …"), so
    that the classifier, which reads descriptions only, reads the examples too."""
    def pair(i: emma.Instance) -> str:
        return f"{' '.join(i.tokens[slice(*i.head)])} and {' '.join(i.tokens[slice(*i.tail)])}"

    return {r: f"{text.rstrip('. ')}. For example: {'; '.join(pair(i) for i in drawn[r])}." if drawn.get(r) else text
            for r, text in descriptions.items()}


def enriched_scores(ex: emma.Extractor, fs) -> dict[str, list[float]]:
    """{"shipped" | "enriched": [fused macro F1]} for one `research.fewshot.FewShotSet` at K = 5, draw 0: the
    examples as the library uses them, with the plain descriptions or with `enriched_descriptions`."""
    drawn = emma.draw_shots(fs.pool, 5, seed=0, exclude=fs.scored)
    out = {}
    for rule, descriptions in (("shipped", fs.descriptions), ("enriched", enriched_descriptions(fs.descriptions, drawn))):
        use_relations(ex, descriptions, drawn)
        out[rule] = [emma.evaluate(ex, fs.scored)["emma_fused"]["f1"]]
    return out


def enriched(ex: emma.Extractor) -> None:
    """Print the `--enriched` scores per set and the CrossRE dev mean (fused, K = 5, draw 0)."""
    means = set_means(ex, enriched_scores)
    crossre = [name for name in means if name.startswith("crossre-")]
    print("| descriptions (fused, K = 5, draw 0) | " + " | ".join(s.removeprefix("crossre-") for s in means)
          + " | CrossRE mean |\n|---|" + "---|" * (len(means) + 1))
    for rule in ("shipped", "enriched"):
        print(f"| {rule} | " + " | ".join(f"{means[s][rule]:.1f}" for s in means)
              + f" | {statistics.mean(means[s][rule] for s in crossre):.1f} |")


def after_finetune_picks(checkpoint: str | None, runs, seed: int) -> None:
    """Print `pick_scores` on each CrossRE domain's dev with a kept `default` fine-tune of draw `seed`, for the start and
    the fine-tune, the fine-tune's own 20 rows per relation as examples; then the means over the domains found."""
    descriptions = emma.read_descriptions(DATA_DIR / "crossre" / "descriptions.json")
    base = emma.Extractor.load(checkpoint)
    totals: dict[str, list[dict[str, float]]] = {"start": [], "fine-tuned": []}
    for domain, tuned, dev, drawn in kept_finetunes(runs, seed):
        for label, ex in (("start", base), ("fine-tuned", emma.Extractor.load(tuned))):
            use_relations(ex, descriptions, drawn)
            scores = pick_scores(ex, dev, {r: len(v) for r, v in drawn.items()})
            totals[label].append(scores)
            print(domain, label, {rule: round(v, 1) for rule, v in scores.items()}, flush=True)
    print("| k | α | " + " | ".join(f"{label} + examples (mean of {len(rows)})" for label, rows in totals.items())
          + " |\n|---|---|" + "---|" * len(totals))
    for k in CANDIDATE_KS:
        for share in CLASSIFIER_SHARES:
            rule = f"k{k}-α{share}"
            print(f"| {k} | {share} | " + " | ".join(f"{statistics.mean(r[rule] for r in rows):.1f}" if rows else "—"
                                                   for rows in totals.values()) + " |")


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alternatives", action="store_true", help="score the other rules at K = 5 instead")
    parser.add_argument("--by-count", action="store_true", help="score fixed weights against weights by example count")
    parser.add_argument("--classifier-share", action="store_true", help="score how much the classifier's vote counts with examples")
    parser.add_argument("--calibrated", action="store_true", help="score per-relation offsets fitted on the examples")
    parser.add_argument("--every-row", action="store_true", help="every train row as examples, the count capped or not")
    parser.add_argument("--set", action="append", dest="sets", metavar="NAME",
                        help="with --every-row: a set to score (crossre-ai … crossre-news, fewrel-val; repeat; default the six CrossRE domains)")
    parser.add_argument("--enriched", action="store_true", help="descriptions with the examples' entity pairs appended (fused)")
    parser.add_argument("--agreement", action="store_true", help="example weights that follow how well the descriptions label the examples")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    parser.add_argument("--split", choices=("dev", "test"), default="dev",
                        help="with --classifier-share: the CrossRE file scored (test: CrossRE only)")
    parser.add_argument("--after-finetune", type=int, metavar="SEED", default=None,
                        help="score example weights on the kept default fine-tunes of this draw (runs/finetune-*-default-20-SEED)")
    parser.add_argument("--picks", action="store_true", help="with --after-finetune: the --classifier-share grid instead")
    parser.add_argument("--fused-kappas", default="", help="with --after-finetune: κ values (comma-separated) scored fused too")
    args = parser.parse_args()
    unknown = sorted(set(args.sets or ()) - set(SET_NAMES))
    if unknown:
        parser.error(f"--set {unknown[0]}: not a set ({', '.join(SET_NAMES)})")
    if args.after_finetune is not None:
        from . import RUNS_DIR

        if args.picks:
            after_finetune_picks(args.checkpoint, RUNS_DIR, args.after_finetune)
            return
        after_finetune(args.checkpoint, RUNS_DIR, args.after_finetune,
                       [float(k) for k in args.fused_kappas.split(",") if k])
        return
    ex = emma.Extractor.load(args.checkpoint)
    probes = {"alternatives": alternatives, "by_count": by_count,
              "classifier_share": lambda ex: classifier_share(ex, args.split), "calibrated": calibrated,
              "every_row": lambda ex: every_row(ex, args.sets), "agreement": agreement, "enriched": enriched}
    for flag, probe in probes.items():
        if getattr(args, flag):
            probe(ex)
            return
    descriptions = emma.read_descriptions(DATA_DIR / "crossre" / "descriptions.json")
    ex.set_relations(descriptions)
    names = list(descriptions)
    per_domain = {d: domain_scores(ex, names, d) for d in DOMAINS}
    mean = {rule: sum(sum(v[rule]) / len(v[rule]) for v in per_domain.values()) / len(DOMAINS) for rule in per_domain["ai"]}
    for rule, value in sorted(mean.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{rule:18s} {value:.1f}")
    for k in (1, 5, 10):
        print(f"K{k}: proto w0.5 {mean[f'K{k}-proto-w0.5']:.1f} · proto n/(n+5) {mean[f'K{k}-count']:.1f} · "
              f"lp {mean[f'K{k}-lp']:.1f} · loo {mean[f'K{k}-loo']:.1f}")
    print(f"{'K0':18s} {mean['K0']:.1f}")


if __name__ == "__main__":
    main()
