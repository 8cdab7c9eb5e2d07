"""EMMA: zero-shot relation extraction by multi-grained matching (coarse recall + fine reranking).

The public API (what `app/` and users import):

    >>> from emma import Extractor
    >>> ex = Extractor.load()                 # shipped checkpoint; CUDA if available
    >>> ex.set_relations({"founded by": "founded by: founder or co-founder of this organization"})
    >>> ex.predict("Apple was founded by Steve Jobs.", head=(0, 5), tail=(21, 31)).label
"""

from .checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint, save_checkpoint
from .data import DataError, Instance, Split, read_descriptions, read_instances, read_split
from .evaluate import evaluate, macro_prf
from .features import find_entity, instance_from_text
from .model import Emma, EmmaConfig
from .pipeline import Extractor, Prediction, RelationIndex

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CHECKPOINT",
    "CheckpointError",
    "DataError",
    "Emma",
    "EmmaConfig",
    "Extractor",
    "Instance",
    "Prediction",
    "RelationIndex",
    "Split",
    "evaluate",
    "find_entity",
    "instance_from_text",
    "load_checkpoint",
    "macro_prf",
    "read_descriptions",
    "read_instances",
    "read_split",
    "save_checkpoint",
]
