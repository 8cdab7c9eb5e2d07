"""Figures and tables of one prediction (the "explain" half of the workbench).

EMMA predicts in two stages (paper section 3): *recall* compares the sentence vector with every
description vector (cosine) and keeps the top k; the *classifier* reads the sentence with each of
those k descriptions and picks one. Its description vectors pool the description's word pieces
with two attention heads, one per virtual entity (head / tail, section 3.2); the heatmap shows
those weights. With labelled examples, a relation's recall score mixes its description's cosine
with its examples' (`emma.index`): the recall chart marks both, and `why_html` lists the labelled
sentences nearest to this one. Every function takes the plain `dict` stored in the session (see
`records.prediction_record`), so figures can be redrawn without the model.

Relation names and description tokens are user text: plotly renders a small subset of HTML in
labels, so they are escaped before use.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RECALL_BARS = 15
CANDIDATE_COLOR = "#e8710a"
OTHER_COLOR = "#9aa0a6"
DESCRIPTION_COLOR = "#1a73e8"
EXAMPLE_COLOR = "#188038"
HEAD_COLOR, TAIL_COLOR = "#f4a261", "#2a9d8f"  # as the marked sentence


def _t(text: str, limit: int = 60) -> str:
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False)


def recall_figure(record: dict, bars: int = RECALL_BARS) -> go.Figure:
    """Horizontal bars of the top recall scores; the k candidates sent to the classifier in orange.

    When a shown relation has labelled examples, markers on each row show recall's two sources apart:
    the description's cosine and the examples' (the bar is their mix)."""
    recall = record["recall"][: max(bars, len(record["candidates"]))]
    candidates = set(record["candidates"])
    names = [name for name, _ in recall]
    fig = go.Figure()
    for is_candidate, legend in ((True, f"top-{len(candidates)}: sent to the classifier"), (False, "not sent")):
        rows = [(i, n, s) for i, (n, s) in enumerate(recall) if (n in candidates) == is_candidate]
        fig.add_bar(
            x=[s for _, _, s in rows],
            y=[i for i, _, _ in rows],
            orientation="h",
            name=legend,
            marker_color=CANDIDATE_COLOR if is_candidate else OTHER_COLOR,
            text=[f"{s:.3f}" for _, _, s in rows],
            textposition="outside",
            cliponaxis=False,
            hovertext=[_t(n, 200) for _, n, _ in rows],
            hoverinfo="text+x",
        )
    parts = record.get("recall_parts") or {}
    with_examples = any(parts.get(n, [None, None])[1] is not None for n in names)
    marked = []
    if with_examples:  # recall = ½ description + ½ examples: show each source apart as a marker on its row
        for key, which, legend, color, symbol in ((0, "description", "description cosine", DESCRIPTION_COLOR, "line-ns-open"),
                                                  (1, "examples", "examples' cosine", EXAMPLE_COLOR, "diamond")):
            # Only rows with examples: elsewhere the bar is the description's cosine already.
            rows = [(i, n, parts[n][key]) for i, n in enumerate(names) if n in parts and parts[n][1] is not None]
            marked += [v for _, _, v in rows]
            fig.add_scatter(
                x=[v for _, _, v in rows], y=[i for i, _, _ in rows], mode="markers", name=legend,
                marker=dict(color=color, symbol=symbol, size=11, line=dict(width=2, color=color)),
                hovertext=[f"{_t(n, 200)}: {which} {v:.3f}" for _, n, v in rows], hoverinfo="text", cliponaxis=False,
            )
    ticks = [f"{i + 1}. {_t(n)}" + (" ★" if n == record["label"] else "") for i, n in enumerate(names)]
    fig.update_yaxes(tickvals=list(range(len(names))), ticktext=ticks, autorange="reversed")
    scores = [s for _, s in recall] + marked
    low, high = min(scores), max(scores)
    pad = max(0.02, 0.15 * (high - low))
    # Cosines of a trained model often sit close together; zoom the axis so their differences show.
    what = ("recall score: ½ description cosine + ½ examples' cosine for relations with labelled examples (axis zoomed)"
            if with_examples else "cosine similarity of sentence and description (recall score; axis zoomed)")
    fig.update_xaxes(title_text=what, range=[max(-1.0, low - pad), min(1.0, high + pad)])
    fig.update_layout(
        title=dict(text=f"Recall: top {len(names)} of {record['n_relations']} relations (★ = final prediction)", font_size=14),
        height=120 + 24 * len(names),
        margin=dict(l=10, r=30, t=50, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        barmode="overlay",
        bargap=0.25,
    )
    return fig


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
        score = (f"description {desc:.3f}" if desc is not None else "") + (f" · examples {ex:.3f}" if ex is not None else "")
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


def rerank_table(record: dict) -> pd.DataFrame:
    """Recall rank → classifier rank for the k candidates, with both scores."""
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
            "combined (classifier × recall)": round(c["combined"], 4) if c.get("combined") is not None else "–",
            "final": "✔ predicted" if c["relation"] == record["label"] else "",
        })
    columns = ["relation", "recall rank", "recall score", "classifier rank", "classifier probability",
               "combined (classifier × recall)", "final"]
    return pd.DataFrame(rows, columns=columns)


def attention_figure(record: dict) -> go.Figure:
    """One heatmap per candidate: rows = head / tail virtual entity, columns = description word pieces."""
    cands = record["candidates_detail"]
    titles = []
    for c in cands:
        prob = f", classifier p = {c['probability']:.2f}" if c["probability"] is not None else ""
        titles.append(f"{c['recall_rank']}. {_t(c['relation'])}{prob}")
    fig = make_subplots(rows=len(cands), cols=1, subplot_titles=titles, vertical_spacing=min(0.25, 0.6 / max(1, len(cands))))
    zmax = max((max(w) for c in cands for w in (c["attention"]["head"], c["attention"]["tail"]) if w), default=1.0)
    for i, c in enumerate(cands, start=1):
        att = c["attention"]
        tokens = [_t(tok, 20) for tok in att["tokens"]]
        fig.add_trace(
            go.Heatmap(
                z=[att["head"], att["tail"]],
                x=list(range(len(tokens))),
                y=["head entity", "tail entity"],
                coloraxis="coloraxis",
                customdata=[tokens, tokens],
                hovertemplate="%{y} · %{customdata}: %{z:.3f}<extra></extra>",
            ),
            row=i,
            col=1,
        )
        fig.update_xaxes(tickvals=list(range(len(tokens))), ticktext=tokens, tickangle=-45, row=i, col=1)
        fig.update_yaxes(autorange="reversed", row=i, col=1)  # head entity on top
    fig.update_layout(
        title=dict(text="Which description words each virtual entity attends to (darker = more weight)", font_size=14),
        coloraxis=dict(colorscale="Blues", cmin=0, cmax=zmax, colorbar=dict(title="weight")),
        height=90 + 190 * len(cands),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def placeholder(message: str) -> go.Figure:
    """An empty figure with a message: shown before the first prediction, so the browser loads the plotting
    library with the page instead of after the first Predict click."""
    fig = go.Figure()
    fig.add_annotation(text=_t(message, 120), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=120, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def latency_text(record: dict) -> str:
    """Per-stage wall time as one line (numbers only, safe for Markdown)."""
    t = record["timings_ms"]
    labels = {"descriptions": "descriptions", "encode": "encode sentence", "recall": "recall", "rerank": "classifier", "total": "total"}
    parts = [f"{labels.get(k, k)} {v:.1f} ms" for k, v in t.items()]
    return "**Latency** (server): " + " · ".join(parts)
