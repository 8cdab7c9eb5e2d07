"""Which triples extraction should keep of a sentence's pairs (probe): the threshold alone, or rules over the pairs too.

`emma.extract` predicts every ordered pair of a sentence's entities and keeps a pair whose score (the decision rule's
probability of its label) reaches the checkpoint's threshold. EMMA has no "no relation" class and its score is
relative to the other candidates, so the reversed pair of a right triple often gets the same relation at the same
score ("Marie Curie — date of birth — 1867" and "1867 — date of birth — Marie Curie"). This probe predicts every pair
of CrossRE (as `research.extraction` does: the same sample, all 16 types) once, caches what each rule needs, and
compares, each at its own best threshold on the mean F1 of the six domains:

- `threshold`: the score alone (what ships);
- `one direction`: of a pair's two directions with the same relation, only the higher score's triple;
- `one per pair`: of a pair of entities, only its best triple, whichever direction and relation;
- `and cosine`: the score and recall's cosine of the label each above their own threshold (a 2-D sweep);
- `oracle direction`: as `one direction`, but keeping the gold direction whenever one of the two is right: what a
  model that knew the direction would gain (a bound, not a rule).

It also counts how often the model tells the direction apart: over gold triples whose reversed pair is not gold
and gets the same relation, how often the gold direction scores higher; and on FewRel val_wiki (16 relations, 40
sentences each, head and tail swapped), how often the swapped sentence still gets its gold relation.

    python -m research.extraction_rules_probe [--split dev|test] [--checkpoint C]

Per-pair predictions are cached in runs/extraction_rules/ (one file per checkpoint, precision, split and domain).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import emma
from emma.data import by_relation

from . import DATA_DIR, RUNS_DIR
from .direction_probe import direction_scores
from .extraction import GRID, gold_triples, pairs, sample, sentences

DOMAINS = ("news", "ai", "science", "literature", "politics", "music")
COSINE_GRID = [round(0.2 + i * 0.02, 2) for i in range(21)]


def predict_domain(extractor: emma.Extractor, data: Path, split: str, domain: str, cache: Path) -> dict:
    """Every pair of the domain's sample, predicted once: {"gold": n, "pairs": [{sentence, head, tail, label, score,
    cosine, gold}]}."""
    if cache.is_file():
        return json.loads(cache.read_text())
    sents = sample(sentences(data / "crossre" / f"{domain}-{split}.jsonl"))
    todo, where = [], []
    for k, sent in enumerate(sents):
        got = pairs([sent])
        todo += got
        where += [k] * len(got)
    start = time.perf_counter()
    predictions = extractor.predict_batch([i for i, _ in todo], top_k=len(extractor.index), progress=True)
    rows = []
    for (inst, gold), k, p in zip(todo, where, predictions):
        cosine = dict(p.recall)[p.label]
        rows.append({"sentence": k, "head": list(inst.head), "tail": list(inst.tail), "label": p.label,
                     "score": round(p.score, 5), "cosine": round(cosine, 5), "gold": list(gold)})
    record = {"domain": domain, "split": split, "gold": gold_triples(sents), "sentences": len(sents),
              "wall_time_s": round(time.perf_counter() - start, 1), "pairs": rows}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(cache)
    return record


def kept(rows: list[dict], rule: str, threshold: float, cosine: float = -1.0) -> list[dict]:
    """The triples `rule` keeps of one domain's predicted pairs."""
    over = [r for r in rows if r["score"] >= threshold and r["cosine"] >= cosine]
    if rule in ("threshold", "and cosine"):
        return over
    if rule == "oracle direction":
        return _oracle_direction(over)
    key = (lambda r: (r["sentence"], tuple(sorted((tuple(r["head"]), tuple(r["tail"])))), r["label"])) \
        if rule == "one direction" else (lambda r: (r["sentence"], tuple(sorted((tuple(r["head"]), tuple(r["tail"]))))))
    best: dict = {}
    for r in over:
        k = key(r)
        if k not in best or (r["score"], r["cosine"]) > (best[k]["score"], best[k]["cosine"]):
            best[k] = r
    return list(best.values())


def _reverse_index(rows: list[dict]) -> dict:
    return {(r["sentence"], tuple(r["head"]), tuple(r["tail"])): r for r in rows}


def _oracle_direction(rows: list[dict]) -> list[dict]:
    """Of two directions of a pair with the same relation, the right one when either is right, else the higher score."""
    index, out = _reverse_index(rows), []
    for r in rows:
        rev = index.get((r["sentence"], tuple(r["tail"]), tuple(r["head"])))
        if rev is None or rev["label"] != r["label"]:
            out.append(r)
        elif r["label"] in r["gold"] or (rev["label"] not in rev["gold"]
                                         and (r["score"], r["cosine"]) > (rev["score"], rev["cosine"])):
            out.append(r)
    return out


def direction_counts(records: dict[str, dict]) -> dict:
    """Gold triples whose reversed pair is not gold but gets the same relation, and how often the gold direction has
    the higher score, and the higher cosine."""
    n = score = cosine = 0
    for rec in records.values():
        index = _reverse_index(rec["pairs"])
        for r in rec["pairs"]:
            rev = index.get((r["sentence"], tuple(r["tail"]), tuple(r["head"])))
            if not r["gold"] or rev is None or rev["gold"] or r["label"] not in r["gold"] or rev["label"] != r["label"]:
                continue
            n += 1
            score += r["score"] > rev["score"]
            cosine += r["cosine"] > rev["cosine"]
    return {"triples": n, "gold direction scores higher": score, "gold direction has the higher cosine": cosine}


def fewrel_swapped(checkpoint: str | None, precision: str, data: Path, per_relation: int = 40, seed: int = 0) -> dict:
    """FewRel val_wiki with its 16 relations in force: `research.direction_probe.direction_scores` of `per_relation`
    sentences each (drawn with `seed`)."""
    import random

    val = emma.read_instances(data / "fewrel" / "val_wiki.json")
    by = by_relation(val)
    rng = random.Random(seed)
    items = [i for r in sorted(by) for i in rng.sample(by[r], per_relation)]
    descriptions = emma.read_descriptions(data / "fewrel" / "relation_description" / "fewrel_relation_description.json")
    extractor = emma.Extractor.load(checkpoint, precision=precision)
    extractor.set_relations({r: descriptions[r] for r in sorted(by)})
    return {"sentences": len(items), **{k: round(v, 1) for k, v in direction_scores(extractor, items).items()}}


def prf(record: dict, triples: list[dict]) -> tuple[float, float, float]:
    right = sum(r["label"] in r["gold"] for r in triples)
    p = 100 * right / len(triples) if triples else 0.0
    r = 100 * right / record["gold"] if record["gold"] else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def evaluate(records: dict[str, dict], rule: str, threshold: float, cosine: float = -1.0) -> dict:
    per = {d: prf(rec, kept(rec["pairs"], rule, threshold, cosine)) for d, rec in records.items()}
    return {"rule": rule, "threshold": threshold, "cosine": cosine, "domains": per,
            "mean": tuple(statistics.mean(v[i] for v in per.values()) for i in range(3))}


def best(records: dict[str, dict], rule: str, thresholds=None) -> dict:
    cosines = COSINE_GRID if rule == "and cosine" else [-1.0]
    grid = thresholds if thresholds is not None else GRID[::2]
    return max((evaluate(records, rule, t, c) for t in grid for c in cosines), key=lambda e: e["mean"][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--thresholds", default=None,
                        help="comma-separated score thresholds to report instead of sweeping (e.g. the ones dev chose)")
    args = parser.parse_args()
    extractor = emma.Extractor.load(args.checkpoint, precision=args.precision)
    extractor.set_relations(emma.read_descriptions(DATA_DIR / "crossre" / "descriptions.json"))
    tag = emma.checkpoint_id(args.checkpoint).replace("@", "-") + "-" + extractor.precision
    records = {d: predict_domain(extractor, DATA_DIR, args.split, d,
                                 RUNS_DIR / "extraction_rules" / f"{tag}-{args.split}-{d}.json") for d in DOMAINS}
    print(f"{args.split}: " + ", ".join(f"{d} {len(r['pairs'])} pairs" for d, r in records.items()))
    shipped = extractor.config.extract_threshold
    print(f"| rule | threshold | cosine ≥ | {' | '.join(DOMAINS)} | mean P | mean R | mean F1 |")
    print("|---|---|---|" + "---|" * len(DOMAINS) + "---|---|---|")
    for rule in ("threshold", "one direction", "one per pair", "and cosine", "oracle direction"):
        fixed = [float(x) for x in args.thresholds.split(",")] if args.thresholds else None
        rows = [evaluate(records, rule, shipped)] if rule != "and cosine" else []
        rows.append(best(records, rule, fixed))
        for e in rows:
            cells = " | ".join(f"{e['domains'][d][2]:.1f}" for d in DOMAINS)
            cos = f"{e['cosine']:.2f}" if e["cosine"] > -1 else "–"
            print(f"| {rule} | {e['threshold']:.3f} | {cos} | {cells} | {e['mean'][0]:.1f} | {e['mean'][1]:.1f} | "
                  f"**{e['mean'][2]:.1f}** |")
    print("CrossRE direction:", direction_counts(records))
    print("FewRel val_wiki swapped:", fewrel_swapped(args.checkpoint, args.precision, DATA_DIR))


if __name__ == "__main__":
    main()
