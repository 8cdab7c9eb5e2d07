"""Training's pure parts, no training run: batches of distinct relations, config validation, the recipes."""

from __future__ import annotations

import pytest

from emma.model import EmmaConfig
from emma.batches import relation_batches
from emma.train import TrainConfig


# ----------------------------------------------------------------------------- batches


def test_relation_batches_have_distinct_relations_and_are_deterministic():
    relations = [f"r{i % 7}" for i in range(60)] + ["big"] * 20
    batches = relation_batches(relations, batch_size=4, seed=3)
    assert batches == relation_batches(relations, batch_size=4, seed=3)
    assert batches != relation_batches(relations, batch_size=4, seed=4)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))  # no instance twice
    for b in batches:
        assert 2 <= len(b) <= 4
        assert len({relations[i] for i in b}) == len(b)  # distinct relations in a batch
    # only what cannot form a batch of two distinct relations is left out
    left = [relations[i] for i in set(range(len(relations))) - set(seen)]
    assert len(set(left)) <= 1
    assert len(seen) >= 70


def test_relation_batches_min_relations():
    relations = ["a", "a", "a", "b", "c"]
    batches = relation_batches(relations, batch_size=3, seed=0, min_relations=3)
    assert all(len(b) == 3 for b in batches) and len(batches) == 1


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=1), "batch_size=1"),
        (dict(epochs=0), "epochs must be at least 1"),
        (dict(precision="half"), "precision='half'"),
        (dict(blend=0.0), "blend=0.0"),
        (dict(blend=1.5), "blend=1.5"),
        (dict(blend=0.5, adapter_rank=4), "does not apply to adapters"),
    ],
)
def test_train_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_the_shipped_recipe_is_the_default_and_the_paper_a_named_option():
    shipped = TrainConfig()
    assert shipped.schedule == "two_stage" and shipped.classifier_init == "recall"
    assert shipped.model == EmmaConfig()  # shared head over h[CLS]⊕h[E_h]⊕h[E_t], fused decision
    paper = TrainConfig.paper(lr=2e-5)
    assert paper.schedule == "joint" and paper.classifier_init == "base" and paper.lr == 2e-5
    assert paper.model == EmmaConfig.paper()
    with pytest.raises(ValueError, match="schedule='staged'; choose one of"):
        TrainConfig(schedule="staged")
