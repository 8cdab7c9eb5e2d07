"""EMMA: zero-shot relation extraction by multi-grained matching (coarse recall + fine reranking).

The public API (what `app/`, `research/` and users import):

    >>> from emma import Extractor
    >>> ex = Extractor.load()                 # shipped checkpoint; CUDA if available
    >>> ex.set_relations({"founded by": "founded by: founder or co-founder of this organization"})
    >>> ex.predict("Apple was founded by Steve Jobs.", head=(0, 5), tail=(21, 31)).label

Training: `TrainConfig` and `emma.train.train` (not re-exported here: the name would hide the
`emma.train` module).
"""

from .checkpoint import DEFAULT_CHECKPOINT, CheckpointError, checkpoint_id, default_encoder, load_checkpoint, save_checkpoint
from .entities import EntityModelError, EntitySpan, split_sentences, suggest_entities
from .extract import Extraction, PairPrediction, Triple
from .corpus import NO_RELATION, BadRecord, Corpus, Record, cohen_kappa, dumps_corpus, kappa_per_label, parse_corpus, read_corpus, write_corpus
from .data import (
    DataError, Instance, Split, cap_per_relation, draw_shots, read_descriptions, read_instances, read_split, relation_text, spans_overlap,
)
from .evaluate import evaluate, macro_prf
from .features import EntityWithinOther, collate_pairs, description_window, encode_instances, find_entity, instance_from_text, sentence_window
from .model import Emma, EmmaConfig
from .index import DescriptionFit, DescriptionRow, ExampleRow, RelationIndex
from .pipeline import Extractor, Prediction
from .precision import autocast
from .train import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "NO_RELATION", "BadRecord", "Corpus", "Record", "cohen_kappa", "dumps_corpus", "kappa_per_label", "parse_corpus",
    "read_corpus", "write_corpus",  # annotation corpora (emma.corpus)
    "DEFAULT_CHECKPOINT",
    "CheckpointError",
    "DataError",
    "DescriptionFit",
    "DescriptionRow",
    "Emma",
    "EmmaConfig",
    "EntityModelError",
    "EntitySpan",
    "EntityWithinOther",
    "ExampleRow",
    "Extraction",
    "Extractor",
    "Instance",
    "PairPrediction",
    "Prediction",
    "RelationIndex",
    "Split",
    "TrainConfig",
    "Triple",
    "autocast",
    "cap_per_relation",
    "checkpoint_id",
    "collate_pairs",
    "default_encoder",
    "description_window",
    "draw_shots",
    "encode_instances",
    "evaluate",
    "find_entity",
    "instance_from_text",
    "load_checkpoint",
    "macro_prf",
    "read_descriptions",
    "read_instances",
    "read_split",
    "relation_text",
    "save_checkpoint",
    "sentence_window",
    "spans_overlap",
    "split_sentences",
    "suggest_entities",
]
