"""The Extract tab, and entity chips on the Predict tab: paste a paragraph, see every relation.

Extract: the paragraph's entities are suggested by the packaged NER (`emma.entities`) and shown as
highlights; "Extract all" predicts every ordered pair of entities in the same sentence in one
batched call on the model's thread (`Extractor.extract`, with this session's relations and labelled
examples) and draws the result as a network of entities with labelled, directed edges, plus a table.
A pair scoring below the threshold has no relation; the slider re-filters the pairs already
predicted (no model call). Clicking an edge or a table row opens that pair in the Predict tab,
where the usual panels (recall, reranking, attention) explain it and feedback can be given.

Chips: on the Predict tab, "Suggest entities" shows the sentence's entities as chips; clicking one
marks it as the head, the next as the tail (then head again), through the tab's own marking
(`PredictTab.mark`), so selecting and typing keep working as before.

Per-user state lives in `gr.State` (the last extraction's pairs as plain dicts); the model and the
NER are shared resources, used only through the model's thread.
"""

from __future__ import annotations

import html
import math
import time

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from emma import EntityModelError, suggest_entities
from emma.extract import MAX_TEXT_CHARS, both_ways, finish_extraction, plan_extraction

from .session import BadInput, sentence_case
from .workbench import MODEL, PRIVATE, QUIET, Workbench, lenient, user_errors, warn

TABLE_COLUMNS = ["#", "head", "relation", "tail", "score", "sentence", "both ways"]
TABLE_WIDTHS = ["5%", "22%", "22%", "22%", "9%", "10%", "10%"]  # names get the room; numbers and the mark are short
BOTH_WAYS = "↔"  # the reversed pair has the same relation: the direction is the model's guess
MAX_GRAPH_EDGES = 40  # the graph draws the best ones; more overlap into a tangle whose labels cannot be clicked apart
EXTRACT_CHUNK = 32  # pairs per job of the model's thread: a long paragraph lets other users' predictions in between
EXAMPLE_PARAGRAPH = ("Marie Curie was born in Warsaw, then part of the Russian Empire. She moved to Paris to study at the "
                     "University of Paris. In 1895 she married Pierre Curie, a French physicist. Together with Henri "
                     "Becquerel they won the Nobel Prize in Physics in 1903. Their daughter Irène Joliot-Curie later worked "
                     "at the Radium Institute.")

# Runs in the browser each time the graph changes: a click on an edge's label keeps that triple's
# number and presses the hidden #extract-pick button, whose handler reads it (READ_PICK) and opens
# the pair in the Predict tab.
BIND_GRAPH_CLICK = """() => {
  const bind = (tries) => {
    const gd = document.querySelector('#extract-graph .js-plotly-plot');
    if (!gd || !gd.on) { if (tries > 0) setTimeout(() => bind(tries - 1), 100); return; }
    if (gd.dataset.emmaBound) return;
    gd.dataset.emmaBound = '1';
    gd.on('plotly_click', (ev) => {
      const point = ev && ev.points && ev.points[0];
      if (!point || point.customdata === undefined || point.customdata === null) return;
      window.emmaExtractPick = String(point.customdata);
      const button = document.querySelector('#extract-pick');
      if (button) button.click();
    });
  };
  bind(50);
}"""
READ_PICK = "(pick, data, threshold) => [window.emmaExtractPick ?? null, data, threshold]"


class ExtractTab:
    """Handlers of the Extract tab and of the Predict tab's entity chips, over the shared `Workbench`."""

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    def _engine(self, session: dict):
        """The model this session predicts with: its owner's chosen version, else the server's (as the Predict tab)."""
        return self.wb.engine_for(session)

    def _suggest(self, text: str) -> list:
        """NER suggestions, run on the model's thread (the NER is shared like the model)."""
        try:
            return self.wb.model.call(suggest_entities, text)
        except EntityModelError as e:
            raise BadInput(sentence_case(str(e))) from None

    # ------------------------------------------------------------------ chips on the Predict tab

    @user_errors
    def chips(self, sentence: str):
        """"Suggest entities": the sentence's entity chips. Returns (chips value, chip spans, next role)."""
        sentence = sentence or ""
        if not sentence.strip():
            raise BadInput("Type or paste a sentence first.")
        if len(sentence) > MAX_TEXT_CHARS:
            raise BadInput(f"The sentence has {len(sentence)} characters; suggestions take at most {MAX_TEXT_CHARS}.")
        found = self._suggest(sentence)
        if not found:
            warn("No entities found in this sentence; select them and press Head or Tail.")
        return chips_value(sentence, found), [[e.start, e.end] for e in found], "head"

    def chip_clicked(self, predict, sentence, head, tail, spans, chip_spans, role, evt: gr.SelectData):
        """A chip clicked: it becomes the `role` entity (head, then tail). Returns (head, tail, spans, marked, hint, next role)."""
        sentence = sentence or ""
        span = _chip_span(sentence, chip_spans or [], evt)
        if span is None:
            warn("The sentence changed since the suggestions; press Suggest entities again.")
            return (head, tail, spans, *predict.preview(sentence, head, tail, spans), role)
        role = role if role in ("head", "tail") else "head"
        out = predict.mark(role, sentence, list(span), head, tail, spans)
        marked = out[2].get(role) == list(span)  # else `mark` warned (e.g. it overlaps the other entity)
        return (*out, ("tail" if role == "head" else "head") if marked else role)

    def build_chips(self, predict, sentence, head, tail, spans, marked, hint) -> None:
        """The chips row under the Predict tab's sentence, and its events."""
        with gr.Row():
            suggest_btn = gr.Button("Suggest entities", elem_id="suggest-entities", size="sm")
        # Hidden until the first suggestions: an empty box under the sentence reads as something broken.
        chips = gr.HighlightedText(label="Suggested entities: click one for the head, the next for the tail",
                                   elem_id="entity-chips", show_legend=False, combine_adjacent=False, interactive=False,
                                   visible=False)
        chip_spans, role = gr.State([]), gr.State("head")

        def suggested(sentence_):
            value, spans_, role_ = self.chips(sentence_)
            return gr.update(value=value, visible=True), spans_, role_

        suggest_btn.click(suggested, [sentence], [chips, chip_spans, role], **MODEL, **QUIET)
        # Chips of another sentence would mark spans of this one: a new sentence takes them away until asked again.
        sentence.change(lambda: (gr.update(value=None, visible=False), [], "head"), None, [chips, chip_spans, role],
                        trigger_mode="always_last", **QUIET)

        def clicked(sentence_, head_, tail_, spans_, chip_spans_, role_, evt: gr.SelectData):
            return self.chip_clicked(predict, sentence_, head_, tail_, spans_, chip_spans_, role_, evt)

        chips.select(clicked, [sentence, head, tail, spans, chip_spans, role], [head, tail, spans, marked, hint, role], **QUIET)

    # ------------------------------------------------------------------ extraction

    def run_extraction(self, text: str, session: dict, request: gr.Request = None, progress=None):
        """Every relation of `text` with this session's relations; returns (the extraction as plain data, session).

        The entities, then every `EXTRACT_CHUNK` pairs, are each one job of the model's thread, so that other users'
        predictions go in between a long paragraph's; `progress(done, total)` after each chunk of pairs.
        """
        wb = self.wb
        session = wb.owned(session, request)
        text = text or ""
        if not text.strip():
            raise BadInput("Paste a sentence or a paragraph first.")
        if len(text) > MAX_TEXT_CHARS:
            raise BadInput(f"The text has {len(text)} characters; extraction takes at most {MAX_TEXT_CHARS}.")
        relations, examples = wb.to_predict(session)
        engine = self._engine(session)

        def predict(instances):
            return engine.extractor.with_index(engine.index(relations, examples)).predict_batch(instances)

        t0 = time.perf_counter()
        try:
            plan = wb.model.call(plan_extraction, text)
            predictions, total = [], len(plan.instances)
            t1 = time.perf_counter()
            for start in range(0, total, EXTRACT_CHUNK):
                predictions += wb.model.call(predict, plan.instances[start : start + EXTRACT_CHUNK])
                if progress:
                    progress(len(predictions), total)
        except EntityModelError as e:
            raise BadInput(sentence_case(str(e))) from None
        except ValueError as e:  # the library names the problem: no sentence, fewer than two entities …
            raise BadInput(sentence_case(str(e))) from None
        # threshold 0: every pair keeps its best relation here; the slider filters (no second model call)
        result = finish_extraction(plan, predictions, 0.0, (time.perf_counter() - t1) * 1e3)
        return extraction_data(result, (time.perf_counter() - t0) * 1e3), session

    @user_errors
    def extract_and_show(self, text: str, threshold: float, session: dict, request: gr.Request = None,
                         progress=gr.Progress()):
        """"Extract all": returns (entities highlight, graph, table, status, extraction state, session)."""
        threshold = check_threshold(threshold)
        progress(0, desc="Finding the entities")
        data, session = self.run_extraction(
            text, session, request, lambda done, total: progress(done / total, desc=f"Predicting pairs: {done} of {total}"))
        for message in data["warnings"]:
            warn(message)
        return (chips_value(data["text"], data["entities"]), *self.views(data, threshold), data, session)

    @user_errors
    def views(self, data: dict | None, threshold: float):
        """(graph, table, status) of an extraction at `threshold` (no model call)."""
        threshold = check_threshold(threshold)
        if not data:
            return placeholder_graph(), pd.DataFrame(columns=TABLE_COLUMNS), ""
        triples = above(data, threshold)
        return graph_figure(data, triples), triples_table(data, triples), status_text(data, triples, threshold)

    @user_errors
    def extract_api(self, text: str, session: dict, request: gr.Request = None):
        """/extract(text): the triples above the checkpoint's threshold, entities, sentences and warnings (JSON)."""
        data, session = self.run_extraction(text, session, request)
        threshold = self._engine(session).extractor.config.extract_threshold
        triples = above(data, threshold)
        return {"threshold": threshold, "sentences": [data["text"][s:e] for s, e in data["sentences"]],
                "entities": [{"text": e["text"], "label": e["label"], "start": e["start"], "end": e["end"]} for e in data["entities"]],
                "triples": [{"head": p["head_text"], "relation": p["label"], "tail": p["tail_text"], "score": p["score"],
                             "head_span": p["head"], "tail_span": p["tail"], "sentence": p["sentence"], "both_ways": p["both_ways"]}
                            for p in triples],
                "pairs": len(data["pairs"]), "warnings": data["warnings"], "timings_ms": data["timings_ms"]}, session

    @user_errors
    def open_pair(self, predict, pick: str, data: dict | None, threshold: float):
        """An edge (`pick`: its row number) or a row clicked: that pair's sentence and entities go to the Predict tab.

        Returns (sentence, head, tail, spans, marked, hint, tabs update).
        """
        pair = _picked(pick, data, check_threshold(threshold))
        if pair is None:
            raise gr.Error("That relation is no longer shown; extract again.", print_exception=False)
        return predict.opened(pair["sentence_text"], pair["local_head"], pair["local_tail"])

    def row_clicked(self, predict, data, threshold, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return self.open_pair(predict, f"{row}:row", data, threshold)

    # ------------------------------------------------------------------ layout

    def build(self, session: gr.State, predict, tabs: gr.Tabs) -> None:
        """The tab's components and events; a picked pair is predicted by the Predict tab's own handler."""
        gr.Markdown(HELP, elem_classes="panel-help")
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(EXAMPLE_PARAGRAPH, label="Paragraph", lines=5, max_lines=20,
                                  elem_id="extract-text")
                entities = gr.HighlightedText(label="Entities (suggested by the English NER)", elem_id="extract-entities",
                                              show_legend=True, combine_adjacent=False)
            with gr.Column(scale=1):
                default = float(self.wb.engine.extractor.config.extract_threshold)
                threshold = lenient(gr.Slider(0.0, 1.0, value=default, step=0.01, label="Threshold (below it: no relation)",
                                      info=f"Default {default:.2f}: measured on CrossRE dev (results/EXTRACTION.md)",
                                      elem_id="extract-threshold"))
                extract_btn = gr.Button("Extract all", variant="primary", elem_id="extract-all")
                status = gr.Textbox(show_label=False, interactive=False, lines=3, elem_id="extract-status", container=False)
        graph = gr.Plot(placeholder_graph(), label="Entities and relations (click an edge's label to explain it)",
                        elem_id="extract-graph")
        table = gr.Dataframe(pd.DataFrame(columns=TABLE_COLUMNS), label="Triples (click a row to explain it)",
                             interactive=False, elem_id="extract-table", wrap=True, column_widths=TABLE_WIDTHS)
        pick, pick_btn = gr.JSON(visible=False), gr.Button(visible="hidden", elem_id="extract-pick")
        data = gr.State(None)
        shown = [graph, table, status]
        # Progress on the graph alone (one bar where the result will be, not one on every panel).
        extract_btn.click(self.extract_and_show, [text, threshold, session], [entities, *shown, data, session], **MODEL, **PRIVATE,
                          show_progress_on=graph)
        gr.Button(visible=False).click(self.extract_api, [text, session], [gr.JSON(visible=False), session], api_name="extract", **MODEL)
        # Any change re-filters (a drag, the arrow keys, a number typed in its box): no model call, the last one wins.
        threshold.change(self.views, [data, threshold], shown, trigger_mode="always_last", **QUIET)
        graph.change(None, js=BIND_GRAPH_CLICK, **QUIET)
        def picked(pick_, data_, threshold_):
            return self.open_pair(predict, pick_, data_, threshold_)

        def row(data_, threshold_, evt: gr.SelectData):
            return self.row_clicked(predict, data_, threshold_, evt)

        predict.explain_on(pick_btn.click, picked, [pick, data, threshold], tabs, js=READ_PICK)
        predict.explain_on(table.select, row, [data, threshold], tabs)


HELP = """**Extract everything in a paragraph.** The English NER suggests the entities (dates and places included); every
ordered pair of entities in the same sentence is predicted at once with your relations in force, and a pair whose score
(classifier × recall) is below the threshold gets no relation. The score says how much the model prefers its relation to
the other relations in force, not how likely the triple is to be true: the model has no "no relation" answer, so most
pairs of a paragraph get one, often confidently, and the threshold keeps only the surest. Expect to check what it
finds (↔: the same relation predicted both ways round, where the direction is a guess). Click an edge or a row to see
why in the Predict tab."""


# ---------------------------------------------------------------------- plain data and figures


def check_threshold(value) -> float:
    """The slider's value as a float in [0, 1]; BadInput otherwise (an API client may send anything)."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise BadInput("The threshold must be a number between 0 and 1.")
    return threshold


def chips_value(text: str, entities) -> dict:
    """HighlightedText value with the entities labelled by their type (EntitySpans or their dicts)."""
    rows = [e if isinstance(e, dict) else {"start": e.start, "end": e.end, "label": e.label} for e in entities]
    return {"text": text, "entities": [{"entity": r["label"] or "ENTITY", "start": r["start"], "end": r["end"]} for r in rows]}


def extraction_data(result, wall_ms: float) -> dict:
    """An `Extraction` as plain, JSON-able data for `gr.State`: every pair with its best relation and score."""
    pairs = []
    for p in result.pairs:
        s, _ = result.sentences[p.sentence]
        pairs.append({"head_text": p.head.text, "tail_text": p.tail.text, "head": [p.head.start, p.head.end],
                      "tail": [p.tail.start, p.tail.end], "label": p.prediction.label, "score": float(p.score),
                      "sentence": p.sentence, "sentence_text": result.sentence_text(p.sentence),
                      "local_head": [p.head.start - s, p.head.end - s], "local_tail": [p.tail.start - s, p.tail.end - s]})
    return {"text": result.text, "sentences": [list(s) for s in result.sentences],
            "entities": [{"text": e.text, "label": e.label, "start": e.start, "end": e.end} for e in result.entities],
            "pairs": pairs, "warnings": list(result.warnings),
            "timings_ms": {**{k: round(v, 1) for k, v in result.timings_ms.items()}, "wall": round(wall_ms, 1)}}


def above(data: dict, threshold: float) -> list[dict]:
    """The pairs with a relation at `threshold`, best score first (the table's and the graph's order), each with
    "both_ways": whether its reversed pair has the same relation at this threshold too (`emma.extract.both_ways`)."""
    kept = [p for p in data["pairs"] if not (threshold > 0 and p["score"] < threshold)]
    two = both_ways([(p["sentence"], p["head"], p["tail"], p["label"]) for p in kept])
    return sorted(({**p, "both_ways": b} for p, b in zip(kept, two)), key=lambda p: -p["score"])


def _picked(pick: str, data: dict | None, threshold: float) -> dict | None:
    try:
        number = int(str(pick).split(":")[0])
    except ValueError:
        return None
    triples = above(data, threshold) if data else []
    return triples[number] if 0 <= number < len(triples) else None


def _chip_span(sentence: str, chip_spans: list, evt) -> tuple[int, int] | None:
    """The clicked chip's span, if the sentence still holds that entity text there.

    Gradio turns the chips into segments (gap, entity, gap, entity, …, rest), so entity i is segment
    2i + 1; the clicked text decides when the index does not fit (a chip of the same text elsewhere).
    """
    value = evt.value
    text = str(value[0] if isinstance(value, (list, tuple)) and value else value or "")
    index = evt.index if isinstance(evt.index, int) and evt.index >= 0 else None  # (-1 % 2 is 1 in Python)
    spans = sorted(tuple(x) for x in chip_spans)
    if index is not None and index % 2 == 1 and index // 2 < len(spans):
        s, e = spans[index // 2]
        if sentence[s:e] == text:
            return s, e
    for s, e in spans:
        if sentence[s:e] == text:
            return s, e
    return None


def triples_table(data: dict, triples: list[dict]) -> pd.DataFrame:
    """One row per triple, numbered from 1 like the sentences (a row click reads its position, not this number)."""
    return pd.DataFrame([[n, p["head_text"], p["label"], p["tail_text"], round(p["score"], 3), p["sentence"] + 1,
                          BOTH_WAYS if p["both_ways"] else ""]
                         for n, p in enumerate(triples, start=1)], columns=TABLE_COLUMNS)


def status_text(data: dict, triples: list[dict], threshold: float) -> str:
    t = data["timings_ms"]
    lines = [f"{len(data['entities'])} entities in {len(data['sentences'])} sentences, {len(data['pairs'])} pairs predicted; "
             f"{len(triples)} with a relation at threshold {threshold:.2f}.",
             f"The model took {t['wall']:.0f} ms (entities {t['entities']:.0f} ms, predictions {t['predict']:.0f} ms)."]
    two = sum(p["both_ways"] for p in triples)
    if two:
        lines.append(f"{two} of them also hold the other way round ({BOTH_WAYS} in the table): the model often cannot "
                     f"tell a relation's direction, so check which way those go.")
    lines += data["warnings"]
    return "\n".join(lines)


def placeholder_graph() -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text="Paste a paragraph and press Extract all.", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=220, xaxis_visible=False, yaxis_visible=False, template="plotly_white", margin=dict(l=10, r=10, t=10, b=10))
    return fig


def _e(text: str, limit: int = 40) -> str:
    text = str(text)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…", quote=False)


def graph_figure(data: dict, triples: list[dict]) -> go.Figure:
    """A network: one node per entity text, one directed, labelled edge per triple (its label clickable).

    Nodes sit on a circle in text order; an edge is an arrow from head to tail, bent a little to one
    side so that the two directions of a pair do not overlap, with its relation written at the bend.
    """
    if not triples:
        fig = placeholder_graph()
        fig.layout.annotations[0].text = "No relation above the threshold: lower it to see more."
        return fig
    drawn = triples[:MAX_GRAPH_EDGES]  # best first; a long paragraph's hundred edges would only tangle
    linked = {p[role] for p in drawn for role in ("head_text", "tail_text")}
    names = [m for m in dict.fromkeys(e["text"] for e in data["entities"]) if m in linked]  # text order
    n = len(names)
    pos = {name: (math.cos(2 * math.pi * i / n + math.pi / 2), math.sin(2 * math.pi * i / n + math.pi / 2)) for i, name in enumerate(names)}
    fig = go.Figure()
    label_x, label_y, label_text, label_hover, label_ids = [], [], [], [], []
    for number, p in enumerate(drawn):
        (x0, y0), (x1, y1) = pos[p["head_text"]], pos[p["tail_text"]]
        if (x0, y0) == (x1, y1):
            continue  # the same name as head and tail (two mentions): shown in the table only
        dx, dy = x1 - x0, y1 - y0
        length = math.hypot(dx, dy)
        bend = 0.12
        mx, my = (x0 + x1) / 2 - dy / length * bend, (y0 + y1) / 2 + dx / length * bend
        fig.add_trace(go.Scatter(x=[x0, mx, x1], y=[y0, my, y1], mode="lines", line=dict(color="#9aa0a6", width=1.5, shape="spline"),
                                 hoverinfo="skip", showlegend=False))
        fig.add_annotation(x=x1 - dx / length * 0.09, y=y1 - dy / length * 0.09, ax=mx, ay=my, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowsize=1.3, arrowwidth=1.5, arrowcolor="#5f6368", text="")
        label_x.append(mx)
        label_y.append(my)
        label_text.append(_e(p["label"], 24))
        label_hover.append(f"{_e(p['head_text'])} → {_e(p['label'])} → {_e(p['tail_text'])}<br>score {p['score']:.3f}"
                           + ("<br>also predicted the other way round: direction unsure" if p["both_ways"] else ""))
        label_ids.append(number)
    fig.add_trace(go.Scatter(x=[pos[m][0] for m in names], y=[pos[m][1] for m in names], mode="markers+text", text=[_e(m) for m in names],
                             textposition="top center", marker=dict(size=18, color="#1a73e8"), hoverinfo="text",
                             hovertext=[_e(m, 200) for m in names], showlegend=False, name="entities"))
    fig.add_trace(go.Scatter(x=label_x, y=label_y, mode="markers+text", text=label_text, customdata=label_ids,
                             textposition="middle center", textfont=dict(size=11, color="#202124"),
                             marker=dict(size=14, color="rgba(232,113,10,0.25)", line=dict(color="#e8710a", width=1)),
                             hovertext=label_hover, hoverinfo="text", showlegend=False, name="relations"))
    fig.update_layout(height=560, template="plotly_white", margin=dict(l=20, r=20, t=30, b=20), clickmode="event",
                      xaxis=dict(visible=False, range=[-1.4, 1.4]), yaxis=dict(visible=False, range=[-1.3, 1.35], scaleanchor="x"),
                      title=dict(text=(f"{len(triples)} relations among {n} entity names (one node per name)" if len(drawn) == len(triples) else
                                      f"The best {len(drawn)} of {len(triples)} relations (the table lists all), among {n} entity names"),
                                 font=dict(size=14)))
    return fig
