"""Fine-tuning from a user's labels in a child process, one at a time, with versions kept in the store.

`python -m emma finetune` does the work (`emma.finetune`): it adapts the model the user is on to
their labelled sentences and writes a new checkpoint folder atomically, with a report of macro F1
on held-back rows before and after. Here it runs as a child process at a lower CPU priority, so
the server's own thread keeps answering predictions meanwhile (slower, on 2 cores, but never
blocked), and a crash of the fine-tune cannot take the server down. One fine-tune runs at a time
on a server (two would each take the CPU the other needs); its progress is read from the child's
progress bar.

A finished fine-tune becomes a *model version* (`Store.add_model_version`): name, owner, checkpoint
id, parent, rows used, report. Only its owner can use it, since it has learnt their sentences. The
files live in `models_dir/<name>`; the job's inputs (rows, descriptions, who asked) in
`models_dir/<name>.job` until it ends. A server restarted while a child was running registers
its result at the next start (`recover`), or cleans up what it left.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import emma
from emma import Instance, checkpoint_id
from emma.data import write_jsonl
from emma.finetune import partial_folder, read_report

from .storage import Store

logger = logging.getLogger(__name__)

PROGRESS = re.compile(r"training:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
PART = re.compile(r"part (\d) of (\d): ([^)]*)\)")  # emma.finetune's log line as each of its two trainings starts
JOB_SUFFIX = ".job"
VERSION_PREFIX = "ft-"  # every version's folder name starts so


FINISHED = ("done", "failed", "cancelled")  # a job's last states; before them it is running, then perhaps cancelling


@dataclass
class Job:
    """One fine-tune: who asked, where it writes, how far it is."""

    owner: str
    name: str
    parent: str  # checkpoint id of the model it starts from
    rows: int
    started: float = field(default_factory=time.time)
    state: str = "running"  # running | cancelling | done | failed | cancelled
    step: int = 0
    total: int = 0
    phase: str = "starting"  # what the child is doing, for the status line
    part: str = ""  # which of the fine-tune's trainings runs (a first one to score held-back rows, then the new version)
    message: str = ""  # why it failed
    report: dict | None = None
    # The start's words, repeated on every progress line, which replaces the start's line within a second:
    # what trains (" from emma-mpnet on 12 labelled sentences of 4 relations", read after "fine-tuning") and
    # what was left out of it (sentences, each beginning with a space).
    summary: str = ""
    note: str = ""


class Finetuner:
    """Starts fine-tunes (at most one at a time) and keeps each owner's latest job.

    Args:
        store: where finished fine-tunes are recorded as model versions.
        models_dir: folder of the fine-tuned checkpoints (created on first use).
    """

    def __init__(self, store: Store, models_dir: str | Path) -> None:
        self.store = store
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}  # owner -> latest job
        self._running: Job | None = None
        self._process: subprocess.Popen | None = None
        self.recover()

    def running(self) -> Job | None:
        with self._lock:
            return self._running

    def job(self, owner: str) -> Job | None:
        """`owner`'s latest fine-tune in this server's lifetime, if any."""
        with self._lock:
            return self._jobs.get(owner)

    def start(self, owner: str, parent: str | Path, rows: list[Instance], descriptions: dict[str, str],
              baseline: str | Path | None = None, summary: str = "", note: str = "") -> Job:
        """Start fine-tuning checkpoint `parent` on `rows` for `owner`, its held-back rows scored before by `baseline`
        (default: `parent`; `emma.finetune.finetune`); raises RuntimeError while another runs. `summary` and
        `note` are kept on the job for its status line."""
        name = f"{VERSION_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        with self._lock:
            if self._running is not None:
                raise RuntimeError("busy")
            job = Job(owner, name, checkpoint_id(parent), len(rows), summary=summary, note=note)
            self._running = self._jobs[owner] = job
            self._process = None  # until the child starts: a cancel meanwhile is acted on once it has
        try:
            # Private like the database: the models are trained on the users' sentences.
            self.models_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
            self.models_dir.chmod(0o700)
            inputs = self.models_dir / (name + JOB_SUFFIX)
            inputs.mkdir(mode=0o700)
            write_jsonl(rows, inputs / "rows.jsonl")
            (inputs / "descriptions.json").write_text(json.dumps(descriptions, ensure_ascii=False))
            (inputs / "job.json").write_text(json.dumps({"owner": owner, "name": name, "parent": job.parent, "rows": len(rows)}))
            command = [sys.executable, "-m", "emma", "finetune", "--checkpoint", str(parent), "--data", str(inputs / "rows.jsonl"),
                       "--descriptions", str(inputs / "descriptions.json"), "--output", str(self.models_dir / name)]
            if baseline is not None:
                command += ["--baseline", str(baseline)]
            # The child imports the same `emma` as this process, wherever the server was started from.
            path = os.pathsep.join(p for p in (str(Path(emma.__file__).parent.parent), os.environ.get("PYTHONPATH")) if p)
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       preexec_fn=_lower_priority, env={**os.environ, "PYTHONPATH": path, "TQDM_MININTERVAL": "0.5"})
        except Exception as e:
            self._finish(job, "failed", f"could not start the fine-tune ({e})")
            raise
        with self._lock:
            self._process = process
            cancelled = job.state == "cancelling"
        if cancelled:
            process.terminate()
        threading.Thread(target=self._watch, args=(job, process), name=f"finetune-{name}", daemon=True).start()
        return job

    def cancel(self, owner: str) -> bool:
        """Stop `owner`'s running fine-tune (nothing is kept; their model is unchanged); False when none runs."""
        with self._lock:
            job, process = self._running, self._process
            if job is None or job.owner != owner:
                return False
            job.state = "cancelling"
        if process is not None and process.poll() is None:
            process.terminate()
        return True

    def close(self) -> None:
        """Stop a running fine-tune (it fails, leaving nothing); for shutdown and tests."""
        with self._lock:
            process = self._process if self._running is not None else None
        if process is not None and process.poll() is None:
            process.terminate()

    def delete_files(self, name: str) -> None:
        """Remove version `name`'s folder (after its record: a folder left by a crash here is swept by `recover`)."""
        folder = self.models_dir / name
        if folder.parent != self.models_dir or not name.startswith(VERSION_PREFIX):
            raise ValueError(f"{name!r} is not a model version's name")
        shutil.rmtree(folder, ignore_errors=True)

    def _watch(self, job: Job, process: subprocess.Popen) -> None:
        """`_follow` the child; whatever goes wrong meanwhile (a locked or full database) fails the job, keeps
        nothing and frees the one fine-tune slot, instead of holding it until a restart."""
        try:
            self._follow(job, process)
        except Exception as e:
            logger.exception("fine-tune %s: watching it failed", job.name)
            if job.state not in FINISHED:
                running = process.poll() is None
                if running:  # stopped first: nothing may write into the folders removed below, or hold the CPU
                    process.kill()
                    process.wait()
                what = "stopped" if running else "finished but could not be saved"
                self._finish(job, "failed", f"the fine-tune {what} ({e})")

    def _follow(self, job: Job, process: subprocess.Popen) -> None:
        """Follow the child's progress bar; when it exits, record the version or the reason it failed."""
        last = ""
        buffer = ""
        while True:
            chunk = process.stderr.read(256)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = re.split(r"[\r\n]", buffer)
            for line in lines:
                if not line.strip():
                    continue
                found = PROGRESS.search(line)
                if found:
                    job.phase, job.step, job.total = "training", int(found.group(1)), int(found.group(2))
                else:
                    last = line.strip()
                    if "fine-tuning" in line:
                        part = PART.search(line)
                        job.part = f"part {part.group(1)} of {part.group(2)} ({part.group(3)})" if part else ""
                        job.phase = "training, then scoring the held-back rows" if part and part.group(1) == "1" else "training"
                        job.step, job.total = 0, 0
        stdout = process.stdout.read()
        code = process.wait()
        if job.state == "cancelling":  # even if the child finished first: the user asked for nothing to be kept
            self._finish(job, "cancelled")
            return
        if code == 0:
            try:
                report = json.loads(stdout)
            except ValueError as e:
                self._finish(job, "failed", f"the fine-tune finished but its report could not be read ({e})")
                return
            self._register(job, report)
            return
        message = last[len("Error: "):] if last.startswith("Error: ") else f"the fine-tune process stopped (exit code {code}): {last}"
        self._finish(job, "failed", message)

    def _register(self, job: Job, report: dict) -> None:
        folder = self.models_dir / job.name
        self.store.add_model_version({"name": job.name, "owner": job.owner, "checkpoint": checkpoint_id(folder),
                                      "parent": job.parent, "rows": report["trained_rows"], "held_back": report["held_back_rows"],
                                      "report": json.dumps(report)})
        job.report = report
        self._finish(job, "done")

    def _finish(self, job: Job, state: str, message: str = "") -> None:
        """End `job` in `state`; only a job that ends done keeps what its child wrote (its inputs never stay)."""
        shutil.rmtree(self.models_dir / (job.name + JOB_SUFFIX), ignore_errors=True)
        if state != "done":
            shutil.rmtree(partial_folder(self.models_dir / job.name), ignore_errors=True)
            shutil.rmtree(self.models_dir / job.name, ignore_errors=True)
        with self._lock:  # one step, so a job seen finished never still holds the one fine-tune slot
            job.state, job.message = state, message
            if self._running is job:
                self._running = None
        if state == "failed":
            logger.warning("fine-tune %s failed: %s", job.name, message)

    def recover(self) -> None:
        """Register fine-tunes that finished while no server watched them; remove what unfinished ones left."""
        if not self.models_dir.is_dir():
            return
        for inputs in self.models_dir.glob("*" + JOB_SUFFIX):
            try:
                meta = json.loads((inputs / "job.json").read_text())
                report = read_report(self.models_dir / meta["name"])
            except (OSError, ValueError, KeyError):
                report = None
            if report is None:
                shutil.rmtree(partial_folder(self.models_dir / inputs.name[: -len(JOB_SUFFIX)]), ignore_errors=True)
                shutil.rmtree(inputs, ignore_errors=True)
                continue
            job = Job(meta["owner"], meta["name"], meta["parent"], meta["rows"])
            self._register(job, report)
        # A version whose record was deleted but whose files a crash kept: nothing can load it, so it only takes room.
        for folder in self.models_dir.glob(VERSION_PREFIX + "*"):
            # A version's name has no dot; a job's inputs and a partial output end in a suffix.
            if folder.is_dir() and not folder.suffix and self.store.model_version(folder.name) is None:
                shutil.rmtree(folder, ignore_errors=True)


def _lower_priority() -> None:  # pragma: no cover - runs in the child
    os.nice(10)
