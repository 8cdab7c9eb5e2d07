"""The Feedback tab's "Improve the model from my labels" panel: fine-tune on demand, compare, switch.

A user's labelled sentences (judged in Predict, Annotate, or imported as examples) already count
at once as examples. This panel goes one step further: it fine-tunes a copy of the model the user
is on (`app.finetuning`, in a child process; predictions keep working meanwhile), shows macro F1
on held-back labelled rows before and after, and lets the user switch their predictions to the
new version, or back. The choice is stored per user, so a reload or a restart keeps it; every
feedback row records the checkpoint id of the model that made the prediction.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import gradio as gr
import pandas as pd

from emma.finetune import FinetuneConfig

from .finetuning import FINISHED
from .relations_tab import plural
from .session import BadInput
from .workbench import DB, QUIET, Workbench, lenient, user_errors

MIN_ROWS_PER_RELATION = 2  # one to train on, one to hold back and score where it is in another sentence
MIN_RELATIONS = 2  # in-batch negatives need another relation
MAX_ROWS = 5000  # rows one fine-tune takes (a few minutes on 2 cores per few hundred)
MAX_VERSIONS = 10  # versions one user keeps (each a whole model on disk, 90-420 MB); deleting one makes room
MIN_FREE_DISK = 2 * 1024**3  # bytes the models' disk must have free for a fine-tune to start (without logins,
# many browsers may each keep MAX_VERSIONS: this, not the cap, is what keeps them from filling the disk)
SERVER_MODEL = ""  # the dropdown's value for the server's own model
CURRENT_MODEL = ""  # the start dropdown's value for "the model you are using"
FIRM = 0.9  # a held-back verdict is firm when the fine-tune wins (or loses) on at least this share of resamples
SCORE_NAMES = {"recall_only": "recall only", "emma": "classifier", "emma_fused": "fused (the shipped rule)"}

HELP = f"""Fine-tunes a copy of the model you are using on **your labelled sentences** (feedback with a known
relation, imported examples, accepted items of your Annotate queues) of the relations switched on. First a model is
trained without about a fifth of each relation's labels (whole sentences) and scored on them against your current model,
your other labels counting as examples both times, as they do in your predictions; then the new version is trained on
all your labels. Each model is averaged with the one it started from ({FinetuneConfig.blend:.0%} trained,
{1 - FinetuneConfig.blend:.0%} as it was), which keeps most of the gain and forgets less of what the model knew. It
takes a few minutes; predictions keep working meanwhile. Only you can use the new version, since it has learnt your
sentences. It does not always beat the examples alone, and a few dozen held-back sentences give a
rough verdict: the status line says how firm it is. Where the server offers a larger model under **Start from**, the
fine-tune can start from it instead: from the same labels it mostly ended higher in new domains (results/FINETUNE.md),
but it trains and predicts several times more slowly (tens of minutes on a small CPU). Each version is a whole model
on the server's disk: you keep up to {MAX_VERSIONS}, and can delete those you no longer use."""


class ImprovePanel:
    """Handlers of the fine-tune panel over the shared `Workbench`."""

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    def training_rows(self, session: dict) -> tuple[list, dict[str, str], str]:
        """(rows, {relation: text}, a note on rows left out): the owner's labelled rows of relations in force."""
        relations = self.wb.relations(session)
        # Labelled examples first; then accepted Annotate judgements of sentences that are not examples already.
        labelled = list(self.wb.labelled(session))
        known = {r.pair for r in labelled}
        labelled += [r for r in self.wb.engine.instances(self.wb.store.annotated(session["owner"])) if r.pair not in known]
        in_force = [r for r in labelled if r.relation in relations]
        rows = in_force[-MAX_ROWS:]  # the newest: the owner's latest labels
        usable = {rel for rel, n in Counter(r.relation for r in rows).items() if n >= MIN_ROWS_PER_RELATION}
        if len(usable) < MIN_RELATIONS:
            raise BadInput(f"Label at least {MIN_ROWS_PER_RELATION} sentences of each of at least {MIN_RELATIONS} relations "
                           f"switched on first (you have {plural(len(rows), 'labelled sentence')} of relations in force, "
                           f"{plural(len(usable), 'relation')} with {MIN_ROWS_PER_RELATION} or more).")
        used = [r for r in rows if r.relation in usable]
        capped = len(in_force) - len(rows)
        left_out = len(labelled) - len(used) - capped
        note = ""
        if left_out:
            note = (f" {plural(left_out, 'labelled sentence')} {'is' if left_out == 1 else 'are'} left out (relation off, "
                    f"or fewer than {MIN_ROWS_PER_RELATION} of it).")
        if capped:
            oldest = "The oldest is" if capped == 1 else f"The {capped} oldest are"
            note += f" {oldest} left out: a fine-tune reads at most the newest {MAX_ROWS}."
        return used, {rel: text for rel, text in relations.items() if rel in usable}, note

    def start_choices(self) -> list[tuple[str, str]]:
        """The models a fine-tune may start from: the one the user is on, then the server's `--finetune-from` ones."""
        return [("the model you are using", CURRENT_MODEL)] + [(f"{name} (larger: slower, more gain in a new domain)", name)
                                                                 for name in self.wb.finetune_from]

    @user_errors
    def improve(self, session: dict, start_from: str | None = CURRENT_MODEL, request: gr.Request = None) -> tuple[str, gr.Timer]:
        """Start a fine-tune on the caller's labels, of the model they use or of one of the server's other starting
        models (`start_from`, a name of `Workbench.finetune_from`). Returns (status, the polling timer switched on)."""
        session = self.wb.owned(session, request)
        if start_from and (not isinstance(start_from, str) or start_from not in self.wb.finetune_from):
            offered = ", ".join(self.wb.finetune_from) or "none"
            raise BadInput(f"A fine-tune can start from the model you are using, or one the server offers ({offered}).")
        rows, descriptions, note = self.training_rows(session)
        if len(self.wb.store.model_versions(session["owner"])) >= MAX_VERSIONS:
            raise BadInput(f"You keep {MAX_VERSIONS} model versions, the most one user may: delete one you no longer use "
                           "(Delete a version you no longer use, in this panel) before fine-tuning again.")
        free = shutil.disk_usage(existing_parent(self.wb.finetuner.models_dir)).free
        if free < MIN_FREE_DISK:
            raise BadInput(f"The server's disk has {free / 1024**3:.1f} GB free and a fine-tune needs {MIN_FREE_DISK / 1024**3:.0f} GB; "
                           "delete versions you no longer use, or ask the server's owner to make room.")
        running = self.wb.finetuner.running()
        if running is not None:
            mine = running.owner == session["owner"]
            raise BadInput("Your fine-tune is still running; its progress shows below." if mine else
                           f"Another fine-tune is running on this server (started {time.strftime('%H:%M', time.localtime(running.started))}); "
                           "try again when it has finished.")
        in_use = self.wb.engine_for(session).extractor.checkpoint
        # From another start, "before" is still the model the user would switch from, so the verdict answers their question.
        parent, baseline = (self.wb.finetune_from[start_from], in_use) if start_from else (in_use, None)
        start = f" from {start_from}" if start_from else ""
        summary = f"{start} on {len(rows)} labelled sentences of {len(descriptions)} relations"
        try:
            self.wb.finetuner.start(session["owner"], parent, rows, descriptions, baseline=baseline, summary=summary, note=note)
        except RuntimeError:
            raise BadInput("Another fine-tune started a moment ago; try again when it has finished.") from None
        except OSError as e:  # no room for its files, no process: the job is recorded as failed, nothing is kept
            raise BadInput(f"The fine-tune could not start ({e.strerror or e}); your model is unchanged.") from None
        return f"Started: fine-tuning{summary}.{note}", gr.Timer(active=True)

    @user_errors
    def progress(self, session: dict, request: gr.Request = None):
        """Status line, before/after table, model choices, whether to keep polling, and the versions one may delete."""
        session = self.wb.owned(session, request)
        job = self.wb.finetuner.job(session["owner"])
        dropdown, deletable = self.version_dropdowns(session)
        if job is None:
            return "", report_frame(self.latest_report(session)), dropdown, gr.Timer(active=False), deletable
        if job.state not in FINISHED:
            minutes = (time.time() - job.started) / 60
            where = f"step {job.step} of {job.total} ({100 * job.step / job.total:.0f} %)" if job.total else job.phase
            part = f", {job.part}" if job.part else ""
            return (f"Fine-tuning{job.summary}{part}: {where}, {minutes:.1f} min so far.{job.note}", report_frame(None),
                    dropdown, gr.Timer(active=True), deletable)
        if job.state == "cancelled":
            status = "Cancelled: nothing was kept, and your model is unchanged."
            return status, report_frame(None), dropdown, gr.Timer(active=False), deletable
        if job.state == "failed":
            status = f"The fine-tune failed: {job.message}. Your model is unchanged."
            return status, report_frame(None), dropdown, gr.Timer(active=False), deletable
        return done_message(job.name, job.report), report_frame(job.report), dropdown, gr.Timer(active=False), deletable

    @user_errors
    def cancel(self, session: dict, request: gr.Request = None) -> str:
        """Stop the caller's running fine-tune; safe to repeat (a second click finds nothing to stop)."""
        session = self.wb.owned(session, request)
        if not self.wb.finetuner.cancel(session["owner"]):
            raise BadInput("You have no fine-tune running.")
        return "Stopping the fine-tune…"

    def latest_report(self, session: dict) -> dict | None:
        versions = self.wb.store.model_versions(session["owner"])
        return json.loads(versions[-1]["report"]) if versions else None

    def version_dropdowns(self, session: dict) -> tuple[gr.Dropdown, gr.Dropdown]:
        """(*Model for my predictions*: the server's model and the owner's versions, theirs selected; *Delete a
        version*: the versions alone, none selected)."""
        choices = [(f"server model ({self.wb.engine.checkpoint_id})", SERVER_MODEL)]
        for v in self.wb.store.model_versions(session["owner"]):
            report = json.loads(v["report"])
            after = report.get("after", {}).get("emma_fused")
            score = f", held-back check {report['before'].get('emma_fused', 0):.0f} → {after:.0f}" if after is not None else ""
            choices.append((f"{v['name']} ({v['rows']} labels{score})", v["name"]))
        return (gr.Dropdown(choices=choices, value=session.get("model") or SERVER_MODEL),
                gr.Dropdown(choices=choices[1:], value=None))

    @user_errors
    def choose(self, name: str | None, session: dict, request: gr.Request = None) -> tuple[dict, str]:
        """Switch the caller's predictions to version `name` ("" for the server's model). Returns (session, status)."""
        session = self.wb.owned(session, request)
        name = name or None
        if name is not None and (not isinstance(name, str) or self.wb.own_version(session["owner"], name) is None):
            raise BadInput("That model version is not one of yours.")
        self.wb.store.choose_model(session["owner"], name)
        session = {**session, "model": name}
        used = self.wb.engine_for(session).checkpoint_id
        return session, f"Your predictions now use {name or 'the server model'} ({used})."

    @user_errors
    def delete(self, name: str | None, session: dict, request: gr.Request = None) -> tuple[str, dict, dict]:
        """Delete the caller's version `name` (not the one their predictions use). Returns (status, the model
        choices, the versions one may delete). A repeated delete says the version is no longer theirs."""
        session = self.wb.owned(session, request)
        if not name or not isinstance(name, str):
            raise BadInput("Pick one of your versions to delete.")
        self.wb.delete_version(session["owner"], name)
        return (f"Deleted {name}: its files are gone, and your feedback rows still name the checkpoint they judged.",
                *self.version_dropdowns(session))

    def build(self, session: gr.State, tab: gr.Tab, header: gr.Markdown) -> None:
        """The panel (call inside the Feedback tab); `header`, the page's model line, follows the user's choice."""
        with gr.Accordion("Improve the model from my labels", open=True, elem_id="improve"):
            gr.Markdown(HELP, elem_classes="panel-help")
            with gr.Row():
                start = gr.Button("Improve the model from my labels", variant="primary", elem_id="improve-start")
                # Shown only where the server offers another start (--finetune-from).
                start_from = lenient(gr.Dropdown(label="Start from", choices=self.start_choices(), value=CURRENT_MODEL,
                                                 visible=bool(self.wb.finetune_from), elem_id="improve-from", interactive=True))
                stop = gr.Button("Cancel the fine-tune", variant="secondary", elem_id="improve-cancel")
                # allow_custom_value: the handler checks the name itself (and says so in a sentence), not Gradio.
                model = gr.Dropdown(label="Model for my predictions", choices=[], elem_id="improve-model", interactive=True,
                                    allow_custom_value=True)
            with gr.Row():
                deletable = gr.Dropdown(label="Delete a version you no longer use", choices=[], elem_id="improve-delete-choice",
                                        interactive=True, allow_custom_value=True)
                delete = gr.Button("Delete the version", variant="stop", elem_id="improve-delete")
            status = gr.Textbox(show_label=False, interactive=False, container=False, elem_id="improve-status")
            report = gr.Dataframe(report_frame(None), label="Macro F1 on your held-back sentences", interactive=False,
                                  elem_id="improve-report")
            timer = gr.Timer(1.0, active=False)
        start.click(self.improve, [session, start_from], [status, timer], api_name="improve_model", **DB)
        stop.click(self.cancel, [session], [status], api_name="cancel_improve", **DB)
        timer.tick(self.progress, [session], [status, report, model, timer, deletable], **QUIET)
        tab.select(self.progress, [session], [status, report, model, timer, deletable], **QUIET)
        # Progress shows on the status line only: a refusal must not leave the two dropdowns under an error overlay.
        delete.click(self.delete, [deletable, session], [status, model, deletable], api_name="delete_model_version",
                     show_progress_on=status, **DB)
        model.input(self.choose, [model, session], [session, status], api_name="choose_model", **DB).success(
            self.wb.model_line, [session], [header], **QUIET)


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest folder above that exists (the models' folder is made at the first fine-tune)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def done_message(name: str, report: dict | None) -> str:
    """The status once a fine-tune has finished: what its held-back sentences say, and how firmly."""
    report = report or {}
    verdict = report.get("improved")
    if verdict is None:
        return f"Done: version {name} is ready. Choose it under 'Model for my predictions' to use it."
    change = report["after"]["emma_fused"] - report["before"]["emma_fused"]
    chance = report.get("chance_better")
    sentences = report.get("held_back_sentences")
    evidence = f"{change:+.1f} fused macro F1"
    if chance is not None and sentences:
        evidence += f" on {sentences} held-back sentences, better in {chance:.0%} of resamples of them"
    firm = chance is None or round(chance, 2) >= FIRM or round(chance, 2) <= 1 - FIRM  # as shown
    if verdict:
        return (f"Done: version {name} is ready and did better on your held-back sentences"
                f"{'' if firm else ', by too little to be sure'} ({evidence}; table below). Choose it under "
                "'Model for my predictions' to use it.")
    # Measured: the user's held-back sentences predicted new text of their domain poorly, and the fine-tune
    # mostly won there (results/FINETUNE.md), so a loss on them is reported, not turned into advice to keep.
    return (f"Done: version {name} is ready but did not do better on your held-back sentences"
            f"{'' if firm else ', by too little to be sure'} ({evidence}; table below). That check is rough: on six "
            "test domains it agreed with new text half the time, and fine-tuning beat the labels as examples alone "
            "16 times in 18. Choose it under 'Model for my predictions' to try it, and go back to your current "
            "model if its predictions are worse.")


REPORT_COLUMNS = ["rule", "before", "after", "change"]


def report_frame(report: dict | None) -> pd.DataFrame:
    """Before/after macro F1 per decision rule on the held-back rows, as a small table."""
    if not report or not report.get("after"):
        return pd.DataFrame(columns=REPORT_COLUMNS)
    rows = [{"rule": label, "before": round(report["before"].get(key, 0.0), 1), "after": round(report["after"][key], 1),
             "change": round(report["after"][key] - report["before"].get(key, 0.0), 1)}
            for key, label in SCORE_NAMES.items() if key in report["after"]]
    sentences = f" in {report['held_back_sentences']} sentences" if report.get("held_back_sentences") else ""
    held = f"held back: {report['held_back_rows']} labelled pairs{sentences}"
    if report.get("scoring_rows", report["trained_rows"]) != report["trained_rows"]:
        held += f", scored by a model trained on the other {report['scoring_rows']}; the new version trained on all {report['trained_rows']}"
    else:
        held += f"; the new version trained on the other {report['trained_rows']}"
    if report.get("baseline") and report["baseline"] != report["parent"]:
        held += f"; before: the model you were using ({report['baseline']}), after: a fine-tune of {report['parent']}"
    rows.append({"rule": held,
                 "before": None, "after": None, "change": None})
    return pd.DataFrame(rows)
