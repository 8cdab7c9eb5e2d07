"""Figures and tables of one prediction (the "explain" half of the workbench).

EMMA predicts in two stages (paper section 3): *recall* compares the sentence vector with every
description vector (cosine) and keeps the top k; the *classifier* reads the sentence with each of
those k descriptions and picks one. Its description vectors pool the description's word pieces
with two attention heads, one per virtual entity (head / tail, section 3.2); the heatmap shows
those weights. With labelled examples, a relation's recall score mixes its description's cosine
with its examples' (`emma.index`): the recall chart marks both, and `why_html` lists the labelled
sentences nearest to this one. Every function takes the plain `dict` stored in the session (see
`records.prediction_record`), so figures can be redrawn without the model. The charts are plain HTML
and CSS rather than plotly figures: a plotting library took half a second of the browser's time per
prediction, more than the model.

Relation names and description tokens are user text: they are escaped before use.
"""

from __future__ import annotations

import html

import pandas as pd

from emma.index import EXAMPLES_COUNTED, EXAMPLES_LIKE_DESCRIPTION

RECALL_BARS = 15
CANDIDATE_COLOR = "#e8710a"
OTHER_COLOR = "#9aa0a6"
DESCRIPTION_COLOR = "#1a73e8"
EXAMPLE_COLOR = "#188038"
HEAD_COLOR, TAIL_COLOR = "#f4a261", "#2a9d8f"  # as the marked sentence


def _t(text: str, limit: int = 60) -> str:
    """User text shortened to `limit` characters and escaped, for element content and quoted attributes alike."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def first_source(record: dict, name: str) -> str:
    """What recall's first score of relation `name` compares the sentence with: its description, or, for a relation
    known by its name and examples alone (its text is its name), that name."""
    return "name" if record.get("relations", {}).get(name) == name else "description"


def recall_html(record: dict, bars: int = RECALL_BARS) -> str:
    """Horizontal bars of the top recall scores; the k candidates sent to the classifier in orange.

    Plain HTML (no plotting library): the page draws it in a few milliseconds. The axis is zoomed to
    the scores shown, since a trained model's cosines often sit close together. When a shown relation
    has labelled examples, two marks on its row show recall's sources apart: the description's cosine
    (a bar) and the examples' (a diamond); the bar itself is their mix, lowered toward the descriptions'
    level (`emma.index.ExampleLevels`)."""
    recall = record["recall"][: max(bars, len(record["candidates"]))]
    candidates = set(record["candidates"])
    parts = record.get("recall_parts") or {}
    with_examples = {n: parts[n] for n, _ in recall if n in parts and parts[n][1] is not None}
    scores = [s for _, s in recall] + [v for d, e in with_examples.values() for v in (d, e) if v is not None]
    low, high = min(scores), max(scores)
    pad = max(0.02, 0.15 * (high - low))
    low, high = max(-1.0, low - pad), min(1.0, high + pad)
    at = lambda v: f"{100 * (v - low) / (high - low):.1f}%"  # noqa: E731
    rows = []
    offsets = record.get("recall_offsets") or {}
    for i, (name, score) in enumerate(recall):
        color = CANDIDATE_COLOR if name in candidates else OTHER_COLOR
        star = (" ★" if name == record["label"] else "") + (" ↓" if offsets.get(name) else "")
        marks = ""
        if name in with_examples:
            desc, ex = with_examples[name]
            marks = (f"<span class='emma-mark emma-desc' style='left:{at(desc)};background:{DESCRIPTION_COLOR}' "
                     f"title='{first_source(record, name)} cosine {desc:.3f}'></span>"
                     f"<span class='emma-mark emma-ex' style='left:{at(ex)};background:{EXAMPLE_COLOR}' "
                     f"title=\"examples' cosine {ex:.3f}\"></span>")
        rows.append(f"<div class='emma-row' title='{_t(name, 200)}: {score:.3f}'>"
                    f"<span class='emma-name'>{i + 1}. {_t(name)}{star}</span>"
                    f"<span class='emma-track'><span class='emma-bar' style='width:{at(score)};background:{color}'></span>{marks}</span>"
                    f"<span class='emma-value'>{score:.3f}</span></div>")
    legend = (f"<span class='emma-key' style='background:{CANDIDATE_COLOR}'></span> top-{len(candidates)}: sent to the classifier "
              f"<span class='emma-key' style='background:{OTHER_COLOR}'></span> not sent")
    if with_examples:
        legend += (f" <span class='emma-key emma-desc-key' style='background:{DESCRIPTION_COLOR}'></span> description cosine"
                   f" <span class='emma-key emma-ex-key' style='background:{EXAMPLE_COLOR}'></span> examples' cosine")
    what = ("recall score: description cosine mixed with the examples' cosine, which counts "
            f"n / (n + {EXAMPLES_LIKE_DESCRIPTION}) for a relation with n labelled examples (n counted up to {EXAMPLES_COUNTED})"
            if with_examples else "cosine similarity of sentence and description (the recall score)")
    if with_examples and (share := record.get("example_level_share")):
        what += (f"; examples match any sentence a little better than descriptions do, so the score is lowered by "
                 f"{share:.0%} of that usual difference, and the bar need not lie between its two marks")
    lowered = {o for name, _ in recall if (o := offsets.get(name))}
    if lowered:
        what += (f"; ↓ = a catalogue relation, scored {-min(lowered):.2f} below that beside relations of yours, so that it "
                 "does not take their sentences")
    return (f"<div class='emma-chart'><div class='emma-title'>Recall: top {len(recall)} of {record['n_relations']} relations "
            f"(★ = final prediction)</div><div class='emma-legend'>{legend}</div>{''.join(rows)}"
            f"<div class='emma-axis'>{what}; axis from {low:.2f} to {high:.2f}</div></div>")


def why_html(record: dict, candidates: int | None = None) -> str:
    """The "why" panel: for each top candidate, its labelled sentences most like this one, with their cosines.

    User text (sentences, relation names) is escaped; the entities are highlighted like the marked sentence.
    """
    names = record["candidates"][:candidates]
    near = record.get("examples") or {}
    parts = record.get("recall_parts") or {}
    if not any(near.get(n) for n in names):
        return ("<p class='why-empty'>No labelled examples among the top candidates. Judge a prediction "
                "(<i>Correct</i>, or <i>Wrong</i> with the correct relation): it becomes an example of that relation "
                "and counts from your next prediction.</p>")
    out = []
    for n in names:
        desc, ex = (parts.get(n) or [None, None])[:2]
        score = (f"{first_source(record, n)} {desc:.3f}" if desc is not None else "") + (f" · examples {ex:.3f}" if ex is not None else "")
        if offset := (record.get("recall_offsets") or {}).get(n):
            score += f" · {offset:+.2f} as a catalogue relation beside yours"
        out.append(f"<div class='why-relation'><b>{_t(n, 100)}</b> <span class='why-scores'>({score})</span>")
        rows = near.get(n) or []
        if not rows:
            out.append("<div class='why-none'>no labelled examples</div></div>")
            continue
        out.append("<ol>")
        for e in rows:
            out.append(f"<li>{_marked_html(e['tokens'], e['head'], e['tail'])} <span class='why-cos'>— cosine {e['cosine']:.3f}</span></li>")
        out.append("</ol></div>")
    return "".join(out)


def _marked_html(tokens, head, tail) -> str:
    """Escaped words with the head and tail entities in coloured marks labelled HEAD / TAIL."""
    words = [html.escape(str(w), quote=False) for w in tokens]
    for (s, e), role, color in sorted(((tuple(head), "HEAD", HEAD_COLOR), (tuple(tail), "TAIL", TAIL_COLOR)), reverse=True):
        words[s:e] = [f"<mark style='background:{color}33;border-bottom:2px solid {color}' title='{role.lower()}'>"
                      f"[{role} {' '.join(words[s:e])}]</mark>"]
    return " ".join(words)


RERANK_COLUMNS = ["relation", "recall rank", "recall score", "classifier rank", "classifier probability",
                  "combined (classifier × recall, rescaled to sum to 1)", "final"]


def rerank_table(record: dict | None) -> pd.DataFrame:
    """Recall rank → classifier rank for the k candidates, with both scores (no rows before a prediction)."""
    if not record:
        return pd.DataFrame(columns=RERANK_COLUMNS)
    rows = []
    candidates = record["candidates_detail"]
    if record["reranked"]:  # in the order the decision rule ranked them (stable: recall order breaks ties)
        candidates = sorted(candidates, key=lambda c: -c["deciding_score"])
    for c in candidates:
        rows.append({
            "relation": c["relation"],
            "recall rank": c["recall_rank"],
            "recall score": round(c["recall_score"], 4),
            "classifier rank": c["classifier_rank"] if c["classifier_rank"] is not None else "–",
            "classifier probability": round(c["probability"], 4) if c["probability"] is not None else "–",
            "combined (classifier × recall, rescaled to sum to 1)": round(c["combined"], 4) if c.get("combined") is not None else "–",
            "final": "✔ predicted" if c["relation"] == record["label"] else "",
        })
    return pd.DataFrame(rows, columns=RERANK_COLUMNS)


def whole_words(tokens: list[str], weights: list[float]) -> list[tuple[str, float]]:
    """Word pieces joined into words ("he ##ide ##gger" → "heidegger"), each with the sum of its pieces' weights: a
    virtual entity's weights are a distribution over the pieces, so a word's share is the sum of its pieces'."""
    out: list[tuple[str, float]] = []
    for token, w in zip(tokens, weights):
        if token.startswith("##") and out:
            out[-1] = (out[-1][0] + token[2:], out[-1][1] + w)
        else:
            out.append((token, w))
    return out


def attention_html(record: dict) -> str:
    """Per candidate, the description's words twice: shaded by the head virtual entity's weight, then the tail's
    (darker = more weight, one scale for all; the exact weight on hover). Plain HTML."""
    cands = record["candidates_detail"]
    rgb = ",".join(str(int(DESCRIPTION_COLOR[i:i + 2], 16)) for i in (1, 3, 5))  # description words, in the description's colour
    roles = [[("head entity", whole_words(c["attention"]["tokens"], c["attention"]["head"])),
              ("tail entity", whole_words(c["attention"]["tokens"], c["attention"]["tail"]))] for c in cands]
    zmax = max((w for per in roles for _, words in per for _, w in words), default=1.0) or 1.0
    out = ["<div class='emma-chart'><div class='emma-title'>Which description words each virtual entity attends to "
           f"(darker = more weight; darkest = {zmax:.3f})</div>"]
    for c, per in zip(cands, roles):
        prob = f", classifier p = {c['probability']:.2f}" if c["probability"] is not None else ""
        out.append(f"<div class='emma-candidate'><b>{c['recall_rank']}. {_t(c['relation'])}</b>{prob}")
        for role, weighted in per:
            words = []
            for token, w in weighted:
                alpha = w / zmax
                ink = "#fff" if alpha > 0.55 else "inherit"
                words.append(f"<span class='emma-word' style='background:rgba({rgb},{alpha:.2f});border-color:rgba({rgb},0.25);color:{ink}' "
                             f"title='{role} · {_t(token, 40)}: {w:.3f}'>{_t(token, 20)}</span>")
            out.append(f"<div class='emma-att'><span class='emma-role'>{role}</span>{''.join(words)}</div>")
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def placeholder(message: str) -> str:
    """What a chart shows before the first prediction."""
    return f"<p class='emma-placeholder'>{_t(message, 120)}</p>"


# Shapes of the two charts above (added to the page's CSS); their colours are the constants at the top, inline.
CHART_CSS = """
.emma-chart { font-size: 0.88em; }
.emma-title { font-weight: 600; margin-bottom: 4px; }
.emma-legend, .emma-axis { color: var(--body-text-color-subdued); margin: 4px 0; }
.emma-key { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; vertical-align: middle; }
.emma-desc-key { width: 3px; }
.emma-ex-key { transform: rotate(45deg); width: 8px; height: 8px; }
.emma-row { display: flex; align-items: center; gap: 6px; height: 22px; }
.emma-name { flex: 0 0 34%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; text-align: right; }
.emma-track { flex: 1; position: relative; height: 14px; background: var(--background-fill-secondary); }
.emma-bar { position: absolute; left: 0; top: 0; bottom: 0; }
.emma-mark { position: absolute; top: -2px; bottom: -2px; }
.emma-desc { width: 3px; margin-left: -1px; }
.emma-ex { width: 9px; height: 9px; top: 2px; margin-left: -4px; transform: rotate(45deg); }
.emma-value { flex: 0 0 48px; font-variant-numeric: tabular-nums; }
.emma-candidate { margin: 8px 0; }
.emma-att { display: flex; flex-wrap: wrap; align-items: center; gap: 2px; margin: 3px 0; }
.emma-role { flex: 0 0 90px; color: var(--body-text-color-subdued); }
.emma-word { padding: 1px 3px; border-radius: 3px; border: 1px solid; }
.emma-placeholder { color: var(--body-text-color-subdued); }
"""


def latency_text(record: dict) -> str:
    """Per-stage wall time as one line (numbers only, safe for Markdown)."""
    t = record["timings_ms"]
    labels = {"descriptions": "descriptions", "encode": "encode sentence", "recall": "recall", "rerank": "classifier", "total": "total"}
    parts = [f"{labels.get(k, k)} {v:.1f} ms" for k, v in t.items()]
    return "**Latency** (server): " + " · ".join(parts)
