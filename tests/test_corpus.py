"""Corpus import and export (emma.corpus): every format, bad records by line, round trips, Cohen's κ."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emma import read_instances
from emma.cli import cli
from emma.corpus import (
    FORMATS, NO_RELATION, Record, cohen_kappa, dumps_corpus, kappa_per_label, parse_corpus, read_corpus, write_corpus,
)
from emma.data import Instance

TEXT = "Apple was founded by Steve Jobs ."


def lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_token_and_character_formats_read_alike():
    corpus = parse_corpus(lines(
        {"tokens": TEXT.split(), "head": [0, 1], "tail": [4, 6], "relation": "founded by"},
        {"text": TEXT, "head": [0, 5], "tail": [21, 31], "relation": "founded by"},
        {"tokens": TEXT.split(), "h": ["Apple", "Q1", [[0]]], "t": ["Steve Jobs", "Q2", [[4, 5]]], "relation": "founded by"},
        {"token": TEXT.split(), "h": {"pos": [0, 1]}, "t": {"pos": [4, 6]}, "relation": "founded by"},
    ))
    assert corpus.bad == []
    assert {r.content() for r in corpus.records} == {(tuple(TEXT.split()), (0, 1), (4, 6), "founded by")}
    assert [r.line for r in corpus.records] == [1, 2, 3, 4]
    assert corpus.records[1].text == TEXT and corpus.records[1].head_chars == (0, 5)


def test_fewrel_dict_file(tmp_path):
    path = tmp_path / "fewrel.json"
    path.write_text(json.dumps({"P1": [{"tokens": ["a", "b", "c"], "h": ["a", "", [[0]]], "t": ["c", "", [[2]]]}],
                                "P2": [{"tokens": ["x", "y"], "h": ["x", "", [[0]]], "t": ["y", "", [[1]]]}]}, indent=1))
    corpus = read_corpus(path)
    assert [r.label for r in corpus.records] == ["P1", "P2"] and corpus.format == "fewrel"


LABEL_STUDIO = [{
    "id": 7, "data": {"text": TEXT},
    "annotations": [{"result": [
        {"id": "a", "type": "labels", "from_name": "label", "to_name": "text",
         "value": {"start": 0, "end": 5, "text": "Apple", "labels": ["ORG"]}},
        {"id": "b", "type": "labels", "from_name": "label", "to_name": "text",
         "value": {"start": 21, "end": 31, "text": "Steve Jobs", "labels": ["PER"]}},
        {"from_id": "a", "to_id": "b", "type": "relation", "direction": "right", "labels": ["founded by"]},
    ]}],
}, {
    "id": 8, "data": {"text": "Paris is in France ."},
    "annotations": [{"result": [
        {"id": "c", "type": "labels", "value": {"start": 12, "end": 18, "labels": ["Tail"]}},
        {"id": "d", "type": "labels", "value": {"start": 0, "end": 5, "labels": ["Head"]}},
    ]}],
}]


def test_label_studio_export_with_and_without_relation():
    text = json.dumps(LABEL_STUDIO, indent=2)
    corpus = parse_corpus(text)
    assert corpus.bad == [] and corpus.format == "labelstudio"
    first, second = corpus.records
    assert first.content() == (tuple(TEXT.split()), (0, 1), (4, 6), "founded by")
    # No relation: the Head-labelled region is the head, whatever the order; unlabelled.
    assert second.instance.head_text == "Paris" and second.instance.tail_text == "France" and second.label is None
    # The line each task starts on in the pretty-printed list.
    assert [first.line, second.line] == [i + 1 for i, line in enumerate(text.splitlines()) if line == "  {"]


def test_doccano_relation_record_and_negative():
    record = {"id": 1, "text": TEXT, "entities": [{"id": 10, "label": "ORG", "start_offset": 0, "end_offset": 5},
                                                  {"id": 11, "label": "PER", "start_offset": 21, "end_offset": 31}],
              "relations": [{"id": 3, "from_id": 11, "to_id": 10, "type": NO_RELATION}]}
    corpus = parse_corpus(lines(record))
    (r,) = corpus.records
    assert r.negative and r.label == NO_RELATION and r.instance.relation is None
    assert r.instance.head_text == "Steve Jobs"  # from_id is the head


@pytest.mark.parametrize("record, reason", [
    ({"text": TEXT, "head": [0, 5], "tail": [40, 45]}, "not inside the sentence"),
    ({"text": TEXT, "head": [0, 5], "tail": [0, 5]}, "overlap"),
    ({"text": TEXT, "head": [0, 9], "tail": [6, 12]}, "overlap"),
    ({"tokens": ["a", "b"], "head": [0, 1], "tail": [0, 1]}, "same span"),
    ({"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 5]}, "outside"),
    ({"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 2], "relation": "nonsense"}, "not one of the relations in force"),
    ({"tokens": ["a", "b"], "head": "0", "tail": [1, 2]}, "[start, end]"),
    ({"words": ["a"]}, "unrecognised record"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_records_are_listed_by_line_and_the_rest_imported(record, reason):
    good = {"tokens": ["a", "b", "c"], "head": [0, 1], "tail": [2, 3], "relation": "r"}
    corpus = parse_corpus(lines(good, record, good), relations={"r"})
    assert len(corpus.records) == 2
    (bad,) = corpus.bad
    assert bad.line == 2 and reason in bad.reason, bad.reason


def test_not_json_lines_and_empty_file():
    corpus = parse_corpus('{"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 2]}\nnot json at all\n')
    assert len(corpus.records) == 1 and str(corpus.bad[0]).startswith("line 2: not JSON")
    with pytest.raises(ValueError, match="empty"):
        parse_corpus("  \n")


def test_max_records_stops_with_a_reason():
    corpus = parse_corpus(lines(*[{"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 2]}] * 5), max_records=3)
    assert len(corpus.records) == 3 and "at most 3" in corpus.bad[0].reason and corpus.bad[0].line == 4


def records():
    return [
        Record(Instance(tuple(TEXT.split()), (0, 1), (4, 6), "founded by")),
        Record(Instance(("U.S.", "troops", "left", "Kabul", "."), (0, 2), (3, 4)), negative=True),
        Record(Instance(("Paris", "is", "in", "France"), (0, 1), (3, 4), None)),
        Record(Instance(("x", "y"), (1, 2), (0, 1), "capital of"), text="x  y", head_chars=(3, 4), tail_chars=(0, 1)),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_export_reads_back_with_the_same_content(fmt, tmp_path):
    path = write_corpus(records(), tmp_path / f"out.{fmt}", fmt)
    back = read_corpus(path)
    assert back.bad == []
    # "U.S." keeps its tokens although a tokenizer would split it: exports carry the tokens.
    assert [r.content() for r in back.records] == [r.content() for r in records()]


def test_fewrel_export_is_trainable_and_negatives_are_marked(tmp_path):
    path = write_corpus(records(), tmp_path / "out.jsonl", "fewrel")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[1]["relation"] is None and rows[1]["negative"] is True and "negative" not in rows[0]
    instances = read_instances(path)  # what `python -m emma train --data` reads
    assert [i.relation for i in instances] == ["founded by", None, None, "capital of"]


def test_train_skips_negatives_and_unlabelled_with_a_count(tmp_path, monkeypatch):
    import emma.train

    seen = {}
    monkeypatch.setattr(emma.train, "train", lambda config, instances, *a, **k: seen.setdefault("n", [i.relation for i in instances]))
    data = write_corpus(records(), tmp_path / "out.jsonl", "fewrel")
    descriptions = tmp_path / "d.json"
    descriptions.write_text(json.dumps({"founded by": "founded by: founder", "capital of": "capital of: capital"}))
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--descriptions", str(descriptions), "--output", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert seen["n"] == ["founded by", "capital of"]
    assert "2 instances without a relation" in result.output


def test_convert_command_round_trip(tmp_path):
    source = write_corpus(records(), tmp_path / "in.jsonl", "fewrel")
    runner = CliRunner()
    result = runner.invoke(cli, ["convert", "--input", str(source), "--to", "labelstudio", "--output", str(tmp_path / "ls.json")])
    assert result.exit_code == 0, result.output
    assert "4 instances" in result.output
    result = runner.invoke(cli, ["convert", "--input", str(tmp_path / "ls.json"), "--to", "doccano", "--output", str(tmp_path / "d.jsonl")])
    assert result.exit_code == 0, result.output
    assert [r.content() for r in read_corpus(tmp_path / "d.jsonl").records] == [r.content() for r in records()]


def test_convert_reports_bad_records(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(lines({"text": TEXT, "head": [0, 5], "tail": [21, 31]}, {"text": TEXT, "head": [0, 5], "tail": [0, 3]}))
    result = CliRunner().invoke(cli, ["convert", "--input", str(source), "--to", "fewrel", "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 0 and "line 2:" in result.output and "1 instances" in result.output


def test_dumps_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="conll"):
        dumps_corpus([], "conll")


def test_cohen_kappa_hand_computed():
    # 10 items; A: r r r r r n n n s s, B: r r r n n n n s s s.
    a = ["r"] * 5 + ["n"] * 3 + ["s"] * 2
    b = ["r"] * 3 + ["n"] * 4 + ["s"] * 3
    # agree on items 0-2 (r), 5-6 (n), 8-9 (s): p_o = 0.7; p_e = (5*3 + 3*4 + 2*3) / 100 = 0.33; κ = 0.37 / 0.67
    assert cohen_kappa(a, b) == pytest.approx(0.37 / 0.67)
    # "r or not": A has 5 r, B 3 r, both r on 3, both not-r on 5 → p_o 0.8, p_e (5*3 + 5*7)/100 = 0.5 → κ 0.6
    assert kappa_per_label(a, b)["r"] == pytest.approx(0.6)
    assert cohen_kappa(["x", "y"], ["x", "y"]) == 1.0
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None and cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["x"], [])


def test_a_file_that_is_not_utf8_is_named_as_given(tmp_path):
    path = tmp_path / "Binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match=r"^the file Binary\.jsonl is not UTF-8 text$"):
        read_corpus(path)


def test_a_fewrel_dict_on_one_line_is_read_and_a_one_line_record_is_not_taken_for_one(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"P1": [{"tokens": ["Ann", "met", "Bob"], "h": ["ann", "Q1", [[0]]], "t": ["bob", "Q2", [[2]]]}]}))
    corpus = read_corpus(path)
    assert [r.label for r in corpus.records] == ["P1"] and corpus.format == "fewrel" and not corpus.bad
    fewrel = json.loads(path.read_text())
    path.write_text(json.dumps({**fewrel, "P2": []}))  # a relation without instances
    assert [r.label for r in read_corpus(path).records] == ["P1"]
    path.write_text(json.dumps({"tokens": ["a", "b", "c"], "head": [0, 1], "tail": [2, 3]}))  # every value a list
    corpus = read_corpus(path)
    assert [r.instance.tokens for r in corpus.records] == [("a", "b", "c")] and not corpus.bad
