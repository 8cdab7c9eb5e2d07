"""The Predict tab: mark two entities, predict, see recall / why (labelled examples) / reranking / attention.

Marking is per session and order-independent: the Head and Tail buttons read the textbox's
selection in the browser at the moment of the click and send it with the click, so no earlier
"select" event has to reach the server first, and no queue slot is shared between users. Each
marking event returns the preview with its result (one round trip, one preview per action).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import gradio as gr

from emma import DataError, instance_from_text, spans_overlap
from emma.index import EXAMPLES_COUNTED, EXAMPLES_LIKE_DESCRIPTION, LEVEL_SHARE

from . import plots
from .engine import MAX_SENTENCE_CHARS
from .records import dataset_label_text, prediction_record, public_record, summary_text
from .session import BadInput, ambiguity_note, has_visible, highlighted, holds, resolve_entities, resolve_entity, selection_span, sentence_case
from .workbench import API_PREDICTIONS, MODEL, PRIVATE, QUIET, Workbench, lenient, user_errors, warn

# Runs in the browser before the Head/Tail handler: the selection of the sentence box replaces the
# `selection` input (UTF-16 offsets and the selected text; `session.selection_span` converts them).
READ_SELECTION = """(sentence, selection, head, tail, spans) => {
  const box = document.querySelector('#sentence textarea');
  const sel = box ? {index: [box.selectionStart, box.selectionEnd], value: box.value.substring(box.selectionStart, box.selectionEnd)} : null;
  return [sentence, sel, head, tail, spans];
}"""


def check_length(sentence: str) -> None:
    if len(sentence or "") > MAX_SENTENCE_CHARS:
        raise BadInput(f"The sentence has {len(sentence)} characters; the workbench takes at most {MAX_SENTENCE_CHARS}.")


def predicted_here(record: dict, sentence: str, head: str, tail: str, spans: dict | None) -> bool:
    """Whether the sentence and entities in the boxes are those of prediction `record`."""
    try:
        marks = resolve_entities(sentence, head, tail, spans)
    except BadInput:
        return False
    return sentence == record["sentence"] and marks == (tuple(record["head"]), tuple(record["tail"]))


def predicted_hint(record: dict) -> str:
    """The marking hint once a prediction is on show ("Ready: press Predict" would ask for what was just done)."""
    return f"Predicted: {record['label']}. Judge it under \"Was it right?\", or change the sentence or entities and press Predict again."


@dataclass
class PredictParts:
    """The Predict tab's components that other tabs and the page load use."""

    sentence: gr.Textbox
    head: gr.Textbox
    tail: gr.Textbox
    spans: gr.State
    marked: gr.HighlightedText
    hint: gr.Textbox
    verdict: gr.Radio
    correct_relation: gr.Dropdown
    note: gr.Textbox
    feedback_btn: gr.Button
    feedback_status: gr.Textbox


class PredictTab:
    """Handlers of the Predict tab over the shared `Workbench`."""

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    # ------------------------------------------------------------------ marking entities

    def mark(self, role: str, sentence: str, selection, head: str, tail: str, spans: dict | None):
        """Head / Tail button: the selection becomes that entity. Returns (head, tail, spans, marked, hint)."""
        spans = dict(spans or {})
        sentence = sentence or ""
        span = self._selected(sentence, selection)
        problem = self._why_not_mark(role, sentence, span, head, tail, spans)
        if problem:
            warn(problem)
        else:
            spans[role] = list(span)
            head, tail = (sentence[span[0] : span[1]], tail) if role == "head" else (head, sentence[span[0] : span[1]])
        return (head, tail, spans, *self.preview(sentence, head, tail, spans))

    @staticmethod
    def _selected(sentence: str, selection) -> tuple[int, int] | None:
        """The browser's {"index": [start, end], "value": text} (or a plain [start, end]) as a span of `sentence`."""
        try:
            if isinstance(selection, dict):
                return selection_span(sentence, selection.get("index"), selection.get("value"))
            if isinstance(selection, (list, tuple)) and len(selection) == 2:
                return int(selection[0]), int(selection[1])
        except (TypeError, ValueError):
            pass
        return None

    @staticmethod
    def _why_not_mark(role, sentence, span, head, tail, spans) -> str | None:
        if len(sentence) > MAX_SENTENCE_CHARS:
            return f"The sentence is longer than {MAX_SENTENCE_CHARS} characters; shorten it first."
        if not span or not 0 <= span[0] < span[1] <= len(sentence) or not has_visible(sentence[span[0] : span[1]]):
            return f"Select some words of the sentence first, then press {role.capitalize()}."
        other, other_text = ("tail", tail) if role == "head" else ("head", head)
        o = spans.get(other)
        still_marked = o and sentence[o[0] : o[1]].strip() == (other_text or "").strip()  # not left over from another sentence
        if still_marked and spans_overlap(span, o):
            return f"That selection overlaps the {other} entity; select other words."
        return None

    def mark_head(self, sentence, selection, head, tail, spans):
        return self.mark("head", sentence, selection, head, tail, spans)

    def mark_tail(self, sentence, selection, head, tail, spans):
        return self.mark("tail", sentence, selection, head, tail, spans)

    def clear_marks(self, sentence: str):
        return ("", "", {}, *self.preview(sentence, "", "", {}))

    def example_spans(self, sentence: str, head: str, tail: str):
        """The exact spans of a clicked example (looked up by its text). Returns (spans, marked, hint)."""
        spans = self._known_spans(sentence, head, tail)
        return (spans, *self.preview(sentence, head, tail, spans))

    def _known_spans(self, sentence: str, head: str, tail: str) -> dict:
        """A built-in example's exact spans when these are its sentence and entity strings, else {}."""
        for ex in self.wb.examples:
            if ex["text"] == sentence and ex["head_text"] == head and ex["tail_text"] == tail:
                return {"head": list(ex["head"]), "tail": list(ex["tail"])}
        return {}

    def dataset_label(self, record: dict) -> str | None:
        """The relation the dataset gives the predicted pair when it is one of the built-in examples (else None)."""
        for ex in self.wb.examples:
            if (ex["text"], list(ex["head"]), list(ex["tail"])) == (record["sentence"], record["head"], record["tail"]):
                return ex["relation"]
        return None

    def opened(self, sentence: str, head: tuple[int, int], tail: tuple[int, int]) -> tuple:
        """Another tab's "see why": `sentence` with its head and tail character spans marked here, this tab shown.

        Returns the values of `opening(tabs)`: (sentence, head, tail, spans, marked, hint, tabs update).
        """
        spans = {"head": list(head), "tail": list(tail)}
        h, t = sentence[slice(*head)], sentence[slice(*tail)]
        return (sentence, h, t, spans, *self.preview(sentence, h, t, spans), gr.update(selected="predict-tab"))

    def explain_on(self, trigger, fn, inputs: list, tabs: gr.Tabs, **kwargs) -> None:
        """Wire `trigger(fn, inputs)` (returning `opened(...)`) to mark a pair here, then run the Predict button's handler."""
        outputs = [self.parts.sentence, self.parts.head, self.parts.tail, self.parts.spans, self.parts.marked, self.parts.hint, tabs]
        # The boxes' own previews run as `fn` fills them, maybe after the prediction: the last word on the hint is
        # a preview that sees the new prediction (the preview reads what Predict reads).
        trigger(fn, inputs, outputs, **QUIET, **kwargs).success(
            self.predict_and_show, self.predict_inputs, self.predict_outputs, **self.predict_event).then(
            self.preview, self.predict_inputs, [self.parts.marked, self.parts.hint], **QUIET)

    def preview(self, sentence: str, head: str, tail: str, spans: dict | None, session: dict | None = None) -> tuple[dict, str]:
        """The marked sentence and a hint (no toasts: this runs while the user types); with the `session`, the hint
        says what was predicted when the boxes hold its last prediction."""
        sentence = sentence or ""
        if not sentence.strip():
            return highlighted("", None, None), "Type or paste a sentence, or pick an example below."
        if len(sentence) > MAX_SENTENCE_CHARS:
            return highlighted("", None, None), f"The sentence is longer than {MAX_SENTENCE_CHARS} characters; shorten it."
        # A clicked example's previews (one per box, by `.change`) may run before `example_spans` stores its
        # spans: spans that no longer hold the entity strings give way to the example's own, so that every
        # preview marks what Predict will read, even where an entity's text occurs twice.
        if not all(holds(sentence, text, (spans or {}).get(role)) for role, text in (("head", head), ("tail", tail))):
            spans = self._known_spans(sentence, head, tail) or spans
        try:
            h, t = resolve_entities(sentence, head, tail, spans)
        except BadInput as e:
            # The hint box shows plain text; the message was HTML-escaped for toasts.
            return highlighted(sentence, *self._partial_marks(sentence, head, tail, spans)), html.unescape(str(e))
        last = (session or {}).get("last")
        if last and predicted_here(last, sentence, head, tail, spans):
            return highlighted(sentence, h, t), predicted_hint(last)
        hint = "Ready: press Predict."
        n = self.wb.engine.count_pieces(sentence)
        if n > self.wb.engine.sentence_window:
            hint = (f"Ready, but the sentence has {n} word pieces and the model reads {self.wb.engine.sentence_window}: "
                    "only the words nearest the entities are used.")
        if note := ambiguity_note(sentence, head, tail, spans):
            hint += " " + html.unescape(note)  # the hint box shows plain text
        return highlighted(sentence, h, t), hint

    @staticmethod
    def _partial_marks(sentence, head, tail, spans):
        """Whatever entities can be marked while the other one is still missing or wrong."""
        spans = spans or {}
        marks = []
        for role, typed, avoid in (("head", head, None), ("tail", tail, "head")):
            try:
                marks.append(resolve_entity(sentence, role, typed, spans.get(role), avoid=marks[0] if avoid else None))
            except BadInput:
                marks.append(None)
        return marks

    # ------------------------------------------------------------------ prediction

    @user_errors
    def predict(self, sentence: str, head: str, tail: str, spans: dict | None, session: dict, request: gr.Request = None):
        """Predict the relation between head and tail with this session's relations.

        Returns (prediction as a JSON-able dict, session with the prediction kept for feedback).
        """
        t0 = time.perf_counter()
        wb = self.wb
        session = wb.owned(session, request)
        sentence = sentence or ""
        check_length(sentence)
        h, t = resolve_entities(sentence, head, tail, spans)
        relations, examples = wb.to_predict(session)
        warnings_ = []
        n = wb.engine.count_pieces(sentence)
        if n > wb.engine.sentence_window:
            warnings_.append(f"The sentence has {n} word pieces but the model reads {wb.engine.sentence_window}; "
                             "only the words nearest the entities were used.")
            warn(warnings_[-1])
        try:
            instance = instance_from_text(sentence, h, t)
            engine = wb.engine_for(session)  # the owner's fine-tuned version, if they chose one
            prediction = wb.model.predict(sentence, h, t, relations, examples, engine=engine)
        except DataError as e:
            raise BadInput(sentence_case(str(e))) from None
        timings = {**prediction.timings_ms, "total": (time.perf_counter() - t0) * 1e3}
        record = prediction_record(sentence, h, t, instance, prediction, relations, engine.checkpoint_id, timings, warnings_,
                                   n_examples=len(examples),
                                   level_share=LEVEL_SHARE if engine.extractor.example_levels is not None else 0.0)
        # A new session dict rather than a deep copy: only "last" changes, and the old prediction it held (every
        # relation's scores and weights) is the costly part to copy; the rest is shared, never changed in place.
        return public_record(record), {**session, "last": record}

    def predict_api(self, sentence: str, head: str, tail: str, spans: dict | None, session: dict, request: gr.Request = None):
        """/predict for API clients: `predict`, refused at once while API_PREDICTIONS others are running."""
        if not self.wb.api_predictions.acquire(blocking=False):
            raise gr.Error(f"The server is busy with {API_PREDICTIONS} API predictions; try again in a moment.",
                           print_exception=False)
        try:
            return self.predict(sentence, head, tail, spans, session, request)
        finally:
            self.wb.api_predictions.release()

    def predict_and_show(self, sentence: str, head: str, tail: str, spans: dict | None, session: dict,
                         request: gr.Request = None):
        """The Predict button: `predict` and `show_prediction` in one round trip (the page waits for one event, not two).

        A refusal is a toast and "Not predicted: …" in the hint, and the panels are cleared and the last prediction
        forgotten: it must not stay on show, nor be judged by Save feedback, as if it answered this sentence."""
        try:
            record, session = self.predict(sentence, head, tail, spans, session, request)
        except gr.Error as e:
            warn(e.message)
            said = f"Not predicted: {html.unescape(e.message)}"  # text boxes show plain text; the toast's is HTML-escaped
            return (None, {**self.wb.owned(session, request), "last": None}, gr.skip(), *cleared_panels(said), said)
        return (record, session, *self.show_prediction(session, request), predicted_hint(record))

    def show_prediction(self, session: dict, request: gr.Request = None):
        """Everything the Predict tab shows about the last prediction, and a cleared feedback form."""
        record = self.wb.owned(session, request).get("last")
        if not record:
            return (None, *cleared_panels(""))
        label_value = ({c["relation"]: c["deciding_score"] for c in record["candidates_detail"]} if record["reranked"]
                       else record["label"])
        summary = summary_text(record)
        if known := self.dataset_label(record):
            summary += "\n" + dataset_label_text(record, known)
        return (
            highlighted(record["sentence"], tuple(record["head"]), tuple(record["tail"])),
            label_value,
            summary,
            plots.recall_html(record),
            plots.why_html(record),
            plots.rerank_table(record),
            plots.attention_html(record),
            plots.latency_text(record),
            gr.update(choices=list(record["relations"]), value=None),
            None, "", "",  # verdict, note, feedback status
        )

    # ------------------------------------------------------------------ layout

    def build(self, session: gr.State, chips=None) -> PredictParts:
        """The tab's components and its own events (the feedback form is wired by `feedback_tab`).

        `chips(tab, sentence, head, tail, spans, marked, hint)` adds entity suggestions under the marking
        (`extract_tab`); `self.predict_inputs` / `self.predict_outputs` let another tab run the Predict button's handler.
        """
        first = self.wb.examples[0] if self.wb.examples else None
        spans = gr.State({"head": first["head"], "tail": first["tail"]} if first else {})
        with gr.Row():
            with gr.Column(scale=3):
                sentence, head, tail, marked, hint, buttons = self._marking_column(first)
                if chips:
                    chips(self, sentence, head, tail, spans, marked, hint)
            with gr.Column(scale=2):
                label = gr.Label(label="Prediction", elem_id="label")
                summary = gr.Textbox(label="In words", interactive=False, lines=3, elem_id="summary")
                latency = gr.Markdown(elem_id="latency")
                with gr.Accordion("Give feedback on this prediction", open=True):
                    verdict = lenient(gr.Radio([("Correct", "correct"), ("Wrong", "wrong")], label="Was it right?", elem_id="verdict"))
                    correct_relation = gr.Dropdown(
                        [], label="Correct relation (if wrong: pick one, or type a new name to teach a new relation by this sentence)",
                        allow_custom_value=True,
                        elem_id="correct-relation", value=None,
                    )
                    note = gr.Textbox(label="Note (optional)", lines=1, elem_id="note")
                    feedback_btn = gr.Button("Save feedback", elem_id="submit-feedback")
                    feedback_status = gr.Textbox(show_label=False, interactive=False, elem_id="feedback-status", container=False)
        if self.wb.examples:
            gr.Examples(
                [[e["text"], e["head_text"], e["tail_text"]] for e in self.wb.examples],
                inputs=[sentence, head, tail], outputs=[spans, marked, hint], fn=self.example_spans, run_on_click=True,
                label="Examples (FewRel validation sentences, entities already marked)", elem_id="examples",
                api_visibility="private", cache_examples=False,
            )
        recall_plot, why, rerank, attention_plot, prediction_json = self._explain_panels()
        parts = PredictParts(sentence, head, tail, spans, marked, hint, verdict, correct_relation, note, feedback_btn, feedback_status)
        self._wire_marking(parts, session, *buttons)
        panels = [marked, label, summary, recall_plot, why, rerank, attention_plot, latency, correct_relation, verdict, note, feedback_status]
        self.parts, self.predict_inputs = parts, [sentence, head, tail, spans, session]
        self.predict_outputs = [prediction_json, session, *panels, hint]
        # Progress shows on the Prediction panel alone, not on each of the twelve; a refusal is no error event
        # (`predict_and_show` clears the panels and says why), so no panel is left marked "Error".
        self.predict_event = dict(**MODEL, **PRIVATE, show_progress_on=label)
        buttons[-1].click(self.predict_and_show, self.predict_inputs, self.predict_outputs, **self.predict_event)
        # The /predict API returns the prediction alone; its button never shows (the page uses predict_and_show).
        # Not queued: the model's thread is its queue (see API_PREDICTIONS), and a direct POST spares the client the
        # queue's event stream and the server its handling (README, "Load").
        gr.Button(visible=False).click(self.predict_api, [sentence, head, tail, spans, session], [prediction_json, session],
                                       api_name="predict", queue=False, **MODEL)
        return parts

    def _marking_column(self, first):
        sentence = gr.Textbox(
            first["text"] if first else "", label="Sentence (select words, then press Head or Tail)",
            lines=3, max_lines=8, elem_id="sentence",
        )
        with gr.Row():
            head_btn = gr.Button("Head ← selection", elem_id="mark-head", size="sm")
            tail_btn = gr.Button("Tail ← selection", elem_id="mark-tail", size="sm")
            clear_btn = gr.Button("Clear", elem_id="clear-marks", size="sm")
        with gr.Row():
            head = gr.Textbox(first["head_text"] if first else "", label="Head entity (subject)", elem_id="head")
            tail = gr.Textbox(first["tail_text"] if first else "", label="Tail entity (object)", elem_id="tail")
        marked = gr.HighlightedText(
            label="Marked sentence", elem_id="marked", color_map={"HEAD": "#f4a261", "TAIL": "#2a9d8f"},
            show_legend=False, combine_adjacent=False,
        )
        hint = gr.Textbox(show_label=False, interactive=False, lines=1, elem_id="mark-hint", container=False)
        predict_btn = gr.Button("Predict the relation", variant="primary", elem_id="predict")
        return sentence, head, tail, marked, hint, (head_btn, tail_btn, clear_btn, predict_btn)

    @staticmethod
    def _explain_panels():
        gr.Markdown(HELP_RECALL, elem_classes="panel-help")
        recall_plot = gr.HTML(plots.placeholder("Recall scores appear here after Predict."), label="Recall scores",
                              elem_id="recall-plot")
        gr.Markdown(HELP_WHY, elem_classes="panel-help")
        why = gr.HTML("", label="Why: your labelled sentences most like this one", elem_id="why")
        gr.Markdown(HELP_RERANK, elem_classes="panel-help")
        rerank = gr.Dataframe(plots.rerank_table(None), label="Reranking: recall rank → classifier rank", interactive=False,
                              elem_id="rerank", wrap=True)
        gr.Markdown(HELP_ATTENTION, elem_classes="panel-help")
        attention_plot = gr.HTML(plots.placeholder("Attention weights appear here after Predict."),
                                 label="Attention of the two virtual entities over description words", elem_id="attention-plot")
        with gr.Accordion("Raw prediction (JSON, as returned by the /predict API)", open=False):
            prediction_json = gr.JSON(elem_id="prediction-json")
        return recall_plot, why, rerank, attention_plot, prediction_json

    def _wire_marking(self, p: PredictParts, session: gr.State, head_btn, tail_btn, clear_btn, _predict_btn) -> None:
        # The selection travels with the click (READ_SELECTION); this JSON box is only its slot.
        selection = gr.JSON(visible=False)
        marks = [p.head, p.tail, p.spans, p.marked, p.hint]
        head_btn.click(self.mark_head, [p.sentence, selection, p.head, p.tail, p.spans], marks, js=READ_SELECTION, **QUIET)
        tail_btn.click(self.mark_tail, [p.sentence, selection, p.head, p.tail, p.spans], marks, js=READ_SELECTION, **QUIET)
        clear_btn.click(self.clear_marks, [p.sentence], marks, **QUIET)
        # Every box previews on `.change`, which also catches a paste (Gradio's `.input` fires on key presses only and
        # would leave the old marks and "Ready" on show). The preview writes no state: a typed entity is looked up
        # wherever its marked span no longer holds that text (`resolve_entity`), so the extra runs after a handler
        # sets these boxes only redraw the marks from the same values.
        for box in (p.sentence, p.head, p.tail):
            box.change(self.preview, [p.sentence, p.head, p.tail, p.spans, session], [p.marked, p.hint], trigger_mode="always_last",
                       **QUIET)


def cleared_panels(summary: str) -> tuple:
    """The panels after the marked sentence (Prediction to feedback status) with no prediction on show; `summary` goes
    where the prediction is put in words."""
    return (None, summary, plots.placeholder("Recall scores appear here after Predict."), "", plots.rerank_table(None),
            plots.placeholder("Attention weights appear here after Predict."), "", gr.update(), None, "", "")


HELP_RECALL = f"""**Stage 1, recall.** The sentence (with its two entities) and every relation description are turned
into vectors; each bar is how similar the sentence is to one description (for a relation with n labelled examples, mixed
with the examples' similarity, which counts n / (n + {EXAMPLES_LIKE_DESCRIPTION}): a single example little,
{EXAMPLES_LIKE_DESCRIPTION} examples as much as the description, {EXAMPLES_COUNTED} or more {EXAMPLES_COUNTED // EXAMPLES_LIKE_DESCRIPTION} times as much; the markers show both;
examples match any sentence a little better than descriptions do, so such a relation's score is lowered by part of
that difference, and beside relations of your own the catalogue's are lowered a little, so that they do not take
your relations' sentences: the chart's footnote gives the figures). The orange top-k go to stage 2."""

HELP_WHY = """**Why: your labelled examples.** Every sentence you judged (Correct, or Wrong with the correct relation) is an
example of its relation and counts at once: recall mixes the description's similarity with the examples'. For the top
candidates, the three labelled sentences most like this one, with their cosine similarity."""

HELP_RERANK = """**Stage 2, classifier.** A second model reads the sentence together with each of the k descriptions and
gives probabilities. Models that combine the two stages multiply them with recall's own confidence ("combined"), so a
hesitant classifier does not overrule a sure recall. The classifier reads only descriptions, so when the candidates have
labelled examples its vote counts as much as their descriptions count in recall. When the pick is not recall's #1,
stage 2 has corrected recall."""

HELP_ATTENTION = """**Why these descriptions?** Each description is summarised twice, once for the head entity and once for the
tail (two "virtual entities"). Each row shows how much weight each word of the description got."""
