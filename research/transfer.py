"""Transfer table (issue 18): a checkpoint zero-shot on text and relations unlike FewRel, per domain.

Each CrossRE domain's dev file is scored with all 16 coarse types as candidates (macro F1 as for
FewRel): recall only, the classifier's pick, and the fused rule, plus how often the gold type reaches
recall's top k. Beside it, each domain's untrained floor: the packaged all-MiniLM-L6-v2 with mean
pooling, the sentence followed by the two entity names matched against the descriptions. One JSON
line per (model, domain) in the results file; done rows are skipped.

    python -m research transfer --checkpoint checkpoints/emma-minilm
    python -m research transfer-table --output results/TRANSFER.md --metrics checkpoints/emma-minilm/metrics.json
"""

from __future__ import annotations

import statistics
from pathlib import Path

import emma

from .fewshot import CROSSRE_DOMAINS, load_sets
from .jsonl import append, read
from .protocol import untrained_recall

FLOOR = "untrained all-MiniLM-L6-v2 (mean pooling)"


def run(checkpoint: str | None, data: Path, results: Path, split: str = "dev", precision: str = "auto") -> None:
    """Score `checkpoint` (and, once, the untrained floor, in fp32) on every CrossRE domain's `split` file."""
    done = {(r["model"], r["set"], r["split"], r["precision"]) for r in read(results)}
    extractor = emma.Extractor.load(checkpoint, precision=precision)
    model = emma.checkpoint_id(checkpoint)
    for fs in load_sets(data, [f"crossre-{d}" for d in CROSSRE_DOMAINS], crossre_split=split):
        if not any(key[0] == FLOOR and key[1:3] == (fs.name, split) for key in done):
            floor = untrained_recall(fs.scored, fs.descriptions, with_entities=True)["f1"]
            append(results, {"model": FLOOR, "set": fs.name, "split": split, "precision": "fp32",
                             "recall_only": floor, "n_instances": len(fs.scored)})
        if (model, fs.name, split, extractor.precision) not in done:
            extractor.set_relations(fs.descriptions)
            report = emma.evaluate(extractor, fs.scored)
            append(results, {"model": model, "set": fs.name, "split": split, "precision": extractor.precision,
                             "recall_only": report["recall_only"]["f1"], "emma": report["emma"]["f1"],
                             "emma_fused": report["emma_fused"]["f1"], "decision": report["decision"],
                             "gold_in_top_k": report["top_k"]["gold_in_top_k"], "k": report["k"],
                             "n_instances": report["n_instances"]})
        print(f"{fs.name}: done", flush=True)


def rows(records: list[dict], split: str = "dev") -> dict[str, dict[str, dict]]:
    """{model: {set: record}} of one split."""
    out: dict[str, dict[str, dict]] = {}
    for r in records:
        if r["split"] == split:
            out.setdefault(r["model"], {})[r["set"]] = r
    return out


def table(records: list[dict], split: str = "dev") -> str:
    """Markdown: per domain the floor, then each model's recall / classifier / fused F1 and gold in top k."""
    by_model = rows(records, split)
    floor = by_model.pop(FLOOR, {})
    sets = [f"crossre-{d}" for d in CROSSRE_DOMAINS]
    lines = []
    for model, got in by_model.items():
        lines += [f"**{model}** on CrossRE {split} (all 16 types as candidates; macro F1)", "",
                  "| domain | untrained floor | recall only | EMMA (classifier) | fused (shipped rule) | gold in recall's top k |",
                  "|---|---|---|---|---|---|"]
        for s in sets:
            if s in got:
                r = got[s]
                base = f"{floor[s]['recall_only']:.1f}" if s in floor else "—"
                lines.append(f"| {s[len('crossre-'):]} | {base} | {r['recall_only']:.1f} | " + _classifier_cells(r))
        if all(s in got for s in sets):
            means = {key: statistics.mean(got[s][key] for s in sets) if all(got[s][key] is not None for s in sets) else None
                     for key in ("recall_only", "emma", "emma_fused", "gold_in_top_k")}
            base = f"{statistics.mean(floor[s]['recall_only'] for s in sets):.1f}" if all(s in floor for s in sets) else "—"
            lines.append(f"| **mean** | {base} | {means['recall_only']:.1f} | " + _classifier_cells(means))
        lines.append("")
    return "\n".join(lines).rstrip()


def _classifier_cells(r: dict) -> str:
    """The classifier, fused and top-k cells; a model without classifier (recall decides) has none."""
    if r["gold_in_top_k"] is None:
        return "— (no classifier) | — | — |"
    return f"{r['emma']:.1f} | {r['emma_fused']:.1f} | {r['gold_in_top_k']:.0f} % |"


def metrics(records: list[dict], model: str, split: str = "dev") -> dict:
    """The transfer rows of `model` for a checkpoint's metrics.json: {domain: {floor, recall_only, emma, emma_fused}}."""
    by_model = rows(records, split)
    floor, got = by_model.get(FLOOR, {}), by_model.get(model, {})
    return {s[len("crossre-"):]: {"untrained_floor": floor.get(s, {}).get("recall_only"),
                                  **{k: got[s][k] for k in ("recall_only", "emma", "emma_fused", "gold_in_top_k")}}
            for s in got}
