"""One thread runs every model call; predictions from concurrent users are batched.

EMMA's cost per sentence is one encoder pass, a matrix product with the description vectors and k
classifier pairs (paper section 3); `Extractor.predict_batch` does that for many sentences at once,
about twice as cheap per sentence as one by one on 2 CPU cores. The workbench's handlers therefore
do not call the model themselves: they hand a job to `ModelWorker` and wait. The worker takes whatever
jobs are waiting when it is free; while several users are active it waits a little for the rest of a
batch (`ModelWorker._gather`; never for a lone user). It groups the predictions by relation set and
labelled examples (sessions with the same set and examples share one index) and runs each group as
one batch. Users on a fine-tuned model version pass its `Engine`; it runs on the same thread, since
the cores can serve one model call at a time anyway. Encoding new descriptions goes through the same thread, so the model is never used by
two threads at once and the model's queue needs no lock of its own.

That thread is also the only long-lived thread that runs torch at all. torch's CPU kernels run on an
OpenMP thread team per calling thread, and libgomp, once its teams hold more threads than the machine
has cores, stops spin-waiting between parallel regions in all of them: a prediction then takes about
twice as long (2 cores, shipped checkpoint: 23 → 48 ms, whether or not the other team is busy). So a
checkpoint is loaded in a thread that ends with the load (`load_extractor`), and the catalogue's
descriptions are encoded on the model's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import NamedTuple

from emma import Extractor, Instance, Prediction, instance_from_text

from .engine import Engine

logger = logging.getLogger(__name__)

MAX_BATCH = 16  # sentences per model call
# Users who each wait for their answer before sending the next sentence come back some tens of
# milliseconds apart (through the server's HTTP and event handling). Taken as they came, 8 such
# users formed batches of 1 + 7 (a lone sentence costs more than twice its share of a batch), so
# while several users are active the worker waits up to GATHER_MS for as many jobs as there were
# users active in the last RECENT_S: a batch's own, plus those whose jobs came in while it ran
# (counting the batch alone, 8 users settled into batches of 6 and 2). Measured in README "Load"
# (python -m research loadtest). A call (an extraction's chunk of pairs) and an extractor that runs one text at a time
# are never waited for (`_batch_pays`).
GATHER_MS = 50.0
RECENT_S = 1.0


class PredictJob(NamedTuple):
    """One prediction waiting for the model's thread (`ModelWorker.predict`'s arguments)."""

    text: str
    head: tuple[int, int]
    tail: tuple[int, int]
    relations: dict[str, str]
    examples: tuple[Instance, ...]
    engine: Engine


def load_extractor(checkpoint, **options) -> Extractor:
    """`Extractor.load(checkpoint, **options)` in a thread that ends with it (see the module's note on
    OpenMP teams: loading on the main thread or a handler's would halve the model thread's speed)."""
    return in_passing_thread(Extractor.load, checkpoint, **options)


def in_passing_thread(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` in a thread that ends with it, so that no OpenMP team stays behind on the caller's
    thread; its exception, if any, is re-raised in the caller's."""
    result: Future = Future()

    def run() -> None:
        try:
            result.set_result(fn(*args, **kwargs))
        except BaseException as e:  # re-raised in the caller's thread
            result.set_exception(e)

    thread = threading.Thread(target=run, name="emma-passing", daemon=True)
    thread.start()
    thread.join()
    return result.result()


class ModelWorker:
    """The model's own thread: `predict` (batched across callers) and `call` (anything else on the model).

    Args:
        engine: the shared model and description cache.
        max_batch: most jobs taken at once.
        gather_ms: longest wait for the rest of a batch while several users are active (0: never wait).

    Example:
        >>> worker = ModelWorker(Engine(Extractor.load()))
        >>> worker.predict("Apple was founded by Steve Jobs.", (0, 5), (21, 31), {"founded by": "founded by: founder of it"}).label
        'founded by'
    """

    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH, gather_ms: float = GATHER_MS) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.gather_ms = gather_ms
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.batch_sizes: list[int] = []  # recent batch sizes, for tests and the load script
        threading.Thread(target=self._run, name="emma-model", daemon=True).start()

    def predict(self, text: str, head: tuple[int, int], tail: tuple[int, int], relations: dict[str, str],
                examples: tuple[Instance, ...] = (), engine: Engine | None = None) -> Prediction:
        """Like `Engine.predict`, run in a batch with whatever other predictions are waiting.

        `engine`: another model to run it on (a user's fine-tuned version); default the worker's own.
        """
        return self._submit(("predict", PredictJob(text, tuple(head), tuple(tail), relations, tuple(examples), engine or self.engine)))

    def call(self, fn, *args):
        """Run `fn(*args)` on the model's thread (e.g. `engine.encode` for new descriptions) and return its result."""
        return self._submit(("call", (fn, args)))

    def _submit(self, job):
        future: Future = Future()
        self._jobs.put((job, future))
        return future.result()

    def _run(self) -> None:
        recent: deque[tuple[float, int]] = deque()  # (when, users active) after each batch of the last RECENT_S
        while True:
            first = self._jobs.get()
            while recent and recent[0][0] < time.monotonic() - RECENT_S:
                recent.popleft()
            expected = max((active for _, active in recent), default=1) if _batch_pays(first) else 1
            jobs = self._gather(first, expected)
            self._serve(jobs)
            # The users active now: this batch's, and those whose jobs came in while it ran.
            recent.append((time.monotonic(), len(jobs) + self._jobs.qsize()))

    def _gather(self, first, expected: int) -> list:
        """`first`, every job already waiting and, while fewer than `expected` (the users active of late),
        those that arrive within `gather_ms`. With `expected` 1 (a lone user) it never waits."""
        jobs = [first]
        deadline = time.monotonic() + self.gather_ms / 1e3
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._jobs.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if len(jobs) >= expected or remaining <= 0:
                break
            try:
                jobs.append(self._jobs.get(timeout=remaining))
            except queue.Empty:
                break
        return jobs

    def _serve(self, jobs) -> None:
        groups: dict[tuple, list] = {}
        for (kind, payload), future in jobs:
            if kind == "call":
                _settle(future, lambda: payload[0](*payload[1]))
            else:
                # One index per model, relation set and examples: another owner's examples never enter this batch's index.
                groups.setdefault((id(payload.engine), tuple(payload.relations.items()), payload.examples), []).append((payload, future))
        for group in groups.values():
            self._predict_group(group)

    def _predict_group(self, group) -> None:
        """One batch over one relation set; an error fails only the jobs of this group."""
        self.batch_sizes = (self.batch_sizes + [len(group)])[-1000:]
        try:
            t0 = time.perf_counter()
            first = group[0][0]
            engine = first.engine
            index = engine.index(first.relations, first.examples)
            index_ms = (time.perf_counter() - t0) * 1e3
            instances = [instance_from_text(job.text, job.head, job.tail) for job, _ in group]
            predictions = engine.extractor.with_index(index).predict_batch(instances, top_k=None)
        except Exception as e:  # handed to each waiting handler, which turns user errors into messages
            for _, future in group:
                future.set_exception(e)
            return
        for (_, future), prediction in zip(group, predictions):
            prediction.timings_ms = {"descriptions": index_ms, **prediction.timings_ms}
            future.set_result(prediction)


def _batch_pays(job) -> bool:
    """Whether waiting for company can pay for `job`: only for a prediction on an extractor that batches. Not for a
    `call` (it runs alone: an extraction's chunk, an encoding), nor for an extractor that runs one text at a time
    (int8, `Extractor.__init__`), where a batch shares no arithmetic; there the wait would only delay it."""
    (kind, payload), _ = job
    return kind == "predict" and payload.engine.extractor.batch_size != 1


def _settle(future: Future, fn) -> None:
    try:
        future.set_result(fn())
    except Exception as e:
        future.set_exception(e)
