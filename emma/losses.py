"""EMMA's training objectives (paper section 3.4): InfoNCE for recall, cross-entropy for reranking,
and `JointObjective`, the model plus both losses as one module (so DDP synchronises its gradients).

The recall loss contrasts each instance with the descriptions of the batch. A description of the
instance's own relation that is not its target (possible when batches gather across processes, or
when a batch holds two instances of one relation) is a false negative: it is masked out, never
counted as a negative.

A fine-tune's rows go on serving as the relations' examples, so recall then scores each relation by
its description mixed with the prototype of those rows (`emma.index`). With an `ExampleBank`, the
objective also trains on that mixed score (`prototype_weight`), each instance left out of its own
relation's prototype as a new sentence would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .features import collate_pairs
from .index import example_weight
from .model import Emma, cosine_scores


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
        extra_negatives: optional (B, M) cosines of further negatives per instance (e.g. the instance
            with head and tail swapped against its own description), added to the denominator.

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
        extra_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits = cosine_scores(instances, descriptions) / self.temperature  # (B, N)
        if false_negatives is not None:
            assert false_negatives.shape == logits.shape, "false_negatives must be (B, N)"
            assert not bool(false_negatives[torch.arange(len(targets)), targets].any()), "a target cannot be masked"
            logits = logits.masked_fill(false_negatives, float("-inf"))
        if extra_negatives is not None:
            logits = torch.cat([logits, extra_negatives.to(logits.dtype) / self.temperature], dim=1)  # (B, N + M)
        return F.cross_entropy(logits, targets)


def swapped_entities(instances: torch.Tensor) -> torch.Tensor:
    """(B, 3d) h[CLS] ⊕ h[E_h] ⊕ h[E_t] → h[CLS] ⊕ h[E_t] ⊕ h[E_h]: the pair read the other way round."""
    cls, head, tail = instances.chunk(3, dim=-1)
    return torch.cat([cls, tail, head], dim=-1)


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


@dataclass
class ExampleBank:
    """Every training instance's unit vector (taken without gradient, e.g. at the start of an epoch) and,
    per relation id, their sum and count: the examples the trained model will be used with."""

    vectors: torch.Tensor  # (N, 3d) unit vectors, instance order
    sums: torch.Tensor  # (R, 3d)
    counts: torch.Tensor  # (R,) float

    @classmethod
    def of(cls, vectors: torch.Tensor, relation_ids: torch.Tensor, relations: int) -> "ExampleBank":
        """(N, 3d) instance vectors and their (N,) relation ids in [0, relations) → the bank."""
        unit = F.normalize(vectors.detach().float(), dim=-1)
        sums = torch.zeros(relations, unit.shape[1], device=unit.device).index_add_(0, relation_ids, unit)
        counts = torch.zeros(relations, device=unit.device).index_add_(0, relation_ids, torch.ones(len(unit), device=unit.device))
        return cls(unit, sums, counts)

    def mixed_scores(self, instances: torch.Tensor, descriptions: torch.Tensor, rows: torch.Tensor,
                     relation_ids: torch.Tensor, column_relations: torch.Tensor) -> torch.Tensor:
        """Recall's score with examples, (1 − w)·cos(description) + w·cos(prototype), for (B, 3d) instances
        against (M, 3d) descriptions of relations `column_relations` (M,); `rows` (B,) are the instances'
        positions in the bank, whose own vector is left out of its relation's prototype (and count)."""
        own = relation_ids[:, None] == column_relations[None, :]  # (B, M)
        sums = self.sums[column_relations][None] - own[..., None] * self.vectors[rows][:, None]  # (B, M, 3d)
        counts = self.counts[column_relations][None] - own.float()  # (B, M)
        prototype = torch.einsum("bd,bmd->bm", F.normalize(instances.float(), dim=-1), F.normalize(sums, dim=-1))
        w = example_weight(counts)  # the index's rule, elementwise; 0 where a relation has no other row
        return (1 - w) * cosine_scores(instances, descriptions) + w * prototype


@dataclass
class StepOutput:
    loss: torch.Tensor
    recall_loss: torch.Tensor
    rerank_loss: torch.Tensor


class JointObjective(nn.Module):
    """Emma plus its losses, so one `forward` goes through DDP and gradients are synchronised."""

    def __init__(self, model: Emma, tokenizer, world_size: int = 1, rank: int = 0, train_recall: bool = True,
                 swap_negatives: bool = False, prototype_weight: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer  # pairs the classifier's candidates, chosen inside forward
        self.infonce = InfoNCELoss(model.config.temperature)
        self.world_size, self.rank = world_size, rank
        self.train_recall = train_recall
        self.swap_negatives = swap_negatives
        self.prototype_weight = prototype_weight
        self.bank: ExampleBank | None = None  # set by the training loop when prototype_weight > 0

    def forward(self, batch: dict) -> StepOutput:
        recall = self.model.recall
        with torch.set_grad_enabled(self.train_recall and torch.is_grad_enabled()):
            inst = recall.encode_instances(batch["input_ids"], batch["attention_mask"], batch["head_marker"], batch["tail_marker"])
            desc = recall.encode_descriptions(batch["desc_input_ids"], batch["desc_attention_mask"], batch["desc_content_mask"]).vectors
        rel = batch["relation_ids"]  # (B,) integer relation ids; description i is instance i's
        targets = torch.arange(len(rel), device=rel.device)
        all_desc, all_rel, all_targets = desc, rel, targets
        if self.world_size > 1:
            import torch.distributed.nn.functional as dist_nn  # differentiable all_gather

            all_desc = torch.cat(dist_nn.all_gather(desc))  # (W·B, 3d)
            all_rel = torch.cat(dist_nn.all_gather(rel))
            all_targets = targets + self.rank * len(rel)  # equal batch sizes on every rank (see train)
        false_neg = same_relation_mask(rel, all_rel, all_targets)
        # Direction: the instance read the other way round (head and tail states swapped) is a negative
        # of its own description, so matching must tell "A founded B" from "B founded A".
        extra = {"extra_negatives": cosine_scores(swapped_entities(inst), desc).diagonal()[:, None]} if self.swap_negatives else {}
        recall_loss = self.infonce(inst, all_desc, all_targets, false_neg, **extra)
        if self.prototype_weight and self.bank is not None:
            # The local batch only: the bank's rows are this process's positions.
            mixed = self.bank.mixed_scores(inst, desc, batch["instance_index"], rel, rel) / self.infonce.temperature
            mixed = mixed.masked_fill(same_relation_mask(rel, rel, targets), float("-inf"))
            recall_loss = recall_loss + self.prototype_weight * F.cross_entropy(mixed, targets)
        if not self.train_recall:
            recall_loss = recall_loss.detach()  # reported, not trained

        rerank_loss = torch.zeros((), device=inst.device)
        if self.model.classifier is not None:
            k = self.model.config.k
            scores = cosine_scores(inst, desc)  # (B, B) local batch: the pairs' token ids are here
            cand = hard_negatives(scores, targets, same_relation_mask(rel, rel, targets), k)  # (B, k) recall order
            # Shuffle the k slots. In recall order the gold one sits in slot 0 almost always once recall
            # fits the training data, and an MLP over concatenated [CLS] states then learns "pick slot 0"
            # (measured: EMMA F1 equal to recall-only on every split). Random slots force it to read.
            order = torch.rand(cand.shape, device=cand.device).argsort(dim=1)
            cand = cand.gather(1, order)
            gold = (cand == targets[:, None]).float().argmax(dim=1)  # (B,)
            firsts = [batch["instance_ids"][i] for i in range(len(rel)) for _ in range(k)]
            seconds = [batch["description_ids"][j] for j in cand.flatten().tolist()]
            pairs = {key: v.to(inst.device) for key, v in collate_pairs(self.tokenizer, firsts, seconds).items()}
            logits = self.model.classifier(**pairs)  # (B, k)
            rerank_loss = F.cross_entropy(logits.float(), gold)
        loss = rerank_loss if not self.train_recall else recall_loss + rerank_loss
        return StepOutput(loss, recall_loss.detach(), rerank_loss.detach())
