"""Generalized zero-shot (issue 18): trained and new relations in force together, as in the workbench.

The workbench's default catalogue holds the 80 FewRel relations the shipped model was trained on;
a user adds relations of their own domain beside them. How often does a trained relation take a
sentence that belongs to a new one (the "seen-relation pull"), and does lowering the trained
relations' recall scores by a margin δ help? Candidates: the 80 FewRel relations (the catalogue's
texts) and the 16 CrossRE types (its descriptions), all at once. Seen: FewRel instances
(`seen_per_relation` each, from val_wiki and the reconstructed train file: the model saw these
relations, not necessarily these sentences). Unseen: CrossRE dev instances (`unseen_per_domain` per
domain). Reported as the GZSL literature does: accuracy on seen, on unseen, and their harmonic mean
H, per δ; δ is taken off the trained relations' recall scores (`RelationIndex.with_offsets`), which
the fused rule reads too. The δ chosen here is the checkpoint's `seen_margin`.

`whole_catalogue` adds the catalogue's other default relations (the Wiki-ZSL ones, which the model
was not trained on either) as candidates, as the workbench has them switched on: a sentence one of
them takes is counted wrong. A margin on the trained relations hands sentences to these too. Their
own sentences are scored as well where the data has some (`catalogue_sentences`: the Wiki-ZSL sample
holds 5 relations, of which the default catalogue has one untrained, `inception`).

`margin_on="catalogue"` takes δ off every catalogue relation in force (trained or not) rather than off
the trained ones alone: the user's own relations (here the CrossRE types) get the head start, and the
catalogue's untrained relations no longer gain the trained ones' sentences. This is how the workbench
applies `seen_margin`; with only the 80 FewRel relations besides the user's, the two are the same.

The classifier pulls too: trained on the FewRel relations, it prefers them among recall's candidates.
`classifier_margins` (γ) probe a second margin, on the classifier: a trained candidate's probability is
multiplied by e^−γ before the decision (research only; the shipped rule has no γ).

    python -m research gzsl --margins 0,0.05,0.1,0.15,0.2
    python -m research gzsl --margins 0.1,0.15 --classifier-margins 0.5,1,2,3,5
    python -m research gzsl --whole-catalogue --margin-on catalogue --margins 0,0.04,0.1
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from pathlib import Path

import torch

import emma
from emma.pipeline import decide

from .fewshot import CROSSRE_DOMAINS
from .jsonl import append
from .protocol import fewrel_pool

CROSSRE_PREFIX = "crossre:"  # CrossRE's "part of" must not be FewRel's "part of"
OTHER_PREFIX = "catalogue:"  # the catalogue's untrained relations, apart from FewRel's ids


def untrained_defaults(catalogue: Path) -> list[dict]:
    """The catalogue's entries switched on by default that no checkpoint was trained on (not FewRel's)."""
    return [e for e in json.loads(catalogue.read_text()) if e.get("source") != "FewRel" and e.get("default", True)]


def candidates(data: Path, catalogue: Path, whole_catalogue: bool = False) -> tuple[dict[str, str], set[str]]:
    """({name: text} of the 80 FewRel and 16 CrossRE relations (and, `whole_catalogue`, the catalogue's
    other default relations), the FewRel (trained) names)."""
    fewrel = {e["id"]: e["text"] for e in json.loads(catalogue.read_text()) if e.get("source") == "FewRel"}
    others = {OTHER_PREFIX + e["label"]: e["text"] for e in untrained_defaults(catalogue)} if whole_catalogue else {}
    crossre = {CROSSRE_PREFIX + k: v for k, v in emma.read_descriptions(data / "crossre" / "descriptions.json").items()}
    return {**fewrel, **others, **crossre}, set(fewrel)


WIKIZSL_SAMPLE = Path("wikizsl") / "partial" / "relationprompt_wiki_dev_5rel.jsonl.gz"


def catalogue_sentences(data: Path, catalogue: Path, per_relation: int, seed: int = 1234) -> list[emma.Instance]:
    """Wiki-ZSL sample sentences of the catalogue's untrained default relations, labelled as `candidates` names them."""
    names = {e["id"]: OTHER_PREFIX + e["label"] for e in untrained_defaults(catalogue)}
    path = data / WIKIZSL_SAMPLE
    if not path.is_file():
        return []
    found = [emma.Instance(i.tokens, i.head, i.tail, names[i.relation])
             for i in emma.read_instances(path, skip_invalid=True) if i.relation in names]
    return emma.cap_per_relation(found, per_relation, seed=seed)


def instances(data: Path, seen_names: set[str], seen_per_relation: int, unseen_per_domain: int, seed: int = 1234,
              split: str = "dev"):
    pool = fewrel_pool(data)
    seen = emma.cap_per_relation([i for i in pool if i.relation in seen_names], seen_per_relation, seed=seed)
    unseen = []
    for domain in CROSSRE_DOMAINS:
        dev = emma.read_instances(data / "crossre" / f"{domain}-{split}.jsonl")
        rng = random.Random(seed)
        picked = dev if len(dev) <= unseen_per_domain else rng.sample(dev, unseen_per_domain)
        unseen += [emma.Instance(i.tokens, i.head, i.tail, CROSSRE_PREFIX + i.relation) for i in picked]
    return seen, unseen


def accuracy(predictions, gold) -> float:
    return 100 * sum(p == g for p, g in zip(predictions, gold)) / max(1, len(gold))


def choose(prediction: emma.Prediction, rule: str, trained: set[str], gamma: float, temperature: float) -> str:
    """`prediction.choice(rule)`, with the trained candidates' classifier probabilities × e^−γ first."""
    if gamma == 0 or rule == "recall" or not prediction.reranked:
        return prediction.choice(rule)
    probs = [q * math.exp(-gamma) if c in trained else q for q, c in zip(prediction.probabilities, prediction.candidates)]
    cosines = dict(prediction.recall)
    return prediction.candidates[decide(probs, [cosines[c] for c in prediction.candidates], temperature, rule)[0]]


def run(checkpoint: str | None, data: Path, catalogue: Path, results: Path, margins: list[float],
        seen_per_relation: int, unseen_per_domain: int, split: str = "dev", classifier_margins: list[float] = (0.0,),
        whole_catalogue: bool = False, margin_on: str = "trained") -> list[dict]:
    """Score each margin δ (and classifier margin γ); `split`: the CrossRE files of the unseen sentences (dev
    chooses δ, test checks it); `whole_catalogue`, `margin_on` ("trained" or "catalogue"): see the module's docstring."""
    if margin_on not in ("trained", "catalogue"):
        raise ValueError(f"margin_on must be 'trained' or 'catalogue', not {margin_on!r}")
    extractor = emma.Extractor.load(checkpoint)
    relations, trained = candidates(data, catalogue, whole_catalogue)
    extractor.set_relations(relations, progress=True)
    seen, unseen = instances(data, trained, seen_per_relation, unseen_per_domain, split=split)
    own = catalogue_sentences(data, catalogue, unseen_per_domain) if whole_catalogue else []
    lowered = trained if margin_on == "trained" else {name for name in relations if not name.startswith(CROSSRE_PREFIX)}
    records = []
    for margin in margins:
        view = extractor.with_index(extractor.index.with_offsets({name: -margin for name in lowered}))
        start = time.perf_counter()
        preds = view.predict_batch(seen + unseen + own, top_k=2)
        wall = round(time.perf_counter() - start, 1)
        for gamma in classifier_margins:
            record = {"checkpoint": emma.checkpoint_id(extractor.checkpoint), "margin": margin,
                      "seen_instances": len(seen), "unseen_instances": len(unseen), "candidates": len(relations),
                      "crossre_split": split}
            if margin_on != "trained":
                record["margin_on"] = margin_on
            if own:
                record["catalogue_instances"] = len(own)
            if gamma:
                record["classifier_margin"] = gamma
            for rule in ("recall", "classifier", "fused"):
                labels = [choose(p, rule, trained, gamma, extractor.config.temperature) for p in preds]
                s = accuracy(labels[: len(seen)], [i.relation for i in seen])
                unseen_labels = labels[len(seen):len(seen) + len(unseen)]
                u = accuracy(unseen_labels, [i.relation for i in unseen])
                pulled = 100 * sum(label in trained for label in unseen_labels) / len(unseen)
                record[rule] = {"seen": round(s, 1), "unseen": round(u, 1), "H": round(2 * s * u / (s + u) if s + u else 0.0, 1),
                                "unseen_taken_by_trained": round(pulled, 1)}
                if whole_catalogue:
                    record[rule]["seen_taken_by_catalogue"] = round(
                        100 * sum(label.startswith(OTHER_PREFIX) for label in labels[: len(seen)]) / len(seen), 1)
                    record[rule]["unseen_taken_by_catalogue"] = round(
                        100 * sum(label.startswith(OTHER_PREFIX) for label in unseen_labels) / len(unseen), 1)
                if own:
                    record[rule]["catalogue_untrained"] = round(
                        accuracy(labels[len(seen) + len(unseen):], [i.relation for i in own]), 1)
            record["wall_time_s"] = wall
            record["budget"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, precision {extractor.precision}, no training"
            append(results, record)
            f = record["fused"]
            print(f"δ={margin} γ={gamma}: fused seen {f['seen']} unseen {f['unseen']} H {f['H']} "
                  f"(unseen taken by trained {f['unseen_taken_by_trained']} %)", flush=True)
            records.append(record)
    return records


def table(records: list[dict]) -> str:
    """The δ table (records without a classifier margin), then the γ table when any record has one."""
    # a setting measured twice: its last record (a rerun adds fields, never changes the setting)
    latest = {(r["checkpoint"], r.get("crossre_split", "dev"), r.get("candidates"), r.get("margin_on", "trained"), r["margin"],
               r.get("classifier_margin")): r for r in records}
    records = list(latest.values())
    by_gamma = [r for r in records if r.get("classifier_margin")]
    records = [r for r in records if not r.get("classifier_margin")]
    lines = ["| CrossRE split | candidates | δ taken off | δ | rule | seen acc. | unseen acc. | H | unseen taken by a trained relation | unseen taken by the catalogue's untrained relations | seen taken by them | acc. on their own sentences |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for rule in ("recall", "fused"):
            x = r[rule]
            unseen_other = f"{x['unseen_taken_by_catalogue']} %" if "unseen_taken_by_catalogue" in x else "—"
            other = f"{x['seen_taken_by_catalogue']} %" if "seen_taken_by_catalogue" in x else "—"
            own = f"{x['catalogue_untrained']} (n = {r['catalogue_instances']})" if "catalogue_untrained" in x else "—"
            on = "the catalogue's relations" if r.get("margin_on") == "catalogue" else "trained relations"
            lines.append(f"| {r.get('crossre_split', 'dev')} | {r.get('candidates', 96)} | {on} | {r['margin']} | {rule} | {x['seen']} | "
                         f"{x['unseen']} | **{x['H']}** | {x['unseen_taken_by_trained']} % | {unseen_other} | {other} | {own} |")
    if by_gamma:
        lines += ["", "| CrossRE split | δ | classifier margin γ | rule | seen acc. | unseen acc. | H | unseen taken by a trained relation |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in by_gamma:
            x = r["fused"]
            lines.append(f"| {r.get('crossre_split', 'dev')} | {r['margin']} | {r['classifier_margin']} | fused | {x['seen']} | "
                         f"{x['unseen']} | **{x['H']}** | {x['unseen_taken_by_trained']} % |")
    return "\n".join(lines)
