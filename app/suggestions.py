"""Suggestions for annotation queues: the model's pick, top candidates and doubt per item, computed ahead.

A judgement should show the next item at once, so the Annotate tab never waits for the model when it
can help it: `Suggester` keeps suggestions per (queue, item, `Context.key`) in memory and computes the
next few items' in the background, in small batches through the shared model thread
(`ModelWorker.call`), so other users' predictions go in between. The "most doubtful first" order needs
every item scored: the same thread scores a queue in chunks and stores each item's margin (best minus
second-best deciding score) for the store's ordering query.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from emma import Instance

from .storage import relation_set_id
from .workbench import Workbench

logger = logging.getLogger(__name__)

N_CANDIDATES = 5  # candidates kept per suggestion (the tab's buttons, keys 1…5)
SCORE_CHUNK = 32  # items per model call when scoring a queue for the doubt order
MAX_CACHED = 5000  # suggestions kept in memory, all users together


@dataclass
class Suggestion:
    """The model's view of one item: its pick, the top candidates with the scores that ranked them, its doubt."""

    label: str
    candidates: list[tuple[str, float]]  # best first: the reranked candidates by deciding score, then recall's order
    margin: float  # best minus second-best deciding score (recall cosine when the classifier did not run)


def suggestion(prediction) -> Suggestion:
    """A `Prediction` as a suggestion: candidates ranked by the scores the checkpoint's rule decided by (recall's
    cosines when the classifier did not run), then the rest of recall's ranking; the doubt is the gap of the top two."""
    if prediction.reranked:
        ranked = sorted(zip(prediction.candidates, prediction.deciding_scores), key=lambda c: -c[1])
    else:
        ranked = list(prediction.recall[:2])
    margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else 1.0
    seen = {name for name, _ in ranked}
    candidates = [(n, float(s)) for n, s in ranked] + [(n, float(s)) for n, s in prediction.recall if n not in seen]
    return Suggestion(prediction.label, candidates[:N_CANDIDATES], float(margin))


def set_key(checkpoint: str, relations: dict[str, str], examples) -> str:
    """What a suggestion depends on besides the item: model, relation set, the owner's examples in force."""
    blob = json.dumps([checkpoint, relation_set_id(relations), sorted([list(e.tokens), list(e.head), list(e.tail), e.relation]
                                                                        for e in examples)], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def item_instance(item: dict) -> Instance:
    return Instance(tuple(item["tokens"]), tuple(item["head"]), tuple(item["tail"]))


@dataclass(frozen=True)
class Context:
    """What a caller's suggestions depend on: the owner, the relations in force, the owner's examples of them, the
    model (the owner's fine-tuned version, if chosen) and a key naming all of these."""

    owner: str
    relations: dict
    examples: tuple
    key: str
    engine: object


class Suggester:
    """Suggestions per (queue, item, set key): computed on demand or ahead by one background thread.

    Shared by every session (like the model): entries are keyed by content, never by user, and the
    queue and item ids come from handlers that checked the caller may open the queue.
    """

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb
        self._cache: OrderedDict[tuple, Suggestion] = OrderedDict()
        self._lock = threading.Lock()
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._pending: set[tuple] = set()
        self._seq = 0
        self._thread: threading.Thread | None = None  # started by the first job
        _SUGGESTERS.add(self)

    def cached(self, queue_id: int, position: int, key: str) -> Suggestion | None:
        with self._lock:
            return self._cache.get((queue_id, position, key))

    def get(self, queue_id: int, item: dict, ctx: Context) -> Suggestion:
        """The suggestion for one item, computed now (on the model's thread) when not ready yet."""
        found = self.cached(queue_id, item["position"], ctx.key)
        return found or self._compute(queue_id, [item], ctx)[0]

    def many(self, queue_id: int, items: list[dict], ctx: Context, progress=None) -> list[Suggestion]:
        """Suggestions for many items, computing the missing ones now in chunks of `SCORE_CHUNK` (each chunk is one
        job of the model's thread, so other users' predictions go in between); `progress(done, total)` per chunk."""
        missing = [i for i in items if self.cached(queue_id, i["position"], ctx.key) is None]
        for start in range(0, len(missing), SCORE_CHUNK):
            self._compute(queue_id, missing[start : start + SCORE_CHUNK], ctx)
            if progress:
                progress(min(start + SCORE_CHUNK, len(missing)), len(missing))
        out = [self.cached(queue_id, i["position"], ctx.key) for i in items]
        # An entry evicted meanwhile (a very large cache churn) is computed again, one by one.
        return [s or self.get(queue_id, i, ctx) for s, i in zip(out, items)]

    def ahead(self, queue_id: int, positions: list[int], ctx: Context) -> None:
        """Compute these items' suggestions in the background (the next items of a user's queue)."""
        missing = [p for p in positions if self.cached(queue_id, p, ctx.key) is None]
        if missing:
            self._put(0, ("items", queue_id, tuple(missing), ctx))

    def score_queue(self, queue_id: int, ctx: Context) -> None:
        """Score every item of the queue under `key` (for the doubt order), after any pending look-ahead."""
        self._put(1, ("queue", queue_id, (), ctx))

    def _put(self, priority: int, job: tuple) -> None:
        tag = (*job[:3], job[3].key)
        with self._lock:
            if tag in self._pending:
                return
            self._pending.add(tag)
            self._seq += 1
            self._jobs.put((priority, self._seq, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emma-annotate-ahead", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no look-ahead or scoring is queued or running; False on timeout.

        Called at interpreter exit (see `_wait_all`): a daemon thread stopped in the middle of a model call
        aborts the process ("terminate called without an active exception") instead of exiting cleanly.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            _, _, job = self._jobs.get()
            kind, queue_id, positions, ctx = job
            todo = []
            try:
                if kind == "items":
                    items = [self.wb.store.queue_item(queue_id, p) for p in positions]
                    self._compute(queue_id, [i for i in items if i], ctx)
                else:
                    todo = self.wb.store.unscored_positions(queue_id, ctx.key, SCORE_CHUNK)
                    if todo:
                        items = [self.wb.store.queue_item(queue_id, p) for p in todo]
                        self._compute(queue_id, [i for i in items if i], ctx)
            except Exception:  # a background failure must not stop the thread; the shown item is computed on demand
                logger.exception("suggesting ahead failed")
                todo = []
            finally:
                with self._lock:
                    if kind == "queue" and todo:  # the next chunk (still pending), after any look-ahead that arrived meanwhile
                        self._seq += 1
                        self._jobs.put((1, self._seq, job))
                    else:
                        self._pending.discard((*job[:3], ctx.key))

    def _compute(self, queue_id: int, items: list[dict], ctx: Context) -> list[Suggestion]:
        engine, key = ctx.engine, ctx.key

        def run():
            index = engine.index(ctx.relations, ctx.examples)
            return engine.extractor.with_index(index).predict_batch([item_instance(i) for i in items], top_k=None)

        out = [suggestion(p) for p in self.wb.model.call(run)]
        with self._lock:
            for item, s in zip(items, out):
                self._cache[(queue_id, item["position"], key)] = s
                self._cache.move_to_end((queue_id, item["position"], key))
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        self.wb.store.save_scores(queue_id, key, [(i["position"], s.margin, s.label) for i, s in zip(items, out)])
        return out


_SUGGESTERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _wait_all() -> None:
    """At exit, let background suggestions finish (bounded) so no daemon thread dies inside the model."""
    for suggester in list(_SUGGESTERS):
        suggester.wait_idle(timeout=30.0)
