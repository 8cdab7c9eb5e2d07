"""The Annotate tab: import a file of instances, judge them one at a time with the keyboard, export.

Annotation is a stream (Prodigy, Label Studio and doccano work this way): the user brings sentences
with an entity pair each, the model suggests a relation, the user accepts it (Enter), picks another
candidate (1…k), says "none of these" (N), skips (S) or undoes (U). The file side (formats, bad
records, exports, Cohen's κ) is `emma.corpus`; the queue, judgements and each annotator's order are
in the store (`Store.import_queue` and the annotation block), so a reload or a restart finds the
first item not judged yet.

The model: EMMA always picks one of the relations in force (it has no "no relation" class), so the
suggestion is one of them and "None of these" is the annotator's to say. Suggestions for the next
few items are computed ahead in the background (`suggestions.Suggester`), so the next item is usually
ready when a judgement is saved. The "most doubtful first" order puts the smallest margin between the
two best deciding scores first; items not scored yet follow in file order, so the order sharpens while
the user works.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from emma import NO_RELATION, Instance, Record, cohen_kappa, kappa_per_label, macro_prf, read_corpus, write_corpus

from .session import BadInput, check_import_size, highlighted, in_markdown, shown
from .storage import add_judgement, relation_set_id, remember_relation_set, undo_judgement
from .suggestions import N_CANDIDATES, Context, Suggester, Suggestion, item_instance, set_key
from .workbench import MODEL, PRIVATE, QUIET, Workbench, user_errors

N_BUTTONS = N_CANDIDATES  # candidate buttons (keys 1…5)
VIEW_OUTPUTS = 5 + N_BUTTONS  # state, sentence, progress, suggestion, order, the candidate buttons
PREFETCH = 4  # items predicted ahead of the one shown
MAX_QUEUE_ITEMS = 10000  # instances per import
MAX_QUEUES = 50  # queues per owner
MAX_NAME_CHARS = 80
MAX_BAD_SHOWN = 200  # bad records listed after an import
MAX_SCORED = 2000  # labelled items one error analysis scores (500 took 25 s with the shipped model on the loaded 2-core machine)
ORDERS = {"file": "file order", "doubt": "most doubtful first"}
ALL_DONE = "Every item of this queue is done"
CANDIDATE_LABEL = re.compile(r"^([1-9]) · ")  # a candidate button's label: its key, then the relation
VERDICT_TEXT = {"accepted": "accepted", "none": "none of these", "skipped": "skipped"}
EXPORTS = {"fewrel": "annotations.jsonl", "labelstudio": "annotations.labelstudio.json", "doccano": "annotations.doccano.jsonl"}

# One keyboard handler for the page, installed by the page load (`layout`): keys act only while the
# Annotate tab is shown and never while the focus is in a text box; each shown item's render time after
# the key press is kept in `window.emmaAnnotateTimings` (ms), for the browser test to print.
KEYS_JS = """() => {
  if (window.emmaAnnotateKeys) return;
  window.emmaAnnotateKeys = true;
  window.emmaAnnotateTimings = [];
  // A key pressed while the next item is still being drawn waits for its button (up to 2 s) instead of being lost.
  const click = (id, tries = 40) => {
    const b = document.getElementById(id);
    if (b && b.offsetParent !== null && !b.disabled) { window.emmaAnnotateT0 = performance.now(); b.click(); return true; }
    if (tries > 0) setTimeout(() => click(id, tries - 1), 50);
    return true;
  };
  document.addEventListener('keydown', (e) => {
    const card = document.getElementById('annotate-progress');
    if (!card || card.offsetParent === null || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
    const k = e.key;
    let done = false;
    if (k >= '1' && k <= '9') done = click('annotate-cand-' + k);
    else if (k === 'Enter') done = click('annotate-accept');
    else if (k === 'n' || k === 'N') done = click('annotate-none');
    else if (k === 's' || k === 'S') done = click('annotate-skip');
    else if (k === 'u' || k === 'U') done = click('annotate-undo');
    else if (k === '/') { const box = document.querySelector('#annotate-search input'); if (box) { box.focus(); done = true; } }
    if (done) e.preventDefault();
  });
  new MutationObserver(() => {
    const card = document.querySelector('#annotate-progress [data-seq]');
    if (!card || card.dataset.seq === window.emmaAnnotateSeq) return;
    window.emmaAnnotateSeq = card.dataset.seq;
    if (window.emmaAnnotateT0 !== undefined) { window.emmaAnnotateTimings.push(performance.now() - window.emmaAnnotateT0); window.emmaAnnotateT0 = undefined; }
  }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""

KEYS_HELP = """**Keys** (not while typing in a box): **1**…**5** accept that candidate · **Enter** accept the suggestion ·
**N** none of these · **S** skip · **U** undo your last judgement · **/** search another relation in force (type, then Enter to accept it).
The suggestion is always one of the relations in force (EMMA has no "no relation" class): when none of them holds, press **N**."""

IMPORT_HELP = """Import a file of instances: JSONL with token spans (`{"tokens", "head": [s, e], "tail": [s, e]}`), FewRel,
text with character spans (`{"text", "head": [s, e], "tail": [s, e]}`), a Label Studio JSON export or doccano relation JSONL
(gzip allowed: `.gz`). An optional `relation` must be one of the relations in force (or `no_relation`). Bad records are listed
with their line and left out; nothing is imported if the import fails."""


SAMPLE_QUEUE = "Example sentences"  # the queue `import_examples` makes from the Predict tab's examples


def new_annotation() -> dict:
    """The per-session state of the tab: the open queue, the item shown, a render counter."""
    return {"queue": None, "position": None, "seq": 0}


class AnnotateTab:
    """Handlers of the Annotate tab over the shared `Workbench`."""

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb
        self.suggester = Suggester(wb)

    # ------------------------------------------------------------------ helpers

    def _context(self, session, request) -> tuple[dict, Context]:
        """(session, what this caller's suggestions depend on)."""
        session = self.wb.owned(session, request)
        relations, examples = self.wb.to_predict(session)
        engine = self.wb.engine_for(session)  # the owner's fine-tuned version, if they chose one
        return session, Context(session["owner"], relations, examples, set_key(engine.checkpoint_id, relations, examples), engine)

    def _queue(self, owner: str, queue_id) -> dict:
        try:
            found = self.wb.store.queue(owner, int(queue_id)) if queue_id not in (None, "") else None
        except (TypeError, ValueError):
            found = None
        if found is None:
            raise BadInput("Choose one of your queues first (import a file above).")
        return found

    def queue_choices(self, owner: str) -> list[tuple[str, int]]:
        out = []
        for q in self.wb.store.queues(owner):
            mine = q["owner"] == owner
            out.append((f"{q['name']} ({q['n_items']} items{'' if mine else ', shared with you'}{', shared' if mine and q['shared'] else ''})",
                        q["id"]))
        return out

    # ------------------------------------------------------------------ import

    @user_errors
    def import_file(self, file, name: str, shared: bool, annotation: dict | None, session: dict, request: gr.Request = None,
                    progress=gr.Progress()):
        """Import a file into a new queue and open it. Returns (report, queue choices, *the item view)."""
        session, ctx = self._context(session, request)
        owner = ctx.owner
        path = Path(file if isinstance(file, str) else getattr(file, "name", "") or (file or {}).get("path", "")) if file else None
        if not path or not path.is_file():
            raise BadInput("Choose a file to import first.")
        check_import_size(path)
        name = " ".join((name or "").split()) or Path(path.name).stem.split(".")[0] or "queue"
        if len(name) > MAX_NAME_CHARS:
            raise BadInput(f"The queue name is longer than {MAX_NAME_CHARS} characters.")
        if shared and not owner.startswith("user:"):
            raise BadInput("Only a logged-in user can share a queue (start the workbench with --auth).")
        if sum(q["owner"] == owner for q in self.wb.store.queues(owner)) >= MAX_QUEUES:
            raise BadInput(f"You have {MAX_QUEUES} queues already.")
        progress(0, desc="Reading the file")
        try:
            corpus = read_corpus(path, relations=ctx.relations, max_records=MAX_QUEUE_ITEMS)
        except ValueError as e:
            raise BadInput(f"{str(e)[0].upper()}{str(e)[1:]}.") from None
        if not corpus.records:  # a toast: plain sentences, not the report's Markdown list
            reasons = "; ".join(html.escape(str(b)) for b in corpus.bad[:5])
            more = f"; and {len(corpus.bad) - 5} more" if len(corpus.bad) > 5 else ""
            raise BadInput(f"No instance could be imported: {reasons}{more}.")
        items = [{"tokens": r.instance.tokens, "head": r.instance.head, "tail": r.instance.tail, "line": r.line, "text": r.text,
                  "head_chars": r.head_chars, "tail_chars": r.tail_chars, "gold": r.label} for r in corpus.records]
        try:
            queue_id = self.wb.store.import_queue(owner, name, items, shared=bool(shared), source=path.name[:200], fmt=corpus.format,
                                                  progress=lambda done, total: progress(done / total, desc="Importing"))
        except ValueError as e:
            raise BadInput(f"{str(e)[0].upper()}{str(e)[1:]}; choose another name.") from None
        self.wb.store.set_ordering(queue_id, owner, "file")
        report = f"Imported {len(items)} instance{'s' if len(items) != 1 else ''} into the queue '{in_markdown(name)}' ({corpus.format} format)."
        if corpus.bad:
            n = len(corpus.bad)
            report += f"\n\n{n} bad record{'s' if n != 1 else ''} left out:\n\n{self._bad_text(corpus.bad, MAX_BAD_SHOWN)}"
        annotation = {**new_annotation(), "queue": queue_id, "seq": (annotation or {}).get("seq", 0)}
        view = self._view(owner, annotation, ctx)
        return (report, gr.update(choices=self.queue_choices(owner), value=queue_id), *view)

    @user_errors
    def import_examples(self, annotation: dict | None, session: dict, request: gr.Request = None, progress=gr.Progress()):
        """The Predict tab's example sentences as a queue of the caller's, to try the flow without a file (a second
        call opens the same queue again). Each keeps its FewRel relation as the file's label when that is in force.
        Returns what `import_file` does."""
        session, ctx = self._context(session, request)
        if not self.wb.examples:
            raise BadInput("This workbench has no example sentences; import a file of your own.")
        if (opened := self._open_sample(annotation, ctx)) is not None:
            return opened
        rows = [{"text": e["text"], "head": e["head"], "tail": e["tail"],
                 **({"relation": e["relation"]} if e["relation"] in ctx.relations else {})} for e in self.wb.examples]
        path = self.wb.export_folder() / "examples.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        try:
            return self.import_file(str(path), SAMPLE_QUEUE, False, annotation, session, request, progress)
        except gr.Error:
            # A second click that ran alongside the first: its queue exists now, so open it instead.
            if (opened := self._open_sample(annotation, ctx)) is not None:
                return opened
            raise

    def _open_sample(self, annotation: dict | None, ctx: Context):
        """`import_examples`'s outputs for the caller's existing example queue, or None when they have none."""
        mine = [q for q in self.wb.store.queues(ctx.owner) if q["owner"] == ctx.owner and q["name"] == SAMPLE_QUEUE]
        if not mine:
            return None
        self.wb.store.set_ordering(mine[0]["id"], ctx.owner, "file")
        annotation = {**new_annotation(), "queue": mine[0]["id"], "seq": (annotation or {}).get("seq", 0)}
        return (f"Opened your queue '{SAMPLE_QUEUE}' again.",
                gr.update(choices=self.queue_choices(ctx.owner), value=mine[0]["id"]), *self._view(ctx.owner, annotation, ctx))

    @staticmethod
    def _bad_text(bad, limit: int) -> str:
        lines = [f"- {in_markdown(str(b))}" for b in bad[:limit]]
        if len(bad) > limit:
            lines.append(f"- … and {len(bad) - limit} more")
        return "\n".join(lines)

    # ------------------------------------------------------------------ the queue

    @user_errors
    def open_queue(self, queue_id, ordering: str, annotation: dict | None, session: dict, request: gr.Request = None):
        """Open a queue (or change its order) at this user's first item not judged. Returns the item view."""
        session, ctx = self._context(session, request)
        owner = ctx.owner
        q = self._queue(owner, queue_id)
        if ordering not in ORDERS:
            raise BadInput("Choose file order or most doubtful first.")
        # Also remembers this queue as the one the user works on (a reload opens it again).
        self.wb.store.set_ordering(q["id"], owner, ordering)
        annotation = {**new_annotation(), "queue": q["id"], "seq": (annotation or {}).get("seq", 0)}
        return self._view(owner, annotation, ctx)

    def show(self, annotation: dict | None, session: dict, request: gr.Request = None):
        """Page load and tab switch: the queue choices and the current item (or an invitation to import)."""
        session = self.wb.owned(session, request)
        owner = session["owner"]
        annotation = {**new_annotation(), **(annotation or {})}
        if annotation["queue"] is None or self.wb.store.queue(owner, annotation["queue"]) is None:
            annotation = {**annotation, "queue": self.wb.store.last_queue(owner), "position": None}
        choices = gr.update(choices=self.queue_choices(owner), value=annotation["queue"])
        try:
            _, ctx = self._context(session, request)
            if annotation["queue"] is None:
                return (choices, *self._empty(annotation, "Import a file (or try the example sentences), or choose a queue."))
            return (choices, *self._view(owner, annotation, ctx))
        except BadInput as e:
            return (choices, *self._empty(annotation, str(e)))

    def _empty(self, annotation, message: str):
        annotation = {**new_annotation(), **(annotation or {})}
        annotation["seq"] += 1
        status = f'<div data-seq="{annotation["seq"]}" data-position="">{html.escape(message)}</div>'
        buttons = [gr.update(visible=False)] * N_BUTTONS
        return (annotation, highlighted("", None, None), status, "", gr.update(), *buttons)

    def _view(self, owner: str, annotation: dict, ctx: Context):
        """(state, sentence, progress HTML, suggestion text, ordering, *candidate buttons) for the current item."""
        store = self.wb.store
        queue_id = annotation["queue"]
        ordering = store.ordering(queue_id, owner)
        if ordering == "doubt":
            self.suggester.score_queue(queue_id, ctx)
        upcoming = store.next_positions(queue_id, owner, ordering, ctx.key, n=PREFETCH + 1)
        position = annotation.get("position")
        if position is None or store.judged(queue_id, owner, position):
            position = upcoming[0] if upcoming else None
        done, total = store.queue_progress(queue_id, owner)
        annotation = {**annotation, "position": position, "seq": annotation.get("seq", 0) + 1}
        if position is None:
            status = (f'<div data-seq="{annotation["seq"]}" data-position="">{ALL_DONE} ({done} / {total}, judged or skipped). '
                      "Export your judgements below, or press U to undo the last one.</div>")
            return (annotation, highlighted("", None, None), status, "", gr.update(value=ordering),
                    *[gr.update(visible=False)] * N_BUTTONS)
        item = store.queue_item(queue_id, position)
        s = self.suggester.get(queue_id, item, ctx)
        self.suggester.ahead(queue_id, [p for p in upcoming if p != position][:PREFETCH], ctx)
        instance = item_instance(item)
        text, head, tail = Record(instance, text=item["text"], head_chars=item["head_chars"], tail_chars=item["tail_chars"]).as_text()
        where = f" · line {item['line']}" if item.get("line") else ""
        status = (f'<div data-seq="{annotation["seq"]}" data-position="{position}"><b>{done + 1} / {total}</b> · '
                  f"item {position + 1}{where} · {ORDERS[ordering]}</div>")
        lines = [f"**Suggestion: {in_markdown(s.label)}** (press Enter) · margin over the next candidate {s.margin:.3f}"]
        if item.get("gold"):
            lines.append(f"The file says: {in_markdown('none of these' if item['gold'] == NO_RELATION else item['gold'])}")
        buttons = [gr.update(value=f"{i + 1} · {name}", visible=True, variant="primary" if name == s.label else "secondary")
                   for i, (name, _) in enumerate(s.candidates)]
        buttons += [gr.update(visible=False)] * (N_BUTTONS - len(buttons))
        return (annotation, highlighted(text, head, tail), status, "\n\n".join(lines), gr.update(value=ordering), *buttons)

    # ------------------------------------------------------------------ judging

    @user_errors
    def judge(self, action: str, choice, annotation: dict | None, session: dict, request_id: str = "", request: gr.Request = None):
        """Save a judgement of the item shown and show the next one.

        Args:
            action: "accept" (the suggestion, or `choice`: a candidate number 1…5 or a relation name), "none", "skip".
            request_id: optional; a repeated id writes nothing again (the next item is shown all the same).
        """
        session, ctx = self._context(session, request)
        owner = ctx.owner
        annotation = {**new_annotation(), **(annotation or {})}
        q = self._queue(owner, annotation["queue"])
        position = annotation.get("position")
        item = self.wb.store.queue_item(q["id"], position) if position is not None else None
        if item is None:
            raise BadInput(f"{ALL_DONE}: press U to undo the last judgement, or choose another queue.")
        s = self.suggester.get(q["id"], item, ctx)
        verdict, relation = self._verdict(action, choice, s, ctx.relations)
        row = {"queue_id": q["id"], "position": position, "owner": owner, "verdict": verdict, "relation": relation,
               "suggested": s.label, "checkpoint": ctx.engine.checkpoint_id, "relation_set_id": relation_set_id(ctx.relations)}

        def write(db):
            remember_relation_set(db, ctx.relations)  # so the judgement's relation_set_id can be resolved later
            judgement = add_judgement(db, row)
            if judgement is None:
                return f"Item {position + 1} was judged already (in another window); here is the next one."
            return f"Item {position + 1}: {VERDICT_TEXT[verdict]}{f' ({relation})' if relation else ''}."

        _, status = self.wb.once(session, request_id, "annotate", write)
        annotation["position"] = None
        return (status, *self._view(owner, annotation, ctx))

    @staticmethod
    def _verdict(action: str, choice, s: Suggestion, relations) -> tuple[str, str | None]:
        if action == "none":
            return "none", None
        if action == "skip":
            return "skipped", None
        if action != "accept":
            raise BadInput("Choose accept, none of these or skip.")
        if choice in (None, ""):
            return "accepted", s.label
        if isinstance(choice, str) and CANDIDATE_LABEL.match(choice):
            choice = CANDIDATE_LABEL.match(choice).group(1)
        if isinstance(choice, (int, float)) or (isinstance(choice, str) and choice.strip().isdigit()):
            i = int(choice) - 1
            if not 0 <= i < len(s.candidates):
                raise BadInput(f"There is no candidate {int(choice)}; choose 1 to {len(s.candidates)}.")
            return "accepted", s.candidates[i][0]
        name = " ".join(str(choice).split())
        if name not in relations:
            raise BadInput(f"{shown(name)} is not one of the relations in force; pick one from the list, or add it in the Relations tab.")
        return "accepted", name

    @user_errors
    def undo(self, annotation: dict | None, session: dict, request_id: str = "", request: gr.Request = None):
        """Delete this user's last judgement in the queue and show that item again. Returns (status, *view).

        `request_id` (optional, from API clients): a retried undo with the same id takes back nothing more.
        """
        session, ctx = self._context(session, request)
        owner = ctx.owner
        annotation = {**new_annotation(), **(annotation or {})}
        q = self._queue(owner, annotation["queue"])
        undone = []

        def write(db):
            last = undo_judgement(db, q["id"], owner)
            if last is None:
                return "Nothing to undo in this queue."
            undone.append(last)
            what = VERDICT_TEXT[last["verdict"]] + (f", {last['relation']}" if last["relation"] else "")
            return f"Undone: item {last['position'] + 1} ({what})."

        _, status = self.wb.once(session, request_id, "annotate_undo", write)
        if undone:
            annotation["position"] = undone[0]["position"]
        return (status, *self._view(owner, annotation, ctx))

    # ------------------------------------------------------------------ export and agreement

    def judged_records(self, queue_id: int, owner: str) -> list[Record]:
        """This annotator's accepted and none-of-these judgements as records, in file order (skips left out)."""
        items = {i["position"]: i for i in self.wb.store.queue_items(queue_id)}
        out = []
        for j in sorted(self.wb.store.judgements(queue_id, owner), key=lambda j: j["position"]):
            if j["verdict"] == "skipped":
                continue
            item = items[j["position"]]
            instance = Instance(tuple(item["tokens"]), tuple(item["head"]), tuple(item["tail"]), j["relation"])
            out.append(Record(instance, j["verdict"] == "none", item["line"], item["text"],
                              tuple(item["head_chars"]) if item["head_chars"] else None,
                              tuple(item["tail_chars"]) if item["tail_chars"] else None))
        return out

    @user_errors
    def export(self, annotation: dict | None, session: dict, request: gr.Request = None) -> tuple[list[str], str]:
        """Your judgements of the open queue as FewRel-style JSONL, Label Studio JSON and doccano JSONL (private files)."""
        session = self.wb.owned(session, request)
        q = self._queue(session["owner"], (annotation or {}).get("queue"))
        records = self.judged_records(q["id"], session["owner"])
        if not records:
            raise BadInput("You have not judged any item of this queue yet (skipped items are not exported).")
        folder = self.wb.export_folder()
        paths = [write_corpus(records, folder / filename, fmt) for fmt, filename in EXPORTS.items()]
        # The accepted relations' texts as in force now, so `python -m emma train --descriptions` reads them.
        relations = self.wb.relations(session)
        texts = {r.label: relations[r.label] for r in records if not r.negative and r.label in relations}
        paths.append(folder / "descriptions.json")
        paths[-1].write_text(json.dumps(texts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        negatives = sum(r.negative for r in records)
        return self.wb.private_files(paths), (f"Exported {len(records)} judged items ({negatives} none of these: "
                                              "relation null and negative true in the JSONL, no_relation in Label Studio and doccano).")

    @user_errors
    def agreement(self, queue_id, session: dict, request: gr.Request = None):
        """Cohen's κ between the annotators of a queue on the items both judged (skips left out), per relation, and
        the disagreements. Returns (summary markdown, per-relation table, disagreements table)."""
        session = self.wb.owned(session, request)
        q = self._queue(session["owner"], queue_id)
        by_owner: dict[str, dict[int, str]] = {}
        for j in self.wb.store.judgements(q["id"]):
            if j["verdict"] != "skipped":
                by_owner.setdefault(j["owner"], {})[j["position"]] = j["relation"] if j["verdict"] == "accepted" else "none of these"
        names = sorted(by_owner)
        if len(names) < 2:
            raise BadInput("Agreement needs two annotators who judged items of this queue.")
        items = {i["position"]: i for i in self.wb.store.queue_items(q["id"])}
        summary, per_relation, disagreements = [], [], []
        for x in range(len(names)):
            for y in range(x + 1, len(names)):
                a, b = names[x], names[y]
                both = sorted(set(by_owner[a]) & set(by_owner[b]))
                la, lb = [by_owner[a][p] for p in both], [by_owner[b][p] for p in both]
                kappa = cohen_kappa(la, lb)
                who = f"{_login(a)} and {_login(b)}"
                summary.append(f"- **{in_markdown(who)}**: {len(both)} items judged by both, agree on {sum(u == v for u, v in zip(la, lb))}, "
                               f"Cohen's κ = {'undefined' if kappa is None else f'{kappa:.3f}'}")
                for label, k in kappa_per_label(la, lb).items():
                    per_relation.append({"annotators": who, "relation": label, "kappa": None if k is None else round(k, 3),
                                         "times chosen": la.count(label) + lb.count(label)})
                for p, u, v in zip(both, la, lb):
                    if u != v:
                        inst = item_instance(items[p])
                        disagreements.append({"item": p + 1, "sentence": " ".join(inst.tokens), "head": inst.head_text,
                                              "tail": inst.tail_text, _login(a): u, _login(b): v})
        text = "\n".join(summary) + "\n\nκ per relation: that relation or not, on the same overlap (undefined when neither used it)."
        return text, pd.DataFrame(per_relation), pd.DataFrame(disagreements)

    @user_errors
    def score_file(self, annotation: dict | None, session: dict, request: gr.Request = None, progress=gr.Progress()):
        """Error analysis of a labelled file: the model's suggestions against the file's relations, with the relations
        in force. Returns (summary markdown, confusion heatmap, per-relation table, errors table)."""
        session, ctx = self._context(session, request)
        q = self._queue(ctx.owner, (annotation or {}).get("queue"))
        labelled = [i for i in self.wb.store.queue_items(q["id"]) if i["gold"]]
        negatives = sum(i["gold"] == NO_RELATION for i in labelled)
        gone = sum(i["gold"] != NO_RELATION and i["gold"] not in ctx.relations for i in labelled)
        items = [i for i in labelled if i["gold"] in ctx.relations]
        if not items:
            raise BadInput("No item of this queue has a relation in force to compare with; import a file with relations.")
        if len(items) > MAX_SCORED:
            raise BadInput(f"The queue has {len(items)} labelled items; error analysis scores at most {MAX_SCORED} at once.")
        progress(0, desc="Scoring")
        found = self.suggester.many(q["id"], items, ctx, lambda done, total: progress(done / total, desc="Scoring"))
        gold, predicted = [i["gold"] for i in items], [s.label for s in found]
        m = macro_prf(gold, predicted)
        text = (f"**{len(items)} items** with a relation in force: macro precision {m['precision']:.1f}, recall {m['recall']:.1f}, "
                f"**F1 {m['f1']:.1f}**, accuracy {m['accuracy']:.1f} (percent; the library's macro formula).")
        if negatives:
            text += f" {negatives} items are *none of these* in the file: EMMA always picks a relation in force, so they are left out."
        if gone:
            text += f" {gone} items have a relation that is not in force now: left out."
        labels = sorted(set(gold) | set(predicted))
        rows = []
        for label in labels:
            tp = sum(g == p == label for g, p in zip(gold, predicted))
            n_pred, n_gold = predicted.count(label), gold.count(label)
            p_, r_ = (tp / n_pred if n_pred else 0.0), (tp / n_gold if n_gold else 0.0)
            rows.append({"relation": label, "in the file": n_gold, "suggested": n_pred, "precision": round(100 * p_, 1),
                         "recall": round(100 * r_, 1), "f1": round(200 * p_ * r_ / (p_ + r_), 1) if p_ + r_ else 0.0})
        errors = [{"item": i["position"] + 1, "sentence": " ".join(i["tokens"]), "head": " ".join(i["tokens"][slice(*i["head"])]),
                   "tail": " ".join(i["tokens"][slice(*i["tail"])]), "in the file": g, "suggested": p}
                  for i, g, p in zip(items, gold, predicted) if g != p]
        return text, confusion_figure(gold, predicted, labels), pd.DataFrame(rows), pd.DataFrame(errors)

    @user_errors
    def open_error(self, predict, annotation: dict | None, session: dict, evt: gr.SelectData, request: gr.Request = None):
        """A row of "Where they differ" clicked (its first cell: the item number): that item's sentence and entities go
        to the Predict tab, which then explains it (recall, reranking, attention).

        Returns (sentence, head, tail, spans, marked, hint, tabs update).
        """
        session, ctx = self._context(session, request)
        q = self._queue(ctx.owner, (annotation or {}).get("queue"))
        try:
            position = int(evt.row_value[0]) - 1
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            raise BadInput("That row is no longer shown; score the queue again.") from None
        item = self.wb.store.queue_item(q["id"], position)
        if item is None:
            raise BadInput("That item is not in this queue; score the queue again.")
        return predict.opened(*Instance(tuple(item["tokens"]), tuple(item["head"]), tuple(item["tail"])).as_text())

    # ------------------------------------------------------------------ layout

    def build(self, session: gr.State, tab: gr.Tab, predict=None, tabs: gr.Tabs | None = None):
        """The tab's components and events (call inside `tab`); the page load calls `show` (see `layout`)."""
        annotation = gr.State(new_annotation())
        gr.Markdown(IMPORT_HELP, elem_classes="panel-help")
        with gr.Row():
            name = gr.Textbox(label="Queue name (default: the file name)", elem_id="annotate-name", scale=2)
            shared = gr.Checkbox(label="Share with every login of this workbench (only with --auth)", value=False,
                                 elem_id="annotate-shared", scale=2)
            with gr.Column(scale=1, min_width=200):
                upload = gr.UploadButton("Import a file of instances", file_types=[".json", ".jsonl", ".gz"], variant="primary",
                                         elem_id="annotate-file")
                sample = gr.Button("No file? Try the example sentences", size="sm", elem_id="annotate-sample")
        report = gr.Markdown(elem_id="annotate-report")
        with gr.Row():
            # allow_custom_value: the handlers refuse a value that is not the caller's in a sentence of their own.
            queues = gr.Dropdown([], label="Queue", elem_id="annotate-queue", scale=3, allow_custom_value=True)
            ordering = gr.Dropdown([(v, k) for k, v in ORDERS.items()], value="file", label="Order", elem_id="annotate-order",
                                   scale=2, allow_custom_value=True)
        gr.Markdown(KEYS_HELP, elem_classes="panel-help")
        progress = gr.HTML(elem_id="annotate-progress")
        sentence = gr.HighlightedText(label="Instance", elem_id="annotate-sentence", color_map={"HEAD": "#f4a261", "TAIL": "#2a9d8f"},
                                      show_legend=False, combine_adjacent=False)
        suggestion_md = gr.Markdown(elem_id="annotate-suggestion")
        with gr.Row():
            candidates = [gr.Button(visible=False, size="sm", elem_id=f"annotate-cand-{i + 1}") for i in range(N_BUTTONS)]
        with gr.Row():
            accept = gr.Button("Accept suggestion (Enter)", variant="primary", elem_id="annotate-accept")
            none = gr.Button("None of these (N)", elem_id="annotate-none")
            skip = gr.Button("Skip (S)", elem_id="annotate-skip")
            undo = gr.Button("Undo (U)", elem_id="annotate-undo")
        with gr.Row():
            search = gr.Dropdown([], label="Another relation in force (press / to search)", filterable=True, allow_custom_value=True,
                                 elem_id="annotate-search", scale=3)
            accept_typed = gr.Button("Accept typed", elem_id="annotate-accept-typed", scale=1)
        status = gr.Textbox(show_label=False, interactive=False, container=False, elem_id="annotate-status")
        with gr.Accordion("Error analysis: the model against the file's relations (a labelled file)", open=False):
            score_btn = gr.Button("Score the queue's labelled items with the relations in force", elem_id="annotate-score")
            score_summary = gr.Markdown(elem_id="annotate-score-summary")
            confusion = gr.Plot(label="Confusion: the file's relation (rows) against the suggestion (columns)",
                                elem_id="annotate-confusion")
            per_relation = gr.Dataframe(label="Per relation", interactive=False, elem_id="annotate-per-relation")
            errors = gr.Dataframe(label="Where they differ (click a row to see why in the Predict tab)", interactive=False,
                                  wrap=True, elem_id="annotate-errors")
        with gr.Accordion("Export your judgements of this queue", open=False):
            export_btn = gr.Button("Export: FewRel JSONL + Label Studio JSON + doccano JSONL + descriptions", elem_id="annotate-export")
            export_status = gr.Textbox(show_label=False, interactive=False, container=False, elem_id="annotate-export-status")
            files = gr.File(label="Exports (train with: python -m emma train --data annotations.jsonl --descriptions descriptions.json)",
                            file_count="multiple", interactive=False, elem_id="annotate-files")

        view = [annotation, sentence, progress, suggestion_md, ordering, *candidates]
        request_id = gr.Textbox("", visible=False, label="request_id")
        # Progress and a refusal show on the report alone, not on each of the queue's panels.
        upload.upload(self.import_file, [upload, name, shared, annotation, session], [report, queues, *view],
                      api_name="import_queue", show_progress_on=report, **MODEL)
        sample.click(self.import_examples, [annotation, session], [report, queues, *view], show_progress_on=report, **MODEL,
                     **PRIVATE)
        queues.input(self.open_queue, [queues, ordering, annotation, session], view, **MODEL, **QUIET)
        ordering.input(self.open_queue, [queues, ordering, annotation, session], view, **MODEL, **QUIET)
        hidden = gr.Textbox("", visible=False)
        # Every key is an action: a click while the previous judgement is still finishing must not be dropped
        # (Gradio's default, trigger_mode="once"). A repeat on a stale item is refused by the store ("judged already").
        # A refusal (a key pressed once the queue is done) marks the status line alone, not every panel it updates.
        keyed = dict(trigger_mode="multiple", show_progress_on=status)
        for button, action in ((accept, "accept"), (none, "none"), (skip, "skip")):
            button.click(_judging(self.judge, action), [hidden, annotation, session, request_id], [status, *view],
                         api_name=f"annotate_{action}", **MODEL, **keyed)
        for button in candidates:  # the button's own label ("2 · founded by") says which candidate
            button.click(_judging(self.judge, "accept"), [button, annotation, session, request_id], [status, *view],
                         **MODEL, **PRIVATE, **keyed)
        # Picking a relation in the search box (type, then Enter or a click) accepts it; the focus leaves the box so
        # the keys act again, and the box is emptied for the next item.
        search.input(self.accept_searched, [search, annotation, session, request_id], [status, *view, search],
                     **MODEL, **PRIVATE).then(None, js="() => { if (document.activeElement) document.activeElement.blur(); }")
        accept_typed.click(_judging(self.judge, "accept"), [search, annotation, session, request_id], [status, *view],
                           **MODEL, **PRIVATE)
        undo.click(self.undo, [annotation, session, request_id], [status, *view], api_name="annotate_undo", **MODEL, **keyed)
        export_btn.click(self.export, [annotation, session], [files, export_status], **PRIVATE)
        score_btn.click(self.score_file, [annotation, session], [score_summary, confusion, per_relation, errors], **MODEL, **PRIVATE)
        if predict is not None and tabs is not None:  # a clicked row is explained by the Predict tab's own handler
            def open_row(annotation_, session_, evt: gr.SelectData, request: gr.Request = None):
                return self.open_error(predict, annotation_, session_, evt, request)

            predict.explain_on(errors.select, open_row, [annotation, session], tabs)
        tab.select(self.show, [annotation, session], [queues, *view], **MODEL, **QUIET)
        tab.select(self.search_choices, [session], [search], **QUIET)
        return AnnotateParts(annotation, queues, view, search)

    def build_agreement(self, session: gr.State, tab: gr.Tab) -> None:
        """The agreement panel of the Feedback tab (call inside it): Cohen's κ of a queue's annotators, disagreements."""
        with gr.Accordion("Agreement between annotators of a queue (Cohen's κ)", open=False):
            with gr.Row():
                queue_choice = gr.Dropdown([], label="Queue", elem_id="agreement-queue", scale=3, allow_custom_value=True)
                compute = gr.Button("Compute agreement", elem_id="agreement-compute", scale=1)
            summary = gr.Markdown(elem_id="agreement-summary")
            per_relation = gr.Dataframe(label="κ per relation", interactive=False, elem_id="agreement-relations")
            disagreements = gr.Dataframe(label="Disagreements", interactive=False, elem_id="agreement-disagreements", wrap=True)
        tab.select(self.agreement_queues, [session], [queue_choice], **QUIET)
        compute.click(self.agreement, [queue_choice, session], [summary, per_relation, disagreements], **PRIVATE)

    def agreement_queues(self, session: dict, request: gr.Request = None):
        """The agreement panel's queue choices: the caller's queues (the login decides under --auth)."""
        return gr.update(choices=self.queue_choices(self.wb.owned(session, request)["owner"]))

    def accept_searched(self, choice, annotation: dict | None, session: dict, request_id: str = "", request: gr.Request = None):
        """A relation picked in the search box: accept it (an emptied box does nothing). Returns (status, *view, search)."""
        if not isinstance(choice, str) or not choice.strip():
            return (gr.skip(),) * (2 + VIEW_OUTPUTS)  # status, the view, the search box: unchanged
        return (*self.judge("accept", choice, annotation, session, request_id, request), gr.update(value=None))

    def search_choices(self, session: dict, request: gr.Request = None):
        session = self.wb.owned(session, request)
        return gr.update(choices=list(self.wb.relations(session)), value=None)


@dataclass
class AnnotateParts:
    """The Annotate tab's components the page load and the Feedback tab use."""

    annotation: gr.State
    queues: gr.Dropdown
    view: list
    search: gr.Dropdown


def _judging(fn, action: str):
    """`fn` with its first argument fixed, keeping the signature Gradio reads for `gr.Request`."""

    def handler(choice, annotation, session, request_id="", request: gr.Request = None):
        return fn(action, choice, annotation, session, request_id, request)

    handler.__name__ = f"{fn.__name__}_{action}"
    return handler


def confusion_figure(gold: list[str], predicted: list[str], labels: list[str]) -> go.Figure:
    """A plotly heatmap of counts: the file's relation (rows) against the suggestion (columns)."""
    index = {label: i for i, label in enumerate(labels)}
    z = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted):
        z[index[g]][index[p]] += 1
    names = [html.escape(label) for label in labels]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Blues", text=z, texttemplate="%{text}",
                               hovertemplate="file: %{y}<br>suggested: %{x}<br>%{z} items<extra></extra>"))
    # The top margin leaves room for the plot's label, which Gradio draws over the figure's top left corner.
    fig.update_layout(height=max(300, 40 * len(labels) + 150), margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="suggested", yaxis_title="in the file", yaxis_autorange="reversed")
    return fig


def _login(owner: str) -> str:
    return owner.split(":", 1)[1] if owner.startswith("user:") else "you"

