"""EMMA's training objectives (paper section 3.4): InfoNCE for recall, cross-entropy for reranking.

The recall loss contrasts each instance with the descriptions of the batch. A description of the
instance's own relation that is not its target (possible when batches gather across processes, or
when a batch holds two instances of one relation) is a false negative: it is masked out, never
counted as a negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import cosine_scores


def same_relation_mask(instance_relations: torch.Tensor, description_relations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,), (N,), (B,) integer ids → (B, N) True where description j shares instance i's relation but is not its target."""
    same = instance_relations[:, None] == description_relations[None, :]  # (B, N)
    same[torch.arange(len(targets), device=targets.device), targets] = False
    return same


class InfoNCELoss(nn.Module):
    """Contrastive loss over cosine similarities divided by a temperature.

    loss = −mean_i log( exp(cos(x_i, d_{t_i})/τ) / Σ_j∉mask_i exp(cos(x_i, d_j)/τ) )

    Args:
        temperature: τ (paper: 0.02).

    Inputs:
        instances: (B, D) instance vectors.
        descriptions: (N, D) description vectors.
        targets: (B,) index of each instance's description in `descriptions`.
        false_negatives: optional (B, N) bool, True for pairs to leave out of the denominator.

    Returns:
        scalar loss.
    """

    def __init__(self, temperature: float = 0.02) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        instances: torch.Tensor,
        descriptions: torch.Tensor,
        targets: torch.Tensor,
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits = cosine_scores(instances, descriptions) / self.temperature  # (B, N)
        if false_negatives is not None:
            assert false_negatives.shape == logits.shape, "false_negatives must be (B, N)"
            assert not bool(false_negatives[torch.arange(len(targets)), targets].any()), "a target cannot be masked"
            logits = logits.masked_fill(false_negatives, float("-inf"))
        return F.cross_entropy(logits, targets)


def hard_negatives(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None, k: int) -> torch.Tensor:
    """Candidates for the classifier: the target plus the k−1 highest-scoring other descriptions, in score order.

    Args:
        scores: (B, N) recall scores.
        targets: (B,) gold description index.
        excluded: (B, N) bool of descriptions that may not be negatives (same relation), or None.
        k: candidates per instance; N must exceed k − 1 after exclusion.

    Returns:
        (B, k) description indices sorted by recall score, so the classifier sees the same order
        at training and at inference (where the gold one may well not be first).
    """
    assert scores.shape[1] >= k, f"need at least k={k} descriptions in the batch, got {scores.shape[1]}"
    masked = scores.detach().clone()
    rows = torch.arange(len(targets), device=scores.device)
    if excluded is not None:
        masked = masked.masked_fill(excluded, float("-inf"))
    masked[rows, targets] = float("-inf")
    negatives = masked.topk(k - 1, dim=1).indices  # (B, k-1)
    # Fewer eligible descriptions than k−1 would make topk pick excluded ones (or the target) silently.
    assert bool(torch.isfinite(masked.gather(1, negatives)).all()), f"fewer than k−1={k - 1} eligible negatives in a row"
    candidates = torch.cat([targets[:, None], negatives], dim=1)  # (B, k)
    order = scores.detach().gather(1, candidates).argsort(dim=1, descending=True, stable=True)
    return candidates.gather(1, order)
