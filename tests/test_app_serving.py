"""The model's thread: concurrent predictions are batched, each gets its own relation set's answer,
and the batched answers equal one-by-one predictions."""

from __future__ import annotations

import queue
import threading

import pytest

from app.engine import Engine
from app.serving import ModelWorker

SENTENCES = [
    ("Apple was founded by Steve Jobs in 1976 .", (0, 5), (21, 31)),
    ("Marie Curie was born in Warsaw in 1867 .", (0, 11), (24, 30)),
    ("Paris is the capital and largest city of France .", (0, 5), (41, 47)),
    ("Messi played for Barcelona for many years .", (0, 5), (17, 26)),
]


def predict_concurrently(worker: ModelWorker, jobs: list) -> list:
    """Each job's prediction (or the exception it raised), all submitted at once so the worker batches them."""
    got: list = [None] * len(jobs)
    gate = threading.Barrier(len(jobs))

    def run(i):
        gate.wait()
        try:
            got[i] = worker.predict(*jobs[i])
        except Exception as e:  # noqa: BLE001 - the test inspects what each caller received
            got[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return got


def test_concurrent_predictions_are_batched_and_match_single_ones(tiny_extractor, toy_descriptions):
    engine = Engine(tiny_extractor)
    worker = ModelWorker(engine)
    two = dict(list(toy_descriptions.items())[:2])
    jobs = [(s, h, t, rels) for s, h, t in SENTENCES for rels in (toy_descriptions, two)] * 2
    expected = [engine.predict(*job) for job in jobs]
    got = predict_concurrently(worker, jobs)
    assert max(worker.batch_sizes) > 1, "concurrent callers share a model call"
    for job, e, g in zip(jobs, expected, got):
        assert {n for n, _ in g.recall} == set(job[3]), "each caller sees only its own relation set"
        assert g.label == e.label and g.candidates == e.candidates
        assert [s for _, s in g.recall] == pytest.approx([s for _, s in e.recall], abs=1e-4)
        assert g.probabilities == pytest.approx(e.probabilities, abs=1e-4)


def test_a_failing_job_fails_alone(tiny_extractor, toy_descriptions):
    engine = Engine(tiny_extractor)
    worker = ModelWorker(engine)
    jobs = [(*SENTENCES[i % 3], toy_descriptions if i % 2 else {}) for i in range(12)]  # half cannot be served
    got = predict_concurrently(worker, jobs)
    assert max(worker.batch_sizes) > 1, "the failing jobs were taken together with the others"
    for job, g in zip(jobs, got):
        if job[3]:
            assert g.label == engine.predict(*job).label
        else:
            assert isinstance(g, ValueError) and "no relations" in str(g)
    assert worker.call(lambda a, b: a + b, 2, 3) == 5


def test_predictions_with_different_examples_are_never_batched_together(tiny_extractor, toy_descriptions, toy_instances):
    """Same relation set, different owners' examples: each caller's recall uses its own examples only."""
    engine = Engine(tiny_extractor)
    worker = ModelWorker(engine)
    mine = (toy_instances[0],)  # an example of "founded by"
    jobs = [(*SENTENCES[0], toy_descriptions, examples) for examples in (mine, (), mine, ())] * 3
    expected = [engine.predict(*job) for job in jobs]
    got = predict_concurrently(worker, jobs)
    assert max(worker.batch_sizes) > 1
    for job, e, g in zip(jobs, expected, got):
        with_examples = bool(job[4])
        assert (g.recall_parts["founded by"][1] is not None) == with_examples
        assert bool(g.examples) == (with_examples and "founded by" in g.candidates)
        assert [s for _, s in g.recall] == pytest.approx([s for _, s in e.recall], abs=1e-4)


def test_the_load_script_measures_the_models_thread_alone(tiny_checkpoint):
    """`python -m research loadtest --client model`: threads calling the model's thread in-process, no server."""
    from research.loadtest import measure

    rows = measure(tiny_checkpoint, [1, 3], requests=2, threads=1, client="model")
    assert [(r["clients"], r["requests"], r["errors"]) for r in rows] == [(1, 2, 0), (3, 6, 0)]
    assert all(r["throughput_per_s"] > 0 and r["p50_ms"] <= r["p95_ms"] for r in rows)


class Arrivals:
    """Stands in for the worker's job queue: `waiting` jobs are there at once, `later` ones only arrive
    while the worker waits (`get` with a timeout), and every wait is recorded."""

    def __init__(self, waiting=(), later=()) -> None:
        self.waiting, self.later, self.waits = list(waiting), list(later), []

    def get_nowait(self):
        if not self.waiting:
            raise queue.Empty
        return self.waiting.pop(0)

    def get(self, timeout=None):
        self.waits.append(timeout)
        if not self.later:
            raise queue.Empty
        return self.later.pop(0)


def test_a_lone_user_is_never_kept_waiting_for_a_batch(tiny_extractor):
    worker = ModelWorker(Engine(tiny_extractor), gather_ms=500)
    worker._jobs = Arrivals(later=["b"])
    assert worker._gather("a", expected=1) == ["a"]
    assert worker._jobs.waits == [], "with no other recent user the job runs at once"
    worker._jobs = Arrivals(waiting=["b"], later=["c"])
    assert worker._gather("a", expected=1) == ["a", "b"], "jobs already waiting always join"
    assert worker._jobs.waits == []


def test_with_several_active_users_the_worker_waits_briefly_for_the_rest_of_a_batch(tiny_extractor):
    worker = ModelWorker(Engine(tiny_extractor), max_batch=4, gather_ms=500)
    worker._jobs = Arrivals(waiting=["b"], later=["c", "d", "e"])
    assert worker._gather("a", expected=3) == ["a", "b", "c"], "it stops waiting once the expected number came"
    assert len(worker._jobs.waits) == 1 and 0 < worker._jobs.waits[0] <= 0.5
    worker._jobs = Arrivals(later=["b"])
    assert worker._gather("a", expected=3) == ["a", "b"], "nobody else comes: it runs what it has"
    assert len(worker._jobs.waits) == 2 and all(0 < w <= 0.5 for w in worker._jobs.waits)
    worker._jobs = Arrivals(waiting=list("bcdefg"))
    assert worker._gather("a", expected=16) == list("abcd"), "never more than max_batch"


def test_the_worker_waits_for_company_only_where_a_batch_shares_arithmetic(tiny_checkpoint, tiny_extractor):
    from emma import Extractor

    from app.serving import PredictJob, _batch_pays

    one_at_a_time = Engine(Extractor.load(tiny_checkpoint, device="cpu", precision="int8"))
    assert one_at_a_time.extractor.batch_size == 1
    job = lambda engine: (("predict", PredictJob("text", (0, 1), (2, 3), {}, (), engine)), None)  # noqa: E731
    assert _batch_pays(job(Engine(tiny_extractor))) and not _batch_pays(job(one_at_a_time))
    # A call runs alone (an extraction's chunk of pairs): predictions that come meanwhile batch after it anyway.
    assert not _batch_pays((("call", (print, ())), None))


def test_users_who_wait_for_each_answer_end_up_in_one_batch(tiny_extractor, toy_descriptions):
    """Four users each send a sentence as soon as their previous answer came: once one batch held several
    of them, the worker waits for the others, so they stop splitting into a lone job and the rest."""
    worker = ModelWorker(Engine(tiny_extractor), gather_ms=1000)
    users, rounds = 4, 10
    gate = threading.Barrier(users)

    def user(i: int) -> None:
        gate.wait()
        for r in range(rounds):
            worker.predict(*SENTENCES[(i + r) % len(SENTENCES)], toy_descriptions)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    sizes = worker.batch_sizes
    assert sum(sizes) == users * rounds
    # The first batches may split the users (1 + 3, 2 + 2), and those who started a round behind then finish a round
    # behind, alone; every batch in between holds all of them.
    assert sizes[3:-2] and sizes[3:-2] == [users] * len(sizes[3:-2]), sizes


def test_torch_runs_only_on_the_model_thread_or_a_passing_loader(tiny_checkpoint, tmp_path, monkeypatch):
    """A checkpoint loads in a thread that ends with the load, and the catalogue's descriptions and every
    prediction run on the model's thread: never on the thread that starts the workbench (nor a handler's),
    whose OpenMP team would stay behind and halve the model thread's speed (see `app.serving`)."""
    from emma import Extractor

    from app.main import create_workbench

    ran: list[tuple[str, str]] = []

    def record(name, fn):
        def wrapper(*args, **kwargs):
            ran.append((name, threading.current_thread().name))
            return fn(*args, **kwargs)
        return wrapper

    load = Extractor.load.__func__
    monkeypatch.setattr(Extractor, "load", classmethod(record("load", load)))
    monkeypatch.setattr(Engine, "encode", record("encode", Engine.encode))
    monkeypatch.setattr(Extractor, "predict_batch", record("predict", Extractor.predict_batch))
    wb = create_workbench(tiny_checkpoint, tmp_path / "wb.db")
    session = wb.new_session()
    text, head, tail = SENTENCES[0]
    assert wb.model.predict(text, head, tail, wb.relations(session)).label in wb.relations(session)
    assert {name for name, _ in ran} == {"load", "encode", "predict"}
    assert {thread for _, thread in ran} == {"emma-passing", "emma-model"}, ran
    assert all(thread == "emma-passing" for name, thread in ran if name == "load")
