"""Data: one `Instance` type, readers for the formats EMMA's datasets come in, and relation splits.

Zero-shot relation extraction trains on some relations and tests on others never seen in
training (EMMA paper, section 4.1). Everything downstream of this module sees only
`Instance`, `dict[relation id -> description text]` and `Split`, whatever the source format.

Readers (gzip is handled transparently by file name):
- FewRel: ``{relation: [{"tokens", "h": [name, id, [[tok idx, ...], ...]], "t": ...}]}``
- RE-Matching list: ``[{"token", "h": {"pos": [start, end)}, "t": ..., "relation"}]``
- JSONL: one ``{"tokens", "head": [start, end), "tail": [start, end), "relation"}`` per line, or FewRel's
  ``{"tokens", "h", "t", "relation"}``
- Wiki-ZSL RelationPrompt JSONL: ``{"triplets": [{"tokens", "head": [idx...], "tail": [...], "label_id"}]}``

Records are numbered from 1 in messages, as a person counts them.
"""

from __future__ import annotations

import contextvars
import gzip
import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

logger = logging.getLogger(__name__)

Span = tuple[int, int]


class DataError(ValueError):
    """Bad input data; the message names the file and the record."""


def spans_overlap(a: Span, b: Span) -> bool:
    """Whether two spans (start, end exclusive) share a position; adjacent spans do not."""
    return a[0] < b[1] and b[0] < a[1]


def relation_text(name: str, description: str) -> str:
    """What the encoder reads for a relation: "name: description" (FewRel's `pid2name` form).

    A description that already starts with "name:" is kept as it is; a relation without a description
    (one defined by labelled examples alone) reads its name.

    Example:
        >>> relation_text("founded by", "founder or co-founder of this organization")
        'founded by: founder or co-founder of this organization'
        >>> relation_text("taught at", "")
        'taught at'
    """
    name, description = name.strip(), description.strip()
    if not description:
        return name
    if description.lower().startswith(name.lower() + ":"):
        return description
    return f"{name}: {description}"


@dataclass(frozen=True)
class Instance:
    """A sentence with a head and a tail entity.

    Args:
        tokens: the words of the sentence.
        head: token span of the head entity, ``(start, end)`` with ``end`` exclusive.
        tail: token span of the tail entity, same convention.
        relation: gold relation id, or ``None`` when unknown (at prediction time).

    Example:
        >>> Instance(("Paris", "is", "in", "France"), (0, 1), (3, 4), "P17")
    """

    tokens: tuple[str, ...]
    head: Span
    tail: Span
    relation: str | None = None

    def __post_init__(self) -> None:
        # A string would pass as a sequence of characters (tokens) or of digits (a span) and read as wrong data.
        if isinstance(self.tokens, str):
            raise DataError("tokens must be a list of words, not one string")
        if any(isinstance(span, (str, dict)) for span in (self.head, self.tail)):
            raise DataError("head and tail must be [start, end] token positions")
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if not all(isinstance(t, str) for t in self.tokens):
            raise DataError("tokens must be a list of words (strings)")
        object.__setattr__(self, "head", (int(self.head[0]), int(self.head[1])))
        object.__setattr__(self, "tail", (int(self.tail[0]), int(self.tail[1])))
        problem = self.problem()
        if problem:
            raise DataError(problem)

    def problem(self) -> str | None:
        """Return a sentence describing what is wrong with this instance, or None."""
        n = len(self.tokens)
        if n == 0:
            return "the sentence has no tokens"
        for name, (s, e) in (("head", self.head), ("tail", self.tail)):
            if not (0 <= s < e <= n):
                return f"{name} span {[s, e]} is outside the {n} tokens (end is exclusive)"
        if self.head == self.tail:
            return f"head and tail are the same span {list(self.head)}"
        return None

    @property
    def head_text(self) -> str:
        return " ".join(self.tokens[self.head[0] : self.head[1]])

    @property
    def tail_text(self) -> str:
        return " ".join(self.tokens[self.tail[0] : self.tail[1]])

    @property
    def pair(self) -> tuple[tuple[str, ...], Span, Span]:
        """The sentence and the two spans, without the label: what makes two examples the same pair."""
        return self.tokens, self.head, self.tail

    def as_text(self) -> tuple[str, Span, Span]:
        """The sentence as text (tokens joined by spaces) and the head and tail character spans (end exclusive)."""
        starts, pos = [], 0
        for tok in self.tokens:
            starts.append(pos)
            pos += len(tok) + 1
        span = lambda s, e: (starts[s], starts[e - 1] + len(self.tokens[e - 1]))  # noqa: E731
        return " ".join(self.tokens), span(*self.head), span(*self.tail)

    def to_json(self) -> dict:
        """The JSONL record this project reads back with `read_instances`."""
        return {"tokens": list(self.tokens), "head": list(self.head), "tail": list(self.tail), "relation": self.relation}


@dataclass(frozen=True)
class Split:
    """Relation ids for training, model selection ("eval") and zero-shot testing; disjoint."""

    train: tuple[str, ...]
    eval: tuple[str, ...]
    test: tuple[str, ...]
    name: str = ""


# --------------------------------------------------------------------------- file helpers


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _load(path: str | Path) -> tuple[Path, object]:
    """Load JSON, or JSONL (returned as a list), from a possibly gzipped file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with _open_text(path) as f:
        text = f.read()
    # A one-line JSONL file is also valid JSON (a dict); the extension says it is a list of records.
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        try:
            return path, json.loads(text.lstrip())
        except json.JSONDecodeError:
            pass
    records = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {line_no} is neither JSON nor JSONL ({e.msg})") from None
    return path, records


def _span_from_indices(indices: Sequence[int], where: str) -> Span:
    """FewRel lists token indices of an occurrence; they are contiguous."""
    if not indices:
        raise DataError(f"{where}: empty entity occurrence")
    idx = sorted(int(i) for i in indices)
    if idx != list(range(idx[0], idx[-1] + 1)):
        raise DataError(f"{where}: entity token indices {idx} are not contiguous")
    return idx[0], idx[-1] + 1


# Set by read_instances(skip_invalid=True): receives the message of each invalid record instead of raising.
_ON_ERROR: contextvars.ContextVar = contextvars.ContextVar("emma_data_on_error", default=None)


def _make(tokens, head, tail, relation, where: str) -> Instance:
    try:
        return Instance(tokens, head, tail, None if relation is None else str(relation))
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    except (TypeError, ValueError, LookupError) as e:
        raise DataError(f"{where}: malformed record ({e})") from None


def _append_valid(out: list, build) -> None:
    """out.append(build()), or report the DataError to the skip handler when one is set."""
    try:
        out.append(build())
    except DataError as e:
        handler = _ON_ERROR.get()
        if handler is None:
            raise
        handler(str(e))


# --------------------------------------------------------------------------- instances


def read_instances(path: str | Path, skip_invalid: bool = False) -> list[Instance]:
    """Read instances from any supported format (detected from the content).

    Args:
        path: a ``.json``, ``.jsonl`` or gzipped file in one of the formats in the module docstring.
        skip_invalid: drop records that fail validation (logging how many and the first reasons)
            instead of raising. For public files with a few broken records (the Wiki-ZSL sample has
            3 of 5,864 triplets with an empty head or head == tail).

    Returns:
        The instances in file order.

    Raises:
        DataError: naming the file and record when a record is malformed (and skip_invalid is False).
    """
    if skip_invalid:
        skipped: list[str] = []
        token = _ON_ERROR.set(skipped.append)
        try:
            out = read_instances(path)
        finally:
            _ON_ERROR.reset(token)
        if skipped:
            logger.warning("%s: skipped %d invalid record(s), e.g. %s", path, len(skipped), "; ".join(skipped[:3]))
        return out
    path, data = _load(path)
    if isinstance(data, dict) and {"tokens", "token", "triplets"} & set(data):
        data = [data]  # a file holding one record
    if isinstance(data, dict):
        return _read_fewrel(path, data)
    if isinstance(data, list):
        if not data:
            return []
        first = data[0]
        if isinstance(first, dict) and "triplets" in first:
            return _read_relationprompt(path, data)
        if isinstance(first, dict) and "token" in first:
            return _read_rematching(path, data)
        if isinstance(first, dict) and "tokens" in first:
            return _read_jsonl(path, data)
    raise DataError(f"{path}: unrecognised instance format (expected FewRel, RE-Matching or JSONL records)")


def _read_fewrel(path: Path, data: dict) -> list[Instance]:
    out = []
    for relation, records in data.items():
        if not isinstance(records, list):
            raise DataError(f"{path}: relation {relation!r} should map to a list of instances")
        for i, r in enumerate(records):
            _append_valid(out, lambda r=r, where=f"{path}: relation {relation} record {i + 1}": _fewrel_record(r, relation, where))
    return out


def _fewrel_record(r: dict, relation: str, where: str) -> Instance:
    try:
        head = _span_from_indices(r["h"][2][0], where)
        tail = _span_from_indices(r["t"][2][0], where)
        tokens = r["tokens"]
    except DataError:
        raise
    except KeyError as e:
        raise DataError(f"{where}: the FewRel record has no {e.args[0]!r} field ({RECORD_FORMATS['FewRel']})") from None
    except (IndexError, TypeError, ValueError):
        raise DataError(f"{where}: malformed FewRel record ({RECORD_FORMATS['FewRel']})") from None
    return _make(tokens, head, tail, relation, where)


def _read_rematching(path: Path, data: list) -> list[Instance]:
    out = []
    for i, r in enumerate(data):
        _append_valid(out, lambda r=r, where=f"{path}: record {i + 1}": _keyed_record(
            r, where, "RE-Matching", lambda: (r["token"], r["h"]["pos"], r["t"]["pos"], r.get("relation"))))
    return out


def _read_jsonl(path: Path, data: list) -> list[Instance]:
    out = []
    for i, r in enumerate(data):
        if isinstance(r, dict) and "head" not in r and "h" in r:  # FewRel's instance, one per line with its relation
            _append_valid(out, lambda r=r, where=f"{path}: record {i + 1}": _fewrel_record(r, r.get("relation"), where))
            continue
        _append_valid(out, lambda r=r, where=f"{path}: record {i + 1}": _keyed_record(
            r, where, "JSONL", lambda: (r["tokens"], r["head"], r["tail"], r.get("relation"))))
    return out


def _keyed_record(r, where: str, kind: str, fields) -> Instance:
    try:
        tokens, head, tail, relation = fields()
    except KeyError as e:
        raise DataError(f"{where}: the {kind} record has no {e.args[0]!r} field ({RECORD_FORMATS[kind]})") from None
    except (TypeError, AttributeError):
        raise DataError(f"{where}: malformed {kind} record ({RECORD_FORMATS[kind]})") from None
    return _make(tokens, head, tail, relation, where)


# What each format's record holds, for a message about a record that does not.
RECORD_FORMATS = {
    "FewRel": 'expected {"tokens": [words], "h": [name, id, [[token indices]]], "t": [name, id, [[token indices]]]}',
    "JSONL": 'expected {"tokens": [words], "head": [start, end], "tail": [start, end], "relation": name}',
    "RE-Matching": 'expected {"token": [words], "h": {"pos": [start, end]}, "t": {"pos": [start, end]}, "relation": name}',
}


def _first_run(indices: Sequence[int]) -> list[int]:
    """RelationPrompt lists the token indices of every mention together ([0, 1, 19, 20]): keep the first mention."""
    idx = sorted(int(i) for i in indices)
    end = min(1, len(idx))
    while end < len(idx) and idx[end] == idx[end - 1] + 1:
        end += 1
    return idx[:end]


def _read_relationprompt(path: Path, data: list) -> list[Instance]:
    out = []
    for i, r in enumerate(data):
        if not isinstance(r, dict) or not isinstance(r.get("triplets"), list):
            raise DataError(f"{path}: record {i + 1}: expected {{'triplets': [...]}}")
        for j, t in enumerate(r["triplets"]):
            _append_valid(out, lambda t=t, where=f"{path}: record {i + 1} triplet {j + 1}": _triplet(t, where))
    return out


def _triplet(t: dict, where: str) -> Instance:
    try:
        head = _span_from_indices(_first_run(t["head"]), where)
        tail = _span_from_indices(_first_run(t["tail"]), where)
        tokens, relation = t["tokens"], t.get("label_id") or t.get("label")
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: malformed triplet ({e!r})") from None
    return _make(tokens, head, tail, relation, where)


def write_jsonl(instances: Iterable[Instance], path: str | Path) -> None:
    """Write instances as JSONL records that `read_instances` reads back."""
    with open(path, "w", encoding="utf-8") as f:
        for inst in instances:
            f.write(json.dumps(inst.to_json(), ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- descriptions


def read_descriptions(path: str | Path) -> dict[str, str]:
    """Read relation descriptions as ``{relation id: text}``.

    Accepts ``{id: "text"}``, ``pid2name.json`` (``{id: [name, description]}``, rendered as
    "name: description") and the processed list format (``[{"relation", "description": [tokens]}]``,
    rendered as the joined tokens).
    """
    path, data = _load(path)
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for rel, value in data.items():
            if isinstance(value, str):
                text = value
            elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
                text = relation_text(value[0], value[1])
            else:
                raise DataError(f"{path}: relation {rel!r}: expected a string or [name, description]")
            out[str(rel)] = text.strip()
    elif isinstance(data, list):
        for i, r in enumerate(data):
            try:
                desc = r["description"]
                out[str(r["relation"])] = (" ".join(desc) if isinstance(desc, list) else str(desc)).strip()
            except (KeyError, TypeError):
                raise DataError(f"{path}: record {i + 1}: expected {{'relation', 'description'}}") from None
    else:
        raise DataError(f"{path}: unrecognised description format")
    for rel, text in out.items():
        if not text:
            raise DataError(f"{path}: relation {rel!r} has an empty description")
    return out


# --------------------------------------------------------------------------- splits


def read_split(path: str | Path) -> Split:
    """Read a ``{dataset}_rel2id_{m}_{seed}.json`` file: ``{"train": {pid: idx}, "eval": ..., "test": ...}``."""
    path, data = _load(path)
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise DataError(f"{path}: a split file needs 'train' and 'test' (and optionally 'eval')")
    parts = {k: tuple(str(r) for r in data.get(k, {})) for k in ("train", "eval", "test")}
    seen: dict[str, str] = {}
    for part, rels in parts.items():
        for r in rels:
            if r in seen:
                raise DataError(f"{path}: relation {r} is in both {seen[r]!r} and {part!r}")
            seen[r] = part
    return Split(parts["train"], parts["eval"], parts["test"], name=path.name)


def random_split(relations: Iterable[str], m: int, seed: int, n_eval: int = 0) -> Split:
    """Seeded random split for datasets without split files: m test, n_eval eval, the rest train."""
    rels = sorted(set(relations))
    if m < 1 or n_eval < 0 or m + n_eval >= len(rels):
        raise ValueError(f"m={m} test + {n_eval} eval relations leave no training relation among {len(rels)}")
    random.Random(seed).shuffle(rels)
    return Split(tuple(rels[m + n_eval :]), tuple(rels[m : m + n_eval]), tuple(rels[:m]), name=f"random_{m}_{seed}")


def check_relations(instances: Sequence[Instance], descriptions: dict[str, str], source: str = "data") -> None:
    """Raise DataError if an instance's relation has no description."""
    missing = sorted({i.relation for i in instances if i.relation is not None} - set(descriptions))
    if missing:
        raise DataError(f"{source}: relations without a description: {', '.join(missing[:10])}")


def select(instances: Sequence[Instance], relations: Iterable[str], source: str = "split") -> list[Instance]:
    """Keep the instances of the given relations; every relation must occur in the data."""
    wanted = set(relations)
    present = {i.relation for i in instances}
    unknown = sorted(wanted - present)
    if unknown:
        raise DataError(f"{source}: relations not found in the data: {', '.join(unknown[:10])}")
    return [i for i in instances if i.relation in wanted]


def by_relation(instances: Iterable[Instance]) -> dict[str | None, list[Instance]]:
    """{relation: its instances}, in first-seen order of the relations and input order within each."""
    groups: dict[str | None, list[Instance]] = {}
    for inst in instances:
        groups.setdefault(inst.relation, []).append(inst)
    return groups


def cap_per_relation(instances: Sequence[Instance], cap: int | None, seed: int = 0) -> list[Instance]:
    """At most `cap` instances per relation, chosen at random with a fixed seed."""
    if not cap:
        return list(instances)
    by_rel = by_relation(instances)
    rng = random.Random(seed)
    out = []
    for rel in sorted(by_rel, key=str):
        group = by_rel[rel]
        out.extend(group if len(group) <= cap else rng.sample(group, cap))
    return out


def one_per_pair(instances: Iterable[Instance]) -> list[Instance]:
    """`instances` with each (sentence, head, tail) once, by its first row: a multi-label file, or a sentence
    judged twice, labels a pair more than once, and an example stands for one relation."""
    seen: set = set()
    out = []
    for inst in instances:
        if inst.pair not in seen:
            seen.add(inst.pair)
            out.append(inst)
    return out


def draw_shots(labelled: Sequence[Instance], shots: int, seed: int = 0, exclude: Iterable[Instance] = ()) -> dict[str, list[Instance]]:
    """{relation: up to `shots` labelled instances}, drawn at random with a fixed seed, none of `exclude`.

    For few-shot evaluation: the examples must never be instances that are being scored, so any
    instance of `exclude` (the same tokens and spans, whatever its label) is never drawn; a pair
    that occurs more than once in `labelled` is drawn at most once (by its first label).
    """
    if shots < 0:
        raise ValueError(f"shots={shots}: give 0 or more examples per relation")
    if not shots:
        return {}
    if any(inst.relation is None for inst in labelled):
        raise DataError("an example has no relation label")
    barred = {i.pair for i in exclude}
    by_rel: dict[str, list[Instance]] = {}
    for inst in one_per_pair(i for i in labelled if i.pair not in barred):
        by_rel.setdefault(inst.relation, []).append(inst)
    rng = random.Random(seed)
    return {rel: rng.sample(group, min(shots, len(group))) for rel, group in sorted(by_rel.items())}
