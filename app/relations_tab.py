"""The Relations tab: the catalogue (search, switch on/off), the user's own relations
(add, edit, delete, import, export) and their labelled examples (how many each relation has, remove
one, import a file of them, check each description against them). Every change is saved for the session's
owner at once.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import gradio as gr
import pandas as pd

from emma import DescriptionFit, read_corpus, relation_text
from emma.index import EXAMPLES_COUNTED, EXAMPLES_LIKE_DESCRIPTION

from .session import (
    BadInput,
    catalogue_order,
    check_import_size,
    check_relation,
    in_markdown,
    parse_relation_set,
    sentence_case,
    shown,
    stored_switches,
    waiting_for_examples,
    with_enabled,
    with_user_relation,
    without_user_relation,
)
from .feedback_tab import MAX_EXAMPLES
from .records import bracketed
from .storage import (
    count_examples,
    delete_example,
    delete_user_relation,
    replace_example,
    replace_user_relations,
    upsert_user_relation,
)
from .workbench import DB, MODEL, PRIVATE, QUIET, Workbench, clears_first, user_errors, warn

MAX_IMPORTED_EXAMPLES = 2000  # per import file
IMPORT_CHUNK = 64  # examples encoded per turn of the model's thread
MAX_QUERY_CHARS = 200
MOST_EXAMPLE_WEIGHT = Fraction(EXAMPLES_COUNTED, EXAMPLES_COUNTED + EXAMPLES_LIKE_DESCRIPTION)  # emma.index.example_weight's cap
FIT_COLUMNS = ["relation", "examples", "its description ranks it first", "ranked first instead"]
# This many catalogue relations on beside a user's own and the count line suggests switching some off. A round
# number, not a measured threshold: the measured setting (results/GZSL.md) is the whole default catalogue, 135.
CROWDED_CATALOGUE = 20


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def fit_summary(fits: list[DescriptionFit], by_examples_alone: int) -> str:
    """The line above the description check's table: which descriptions rank fewer than half of their own examples
    first (`fits` weakest first), what that means, and how many relations had no description to check."""
    if not fits:
        return f"{plural(by_examples_alone, 'relation')} with examples, known by examples alone: no description to check."
    checked = sum(f.examples for f in fits)
    text = (f"{plural(checked, 'labelled example')} scored by the descriptions alone, as recall scores a sentence before "
            "any labels (check again after labelling more).")
    weak = [f for f in fits if f.right * 2 < f.examples]
    if weak:
        names = ", ".join(f"**{in_markdown(f.relation)}** ({f.right} of {f.examples})" for f in weak[:5])
        more = f" and {len(weak) - 5} more" if len(weak) > 5 else ""
        one = len(weak) == 1
        text += (f" {plural(len(weak), 'description')} of {len(fits)} rank{'s' if one else ''} fewer than half of "
                 f"{'its' if one else 'their'} own examples first: {names}{more}. Recall leans on a relation's examples "
                 f"(up to {MOST_EXAMPLE_WEIGHT} of its score), but the classifier that picks among recall's candidates reads descriptions "
                 "only. Sharpen such a description if the relation is yours (click its row); for any of them, switch off "
                 "the relations that take its examples (last column) if your text does not need them, or label more of its "
                 "sentences.")
    else:
        text += f" {'The' if len(fits) == 1 else 'Every one of the'} {plural(len(fits), 'description')} checked ranks at least half of its own examples first."
    if by_examples_alone:
        text += f" {plural(by_examples_alone, 'relation')} {'is' if by_examples_alone == 1 else 'are'} known by examples alone: no description to check."
    return text


@dataclass
class RelationsParts:
    """What the page load fills in: the search box, and the five views of `RelationsTab.relation_views` with the
    query their checkbox group was built for and the boxes it ticked (`RelationsTab.relation_views_of`)."""

    search: gr.Textbox
    views: list


class RelationsTab:
    """Handlers of the Relations tab over the shared `Workbench`."""

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    # ------------------------------------------------------------------ views

    def catalogue_view(self, query: str, session: dict, request: gr.Request = None):
        """(checkbox group update, table of matches, count line) for a search query."""
        session = self.wb.owned(session, request)
        matches = self.wb.catalogue.search((query or "")[:MAX_QUERY_CHARS])
        enabled = set(session["enabled"])
        counts = self.wb.store.example_counts(session["owner"])
        choices = [(f"{e.label} · {e.id} · {e.source}", e.label) for e in matches]
        value = [e.label for e in matches if e.label in enabled]
        table = pd.DataFrame(
            [{"on": "✔" if e.label in enabled else "", "relation": e.label, "examples": counts.get(e.label, 0), "id": e.id,
              "source": e.source, "description": e.text} for e in matches],
            columns=["on", "relation", "examples", "id", "source", "description"],
        )
        return gr.update(choices=choices, value=value), table, self.count_text(session, len(matches), counts)

    def relation_views(self, query: str, session: dict, request: gr.Request = None):
        """Everything the tab shows: catalogue checkboxes, catalogue table, count, your relations, your examples."""
        session = self.wb.owned(session, request)
        return (*self.catalogue_view(query, session), self.user_relations_view(session), self.examples_view(session))

    # The checkbox group applies to the relations it shows, which lag the search box while a search is on its
    # way: the query it was built for travels with it (a State), and a tick or a "shown" button uses that one.
    # The boxes it ticked travel too, so that a tick changes only what was ticked or unticked in this window:
    # another window's switches, saved since this one was drawn, stand.

    def catalogue_view_of(self, query: str, session: dict, request: gr.Request = None):
        """`catalogue_view`, the query it was built for and the labels its checkbox group ticked."""
        boxes, *rest = self.catalogue_view(query, session, request)
        return (boxes, *rest, query, list(boxes["value"]))

    def relation_views_of(self, query: str, session: dict, request: gr.Request = None):
        """`relation_views`, the query its checkbox group was built for and the labels the group ticked."""
        boxes, *rest = self.relation_views(query, session, request)
        return (boxes, *rest, query, list(boxes["value"]))

    def count_text(self, session: dict, matches: int | None = None, counts: dict[str, int] | None = None) -> str:
        counts = self.wb.store.example_counts(session["owner"]) if counts is None else counts
        waiting = waiting_for_examples(session, counts)
        n_cat, n_user, total = len(session["enabled"]), len(session["user"]) - len(waiting), len(self.wb.catalogue)
        shown_part = f" · {matches} match the search" if matches is not None and matches != total else ""
        text = (f"**{n_cat + n_user} relations in force**: {n_cat} of {total} catalogue relations "
                f"and {n_user} of your own{shown_part}.")
        if waiting:
            text += (f" {plural(len(waiting), 'relation')} of yours without a description "
                     f"{'waits' if len(waiting) == 1 else 'wait'} for a first labelled example.")
        if n_user and n_cat >= CROWDED_CATALOGUE:
            # Measured with the default catalogue on: a user's own relations win few of their sentences (results/GZSL.md).
            text += (f" Every relation in force competes for each sentence, and catalogue relations near yours take many of"
                     f" their sentences: switch off those of the {n_cat} catalogue relations your text does not need"
                     f" (search, then *Switch off all shown*).")
        if counts:
            in_force = self.wb.relations(session)
            off = sum(n for r, n in counts.items() if r not in in_force)
            text += (f" **{plural(sum(counts.values()), 'labelled example')}** of {plural(len(counts), 'relation')}"
                     + (f" ({plural(off, 'example')} of relations not in force: kept, and ignored until you switch them on)." if off else "."))
        return text

    def user_relations_view(self, session: dict) -> pd.DataFrame:
        counts = self.wb.store.example_counts(session["owner"])
        rows = [{"relation": n, "examples": counts.get(n, 0),
                 "description": d or ("none: defined by its examples" if counts.get(n) else "none: waiting for a first example"),
                 "text the model reads": relation_text(n, d)}
                for n, d in session["user"].items()]
        return pd.DataFrame(rows, columns=["relation", "examples", "description", "text the model reads"])

    def examples_view(self, session: dict) -> pd.DataFrame:
        """The owner's labelled examples, newest first, each saying whether its relation is in force."""
        in_force = self.wb.relations(session)
        known = set(self.wb.catalogue.by_label) | set(session["user"])

        def state(relation: str) -> str:
            if relation in in_force:
                return "yes"
            return "no: kept, ignored until switched on" if relation in known else "no: its relation is deleted; used again if you add it back"

        rows = [{"#": e["number"], "relation": e["relation"], "sentence": bracketed(e["tokens"], e["head"], e["tail"]),
                 "in force": state(e["relation"]),
                 "from feedback": f"#{e['feedback_number']}" if e["feedback_id"] else "imported"}
                for e in reversed(self.wb.store.examples(session["owner"]))]
        return pd.DataFrame(rows, columns=["#", "relation", "sentence", "in force", "from feedback"])

    @user_errors
    def description_fit(self, session: dict, request: gr.Request = None) -> tuple[str, pd.DataFrame]:
        """How well each relation in force is told apart by its description alone, on the owner's labelled examples of
        it (`emma.RelationIndex.description_fits`). Returns (summary markdown, table, weakest descriptions first)."""
        wb = self.wb
        session = wb.owned(session, request)
        relations, examples = wb.to_predict(session)
        table = pd.DataFrame(columns=FIT_COLUMNS)
        if not examples:
            return "No labelled examples of relations in force yet: judge a prediction, or import labelled sentences.", table
        index = wb.model.call(wb.engine_for(session).index, relations, examples)
        fits = sorted(index.description_fits(), key=lambda f: f.right / f.examples)
        table = pd.DataFrame([{"relation": f.relation, "examples": f.examples,
                               "its description ranks it first": f"{f.right} of {f.examples}",
                               "ranked first instead": ", ".join(f"{name} ({n})" for name, n in f.taken_by[:3]) or "—"}
                              for f in fits], columns=FIT_COLUMNS)
        by_examples_alone = len({e.relation for e in examples} - {f.relation for f in fits})
        return fit_summary(fits, by_examples_alone), table

    def pick_example(self, session: dict, evt: gr.SelectData, request: gr.Request = None) -> str:
        """Clicking a row of your examples puts its number into the remove box."""
        row = evt.row_value or []
        mine = {str(e["number"]) for e in self.wb.store.examples(self.wb.owned(session, request)["owner"])}
        return str(row[0]) if row and str(row[0]) in mine else ""

    def pick_user_relation(self, session: dict, evt: gr.SelectData, request: gr.Request = None) -> tuple[str, str]:
        """Clicking a row of your relations (or of the description check) puts it into the form for editing."""
        row = evt.row_value or []
        mine = self.wb.owned(session, request)["user"]
        name = row[0] if row and row[0] in mine else ""
        return name, mine.get(name, "")

    # ------------------------------------------------------------------ catalogue switches

    @user_errors
    def set_shown_enabled(self, selected: list[str], query: str, session: dict, ticked: list[str] | None = None,
                          request: gr.Request = None) -> tuple[dict, list[str]]:
        """The checkbox group of the relations `query` shows changed from `ticked` (what it showed; None: as stored) to
        `selected`: what was ticked is switched on, what was unticked off; every other relation keeps its state.
        Returns (session, `selected`: the boxes as this window shows them, which its next change starts from; the
        redraw that follows brings both to the stored switches)."""
        session = self.wb.current(session, request)
        for labels in (selected, ticked):
            if not isinstance(labels or [], list) or not all(isinstance(label, str) for label in labels or []):
                raise BadInput("Tick relations of the catalogue to switch them on.")
        shown_labels = {e.label for e in self.wb.catalogue.search((query or "")[:MAX_QUERY_CHARS])}
        after = set(selected or [])

        def change(stored: list[str]) -> list[str]:
            before = set(ticked) if ticked is not None else {label for label in stored if label in shown_labels}
            return [label for label in stored if label not in before - after] + sorted(after - before)

        return self._switch(session, change), list(selected or [])

    @user_errors
    def switch_shown(self, on: bool, query: str, session: dict, request: gr.Request = None) -> dict:
        session = self.wb.current(session, request)
        shown_labels = [e.label for e in self.wb.catalogue.search((query or "")[:MAX_QUERY_CHARS])]
        if on:
            return self._switch(session, lambda stored: stored + shown_labels)
        return self._switch(session, lambda stored: [label for label in stored if label not in set(shown_labels)])

    def enable_shown(self, query, session, request: gr.Request = None):
        return self.switch_shown(True, query, session, request)

    def disable_shown(self, query, session, request: gr.Request = None):
        return self.switch_shown(False, query, session, request)

    @user_errors
    def reset_catalogue(self, session: dict, request: gr.Request = None) -> dict:
        return self._switch(self.wb.current(session, request), lambda stored: self.wb.catalogue.defaults())

    def _switch(self, session: dict, change) -> dict:
        """The session with its catalogue switches changed by `change` (the stored switches → the new ones), applied
        to the switches as stored at the moment of writing, in one transaction."""
        catalogue = self.wb.catalogue

        def checked(stored: list[str] | None) -> list[str]:  # inside the write transaction: no copy of the session here
            return catalogue_order(catalogue, change(stored_switches(stored, catalogue)))

        return {**session, "enabled": self.wb.store.update_workspace(session["owner"], checked)}

    # ------------------------------------------------------------------ your relations

    @user_errors
    def add_relation(self, name: str, description: str, session: dict, request_id: str = "",
                     request: gr.Request = None) -> tuple[dict, str]:
        """Add a relation of your own; it is live at once (one encoder pass). Returns (session, status).

        `request_id` (optional, from API clients): a repeated id returns the first status and writes nothing.
        """
        return self._save_relation(name, description, session, request_id, request, editing=False)

    @user_errors
    def edit_relation(self, name: str, description: str, session: dict, request_id: str = "",
                      request: gr.Request = None) -> tuple[dict, str]:
        """Change the description of one of your relations. Returns (session, status)."""
        return self._save_relation(name, description, session, request_id, request, editing=True)

    def _save_relation(self, name, description, session, request_id, request, editing: bool):
        wb = self.wb
        session = wb.current(session, request)
        action = "edit_relation" if editing else "add_relation"
        prior = wb.replay(session, request_id, action)
        if prior is not None:
            return session, prior
        name, description, text = check_relation(session, wb.catalogue, name, description, editing)
        n = wb.engine.count_pieces(text)
        wb.model.call(wb.engine_for(session).encode, [text])  # encode before saving: an encoder failure saves nothing
        new = with_user_relation(session, name, description)
        status = f"{'Updated' if editing else 'Added'} '{name}'; {len(wb.relations(new))} relations in force."
        if not description and name not in wb.relations(new):
            status += (f" '{name}' has no description, so it takes part from its first labelled example: judge a prediction "
                       f"Wrong and give '{name}' as the correct relation, or import examples of it below.")
        if n > wb.engine.description_window:
            status += f" Only its first {wb.engine.description_window} of {n} word pieces are read."
            warn(f"The description of {shown(name)} is long: the model reads only its first {wb.engine.description_window} word pieces.")

        def write(db):
            upsert_user_relation(db, new["owner"], name, description, text)
            return status

        return wb.once(new, request_id, action, write)

    @user_errors
    def delete_relation(self, name: str, session: dict, request_id: str = "", request: gr.Request = None) -> tuple[dict, str]:
        """Delete one of your relations. Returns (session, status)."""
        wb = self.wb
        session = wb.current(session, request)
        prior = wb.replay(session, request_id, "delete_relation")
        if prior is not None:
            return session, prior
        new = without_user_relation(session, name)
        name = " ".join((name or "").split())
        kept = wb.store.example_counts(session["owner"]).get(name, 0)
        # No "are you sure?": a delete is undone by Add (the boxes keep the name and description), examples included.
        status = (f"Deleted '{name}'; {len(wb.relations(new))} relations in force. Add puts it back"
                  + (f", with its {plural(kept, 'labelled example')} (kept meanwhile)." if kept else "."))

        def write(db):
            delete_user_relation(db, new["owner"], name)
            return status

        return wb.once(new, request_id, "delete_relation", write)

    def export_relations(self, session: dict, request: gr.Request = None) -> str:
        """The relations in force as {name: text} JSON (the `--descriptions` format of `python -m emma train`)."""
        session = self.wb.owned(session, request)
        path = self.wb.export_folder() / "relations.json"
        path.write_text(json.dumps(self.wb.relations(session), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return self.wb.private_files([path])[0]

    @user_errors
    def import_relations(self, path: str | None, session: dict, request_id: str = "", request: gr.Request = None) -> tuple[dict, str]:
        """Load a relation set: its catalogue relations become the enabled ones, the rest your own."""
        wb = self.wb
        session = wb.current(session, request)
        prior = wb.replay(session, request_id, "import_relations")
        if prior is not None:
            return session, prior
        if not path:
            raise BadInput("Choose a JSON file to import.")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # ValueError: JSON, or an integer too long
            raise BadInput("The file is not valid JSON.") from None
        enabled, user = parse_relation_set(data, wb.catalogue)
        trial = with_enabled(session, wb.catalogue, enabled)
        trial["user"] = {n: d for n, d in trial["user"].items() if n not in user}
        for name, description in user.items():
            check_relation(trial, wb.catalogue, name, description, editing=False)
            trial = with_user_relation(trial, name, description)
        texts = {n: relation_text(n, d) for n, d in user.items()}
        wb.model.call(wb.engine_for(session).encode, list(texts.values()))
        status = (f"Imported {len(enabled)} catalogue and {len(user)} own relations; "
                  f"{len(wb.relations(trial))} relations in force.")
        off = [label for label in session["enabled"] if label not in trial["enabled"]]
        if off:  # the set replaces the switches: say so, since a big catalogue can go off unnoticed
            status += (f" The set replaces what was switched on: {plural(len(off), 'catalogue relation')} not in it "
                       f"{'is' if len(off) == 1 else 'are'} now off (Default set switches the usual ones on again).")

        def write(db):
            replace_user_relations(db, trial["owner"], {n: (user[n], texts[n]) for n in user}, trial["enabled"])
            return status

        return wb.once(trial, request_id, "import_relations", write)

    # ------------------------------------------------------------------ labelled examples

    @user_errors
    def remove_example(self, example_id, session: dict, request_id: str = "", request: gr.Request = None) -> tuple[dict, str]:
        """Forget one of your labelled examples (by its number); predictions stop using it at once. Returns (session, status)."""
        wb = self.wb
        session = wb.current(session, request)
        prior = wb.replay(session, request_id, "remove_example")
        if prior is not None:
            return session, prior
        text = str(example_id if example_id is not None else "").strip().lstrip("#")
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise BadInput("Give the number of one of your examples (click its row in the table).")
        number = int(text)

        def write(db):
            relation = delete_example(db, session["owner"], number)
            if relation is None:
                raise BadInput(f"You have no example #{number}.")
            status = f"Removed example #{number} of '{relation}'."
            if session["user"].get(relation) == "" and not count_examples(db, session["owner"], relation):
                status += f" '{relation}' has no description and no examples left: it is out of force until you label one."
            return status

        return wb.once(session, request_id, "remove_example", write)

    @user_errors
    def import_examples(self, path: str | None, session: dict, request_id: str = "", request: gr.Request = None) -> tuple[dict, str]:
        """Add labelled sentences from a file (the Feedback tab's feedback.jsonl, FewRel JSON, any format the Annotate
        tab imports: `emma.read_corpus`) as examples of relations in force; all or nothing. Returns (session, status)."""
        wb = self.wb
        session = wb.current(session, request)
        prior = wb.replay(session, request_id, "import_examples")
        if prior is not None:
            return session, prior
        if not path:
            raise BadInput("Choose a file of labelled sentences to import.")
        check_import_size(Path(path))
        try:
            corpus = read_corpus(path)
        except (OSError, ValueError) as e:  # an empty file, not UTF-8
            raise BadInput(sentence_case(str(e).replace(str(path), "the file"))) from None
        if corpus.bad:  # all or nothing: the first bad record, by line
            raise BadInput(f"Nothing was imported: {html.escape(str(corpus.bad[0]))}"
                           + (f" (and {plural(len(corpus.bad) - 1, 'more bad record')})" if len(corpus.bad) > 1 else "") + ".")
        for record in corpus.records:
            if record.negative:
                where = f"line {record.line}" if record.line is not None else "a record"
                raise BadInput(f"Nothing was imported: {where} is marked \"none of these\"; an example needs the "
                               f"relation it is an example of.")
        instances = [r.instance for r in corpus.records]
        in_force = wb.relations(session)
        mine = {(tuple(e["tokens"]), tuple(e["head"]), tuple(e["tail"])): e["relation"] for e in wb.store.examples(session["owner"])}
        seen = set()
        for inst in instances:
            words = shown(" ".join(inst.tokens), 60)
            if not inst.relation:
                raise BadInput(f"The sentence {words} has no relation; every imported sentence needs one.")
            if inst.relation not in in_force and inst.relation not in session["user"]:
                raise BadInput(f"{shown(inst.relation)} is not a relation in force; switch it on or add it before importing its examples.")
            key = (inst.tokens, inst.head, inst.tail)
            if key in mine:
                raise BadInput(f"The sentence {words} is already an example of {shown(mine[key])}; remove it first.")
            if key in seen:
                raise BadInput(f"The file holds the sentence {words} with the same entities twice.")
            seen.add(key)
        if not instances:
            raise BadInput("The file holds no labelled sentences.")
        if len(mine) + len(instances) > MAX_EXAMPLES:
            raise BadInput(f"You may keep at most {MAX_EXAMPLES} labelled examples; this file would make {len(mine) + len(instances)}.")
        if len(instances) > MAX_IMPORTED_EXAMPLES:
            raise BadInput(f"Import at most {MAX_IMPORTED_EXAMPLES} labelled sentences at a time; this file holds {len(instances)}.")
        # The importer pays for encoding, a chunk per turn of the model's thread, so other users'
        # predictions go in between instead of waiting behind one large import at their next prediction.
        engine = wb.engine_for(session)  # the model the owner predicts with: its cache is the one their predictions read
        for start in range(0, len(instances), IMPORT_CHUNK):
            wb.model.call(engine.encode_examples, instances[start : start + IMPORT_CHUNK])
        status = (f"Imported {plural(len(instances), 'labelled example')} of {plural(len({i.relation for i in instances}), 'relation')}, "
                  "used from your next prediction.")

        def write(db):
            for inst in instances:
                replace_example(db, session["owner"], inst.tokens, inst.head, inst.tail, inst.relation)
            return status

        return wb.once(session, request_id, "import_examples", write)

    # ------------------------------------------------------------------ layout

    def build(self, session: gr.State) -> RelationsParts:
        relation_count = gr.Markdown(elem_id="relation-count")
        with gr.Row():
            with gr.Column(scale=3):
                search = gr.Textbox(label="Search the catalogue (FewRel and Wiki-ZSL relations)", elem_id="relation-search",
                                    placeholder="e.g. birth, country, P17")
                with gr.Row():
                    enable_btn = gr.Button("Switch on all shown", size="sm", elem_id="enable-shown")
                    disable_btn = gr.Button("Switch off all shown", size="sm", elem_id="disable-shown")
                    reset_btn = gr.Button("Default set", size="sm", elem_id="reset-catalogue")
                catalogue = gr.CheckboxGroup(label="Switched on (tick to use a relation in predictions)", elem_id="catalogue")
            with gr.Column(scale=2):
                form = self._own_relations_form()
        # Widths so that the short columns' headers do not wrap letter by letter beside the long descriptions.
        catalogue_table = gr.Dataframe(label="Catalogue relations matching the search", interactive=False,
                                       elem_id="catalogue-table", wrap=True, max_height=420,
                                       column_widths=["5%", "20%", "10%", "7%", "9%", "49%"])
        examples = self._examples_panel()
        views = [catalogue, catalogue_table, relation_count, form["user_table"], examples["table"]]
        shown_query = gr.State("")  # the query `catalogue` was built for (see `catalogue_view_of`)
        shown_ticked = gr.State([])  # and the boxes it ticked
        shown = [shown_query, shown_ticked]
        refresh = dict(fn=self.relation_views_of, inputs=[search, session], outputs=[*views, *shown], **PRIVATE)

        search.change(self.catalogue_view_of, [search, session], [*views[:3], *shown], trigger_mode="always_last", **QUIET)
        catalogue.input(self.set_shown_enabled, [catalogue, shown_query, session, shown_ticked], [session, shown_ticked],
                        trigger_mode="always_last", **QUIET).success(**refresh)
        for button, handler in ((enable_btn, self.enable_shown), (disable_btn, self.disable_shown)):
            button.click(handler, [shown_query, session], [session], **PRIVATE).success(**refresh)
        reset_btn.click(self.reset_catalogue, [session], [session], **PRIVATE).success(**refresh)
        self._wire_own_relations(form, session, refresh)
        self._wire_examples(examples, session, refresh)
        examples["fit"].select(self.pick_user_relation, [session], [form["name"], form["description"]], **QUIET)
        return RelationsParts(search, [*views, *shown])

    @staticmethod
    def _examples_panel() -> dict:
        gr.Markdown("**Your labelled examples.** Every prediction you judge (Correct, or Wrong with the correct relation) "
                    "becomes an example of that relation and counts from your next prediction; judging the same sentence "
                    "again replaces its example. Examples of a relation not in force are kept and ignored until you switch "
                    "it on. You can also import labelled sentences (the Feedback tab's feedback.jsonl, FewRel JSON, or any file "
                    "the Annotate tab imports, each record with its relation).",
                    elem_classes="panel-help")
        panel = dict(table=gr.Dataframe(label="Your labelled examples (newest first; click a row to pick it)", interactive=False,
                                        elem_id="examples-table", wrap=True, max_height=360))
        with gr.Row():
            panel["id"] = gr.Textbox(label="Example #", elem_id="example-id", scale=1)
            panel["remove"] = gr.Button("Remove example", variant="stop", elem_id="remove-example", scale=1)
            panel["import"] = gr.UploadButton("Import labelled sentences (JSON / JSONL)", file_types=[".json", ".jsonl"], size="sm",
                                              elem_id="import-examples", scale=2)
        panel["status"] = gr.Textbox(show_label=False, interactive=False, elem_id="example-status", container=False)
        with gr.Accordion("Do my descriptions fit my examples?", open=False, elem_id="description-fit-panel"):
            panel["check"] = gr.Button("Check each description against its labelled examples", size="sm",
                                       elem_id="check-descriptions")
            panel["fit_summary"] = gr.Markdown(elem_id="description-fit-summary")
            panel["fit"] = gr.Dataframe(label="Descriptions against their own examples (weakest first; click one of your "
                                              "relations to edit it)", interactive=False,
                                        elem_id="description-fit", wrap=True, max_height=360)
        panel["request_id"] = gr.Textbox("", visible=False, label="request_id")  # optional idempotency key for API clients
        return panel

    def _wire_examples(self, panel: dict, session: gr.State, refresh: dict) -> None:
        panel["table"].select(self.pick_example, [session], [panel["id"]], **QUIET)
        for trigger in (panel["remove"].click, panel["import"].upload):
            clears_first(trigger, panel["status"])
        panel["remove"].click(self.remove_example, [panel["id"], session, panel["request_id"]], [session, panel["status"]],
                              api_name="remove_example", **DB).success(**refresh)
        panel["check"].click(self.description_fit, [session], [panel["fit_summary"], panel["fit"]], **MODEL, **PRIVATE)
        panel["import"].upload(self.import_examples, [panel["import"], session, panel["request_id"]], [session, panel["status"]],
                               **DB, **PRIVATE).success(**refresh)

    @staticmethod
    def _own_relations_form() -> dict:
        gr.Markdown("**Your own relations.** Describe how the head relates to the tail, like the catalogue does: "
                    "*founded by: founder or co-founder of this organization*. The model reads \"name: description\"; "
                    "a new relation is usable at once. Or leave the description empty and teach it by labelled sentences "
                    "alone: it takes part from its first example.", elem_classes="panel-help")
        form = dict(name=gr.Textbox(label="Name", elem_id="rel-name"),
                    description=gr.Textbox(label="Description (optional: empty = defined by its labelled examples)", lines=3,
                                           elem_id="rel-desc"))
        with gr.Row():
            form["add"] = gr.Button("Add", variant="primary", elem_id="add-relation")
            form["edit"] = gr.Button("Save changes", elem_id="edit-relation")
            form["delete"] = gr.Button("Delete", variant="stop", elem_id="delete-relation")
        form["status"] = gr.Textbox(show_label=False, interactive=False, elem_id="relation-status", container=False)
        # An optional idempotency key for API clients (the page leaves it empty).
        form["request_id"] = gr.Textbox("", visible=False, label="request_id")
        form["user_table"] = gr.Dataframe(label="Your relations (click a row to edit it)", interactive=False,
                                          elem_id="user-relations", wrap=True, column_widths=["22%", "14%", "32%", "32%"])
        with gr.Row():
            form["import"] = gr.UploadButton("Import relation set (JSON)", file_types=[".json"], size="sm",
                                             elem_id="import-relations")
            form["export"] = gr.Button("Export relations in force", size="sm", elem_id="export-relations")
        form["file"] = gr.File(label="Exported relation set", elem_id="relations-file", interactive=False)
        return form

    def _wire_own_relations(self, form: dict, session: gr.State, refresh: dict) -> None:
        name, description, status, request_id = form["name"], form["description"], form["status"], form["request_id"]
        for trigger in (form["add"].click, form["edit"].click, form["delete"].click, form["import"].upload):
            clears_first(trigger, status)
        for button, handler, api_name in ((form["add"], self.add_relation, "add_relation"),
                                          (form["edit"], self.edit_relation, "edit_relation")):
            button.click(handler, [name, description, session, request_id], [session, status], api_name=api_name,
                         **MODEL).success(**refresh)
        form["delete"].click(self.delete_relation, [name, session, request_id], [session, status], api_name="delete_relation",
                             **DB).success(**refresh)
        form["user_table"].select(self.pick_user_relation, [session], [name, description], **QUIET)
        form["import"].upload(self.import_relations, [form["import"], session, request_id], [session, status], **MODEL,
                              **PRIVATE).success(**refresh)
        form["export"].click(self.export_relations, [session], [form["file"]], **PRIVATE)
