"""Training batches: instances of distinct relations, tokenized once (paper section 3.4).

InfoNCE treats every other description in a batch as a negative, so a batch never holds two
instances of one relation (the one exception, gathered across processes, is masked in the loss).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

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


def description_forms(descriptions: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    """Each relation's texts: one, or several forms of its description (name only, name + description, ...)."""
    out = {}
    for relation, texts in descriptions.items():
        forms = [texts] if isinstance(texts, str) else list(dict.fromkeys(texts))
        if not forms or not all(isinstance(t, str) and t.strip() for t in forms):
            raise ValueError(f"relation {relation!r}: every description form must be non-empty text")
        out[relation] = forms
    return out


@dataclass
class TrainingData:
    """Training instances tokenized once, with their relations' descriptions, cut into batches per epoch.

    A relation may have several description forms; each instance of a batch then reads one drawn at
    random (fixed by the seed, the epoch and the batch), so the model does not learn one style of
    description only.
    """

    tokenizer: object
    instances: list[Instance]
    relations: list[str]  # sorted; a relation's position is its id in `relation_ids`
    encoded: EncodedInstances
    description_ids: dict[str, list[list[int]]]  # each relation's forms, tokenized
    batch_size: int
    min_relations: int
    seed: int

    @classmethod
    def encode(cls, tokenizer, arch: EmmaConfig, instances: list[Instance], descriptions: Mapping[str, str | Sequence[str]],
               batch_size: int, seed: int) -> "TrainingData":
        """Tokenize `instances` and their relations' `descriptions` (one text or several forms each) for `arch`."""
        relations = sorted({i.relation for i in instances})
        forms = description_forms({r: descriptions[r] for r in relations})
        texts = [t for r in relations for t in forms[r]]
        ids = iter(encode_descriptions(tokenizer, texts, arch.max_description_length).ids)
        size = min(batch_size, len(relations))
        if arch.use_classifier and size < arch.k:
            raise ValueError(f"the classifier takes its k={arch.k} candidates from the batch's descriptions, "
                             f"but batches hold only {size} relations (batch_size={batch_size})")
        return cls(tokenizer, list(instances), relations, encode_instances(tokenizer, instances, arch.max_length),
                   {r: [next(ids) for _ in forms[r]] for r in relations}, size, max(2, arch.k), seed)

    def epoch(self, epoch: int, world: int = 1, rank: int = 0) -> list[list[int]]:
        """This process's batches of instance indices for `epoch` (distinct relations in each)."""
        batches = relation_batches([i.relation for i in self.instances], self.batch_size,
                                   seed=self.seed * 1000 + epoch, min_relations=self.min_relations)
        if world > 1:
            # Every rank needs the same number of steps and equal batch sizes (the gather assumes it).
            batches = [b for b in batches if len(b) == self.batch_size]
            batches = batches[: len(batches) // world * world][rank::world]
        return batches

    def relation_ids(self) -> torch.Tensor:
        """(N,) each instance's relation id (its position in `relations`)."""
        position = {r: j for j, r in enumerate(self.relations)}
        return torch.tensor([position[i.relation] for i in self.instances])

    def batch(self, idx: list[int], device: torch.device, epoch: int = 0) -> dict:
        """Tensors for `JointObjective`, plus the token ids it pairs for the classifier."""
        ids = [self.encoded.ids[i] for i in idx]
        rels = [self.instances[i].relation for i in idx]
        position = {r: j for j, r in enumerate(self.relations)}
        inst = collate_instances(self.tokenizer, ids)
        rng = random.Random(self.seed * 1_000_003 + epoch * 7_919 + idx[0])  # the same draw when a run resumes
        descriptions = [rng.choice(self.description_ids[r]) for r in rels]
        desc = collate_single(self.tokenizer, descriptions)
        return {
            **{key: v.to(device) for key, v in inst.items()},
            "desc_input_ids": desc["input_ids"].to(device),
            "desc_attention_mask": desc["attention_mask"].to(device),
            "desc_content_mask": desc["content_mask"].to(device),
            "relation_ids": torch.tensor([position[r] for r in rels], device=device),
            "instance_index": torch.tensor(idx, device=device),  # rows of an `ExampleBank`
            "instance_ids": ids,
            "description_ids": descriptions,
        }
