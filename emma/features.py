"""Turning instances and descriptions into encoder inputs.

EMMA (section 3.2) marks the entities in the sentence with special tokens
``[E_h] head [/E_h]`` and ``[E_t] tail [/E_t]`` and reads the instance vector at the start
markers. The markers are added to the tokenizer as special tokens (never punctuation stand-ins),
so each is one id that the word-piece model never splits or lower-cases.

Sentences longer than the window are cut around the entities, not from the end: the kept
tokens are the markers plus the tokens closest to a start marker, in their original order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .data import DataError, Instance, Span, spans_overlap

MARKERS = ("[E_h]", "[/E_h]", "[E_t]", "[/E_t]")
# Text whose embedding a new marker starts from. transformers gives added tokens the mean embedding
# (plus 1e-9-scaled noise), so all four markers would start identical, and at a fine-tuning lr they
# stay within ~0.03 of each other (measured after 564 steps; distinct tokens are ~1.5 apart): head
# and tail could then only be told apart by word order. "@ head @" / "# tail #" are the pretrained
# punctuation markers of Zhou & Chen (2022), "An Improved Baseline for Sentence-level RE".
MARKER_INIT = {"[E_h]": "@", "[/E_h]": "@", "[E_t]": "#", "[/E_t]": "#"}


def sentence_window(config) -> int:
    """Word pieces of a sentence the encoder reads: `config.max_length` less [CLS], [SEP] and the four markers."""
    return config.max_length - 2 - len(MARKERS)


def description_window(config) -> int:
    """Word pieces of a description the encoder reads: `config.max_description_length` less [CLS] and [SEP]."""
    return config.max_description_length - 2


@dataclass
class EncodedInstances:
    """Token ids of marked sentences, without [CLS]/[SEP] (added at collation)."""

    ids: list[list[int]]
    head_marker: list[int]  # index of [E_h] in ids[i]
    tail_marker: list[int]  # index of [E_t] in ids[i]


@dataclass
class EncodedDescriptions:
    """Token ids of descriptions, without [CLS]/[SEP]; `tokens` are the word pieces, for display."""

    ids: list[list[int]]
    tokens: list[list[str]]


def add_markers(tokenizer) -> None:
    """Register the four entity markers as special tokens (idempotent)."""
    missing = [m for m in MARKERS if m not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})


def init_marker_embeddings(encoder, tokenizer) -> None:
    """Give each marker's embedding row the embedding of its MARKER_INIT text (first word piece)."""
    weight = encoder.get_input_embeddings().weight
    with torch.no_grad():
        for marker_id, marker in zip(marker_ids(tokenizer), MARKERS):
            source = tokenizer.encode(MARKER_INIT[marker], add_special_tokens=False)[0]
            weight[marker_id] = weight[source]


def marker_ids(tokenizer) -> tuple[int, int, int, int]:
    ids = tokenizer.convert_tokens_to_ids(list(MARKERS))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks the entity markers {MARKERS}; call add_markers first")
    return tuple(ids)


def marked_words(inst: Instance) -> list[str]:
    """The sentence's words with the four markers inserted around the entity spans."""
    inserts: dict[int, list[tuple]] = {}
    (hs, he), (ts, te) = inst.head, inst.tail
    # At one position closing markers go before opening ones (adjacent spans do not cross), the span
    # that started later closes first and the span that ends later opens first (nested spans nest).
    for pos, marker, order in ((hs, "[E_h]", (1, -he)), (he, "[/E_h]", (0, -hs)), (ts, "[E_t]", (1, -te)), (te, "[/E_t]", (0, -ts))):
        inserts.setdefault(pos, []).append((order, marker))
    words: list[str] = []
    for i in range(len(inst.tokens) + 1):
        words.extend(m for _, m in sorted(inserts.get(i, [])))
        if i < len(inst.tokens):
            words.append(inst.tokens[i])
    return words


def _keep_around(ids: list[int], anchors: Sequence[int], forced: Sequence[int], budget: int) -> list[int]:
    """Indices of at most `budget` ids: the forced ones, then the ones nearest an anchor; original order."""
    if len(ids) <= budget:
        return list(range(len(ids)))
    forced_set = set(forced)
    others = sorted(
        (i for i in range(len(ids)) if i not in forced_set),
        key=lambda i: (min(abs(i - a) for a in anchors), i),
    )
    keep = forced_set | set(others[: max(0, budget - len(forced_set))])
    return sorted(keep)


def encode_instances(tokenizer, instances: Sequence[Instance], max_length: int) -> EncodedInstances:
    """Tokenize marked sentences, cutting each to `max_length` (counting [CLS] and [SEP]) around its entities."""
    if max_length < 8:
        raise ValueError(f"max_length={max_length} is too short to hold the four entity markers")
    h_open, h_close, t_open, t_close = marker_ids(tokenizer)
    words = [marked_words(inst) for inst in instances]
    batch = tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] if words else []
    out = EncodedInstances([], [], [])
    for ids in batch:
        pos = {tok: i for i, tok in enumerate(ids) if tok in (h_open, h_close, t_open, t_close)}
        assert len(pos) == 4, "each entity marker must be one token exactly once"
        kept = _keep_around(ids, (pos[h_open], pos[t_open]), list(pos.values()), max_length - 2)
        ids = [ids[i] for i in kept]
        out.ids.append(ids)
        out.head_marker.append(ids.index(h_open))
        out.tail_marker.append(ids.index(t_open))
    return out


def encode_descriptions(tokenizer, texts: Sequence[str], max_length: int) -> EncodedDescriptions:
    """Tokenize relation descriptions, truncated at the end to `max_length` (counting [CLS] and [SEP])."""
    for t in texts:
        if not t or not t.strip():
            raise ValueError("a relation description is empty")
    batch = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    ids = [row[: max_length - 2] for row in batch]
    return EncodedDescriptions(ids, [tokenizer.convert_ids_to_tokens(row) for row in ids])


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _marker_positions(tokenizer, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Positions of [E_h] and [E_t] once each row is collated behind [CLS] (hence the +1, in this one place)."""
    h_open, _, t_open, _ = marker_ids(tokenizer)
    return {"head_marker": torch.tensor([r.index(h_open) + 1 for r in rows], dtype=torch.long),
            "tail_marker": torch.tensor([r.index(t_open) + 1 for r in rows], dtype=torch.long)}


def collate_instances(tokenizer, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Marked sentences (`EncodedInstances.ids` rows) → the recall encoder's instance inputs.

    Returns `input_ids`, `attention_mask` (B, L) and `head_marker`, `tail_marker` (B,): the
    positions of [E_h] and [E_t] in the collated rows, as `RecallEncoder.encode_instances` takes them.
    """
    batch = collate_single(tokenizer, rows)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **_marker_positions(tokenizer, rows)}


def collate_single(tokenizer, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """[CLS] ids [SEP], padded to the longest row. `content_mask` marks the real (non-special) tokens."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, mask = _pad([[cls, *r, sep] for r in rows], tokenizer.pad_token_id)
    content = mask.clone()
    content[:, 0] = 0  # [CLS]
    lengths = mask.sum(1)
    content[torch.arange(len(rows)), lengths - 1] = 0  # [SEP]
    return {"input_ids": ids, "attention_mask": mask, "content_mask": content}


def collate_pairs(tokenizer, firsts: list[list[int]], seconds: list[list[int]]) -> dict[str, torch.Tensor]:
    """[CLS] first [SEP] second [SEP] with token type ids, padded: the cross-encoder's input.

    `firsts` are marked instances; `head_marker`/`tail_marker` give the positions of [E_h]/[E_t] in each pair.
    """
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = [[cls, *a, sep, *b, sep] for a, b in zip(firsts, seconds)]
    ids, mask = _pad(rows, tokenizer.pad_token_id)
    types = torch.zeros_like(ids)
    for i, a in enumerate(firsts):
        types[i, len(a) + 2 : len(rows[i])] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, **_marker_positions(tokenizer, firsts)}


# --------------------------------------------------------------------------- raw text

_WORD = re.compile(r"\w+|[^\w\s]")


def _words(text: str, offset: int) -> list[tuple[str, int]]:
    return [(m.group(), offset + m.start()) for m in _WORD.finditer(text)]


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Character span [start, end) of `text` without the whitespace at either end (empty when all blank)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def instance_from_text(text: str, head: Span, tail: Span, relation: str | None = None) -> Instance:
    """Build an `Instance` from raw text and character spans (end exclusive).

    The text is split into words and punctuation; entity boundaries always fall between words,
    even inside a hyphenated word. Raises DataError with a plain sentence for bad spans.
    """
    if not text or not text.strip():
        raise DataError("the sentence is empty")
    spans = {}
    for name, span in (("head", head), ("tail", tail)):
        s, e = int(span[0]), int(span[1])
        if not (0 <= s < e <= len(text)):
            raise DataError(f"the {name} entity {[s, e]} is not inside the sentence of {len(text)} characters")
        s, e = strip_span(text, s, e)  # whitespace the user may have selected with the entity
        if s == e:
            raise DataError(f"the {name} entity is blank")
        spans[name] = (s, e)
    (hs, he), (ts, te) = spans["head"], spans["tail"]
    if spans_overlap((hs, he), (ts, te)):
        raise DataError("the head and tail entities overlap; mark two separate spans")
    cuts = sorted({0, hs, he, ts, te, len(text)})
    tokens: list[str] = []
    token_spans: dict[str, list[int]] = {"head": [], "tail": []}
    for a, b in zip(cuts, cuts[1:]):
        start = len(tokens)
        tokens.extend(w for w, _ in _words(text[a:b], a))
        for name, (s, e) in spans.items():
            if (a, b) == (s, e):
                token_spans[name] = [start, len(tokens)]
    for name in ("head", "tail"):
        s, e = token_spans[name]
        if s == e:
            raise DataError(f"the {name} entity holds no word")
    return Instance(tuple(tokens), tuple(token_spans["head"]), tuple(token_spans["tail"]), relation)


class EntityWithinOther(DataError):
    """An entity string that occurs in the text only where it overlaps the other entity."""


def find_entity(text: str, entity: str, avoid: Span | None = None) -> Span:
    """Character span of the first occurrence of `entity` in `text` (case-insensitive), not overlapping `avoid`;
    `EntityWithinOther` where every occurrence overlaps it, `DataError` where there is none."""
    if not entity or not entity.strip():
        raise DataError("an entity is empty")
    # A case-insensitive regex, not str.lower(): lower() can change the length of a string ("İ"), which
    # would shift every offset after it.
    pattern = re.compile(re.escape(entity.strip()), re.IGNORECASE)
    match, overlapped = pattern.search(text), False
    while match:
        span = match.span()
        if avoid is None or not spans_overlap(span, avoid):
            return span
        overlapped = True
        match = pattern.search(text, match.start() + 1)
    if overlapped:
        raise EntityWithinOther(f"the entity {entity.strip()!r} occurs only within the other entity; mark two separate spans")
    raise DataError(f"the entity {entity.strip()!r} does not occur in the sentence")
