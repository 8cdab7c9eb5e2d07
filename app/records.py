"""Plain-data records of a prediction and of a feedback row, and the feedback exports.

A prediction is kept as JSON-able data (in the session, returned by /predict, stored with
feedback), so everything shown can be redrawn and every judgement reproduced without the model:
sentence, character and token spans, the full recall ranking, the k candidates with both scores
and the attention weights, the relation set in force, the checkpoint id and per-stage timings.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pandas as pd

import emma

from .storage import Store

JSON_RECALL_TOP = 20  # recall entries stored with each feedback row


def _part(prediction, name: str, which: int) -> float | None:
    """One of recall's two sources for `name` (0: description cosine, 1: examples' cosine), None when absent."""
    parts = prediction.recall_parts.get(name)
    value = parts[which] if parts else None
    return None if value is None else float(value)


def bracketed(tokens, head, tail) -> str:
    """A tokenized sentence as text with its entities in brackets: "[HEAD Apple] was founded by [TAIL Steve Jobs]"."""
    words = list(tokens)
    for (s, e), role in sorted(((tuple(head), "HEAD"), (tuple(tail), "TAIL")), reverse=True):
        words[s:e] = [f"[{role} {' '.join(words[s:e])}]"]
    return " ".join(words)


def prediction_record(sentence, head, tail, instance, prediction, relations, checkpoint, timings, warnings_,
                      n_examples: int = 0, level_share: float = 0.0) -> dict:
    """Everything about one prediction, as plain JSON-able data (kept in the session, stored with feedback).

    `n_examples`: how many of the owner's labelled examples (of relations in force) recall used; `level_share`: how
    much of the gap to the descriptions' level recall took off a mixed score (`emma.index.ExampleLevels`; 0 without
    levels)."""
    rank = {name: i + 1 for i, (name, _) in enumerate(prediction.recall)}
    scores = dict(prediction.recall)
    cls_rank = {}
    if prediction.reranked:
        order = sorted(range(len(prediction.candidates)), key=lambda i: -prediction.probabilities[i])
        cls_rank = {prediction.candidates[i]: r + 1 for r, i in enumerate(order)}
    fused = prediction.fused if prediction.reranked and prediction.fused else None
    deciding = prediction.deciding_scores or None  # the checkpoint's rule, as emma applied it
    detail = []
    for i, name in enumerate(prediction.candidates):
        detail.append({
            "relation": name,
            "recall_rank": rank[name],
            "recall_score": float(scores[name]),
            "classifier_rank": cls_rank.get(name),
            "probability": float(prediction.probabilities[i]) if prediction.reranked else None,
            "combined": float(fused[i]) if fused else None,  # classifier^share × recall, renormalised
            # The score the checkpoint's decision rule ranked by: one place that knows the rule.
            "deciding_score": float(deciding[i]) if deciding else None,
            "attention": prediction.attention.get(name, {"tokens": [], "head": [], "tail": []}),
            # Recall's two sources: the description's cosine and the examples' (None: no examples).
            "description_score": _part(prediction, name, 0),
            "example_score": _part(prediction, name, 1),
        })
    return {
        "id": uuid.uuid4().hex,  # what a repeated judgement of this prediction is recognised by
        "sentence": sentence,
        "head": list(head),
        "tail": list(tail),
        "head_text": sentence[head[0] : head[1]],
        "tail_text": sentence[tail[0] : tail[1]],
        "tokens": list(instance.tokens),
        "head_tokens": list(instance.head),
        "tail_tokens": list(instance.tail),
        "label": prediction.label,
        "score": float(prediction.score),
        "recall_label": prediction.recall_label,
        "reranked": bool(prediction.reranked),
        "decision": prediction.decision,
        # the power of the classifier's probability in "combined": below 1 when the candidates have examples
        "classifier_share": float(prediction.classifier_share),
        "note": prediction.note,
        "candidates": list(prediction.candidates),
        "candidates_detail": detail,
        "recall": [[name, float(s)] for name, s in prediction.recall],
        # {relation: [description cosine, example prototype cosine or None]} for every relation ranked
        "recall_parts": {name: [_part(prediction, name, 0), _part(prediction, name, 1)] for name, _ in prediction.recall},
        # {relation: added to its recall score after the mix}: the catalogue's relations, lowered beside the user's own
        "recall_offsets": {name: float(o) for name, o in prediction.recall_offsets.items()},
        # {candidate: [{tokens, head, tail, cosine}]}: its labelled sentences most like this one ("why")
        "examples": {name: [{"tokens": list(inst.tokens), "head": list(inst.head), "tail": list(inst.tail),
                             "cosine": float(cos)} for inst, cos in near]
                     for name, near in prediction.examples.items() if near},
        "n_examples": n_examples,
        "example_level_share": level_share,
        "n_relations": len(relations),
        "relations": dict(relations),
        "checkpoint": checkpoint,
        "timings_ms": {k: round(v, 2) for k, v in timings.items()},
        "warnings": list(warnings_),
    }


def public_record(record: dict) -> dict:
    """What /predict returns: the record without the (large) relation texts."""
    return {k: v for k, v in record.items() if k != "relations"}


def summary_text(record: dict) -> str:
    label = record["label"]
    if record["reranked"]:
        top = record["candidates_detail"]
        mine = next(c for c in top if c["relation"] == label)
        if record.get("decision") == "fused":
            text = (f"Predicted '{label}': classifier probability {mine['probability']:.2f}, "
                    f"{mine['combined']:.2f} combined with recall's confidence.")
            share = record.get("classifier_share", 1.0)
            if share < 1:
                text += (f" Your labelled examples of these candidates count in recall, so the classifier, which reads"
                         f" only descriptions, counted {share:.0%} as much as it does without them.")
            who = "classifier and recall together preferred"
        else:
            text = f"Predicted '{label}' with classifier probability {mine['probability']:.2f}."
            who = "the classifier preferred"
        if label != record["recall_label"]:
            text += f" Recall ranked it #{mine['recall_rank']}; {who} it over '{record['recall_label']}'."
        else:
            text += " Recall and classifier agree." if mine["classifier_rank"] == 1 else (
                " The classifier preferred another candidate, but not surely enough to overrule recall.")
    else:
        text = f"Predicted '{label}' by recall alone (cosine {record['score']:.3f}): {record['note']}."
    return text + f" Head: '{record['head_text']}', tail: '{record['tail_text']}'."


def dataset_label_text(record: dict, label: str) -> str:
    """How the prediction compares with `label`, the dataset's own relation for this pair (a built-in example's)."""
    if label == record["label"]:
        return f"The dataset labels this pair '{label}' too: the prediction is right."
    ranks = {name: i + 1 for i, (name, _) in enumerate(record["recall"])}
    if label in ranks:
        where = f"recall ranked it #{ranks[label]} of {len(ranks)}"
    elif label in record.get("relations", {}):
        where = f"below recall's top {len(ranks)}"
    else:
        where = "not among the relations in force"
    return f"The dataset labels this pair '{label}' ({where}): the prediction is wrong."


def feedback_row(record: dict, owner: str, verdict: str, label: str | None, label_text: str | None, note: str | None) -> dict:
    return {
        "owner": owner,
        "checkpoint": record["checkpoint"],
        "emma_version": emma.__version__,
        "sentence": record["sentence"],
        "head_start": record["head"][0],
        "head_end": record["head"][1],
        "tail_start": record["tail"][0],
        "tail_end": record["tail"][1],
        "head_text": record["head_text"],
        "tail_text": record["tail_text"],
        "tokens": json.dumps(record["tokens"], ensure_ascii=False),
        "head_tokens": json.dumps(record["head_tokens"]),
        "tail_tokens": json.dumps(record["tail_tokens"]),
        "predicted": record["label"],
        "score": record["score"],
        "recall_label": record["recall_label"],
        "reranked": int(record["reranked"]),
        "candidates": json.dumps([{k: v for k, v in c.items() if k != "attention"} for c in record["candidates_detail"]], ensure_ascii=False),
        "recall": json.dumps(record["recall"][:JSON_RECALL_TOP], ensure_ascii=False),
        "verdict": verdict,
        "user_label": label,
        "user_label_description": label_text,
        "predicted_description": record["relations"].get(record["label"]),
        "note": note,
    }


def write_feedback_exports(frame: pd.DataFrame, folder: Path, store: Store) -> list[Path]:
    """feedback.jsonl (rows with a known relation, FewRel-style), descriptions.json, feedback.csv.

    Each JSONL line carries FewRel's ``tokens``/``h``/``t`` fields plus ``head``/``tail``/``relation``,
    so `python -m emma train --data feedback.jsonl --descriptions descriptions.json` reads it.
    """
    jsonl, descs, csv_path = folder / "feedback.jsonl", folder / "descriptions.json", folder / "feedback.csv"
    descriptions: dict[str, str] = {}
    set_cache: dict[str, dict] = {}
    with open(jsonl, "w", encoding="utf-8") as f:
        for row in frame.sort_values("id").to_dict("records"):
            label = row["user_label"]
            if not isinstance(label, str) or not label:
                continue
            tokens = json.loads(row["tokens"])
            hs, he = json.loads(row["head_tokens"])
            ts, te = json.loads(row["tail_tokens"])
            f.write(json.dumps({
                "tokens": tokens,
                "h": [row["head_text"], "", [list(range(hs, he))]],
                "t": [row["tail_text"], "", [list(range(ts, te))]],
                "relation": label,
                "head": [hs, he],
                "tail": [ts, te],
                "feedback_number": int(row["number"]),  # the owner's own number, as the Feedback tab shows it
            }, ensure_ascii=False) + "\n")
            text = row["user_label_description"]
            if not isinstance(text, str) or not text:
                if row["relation_set_id"] not in set_cache:
                    set_cache[row["relation_set_id"]] = store.relation_set(row["relation_set_id"])
                text = set_cache[row["relation_set_id"]].get(label)
            if isinstance(text, str) and text:
                descriptions.setdefault(label, text)
    descs.write_text(json.dumps(descriptions, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    # Without the row id, shared by every user: "number" is the owner's own (with "owner", unique in an admin's export).
    spreadsheet_safe(frame.drop(columns=["id"])).to_csv(csv_path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return [jsonl, descs, csv_path]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula at the start of a cell


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would run as a formula prefixed with an apostrophe: a
    user's note or sentence, opened by an admin exporting everyone's feedback, must stay text."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
    return out

