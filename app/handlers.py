"""Event handlers of the workbench: plain methods returning values, tables and plotly figures.

`Workbench` holds what every session shares (the `Engine` with the one loaded model, the `Store`,
the catalogue); everything per user arrives as arguments (the session dict from `gr.State`) and
leaves as return values, so handlers can be called directly in tests. Bad input raises `gr.Error`
with one plain sentence (through `BadInput`), before anything is written.

Who owns a session's relations and feedback ("owner", see `identity`): the logged-in user
("user:NAME") with --auth, checked on every event against the request, so a session hash taken
from another user opens nothing of theirs; otherwise an HMAC of a random token the server gave the
browser ("browser:HMAC", so a reload or a restart finds the same relations); for an API client
without a page load, an HMAC of its session hash ("session:HMAC"). Only admins see others' rows.
"""

from __future__ import annotations

import copy
import functools
import html
import json
import logging
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from emma import DataError, instance_from_text

from . import plots
from .catalogue import Catalogue
from .engine import MAX_SENTENCE_CHARS, Engine
from .identity import Identity, username
from .records import feedback_row, prediction_record, public_record, summary_text, write_feedback_exports
from .session import (
    BadInput,
    check_relation,
    highlighted,
    new_session,
    parse_relation_set,
    relation_text,
    relations_in_force,
    resolve_entities,
    resolve_entity,
    selection_span,
    sentence_case,
    shown,
    with_enabled,
    with_user_relation,
    without_user_relation,
)
from .storage import Store

logger = logging.getLogger(__name__)

VERDICTS = ("correct", "wrong")
MAX_NOTE_CHARS = 2000


def user_errors(fn):
    """Turn `BadInput` into `gr.Error` (shown as a toast; the event's outputs stay unchanged)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            raise gr.Error(str(e), print_exception=False) from None

    return wrapper


def warn(message: str) -> None:
    """A recoverable problem: a yellow toast in the UI, a Python warning elsewhere."""
    gr.Warning(message)


class Workbench:
    """Shared resources plus all handlers.

    Args:
        engine: the shared model and description cache.
        store: the SQLite store.
        catalogue: the default relation catalogue.
        examples: example sentences (see `catalogue.load_examples`).
        admins: logins that may view and export everyone's feedback (only meaningful with --auth).
    """

    def __init__(self, engine: Engine, store: Store, catalogue: Catalogue, examples: list[dict] | None = None,
                 admins=()) -> None:
        self.engine = engine
        self.store = store
        self.catalogue = catalogue
        self.examples = examples or []
        self.identity = Identity(store.secret("owner_key"), admins)
        # Exported files live in one folder removed when the process ends (Gradio serves copies from its cache).
        self._exports = tempfile.TemporaryDirectory(prefix="emma-workbench-exports-")
        engine.encode([e.text for e in catalogue.entries], pin=True)

    def _export_folder(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self._exports.name))

    # ------------------------------------------------------------------ sessions

    def new_session(self) -> dict:
        return new_session(self.catalogue)

    def open_session(self, owner: str) -> dict:
        """A session for `owner` with the relations saved for them."""
        session = self.new_session()
        session["owner"] = owner
        enabled = self.store.workspace(owner)
        if enabled is not None:
            session["enabled"] = [label for label in enabled if label in self.catalogue.by_label]
        session["user"] = self.store.user_relations(owner)
        if session["user"]:
            self.engine.encode([relation_text(n, d) for n, d in session["user"].items()])
        return session

    def load(self, token: str | None, request: gr.Request = None):
        """Page load: find the owner (login name, else this browser's token) and their saved relations.

        Returns (session, the browser's token, update showing "Everyone's feedback" to admins only).
        A token the server did not issue in its format is replaced by a new one (a new workspace).
        """
        if not self.identity.valid_token(token):
            token = self.identity.issue_token()
        name = username(request)
        owner = f"user:{name}" if name else self.identity.browser_owner(token)
        return self.open_session(owner), token, gr.update(visible=self.identity.is_admin(request))

    def _owned(self, session: dict | None, request: gr.Request | None) -> dict:
        """The session of whoever sent `request`.

        With --auth the login decides: a session owned by anyone else (a session hash reused by
        another user) is replaced by the caller's own. Without --auth the server-side session's
        owner stands; API clients never fire the page-load event, so theirs is set here.
        """
        name = username(request)
        if name:
            if session and session.get("owner") == f"user:{name}":
                return session
            return self.open_session(f"user:{name}")
        if session and session.get("owner"):
            return session
        fresh = copy.deepcopy(session) if session else self.new_session()
        fresh["owner"] = self.identity.session_owner(getattr(request, "session_hash", None))
        return fresh

    def relations(self, session: dict) -> dict[str, str]:
        return relations_in_force(session, self.catalogue)

    # ------------------------------------------------------------------ marking entities

    def remember_selection(self, sentence: str, evt: gr.SelectData) -> list[int] | None:
        """Textbox select event → the selected character span (or None)."""
        span = selection_span(sentence or "", evt.index, evt.value)
        return list(span) if span else None

    def mark(self, role: str, sentence: str, selection: list[int] | None, head: str, tail: str, spans: dict | None):
        """Head / Tail button: the current selection becomes that entity. Returns (head, tail, spans)."""
        spans = dict(spans or {})
        sentence = sentence or ""
        if not selection or selection[1] > len(sentence) or not sentence[selection[0] : selection[1]].strip():
            warn(f"Select some words of the sentence first, then press {role.capitalize()}.")
            return head, tail, spans
        s, e = selection
        other, other_text = ("tail", tail) if role == "head" else ("head", head)
        o = spans.get(other)
        still_marked = o and sentence[o[0] : o[1]].strip() == (other_text or "").strip()  # not left over from another sentence
        if still_marked and s < o[1] and o[0] < e:
            warn(f"That selection overlaps the {other} entity; select other words.")
            return head, tail, spans
        spans[role] = [s, e]
        text = sentence[s:e]
        return (text, tail, spans) if role == "head" else (head, text, spans)

    def forget_head(self, spans: dict | None) -> dict:
        """The head was typed by hand: drop its marked span (the typed text is looked up instead)."""
        return {k: v for k, v in (spans or {}).items() if k != "head"}

    def forget_tail(self, spans: dict | None) -> dict:
        return {k: v for k, v in (spans or {}).items() if k != "tail"}

    def clear_marks(self) -> tuple[str, str, dict, None]:
        return "", "", {}, None

    def example_spans(self, sentence: str, head: str, tail: str) -> dict:
        """The exact spans of a clicked example (looked up by its text)."""
        for ex in self.examples:
            if ex["text"] == sentence and ex["head_text"] == head and ex["tail_text"] == tail:
                return {"head": list(ex["head"]), "tail": list(ex["tail"])}
        return {}

    def mark_head(self, sentence, selection, head, tail, spans):
        return self.mark("head", sentence, selection, head, tail, spans)

    def mark_tail(self, sentence, selection, head, tail, spans):
        return self.mark("tail", sentence, selection, head, tail, spans)

    def preview(self, sentence: str, head: str, tail: str, spans: dict | None) -> tuple[dict, str]:
        """The marked sentence and a hint (no toasts: this runs while the user types)."""
        if not (sentence or "").strip():
            return highlighted("", None, None), "Type or paste a sentence, or pick an example below."
        try:
            h, t = resolve_entities(sentence, head, tail, spans)
        except BadInput as e:
            # The hint box shows plain text; the message was HTML-escaped for toasts.
            return highlighted(sentence, *self._partial_marks(sentence, head, tail, spans)), html.unescape(str(e))
        hint = "Ready: press Predict."
        n = self.engine.count_pieces(sentence)
        if n > self.engine.sentence_window:
            hint = (f"Ready, but the sentence has {n} word pieces and the model reads {self.engine.sentence_window}: "
                    "only the words nearest the entities are used.")
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
        session = self._owned(session, request)
        sentence = sentence or ""
        if len(sentence) > MAX_SENTENCE_CHARS:
            raise BadInput(f"The sentence has {len(sentence)} characters; the workbench takes at most {MAX_SENTENCE_CHARS}.")
        h, t = resolve_entities(sentence, head, tail, spans)
        relations = self.relations(session)
        if not relations:
            raise BadInput("No relation is switched on; enable some in the Relations tab or add your own.")
        warnings_ = []
        n = self.engine.count_pieces(sentence)
        if n > self.engine.sentence_window:
            warnings_.append(f"The sentence has {n} word pieces but the model reads {self.engine.sentence_window}; "
                             "only the words nearest the entities were used.")
            warn(warnings_[-1])
        try:
            instance = instance_from_text(sentence, h, t)
            prediction = self.engine.predict(sentence, h, t, relations)
        except DataError as e:
            raise BadInput(sentence_case(str(e))) from None
        timings = {**prediction.timings_ms, "total": (time.perf_counter() - t0) * 1e3}
        record = prediction_record(sentence, h, t, instance, prediction, relations, self.engine.checkpoint_id, timings, warnings_)
        session = copy.deepcopy(session)
        session["last"] = record
        return public_record(record), session

    def show_prediction(self, session: dict, request: gr.Request = None):
        """Everything the Predict tab shows about the last prediction."""
        record = self._owned(session, request).get("last")
        if not record:
            return (None, None, "", None, None, None, "", gr.update())
        summary = summary_text(record)
        label_value = ({c["relation"]: c["deciding_score"] for c in record["candidates_detail"]} if record["reranked"]
                       else record["label"])
        choices = list(record["relations"])
        return (
            highlighted(record["sentence"], tuple(record["head"]), tuple(record["tail"])),
            label_value,
            summary,
            plots.recall_figure(record),
            plots.rerank_table(record),
            plots.attention_figure(record),
            plots.latency_text(record),
            gr.update(choices=choices, value=None),
        )

    # ------------------------------------------------------------------ catalogue

    def catalogue_view(self, query: str, session: dict, request: gr.Request = None):
        """(checkbox group update, table of matches, count line) for a search query."""
        session = self._owned(session, request)
        matches = self.catalogue.search(query)
        enabled = set(session["enabled"])
        choices = [(f"{e.label} · {e.id} · {e.source}", e.label) for e in matches]
        value = [e.label for e in matches if e.label in enabled]
        table = pd.DataFrame(
            [{"on": "✔" if e.label in enabled else "", "relation": e.label, "id": e.id, "source": e.source, "description": e.text}
             for e in matches],
            columns=["on", "relation", "id", "source", "description"],
        )
        return gr.update(choices=choices, value=value), table, self.count_text(session, len(matches))

    def relation_views(self, query: str, session: dict, request: gr.Request = None):
        """Everything the Relations tab shows: catalogue checkboxes, catalogue table, count, your relations."""
        session = self._owned(session, request)
        return (*self.catalogue_view(query, session), self.user_relations_view(session))

    def count_text(self, session: dict, matches: int | None = None) -> str:
        n_cat = len(session["enabled"])
        n_user = len(session["user"])
        shown_part = f" · {matches} match the search" if matches is not None and matches != len(self.catalogue) else ""
        return (f"**{n_cat + n_user} relations in force**: {n_cat} of {len(self.catalogue)} catalogue relations "
                f"and {n_user} of your own{shown_part}.")

    @user_errors
    def set_shown_enabled(self, selected: list[str], query: str, session: dict, request: gr.Request = None) -> dict:
        """The checkbox group changed: the shown relations become `selected`; hidden ones keep their state."""
        session = self._owned(session, request)
        shown_labels = {e.label for e in self.catalogue.search(query)}
        keep = [label for label in session["enabled"] if label not in shown_labels] + list(selected or [])
        return self._save_enabled(with_enabled(session, self.catalogue, keep))

    @user_errors
    def switch_shown(self, on: bool, query: str, session: dict, request: gr.Request = None) -> dict:
        session = self._owned(session, request)
        shown_labels = [e.label for e in self.catalogue.search(query)]
        if on:
            keep = session["enabled"] + shown_labels
        else:
            keep = [label for label in session["enabled"] if label not in set(shown_labels)]
        return self._save_enabled(with_enabled(session, self.catalogue, keep))

    def enable_shown(self, query, session, request: gr.Request = None):
        return self.switch_shown(True, query, session, request)

    def disable_shown(self, query, session, request: gr.Request = None):
        return self.switch_shown(False, query, session, request)

    @user_errors
    def reset_catalogue(self, session: dict, request: gr.Request = None) -> dict:
        session = self._owned(session, request)
        return self._save_enabled(with_enabled(session, self.catalogue, self.catalogue.defaults()))

    def _save_enabled(self, session: dict) -> dict:
        self.store.save_workspace(session["owner"], session["enabled"])
        return session

    # ------------------------------------------------------------------ user relations

    @user_errors
    def add_relation(self, name: str, description: str, session: dict, request: gr.Request = None) -> tuple[dict, str]:
        """Add a relation of your own; it is live at once (one encoder pass). Returns (session, status)."""
        return self._save_relation(name, description, session, request, editing=False)

    @user_errors
    def edit_relation(self, name: str, description: str, session: dict, request: gr.Request = None) -> tuple[dict, str]:
        """Change the description of one of your relations. Returns (session, status)."""
        return self._save_relation(name, description, session, request, editing=True)

    def _save_relation(self, name, description, session, request, editing: bool):
        session = self._owned(session, request)
        name, description, text = check_relation(session, self.catalogue, name, description, editing)
        n = self.engine.count_pieces(text)
        self.engine.encode([text])  # encode before saving: an encoder failure saves nothing
        self.store.save_user_relation(session["owner"], name, description, text)
        session = with_user_relation(session, name, description)
        total = len(self.relations(session))
        status = f"{'Updated' if editing else 'Added'} '{name}'; {total} relations in force."
        if n > self.engine.description_window:
            status += f" Only its first {self.engine.description_window} of {n} word pieces are read."
            warn(f"The description of {shown(name)} is long: the model reads only its first {self.engine.description_window} word pieces.")
        return session, status

    @user_errors
    def delete_relation(self, name: str, session: dict, request: gr.Request = None) -> tuple[dict, str]:
        """Delete one of your relations. Returns (session, status)."""
        session = self._owned(session, request)
        session = without_user_relation(session, name)
        name = " ".join(name.split())
        self.store.delete_user_relation(session["owner"], name)
        return session, f"Deleted '{name}'; {len(self.relations(session))} relations in force."

    def user_relations_view(self, session: dict) -> pd.DataFrame:
        rows = [{"relation": n, "description": d, "text the model reads": relation_text(n, d)} for n, d in session["user"].items()]
        return pd.DataFrame(rows, columns=["relation", "description", "text the model reads"])

    def pick_user_relation(self, session: dict, evt: gr.SelectData, request: gr.Request = None) -> tuple[str, str]:
        """Clicking a row of your relations puts it into the form for editing."""
        row = evt.row_value or []
        mine = self._owned(session, request)["user"]
        name = row[0] if row and row[0] in mine else ""
        return name, mine.get(name, "")

    def export_relations(self, session: dict, request: gr.Request = None) -> str:
        """The relations in force as {name: text} JSON (the `--descriptions` format of `python -m emma train`)."""
        session = self._owned(session, request)
        path = self._export_folder() / "relations.json"
        path.write_text(json.dumps(self.relations(session), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return str(path)

    @user_errors
    def import_relations(self, path: str | None, session: dict, request: gr.Request = None) -> tuple[dict, str]:
        """Load a relation set: its catalogue relations become the enabled ones, the rest your own."""
        session = self._owned(session, request)
        if not path:
            raise BadInput("Choose a JSON file to import.")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise BadInput("The file is not valid JSON.") from None
        enabled, user = parse_relation_set(data, self.catalogue)
        trial = with_enabled(session, self.catalogue, enabled)
        trial["user"] = {n: d for n, d in trial["user"].items() if n not in user}
        for name, description in user.items():
            check_relation(trial, self.catalogue, name, description, editing=False)
            trial = with_user_relation(trial, name, description)
        texts = {n: relation_text(n, d) for n, d in user.items()}
        self.engine.encode(list(texts.values()))
        self.store.replace_user_relations(trial["owner"], {n: (user[n], texts[n]) for n in user}, trial["enabled"])
        return trial, (f"Imported {len(enabled)} catalogue and {len(user)} own relations; "
                       f"{len(self.relations(trial))} relations in force.")

    # ------------------------------------------------------------------ feedback

    @user_errors
    def feedback(self, verdict: str, correct_relation: str | None, note: str | None, session: dict, request: gr.Request = None) -> str:
        """Save a judgement of the last prediction. Returns a status line."""
        session = self._owned(session, request)
        record = session.get("last")
        if not record:
            raise BadInput("Predict a relation first; feedback refers to the last prediction.")
        verdict = (verdict or "").strip().lower()
        if verdict not in VERDICTS:
            raise BadInput("Choose whether the prediction was correct or wrong.")
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
        now_relations = self.relations(session)
        label_text = (record["relations"].get(label) or now_relations.get(label)) if label else None
        row = feedback_row(record, session["owner"], verdict, label, label_text, note)
        row_id = self.store.add_feedback(row, record["relations"])
        what = f"the correct relation is '{label}'" if label else "correct relation not given"
        return f"Saved feedback #{row_id}: {verdict} ({what})."

    @user_errors
    def feedback_view(self, verdict: str, contains: str, everyone: bool, session: dict, request: gr.Request = None) -> pd.DataFrame:
        """The caller's feedback rows (everyone's for an admin who asks), newest first; owner ids only for admins."""
        frame = self._feedback_frame(verdict, contains, everyone, session, request)
        columns = ["id", "created", "verdict", "sentence", "head_text", "tail_text", "predicted", "score", "user_label", "note", "checkpoint"]
        if everyone:
            columns.append("owner")
        return frame[columns].fillna("")

    def _feedback_frame(self, verdict, contains, everyone, session, request) -> pd.DataFrame:
        if everyone and not self.identity.is_admin(request):
            raise BadInput("Only an admin (app.py --admin USER) can see everyone's feedback.")
        owner = None if everyone else self._owned(session, request)["owner"]
        return self.store.feedback(owner=owner, verdict=verdict if verdict in VERDICTS else None, contains=contains or "")

    @user_errors
    def export_feedback(self, verdict: str, contains: str, everyone: bool, session: dict,
                        request: gr.Request = None) -> tuple[list[str], str]:
        """Write the filtered rows as FewRel-style JSONL, the labels' descriptions, and CSV. Returns (paths, status)."""
        frame = self._feedback_frame(verdict, contains, everyone, session, request)
        paths = write_feedback_exports(frame, self._export_folder(), self.store)
        labelled = sum(1 for line in open(paths[0], encoding="utf-8") if line.strip())
        skipped = len(frame) - labelled
        status = f"Exported {labelled} labelled rows to JSONL and {len(frame)} rows to CSV."
        if skipped:
            status += f" {skipped} rows marked wrong without a correct relation are only in the CSV."
        return [str(p) for p in paths], status
