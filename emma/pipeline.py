"""Inference: the public `Extractor` API (what the workbench, evaluation and benchmarks call).

EMMA's efficiency argument (paper section 3.1): description vectors are computed once and kept in
a `RelationIndex`, so recall is one encoder pass for the sentence plus a matrix product, and a new
relation costs one encoder pass for its description. Only the top-k relations go through the
cross-encoder.

The fast path (measured by `emma.bench`): inference mode; length-sorted batches padded to their
longest member; classifier calls regrouped by pair length; the description matrix normalised once,
kept on the model's device, grown one row per added relation; exact top-k by one matrix product
(at 10,000 relations about 3 ms per sentence on one CPU core, so no approximate index); bf16 autocast
on CPUs with native bf16, fp16 on CUDA.

Example:
    >>> ex = Extractor.load()                      # the shipped checkpoint, CUDA if present
    >>> ex.set_relations({"founded by": "founded by: founder or co-founder of this organization"})
    >>> text = "Apple was founded by Steve Jobs."
    >>> p = ex.predict(text, head=(0, 5), tail=(21, 31))
    >>> p.label, p.recall[:3], p.candidates, p.probabilities
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import cpu_has_bf16, load_checkpoint
from .choices import PRECISIONS, check_choice
from .data import Instance, Span
from .features import collate_pairs, collate_single, encode_descriptions, encode_instances, instance_from_text
from .model import Emma

logger = logging.getLogger(__name__)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto": fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 or AMX), else fp32."""
    check_choice("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for inference; weights stay float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Prediction:
    """What `Extractor.predict` returns for one instance.

    Attributes:
        label: the predicted relation: by the checkpoint's decision rule among the candidates (the
            classifier's pick, or the fused pick), or recall's top-1 if not reranked.
        score: the probability of `label` under that rule, or its recall cosine when not reranked.
        recall: [(relation, cosine)] sorted by cosine, all relations (or the top `top_k`).
        candidates: the k relations sent to the classifier, in recall order.
        probabilities: classifier probabilities aligned with `candidates` (empty if not reranked).
        fused: classifier probability × recall softmax(cos/τ) over the candidates, renormalised
            (empty if not reranked).
        decision: which rule picked `label`: "classifier", "fused" (EmmaConfig.decision) or "recall".
        reranked: whether the classifier ran.
        recall_label: recall's top-1 relation (differs from `label` when the classifier corrected it).
        attention: {relation: {"tokens": [...], "head": [...], "tail": [...]}} for each candidate:
            the two virtual-entity pooling weights over the description's word pieces.
        note: why the classifier did not run, if it did not.
        timings_ms: {"encode": …, "recall": …, "rerank": …} wall time per stage (batched calls share them).
    """

    label: str
    score: float
    recall: list[tuple[str, float]]
    candidates: list[str]
    probabilities: list[float]
    reranked: bool
    recall_label: str
    fused: list[float] = field(default_factory=list)
    decision: str = "recall"
    attention: dict[str, dict] = field(default_factory=dict)
    note: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class RelationIndex:
    """Precomputed description vectors, one row per relation, normalised once and on the model's device.

    `vectors` is a view of a buffer that grows geometrically, so adding a relation writes one row
    (amortised O(d)) instead of copying the whole (N, 3d) matrix; rows already written never change,
    so a view taken earlier stays valid. `position` is a dict look-up, not a scan of `names`.
    """

    names: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)  # for the classifier's pairs
    tokens: list[list[str]] = field(default_factory=list)  # word pieces, for display
    head_weights: list[list[float]] = field(default_factory=list)
    tail_weights: list[list[float]] = field(default_factory=list)
    vectors: torch.Tensor | None = None  # (N, 3d) unit rows
    _buffer: torch.Tensor | None = field(default=None, repr=False, compare=False)
    _positions: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.names)

    def position(self, name: str) -> int:
        """Row of relation `name`; KeyError if absent."""
        i = self._positions.get(name)
        if i is None or i >= len(self.names) or self.names[i] != name:
            self._positions = {n: j for j, n in enumerate(self.names)}  # the lists changed: re-map once
            i = self._positions.get(name)
            if i is None:
                raise KeyError(name)
        return i

    def append(self, names, texts, token_ids, tokens, head_weights, tail_weights, vectors: torch.Tensor) -> None:
        """Add relations; `vectors` (M, 3d) must already be unit rows on the index's device."""
        m, n = len(names), len(self.names)
        assert vectors.shape[0] == m, f"{vectors.shape[0]} vectors for {m} relations"
        assert self.vectors is None or self.vectors.shape[0] == n, "vectors and names disagree"
        buf = self._buffer
        is_view = buf is not None and self.vectors is not None and self.vectors.data_ptr() == buf.data_ptr()
        if (
            buf is None or buf.shape[0] < n + m or (n and not is_view)
            or buf.device != vectors.device or buf.dtype != vectors.dtype or buf.shape[1] != vectors.shape[1]
        ):
            buf = torch.empty(max(n + m, 2 * n, 16), vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
            if n:
                buf[:n] = self.vectors
            self._buffer = buf
        buf[n : n + m] = vectors
        self.vectors = buf[: n + m]  # (N, 3d)
        for lst, new in zip(
            (self.names, self.texts, self.token_ids, self.tokens, self.head_weights, self.tail_weights),
            (names, texts, token_ids, tokens, head_weights, tail_weights),
        ):
            lst.extend(new)
        for j, name in enumerate(names, start=n):
            self._positions[name] = j

    def remove(self, i: int) -> None:
        """Drop row `i` (copies the matrix once; removal is rare)."""
        for lst in (self.names, self.texts, self.token_ids, self.tokens, self.head_weights, self.tail_weights):
            del lst[i]
        self._positions = {}
        if len(self.names):
            self._buffer = torch.cat([self.vectors[:i], self.vectors[i + 1 :]])
            self.vectors = self._buffer[:]
        else:
            self._buffer = self.vectors = None

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, 3d) instance vectors → (B, N) cosine similarities (float32, exact)."""
        return F.normalize(queries.float(), dim=-1) @ self.vectors.T  # (B, N)


class Extractor:
    """Zero-shot relation extraction with a trained EMMA checkpoint.

    Args:
        model: a trained `Emma` (eval mode, on its device).
        tokenizer: its tokenizer, markers added.
        precision: "auto" (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), "fp32", "bf16", "fp16".
        batch_size: sentences per encoder batch in `predict_batch`.

    Attributes:
        rerank_batch_size: sentences per classifier call (their k pairs each), regrouped by pair length;
            None: the whole batch. Small on CPU, where splitting a batch costs nothing but saves padding
            (descriptions differ in length much more than length-sorted sentences do).
    """

    def __init__(self, model: Emma, tokenizer, precision: str = "auto", batch_size: int = 64) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.rerank_batch_size: int | None = None if self.device.type == "cuda" else 8
        self.index = RelationIndex()
        self.checkpoint: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | None = None, precision: str = "auto") -> "Extractor":
        """Load a checkpoint folder (None: the shipped one) onto `device` (None: CUDA if present, else CPU)."""
        model, tokenizer = load_checkpoint(path, device)
        ex = cls(model, tokenizer, precision=precision)
        ex.checkpoint = str(path) if path is not None else "default"
        return ex

    def with_index(self, index: RelationIndex) -> "Extractor":
        """A view of this extractor that predicts over `index`, sharing the model and tokenizer.

        For serving many users with different relation sets from one loaded model: neither this
        extractor nor `index` is modified by predicting through the view.
        """
        view = copy.copy(self)
        view.index = index
        return view

    # ------------------------------------------------------------------ relations

    @property
    def relations(self) -> dict[str, str]:
        """{name: description} currently in the index, in insertion order."""
        return dict(zip(self.index.names, self.index.texts))

    def set_relations(self, relations: dict[str, str], progress: bool = False) -> None:
        """Replace the relation set; each description is encoded once."""
        _check_relations(relations)
        self.index = RelationIndex()
        self._append(list(relations), list(relations.values()), progress)

    def add_relation(self, name: str, description: str, replace: bool = False) -> None:
        """Add one relation (one encoder pass, no retraining). `replace=True` updates an existing one."""
        name, description = (name or "").strip(), (description or "").strip()
        _check_relations({name: description})
        if name in self.index.names and not replace:
            raise ValueError(f"a relation named {name!r} already exists")
        for other, text in self.relations.items():
            if text == description and other != name:
                raise ValueError(f"relation {other!r} already has this description")
        if name in self.index.names:  # only once the new one is known to be acceptable
            self.remove_relation(name)
        self._append([name], [description], progress=False)

    def remove_relation(self, name: str) -> None:
        """Remove a relation by name; ValueError if there is none."""
        try:
            i = self.index.position(name)
        except KeyError:
            raise ValueError(f"no relation named {name!r}") from None
        self.index.remove(i)

    @torch.inference_mode()
    def encode_descriptions(self, texts: Sequence[str], progress: bool = False):
        """Encode description texts → (unit vectors (N, 3d), token ids, word pieces, head weights, tail weights).

        Length-sorted batches (little padding); one device-to-host copy of the pooling weights per batch.
        """
        enc = encode_descriptions(self.tokenizer, texts, self.config.max_description_length)
        order = sorted(range(len(texts)), key=lambda i: len(enc.ids[i]))  # length-sorted: less padding
        matrix = torch.empty(len(texts), self.model.recall.dim, device=self.device)  # (N, 3d)
        head_w, tail_w = [None] * len(texts), [None] * len(texts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="encoding descriptions", disable=not progress):
            inputs = collate_single(self.tokenizer, [enc.ids[i] for i in batch])
            inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
            with autocast(self.device, self.precision):
                out = self.model.recall.encode_descriptions(**inputs)
            matrix[torch.tensor(batch, device=self.device)] = F.normalize(out.vectors.float(), dim=-1)
            heads, tails = out.head_weights.float().cpu(), out.tail_weights.float().cpu()  # (B, L)
            for row, i in enumerate(batch):
                n = len(enc.ids[i])
                head_w[i] = heads[row, 1 : n + 1].tolist()  # drop [CLS]; content only
                tail_w[i] = tails[row, 1 : n + 1].tolist()
        return matrix, enc.ids, enc.tokens, head_w, tail_w

    def _append(self, names: list[str], texts: list[str], progress: bool) -> None:
        if not names:
            return
        vectors, ids, tokens, head_w, tail_w = self.encode_descriptions(texts, progress)
        self.index.append(names, texts, ids, tokens, head_w, tail_w, vectors)

    # ------------------------------------------------------------------ prediction

    def predict(self, text: str, head: Span, tail: Span, top_k: int | None = None, rerank: bool = True) -> Prediction:
        """Predict the relation between two character spans (end exclusive) of `text`.

        The workbench's call: one encoder pass for the sentence, a product with the stored
        description matrix, and k classifier pairs built from stored description ids (nothing
        about the relation catalogue is encoded or tokenized again).

        Args:
            top_k: how many recall scores to keep in `Prediction.recall` (None: all relations).
            rerank: False for recall only.
        """
        return self.predict_batch([instance_from_text(text, head, tail)], top_k=top_k, rerank=rerank)[0]

    def predict_tokens(
        self, tokens: Sequence[str], head: Span, tail: Span, top_k: int | None = None, rerank: bool = True
    ) -> Prediction:
        """Predict for a tokenized sentence with token spans (end exclusive)."""
        return self.predict_batch([Instance(tuple(tokens), head, tail)], top_k=top_k, rerank=rerank)[0]

    @torch.inference_mode()
    def predict_batch(
        self, instances: Iterable[Instance], top_k: int | None = None, rerank: bool = True, progress: bool = False
    ) -> list[Prediction]:
        """Predict many instances in length-sorted batches; results in input order.

        Args:
            rerank: False for recall only (the "onlyRecall" setting).
            top_k: recall scores kept per prediction (None: all).
        """
        instances = list(instances)
        if len(self.index) == 0:
            raise ValueError("no relations to choose from; add some with set_relations or add_relation")
        enc = encode_instances(self.tokenizer, instances, self.config.max_length)
        order = sorted(range(len(instances)), key=lambda i: len(enc.ids[i]))
        results: list[Prediction | None] = [None] * len(instances)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="predicting", disable=not progress):
            for i, p in zip(batch, self._predict_ids(enc, batch, top_k, rerank)):
                results[i] = p
        return results

    def _predict_ids(self, enc, batch: list[int], top_k: int | None, rerank: bool) -> list[Prediction]:
        t0 = time.perf_counter()
        inputs = collate_single(self.tokenizer, [enc.ids[i] for i in batch])
        head = torch.tensor([enc.head_marker[i] + 1 for i in batch], device=self.device)  # +1 for [CLS]
        tail = torch.tensor([enc.tail_marker[i] + 1 for i in batch], device=self.device)
        ids = inputs["input_ids"].to(self.device, non_blocking=True)  # (B, L)
        mask = inputs["attention_mask"].to(self.device, non_blocking=True)  # (B, L)
        with autocast(self.device, self.precision):
            vecs = self.model.recall.encode_instances(ids, mask, head, tail)  # (B, 3d)
        t1 = time.perf_counter()
        scores = self.index.scores(vecs)  # (B, N): one matrix product against the precomputed rows
        n = len(self.index)
        keep = n if top_k is None else min(top_k, n)
        k = self.config.k
        width = max(keep, min(k, n))
        if width == n:  # every score is kept: a sort is cheaper than topk(n)
            top_scores, top_idx = scores.sort(dim=1, descending=True)  # (B, N)
        else:
            top_scores, top_idx = scores.topk(width, dim=1)  # (B, width), exact
        top_scores, top_idx = top_scores.cpu().tolist(), top_idx.cpu().tolist()
        t2 = time.perf_counter()

        can_rerank = rerank and self.model.classifier is not None and n >= k
        probs: list[list[float]] = [[] for _ in batch]
        if can_rerank:
            # Descriptions were tokenized once, when added; only the k pairs per sentence are collated.
            # Sentences are regrouped by their longest pair so that each classifier call pads little.
            token_ids = self.index.token_ids
            longest = [max(len(token_ids[j]) for j in row[:k]) + len(enc.ids[i]) for i, row in zip(batch, top_idx)]
            rows = sorted(range(len(batch)), key=longest.__getitem__)
            step = self.rerank_batch_size or len(batch)
            for c in range(0, len(rows), step):
                sub = rows[c : c + step]
                firsts = [enc.ids[batch[r]] for r in sub for _ in range(k)]
                seconds = [token_ids[j] for r in sub for j in top_idx[r][:k]]
                pairs = {key: v.to(self.device, non_blocking=True) for key, v in collate_pairs(self.tokenizer, firsts, seconds).items()}
                with autocast(self.device, self.precision):
                    logits = self.model.classifier(**pairs)  # (b, k)
                for r, p in zip(sub, torch.softmax(logits.float(), dim=-1).cpu().tolist()):
                    probs[r] = p
        t3 = time.perf_counter()
        timings = {"encode": (t1 - t0) * 1e3, "recall": (t2 - t1) * 1e3, "rerank": (t3 - t2) * 1e3}

        if not can_rerank:
            note = (
                "recall only (rerank off)" if not rerank
                else "this checkpoint has no classifier" if self.model.classifier is None
                else f"only {n} relation(s): the classifier needs k={k}, so recall decides"
            )
        out = []
        names = self.index.names
        for row, (s_row, i_row) in enumerate(zip(top_scores, top_idx)):
            cand_idx = i_row[: min(k, n)]
            candidates = [names[j] for j in cand_idx]
            recall = list(zip([names[j] for j in i_row[:keep]], s_row[:keep]))
            fused: list[float] = []
            if can_rerank:
                fused = fuse(probs[row], s_row[:k], self.config.temperature)
                rule = fused if self.config.decision == "fused" else probs[row]
                best = max(range(k), key=rule.__getitem__)
                label, score = candidates[best], rule[best]
            else:
                label, score = candidates[0], s_row[0]
            out.append(
                Prediction(
                    label=label,
                    score=float(score),
                    recall=recall,
                    candidates=candidates,
                    probabilities=[float(p) for p in probs[row]],
                    reranked=can_rerank,
                    recall_label=candidates[0],
                    fused=fused,
                    decision=self.config.decision if can_rerank else "recall",
                    attention={names[j]: self._attention_at(j) for j in cand_idx},
                    note="" if can_rerank else note,
                    timings_ms=dict(timings),
                )
            )
        return out

    def attention(self, relation: str) -> dict:
        """The two virtual-entity pooling weights over a relation's description word pieces."""
        return self._attention_at(self.index.position(relation))

    def _attention_at(self, i: int) -> dict:
        idx = self.index
        return {"tokens": idx.tokens[i], "head": idx.head_weights[i], "tail": idx.tail_weights[i]}


def fuse(probabilities: Sequence[float], cosines: Sequence[float], temperature: float) -> list[float]:
    """Both stages' beliefs over the k candidates: classifier probability × softmax(cos / τ), renormalised.

    The paper lets the classifier decide alone. A classifier trained briefly is often less sure than
    recall, and the product lets recall's confidence count too (EmmaConfig.decision = "fused").
    """
    log_recall = torch.log_softmax(torch.tensor([float(c) for c in cosines]) / temperature, dim=0)
    log_cls = torch.log(torch.tensor([float(p) for p in probabilities]).clamp_min(1e-12))
    return torch.softmax(log_cls + log_recall, dim=0).tolist()


def _check_relations(relations: dict[str, str]) -> None:
    for name, text in relations.items():
        if not name or not str(name).strip():
            raise ValueError("a relation name is empty")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the description of relation {name!r} is empty")
