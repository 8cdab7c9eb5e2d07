"""Corpora to annotate: import instances from the formats annotation tools use, export judged ones back.

Annotation is a stream of sentences with an entity pair each (Prodigy, Label Studio, doccano and
INCEpTION all work this way); the workbench suggests a relation per pair and a person accepts or
corrects it. This module is the file side of that, with no model and no UI:

Import (`read_corpus`, `parse_corpus`), one record per line of JSONL or per element of a JSON list,
the format detected per record:
- token spans: ``{"tokens", "head": [s, e], "tail": [s, e], "relation"?}`` (what `read_instances` reads),
  FewRel lines ``{"tokens", "h": [name, id, [[idx, ...]]], "t": ...}``, a FewRel file
  ``{relation: [records]}``, RE-Matching ``{"token", "h": {"pos"}, "t": {"pos"}}``;
- character spans: ``{"text", "head": [s, e], "tail": [s, e], "relation"?}`` (end exclusive);
- Label Studio tasks (JSON export): ``{"data": {"text"}, "annotations": [{"result": [...]}]}`` whose
  result holds two ``labels`` regions (``value.start/end``) and a ``relation`` item (``from_id`` →
  ``to_id``, ``labels``); one record per relation, or one unlabelled record for two regions without one;
- doccano relation JSONL: ``{"text", "entities": [{"id", "start_offset", "end_offset"}], "relations":
  [{"from_id", "to_id", "type"}]}``, likewise.

A bad record never stops the import: it is reported (`BadRecord`: line, reason) and the rest read.

Export (`write_corpus`): the project's FewRel-style JSONL (``tokens``/``h``/``t`` plus ``head``/
``tail``/``relation``, read by ``python -m emma train``), Label Studio JSON and doccano JSONL; each
reads back with the same content. A negative ("none of these": no relation in force holds) is
``"relation": null, "negative": true`` in JSONL (training skips it) and the label `NO_RELATION` in
Label Studio and doccano, which need a label string; that name is therefore reserved.

Agreement between two annotators: `cohen_kappa` (Cohen 1960) overall and per relation.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Iterator, Sequence

from .data import DataError, Instance, Span
from .features import instance_from_text

NO_RELATION = "no_relation"
FORMATS = ("fewrel", "labelstudio", "doccano")
HEAD_LABELS, TAIL_LABELS = {"head", "subject", "subj", "e1"}, {"tail", "object", "obj", "e2"}


@dataclass(frozen=True)
class Record:
    """One instance to annotate, or annotated.

    Args:
        instance: tokens, head and tail token spans; `relation` is the file's (or judged) relation, or None.
        negative: "none of these": no relation in force holds (then `instance.relation` is None).
        line: the line of the file it came from (a JSON list: the line its element starts on).
        text, head_chars, tail_chars: the original text and character spans when the file had them.
    """

    instance: Instance
    negative: bool = False
    line: int | None = None
    text: str | None = None
    head_chars: Span | None = None
    tail_chars: Span | None = None

    @property
    def label(self) -> str | None:
        """The relation, `NO_RELATION` for a negative, None when unlabelled."""
        return NO_RELATION if self.negative else self.instance.relation

    def as_text(self) -> tuple[str, Span, Span]:
        """Text and character spans: the original ones, else the tokens joined by spaces."""
        if self.text is not None and self.head_chars and self.tail_chars:
            return self.text, tuple(self.head_chars), tuple(self.tail_chars)
        return self.instance.as_text()

    def content(self) -> tuple:
        """What a round trip through any format keeps: tokens, spans and the label."""
        return self.instance.tokens, self.instance.head, self.instance.tail, self.label


@dataclass(frozen=True)
class BadRecord:
    """A record that was not imported: where it is and why, in one sentence."""

    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclass
class Corpus:
    """The result of an import: good records in file order, bad ones with their reasons, the format seen."""

    records: list[Record] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)

    @property
    def format(self) -> str:
        """The most frequent record format ("" when nothing was read)."""
        return self.formats.most_common(1)[0][0] if self.formats else ""


# --------------------------------------------------------------------------- import


def read_corpus(path: str | Path, relations: Collection[str] | None = None, max_records: int | None = None) -> Corpus:
    """Read a file of instances in any supported format (gzip by file name); see the module docstring.

    Args:
        relations: when given, a labelled record whose relation is not among them is bad (`NO_RELATION` is always allowed).
        max_records: read at most this many good records; the rest of the file is reported as one bad record.

    Raises:
        ValueError: the file is missing, empty or not text.

    Example:
        >>> corpus = read_corpus("sentences.jsonl")
        >>> len(corpus.records), [str(b) for b in corpus.bad]
        (2, ['line 3: the head entity [40, 45] is not inside the sentence of 30 characters'])
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"the file {path.name} is not UTF-8 text") from None
    return parse_corpus(text, relations, max_records, name=path.name)


def parse_corpus(text: str, relations: Collection[str] | None = None, max_records: int | None = None, name: str = "the file") -> Corpus:
    """`read_corpus` over the file's text."""
    if not text.strip():
        raise ValueError(f"{name} is empty")
    corpus = Corpus()
    allowed = None if relations is None else set(relations) | {NO_RELATION}
    for line, value in _values(text, corpus):
        if max_records is not None and len(corpus.records) >= max_records:
            corpus.bad.append(BadRecord(line, f"not read: at most {max_records} instances per import"))
            break
        try:
            kind, records = _records(value, line)
        except (DataError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            corpus.bad.append(BadRecord(line, _reason(e)))
            continue
        corpus.formats[kind] += 1
        for record in records:
            if allowed is not None and record.label is not None and record.label not in allowed:
                corpus.bad.append(BadRecord(line, f"the relation {record.label!r} is not one of the relations in force"))
            else:
                corpus.records.append(record)
    return corpus


def _reason(e: Exception) -> str:
    if isinstance(e, DataError):
        return str(e)
    if isinstance(e, KeyError):
        return f"the record has no {e.args[0]!r} field"
    return f"malformed record ({e})"


def _values(text: str, corpus: Corpus) -> Iterator[tuple[int | None, object]]:
    """(line, JSON value) per record: JSONL lines, the elements of a JSON list, the records of a FewRel dict."""
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    if stripped.startswith("["):
        try:
            yield from _array_elements(text, offset)
            return
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep for the parser
            pass  # not one JSON list: read it line by line
    if stripped.startswith("{"):  # one JSON object (FewRel's dict, often on one line, or one record), else JSONL
        try:
            whole = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            whole = None
        values = list(whole.values()) if isinstance(whole, dict) else []
        if any(values) and all(isinstance(v, list) and all(isinstance(x, dict) for x in v) for v in values):
            for relation, items in whole.items():  # FewRel: {relation: [records]}; not a record's own lists of tokens
                for item in items:
                    yield None, {**item, "relation": relation}
            return
        if isinstance(whole, dict):
            yield text[:offset].count("\n") + 1, whole
            return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            corpus.bad.append(BadRecord(number, f"not JSON ({e.msg})"))
        except RecursionError:
            corpus.bad.append(BadRecord(number, "JSON nested too deeply to read"))


def _array_elements(text: str, start: int) -> Iterator[tuple[int, object]]:
    """The elements of a JSON list with the line each starts on (parsed whole first, so a broken list raises early)."""
    json.loads(text)
    decoder = json.JSONDecoder()
    i, line, seen = start + 1, 1, 0
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        line += text.count("\n", seen, i)
        seen = i
        value, i = decoder.raw_decode(text, i)
        yield line, value


def _records(value, line: int | None) -> tuple[str, list[Record]]:
    """(format name, records) of one JSON value."""
    if not isinstance(value, dict):
        raise DataError("expected a JSON object")
    if "data" in value and ("annotations" in value or "predictions" in value):
        return "labelstudio", _labelstudio(value, line)
    if "text" in value and "entities" in value:
        return "doccano", _doccano(value, line)
    if "text" in value:
        return "text", [_text_record(value["text"], value["head"], value["tail"], _label(value), line, value.get("tokens"))]
    if "triplets" in value:
        return "relationprompt", [_token_record(t["tokens"], _run(t["head"]), _run(t["tail"]), t.get("label_id") or t.get("label"),
                                                False, line) for t in value["triplets"]]
    if "token" in value:
        return "rematching", [_token_record(value["token"], value["h"]["pos"], value["t"]["pos"], value.get("relation"), False, line)]
    if "head" in value and "tail" in value:
        return "tokens", [_token_record(value["tokens"], value["head"], value["tail"], *_label(value), line)]
    if "h" in value and "t" in value:
        return "fewrel", [_token_record(value["tokens"], _run(value["h"][2][0]), _run(value["t"][2][0]), *_label(value), line)]
    raise DataError("unrecognised record: expected tokens with head and tail, text with head and tail, "
                    "a Label Studio task or a doccano record")


def _label(value: dict) -> tuple[str | None, bool]:
    """(relation, negative) of a JSONL record: `"negative": true` or the relation `NO_RELATION` is a negative."""
    relation = value.get("relation")
    if value.get("negative") is True or relation == NO_RELATION:
        return None, True
    if relation is not None and (not isinstance(relation, str) or not relation.strip()):
        raise DataError(f"the relation {relation!r} should be a non-empty string")
    return relation, False


def _run(indices: Sequence[int]) -> Span:
    """FewRel-style token indices of one mention (contiguous) as a span."""
    idx = sorted(int(i) for i in indices)
    if not idx or idx != list(range(idx[0], idx[-1] + 1)):
        raise DataError(f"the entity token indices {idx} are not one contiguous run")
    return idx[0], idx[-1] + 1


def _pair(span) -> Span:
    if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(isinstance(v, int) for v in span):
        raise DataError(f"a span should be [start, end] (two integers), not {span!r}")
    return span[0], span[1]


def _token_record(tokens, head, tail, relation, negative: bool, line) -> Record:
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError("'tokens' should be a list of strings")
    return Record(Instance(tuple(tokens), _pair(head), _pair(tail), relation), negative, line)


def _text_record(text, head, tail, label: tuple[str | None, bool], line, tokens=None) -> Record:
    """A record from text and character spans; our own exports carry their tokens, so a round trip keeps them."""
    if not isinstance(text, str):
        raise DataError("'text' should be a string")
    head, tail = _pair(head), _pair(tail)
    relation, negative = label
    instance = _on_tokens(text, head, tail, tokens, relation) or instance_from_text(text, head, tail, relation)
    return Record(instance, negative, line, text, head, tail)


def _on_tokens(text: str, head: Span, tail: Span, tokens, relation) -> Instance | None:
    """The instance over `tokens` when they are the text's words joined by spaces and both spans fall on word edges."""
    if not isinstance(tokens, list) or " ".join(map(str, tokens)) != text:
        return None
    starts, ends, pos = {}, {}, 0
    for i, token in enumerate(tokens):
        starts[pos], ends[pos + len(token)] = i, i + 1
        pos += len(token) + 1
    try:
        return Instance(tuple(tokens), (starts[head[0]], ends[head[1]]), (starts[tail[0]], ends[tail[1]]), relation)
    except KeyError:
        return None


def _spans_and_relations(regions: dict, relations: list[tuple[object, object, list]], text: str, line, tokens) -> list[Record]:
    """Records of a text with labelled regions {id: (start, end, label)} and relations (from, to, labels)."""
    out = []
    for source, target, labels in relations:
        if source not in regions or target not in regions:
            raise DataError(f"a relation refers to a region that is not in the record ({source!r} → {target!r})")
        labels = [str(v) for v in labels or []]
        if len(labels) > 1:
            raise DataError(f"a relation has {len(labels)} labels ({', '.join(labels)}); give it one")
        label = labels[0] if labels else None
        out.append(_text_record(text, regions[source][:2], regions[target][:2], (None, True) if label == NO_RELATION else (label, False),
                                line, tokens))
    if not relations:
        if len(regions) != 2:
            raise DataError(f"the record marks {len(regions)} regions and no relation; mark exactly two, or a relation")
        first, second = sorted(regions.values(), key=lambda r: (str(r[2]).lower() in TAIL_LABELS, r[0]))
        out.append(_text_record(text, first[:2], second[:2], (None, False), line, tokens))
    return out


def _labelstudio(task: dict, line) -> list[Record]:
    data = task["data"]
    text = data["text"]
    sets = [a.get("result") or [] for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not sets:
        sets = [p.get("result") or [] for p in task.get("predictions") or []]
    if not sets:
        raise DataError("the task has no annotation")
    result = sets[0]  # the first annotation (an export of several annotators' work lists each)
    regions, relations = {}, []
    for item in result:
        if item.get("type") == "relation":
            relations.append((item["from_id"], item["to_id"], item.get("labels")))
        elif isinstance(item.get("value"), dict) and "start" in item["value"]:
            value = item["value"]
            kinds = value.get("labels") or value.get("hypertextlabels") or [""]
            regions[item["id"]] = (value["start"], value["end"], kinds[0])
    return _spans_and_relations(regions, relations, text, line, data.get("tokens"))


def _doccano(record: dict, line) -> list[Record]:
    regions = {e["id"]: (e["start_offset"], e["end_offset"], e.get("label", "")) for e in record["entities"]}
    relations = [(r["from_id"], r["to_id"], [r["type"]] if r.get("type") is not None else []) for r in record.get("relations") or []]
    return _spans_and_relations(regions, relations, record["text"], line, record.get("tokens"))


# --------------------------------------------------------------------------- export


def fewrel_line(record: Record) -> dict:
    """The project's FewRel-style JSONL record: FewRel's tokens/h/t plus head/tail/relation (and `negative`)."""
    inst = record.instance
    out = {
        "tokens": list(inst.tokens),
        "h": [inst.head_text, "", [list(range(*inst.head))]],
        "t": [inst.tail_text, "", [list(range(*inst.tail))]],
        "head": list(inst.head),
        "tail": list(inst.tail),
        "relation": inst.relation,
    }
    if record.negative:
        out["negative"] = True
    return out


def labelstudio_task(record: Record, task_id: int) -> dict:
    """A Label Studio task with one annotation: Head and Tail regions and, when labelled, their relation."""
    text, head, tail = record.as_text()
    result = [
        {"id": f"h{task_id}", "from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": head[0], "end": head[1], "text": text[head[0] : head[1]], "labels": ["Head"]}},
        {"id": f"t{task_id}", "from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": tail[0], "end": tail[1], "text": text[tail[0] : tail[1]], "labels": ["Tail"]}},
    ]
    if record.label is not None:
        result.append({"from_id": f"h{task_id}", "to_id": f"t{task_id}", "type": "relation", "direction": "right",
                       "labels": [record.label]})
    return {"id": task_id, "data": {"text": text, "tokens": list(record.instance.tokens)}, "annotations": [{"result": result}]}


def doccano_line(record: Record, record_id: int) -> dict:
    """A doccano relation record: two entities (HEAD, TAIL) and, when labelled, one relation between them."""
    text, head, tail = record.as_text()
    entities = [{"id": 2 * record_id, "label": "HEAD", "start_offset": head[0], "end_offset": head[1]},
                {"id": 2 * record_id + 1, "label": "TAIL", "start_offset": tail[0], "end_offset": tail[1]}]
    relations = ([{"id": record_id, "from_id": 2 * record_id, "to_id": 2 * record_id + 1, "type": record.label}]
                 if record.label is not None else [])
    return {"id": record_id, "text": text, "tokens": list(record.instance.tokens), "entities": entities, "relations": relations}


def dumps_corpus(records: Iterable[Record], fmt: str) -> str:
    """The records as the text of a file in `fmt` (one of `FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: use one of {', '.join(FORMATS)}")
    records = list(records)
    if fmt == "labelstudio":
        return json.dumps([labelstudio_task(r, i + 1) for i, r in enumerate(records)], ensure_ascii=False, indent=1) + "\n"
    rows = [fewrel_line(r) if fmt == "fewrel" else doccano_line(r, i + 1) for i, r in enumerate(records)]
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_corpus(records: Iterable[Record], path: str | Path, fmt: str) -> Path:
    """Write records as `fmt` ("fewrel": JSONL, "labelstudio": JSON, "doccano": JSONL) to `path`; returns it."""
    path = Path(path)
    path.write_text(dumps_corpus(records, fmt), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's κ of two annotators' labels on the same items: (p_o − p_e) / (1 − p_e).

    p_o is the share of items they label alike, p_e the agreement expected by chance from each one's
    label frequencies. None when undefined (no items, or both used one and the same label throughout).

    Example:
        >>> cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"])
        0.5
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}: the annotators must label the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def kappa_per_label(a: Sequence[str], b: Sequence[str]) -> dict[str, float | None]:
    """{label: κ of "this label or not"} for every label either annotator used (one against the rest)."""
    return {label: cohen_kappa([x == label for x in a], [y == label for y in b]) for label in sorted(set(a) | set(b))}
