"""Training batches: instances of distinct relations, tokenized once (paper section 3.4).

InfoNCE treats every other description in a batch as a negative, so a batch never holds two
instances of one relation (the one exception, gathered across processes, is masked in the loss).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from .data import Instance
from .features import EncodedInstances, collate_instances, collate_single, encode_descriptions, encode_instances
from .model import EmmaConfig


def relation_batches(relations: Sequence[str], batch_size: int, seed: int, min_relations: int = 2) -> list[list[int]]:
    """Batches of instance indices, each batch of distinct relations, covering (nearly) every instance.

    Relations are drawn weighted by how many instances they have left, so big relations do not
    pile up in the last batches; batches with fewer than `min_relations` relations are dropped.
    Deterministic for a given seed.
    """
    rng = random.Random(seed)
    queues: dict[str, list[int]] = {}
    for i, r in enumerate(relations):
        queues.setdefault(r, []).append(i)
    for q in queues.values():
        rng.shuffle(q)
    batches = []
    while True:
        available = [r for r in sorted(queues) if queues[r]]
        if len(available) < min_relations:
            break
        # Efraimidis–Spirakis: weighted sampling without replacement via keys u^(1/w).
        keyed = sorted(available, key=lambda r: rng.random() ** (1.0 / len(queues[r])), reverse=True)
        batches.append([queues[r].pop() for r in keyed[:batch_size]])
    return batches


@dataclass
class TrainingData:
    """Training instances tokenized once, with their relations' descriptions, cut into batches per epoch."""

    tokenizer: object
    instances: list[Instance]
    relations: list[str]  # sorted; a relation's position is its id in `relation_ids`
    encoded: EncodedInstances
    description_ids: dict[str, list[int]]
    batch_size: int
    min_relations: int
    seed: int

    @classmethod
    def encode(cls, tokenizer, arch: EmmaConfig, instances: list[Instance], descriptions: dict[str, str],
               batch_size: int, seed: int) -> "TrainingData":
        """Tokenize `instances` and their relations' `descriptions` for a model of architecture `arch`."""
        relations = sorted({i.relation for i in instances})
        desc = encode_descriptions(tokenizer, [descriptions[r] for r in relations], arch.max_description_length)
        size = min(batch_size, len(relations))
        if arch.use_classifier and size < arch.k:
            raise ValueError(f"the classifier takes its k={arch.k} candidates from the batch's descriptions, "
                             f"but batches hold only {size} relations (batch_size={batch_size})")
        return cls(tokenizer, list(instances), relations, encode_instances(tokenizer, instances, arch.max_length),
                   dict(zip(relations, desc.ids)), size, max(2, arch.k), seed)

    def epoch(self, epoch: int, world: int = 1, rank: int = 0) -> list[list[int]]:
        """This process's batches of instance indices for `epoch` (distinct relations in each)."""
        batches = relation_batches([i.relation for i in self.instances], self.batch_size,
                                   seed=self.seed * 1000 + epoch, min_relations=self.min_relations)
        if world > 1:
            # Every rank needs the same number of steps and equal batch sizes (the gather assumes it).
            batches = [b for b in batches if len(b) == self.batch_size]
            batches = batches[: len(batches) // world * world][rank::world]
        return batches

    def batch(self, idx: list[int], device: torch.device) -> dict:
        """Tensors for `JointObjective`, plus the token ids it pairs for the classifier."""
        ids = [self.encoded.ids[i] for i in idx]
        rels = [self.instances[i].relation for i in idx]
        position = {r: j for j, r in enumerate(self.relations)}
        inst = collate_instances(self.tokenizer, ids)
        desc = collate_single(self.tokenizer, [self.description_ids[r] for r in rels])
        return {
            **{key: v.to(device) for key, v in inst.items()},
            "desc_input_ids": desc["input_ids"].to(device),
            "desc_attention_mask": desc["attention_mask"].to(device),
            "desc_content_mask": desc["content_mask"].to(device),
            "relation_ids": torch.tensor([position[r] for r in rels], device=device),
            "instance_ids": ids,
            "description_ids": [self.description_ids[r] for r in rels],
        }
