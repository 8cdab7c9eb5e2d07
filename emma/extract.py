"""Extract everything in a paragraph: every ordered pair of entities in a sentence, one batched prediction.

EMMA classifies one marked pair at a time and always answers with one of the relations in force:
it has no "no relation" class. To read a paragraph, `extract` splits it into sentences
(`emma.entities.split_sentences`), takes the entities (suggested by `emma.entities.suggest_entities`,
or given), builds every ordered pair (head, tail) of distinct entities in the same sentence, and
predicts all pairs in one `Extractor.predict_batch` call (recall makes a pair cheap: one encoder
pass, a product with the description matrix, k classifier pairs). A pair whose score under the
checkpoint's decision rule (`Prediction.score`: for the shipped model the fused classifier × recall
probability of its label) is below a threshold is "no relation". The threshold was measured on
CrossRE dev (`python -m research extraction`, results/EXTRACTION.md) and ships in the checkpoint's
config (`EmmaConfig.extract_threshold`).

Caps keep one request bounded: at most `MAX_TEXT_CHARS` characters, `MAX_ENTITIES_PER_SENTENCE`
entities paired per sentence (the first ones, in text order) and `MAX_PAIRS` pairs in all; what a
cap left out is said in `Extraction.warnings`, never by an exception.

Example:
    >>> ex = Extractor.load(); ex.set_relations({...})
    >>> result = ex.extract("Apple was founded by Steve Jobs. Jobs was born in San Francisco.")
    >>> [(t.head, t.relation, t.tail, round(t.score, 2)) for t in result.triples]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .data import DataError, spans_overlap
from .entities import EntitySpan, split_sentences, suggest_entities
from .features import instance_from_text, strip_span

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Extractor, Prediction

MAX_TEXT_CHARS = 5000
MAX_ENTITIES_PER_SENTENCE = 16  # 240 ordered pairs
MAX_PAIRS = 1000


@dataclass
class PairPrediction:
    """One ordered pair of entities of a sentence and the model's prediction for it.

    Attributes:
        head, tail: the entities (character offsets into the whole text).
        sentence: index into `Extraction.sentences`.
        prediction: the full `Prediction` (recall, candidates, probabilities, attention) that explains it.
        relation: the predicted relation, or None when its score is below the threshold ("no relation").
    """

    head: EntitySpan
    tail: EntitySpan
    sentence: int
    prediction: "Prediction"
    relation: str | None

    @property
    def score(self) -> float:
        return self.prediction.score


@dataclass
class Triple:
    """A relation found: (head, relation, tail) with its score and where it is.

    Attributes:
        head, tail: the entities' text.
        relation: the predicted relation (at or above the threshold).
        score: its score under the checkpoint's decision rule.
        head_span, tail_span: character spans [start, end) in the whole text.
        sentence: index into `Extraction.sentences`.
        pair: index into `Extraction.pairs` (the prediction that explains this triple).
        head_label, tail_label: the entities' NER types ("" when given by hand).
        both_ways: the reversed pair has the same relation at the threshold too. The model hardly tells a relation's
            direction apart (results/EXTRACTION.md, last section), so such a triple's direction is a guess.
    """

    head: str
    relation: str
    tail: str
    score: float
    head_span: tuple[int, int]
    tail_span: tuple[int, int]
    sentence: int
    pair: int
    head_label: str = ""
    tail_label: str = ""
    both_ways: bool = False

    def to_dict(self) -> dict:
        return {"head": self.head, "relation": self.relation, "tail": self.tail, "score": self.score,
                "head_span": list(self.head_span), "tail_span": list(self.tail_span), "sentence": self.sentence,
                "head_label": self.head_label, "tail_label": self.tail_label, "both_ways": self.both_ways}


def both_ways(triples: Sequence[tuple[int, Sequence[int], Sequence[int], str]]) -> list[bool]:
    """For each (sentence, head span, tail span, relation) of `triples`, whether the reversed pair of the same sentence
    is among them with the same relation (`Triple.both_ways`)."""
    kept = {(i, tuple(h), tuple(t), r) for i, h, t, r in triples}
    return [(i, tuple(t), tuple(h), r) in kept for i, h, t, r in triples]


@dataclass
class Extraction:
    """What `Extractor.extract` returns for one text.

    Attributes:
        text: the text as given.
        sentences: [(start, end)] character spans of its sentences.
        entities: the entities used (suggested or given), in text order.
        pairs: every ordered pair predicted, in sentence then text order.
        triples: the pairs with a relation (score ≥ threshold), best score first.
        threshold: the threshold applied.
        warnings: what a cap left out, or why nothing could be paired; empty when all went through.
        timings_ms: {"entities": …, "predict": …, "total": …}.
    """

    text: str
    sentences: list[tuple[int, int]]
    entities: list[EntitySpan]
    pairs: list[PairPrediction]
    triples: list[Triple]
    threshold: float
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def sentence_text(self, i: int) -> str:
        s, e = self.sentences[i]
        return self.text[s:e]


def check_text(text: str) -> None:
    """ValueError unless `text` is a non-empty string of at most MAX_TEXT_CHARS characters."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty; give a sentence or a paragraph")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"the text has {len(text)} characters; extraction takes at most {MAX_TEXT_CHARS}")


def entity_spans(text: str, entities: Sequence[EntitySpan | tuple[int, int]]) -> list[EntitySpan]:
    """Given entities (EntitySpan or (start, end) character spans) checked against `text`, deduplicated, in text order."""
    out = {}
    for e in entities:
        start, end, label = (e.start, e.end, e.label) if isinstance(e, EntitySpan) else (int(e[0]), int(e[1]), "")
        if not 0 <= start < end <= len(text):
            raise ValueError(f"the entity span {[start, end]} is not inside the text of {len(text)} characters")
        start, end = strip_span(text, start, end)
        if start == end:
            raise ValueError(f"the entity span {[e[0], e[1]] if not isinstance(e, EntitySpan) else [e.start, e.end]} is blank")
        out.setdefault((start, end), EntitySpan(start, end, text[start:end], label))
    return sorted(out.values(), key=lambda x: (x.start, x.end))


def plan_pairs(sentences: list[tuple[int, int]], entities: list[EntitySpan]) -> tuple[list[tuple[int, EntitySpan, EntitySpan]], list[str]]:
    """Every ordered pair of non-overlapping entities inside the same sentence, capped; and the warnings of the caps.

    Returns:
        ([(sentence index, head, tail)] in sentence then text order, [warnings]).
    """
    pairs, warnings, skipped = [], [], 0
    for i, (s, e) in enumerate(sentences):
        inside = [x for x in entities if s <= x.start and x.end <= e]
        if len(inside) > MAX_ENTITIES_PER_SENTENCE:
            warnings.append(f"sentence {i + 1} has {len(inside)} entities; only its first {MAX_ENTITIES_PER_SENTENCE} "
                            f"were paired ({MAX_ENTITIES_PER_SENTENCE * (MAX_ENTITIES_PER_SENTENCE - 1)} of "
                            f"{len(inside) * (len(inside) - 1)} ordered pairs)")
            inside = inside[:MAX_ENTITIES_PER_SENTENCE]
        for h in inside:
            for t in inside:
                if h is t or spans_overlap(h.span, t.span):
                    continue
                if len(pairs) >= MAX_PAIRS:
                    skipped += 1
                    continue
                pairs.append((i, h, t))
    if skipped:
        warnings.append(f"the text has more than {MAX_PAIRS} entity pairs; {skipped} pairs of its last sentences were not predicted")
    return pairs, warnings


@dataclass
class ExtractionPlan:
    """A text read for extraction, before any relation is predicted: what `plan_extraction` gives `finish_extraction`.

    Attributes:
        text, sentences, entities: as in `Extraction`.
        pairs: [(sentence index, head, tail)] to predict, in sentence then text order.
        instances: the marked instance of each of `pairs`, in the same order.
        warnings: what a cap left out, or why nothing could be paired.
        entities_ms: the time taken to find the entities (the NER) and the pairs.
    """

    text: str
    sentences: list[tuple[int, int]]
    entities: list[EntitySpan]
    pairs: list[tuple[int, EntitySpan, EntitySpan]]
    instances: list
    warnings: list[str]
    entities_ms: float


def plan_extraction(text: str, entities: Sequence[EntitySpan | tuple[int, int]] | None = None) -> ExtractionPlan:
    """The sentences, entities (suggested by the NER unless given) and marked pairs of `text` (see `extract`).

    Raises:
        ValueError / EntityModelError: as `extract`.
    """
    t0 = time.perf_counter()
    check_text(text)
    found = suggest_entities(text) if entities is None else entity_spans(text, entities)
    sentences = split_sentences(text, [x.span for x in found])
    if not sentences:
        raise ValueError("the text has no sentence (no word in it)")
    if not found:
        raise ValueError("no entities were found in the text; mark at least two by hand")
    if len(found) == 1:
        raise ValueError(f"only one entity ({found[0].text!r}) was found; a relation needs two")
    planned, warnings = plan_pairs(sentences, found)
    if not planned:
        warnings.append("no two entities share a sentence, so there is no pair to predict")
    instances, kept = [], []
    for i, h, t in planned:
        s, e = sentences[i]
        try:
            instances.append(instance_from_text(text[s:e], (h.start - s, h.end - s), (t.start - s, t.end - s)))
            kept.append((i, h, t))
        except DataError:  # an entity without a word character cannot be marked
            continue
    return ExtractionPlan(text, sentences, found, kept, instances, warnings, (time.perf_counter() - t0) * 1e3)


def finish_extraction(plan: ExtractionPlan, predictions: Sequence["Prediction"], threshold: float,
                      predict_ms: float) -> Extraction:
    """The `Extraction` of `plan` from the predictions of its instances (in order): pairs scoring below `threshold`
    get no relation."""
    if len(predictions) != len(plan.instances):
        raise ValueError(f"{len(predictions)} predictions for {len(plan.instances)} pairs")
    pairs = [PairPrediction(h, t, i, p, p.label if not (threshold > 0 and p.score < threshold) else None)
             for (i, h, t), p in zip(plan.pairs, predictions)]
    found = [(n, p) for n, p in enumerate(pairs) if p.relation is not None]
    reversed_too = both_ways([(p.sentence, p.head.span, p.tail.span, p.relation) for _, p in found])
    triples = [Triple(p.head.text, p.relation, p.tail.text, float(p.score), p.head.span, p.tail.span, p.sentence, n,
                      p.head.label, p.tail.label, two)
               for (n, p), two in zip(found, reversed_too)]
    triples.sort(key=lambda x: -x.score)
    timings = {"entities": plan.entities_ms, "predict": predict_ms, "total": plan.entities_ms + predict_ms}
    return Extraction(plan.text, plan.sentences, plan.entities, pairs, triples, float(threshold), list(plan.warnings), timings)


def check_threshold(extractor: "Extractor", threshold: float | None) -> float:
    """`threshold`, or the checkpoint's `extract_threshold` for None; ValueError outside [0, 1]."""
    if threshold is None:
        threshold = extractor.config.extract_threshold
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    return float(threshold)


def extract(extractor: "Extractor", text: str, entities: Sequence[EntitySpan | tuple[int, int]] | None = None,
            threshold: float | None = None, top_k: int | None = None) -> Extraction:
    """All relations between entities of the same sentence of `text` (see the module docstring).

    `plan_extraction`, one `Extractor.predict_batch` over its pairs, then `finish_extraction`: a caller that must
    interleave other work or show progress (the workbench) runs the three steps itself, predicting in chunks.

    Args:
        extractor: a loaded `Extractor` with its relations set.
        entities: EntitySpans or (start, end) character spans (end exclusive); None: suggested by the NER.
        threshold: pairs scoring below it get no relation; None: the checkpoint's `extract_threshold`.
        top_k: recall scores kept per pair (None: all relations, what the workbench's charts show).

    Raises:
        ValueError: the text is empty or too long, it has no sentence, fewer than two entities were
            found or given, or there are no relations to choose from.
        EntityModelError: entities must be suggested but the NER package is missing or not the pinned one.
    """
    threshold = check_threshold(extractor, threshold)
    if len(extractor.index) == 0:
        raise ValueError("no relations to choose from; add some with set_relations or add_relation")
    plan = plan_extraction(text, entities)
    t0 = time.perf_counter()
    predictions = extractor.predict_batch(plan.instances, top_k=top_k) if plan.instances else []
    return finish_extraction(plan, predictions, threshold, (time.perf_counter() - t0) * 1e3)
