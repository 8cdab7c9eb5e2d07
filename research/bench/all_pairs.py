"""The PromptMatch-style baseline: the classifier's cross-encoder over every (sentence, relation) pair.

It uses EMMA's own classifier, so the comparison with EMMA isolates the matching scheme: n
cross-encoder passes per sentence instead of one recall pass plus k. With the `shared` head (the
shipped recipe) every pair has a score of its own. The paper's `concat` head reads k pair states
side by side and has no single-pair score; for it we form one ("reference" scoring): for a sentence
with pair states c_1..c_n the reference state c̄ is their mean (the sentence's average relation);
relation r is put in each slot j in turn with c̄ in the other k-1 slots, and its score is the mean
over j of z_j minus the mean of the other logits. Every relation is scored by the same function
against the same per-sentence comparator, so the scores rank all n relations, do not depend on the
order they are listed in, and cancel the slot bias a classifier learns from candidates in recall
order. Either way the cross-encoder cost is one pass per pair (the MLP is negligible).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from emma import Extractor, Instance, autocast, collate_pairs, encode_instances


def reference_scores(mlp: Callable, states: torch.Tensor, k: int) -> torch.Tensor:
    """Score each pair state against the mean state, symmetrised over the classifier's k slots.

    Args:
        mlp: the concat classifier head, (P, k·d) → (P, k).
        states: (n, d) pair states of one sentence paired with each of n relations.

    Returns:
        (n,) scores; higher is better. For k = 2: ½[(z₀ − z₁)(c_r, c̄) + (z₁ − z₀)(c̄, c_r)].
    """
    n, d = states.shape
    if k == 1:
        return mlp(states).float()[:, 0]
    ref = states.mean(0)  # (d,)
    total = torch.zeros(n, device=states.device)
    for j in range(k):
        slots = ref.expand(n, k, d).clone()  # (n, k, d)
        slots[:, j] = states
        z = mlp(slots.reshape(n, k * d)).float()  # (n, k)
        total += z[:, j] - (z.sum(1) - z[:, j]) / (k - 1)
    return total / k


class AllPairs:
    """The classifier's cross-encoder over every (sentence, relation) pair; the best-scoring relation wins.

    Uses the extractor's relation set (its stored description token ids: the catalogue is tokenized
    once, as EMMA's is) and precision. Pairs are length-sorted and batched `pair_batch` at a time.

    Args:
        extractor: an `Extractor` with a classifier and relations set.
        pair_batch: pairs per cross-encoder call (default: as many as EMMA's classifier calls take,
            `rerank_batch_size` (else `batch_size`) × k; small calls pad least and run fastest on CPU).
        max_pairs: pairs whose states are held at once (sentences are grouped to stay under it).

    Example:
        >>> AllPairs(extractor).predict(instances)   # one relation name per instance
    """

    def __init__(self, extractor: Extractor, pair_batch: int | None = None, max_pairs: int = 8192) -> None:
        if extractor.model.classifier is None:
            raise ValueError("this checkpoint has no classifier, so there is no cross-encoder to run over all pairs")
        self.ex = extractor
        self.k = extractor.config.k
        self.pair_batch = pair_batch or (extractor.rerank_batch_size or extractor.batch_size) * self.k
        self.max_pairs = max_pairs

    @torch.inference_mode()
    def pair_states(self, firsts: list[list[int]], seconds: list[list[int]]) -> torch.Tensor:
        """States (P, F), float32, of "[CLS] first [SEP] second [SEP]" pairs, as the classifier's MLP reads them."""
        ex, clf = self.ex, self.ex.model.classifier
        pairs = {key: v.to(ex.device, non_blocking=True) for key, v in collate_pairs(ex.tokenizer, firsts, seconds).items()}
        with autocast(ex.device, ex.precision):
            return clf.pair_features(**pairs).float()  # (P, F)

    def pick(self, states: torch.Tensor) -> int:
        """The winning relation's row among one sentence's (n, F) pair states."""
        mlp = self.ex.model.classifier.mlp
        if self.ex.model.classifier.config.classifier_head == "shared":  # a per-pair score: exact
            return int(mlp(states).squeeze(-1).argmax())
        return int(reference_scores(mlp, states, self.k).argmax())

    @torch.inference_mode()
    def predict(self, instances: Sequence[Instance]) -> list[str]:
        """The best relation for each instance, after scoring all n relations with the cross-encoder."""
        ex = self.ex
        n = len(ex.index)
        if n == 0:
            raise ValueError("no relations to choose from")
        sentences = encode_instances(ex.tokenizer, instances, ex.config.max_length).ids
        descriptions = [list(row.token_ids) for row in ex.index.rows]
        group = max(1, self.max_pairs // n)
        labels = []
        for g0 in range(0, len(instances), group):
            rows = range(g0, min(g0 + group, len(instances)))
            pairs = [(i, r) for i in rows for r in range(n)]
            order = sorted(range(len(pairs)), key=lambda p: len(sentences[pairs[p][0]]) + len(descriptions[pairs[p][1]]))
            states = None
            for c in range(0, len(order), self.pair_batch):
                chunk = order[c : c + self.pair_batch]
                out = self.pair_states([sentences[pairs[p][0]] for p in chunk], [descriptions[pairs[p][1]] for p in chunk])
                if states is None:
                    states = torch.empty(len(pairs), out.shape[1], device=ex.device)  # (G·n, F)
                states[torch.tensor(chunk, device=ex.device)] = out
            states = states.view(len(rows), n, -1)  # (G, n, F)
            labels.extend(ex.index.names[self.pick(states[g])] for g in range(len(rows)))
        return labels
