"""research.pseudo_probe: which unlabelled rows recall's pseudo-labels pick."""

from __future__ import annotations

import torch

from research.pseudo_probe import pseudo_labels


def test_pseudo_labels_take_the_surest_rows_per_relation_capped_and_skip_the_labelled():
    scores = torch.tensor([
        [0.90, 0.10, 0.0],  # 0: relation 0, sure
        [0.50, 0.49, 0.0],  # 1: relation 0, unsure
        [0.80, 0.10, 0.0],  # 2: relation 0, sure, but labelled already
        [0.10, 0.70, 0.0],  # 3: relation 1
        [0.60, 0.10, 0.0],  # 4: relation 0, fairly sure
    ])
    assert pseudo_labels(scores, 2, 0.5, skip={2}) == {0: [0, 4], 1: [3]}
    assert pseudo_labels(scores, 1, 0.5, skip=set()) == {0: [0], 1: [3]}
    assert pseudo_labels(scores, 5, 0.5, skip=set()) == {0: [0, 2, 4, 1], 1: [3]}
