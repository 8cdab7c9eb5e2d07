"""Extraction threshold (issue 17): how well "every pair of a sentence, below a threshold no relation" does.

`Extractor.extract` predicts every ordered pair of entities in a sentence and keeps a pair's relation
only when its score under the checkpoint's decision rule reaches a threshold. This measures that
threshold on CrossRE dev, all 16 types as candidates. In each sentence the annotated entities are the
spans that take part in some relation (the converted files keep relations only); every ordered pair
of two non-overlapping ones is predicted, the pairs carrying a relation are the positives and the
others negatives (some of those are the dataset's dropped `related-to` pairs, which no description
states). As in extraction, a sentence pairs at most its first `MAX_ENTITIES_PER_SENTENCE` entities.

Extraction scores triples: a predicted (head, tail, relation) is right when the gold pair has that
relation; P = right / predicted, R = right / gold triples (a pair with two gold relations can get
only one right), F1 per domain. The threshold is swept over a grid and the one with the best mean
F1 over the six domains is chosen; the recall cosine of the top relation is swept too, as the
signal the rule could have used instead.

Per-pair scores are kept in runs/extraction/ (one file per domain and checkpoint), so the sweep and
the figures are redone without predicting again.

    python -m research extraction --checkpoint checkpoints/emma-minilm
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

import emma
from emma.extract import MAX_ENTITIES_PER_SENTENCE

from . import write_config_value

MAX_PAIRS_PER_DOMAIN = 4000
GRID = [round(i * 0.005, 3) for i in range(201)]
SIGNALS = ("score", "recall")  # the decision rule's score of the label; recall's top-1 cosine


def sentences(path: Path) -> list[dict]:
    """CrossRE relation lines grouped by sentence: {"tokens", "entities": [(s, e)], "gold": {(head, tail): {relation}}}."""
    grouped: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        key = (r["doc"], tuple(r["tokens"]))
        sent = grouped.setdefault(key, {"tokens": tuple(r["tokens"]), "entities": [], "gold": defaultdict(set)})
        for span in (tuple(r["head"]), tuple(r["tail"])):
            if span not in sent["entities"]:
                sent["entities"].append(span)
        sent["gold"][(tuple(r["head"]), tuple(r["tail"]))].add(r["relation"])
    for sent in grouped.values():
        sent["entities"] = sorted(sent["entities"])[:MAX_ENTITIES_PER_SENTENCE]
    return list(grouped.values())


def sample(sents: list[dict], budget: int = MAX_PAIRS_PER_DOMAIN, seed: int = 0) -> list[dict]:
    """Sentences drawn at random (seeded) until their pairs would pass `budget`: the whole domain when it is smaller.

    A 2-core budget: CrossRE dev has about 50,000 pairs, 100 ms each on the shared machine.
    """
    order = list(range(len(sents)))
    random.Random(seed).shuffle(order)
    kept, n = [], 0
    for i in order:
        m = len(pairs([sents[i]]))
        if n + m > budget:
            continue
        kept.append(sents[i])
        n += m
    return kept


def pairs(sents: list[dict]) -> list[tuple[emma.Instance, tuple[str, ...]]]:
    """Every ordered pair of non-overlapping entities per sentence, with its gold relations (empty: a negative)."""
    out = []
    for sent in sents:
        for h in sent["entities"]:
            for t in sent["entities"]:
                if h != t and not emma.spans_overlap(h, t):
                    out.append((emma.Instance(sent["tokens"], h, t), tuple(sorted(sent["gold"].get((h, t), ())))))
    return out


def gold_triples(sents: list[dict]) -> int:
    """Gold (head, tail, relation) triples of the pairs that are predicted (non-overlapping, within the entity cap)."""
    return sum(len(rels) for s in sents for (h, t), rels in s["gold"].items()
               if h in s["entities"] and t in s["entities"] and not emma.spans_overlap(h, t))


def score_domain(extractor: emma.Extractor, data: Path, domain: str, cache: Path) -> dict:
    """Predict every pair of one domain (or read the cache); returns {"gold": n, "pairs": [[label, score, cosine, [gold…]]]}."""
    if cache.is_file():
        return json.loads(cache.read_text())
    sents = sample(sentences(data / "crossre" / f"{domain}-dev.jsonl"))
    todo = pairs(sents)
    start = time.perf_counter()
    predictions = extractor.predict_batch([i for i, _ in todo], top_k=1, progress=True)
    record = {"domain": domain, "gold": gold_triples(sents), "sentences": len(sents),
              "wall_time_s": round(time.perf_counter() - start, 1),
              "pairs": [[p.label, round(p.score, 5), round(p.recall[0][1], 5), list(g)] for p, (_, g) in zip(predictions, todo)]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(cache)
    return record


def prf(record: dict, threshold: float, signal: str = "score") -> dict:
    """Extraction P / R / F1 (percent) of one domain's pairs at `threshold` on `signal`."""
    column = 1 if signal == "score" else 2
    predicted = right = 0
    for row in record["pairs"]:
        if row[column] >= threshold:
            predicted += 1
            right += row[0] in row[3]
    p = 100 * right / predicted if predicted else 0.0
    r = 100 * right / record["gold"] if record["gold"] else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "predicted": predicted, "right": right}


def sweep(records: dict[str, dict], signal: str = "score") -> tuple[float, list[dict]]:
    """(threshold with the best mean F1 over the domains, one row per grid threshold with each domain's P/R/F1)."""
    rows = []
    for th in GRID:
        per = {d: prf(rec, th, signal) for d, rec in records.items()}
        rows.append({"signal": signal, "threshold": th, "mean_f1": statistics.mean(v["f1"] for v in per.values()), "domains": per})
    best = max(rows, key=lambda r: (r["mean_f1"], -r["threshold"]))
    return best["threshold"], rows


def signal_name(extractor: emma.Extractor) -> str:
    """What the threshold is compared with: the decision rule's score of the predicted relation."""
    if extractor.model.classifier is None:
        return "recall cosine; this checkpoint has no classifier"
    return "fused probability" if extractor.config.decision == "fused" else "classifier probability"


def run(checkpoint: str | None, data: Path, results: Path, cache_dir: Path, precision: str = "auto",
        markdown: Path | None = None, figure: Path | None = None, set_config: bool = False, *, command: str) -> dict:
    """Score every domain, sweep, write the raw figures (jsonl), the table (markdown) and the PR curve.

    `command`: the command line that ran this, quoted in the table."""
    start = time.perf_counter()
    extractor = emma.Extractor.load(checkpoint, precision=precision)
    extractor.set_relations(emma.read_descriptions(data / "crossre" / "descriptions.json"))
    model = emma.checkpoint_id(checkpoint)
    tag = model.replace("@", "-") + "-" + extractor.precision
    records = {}
    for domain in ("news", "ai", "science", "literature", "politics", "music"):
        records[domain] = score_domain(extractor, data, domain, cache_dir / f"{tag}-{domain}.json")
        print(f"{domain}: {len(records[domain]['pairs'])} pairs", flush=True)
    chosen, rows = sweep(records, "score")
    chosen_recall, rows_recall = sweep(records, "recall")
    budget = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                         f"device {extractor.device}, precision {extractor.precision}",
              "predict_wall_time_s": round(sum(r.get("wall_time_s", 0) for r in records.values()), 1),
              "total_wall_time_s": round(time.perf_counter() - start, 1)}
    summary = {"kind": "summary", "model": model, "precision": extractor.precision, "signal": signal_name(extractor),
               "threshold": chosen,
               "threshold_recall_cosine": chosen_recall,
               "at_threshold": {d: prf(r, chosen) for d, r in records.items()},
               "no_threshold": {d: prf(r, 0.0) for d, r in records.items()},
               "recall_cosine_at_its_threshold": {d: prf(r, chosen_recall, "recall") for d, r in records.items()},
               "pairs": {d: len(r["pairs"]) for d, r in records.items()},
               "positives": {d: sum(bool(p[3]) for p in r["pairs"]) for d, r in records.items()},
               "gold_triples": {d: r["gold"] for d, r in records.items()},
               "command": command,
               "results": results.name,
               "budget": budget}
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "w") as f:  # one run's figures: rewritten whole, not appended
        f.write(json.dumps(summary) + "\n")
        for row in rows + rows_recall:
            f.write(json.dumps({"kind": "sweep", "model": model, **row}) + "\n")
    if markdown:
        markdown.write_text(table(summary, figure) + "\n")
    if figure:
        pr_figure(rows, chosen, figure)
    if set_config:
        write_config_value(checkpoint, "extract_threshold", chosen)
    return summary


def table(summary: dict, figure: Path | None = None) -> str:
    """Markdown: per domain P / R / F1 at the chosen threshold, beside no threshold and the recall-cosine signal."""
    at, none, cos = summary["at_threshold"], summary["no_threshold"], summary["recall_cosine_at_its_threshold"]
    domains = list(at)
    lines = [
        "# Extraction: every pair of a sentence, \"no relation\" below a threshold",
        "",
        f"Model `{summary['model']}` ({summary['precision']}), CrossRE dev, all 16 types as candidates. Every ordered pair of "
        "the annotated entities of a sentence is predicted; pairs with a relation are the positives, the others negatives. "
        "A triple is right when the gold pair has that relation. The threshold is on the decision rule's score of the "
        f"predicted relation ({summary['signal']}), chosen for the best mean F1: "
        f"**{summary['threshold']:.3f}**.",
        "",
        "| domain | pairs | positives | P | R | F1 | F1, no threshold | F1, recall cosine ≥ "
        f"{summary['threshold_recall_cosine']:.3f} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in domains:
        lines.append(f"| {d} | {summary['pairs'][d]} | {summary['positives'][d]} | {at[d]['precision']:.1f} | "
                     f"{at[d]['recall']:.1f} | {at[d]['f1']:.1f} | {none[d]['f1']:.1f} | {cos[d]['f1']:.1f} |")
    mean = lambda src, key: statistics.mean(src[d][key] for d in domains)  # noqa: E731
    lines.append(f"| **mean** | | | {mean(at, 'precision'):.1f} | {mean(at, 'recall'):.1f} | {mean(at, 'f1'):.1f} | "
                 f"{mean(none, 'f1'):.1f} | {mean(cos, 'f1'):.1f} |")
    lines += ["", f"Domains with more than {MAX_PAIRS_PER_DOMAIN} pairs are scored on a seeded random sample of their sentences "
                  f"(at most {MAX_ENTITIES_PER_SENTENCE} entities paired per sentence, as in extraction). The last column is the "
                  "other signal the rule could use, recall's top-1 cosine, at its own best threshold.",
              "", f"Command: `{summary['command']}`. Budget: {summary['budget']['machine']}; predicting every pair took "
                  f"{summary['budget']['predict_wall_time_s']:.0f} s (the per-pair scores are cached in runs/extraction/, so a "
                  f"rerun only sweeps: {summary['budget']['total_wall_time_s']:.0f} s). Raw figures: "
                  f"`results/{summary['results']}` "
                  "(a summary line, then P/R/F1 per domain at every threshold of the grid, for both signals)."]
    if figure:
        lines += ["", f"![Precision–recall curve per domain](./{figure.with_suffix('.png').name})"]
    return "\n".join(lines)


def pr_figure(rows: list[dict], chosen: float, path: Path) -> None:
    """Precision against recall per domain as the threshold moves (plotly): HTML and a PNG beside it."""
    import plotly.graph_objects as go

    from plotly.colors import qualitative

    fig = go.Figure()
    for domain, colour in zip(rows[0]["domains"], qualitative.Plotly):
        points = [(r["domains"][domain]["recall"], r["domains"][domain]["precision"], r["threshold"]) for r in rows
                  if r["domains"][domain]["predicted"]]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", name=domain,
                                 line=dict(color=colour), customdata=[p[2] for p in points],
                                 hovertemplate="threshold %{customdata}<br>R %{x:.1f} P %{y:.1f}"))
        at = next(r for r in rows if r["threshold"] == chosen)["domains"][domain]
        fig.add_trace(go.Scatter(x=[at["recall"]], y=[at["precision"]], mode="markers", showlegend=False,
                                 marker=dict(size=11, symbol="x", color=colour)))
    fig.update_layout(title=f"Extraction on CrossRE dev: precision vs recall as the threshold moves (× = {chosen:.3f})",
                      xaxis_title="recall (%)", yaxis_title="precision (%)", width=900, height=600, template="plotly_white")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path.with_suffix(".html")), include_plotlyjs="cdn")
    fig.write_image(str(path.with_suffix(".png")))


# A 5-sentence paragraph whose suggested entities make about 20 ordered pairs within sentences.
LATENCY_PARAGRAPH = ("Marie Curie was born in Warsaw, then part of the Russian Empire. She moved to Paris to study at the "
                     "University of Paris. In 1895 she married Pierre Curie, a French physicist. Together with Henri "
                     "Becquerel they won the Nobel Prize in Physics in 1903. Their daughter Irène Joliot-Curie later worked "
                     "at the Radium Institute.")


def latency(checkpoint: str | None, threads: int = 2, precision: str = "auto", repeats: int = 10) -> dict:
    """Wall time of `Extractor.extract` on LATENCY_PARAGRAPH with the workbench's default relations (entities suggested)."""
    from . import REPO_ROOT

    torch.set_num_threads(threads)
    extractor = emma.Extractor.load(checkpoint, precision=precision)
    catalogue = json.loads((REPO_ROOT / "assets" / "relations.json").read_text())
    extractor.set_relations({e["label"]: e["text"] for e in catalogue if e.get("default", True)})
    first = extractor.extract(LATENCY_PARAGRAPH)  # loads the NER, warms the model up
    runs = [extractor.extract(LATENCY_PARAGRAPH).timings_ms for _ in range(repeats)]
    total = sorted(r["total"] for r in runs)
    return {"sentences": len(first.sentences), "entities": len(first.entities), "pairs": len(first.pairs),
            "relations": len(extractor.index), "triples": len(first.triples), "threshold": first.threshold,
            "median_ms": round(statistics.median(total), 1), "min_ms": round(total[0], 1), "max_ms": round(total[-1], 1),
            "median_entities_ms": round(statistics.median(r["entities"] for r in runs), 1),
            "median_predict_ms": round(statistics.median(r["predict"] for r in runs), 1),
            "threads": threads, "precision": extractor.precision, "repeats": repeats,
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"}
