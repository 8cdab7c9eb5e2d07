"""research.classifier_examples_probe: the cached pair states are the classifier's, and the head fit learns from them."""

from __future__ import annotations

import pytest
import torch

import emma
from emma.features import encode_instances
from research.classifier_examples_probe import fit_head, pair_states


def test_pair_states_through_the_head_give_the_librarys_rerank_probabilities(tiny_extractor, toy_instances):
    ex = tiny_extractor
    instances = toy_instances[:5]
    ids = encode_instances(ex.tokenizer, instances, ex.config.max_length).ids
    candidates = [[i % len(ex.index), (i + 1) % len(ex.index)] for i in range(len(instances))]
    with torch.no_grad():
        states = pair_states(ex, ids, candidates)
        probs = torch.softmax(ex.model.classifier.mlp(states).squeeze(-1).reshape(-1, 2), dim=-1)
    expected = ex.rerank(ids, candidates)  # a random tiny head: near 0.5 each, apart by about 1e-4
    assert probs.flatten().tolist() == pytest.approx([p for row in expected for p in row], abs=1e-6)


def test_the_head_fit_raises_each_groups_answer_and_leaves_the_trained_head_alone(tiny_extractor):
    head = tiny_extractor.model.classifier.mlp
    before = [p.detach().clone() for p in head.parameters()]
    torch.manual_seed(0)
    states = torch.randn(9, head[0].in_features)
    groups, targets = [4, 2, 3], [0, 1, 2]  # groups of unequal size; the answer at any position

    def answer_probability(h: torch.nn.Module) -> list[float]:
        with torch.no_grad():
            logits = h(states).squeeze(-1)
        starts = [0, 4, 6]
        return [float(torch.softmax(logits[s : s + g], 0)[t]) for s, g, t in zip(starts, groups, targets)]

    assert answer_probability(fit_head(head, states, groups, targets, steps=0)) == pytest.approx(answer_probability(head))
    fitted = answer_probability(fit_head(head, states, groups, targets, steps=100, pull=0.0))
    assert all(a > b for a, b in zip(fitted, answer_probability(head)))
    assert min(fitted) > 0.9  # nine free states: fitted almost exactly
    assert all(torch.equal(p, b) for p, b in zip(head.parameters(), before))
