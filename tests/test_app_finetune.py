"""Fine-tuning from the workbench (tiny model, a real child process): start, progress, versions, choice, failures."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.finetuning import FINISHED, Finetuner
from app.improve_panel import ImprovePanel
from app.predict_tab import PredictTab
from app.session import BadInput
from app.storage import Store, replace_example
from app.workbench import Workbench

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


@pytest.fixture
def wb(tiny_extractor, toy_descriptions, tmp_path):
    wb = Workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions),
                   load_examples())
    yield wb
    wb.finetuner.close()  # a test that failed mid-way leaves no child process behind


def label(wb, owner, instances):
    with wb.store.transaction() as db:
        for i in instances:
            replace_example(db, owner, list(i.tokens), list(i.head), list(i.tail), i.relation, None)


def wait(finetuner, owner, seconds=300):
    deadline = time.time() + seconds
    while finetuner.job(owner).state not in FINISHED:
        assert time.time() < deadline, "the fine-tune did not finish"
        time.sleep(0.5)
    return finetuner.job(owner)


def test_too_few_labels_are_refused_in_one_sentence(wb, toy_instances):
    panel, session = ImprovePanel(wb), wb.open_session("user:ann")
    with pytest.raises(BadInput, match="Label at least 2 sentences of each of at least 2 relations"):
        panel.improve.__wrapped__(panel, session)
    label(wb, "user:ann", [i for i in toy_instances if i.relation == toy_instances[0].relation])
    with pytest.raises(BadInput, match="1 relation"):
        panel.improve.__wrapped__(panel, session)
    assert wb.finetuner.running() is None


def test_accepted_annotations_are_training_rows_beside_examples(wb, toy_instances, toy_descriptions):
    from app.storage import add_judgement

    owner, half = "user:ann", len(toy_instances) // 2
    label(wb, owner, toy_instances[:half])
    queued = toy_instances[half - 2:]  # the one at position 1 is an example already: counted once
    queue_id = wb.store.import_queue(owner, "q", [{"tokens": list(i.tokens), "head": list(i.head), "tail": list(i.tail)}
                                                  for i in queued])
    with wb.store.transaction() as db:
        for position, i in enumerate(queued):
            verdict = "accepted" if position % 3 else "none"  # "none of these" is no training row
            add_judgement(db, {"queue_id": queue_id, "position": position, "owner": owner, "verdict": verdict,
                               "relation": i.relation if verdict == "accepted" else None, "suggested": i.relation})
    rows, descriptions, _ = ImprovePanel(wb).training_rows(wb.open_session(owner))
    accepted = [i for position, i in enumerate(queued) if position % 3]
    assert sorted(r.pair for r in rows) == sorted({i.pair for i in toy_instances[:half] + accepted})
    assert wb.store.annotated("user:bob") == []


@pytest.mark.slow
def test_fine_tune_from_labels_then_switch_and_keep_the_choice(wb, toy_instances, tmp_path):
    panel, predict = ImprovePanel(wb), PredictTab(wb)
    ann, bob = wb.open_session("user:ann"), wb.open_session("user:bob")
    label(wb, "user:ann", toy_instances)
    status, _ = panel.improve.__wrapped__(panel, ann)
    assert f"fine-tuning on {len(toy_instances)} labelled sentences of 4 relations" in status
    with pytest.raises(BadInput, match="Another fine-tune is running"):
        label(wb, "user:bob", toy_instances)
        panel.improve.__wrapped__(panel, bob)
    job = wait(wb.finetuner, "user:ann")
    assert job.state == "done", job.message
    assert job.part == "part 2 of 2 (the new version)"  # the child's log names each of its two trainings
    status, report, dropdown, _, deletable = panel.progress.__wrapped__(panel, ann)
    assert "is ready" in status
    assert ("did better" in status) == job.report["improved"]  # the held-back verdict, said plainly
    assert f"on {job.report['held_back_sentences']} held-back sentences" in status
    assert ("That check is rough" in status) == (not job.report["improved"])
    assert list(report["rule"][:3]) == ["recall only", "classifier", "fused (the shipped rule)"]
    assert job.name in [value for _, value in dropdown.constructor_args["choices"]]
    assert [value for _, value in deletable.constructor_args["choices"]] == [job.name]  # the server's model is not deletable
    assert not list(wb.finetuner.models_dir.glob("*.job")) and not list(wb.finetuner.models_dir.glob("*.partial"))

    # Only ann can use it; once chosen, her predictions (and feedback rows) name the new checkpoint.
    with pytest.raises(BadInput, match="not one of yours"):
        panel.choose.__wrapped__(panel, job.name, bob)
    with pytest.raises(BadInput, match="not one of yours"):
        panel.choose.__wrapped__(panel, [job.name], ann)  # an API client's odd value, not a database error
    ann, status = panel.choose.__wrapped__(panel, job.name, ann)
    version = wb.store.model_version(job.name)
    assert version["checkpoint"] in status and version["parent"] == wb.engine.checkpoint_id
    assert f"`{version['checkpoint']}` (your fine-tuned version)" in wb.model_line(ann)  # the page's header
    assert f"`{wb.engine.checkpoint_id}` ·" in wb.model_line(bob)
    record, _ = predict.predict.__wrapped__(predict, "Apple was founded by Steve Jobs .", "Apple", "Steve Jobs", {}, ann)
    assert record["checkpoint"] == version["checkpoint"] != wb.engine.checkpoint_id
    record, _ = predict.predict.__wrapped__(predict, "Apple was founded by Steve Jobs .", "Apple", "Steve Jobs", {}, bob)
    assert record["checkpoint"] == wb.engine.checkpoint_id

    # A restart (a new Workbench on the same database) keeps the version and ann's choice; "" goes back.
    again = Workbench(wb.engine, Store(wb.store.path), wb.catalogue, [])
    assert again.open_session("user:ann")["model"] == job.name and again.open_session("user:bob")["model"] is None
    ann, status = panel.choose.__wrapped__(panel, "", ann)
    assert ann["model"] is None and wb.store.model_choice("user:ann") is None


@pytest.mark.slow
def test_only_its_owner_can_cancel_a_fine_tune_and_nothing_is_kept(wb, toy_instances, monkeypatch):
    import app.improve_panel

    monkeypatch.setattr(app.improve_panel, "MAX_ROWS", len(toy_instances) - 2)  # for a note on rows left out
    panel = ImprovePanel(wb)
    ann, bob = wb.open_session("user:ann"), wb.open_session("user:bob")
    label(wb, "user:ann", toy_instances)
    started, _ = panel.improve.__wrapped__(panel, ann)
    # The progress line, which replaces the start's within a second, still says what trains and what was left out.
    status, *_ = panel.progress.__wrapped__(panel, ann)
    # The two oldest "founded by" rows are over the cap; the third, alone, is too few to train on.
    assert started.startswith(f"Started: fine-tuning on {len(toy_instances) - 3} labelled sentences of 3 relations.")
    assert status.startswith(f"Fine-tuning on {len(toy_instances) - 3} labelled sentences of 3 relations")
    assert "min so far. 1 labelled sentence is left out" in status and "The 2 oldest are left out" in status
    assert started.endswith(status.split("so far.")[1])
    with pytest.raises(BadInput, match="no fine-tune running"):
        panel.cancel.__wrapped__(panel, bob)
    assert wb.finetuner.job("user:ann").state == "running"
    assert panel.cancel.__wrapped__(panel, ann).startswith("Stopping")
    job = wait(wb.finetuner, "user:ann")
    assert job.state == "cancelled" and wb.finetuner.running() is None
    assert wb.store.model_versions("user:ann") == [] and list(wb.finetuner.models_dir.iterdir()) == []
    status, *_ = panel.progress.__wrapped__(panel, ann)
    assert status.startswith("Cancelled") and "unchanged" in status
    with pytest.raises(BadInput, match="no fine-tune running"):  # a repeated click changes nothing
        panel.cancel.__wrapped__(panel, ann)


def test_a_cancel_before_the_child_process_starts_still_stops_it(wb, toy_instances, monkeypatch):
    import app.finetuning

    real_popen = app.finetuning.subprocess.Popen

    def popen_after_a_cancel(*args, **kwargs):  # the click lands while the rows are written, before the child runs
        assert wb.finetuner.cancel("user:ann")
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(app.finetuning.subprocess, "Popen", popen_after_a_cancel)
    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    label(wb, "user:ann", toy_instances)
    panel.improve.__wrapped__(panel, ann)
    job = wait(wb.finetuner, "user:ann")
    assert job.state == "cancelled" and wb.finetuner.running() is None
    assert wb.store.model_versions("user:ann") == [] and list(wb.finetuner.models_dir.iterdir()) == []


@pytest.mark.slow
def test_a_version_the_database_cannot_take_fails_keeps_nothing_and_frees_the_slot(wb, toy_instances, monkeypatch):
    import sqlite3

    def locked(row):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(wb.store, "add_model_version", locked)
    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    label(wb, "user:ann", toy_instances)
    panel.improve.__wrapped__(panel, ann)
    job = wait(wb.finetuner, "user:ann")
    assert job.state == "failed" and "could not be saved (database is locked)" in job.message
    assert wb.finetuner.running() is None and list(wb.finetuner.models_dir.iterdir()) == []
    assert wb.finetuner.models_dir.stat().st_mode & 0o777 == 0o700  # the models are the users' sentences, trained in


def test_a_fine_tune_starts_from_the_model_in_use_or_one_the_server_offers(wb, toy_instances, tiny_checkpoint, monkeypatch):
    started = []
    monkeypatch.setattr(wb.finetuner, "start", lambda owner, parent, rows, descriptions, baseline, **status: started.append((parent, baseline)))
    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    label(wb, "user:ann", toy_instances)
    assert [value for _, value in panel.start_choices()] == [""]  # nothing offered: the panel shows no choice
    with pytest.raises(BadInput, match=r"or one the server offers \(none\)"):
        panel.improve.__wrapped__(panel, ann, "larger")
    wb.finetune_from = {"larger": Path(tiny_checkpoint)}  # --finetune-from
    assert [value for _, value in panel.start_choices()] == ["", "larger"]
    status, _ = panel.improve.__wrapped__(panel, ann, "larger")
    in_use = wb.engine.extractor.checkpoint
    # "before" is scored by the model ann would switch from, whichever model the fine-tune starts from
    assert status.startswith("Started: fine-tuning from larger on 12 labelled sentences") and started == [(Path(tiny_checkpoint), in_use)]
    status, _ = panel.improve.__wrapped__(panel, ann, "")
    assert status.startswith("Started: fine-tuning on") and started[-1] == (in_use, None)
    for unknown in ("../larger", ["larger"]):
        with pytest.raises(BadInput, match=r"or one the server offers \(larger\)"):
            panel.improve.__wrapped__(panel, ann, unknown)
    assert len(started) == 2


def test_a_start_that_is_no_checkpoint_or_shares_a_name_is_refused_when_the_server_starts(tmp_path, tiny_checkpoint):
    import shutil

    from app.main import AppError, create_workbench

    with pytest.raises(AppError, match=f"cannot offer --finetune-from {tmp_path}: .*is .* a checkpoint folder"):
        create_workbench(tmp_path / "never loaded", tmp_path / "wb.db", finetune_from=[tmp_path])
    for twin in ("a/best", "b/best"):
        shutil.copytree(tiny_checkpoint, tmp_path / twin)
    with pytest.raises(AppError, match="another start is also named 'best'"):
        create_workbench(tmp_path / "never loaded", tmp_path / "wb.db", finetune_from=[tmp_path / "a/best", tmp_path / "b/best"])


def test_a_fine_tune_that_cannot_start_is_a_plain_message(wb, toy_instances, monkeypatch):
    import errno

    import app.finetuning

    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(app.finetuning.subprocess, "Popen", no_memory)
    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    label(wb, "user:ann", toy_instances)
    with pytest.raises(BadInput, match=r"could not start \(Cannot allocate memory\); your model is unchanged"):
        panel.improve.__wrapped__(panel, ann)
    assert wb.finetuner.job("user:ann").state == "failed" and wb.finetuner.running() is None
    assert list(wb.finetuner.models_dir.iterdir()) == []


@pytest.mark.slow
def test_the_child_scores_before_with_the_baseline_it_is_given(wb, toy_instances, tiny_checkpoint, tmp_path):
    owner = "user:ann"
    # A baseline that is no checkpoint stops the child before any training: proof that it reached the child.
    wb.finetuner.start(owner, tiny_checkpoint, toy_instances, {i.relation: i.relation for i in toy_instances},
                       baseline=tmp_path / "no-such-model")
    job = wait(wb.finetuner, owner)
    assert job.state == "failed" and "no-such-model" in job.message
    assert wb.store.model_versions(owner) == [] and list(wb.finetuner.models_dir.iterdir()) == []


@pytest.mark.slow
def test_a_failed_fine_tune_says_why_and_leaves_nothing(wb, toy_instances, tmp_path):
    owner = "user:ann"
    job = wb.finetuner.start(owner, tmp_path / "no-such-checkpoint", toy_instances, {i.relation: i.relation for i in toy_instances})
    job = wait(wb.finetuner, owner)
    assert job.state == "failed" and "no-such-checkpoint" in job.message
    assert wb.store.model_versions(owner) == [] and list(wb.finetuner.models_dir.iterdir()) == []
    panel = ImprovePanel(wb)
    status, *_ = panel.progress.__wrapped__(panel, wb.open_session(owner))
    assert status.startswith("The fine-tune failed:") and "Your model is unchanged" in status


def test_recover_registers_a_fine_tune_that_finished_unwatched(tmp_path, tiny_checkpoint):
    import shutil

    store, models = Store(tmp_path / "wb.db"), tmp_path / "models"
    shutil.copytree(tiny_checkpoint, models / "ft-x")
    (models / "ft-x" / "finetune.json").write_text(json.dumps({"trained_rows": 8, "held_back_rows": 4, "before": {}, "after": {}}))
    (models / "ft-x.job").mkdir()
    (models / "ft-x.job" / "job.json").write_text(json.dumps({"owner": "user:ann", "name": "ft-x", "parent": "p", "rows": 12}))
    (models / "ft-y.job").mkdir()  # an unfinished one: its inputs and partial folder go
    (models / "ft-y.job" / "job.json").write_text(json.dumps({"owner": "user:ann", "name": "ft-y", "parent": "p", "rows": 12}))
    (models / "ft-y.partial").mkdir()
    Finetuner(store, models)
    assert [v["name"] for v in store.model_versions("user:ann")] == ["ft-x"]
    assert sorted(p.name for p in models.iterdir()) == ["ft-x"]


def version(wb, owner: str, name: str, files_from: str | None = None) -> Path:
    """Register a model version `name` of `owner` as a finished fine-tune would (its folder a copy of `files_from`)."""
    import shutil

    folder = wb.finetuner.models_dir / name
    if files_from:
        shutil.copytree(files_from, folder)
    else:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
    wb.store.add_model_version({"name": name, "owner": owner, "checkpoint": f"{name}@0", "parent": "p", "rows": 12,
                                "held_back": 3, "report": json.dumps({"before": {}, "after": {}})})
    return folder


def test_a_version_is_deleted_by_its_owner_only_and_never_while_in_use(wb, tiny_checkpoint, monkeypatch):
    from app.finetuning import Job

    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    used, old, bobs = (version(wb, "user:ann", "ft-used", tiny_checkpoint), version(wb, "user:ann", "ft-old", tiny_checkpoint),
                       version(wb, "user:bob", "ft-bobs"))
    ann, _ = panel.choose.__wrapped__(panel, "ft-used", ann)
    stale_tab = {**ann, "model": "ft-old"}  # another tab of ann's still on the old version, loaded in memory
    assert wb.engine_for(stale_tab) is not wb.engine

    for name, refusal in (("ft-bobs", "not one of yours"), ("ft-used", "Your predictions use ft-used: choose another model"),
                          ("../ft-old", "not one of yours"), ("", "Pick one of your versions"), (["ft-old"], "Pick one")):
        with pytest.raises(BadInput, match=re.escape(refusal)):
            panel.delete.__wrapped__(panel, name, ann)
    monkeypatch.setattr(wb.finetuner, "running", lambda: Job("user:ann", "ft-new", "p", 12))
    with pytest.raises(BadInput, match="Your fine-tune is running"):
        panel.delete.__wrapped__(panel, "ft-old", ann)
    assert used.is_dir() and old.is_dir() and bobs.is_dir() and len(wb.store.model_versions("user:ann")) == 2
    monkeypatch.undo()

    status, model, deletable = panel.delete.__wrapped__(panel, "ft-old", ann)
    assert status.startswith("Deleted ft-old") and not old.exists() and used.is_dir() and bobs.is_dir()
    assert [v["name"] for v in wb.store.model_versions("user:ann")] == ["ft-used"]
    assert [value for _, value in model.constructor_args["choices"]] == ["", "ft-used"]
    assert [value for _, value in deletable.constructor_args["choices"]] == ["ft-used"]
    assert wb.engine_for(stale_tab) is wb.engine  # the copy in memory went with it: that tab predicts with the server's
    with pytest.raises(BadInput, match=re.escape("not one of yours (or is deleted already)")):
        panel.delete.__wrapped__(panel, "ft-old", ann)  # a retry changes nothing


def test_at_the_version_cap_a_fine_tune_waits_for_a_deletion(wb, toy_instances, monkeypatch):
    from app.improve_panel import MAX_VERSIONS

    started = []
    monkeypatch.setattr(wb.finetuner, "start", lambda owner, parent, rows, descriptions, baseline, **status: started.append(owner))
    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    label(wb, "user:ann", toy_instances)
    for n in range(MAX_VERSIONS):
        version(wb, "user:ann", f"ft-{n}")
    with pytest.raises(BadInput, match=f"You keep {MAX_VERSIONS} model versions"):
        panel.improve.__wrapped__(panel, ann)
    panel.delete.__wrapped__(panel, "ft-3", ann)
    status, _ = panel.improve.__wrapped__(panel, ann)
    assert status.startswith("Started") and started == ["user:ann"]


def test_a_fine_tune_waits_while_the_disk_is_nearly_full(wb, toy_instances, monkeypatch):
    import shutil
    from collections import namedtuple

    import app.improve_panel
    from app.improve_panel import MIN_FREE_DISK

    started = []
    monkeypatch.setattr(wb.finetuner, "start", lambda owner, parent, rows, descriptions, baseline, **status: started.append(owner))
    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
    asked = []

    def disk_usage(path):
        asked.append(Path(path))
        return usage(10 * MIN_FREE_DISK, 9 * MIN_FREE_DISK, MIN_FREE_DISK // 4)

    monkeypatch.setattr(app.improve_panel.shutil, "disk_usage", disk_usage)
    panel, ann = ImprovePanel(wb), wb.open_session("user:ann")
    label(wb, "user:ann", toy_instances)
    with pytest.raises(BadInput, match=r"The server's disk has 0\.5 GB free and a fine-tune needs 2 GB"):
        panel.improve.__wrapped__(panel, ann)
    # asked where the models will go: their folder, or (before the first fine-tune makes it) the nearest one above
    assert started == [] and asked[0].exists() and wb.finetuner.models_dir.is_relative_to(asked[0])
    monkeypatch.setattr(app.improve_panel.shutil, "disk_usage", real)
    assert panel.improve.__wrapped__(panel, ann)[0].startswith("Started") and started == ["user:ann"]


def test_recover_sweeps_the_files_of_a_version_whose_record_was_deleted(wb):
    kept, orphan = version(wb, "user:ann", "ft-kept"), version(wb, "user:ann", "ft-orphan")
    assert wb.store.delete_model_version("user:ann", "ft-orphan") == "deleted"  # then a crash, before its files went
    Finetuner(wb.store, wb.finetuner.models_dir)
    assert kept.is_dir() and not orphan.exists()


@pytest.mark.parametrize("after, chance, says", [
    (60.0, 0.95, "did better on your held-back sentences (+10.0 fused macro F1 on 12 held-back sentences, better in 95% of"),
    (52.0, 0.6, "did better on your held-back sentences, by too little to be sure (+2.0 fused macro F1 on 12 held-back"),
    (48.0, 0.3, "did not do better on your held-back sentences, by too little to be sure (-2.0 fused macro F1 on 12 "
                "held-back sentences, better in 30% of resamples of them; table below). That check is rough"),
    (40.0, 0.05, "did not do better on your held-back sentences (-10.0 fused macro F1 on 12 held-back sentences, better "
                 "in 5% of resamples of them; table below). That check is rough"),
])
def test_the_done_line_says_how_firmly_the_held_back_sentences_back_the_verdict(after, chance, says):
    from app.improve_panel import done_message
    from emma.finetune import FinetuneReport

    report = FinetuneReport("p", "o", ["a", "b"], 40, 10, 0, {"emma_fused": 50.0}, {"emma_fused": after},
                            held_back_sentences=12, chance_better=chance).to_json()
    message = done_message("v2", report)
    assert says in message
    assert "under 'Model for my predictions'" in message and message.startswith("Done: version v2 is ready")
    assert done_message("v2", {}) == "Done: version v2 is ready. Choose it under 'Model for my predictions' to use it."


def test_the_table_names_the_model_before_when_the_fine_tune_started_from_another():
    from app.improve_panel import report_frame
    from emma.finetune import FinetuneReport

    def note(**baseline):
        report = FinetuneReport("emma-mpnet@1", "o", ["a", "b"], 40, 10, 0, {"emma_fused": 50.0}, {"emma_fused": 55.0},
                                scoring_rows=30, held_back_sentences=8, **baseline).to_json()
        frame = report_frame(report)
        assert frame.loc[frame["rule"] == "fused (the shipped rule)", "change"].item() == 5.0
        return frame["rule"].iloc[-1]

    assert note().startswith("held back: 10 labelled pairs in 8 sentences, scored by a model trained on the other 30")
    assert "before:" not in note() and "before:" not in note(baseline="emma-mpnet@1")
    assert note(baseline="emma-minilm@2").endswith("; before: the model you were using (emma-minilm@2), after: a fine-tune of emma-mpnet@1")


def test_over_the_cap_a_fine_tune_reads_the_newest_labels_and_says_so(wb, toy_instances, monkeypatch):
    import app.improve_panel

    monkeypatch.setattr(app.improve_panel, "MAX_ROWS", len(toy_instances) - 3)
    label(wb, "user:ann", toy_instances)
    rows, _, note = ImprovePanel(wb).training_rows(wb.open_session("user:ann"))
    assert {r.pair for r in rows} <= {i.pair for i in toy_instances[3:]}
    assert f"The 3 oldest are left out: a fine-tune reads at most the newest {len(toy_instances) - 3}." in note
