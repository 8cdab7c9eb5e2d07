"""Entity markers, tokenization, truncation around the entities, collation, raw-text spans."""

from __future__ import annotations

import pytest
import torch

from emma.data import DataError, Instance
from emma.features import (
    MARKERS,
    EntityWithinOther,
    add_markers,
    collate_pairs,
    collate_single,
    encode_descriptions,
    encode_instances,
    find_entity,
    instance_from_text,
    marked_words,
    init_marker_embeddings,
    marker_ids,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder_dir):
    from emma.checkpoint import load_tokenizer

    return load_tokenizer(tiny_encoder_dir)


# ----------------------------------------------------------------------------- markers


def test_markers_are_single_special_token_ids(tokenizer):
    ids = marker_ids(tokenizer)
    assert len(set(ids)) == 4 and tokenizer.unk_token_id not in ids
    assert all(i >= 30522 for i in ids)  # new rows past the base vocabulary, not reused words
    for marker, i in zip(MARKERS, ids):
        assert tokenizer.tokenize(f"x {marker} y") == ["x", marker, "y"]  # never split or lower-cased
        assert tokenizer(marker, add_special_tokens=False)["input_ids"] == [i]
    n = len(tokenizer)
    add_markers(tokenizer)
    assert len(tokenizer) == n and marker_ids(tokenizer) == ids  # idempotent


def test_markers_start_from_distinct_pretrained_embeddings(tokenizer, tiny_encoder_dir):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_encoder_dir)
    encoder.resize_token_embeddings(len(tokenizer))
    weight = encoder.get_input_embeddings().weight
    h, hc, t, tc = marker_ids(tokenizer)
    init_marker_embeddings(encoder, tokenizer)
    at, hash_ = (tokenizer.convert_tokens_to_ids(x) for x in ("@", "#"))
    assert torch.equal(weight[h], weight[at]) and torch.equal(weight[hc], weight[at])
    assert torch.equal(weight[t], weight[hash_]) and torch.equal(weight[tc], weight[hash_])
    assert not torch.allclose(weight[h], weight[t])  # head and tail are told apart from the first step


def test_marker_ids_requires_markers(tiny_encoder_dir):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    with pytest.raises(ValueError, match="lacks the entity markers"):
        marker_ids(plain)


@pytest.mark.parametrize(
    "head, tail, expected",
    [
        ((0, 1), (3, 4), "[E_h] a [/E_h] b c [E_t] d [/E_t]"),
        ((3, 4), (0, 2), "[E_t] a b [/E_t] c [E_h] d [/E_h]"),
        # adjacent: the first entity closes before the second opens
        ((0, 2), (2, 3), "[E_h] a b [/E_h] [E_t] c [/E_t] d"),
        ((2, 3), (0, 2), "[E_t] a b [/E_t] [E_h] c [/E_h] d"),
        # nested: the inner entity's markers sit inside the outer's, also when a boundary is shared
        ((1, 2), (0, 4), "[E_t] a [E_h] b [/E_h] c d [/E_t]"),
        ((0, 1), (0, 3), "[E_t] [E_h] a [/E_h] b c [/E_t] d"),
        ((0, 3), (0, 1), "[E_h] [E_t] a [/E_t] b c [/E_h] d"),
        ((0, 3), (2, 3), "[E_h] a b [E_t] c [/E_t] [/E_h] d"),
        ((2, 4), (0, 4), "[E_t] a b [E_h] c d [/E_h] [/E_t]"),
    ],
)
def test_marked_words(head, tail, expected):
    assert " ".join(marked_words(Instance(("a", "b", "c", "d"), head, tail))) == expected


def test_encode_instances_places_markers(tokenizer):
    inst = Instance(("Apple", "was", "founded", "by", "Steve", "Jobs", "."), (0, 1), (4, 6))
    enc = encode_instances(tokenizer, [inst], max_length=64)
    ids = enc.ids[0]
    h_open, h_close, t_open, t_close = marker_ids(tokenizer)
    assert [ids.count(m) for m in (h_open, h_close, t_open, t_close)] == [1, 1, 1, 1]
    assert ids[enc.head_marker[0]] == h_open and ids[enc.tail_marker[0]] == t_open
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "[E_h]", "apple", "[/E_h]", "was", "founded", "by", "[E_t]", "steve", "jobs", "[/E_t]", ".",
    ]
    assert tokenizer.cls_token_id not in ids and tokenizer.sep_token_id not in ids  # added at collation


def test_truncation_keeps_both_entities_far_apart(tokenizer):
    words = [f"w{i}" for i in range(300)]
    words[10], words[11], words[280] = "Steve", "Jobs", "Apple"
    inst = Instance(tuple(words), (10, 12), (280, 281))
    max_length = 24
    full = encode_instances(tokenizer, [inst], max_length=1000).ids[0]
    enc = encode_instances(tokenizer, [inst], max_length=max_length)
    ids = enc.ids[0]
    assert len(ids) == max_length - 2  # [CLS] and [SEP] fill the rest
    assert len(full) > 3 * max_length
    tokens = tokenizer.convert_ids_to_tokens(ids)
    for marker in MARKERS:
        assert tokens.count(marker) == 1
    # each entity sits whole between its markers, with its neighbours
    h, t = tokens.index("[E_h]"), tokens.index("[E_t]")
    assert tokens[h : tokens.index("[/E_h]") + 1] == ["[E_h]", "steve", "jobs", "[/E_h]"]
    assert tokens[t : tokens.index("[/E_t]") + 1] == ["[E_t]", "apple", "[/E_t]"]
    assert enc.head_marker[0] == h and enc.tail_marker[0] == t
    # the kept ids are a subsequence of the full ids, in their original order
    it = iter(full)
    assert all(any(x == y for y in it) for x in ids)


def test_truncation_keeps_end_markers_of_long_entities(tokenizer):
    words = ["x"] * 100
    inst = Instance(tuple(words), (0, 60), (70, 100))  # entities longer than the window
    ids = encode_instances(tokenizer, [inst], max_length=16).ids[0]
    assert len(ids) == 14
    assert all(ids.count(m) == 1 for m in marker_ids(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens.index("[E_h]") < tokens.index("[/E_h]") < tokens.index("[E_t]") < tokens.index("[/E_t]")


def test_short_sentences_are_not_cut(tokenizer, toy_instances):
    enc = encode_instances(tokenizer, toy_instances, max_length=64)
    for inst, ids in zip(toy_instances, enc.ids):
        words = marked_words(inst)
        assert ids == tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]


def test_max_length_too_short(tokenizer, toy_instances):
    with pytest.raises(ValueError, match="max_length=7"):
        encode_instances(tokenizer, toy_instances[:1], max_length=7)


def test_encode_descriptions(tokenizer):
    enc = encode_descriptions(tokenizer, ["founded by: founder", "a " * 50], max_length=10)
    assert enc.tokens[0] == ["founded", "by", ":", "founder"]
    assert enc.ids[0] == tokenizer.convert_tokens_to_ids(enc.tokens[0])
    assert len(enc.ids[1]) == 8  # cut at the end, room left for [CLS] and [SEP]
    with pytest.raises(ValueError, match="empty"):
        encode_descriptions(tokenizer, ["ok", "  "], max_length=10)


# ----------------------------------------------------------------------------- collation


def test_collate_single_masks(tokenizer):
    batch = collate_single(tokenizer, [[5, 6, 7], [8]])
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[cls, 5, 6, 7, sep], [cls, 8, sep, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["content_mask"].tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]]


def test_collate_pairs_segments(tokenizer):
    h, hc, t, tc = marker_ids(tokenizer)
    first_a, first_b = [t, 5, tc, h, 6, hc], [h, 7, hc, t, tc]
    batch = collate_pairs(tokenizer, [first_a, first_b], [[8], [9, 10]])
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[cls, *first_a, sep, 8, sep], [cls, *first_b, sep, 9, 10, sep]]
    assert batch["token_type_ids"].tolist() == [[0] * 8 + [1, 1], [0] * 7 + [1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1] * 10, [1] * 10]
    assert batch["input_ids"].dtype == torch.long
    # The classifier reads the markers' states in the pair: [CLS] shifts them by one.
    assert batch["head_marker"].tolist() == [4, 1] and batch["tail_marker"].tolist() == [1, 4]


# ----------------------------------------------------------------------------- raw text


def test_instance_from_text_basic():
    text = "Apple was founded by Steve Jobs."
    inst = instance_from_text(text, (0, 5), (21, 31), "founded by")
    assert inst.tokens == ("Apple", "was", "founded", "by", "Steve", "Jobs", ".")
    assert inst.head == (0, 1) and inst.tail == (4, 6) and inst.relation == "founded by"


def test_instance_from_text_entity_inside_hyphenated_word():
    text = "The pro-Beijing camp won in Hong Kong."
    inst = instance_from_text(text, (8, 15), (28, 37))
    assert inst.head_text == "Beijing" and inst.tail_text == "Hong Kong"
    assert inst.tokens[:5] == ("The", "pro", "-", "Beijing", "camp")
    # and a boundary in the middle of a word splits the word
    inst = instance_from_text("Xerox-PARC hired Alan Kay", (0, 5), (17, 25))
    assert inst.head_text == "Xerox" and inst.tokens[1:3] == ("-", "PARC")


def test_instance_from_text_trims_selected_whitespace():
    text = "Apple was founded by Steve Jobs."
    assert instance_from_text(text, (0, 6), (20, 31)) == instance_from_text(text, (0, 5), (21, 31))


def test_instance_from_text_adjacent_entities():
    inst = instance_from_text("SteveJobs", (0, 5), (5, 9))
    assert inst.tokens == ("Steve", "Jobs") and inst.head == (0, 1) and inst.tail == (1, 2)


@pytest.mark.parametrize(
    "text, head, tail, message",
    [
        ("Apple was founded by Steve Jobs.", (0, 5), (3, 10), "overlap"),
        ("Apple was founded by Steve Jobs.", (0, 31), (21, 31), "overlap"),  # nested
        ("Apple was founded by Steve Jobs.", (0, 5), (21, 40), "tail entity \\[21, 40\\] is not inside the sentence of 32"),
        ("Apple was founded by Steve Jobs.", (-1, 5), (21, 31), "head entity"),
        ("Apple was founded by Steve Jobs.", (5, 5), (21, 31), "head entity"),
        ("Apple was founded by Steve Jobs.", (5, 6), (21, 31), "head entity is blank"),
        ("   ", (0, 1), (1, 2), "empty"),
    ],
)
def test_instance_from_text_errors(text, head, tail, message):
    with pytest.raises(DataError, match=message):
        instance_from_text(text, head, tail)


def test_find_entity():
    text = "Jobs met Steve Jobs at Apple; jobs were scarce."
    assert find_entity(text, "apple") == (23, 28)
    assert find_entity(text, "  Steve Jobs ") == (9, 19)
    first = find_entity(text, "Jobs")
    assert first == (0, 4)
    assert find_entity(text, "jobs", avoid=first) == (15, 19)  # the next occurrence not overlapping
    assert find_entity(text, "jobs", avoid=(0, 20)) == (30, 34)
    with pytest.raises(DataError, match="'Microsoft' does not occur") as absent:
        find_entity(text, "Microsoft")
    assert not isinstance(absent.value, EntityWithinOther)
    with pytest.raises(EntityWithinOther, match="'Apple' occurs only within the other entity"):
        find_entity("Apple", "Apple", avoid=(0, 5))
    with pytest.raises(DataError, match="empty"):
        find_entity(text, " ")


def test_find_entity_offsets_survive_case_folding():
    text = "İstanbul is in Turkey."  # "İ".lower() is two characters
    assert find_entity(text, "turkey") == (15, 21)
    assert find_entity(text, "İSTANBUL") == (0, 8)
    assert find_entity("a.b a+b", "A+B") == (4, 7)  # the entity is literal text, not a pattern


def test_find_entity_feeds_instance_from_text():
    text = "Marie Curie was born in Warsaw."
    head = find_entity(text, "marie curie")
    tail = find_entity(text, "Warsaw", avoid=head)
    inst = instance_from_text(text, head, tail)
    assert (inst.head_text, inst.tail_text) == ("Marie Curie", "Warsaw")
