"""The relation index: encoded descriptions (and labelled examples) that recall matches sentences against.

EMMA's efficiency argument (paper section 3.1): description vectors are computed once, so recall is
one encoder pass for the sentence plus a matrix product, and a new relation costs one encoder pass.
Labelled examples are kept the same way: each is an instance vector computed once, and a relation's
examples count through their mean (a prototype), so K examples cost one more (N, 3d) product.

A relation's recall score is its description's cosine with the sentence, mixed with its prototype's
cosine when it has examples: (1 − w)·cos(description) + w·cos(prototype), with w = n / (n + 5) for a
relation with n examples (`example_weight`): one example counts 1/6, five as much as the description,
twenty 4/5. A mean of a few sentences is a noisy prototype and a mean of many a good one, so a fixed w
either wastes many examples or lets one example outweigh the description. Measured by
`python -m research.examples_probe --by-count` (recall top-1 macro F1, mean of three draws; CrossRE dev
mean of six domains / FewRel val_wiki) against the fixed w = 0.5 used before:

    K examples per relation     1            5            10           20
    w = 0.5                     26.4 / 83.9  32.5 / 88.3  34.0 / 88.4  34.8 / 88.6
    w = n / (n + 5)             28.3 / 89.1  33.6 / 88.3  36.0 / 87.8  36.4 / 87.9

(zero-shot 25.8 / 89.6; n / (n + 2.5) and n / (n + 10) were each worse on one of the two sets). The count
stops at 20 (`EXAMPLES_COUNTED`; w ≤ 4/5), which changes nothing above. Uncapped, a relation with every row of a
labelled corpus (CrossRE train: up to 185 for one relation) outweighed its description 0.97 to 0.03, the fused
decision left the classifier as little, and the dev mean of the six domains fell below that of 20 rows per
relation (fused 35.5 against 36.0); capped at 20 it is 37.3 (at 10 also 37.3, with larger swings per domain;
`python -m research.examples_probe --every-row`). The nearest example instead of the mean scored lower
(`python -m research.examples_probe`). Chosen on dev, so the CrossRE test files are the check (`python -m
research fewshot --split test`).

A relation with examples and no description (a user names it as the correct relation of a sentence) is scored the
same way, its name standing for the description: the row the encoder read for it is its name. Scored by its prototype
alone, as before, such a relation took the sentences of the described ones, since an instance's cosine with other
instances runs higher than with descriptions (`python -m research.bare_relations_probe`: every other relation bare,
with K examples, beside described ones without; recall top-1 macro F1 of all relations, mean of draws 0-2, CrossRE
dev mean of six domains / FewRel val_wiki):

    K examples per bare relation    1            5            20
    prototype alone                 19.5 / 77.5  23.2 / 76.8  24.7 / 76.1
    name mixed in at n / (n + 5)    24.7 / 81.5  26.6 / 85.9  25.8 / 81.0

Where some relations have examples and the rest none (a user labels a few relations of the catalogue), the mix of a
relation with examples runs higher over sentences of other relations than a description's cosine does, so it took
their sentences. With the checkpoint's `ExampleLevels` (the mean score of other relations' sentences by count n,
measured on its training relations: `python -m research example-levels`), recall takes half of that gap
(`LEVEL_SHARE`) off a relation's mix. The shift depends on a relation's own count only, so one labelled relation
keeps what its examples say, and where every relation has as many examples nothing changes, the fused decision
included. All of the gap gains more where half the relations are labelled but costs up to a point where every one is
(a rare relation has fewer examples than K, and its lower mix kept it from taking sentences); giving the mix the
descriptions' spread too gains most in the first case but changes the fused decision in the second. `python -m
research.bare_relations_probe --levels`: recall top-1 macro F1 of all relations, mean of draws 0-2, CrossRE dev mean
of six domains / FewRel val_wiki:

    examples for                     every relation, K = 5 / 20        half of them, K = 5 / 20
    the mix alone                    33.6 / 88.2    36.4 / 87.9        26.9 / 84.3    26.1 / 79.8
    half of the gap off (shipped)    33.6 / 88.2    36.6 / 87.9        27.0 / 85.5    27.4 / 83.1
    all of the gap off               32.8 / 88.2    35.8 / 87.9        27.3 / 86.5    27.4 / 84.5
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .data import Instance

EXAMPLES_LIKE_DESCRIPTION = 5  # the number of examples that count as much as the description
EXAMPLES_COUNTED = 20  # more examples than this sharpen the prototype but weigh no more against the description
LEVEL_SHARE = 0.5  # how much of the gap to the descriptions' level `ExampleLevels` take off a mixed score (module docstring)


def example_weight(n):
    """w of a relation with `n` labelled examples (module docstring): m / (m + 5) with m = min(n, 20), 0 without
    examples. `n` may be a tensor of counts (the training objective mixes as recall does)."""
    m = n.clamp(max=EXAMPLES_COUNTED) if isinstance(n, torch.Tensor) else min(n, EXAMPLES_COUNTED)
    return m / (m + EXAMPLES_LIKE_DESCRIPTION)


@dataclass(frozen=True)
class ExampleLevels:
    """Where recall scores of sentences of *other* relations sit, by a relation's number of examples n: their mean for
    n = 0 (the description's cosine alone) and for the mix at a few counts above. An instance's cosine with a
    prototype runs higher than with a description, so beside relations without examples a relation with some took
    their sentences; recall lowers each mixed score by `LEVEL_SHARE` of the gap (`shift`). Measured once per
    checkpoint on its own training relations (`python -m research example-levels`) and kept in its config
    (`EmmaConfig.example_levels`).

    Attributes:
        counts: increasing example counts, the first 0.
        means: the mean score at each count.
    """

    counts: tuple[int, ...]
    means: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.counts) == len(self.means) >= 2) or self.counts[0] != 0:
            raise ValueError("example levels need the count 0 and at least one count above, each with its mean score")
        if any(b <= a for a, b in zip(self.counts, self.counts[1:])) or not all(abs(m) <= 1 for m in self.means):
            raise ValueError("example level counts must increase and every mean must be a cosine, between -1 and 1")

    @classmethod
    def from_config(cls, levels: Mapping[str, float]) -> "ExampleLevels | None":
        """From `EmmaConfig.example_levels` ({"n": mean}); None when empty (checkpoints measured before)."""
        if not levels:
            return None
        items = sorted((int(n), float(m)) for n, m in levels.items())
        return cls(tuple(n for n, _ in items), tuple(m for _, m in items))

    def to_config(self) -> dict[str, float]:
        return {str(n): round(m, 5) for n, m in zip(self.counts, self.means)}

    def shift(self, n: torch.Tensor, share: float = LEVEL_SHARE) -> torch.Tensor:
        """What to add to the mixed scores of relations with counts `n` (any shape): `share` of the way from the mean
        of n examples to a description's alone (1: all the way); exactly 0 where n = 0. Counts between two measured
        ones are interpolated, counts above the last take the last."""
        counts = torch.tensor(self.counts, dtype=torch.float32, device=n.device)
        means = torch.tensor(self.means, dtype=torch.float32, device=n.device)
        x = n.float().clamp(max=counts[-1]).reshape(-1)
        hi = torch.searchsorted(counts, x).clamp(1, len(counts) - 1)
        lo = hi - 1
        t = ((x - counts[lo]) / (counts[hi] - counts[lo])).clamp(0, 1)
        mean = (means[lo] * (1 - t) + means[hi] * t).reshape(n.shape)
        return (share * (self.means[0] - mean)).masked_fill(n == 0, 0.0)


@dataclass(frozen=True, eq=False)
class DescriptionRow:
    """One encoded relation description: what the index keeps for a relation.

    Attributes:
        text: the description the encoder read.
        vector: (3d,) unit vector h[CLS] ⊕ head pooling ⊕ tail pooling, on the model's device.
        token_ids: its word pieces without [CLS]/[SEP], the classifier's second segment.
        tokens: the word pieces as text, for display.
        head_weights, tail_weights: the two virtual-entity pooling weights over `tokens`.
    """

    text: str
    vector: torch.Tensor
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    head_weights: tuple[float, ...]
    tail_weights: tuple[float, ...]

    def attention(self) -> dict:
        """{"tokens", "head", "tail"}: the virtual-entity attention, as the workbench draws it."""
        return {"tokens": list(self.tokens), "head": list(self.head_weights), "tail": list(self.tail_weights)}


@dataclass(frozen=True, eq=False)
class ExampleRow:
    """A labelled instance kept as an example of its relation, with its (3d,) unit instance vector."""

    instance: Instance
    vector: torch.Tensor


@dataclass(frozen=True)
class DescriptionFit:
    """How well one relation's description alone labels the relation's own labelled examples.

    Each example is scored as recall scores a sentence without examples (its cosine with every description in
    force, offsets included) and counts as `right` when its own relation's description comes first. Few right
    means the examples carry the relation in recall, and the classifier, which reads descriptions only, helps
    little on it: a description worth rewriting, or a relation to label more sentences of.

    Attributes:
        relation: the relation's name.
        examples: how many labelled examples it has.
        right: how many of them its description ranks first among the descriptions.
        taken_by: (another relation, how many of the examples its description ranked first), most first.
    """

    relation: str
    examples: int
    right: int
    taken_by: tuple[tuple[str, int], ...]


@dataclass
class RecallScores:
    """(B, N) scores of a batch against every relation: the mix recall ranks by, and its two parts."""

    combined: torch.Tensor
    description: torch.Tensor
    examples: torch.Tensor | None  # NaN for relations without examples; None when no relation has any


@dataclass(frozen=True, eq=False)
class RelationIndex:
    """Named description rows, their stacked (N, 3d) unit vectors, and each relation's examples; immutable.

    Changing the relation set makes a new index (`with_relations`, `without`, `with_examples`,
    `without_examples`), so an index handed to a prediction never changes under it and several
    sessions may share one. Build one with `RelationIndex.build`.

    Example:
        >>> index = RelationIndex.build(["founded by"], extractor.encode_descriptions(["founded by: founder of it"]))
        >>> index.scores(instance_vectors).combined  # (B, 1)
    """

    names: tuple[str, ...] = ()
    rows: tuple[DescriptionRow, ...] = ()
    examples: Mapping[str, tuple[ExampleRow, ...]] = field(default_factory=dict)
    undescribed: frozenset[str] = frozenset()  # relations known by name and examples only
    offsets: Mapping[str, float] = field(default_factory=dict)  # added to a relation's recall score (see `with_offsets`)
    vectors: torch.Tensor | None = None  # (N, 3d) unit description rows
    prototypes: torch.Tensor | None = None  # (N, 3d) unit mean of each relation's examples, 0 without
    levels: ExampleLevels | None = None  # lowers a mixed score toward the descriptions' level; None: the mix as it is
    _weights: torch.Tensor | None = None  # (N,) each relation's example weight w
    _level: torch.Tensor | None = None  # (N,) each relation's `levels` shift
    _shift: torch.Tensor | None = None  # (N,) `offsets` by row; None when there are none
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        rows: Sequence[DescriptionRow],
        examples: Mapping[str, Sequence[ExampleRow]] | None = None,
        undescribed: Sequence[str] = (),
        offsets: Mapping[str, float] | None = None,
        levels: ExampleLevels | None = None,
    ) -> "RelationIndex":
        """An index over `names` (distinct) with their `rows`, in that order.

        Args:
            examples: {relation: example rows} for relations of `names`.
            undescribed: relations whose row encodes only their name; recall mixes that row's cosine with
                their examples' as for a description (module docstring), and each needs at least one example.
            offsets: {relation: added to its recall score}; relations not in `names` are ignored.
            levels: the checkpoint's `ExampleLevels`, which lower a relation's mixed score toward the level of a
                description alone (module docstring); None leaves the mix as it is.
        """
        names, rows = tuple(names), tuple(rows)
        assert len(names) == len(rows), f"{len(names)} names for {len(rows)} rows"
        if len(set(names)) != len(names):
            raise ValueError("relation names must be distinct")
        examples = {n: tuple(e) for n, e in (examples or {}).items() if e}
        stray = sorted(set(examples) - set(names))
        if stray:
            raise ValueError(f"examples for relations not in the index: {', '.join(stray)}")
        bare = sorted(n for n in undescribed if n not in examples)
        if bare:
            raise ValueError(f"relation {bare[0]!r} has neither a description nor examples")
        if not rows:
            return cls(levels=levels)
        vectors = torch.stack([r.vector for r in rows])  # (N, 3d)
        prototypes, weights = torch.zeros_like(vectors), torch.zeros(len(names), device=vectors.device)
        counts = torch.zeros(len(names), device=vectors.device)
        for i, name in enumerate(names):
            if name in examples:
                prototypes[i] = F.normalize(torch.stack([e.vector for e in examples[name]]).mean(0), dim=-1)
                weights[i] = example_weight(len(examples[name]))
                counts[i] = len(examples[name])
        level = levels.shift(counts) if levels is not None and examples else None
        known = set(names)
        offsets = {n: float(o) for n, o in (offsets or {}).items() if o and n in known}
        shift = torch.tensor([offsets.get(n, 0.0) for n in names], device=vectors.device) if offsets else None
        return cls(names, rows, examples, frozenset(undescribed), offsets, vectors, prototypes, levels, weights, level,
                   shift, {n: i for i, n in enumerate(names)})

    def __len__(self) -> int:
        return len(self.names)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rows]

    def position(self, name: str) -> int:
        """Row of relation `name`; KeyError if absent."""
        return self._positions[name]

    def with_relations(
        self,
        names: Sequence[str],
        rows: Sequence[DescriptionRow],
        undescribed: Sequence[str] = (),
        examples: Mapping[str, Sequence[ExampleRow]] | None = None,
    ) -> "RelationIndex":
        """This index plus `names` (and `examples` for them); a name already present is replaced, keeps its
        examples and moves to the end."""
        replaced = set(names)
        kept = [(n, r) for n, r in zip(self.names, self.rows) if n not in replaced]
        names_after = [n for n, _ in kept] + list(names)
        merged = dict(self.examples)
        for name, new in (examples or {}).items():
            merged[name] = merged.get(name, ()) + tuple(new)
        still_bare = (self.undescribed - replaced) | set(undescribed)
        return RelationIndex.build(names_after, [r for _, r in kept] + list(rows), merged, still_bare, self.offsets,
                                   self.levels)

    def without(self, name: str) -> "RelationIndex":
        """This index less relation `name` and its examples; KeyError if absent."""
        i = self.position(name)
        examples = {n: e for n, e in self.examples.items() if n != name}
        return RelationIndex.build(self.names[:i] + self.names[i + 1 :], self.rows[:i] + self.rows[i + 1 :],
                                   examples, self.undescribed - {name}, self.offsets, self.levels)

    def with_examples(self, name: str, rows: Sequence[ExampleRow]) -> "RelationIndex":
        """This index with `rows` added to relation `name`'s examples."""
        examples = {**self.examples, name: self.examples.get(name, ()) + tuple(rows)}
        return RelationIndex.build(self.names, self.rows, examples, self.undescribed, self.offsets, self.levels)

    def without_examples(self, name: str, instances: Sequence[Instance] | None = None) -> "RelationIndex":
        """This index without `instances` (None: all; matched by sentence and spans) among relation `name`'s examples."""
        drop = None if instances is None else {i.pair for i in instances}
        kept = () if drop is None else tuple(e for e in self.examples.get(name, ()) if e.instance.pair not in drop)
        return RelationIndex.build(self.names, self.rows, {**self.examples, name: kept}, self.undescribed, self.offsets,
                                   self.levels)

    def with_offsets(self, offsets: Mapping[str, float]) -> "RelationIndex":
        """This index with `offsets` ({relation: added to its recall score}) in place of its own.

        For generalized zero-shot: relations the model was trained on score higher than new ones
        for the same fit, so a sentence of a new relation goes to a trained one; a negative offset
        of the trained relations (`EmmaConfig.seen_margin`, chosen on dev) evens that out.
        """
        return RelationIndex.build(self.names, self.rows, self.examples, self.undescribed, offsets, self.levels)

    def scores(self, queries: torch.Tensor) -> RecallScores:
        """(B, 3d) instance vectors → (B, N) cosines with descriptions and prototypes, and their mix (float32, exact)."""
        q = F.normalize(queries.float(), dim=-1)
        description = q @ self.vectors.T  # (B, N): one matrix product against the precomputed rows
        if not self.examples:
            return RecallScores(self._shifted(description), description, None)
        examples = q @ self.prototypes.T  # (B, N)
        w = self._weights  # (N,): 0 exactly for the relations without examples
        combined = (1 - w) * description + w * examples
        if self._level is not None:
            combined = combined + self._level
        return RecallScores(self._shifted(combined), description, examples.masked_fill(w == 0, float("nan")))

    def description_share(self, rows: Sequence[int]) -> float:
        """1 − the mean example weight w of the relations at positions `rows`: how much their descriptions count
        in their recall scores (1 without examples; a relation known by its name and examples counts its name as
        its description). The fused decision weighs the classifier, which reads descriptions (or that name), by it
        (`emma.pipeline.fuse`)."""
        if not rows or self._weights is None:
            return 1.0
        return 1.0 - float(self._weights[list(rows)].mean())

    def description_fits(self) -> list[DescriptionFit]:
        """A `DescriptionFit` for each described relation with examples, in index order (relations known by
        examples alone have no description to check, and are never a description's pick)."""
        described = [i for i, n in enumerate(self.names) if n not in self.undescribed]
        checked = [n for n in self.names if self.examples.get(n) and n not in self.undescribed]
        if not checked:
            return []
        columns = torch.tensor(described, device=self.vectors.device)
        fits = []
        for name in checked:
            queries = torch.stack([e.vector for e in self.examples[name]]).float()
            scores = self._shifted(queries @ self.vectors.T)[:, columns]
            picks = Counter(self.names[described[j]] for j in scores.argmax(1).tolist())
            right = picks.pop(name, 0)
            fits.append(DescriptionFit(name, len(queries), right, tuple(picks.most_common())))
        return fits

    def _shifted(self, scores: torch.Tensor) -> torch.Tensor:
        return scores if self._shift is None else scores + self._shift  # (B, N) + (N,)

    def nearest_examples(self, query: torch.Tensor, name: str, n: int = 3) -> list[tuple[Instance, float]]:
        """Relation `name`'s `n` examples most similar to one (3d,) instance vector, with their cosines."""
        rows = self.examples.get(name, ())
        if not rows:
            return []
        sims = torch.stack([e.vector for e in rows]) @ F.normalize(query.float(), dim=-1)  # (M,)
        top = sims.topk(min(n, len(rows)))
        return [(rows[i].instance, float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]


@dataclass
class Recalled:
    """Recall's answer for a batch: per instance the top `width` rows of the index, best first."""

    scores: list[list[float]]  # (B, width) combined scores
    rows: list[list[int]]  # (B, width) positions in the index
    parts: list[list[tuple[float, float | None]]]  # (B, width) (description cosine, prototype cosine or None)


def recall(index: RelationIndex, vectors: torch.Tensor, width: int) -> Recalled:
    """Exact top-`width` relations for each (B, 3d) instance vector by recall score."""
    s = index.scores(vectors)
    if width >= len(index):  # every score is kept: a sort is cheaper than topk(N)
        top_scores, top_rows = s.combined.sort(dim=1, descending=True)  # (B, N)
    else:
        top_scores, top_rows = s.combined.topk(width, dim=1)  # (B, width), exact
    scores, rows = top_scores.cpu().tolist(), top_rows.cpu().tolist()
    if s.combined is s.description:  # the score is the description's cosine: nothing more to read
        return Recalled(scores, rows, [[(d, None) for d in row] for row in scores])
    desc = s.description.gather(1, top_rows).cpu().tolist()
    if s.examples is None:  # shifted by offsets, without examples
        return Recalled(scores, rows, [[(d, None) for d in row] for row in desc])
    ex = s.examples.gather(1, top_rows).cpu().tolist()
    parts = [[(d, None if e != e else e) for d, e in zip(dr, er)] for dr, er in zip(desc, ex)]  # e != e: NaN, no examples
    return Recalled(scores, rows, parts)
