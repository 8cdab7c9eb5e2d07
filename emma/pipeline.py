"""Inference: the public `Extractor` API (what the workbench, evaluation and benchmarks call).

Description vectors (and labelled examples) are encoded once into a `RelationIndex` (`emma.index`).
Prediction reads as three steps per batch of sentences: `recall` (one encoder pass, a product with
the index, exact top-k), `Extractor.rerank` (the cross-encoder over each sentence's k candidate
pairs) and `decide` (the checkpoint's decision rule over the candidates).

The fast path (measured by `python -m research bench`): inference mode; length-sorted batches padded
to their longest member; classifier calls regrouped by pair length; the description matrix
normalised once and kept on the model's device; exact top-k by one matrix product (at 10,000
relations about 3 ms per sentence on one CPU core, so no approximate index); a half precision where
the hardware runs one natively, else (CPU) int8-quantized encoders (`emma.precision`).

Example:
    >>> ex = Extractor.load()                      # the shipped checkpoint, CUDA if present
    >>> ex.set_relations({"founded by": "founded by: founder or co-founder of this organization"})
    >>> text = "Apple was founded by Steve Jobs."
    >>> p = ex.predict(text, head=(0, 5), tail=(21, 31))
    >>> p.label, p.recall[:3], p.candidates, p.probabilities
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint
from .choices import DECISIONS, check_choice
from .data import Instance, Span
from .features import collate_instances, collate_pairs, collate_single, encode_descriptions, encode_instances, instance_from_text
from .index import DescriptionRow, ExampleLevels, ExampleRow, Recalled, RelationIndex, recall
from .model import Emma
from .precision import autocast, quantize_encoders, resolve_precision

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """What `Extractor.predict` returns for one instance.

    Attributes:
        label: the predicted relation: by the checkpoint's decision rule among the candidates (the
            classifier's pick, or the fused pick), or recall's top-1 if not reranked.
        score: the score of `label` under that rule, or its recall cosine when not reranked.
        recall: [(relation, score)] sorted by recall score, all relations (or the top `top_k`): the
            description's cosine, mixed with the examples' when the relation has some (`emma.index`).
        recall_parts: {relation: (description cosine, examples' prototype cosine or None)} for `recall`.
        recall_offsets: {relation: what was added to its recall score after the mix} for those of `recall`
            that have an offset (`RelationIndex.offsets`: −seen_margin for trained relations beside new ones).
        candidates: the k relations sent to the classifier, in recall order.
        probabilities: classifier probabilities aligned with `candidates` (empty if not reranked).
        fused: classifier probability^classifier_share × recall softmax(cos/τ) over the candidates,
            renormalised (empty if not reranked; `fuse`).
        classifier_share: the power of the classifier's probability in `fused`: 1 − the candidates' mean
            example weight, so 1 for relations without labelled examples.
        decision: which rule picked `label`: "classifier", "fused" (EmmaConfig.decision) or "recall".
        reranked: whether the classifier ran.
        recall_label: recall's top-1 relation (differs from `label` when the classifier corrected it).
        attention: {relation: {"tokens": [...], "head": [...], "tail": [...]}} for each candidate:
            the two virtual-entity pooling weights over the description's word pieces.
        examples: {relation: [(instance, cosine)]}: each candidate's three labelled examples most
            similar to this sentence (none for relations without examples).
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
    classifier_share: float = 1.0
    attention: dict[str, dict] = field(default_factory=dict)
    recall_parts: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    recall_offsets: dict[str, float] = field(default_factory=dict)
    examples: dict[str, list[tuple[Instance, float]]] = field(default_factory=dict)
    note: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def deciding_scores(self) -> list[float]:
        """The scores the decision rule in force ranked the candidates by (empty when not reranked)."""
        return rule_scores(self.decision, self.probabilities, self.fused) if self.reranked else []

    def choice(self, rule: str) -> str:
        """The label `rule` picks: "recall" (top-1 cosine), "classifier" or "fused"; recall's when not reranked."""
        if rule == "recall" or not self.reranked:
            return self.recall_label
        scores = rule_scores(rule, self.probabilities, self.fused)
        return self.candidates[max(range(len(scores)), key=scores.__getitem__)]


def fuse(probabilities: Sequence[float], cosines: Sequence[float], temperature: float,
         classifier_share: float = 1.0) -> list[float]:
    """Both stages' beliefs over the k candidates: classifier probability^share × softmax(cos / τ), renormalised.

    The paper lets the classifier decide alone. A classifier trained briefly is often less sure than
    recall, and the product lets recall's confidence count too (EmmaConfig.decision = "fused").
    The classifier reads only descriptions, so once the candidates have labelled examples its vote counts
    as much as their descriptions count in recall: `classifier_share` = 1 − their mean example weight
    (`RelationIndex.description_share`; 1 without examples, the plain product). Measured by
    `python -m research.examples_probe --classifier-share` (results/FEWSHOT.md).
    """
    log_recall = torch.log_softmax(torch.tensor([float(c) for c in cosines]) / temperature, dim=0)
    log_cls = torch.log(torch.tensor([float(p) for p in probabilities]).clamp_min(1e-12))
    return torch.softmax(classifier_share * log_cls + log_recall, dim=0).tolist()


def rule_scores(rule: str, probabilities: Sequence[float], fused: Sequence[float]) -> list[float]:
    """The scores decision `rule` ranks the candidates by: the classifier's probabilities, or the fused ones."""
    check_choice("decision", rule, DECISIONS)
    return list(fused if rule == "fused" else probabilities)


def decide(probabilities: Sequence[float], cosines: Sequence[float], temperature: float, rule: str,
           classifier_share: float = 1.0) -> tuple[int, float, list[float]]:
    """Apply decision `rule` to one instance's k candidates (recall order); `classifier_share` as in `fuse`.

    Returns:
        (index of the winning candidate, its score under the rule, the fused scores).
    """
    fused = fuse(probabilities, cosines, temperature, classifier_share)
    scores = rule_scores(rule, probabilities, fused)
    best = max(range(len(scores)), key=scores.__getitem__)
    return best, scores[best], fused


class Extractor:
    """Zero-shot relation extraction with a trained EMMA checkpoint.

    Args:
        model: a trained `Emma` (eval mode, on its device).
        tokenizer: its tokenizer, markers added.
        precision: "auto" (see `emma.precision.resolve_precision`), "fp32", "bf16", "fp16", or "int8"
            (CPU: predictions run on an int8-quantized copy of `model`, which itself is not changed).
        batch_size: sentences per encoder batch in `predict_batch` (int8: always 1, see `__init__`).

    Attributes:
        rerank_batch_size: sentences per classifier call (their k pairs each), regrouped by pair length;
            None: the whole batch. Small on CPU, where splitting a batch costs nothing but saves padding
            (descriptions differ in length much more than length-sorted sentences do).
    """

    def __init__(self, model: Emma, tokenizer, precision: str = "auto", batch_size: int = 64) -> None:
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device, inference=True)
        self.model = quantize_encoders(model) if self.precision == "int8" else model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.batch_size = batch_size
        self.rerank_batch_size: int | None = None if self.device.type == "cuda" else 8
        if self.precision == "int8":
            # Dynamic int8 takes each activation's scale from the whole input tensor, so in a batch a
            # sentence's scores would depend on the sentences beside it and on their padding: of 120 CrossRE
            # news sentences scored alone and in one batch, 20 got another label (fp32: none). A sentence must
            # get the same answer whoever else is predicting (the server batches users together) and whether
            # it is evaluated from a file or typed in. So int8 encodes one text at a time and reranks one
            # sentence (its k pairs) at a time, at the cost of its batched throughput (README "Speed").
            self.batch_size, self.rerank_batch_size = 1, 1
        self.index = RelationIndex(levels=self.example_levels)
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

    def set_relations(self, relations: dict[str, str], progress: bool = False, seen: Iterable[str] = ()) -> None:
        """Replace the relation set; each description is encoded once.

        Args:
            seen: those of `relations` the model was trained on; their recall scores are lowered by the
                checkpoint's `seen_margin`, so that they do not take sentences of the new ones.
        """
        _check_relations(relations)
        self.index = RelationIndex.build(list(relations), self.encode_descriptions(list(relations.values()), progress),
                                         offsets=self.seen_offsets(seen), levels=self.example_levels)

    @property
    def example_levels(self) -> ExampleLevels | None:
        """The checkpoint's `ExampleLevels` (None if it has none): every index built for it lowers mixed scores
        toward the descriptions' level with them."""
        return ExampleLevels.from_config(self.config.example_levels)

    def seen_offsets(self, seen: Iterable[str]) -> dict[str, float]:
        """{relation: −seen_margin} for the relations in `seen` (the offsets `set_relations` applies)."""
        margin = self.config.seen_margin
        return {name: -margin for name in seen} if margin else {}

    def add_relation(self, name: str, description: str | None = None, replace: bool = False,
                     examples: Sequence[Instance] = ()) -> None:
        """Add one relation (one encoder pass, no retraining). `replace=True` updates an existing one.

        A relation may be defined by labelled `examples` alone (no description): recall then scores it
        by its examples, and the classifier reads its name where it would read a description.
        """
        name, description = (name or "").strip(), (description or "").strip()
        if not name:
            raise ValueError("a relation name is empty")
        if not description and not examples:
            raise ValueError(f"relation {name!r} needs a description or labelled examples")
        if name in self.index.names and not replace:
            raise ValueError(f"a relation named {name!r} already exists")
        for other, text in self.relations.items():
            if description and text == description and other != name:
                raise ValueError(f"relation {other!r} already has this description")
        rows = self._example_rows(name, examples) if examples else []
        self.index = self.index.with_relations([name], self.encode_descriptions([description or name]),
                                               undescribed=[] if description else [name],
                                               examples={name: rows} if rows else None)

    def remove_relation(self, name: str) -> None:
        """Remove a relation and its examples by name; ValueError if there is none."""
        if name not in self.index.names:
            raise ValueError(f"no relation named {name!r}")
        self.index = self.index.without(name)

    def add_examples(self, relation: str, instances: Sequence[Instance]) -> None:
        """Keep labelled `instances` as examples of `relation`; they count in recall from the next prediction.

        Raises:
            ValueError: the relation is not in force; an instance is labelled with another relation,
                given twice, or already an example (of this or another relation).
        """
        if relation not in self.index.names:
            raise ValueError(f"no relation named {relation!r}; add it before its examples")
        self.index = self.index.with_examples(relation, self._example_rows(relation, instances))

    def remove_examples(self, relation: str, instances: Sequence[Instance] | None = None) -> None:
        """Forget `instances` (None: all) as examples of `relation` (matched by sentence and spans, whatever their label).

        Raises:
            ValueError: the relation is not in force, or it has no description and would be left without examples.
        """
        if relation not in self.index.names:
            raise ValueError(f"no relation named {relation!r}")
        self.index = self.index.without_examples(relation, instances)

    def _example_rows(self, relation: str, instances: Sequence[Instance]) -> list[ExampleRow]:
        """Checked, encoded example rows for `relation` (its label set on each instance)."""
        known = {e.instance.pair: owner for owner, rows in self.index.examples.items() for e in rows}
        labelled = []
        for inst in instances:
            if inst.relation not in (None, relation):
                raise ValueError(f"an example labelled {inst.relation!r} cannot be an example of {relation!r}")
            if inst.pair in known:
                raise ValueError(f"the sentence {' '.join(inst.tokens)[:60]!r} is already an example of {known[inst.pair]!r}")
            known[inst.pair] = relation
            labelled.append(dataclasses.replace(inst, relation=relation))
        return self.encode_examples(labelled)

    @torch.inference_mode()
    def encode_examples(self, instances: Sequence[Instance]) -> list[ExampleRow]:
        """Labelled instances → example rows (unit instance vectors), in the order given."""
        instances = list(instances)
        enc = encode_instances(self.tokenizer, instances, self.config.max_length)
        vectors = [F.normalize(self.encode_instances(enc.ids[i : i + self.batch_size]).float(), dim=-1)
                   for i in range(0, len(instances), self.batch_size)]
        return [ExampleRow(inst, v) for inst, v in zip(instances, torch.cat(vectors))] if instances else []

    @torch.inference_mode()
    def encode_descriptions(self, texts: Sequence[str], progress: bool = False) -> list[DescriptionRow]:
        """Encode description texts into index rows, in the order given.

        Length-sorted batches (little padding); one device-to-host copy of the pooling weights per batch.
        """
        enc = encode_descriptions(self.tokenizer, texts, self.config.max_description_length)
        order = sorted(range(len(texts)), key=lambda i: len(enc.ids[i]))  # length-sorted: less padding
        rows: list[DescriptionRow | None] = [None] * len(texts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="encoding descriptions", disable=not progress):
            inputs = collate_single(self.tokenizer, [enc.ids[i] for i in batch])
            inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
            with autocast(self.device, self.precision):
                out = self.model.recall.encode_descriptions(**inputs)
            vectors = F.normalize(out.vectors.float(), dim=-1)  # (B, 3d)
            heads, tails = out.head_weights.float().cpu(), out.tail_weights.float().cpu()  # (B, L)
            for r, i in enumerate(batch):
                n = len(enc.ids[i])  # weights of the content only: [CLS] at 0 is dropped
                rows[i] = DescriptionRow(texts[i], vectors[r], tuple(enc.ids[i]), tuple(enc.tokens[i]),
                                         tuple(heads[r, 1 : n + 1].tolist()), tuple(tails[r, 1 : n + 1].tolist()))
        return rows

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
            for i, p in zip(batch, self._predict_ids([enc.ids[i] for i in batch], top_k, rerank)):
                results[i] = p
        return results

    def encode_instances(self, ids: list[list[int]]) -> torch.Tensor:
        """Marked sentences (`EncodedInstances.ids` rows) → (B, 3d) instance vectors."""
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in collate_instances(self.tokenizer, ids).items()}
        with autocast(self.device, self.precision):
            return self.model.recall.encode_instances(**inputs)  # (B, 3d)

    def rerank(self, ids: list[list[int]], candidates: list[list[int]]) -> list[list[float]]:
        """Classifier probabilities over each sentence's k candidate rows of the index (recall order).

        Descriptions were tokenized once, when added; only the pairs are collated. Sentences are
        regrouped by their longest pair so that each classifier call pads little.
        """
        rows = self.index.rows
        longest = [max(len(rows[j].token_ids) for j in cand) + len(sent) for sent, cand in zip(ids, candidates)]
        order = sorted(range(len(ids)), key=longest.__getitem__)
        step = self.rerank_batch_size or len(ids)
        probs: list[list[float]] = [[] for _ in ids]
        for c in range(0, len(order), step):
            sub = order[c : c + step]
            pairs = self.pair_inputs([ids[r] for r in sub], [candidates[r] for r in sub])
            with autocast(self.device, self.precision):
                logits = self.model.classifier(**pairs)  # (b, k)
            for r, p in zip(sub, torch.softmax(logits.float(), dim=-1).cpu().tolist()):
                probs[r] = p
        return probs

    def pair_inputs(self, ids: list[list[int]], candidates: list[list[int]]) -> dict[str, torch.Tensor]:
        """The classifier's input, on the device: each sentence (marked ids) paired with each of its candidate rows
        of the index, in order."""
        rows = self.index.rows
        firsts = [sent for sent, cand in zip(ids, candidates) for _ in cand]
        seconds = [list(rows[j].token_ids) for cand in candidates for j in cand]
        return {key: v.to(self.device, non_blocking=True) for key, v in collate_pairs(self.tokenizer, firsts, seconds).items()}

    def _predict_ids(self, ids: list[list[int]], top_k: int | None, rerank: bool) -> list[Prediction]:
        """recall → rerank → decide for one batch of marked sentences."""
        n, k = len(self.index), self.config.k
        keep = n if top_k is None else min(top_k, n)
        skip_reason = self._why_not_rerank(rerank)
        t0 = time.perf_counter()
        vectors = self.encode_instances(ids)  # (B, 3d)
        t1 = time.perf_counter()
        found = recall(self.index, vectors, max(keep, min(k, n)))
        t2 = time.perf_counter()
        probs = self.rerank(ids, [row[:k] for row in found.rows]) if not skip_reason else [[] for _ in ids]
        timings = {"encode": (t1 - t0) * 1e3, "recall": (t2 - t1) * 1e3, "rerank": (time.perf_counter() - t2) * 1e3}
        return [self._prediction(found, b, vectors[b], p, keep, skip_reason, timings) for b, p in enumerate(probs)]

    def _why_not_rerank(self, rerank: bool) -> str:
        """Why the classifier cannot run ("" when it can)."""
        if not rerank:
            return "recall only (rerank off)"
        if self.model.classifier is None:
            return "this checkpoint has no classifier"
        if len(self.index) < self.config.k:
            return f"only {len(self.index)} relation(s): the classifier needs k={self.config.k}, so recall decides"
        return ""

    def _prediction(self, found: Recalled, b: int, vector: torch.Tensor, probabilities: list[float], keep: int,
                    skip_reason: str, timings: dict) -> Prediction:
        """Instance `b`'s `Prediction` from its recall and (maybe) classifier scores."""
        scores, rows, parts = found.scores[b], found.rows[b], found.parts[b]
        names, k = self.index.names, min(self.config.k, len(self.index))
        ranked = [names[j] for j in rows[:keep]]
        candidates = [names[j] for j in rows[:k]]
        label, score, fused, share = candidates[0], scores[0], [], 1.0
        if not skip_reason:
            share = self.index.description_share(rows[:k])
            best, score, fused = decide(probabilities, scores[:k], self.config.temperature, self.config.decision, share)
            label = candidates[best]
        return Prediction(
            label=label,
            score=float(score),
            recall=list(zip(ranked, scores[:keep])),
            candidates=candidates,
            probabilities=[float(p) for p in probabilities],
            reranked=not skip_reason,
            recall_label=candidates[0],
            fused=fused,
            decision="recall" if skip_reason else self.config.decision,
            classifier_share=share,
            attention={names[j]: self.index.rows[j].attention() for j in rows[:k]},
            recall_parts=dict(zip(ranked, parts[:keep])),
            recall_offsets={n: self.index.offsets[n] for n in ranked if n in self.index.offsets},
            examples={names[j]: self.index.nearest_examples(vector, names[j]) for j in rows[:k] if names[j] in self.index.examples},
            note=skip_reason,
            timings_ms=dict(timings),
        )

    def extract(self, text: str, entities=None, threshold: float | None = None, top_k: int | None = None):
        """Every relation between entities of the same sentence of `text`, in one batched prediction.

        See `emma.extract.extract`: entities suggested by the NER unless given ((start, end) character
        spans or `EntitySpan`s); pairs scoring below `threshold` (None: the checkpoint's
        `extract_threshold`) get no relation. Returns an `emma.extract.Extraction`.
        """
        from .extract import extract

        return extract(self, text, entities=entities, threshold=threshold, top_k=top_k)

    def attention(self, relation: str) -> dict:
        """The two virtual-entity pooling weights over a relation's description word pieces."""
        return self.index.rows[self.index.position(relation)].attention()


def _check_relations(relations: dict[str, str]) -> None:
    for name, text in relations.items():
        if not name or not str(name).strip():
            raise ValueError("a relation name is empty")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the description of relation {name!r} is empty")
