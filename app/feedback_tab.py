"""Feedback: saving a judgement of the last prediction (the form on the Predict tab) and the
Feedback tab (the caller's saved rows, filters, exports for retraining; everyone's rows for admins).

A judgement with a known correct relation (Correct, or Wrong with the relation given) also makes
the sentence an example of that relation for its owner, in the same transaction, so the owner's
next prediction uses it. One example per sentence and spans: judging it again replaces it.
"""

from __future__ import annotations

import hashlib
import html
import json

import gradio as gr
import pandas as pd

from emma import relation_text

from .predict_tab import PredictParts, predicted_here
from .records import feedback_row, write_feedback_exports
from .session import BadInput, check_relation, shown, with_user_relation
from .storage import add_user_relation, forget_requests, insert_feedback, other_examples, replace_example
from .workbench import DB, PRIVATE, QUIET, Workbench, lenient, user_errors, warn

VERDICTS = ("correct", "wrong")
MAX_NOTE_CHARS = 2000
MAX_TABLE_ROWS = 500  # rows the Feedback tab lists (newest first)
MAX_EXPORT_ROWS = 20000  # rows one export may hold
MAX_QUERY_CHARS = 200
MAX_EXAMPLES = 10000  # labelled examples per owner
COLUMNS = ["number", "created", "verdict", "sentence", "head_text", "tail_text", "predicted", "score", "user_label", "note", "checkpoint"]


NEW_RELATION = (" '{label}' is a new relation of yours, defined by this example alone; label more sentences of it, "
                "or describe it on the Relations tab, to make it surer.")


def shown_time(stamp) -> str:
    """A stored ISO time ("2026-12-06T09:53:10.123+00:00") as "2026-12-06 09:53 UTC"; anything else as it is."""
    text = str(stamp or "")
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 and text[10] == "T" and text.endswith("+00:00") else text


def example_status(label: str | None, before: str | None, in_force: bool, full: bool) -> str:
    """What a judgement did to the sentence's labelled example, as a sentence for the status line."""
    if full:
        return (f" You have {MAX_EXAMPLES} labelled examples already, so this sentence was not kept as one; "
                "remove some on the Relations tab.")
    if not label:
        return f" The sentence is no longer an example of '{before}'." if before else ""
    text = f" It is now an example of '{label}'"
    if before and before != label:
        text += f" (it was one of '{before}')"
    if not in_force:
        return text + f"; '{label}' is not in force, so the example is kept but counts only once you switch it on."
    return text + ", used from your next prediction."


def page_request_prefix(record: dict) -> str | None:
    """What every request id `page_request_id` gives one prediction starts with (None: the record has no id)."""
    return f"page:{record['id']}:" if record.get("id") else None


def page_request_id(record: dict, verdict: str, label: str | None, note: str | None) -> str | None:
    """The request id of a judgement sent without one: the prediction's id and a digest of what was judged.

    Only the latest judgement of a prediction is remembered under it (the feedback handler forgets the
    others), so a double click saves once, while judging P, then X, then P again saves all three."""
    prefix = page_request_prefix(record)
    if prefix is None:
        return None
    judged = json.dumps([verdict, label, note], ensure_ascii=False).encode("utf-8")
    return prefix + hashlib.sha256(judged).hexdigest()[:16]


class FeedbackTab:
    """Handlers of the feedback form and the Feedback tab over the shared `Workbench`."""

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    @user_errors
    def feedback(self, verdict: str, correct_relation: str | None, note: str | None, session: dict, request_id: str = "",
                 request: gr.Request = None) -> tuple[dict, str]:
        """Save a judgement of the last prediction. Returns (session, status line).

        A correct relation that is none of the user's relations (nor a catalogue one) becomes a new
        relation of theirs, defined by this sentence alone (no description), in the same transaction.
        `request_id` (optional, from API clients): a repeated id returns the first status line and writes nothing.
        """
        session = self.wb.current(session, request)  # a relation another tab added is not created again
        record = session.get("last")
        if not record:
            raise BadInput("Predict a relation first; feedback refers to the last prediction.")
        verdict = verdict.strip().lower() if isinstance(verdict, str) else ""
        if verdict not in VERDICTS:
            raise BadInput("Choose whether the prediction was correct or wrong.")
        if correct_relation is not None and not isinstance(correct_relation, str):
            raise BadInput("The correct relation should be a relation name.")
        label = " ".join((correct_relation or "").split()) or None
        note = (note or "").strip() or None
        if label and len(label) > 100:
            raise BadInput("The relation name is longer than 100 characters.")
        if note and len(note) > MAX_NOTE_CHARS:
            raise BadInput(f"The note is longer than {MAX_NOTE_CHARS} characters.")
        if verdict == "correct":
            if label and label != record["label"]:
                raise BadInput("You marked the prediction correct but chose another relation; choose Wrong, or clear the relation.")
            label = record["label"]
        elif label == record["label"]:
            raise BadInput("You marked the prediction wrong but chose the predicted relation; choose the correct one.")
        # The page sends no id: the same judgement of the same prediction (a double click) is then saved once.
        forget = None if request_id else page_request_prefix(record)
        request_id = request_id or page_request_id(record, verdict, label, note)
        prior = self.wb.replay(session, request_id, "feedback")
        if prior is not None:
            return session, prior
        relations = self.wb.relations(session)
        session, label_text, created = self._correct_relation(session, record, label, relations)
        row = feedback_row(record, session["owner"], verdict, label, label_text, note)
        what = f"the correct relation is '{label}'" if label else "correct relation not given"
        in_force = bool(label) and (label in relations or label in session["user"])
        owner, words, head, tail = session["owner"], record["tokens"], record["head_tokens"], record["tail_tokens"]

        def write(db):
            if forget:  # an earlier, different judgement of this prediction: repeating it later saves it again
                forget_requests(db, owner, forget)
            # Insert only: a relation of this name saved meanwhile (by another tab) keeps its description.
            added = created and add_user_relation(db, owner, label, "", label_text)
            feedback_id, number = insert_feedback(db, row, record["relations"])
            full = bool(label) and other_examples(db, owner, words, head, tail) >= MAX_EXAMPLES
            before = replace_example(db, owner, words, head, tail, None if full else label, feedback_id)
            status = f"Saved feedback #{number}: {verdict} ({what}).{example_status(label, before, in_force, full)}"
            return status + (NEW_RELATION.format(label=label) if added and not full else "")

        return self.wb.once(session, request_id, "feedback", write)

    def feedback_on_screen(self, verdict: str, correct_relation: str | None, note: str | None, sentence: str, head: str,
                           tail: str, spans: dict | None, session: dict, request: gr.Request = None) -> tuple[dict, str]:
        """The page's Save feedback: `feedback`, refused when the sentence or entities on screen are no longer the
        ones last predicted (the panels still show that prediction, and the judgement would be saved against it).
        A refusal is a toast and "Not saved: …" in the status line under the button, which the next prediction clears
        (an error event would leave its mark there)."""
        try:
            record = self.wb.owned(session, request).get("last")
            if record and not predicted_here(record, sentence, head, tail, spans):
                raise BadInput("The sentence or its entities changed since the last prediction: press Predict, then "
                               "judge the prediction it shows.")
            return self.feedback(verdict, correct_relation, note, session, "", request)
        except (BadInput, gr.Error) as e:
            message = str(e) if isinstance(e, BadInput) else e.message
            warn(message)
            return gr.skip(), f"Not saved: {html.unescape(message)}"  # the status line shows plain text, the toast HTML

    def _correct_relation(self, session: dict, record: dict, label: str | None,
                          relations: dict[str, str]) -> tuple[dict, str | None, bool]:
        """(session, the text of the correct relation `label`, whether it is a new relation of the user's), given
        the `relations` in force.

        A label the prediction did not offer is one of the user's relations, a catalogue relation (switched
        off: the example waits), or a new name: a relation defined by this example alone."""
        if not label:
            return session, None, False
        text = record["relations"].get(label) or relations.get(label)
        if text:
            return session, text, False
        if label in session["user"]:  # defined by examples, none yet
            return session, relation_text(label, ""), False
        if label in self.wb.catalogue.by_label:
            return session, self.wb.catalogue.by_label[label].text, False
        name, description, text = check_relation(session, self.wb.catalogue, label, "", editing=False)
        return with_user_relation(session, name, description), text, True

    @user_errors
    def feedback_view(self, verdict: str, contains: str, everyone: bool, session: dict, request: gr.Request = None) -> pd.DataFrame:
        """The caller's feedback rows (everyone's for an admin who asks), newest first; owner ids only for admins."""
        frame = self._frame(verdict, contains, everyone, session, request, MAX_TABLE_ROWS)
        # Shown rounded and as "2026-12-06 09:53 UTC" (the exports keep the full values).
        frame = frame.assign(score=frame["score"].round(3), created=frame["created"].map(shown_time))
        return frame[["owner"] + COLUMNS if everyone else COLUMNS].fillna("")  # an admin reads whose row first

    def _frame(self, verdict, contains, everyone, session, request, limit: int) -> pd.DataFrame:
        if everyone and not self.wb.identity.is_admin(request):
            raise BadInput("Only an admin (app.py --admin USER) can see everyone's feedback.")
        owner = None if everyone else self.wb.owned(session, request)["owner"]
        contains = contains[:MAX_QUERY_CHARS] if isinstance(contains, str) else ""
        return self.wb.store.feedback(owner=owner, verdict=verdict if verdict in VERDICTS else None, contains=contains,
                                      limit=limit)

    @user_errors
    def export_feedback(self, verdict: str, contains: str, everyone: bool, session: dict,
                        request: gr.Request = None) -> tuple[list[str], str]:
        """Write the filtered rows as FewRel-style JSONL, the labels' descriptions, and CSV. Returns (paths, status)."""
        frame = self._frame(verdict, contains, everyone, session, request, MAX_EXPORT_ROWS + 1)
        if len(frame) > MAX_EXPORT_ROWS:
            raise BadInput(f"More than {MAX_EXPORT_ROWS} rows match; narrow the filters to export at most {MAX_EXPORT_ROWS} at once.")
        paths = write_feedback_exports(frame, self.wb.export_folder(), self.wb.store)
        with open(paths[0], encoding="utf-8") as f:
            labelled = sum(1 for line in f if line.strip())
        skipped = len(frame) - labelled
        status = f"Exported {labelled} labelled rows to JSONL and {len(frame)} rows to CSV."
        if skipped:
            status += f" {skipped} rows marked wrong without a correct relation are only in the CSV."
        return self.wb.private_files(paths), status

    def build(self, tab: gr.Tab, session: gr.State, form: PredictParts) -> gr.Checkbox:
        """The Feedback tab (call inside `tab`) and the Predict tab's form. Returns the admins' checkbox."""
        with gr.Row():
            verdict = lenient(gr.Dropdown([("all", "all"), ("correct", "correct"), ("wrong", "wrong")], value="all",
                                          label="Verdict", elem_id="fb-verdict"))
            contains = gr.Textbox(label="Contains (sentence, relation or note)", elem_id="fb-contains")
            everyone = gr.Checkbox(label="Everyone's feedback (admins only)", value=False, visible=False, elem_id="fb-everyone")
            refresh = gr.Button("Refresh", size="sm", elem_id="fb-refresh")
        table = gr.Dataframe(label="Saved feedback (newest first)", interactive=False, elem_id="fb-table", wrap=True)
        with gr.Row():
            export = gr.Button("Export shown rows: JSONL (FewRel format) + descriptions + CSV", elem_id="fb-export")
        status = gr.Textbox(show_label=False, interactive=False, elem_id="fb-status", container=False)
        files = gr.File(label="Exports (train with: python -m emma train --data feedback.jsonl --descriptions descriptions.json)",
                        file_count="multiple", interactive=False, elem_id="fb-files")

        filters = [verdict, contains, everyone, session]
        form.feedback_btn.click(
            self.feedback_on_screen, [form.verdict, form.correct_relation, form.note, form.sentence, form.head, form.tail,
                                      form.spans, session], [session, form.feedback_status], **PRIVATE, **DB,
        ).success(self.feedback_view, filters, [table], **QUIET)
        # /feedback for API clients judges their last /predict (they have no boxes); its button never shows.
        request_id = gr.Textbox("", visible=False, label="request_id")  # optional idempotency key
        gr.Button(visible=False).click(self.feedback, [form.verdict, form.correct_relation, form.note, session, request_id],
                                       [session, form.feedback_status], api_name="feedback", **DB)
        for trigger in (refresh.click, verdict.change, everyone.change, contains.submit, tab.select):
            trigger(self.feedback_view, filters, [table], **QUIET)
        export.click(self.export_feedback, filters, [files, status], **PRIVATE)
        return everyone
