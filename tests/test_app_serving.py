"""The model's thread: concurrent predictions are batched, each gets its own relation set's answer,
and the batched answers equal one-by-one predictions."""

from __future__ import annotations

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
