"""Transfer without training (issue 18): four ways to score CrossRE better at prediction time, probed.

    borrowed: the larger model's recall (checkpoints/emma-mpnet, no classifier of its own) proposes the k
        candidates, the default checkpoint's classifier reranks them (on its own tokenization of the
        sentence) and the fused rule decides, with the larger model's cosines.
    forms: each relation scored by the mean cosine over several forms of its description ("name:
        description" as given, the name alone, the description alone), recall only.
    soup: the weights of models trained from the same base with the same recipe on different relations
        (FewRel m = 15 splits `ori`, `40`, `41`: the transfer grid's runs) averaged into one model, recall
        only. Weight averages of fine-tunes are known to travel better than each; no extra latency.
    centering: on text unlike the training data a few relations win for most sentences (hubs). Each
        relation's recall score is lowered by `strength` × how far its mean cosine over the domain's own
        unlabelled sentences (its `train` file, labels unused) lies above the mean of all relations
        (`RelationIndex.with_offsets`, which the fused rule reads too); strength 0 is the model as shipped.

Per CrossRE domain (dev, all 16 types; borrowed and forms also on FewRel m = 15 `ori`'s test relations,
which the soup's `40`/`41` members were trained on); macro F1, one JSON line per (probe, model, set) in
results/inference_probes.jsonl. About 15 minutes on 2 CPU threads for the first two, 3 per soup.

    python -m research.inference_probes borrowed forms
    python -m research.inference_probes table          # markdown of every record, per probe
    python -m research.inference_probes soup --members checkpoints/emma-mpnet,runs/transfer-grid/mpnet+adapters-r16+forms_n100_recall_s42_m15-40,runs/transfer-grid/mpnet+adapters-r16+forms_n100_recall_s42_m15-41
    python -m research.inference_probes centering      # both checkpoints, about 20 minutes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import emma
from emma.evaluate import macro_prf
from emma.features import encode_instances
from emma.pipeline import decide

from . import DATA_DIR, REPO_ROOT, RESULTS_DIR
from .fewshot import CROSSRE_DOMAINS
from .finetune import fewrel_check
from .transfer_grid import name_only

RESULTS = RESULTS_DIR / "inference_probes.jsonl"
LARGE, DEFAULT = REPO_ROOT / "checkpoints" / "emma-mpnet", REPO_ROOT / "checkpoints" / "emma-minilm"


def scored_sets(data: Path, with_fewrel: bool) -> list[tuple[str, list[emma.Instance], dict[str, str]]]:
    """(name, instances, descriptions) of every CrossRE domain's dev file, then (`with_fewrel`) FewRel m = 15 `ori` test."""
    full = emma.read_descriptions(data / "crossre" / "descriptions.json")
    sets = [(f"crossre-{d}", emma.read_instances(data / "crossre" / f"{d}-dev.jsonl"), full) for d in CROSSRE_DOMAINS]
    if with_fewrel:
        fewrel, descriptions = fewrel_check(data, 200, "ori")
        sets.append(("fewrel-m15-ori", fewrel, descriptions))
    return sets


def borrowed(recall_model: emma.Extractor, classifier_model: emma.Extractor, instances, descriptions) -> dict:
    """Macro F1 of recall alone, the borrowed classifier alone and the fused rule; gold in recall's top k."""
    k = classifier_model.config.k
    recall_model.set_relations(descriptions)
    classifier_model.set_relations(descriptions)
    preds = recall_model.predict_batch(instances, top_k=k, rerank=False)
    ids = encode_instances(classifier_model.tokenizer, instances, classifier_model.config.max_length).ids
    row = {name: j for j, name in enumerate(classifier_model.index.names)}
    top = [[name for name, _ in p.recall[:k]] for p in preds]
    probs = []
    for s in range(0, len(ids), 64):
        probs += classifier_model.rerank(ids[s : s + 64], [[row[n] for n in t] for t in top[s : s + 64]])
    gold, temperature = [i.relation for i in instances], classifier_model.config.temperature

    def picks(rule: str) -> list[str]:
        return [t[decide(pr, [c for _, c in p.recall[:k]], temperature, rule)[0]] for t, pr, p in zip(top, probs, preds)]

    return {"recall_only": macro_prf(gold, [t[0] for t in top])["f1"], "classifier": macro_prf(gold, picks("classifier"))["f1"],
            "fused": macro_prf(gold, picks("fused"))["f1"],
            "gold_in_top_k": 100 * sum(g in t for g, t in zip(gold, top)) / len(gold), "k": k}


def description_forms(descriptions: dict[str, str]) -> dict[str, dict[str, str]]:
    """{form: descriptions}: as given ("name: description"), the name alone, the description alone."""
    return {"full": descriptions, "name": {r: name_only(t) for r, t in descriptions.items()},
            "body": {r: t.split(":", 1)[-1].strip() for r, t in descriptions.items()}}


FORM_MIXES = {"full": ("full",), "name": ("name",), "body": ("body",), "full+name": ("full", "name"),
              "full+body": ("full", "body"), "all three": ("full", "name", "body")}


def forms(model: emma.Extractor, instances, descriptions) -> dict:
    """Recall-only macro F1 of each mix of forms (a relation's score: its mean cosine over the mix)."""
    cosines = {}
    for form, texts in description_forms(descriptions).items():
        model.set_relations(texts)
        cosines[form] = [dict(p.recall) for p in model.predict_batch(instances, top_k=None, rerank=False)]
    gold, relations = [i.relation for i in instances], list(descriptions)
    return {mix: macro_prf(gold, [max(relations, key=lambda r: sum(cosines[f][i][r] for f in used))
                                  for i in range(len(instances))])["f1"]
            for mix, used in FORM_MIXES.items()}


def soup(members: list[emma.Extractor]) -> emma.Extractor:
    """The first member with every floating-point weight replaced by the members' mean."""
    states = [m.model.state_dict() for m in members]
    mean = {name: (sum(s[name].float() for s in states) / len(states)).to(t.dtype) if t.is_floating_point() else t
            for name, t in states[0].items()}
    members[0].model.load_state_dict(mean)
    return members[0]


CENTERING_STRENGTHS = (0.0, 0.5, 1.0)


def centering_offsets(model: emma.Extractor, corpus) -> dict[str, float]:
    """{relation: −(its mean recall cosine over `corpus` − the mean over all relations)}, for the relations in force."""
    relations = model.index.names
    totals = dict.fromkeys(relations, 0.0)
    for p in model.predict_batch(corpus, top_k=None, rerank=False):
        for name, cosine in p.recall:
            totals[name] += cosine
    means = {r: totals[r] / len(corpus) for r in relations}
    overall = sum(means.values()) / len(means)
    return {r: overall - means[r] for r in relations}


def centering(model: emma.Extractor, instances, descriptions, corpus) -> dict:
    """Recall-only (and, with a classifier, fused) macro F1 at each of CENTERING_STRENGTHS."""
    model.set_relations(descriptions)
    plain, out = model.index, {}
    unit = centering_offsets(model, corpus)
    try:
        for strength in CENTERING_STRENGTHS:
            model.index = plain.with_offsets({r: strength * o for r, o in unit.items()})
            report = emma.evaluate(model, instances)
            out[f"recall {strength:g}"] = report["recall_only"]["f1"]
            if model.model.classifier is not None:
                out[f"fused {strength:g}"] = report["emma_fused"]["f1"]
    finally:
        model.index = plain
    return out


def crossre_recall(model: emma.Extractor, instances, descriptions) -> dict:
    model.set_relations(descriptions)
    return {"recall_only": emma.evaluate(model, instances)["recall_only"]["f1"]}


def _record(results: Path, probe: str, model: str, name: str, instances, scores) -> None:
    t0 = time.perf_counter()
    record = {"probe": probe, "model": model, "set": name, "n": len(instances),
              **{key: round(v, 2) for key, v in scores().items()}, "wall_time_s": round(time.perf_counter() - t0, 1)}
    with results.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(record, flush=True)


def table(records: list[dict]) -> str:
    """Markdown: one table per (probe, model), a row per scored set, a column per score, and the CrossRE mean."""
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["probe"], r["model"]), []).append(r)
    for (probe, model), rows in groups.items():
        rows = list({r["set"]: r for r in rows}.values())  # a set scored twice: its last record
        columns = [k for k in rows[0] if k not in ("probe", "model", "set", "n", "k", "wall_time_s")]
        out += [f"### {probe}: {model}", "", "| set | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        out += [f"| {r['set']} | " + " | ".join(f"{r[c]:g}" for c in columns) + " |" for r in rows]
        crossre = [r for r in rows if r["set"].startswith("crossre-")]
        if len(crossre) == len(CROSSRE_DOMAINS):
            out.append("| **CrossRE mean** | " + " | ".join(f"**{sum(r[c] for r in crossre) / len(crossre):.2f}**" for c in columns) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m research.inference_probes", description=__doc__.split("\n")[0])
    parser.add_argument("probes", nargs="+", choices=["borrowed", "forms", "soup", "centering", "table"])
    parser.add_argument("--members", default="", help="soup: checkpoint folders, comma-separated")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if "table" in args.probes:
        print(table([json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]))
        return
    torch.set_num_threads(2)
    if "borrowed" in args.probes or "forms" in args.probes:
        large, small = emma.Extractor.load(LARGE), emma.Extractor.load(DEFAULT)
        for name, instances, descriptions in scored_sets(DATA_DIR, with_fewrel=True):
            if "borrowed" in args.probes:
                _record(args.results, "borrowed classifier", emma.checkpoint_id(str(LARGE)), name, instances,
                        lambda: borrowed(large, small, instances, descriptions))
            if "forms" in args.probes:
                _record(args.results, "description forms", emma.checkpoint_id(str(LARGE)), name, instances,
                        lambda: forms(large, instances, descriptions))
    if "centering" in args.probes:
        for folder in (DEFAULT, LARGE):
            model = emma.Extractor.load(folder)
            for name, instances, descriptions in scored_sets(DATA_DIR, with_fewrel=False):
                corpus = emma.read_instances(DATA_DIR / "crossre" / f"{name.removeprefix('crossre-')}-train.jsonl")
                _record(args.results, "centering", emma.checkpoint_id(str(folder)), name, instances,
                        lambda: centering(model, instances, descriptions, corpus))
    if "soup" in args.probes:
        folders = [f for f in args.members.split(",") if f]
        if len(folders) < 2:
            parser.error("soup needs --members with at least two checkpoint folders")
        model = soup([emma.Extractor.load(f) for f in folders])
        label = " + ".join(emma.checkpoint_id(f) for f in folders)
        for name, instances, descriptions in scored_sets(DATA_DIR, with_fewrel=False):  # FewRel m = 15 trained two members
            _record(args.results, "soup", label, name, instances, lambda: crossre_recall(model, instances, descriptions))


if __name__ == "__main__":
    main()
