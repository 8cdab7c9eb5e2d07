"""Data readers: every instance, description and split format, gzip, seeded splits, bad-data errors."""

from __future__ import annotations

import gzip
import json

import pytest

from emma.data import (
    DataError,
    Instance,
    Split,
    cap_per_relation,
    check_relations,
    random_split,
    read_descriptions,
    read_instances,
    read_split,
    select,
    write_jsonl,
)

TOKENS = ["Apple", "was", "founded", "by", "Steve", "Jobs", "."]
EXPECTED = Instance(tuple(TOKENS), (0, 1), (4, 6), "P112")


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _write_lines(path, records):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


# ----------------------------------------------------------------------------- Instance


def test_instance_normalises_and_exposes_entity_text():
    inst = Instance(TOKENS, [0, 1], [4, 6], "P112")
    assert inst.tokens == tuple(TOKENS) and inst.head == (0, 1) and inst.tail == (4, 6)
    assert inst.head_text == "Apple" and inst.tail_text == "Steve Jobs"
    assert inst.to_json() == {"tokens": TOKENS, "head": [0, 1], "tail": [4, 6], "relation": "P112"}


@pytest.mark.parametrize(
    "tokens, head, tail, message",
    [
        ((), (0, 1), (1, 2), "no tokens"),
        (("a", "b"), (0, 3), (1, 2), "outside"),
        (("a", "b"), (0, 1), (2, 2), "outside"),
        (("a", "b"), (-1, 1), (1, 2), "outside"),
        (("a", "b"), (1, 1), (0, 1), "outside"),  # empty span
        (("a", "b"), (0, 1), (0, 1), "same span"),
    ],
)
def test_instance_rejects_bad_spans(tokens, head, tail, message):
    with pytest.raises(DataError, match=message):
        Instance(tokens, head, tail)


# ----------------------------------------------------------------------------- instance formats


def test_read_fewrel(tmp_path):
    data = {
        "P112": [{"tokens": TOKENS, "h": ["apple", "Q312", [[0]]], "t": ["steve jobs", "Q19837", [[4, 5]]]}],
        "P17": [
            {"tokens": ["Paris", "is", "in", "France"], "h": ["paris", "Q90", [[0]]], "t": ["france", "Q142", [[3], [0]]]},
            {"tokens": ["Rome", "is", "in", "Italy"], "h": ["rome", "Q220", [[0]]], "t": ["italy", "Q38", [[3]]]},
        ],
    }
    out = read_instances(_write(tmp_path / "fewrel.json", data))
    assert out == [
        EXPECTED,
        Instance(("Paris", "is", "in", "France"), (0, 1), (3, 4), "P17"),  # first occurrence of the tail
        Instance(("Rome", "is", "in", "Italy"), (0, 1), (3, 4), "P17"),
    ]


def test_read_rematching_list(tmp_path):
    data = [{"token": TOKENS, "h": {"name": "apple", "pos": [0, 1]}, "t": {"name": "steve jobs", "pos": [4, 6]}, "relation": "P112"}]
    assert read_instances(_write(tmp_path / "rem.json", data)) == [EXPECTED]


def test_read_jsonl(tmp_path):
    records = [EXPECTED.to_json(), {"tokens": ["a", "b", "c"], "head": [2, 3], "tail": [0, 1], "relation": "P1"}]
    out = read_instances(_write_lines(tmp_path / "data.jsonl", records))
    assert out == [EXPECTED, Instance(("a", "b", "c"), (2, 3), (0, 1), "P1")]


def test_read_jsonl_with_a_single_record(tmp_path):
    # One line of JSONL is also a JSON object; it must not be mistaken for a FewRel dict.
    assert read_instances(_write_lines(tmp_path / "one.jsonl", [EXPECTED.to_json()])) == [EXPECTED]
    assert read_instances(_write(tmp_path / "one.json", EXPECTED.to_json())) == [EXPECTED]


def test_jsonl_without_relation_reads_as_unlabelled(tmp_path):
    out = read_instances(_write_lines(tmp_path / "x.jsonl", [{"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 2]}]))
    assert out == [Instance(("a", "b"), (0, 1), (1, 2), None)]


def test_write_jsonl_round_trips(tmp_path, toy_instances):
    write_jsonl(toy_instances, tmp_path / "toy.jsonl")
    assert read_instances(tmp_path / "toy.jsonl") == toy_instances


def test_read_relationprompt_wiki_jsonl(tmp_path):
    records = [
        {"triplets": [{"tokens": TOKENS, "head": [0], "tail": [4, 5], "label": "founded by", "label_id": "P112"}]},
        {"triplets": [
            # several mentions are listed together: the first contiguous run is the entity
            {"tokens": ["Steve", "Jobs", "met", "Jobs", "'", "s", "partner"], "head": [0, 1, 3], "tail": [6], "label_id": "P1"},
            {"tokens": ["a", "b"], "head": [1], "tail": [0], "label": "only a label"},
        ]},
    ]
    out = read_instances(_write_lines(tmp_path / "wiki.jsonl", records))
    assert out == [
        EXPECTED,
        Instance(("Steve", "Jobs", "met", "Jobs", "'", "s", "partner"), (0, 2), (6, 7), "P1"),
        Instance(("a", "b"), (1, 2), (0, 1), "only a label"),
    ]


@pytest.mark.parametrize("name", ["data.jsonl.gz", "data.json.gz"])
def test_gzip_is_transparent(tmp_path, name):
    records = [EXPECTED.to_json()]
    path = tmp_path / name
    if name.endswith(".jsonl.gz"):
        _write_lines(path, records)
    else:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump({"P112": [{"tokens": TOKENS, "h": ["apple", "Q", [[0]]], "t": ["sj", "Q", [[4, 5]]]}]}, f)
    assert read_instances(path) == [EXPECTED]


def test_empty_list_reads_as_no_instances(tmp_path):
    assert read_instances(_write(tmp_path / "empty.json", [])) == []


# ----------------------------------------------------------------------------- bad data


def _bad_jsonl(tmp_path, record):
    good = EXPECTED.to_json()
    return _write_lines(tmp_path / "bad.jsonl", [good, good, record])


@pytest.mark.parametrize(
    "record, message",
    [
        ({"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 5], "relation": "r"}, "outside the 2 tokens"),
        ({"tokens": ["a", "b"], "head": [0, 1], "tail": [0, 1], "relation": "r"}, "same span"),
        ({"tokens": [], "head": [0, 1], "tail": [1, 2], "relation": "r"}, "no tokens"),
        ({"tokens": ["a", "b"], "head": [0, 1], "relation": "r"}, "record has no 'tail' field (expected {\"tokens\""),
        ({"tokens": ["a", "b"], "head": None, "tail": [1, 2], "relation": "r"}, "malformed"),
    ],
)
def test_bad_jsonl_record_names_file_and_record(tmp_path, record, message):
    path = _bad_jsonl(tmp_path, record)
    with pytest.raises(DataError) as err:
        read_instances(path)
    text = str(err.value)
    assert str(path) in text and "record 3" in text and message in text


def test_bad_fewrel_record_names_file_relation_and_record(tmp_path):
    data = {"P1": [
        {"tokens": ["a", "b", "c"], "h": ["a", "Q", [[0]]], "t": ["c", "Q", [[2]]]},
        {"tokens": ["a", "b", "c"], "h": ["a", "Q", [[0]]], "t": ["z", "Q", [[7]]]},
    ]}
    path = _write(tmp_path / "fewrel.json", data)
    with pytest.raises(DataError, match=r"fewrel\.json: relation P1 record 2: tail span \[7, 8\] is outside"):
        read_instances(path)


def test_fewrel_non_contiguous_occurrence_is_an_error(tmp_path):
    data = {"P1": [{"tokens": ["a", "b", "c"], "h": ["a", "Q", [[0, 2]]], "t": ["b", "Q", [[1]]]}]}
    with pytest.raises(DataError, match="record 1: entity token indices \\[0, 2\\] are not contiguous"):
        read_instances(_write(tmp_path / "f.json", data))


def test_bad_rematching_and_relationprompt_records(tmp_path):
    rem = [{"token": ["a", "b"], "h": {"pos": [0, 1]}, "t": {"pos": [0, 1]}, "relation": "r"}]
    with pytest.raises(DataError, match=r"rem\.json: record 1: head and tail are the same span"):
        read_instances(_write(tmp_path / "rem.json", rem))
    wiki = [{"triplets": [{"tokens": ["a", "b"], "head": [], "tail": [1], "label_id": "P1"}]}]
    with pytest.raises(DataError, match=r"wiki\.jsonl: record 1 triplet 1: empty entity"):
        read_instances(_write_lines(tmp_path / "wiki.jsonl", wiki))


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_instances(tmp_path / "missing.json")
    bad = tmp_path / "garbage.json"
    bad.write_text('{"tokens": [\nnot json\n')
    with pytest.raises(DataError, match=r"garbage\.json: line 1 is neither JSON nor JSONL"):
        read_instances(bad)
    other = _write(tmp_path / "other.json", [1, 2, 3])
    with pytest.raises(DataError, match=r"other\.json: unrecognised instance format"):
        read_instances(other)


# ----------------------------------------------------------------------------- descriptions


def test_descriptions_plain_dict(tmp_path):
    path = _write(tmp_path / "d.json", {"P1": "  founded by: founder  ", "P2": "capital"})
    assert read_descriptions(path) == {"P1": "founded by: founder", "P2": "capital"}


def test_descriptions_pid2name_render_name_colon_description(tmp_path):
    path = _write(tmp_path / "pid2name.json", {"P931": ["place served by transport hub", "territorial entity served"]})
    assert read_descriptions(path) == {"P931": "place served by transport hub: territorial entity served"}


def test_descriptions_processed_list(tmp_path):
    data = [{"relation": "P6", "description": ["head", "of", "government"], "h": ["town"], "t": ["head"]},
            {"relation": "P17", "description": "country of this item"}]
    path = _write(tmp_path / "processed.json", data)
    assert read_descriptions(path) == {"P6": "head of government", "P17": "country of this item"}


def test_descriptions_gzip(tmp_path):
    path = tmp_path / "d.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"P1": ["a", "b"]}, f)
    assert read_descriptions(path) == {"P1": "a: b"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"P1": ["only a name"]}, "relation 'P1': expected a string or \\[name, description\\]"),
        ({"P1": 3}, "relation 'P1'"),
        ({"P1": "   "}, "relation 'P1' has an empty description"),
        ([{"relation": "P1"}], "record 1: expected"),
        ("just a string", "unrecognised description format"),
    ],
)
def test_bad_descriptions_name_file_and_record(tmp_path, data, message):
    path = _write(tmp_path / "desc.json", data)
    with pytest.raises(DataError, match=message) as err:
        read_descriptions(path)
    assert str(path) in str(err.value)


def test_check_relations(toy_instances, toy_descriptions):
    check_relations(toy_instances, toy_descriptions)
    partial = {k: v for k, v in toy_descriptions.items() if k != "born in"}
    with pytest.raises(DataError, match="train.json: relations without a description: born in"):
        check_relations(toy_instances, partial, "train.json")


# ----------------------------------------------------------------------------- splits


def test_read_split(tmp_path):
    path = _write(tmp_path / "fewrel_rel2id_2_ori.json", {"train": {"P1": 0, "P2": 1}, "eval": {"P3": 0}, "test": {"P4": 0, "P5": 1}})
    assert read_split(path) == Split(("P1", "P2"), ("P3",), ("P4", "P5"), name="fewrel_rel2id_2_ori.json")
    no_eval = _write(tmp_path / "no_eval.json", {"train": {"P1": 0}, "test": {"P4": 0}})
    assert read_split(no_eval).eval == ()


def test_bad_split_files(tmp_path):
    overlap = _write(tmp_path / "overlap.json", {"train": {"P1": 0}, "eval": {}, "test": {"P1": 0}})
    with pytest.raises(DataError, match=r"overlap\.json: relation P1 is in both 'train' and 'test'"):
        read_split(overlap)
    wrong = _write(tmp_path / "wrong.json", {"train": {"P1": 0}})
    with pytest.raises(DataError, match=r"wrong\.json: a split file needs 'train' and 'test'"):
        read_split(wrong)


def test_random_split_is_seeded_disjoint_and_complete():
    rels = [f"P{i}" for i in range(20)]
    a = random_split(rels, m=5, seed=1, n_eval=3)
    assert a == random_split(list(reversed(rels)) + rels[:4], m=5, seed=1, n_eval=3)  # order and duplicates don't matter
    assert (len(a.train), len(a.eval), len(a.test)) == (12, 3, 5)
    assert set(a.train) | set(a.eval) | set(a.test) == set(rels)
    assert not (set(a.train) & set(a.test) or set(a.train) & set(a.eval) or set(a.eval) & set(a.test))
    assert len({random_split(rels, m=5, seed=s).test for s in range(10)}) > 1


@pytest.mark.parametrize("m, n_eval", [(20, 0), (15, 5), (0, 0), (0, 3), (19, 1), (-1, 3)])
def test_random_split_rejects_impossible_sizes(m, n_eval):
    with pytest.raises(ValueError, match=f"m={m}"):
        random_split([f"P{i}" for i in range(20)], m=m, seed=0, n_eval=n_eval)


def test_select_keeps_split_relations_and_rejects_unknown(toy_instances):
    kept = select(toy_instances, ["born in", "capital of"])
    assert [i.relation for i in kept] == ["born in"] * 3 + ["capital of"] * 3
    with pytest.raises(DataError, match=r"rel2id_5_ori\.json \(test\): relations not found in the data: P999"):
        select(toy_instances, ["born in", "P999"], "rel2id_5_ori.json (test)")


def test_cap_per_relation_is_seeded(toy_instances):
    a = cap_per_relation(toy_instances, 2, seed=3)
    assert a == cap_per_relation(toy_instances, 2, seed=3)
    assert sorted(i.relation for i in a) == sorted(["founded by", "born in", "capital of", "member of"] * 2)
    assert set(a) <= set(toy_instances)
    assert cap_per_relation(toy_instances, None) == list(toy_instances)


# ----------------------------------------------------------------------------- the real data


def test_real_fewrel_val_wiki(shared_data):
    instances = read_instances(shared_data / "fewrel" / "val_wiki.json")
    assert len(instances) == 16 * 700
    counts = {}
    for i in instances:
        counts[i.relation] = counts.get(i.relation, 0) + 1
    assert len(counts) == 16 and set(counts.values()) == {700}
    first = instances[0]
    assert first.relation == "P177" and first.head_text.lower() == "cape girardeau bridge"


def test_real_fewrel_descriptions_cover_every_relation(shared_data):
    pid2name = read_descriptions(shared_data / "fewrel" / "pid2name.json")
    assert len(pid2name) == 744
    assert pid2name["P931"].startswith("place served by transport hub: territorial entity")
    plain = read_descriptions(shared_data / "fewrel" / "relation_description" / "fewrel_relation_description.json")
    processed = read_descriptions(shared_data / "fewrel" / "relation_description" / "relation_description_processed.json")
    assert len(plain) == len(processed) == 80
    assert processed["P6"].startswith("head of government is head of the executive power")
    assert set(plain) <= set(pid2name) and set(processed) == set(plain)


@pytest.mark.parametrize("dataset, n", [("fewrel", 80), ("wikizsl", 113)])
def test_real_split_files_are_disjoint_and_complete(shared_data, dataset, n):
    files = sorted((shared_data / "splits" / f"{dataset}_rel2id").glob("*.json"))
    assert len(files) == 15
    for path in files:
        m = int(path.stem.split("_")[2])
        split = read_split(path)
        assert (len(split.test), len(split.eval), len(split.train)) == (m, 5, n - 5 - m), path.name
        assert len(set(split.train) | set(split.eval) | set(split.test)) == n, path.name


def test_real_fewrel_ori_split_selects_val_relations(shared_data):
    split = read_split(shared_data / "splits" / "fewrel_rel2id" / "fewrel_rel2id_15_ori.json")
    instances = read_instances(shared_data / "fewrel" / "val_wiki.json")
    test = select(instances, split.test, "ori test")
    assert len(test) == 15 * 700 and split.test[:3] == ("P177", "P364", "P361")
    with pytest.raises(DataError, match="relations not found in the data"):
        select(instances, split.train, "ori train")  # train relations live in train_wiki, not val_wiki


def test_real_wikizsl_relationprompt_file(shared_data, tmp_path):
    path = shared_data / "wikizsl" / "partial" / "relationprompt_wiki_dev_5rel.jsonl.gz"
    # The published file has unusable triplets (head == tail in record 4100, counting from 1): the error names it.
    with pytest.raises(DataError, match=r"relationprompt_wiki_dev_5rel\.jsonl\.gz: record 4100 triplet 1: head and tail are the same span"):
        read_instances(path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.readlines()[:4099]
    head = tmp_path / "head.jsonl.gz"
    with gzip.open(head, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    instances = read_instances(head)
    assert len(instances) == sum(len(json.loads(line)["triplets"]) for line in lines)
    assert {i.relation for i in instances} <= {"P106", "P571", "P241", "P706", "P466"}
    multi = instances[sum(len(json.loads(line)["triplets"]) for line in lines[:554])]
    assert multi.tail_text == "His jockey"  # [0, 1, 19, 20]: two mentions, the first is kept


def test_skip_invalid_drops_only_the_broken_records(tmp_path, caplog):
    from emma.data import read_instances

    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"tokens": ["a", "b", "c"], "head": [0, 1], "tail": [2, 3], "relation": "r"}\n'
        '{"tokens": ["a", "b"], "head": [0, 1], "tail": [0, 1], "relation": "r"}\n'
        '{"tokens": ["x", "y"], "head": [0, 1], "tail": [1, 2], "relation": "s"}\n'
    )
    with pytest.raises(DataError, match="record 2"):  # the second line: records count from 1
        read_instances(path)
    kept = read_instances(path, skip_invalid=True)
    assert [i.relation for i in kept] == ["r", "s"]
    assert "skipped 1 invalid record" in caplog.text and "record 2" in caplog.text


@pytest.mark.parametrize("record, message", [
    ('{"tokens": "Paris is in France", "head": [0, 1], "tail": [3, 4]}', "tokens must be a list of words"),
    ('{"tokens": ["Paris", "is", "in", "France"], "head": "01", "tail": [3, 4]}', "head and tail must be"),
    ('{"tokens": [["Paris"], "is", "in", "France"], "head": [0, 1], "tail": [3, 4]}', "tokens must be a list of words"),
    ('{"tokens": ["Paris", "is", "in", "France"], "head": {"start": 0, "end": 1}, "tail": [3, 4]}', "head and tail must be"),
    ('{"tokens": ["Paris", "is", "in", "France"], "head": [0], "tail": [3, 4]}', "malformed record"),
    ('{"tokens": ["a", "b"], "h": ["a", "Q1", [["x"]]], "t": ["b", "Q2", [[1]]]}', "malformed FewRel record"),
    ('{"triplets": [{"tokens": ["a", "b"], "head": ["Hyman"], "tail": [1], "label": "r"}]}', "malformed triplet"),
])
def test_text_where_positions_or_words_belong_is_a_data_error_naming_the_record(tmp_path, record, message):
    from emma.data import read_instances

    path = tmp_path / ("fewrel.json" if '"h"' in record else "rows.jsonl")
    path.write_text('{"P1": [' + record + "]}" if '"h"' in record else record + "\n")
    with pytest.raises(DataError, match=message) as error:
        read_instances(path)
    assert "record 1" in str(error.value)
    assert read_instances(path, skip_invalid=True) == []


def test_skip_invalid_reads_the_real_wikizsl_sample(shared_data):
    from emma.data import read_instances

    kept = read_instances(shared_data / "wikizsl" / "partial" / "relationprompt_wiki_dev_5rel.jsonl.gz", skip_invalid=True)
    assert len(kept) == 5864 - 3
    assert {i.relation for i in kept} == {"P106", "P571", "P241", "P706", "P466"}


def test_jsonl_lines_may_be_fewrel_instances_with_their_relation(tmp_path):
    path = tmp_path / "fewrel_lines.jsonl"
    path.write_text('{"tokens": ["Curie", "was", "born", "in", "Warsaw"], "h": ["Curie", "", [[0]]], "t": ["Warsaw", "", [[4]]], '
                    '"relation": "born in"}\n'
                    '{"tokens": ["Rome", "is", "in", "Italy"], "h": ["Rome", "Q1", [[0]]], "t": ["Italy", "Q2", [[3]]]}\n')
    first, second = read_instances(path)
    assert (first.head, first.tail, first.relation) == ((0, 1), (4, 5), "born in")
    assert (second.tokens, second.relation) == (("Rome", "is", "in", "Italy"), None)
    path.write_text('{"tokens": ["a", "b"], "h": ["a", "", [[0]]], "relation": "r"}\n')
    with pytest.raises(DataError, match=r"record 1: the FewRel record has no 't' field \(expected"):
        read_instances(path)
