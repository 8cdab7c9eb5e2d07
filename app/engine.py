"""One shared `Extractor` serving many sessions, each with its own relation set.

EMMA encodes each relation description once (paper section 3.1: the description vectors are
precomputed, so a new relation costs one encoder pass). The workbench keeps that property across
users: a process-wide cache maps a description *text* to its encoded row (vector, word pieces,
the two virtual-entity attention heads). A session's relation set is plain data ({name: text}
in `gr.State`); at prediction time `Engine.index` assembles a `RelationIndex` for exactly that
set from cached rows (encoding only texts never seen before) and `Engine.predict` runs the shared
model on a shallow per-call view of the `Extractor` carrying that index. The shared Extractor and
its model are never mutated, so sessions cannot see each other's relations and calls need no lock.

Labelled examples (a user's judged sentences, kept per owner in the store) are handled alike: each
example's instance vector is cached by its sentence and spans, so an owner's examples are encoded
once, and an index is assembled per (relation set, examples) and reused while neither changes. The
cache lives with the loaded model: another checkpoint means another `Engine`, so vectors are
recomputed, never stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict

import emma
from emma import DataError, DescriptionRow, ExampleRow, Extractor, Instance, Prediction, RelationIndex, description_window, sentence_window

logger = logging.getLogger(__name__)

MAX_SENTENCE_CHARS = 2000
MAX_CACHED_TEXTS = 20000
MAX_CACHED_INDEXES = 16
MAX_CACHED_EXAMPLES = 50000


class Engine:
    """The shared model plus the description cache.

    Args:
        extractor: a loaded `Extractor`; its own relation index is left alone.
        checkpoint_id: recorded with every feedback row (default: folder name and weights hash).
        built_in: description texts of the deployment's own relations (`Catalogue.texts`): beside relations a
            user wrote, their recall scores are lowered by the checkpoint's `seen_margin`.

    Example:
        >>> engine = Engine(Extractor.load("checkpoints/emma-minilm"))
        >>> engine.predict("Apple was founded by Steve Jobs.", (0, 5), (21, 31),
        ...                {"founded by": "founded by: founder of this organization"}).label
    """

    def __init__(self, extractor: Extractor, checkpoint_id: str | None = None, built_in: frozenset[str] = frozenset()) -> None:
        self.extractor = extractor
        self.checkpoint_id = checkpoint_id or emma.checkpoint_id(extractor.checkpoint)
        # The catalogue's relations, trained (FewRel) or not (Wiki-ZSL), all get the margin beside a user's own:
        # the trained ones would take the user's sentences, and a margin on those alone handed the trained
        # ones' sentences to the untrained catalogue relations near them (results/GZSL.md, "the catalogue's relations").
        self.built_in = built_in
        self._cache: OrderedDict[str, DescriptionRow] = OrderedDict()
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        # Assembled indexes per relation set: a session predicting again with unchanged relations
        # skips stacking N rows (about 33 ms at 10,000 relations). Rows for a text never change.
        self._indexes: OrderedDict[tuple, RelationIndex] = OrderedDict()
        # Example vectors by (tokens, head, tail): the same sentence and spans always encode alike.
        self._examples: OrderedDict[tuple, object] = OrderedDict()
        # Stored example rows (JSON text) → checked `Instance`s, so a prediction does not parse them again.
        self._instances: OrderedDict[tuple, Instance | None] = OrderedDict()

    # ------------------------------------------------------------------ sizes

    @property
    def k(self) -> int:
        """How many recall candidates the classifier reranks."""
        return self.extractor.config.k

    @property
    def sentence_window(self) -> int:
        """Word pieces of the sentence the encoder reads (entity markers and [CLS]/[SEP] excluded)."""
        return sentence_window(self.extractor.config)

    @property
    def description_window(self) -> int:
        return description_window(self.extractor.config)

    def count_pieces(self, text: str) -> int:
        return len(self.extractor.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ descriptions

    def encode(self, texts: list[str], pin: bool = False) -> None:
        """Make sure every text is in the cache (one encoder pass for the new ones)."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, row in zip(missing, self.extractor.encode_descriptions(missing, progress=len(missing) > 100)):
                    self._cache[text] = row
            if pin:
                self._pinned.update(texts)
            for text in texts:
                self._cache.move_to_end(text)
            self._evict()

    def _evict(self) -> None:
        while len(self._cache) > MAX_CACHED_TEXTS:
            oldest = next((t for t in self._cache if t not in self._pinned), None)
            if oldest is None:
                return
            del self._cache[oldest]

    def instances(self, rows: list[tuple[str, str, str, str]]) -> tuple[Instance, ...]:
        """Stored examples (relation, tokens JSON, head JSON, tail JSON) as labelled instances, parsed once per
        distinct row; a row the model cannot read (it should not happen) is left out."""
        out = []
        with self._lock:
            for row in rows:
                if row not in self._instances:
                    self._instances[row] = _instance(row)
                self._instances.move_to_end(row)
                if self._instances[row] is not None:
                    out.append(self._instances[row])
            while len(self._instances) > MAX_CACHED_EXAMPLES:
                self._instances.popitem(last=False)
        return tuple(out)

    def encode_examples(self, instances: list[Instance]) -> dict[tuple, object]:
        """{(tokens, head, tail): (3d,) unit vector} for `instances`, encoding only those not cached."""
        keys = [i.pair for i in instances]
        with self._lock:
            missing = list({k: i for k, i in zip(keys, instances) if k not in self._examples}.values())
        rows = self.extractor.encode_examples(missing) if missing else []
        with self._lock:
            for row in rows:
                self._examples[row.instance.pair] = row.vector
            found = {}
            for key in keys:
                self._examples.move_to_end(key)
                found[key] = self._examples[key]
            while len(self._examples) > MAX_CACHED_EXAMPLES:
                self._examples.popitem(last=False)
        return found

    def index(self, relations: dict[str, str], examples: tuple[Instance, ...] = ()) -> RelationIndex:
        """A `RelationIndex` over {name: text}, in that order, built from cached rows.

        Args:
            examples: labelled instances (`relation` set); those of relations in `relations` count in
                recall, the others are ignored (kept by the caller until their relation is on again).

        A relation whose text is its bare name has no description (`emma.relation_text`): recall mixes its
        name's cosine with its examples' (`emma.index`), and it needs at least one among `examples`.
        """
        if not relations:
            raise ValueError("no relations to choose from")
        used = tuple(e for e in examples if e.relation in relations)
        key = (tuple(relations.items()), used)
        with self._lock:
            if key in self._indexes:
                self._indexes.move_to_end(key)
                return self._indexes[key]
        texts = list(relations.values())
        self.encode(texts)
        with self._lock:
            rows = [self._cache[t] for t in texts]
        vectors = self.encode_examples(list(used)) if used else {}
        grouped: dict[str, list[ExampleRow]] = {}
        for e in used:
            grouped.setdefault(e.relation, []).append(ExampleRow(e, vectors[e.pair]))
        built_in = [name for name, text in relations.items() if text in self.built_in]
        # Only beside a relation of the user's: with the catalogue alone a uniform shift would change no ranking
        # but every score shown (the recall chart) and every threshold read on it (extraction).
        lowered = built_in if len(built_in) < len(relations) else []
        bare = [name for name, text in relations.items() if text == name]  # no description: scored by its examples
        index = RelationIndex.build(list(relations), rows, examples=grouped, undescribed=bare,
                                    offsets=self.extractor.seen_offsets(lowered), levels=self.extractor.example_levels)
        with self._lock:
            self._indexes[key] = index
            while len(self._indexes) > MAX_CACHED_INDEXES:
                self._indexes.popitem(last=False)
        return index

    # ------------------------------------------------------------------ prediction

    def predict(self, text: str, head: tuple[int, int], tail: tuple[int, int], relations: dict[str, str],
                examples: tuple[Instance, ...] = ()) -> Prediction:
        """Predict over `relations` only (with the labelled `examples` of those relations); the full recall ranking is kept."""
        t0 = time.perf_counter()
        index = self.index(relations, examples)
        index_ms = (time.perf_counter() - t0) * 1e3
        view = self.extractor.with_index(index)  # shares model and tokenizer; only the index differs
        prediction = view.predict(text, head=head, tail=tail, top_k=None)
        prediction.timings_ms = {"descriptions": index_ms, **prediction.timings_ms}
        return prediction


def _instance(row: tuple[str, str, str, str]) -> Instance | None:
    relation, tokens, head, tail = row
    try:
        return Instance(tuple(json.loads(tokens)), tuple(json.loads(head)), tuple(json.loads(tail)), relation)
    except (DataError, TypeError, ValueError, IndexError):
        return None
