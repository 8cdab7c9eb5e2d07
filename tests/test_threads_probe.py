"""research.threads_probe: both ways of serving give every sentence its answer, the same answer."""

from __future__ import annotations

import pytest

from emma.pipeline import Extractor
from app.serving import in_passing_thread
from research.threads_probe import serve, summary


def test_two_single_thread_workers_answer_every_sentence_as_one_worker_does(tiny_checkpoint, toy_descriptions, toy_instances):
    ex = in_passing_thread(lambda: Extractor.load(tiny_checkpoint, device="cpu", precision="int8"))
    in_passing_thread(ex.set_relations, toy_descriptions)
    one = serve(ex, toy_instances, workers=1, threads_each=2)
    two = serve(ex, toy_instances, workers=2, threads_each=1)
    assert None not in two.labels and len(two.labels) == len(toy_instances)
    assert two.labels == one.labels == [p.label for p in in_passing_thread(lambda: [ex.predict_batch([i])[0] for i in toy_instances])]
    assert one.sentences_per_s > 0 and two.p50_ms > 0
    assert "2 × 1" in summary([one, two]) and "same label: yes" in summary([one, two])


def test_a_worker_that_fails_before_the_clock_starts_stops_the_probe_instead_of_hanging(tiny_checkpoint, toy_instances):
    ex = in_passing_thread(lambda: Extractor.load(tiny_checkpoint, device="cpu", precision="int8"))  # no relations in force
    with pytest.raises(ValueError, match="no relations"):  # the worker's own error, not a hang or a broken barrier
        serve(ex, list(toy_instances), workers=2, threads_each=1)
