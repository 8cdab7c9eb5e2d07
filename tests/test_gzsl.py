"""The generalized zero-shot probe's classifier margin (research/gzsl.py): γ = 0 is the shipped decision,
a large γ hands a trained candidate's win to a new relation, and recall's own pick never moves."""

from emma import Prediction
from emma.pipeline import fuse
from research.gzsl import choose

TAU = 0.02


def prediction(probabilities: list[float], cosines: list[float]) -> Prediction:
    """Two candidates in recall order: a trained relation first, a new one second."""
    candidates = ["after a work by", "crossre:author"]
    return Prediction(label=candidates[0], score=0.0, recall=list(zip(candidates, cosines)), candidates=candidates,
                      probabilities=probabilities, reranked=True, recall_label=candidates[0],
                      fused=fuse(probabilities, cosines, TAU), decision="fused")


def test_no_margin_is_the_shipped_choice():
    p = prediction([0.3, 0.7], [0.58, 0.57])
    for rule in ("recall", "classifier", "fused"):
        assert choose(p, rule, {"after a work by"}, 0.0, TAU) == p.choice(rule)


def test_a_classifier_margin_moves_the_pick_off_the_trained_relation():
    p = prediction([0.9, 0.1], [0.586, 0.583])  # the classifier prefers the trained relation strongly
    trained = {"after a work by"}
    assert choose(p, "fused", trained, 0.0, TAU) == "after a work by"
    assert choose(p, "fused", trained, 3.0, TAU) == "crossre:author"
    assert choose(p, "classifier", trained, 3.0, TAU) == "crossre:author"
    assert choose(p, "recall", trained, 3.0, TAU) == "after a work by"  # γ touches the classifier only
    assert choose(p, "fused", set(), 3.0, TAU) == "after a work by"  # nothing trained: nothing lowered
