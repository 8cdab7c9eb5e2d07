"""Transfer-grid, split GZSL and catalogue GZSL research commands on the tiny model and toy FewRel- and CrossRE-shaped folders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from emma.data import write_jsonl
from research.jsonl import read
from research.protocol import fewrel_pool
from research.transfer_grid import CROSSRE_DOMAINS, config_for, m15_split, name_only, run, table, trained_on, training_set

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def _fewrel(instances) -> dict:
    out: dict = {}
    for i in instances:
        entity = lambda span: [" ".join(i.tokens[span[0]:span[1]]).lower(), "Q0", [list(range(span[0], span[1]))]]  # noqa: E731
        out.setdefault(i.relation, []).append({"tokens": list(i.tokens), "h": entity(i.head), "t": entity(i.tail)})
    return out


@pytest.fixture
def toy_data(tmp_path, toy_instances, toy_descriptions):
    """FewRel: "founded by" and "born in" train, "capital of" and "member of" test; CrossRE: the four, every domain."""
    fewrel = tmp_path / "fewrel"
    (fewrel / "partial").mkdir(parents=True)
    (fewrel / "relation_description").mkdir()
    train = [i for i in toy_instances if i.relation in ("founded by", "born in")]
    (fewrel / "val_wiki.json").write_text(json.dumps(_fewrel([i for i in toy_instances if i not in train])))
    with gzip.open(fewrel / "partial" / "train_wiki_partial_union.json.gz", "wt") as f:
        json.dump(_fewrel(train), f)
    (fewrel / "relation_description" / "relation_description_processed.json").write_text(json.dumps(
        [{"relation": r, "description": d.split()} for r, d in toy_descriptions.items()]))
    (fewrel / "pid2name.json").write_text(json.dumps({r: [name_only(d), d.split(":", 1)[1].strip()] for r, d in toy_descriptions.items()}))
    splits = tmp_path / "splits" / "fewrel_rel2id"
    splits.mkdir(parents=True)
    (splits / "fewrel_rel2id_15_ori.json").write_text(json.dumps(
        {"train": {"founded by": 0, "born in": 1}, "eval": {}, "test": {"capital of": 2, "member of": 3}}))
    crossre = tmp_path / "crossre"
    crossre.mkdir()
    (crossre / "descriptions.json").write_text(json.dumps(toy_descriptions))
    for d in CROSSRE_DOMAINS:
        write_jsonl(toy_instances, crossre / f"{d}-dev.jsonl")
    return tmp_path


def test_name_only_keeps_what_precedes_the_colon():
    assert name_only("part of: the head is a component of the tail") == "part of"
    assert name_only("founder") == "founder"


def test_forms_give_each_train_relation_four_texts(toy_data, toy_descriptions):
    split, pool = m15_split(toy_data), fewrel_pool(toy_data)
    instances, texts = training_set(toy_data, pool, split, per_relation=2, forms=True)
    assert {i.relation for i in instances} == {"founded by", "born in"} and len(instances) == 4
    assert texts["born in"] == [" ".join(toy_descriptions["born in"].split()), toy_descriptions["born in"], "place of birth",
                                "most specific known birth location of a person"]
    _, single = training_set(toy_data, pool, split, per_relation=2, forms=False)
    assert isinstance(single["born in"], str)


def test_recipes_set_their_training_options():
    assert config_for("adapters-r16", 100, False, 1).adapter_rank == 16
    assert config_for("anchor-0.02", 100, False, 1).anchor == 0.02
    assert config_for("swap", 100, False, 1).swap_negatives and not config_for("control", 100, False, 1).swap_negatives
    assert not config_for("control", 100, False, 1).model.use_classifier
    assert config_for("control", 100, True, 1).model.use_classifier


@pytest.mark.slow
def test_each_recipe_trains_scores_and_is_skipped_once_done(toy_data, tiny_encoder_dir, tmp_path, capsys):
    results = tmp_path / "grid.jsonl"
    tiny = dict(encoder=tiny_encoder_dir, batch_size=2, precision="fp32")
    run(["control", "adapters-r16+forms+swap"], toy_data, results, tmp_path / "runs", per_relation=3, two_stage=False, seed=1,
        fewrel_cap=3, **tiny)
    records = read(results)
    assert [r["recipe"] for r in records] == ["control", "adapters-r16+forms+swap"]
    for r in records:
        assert set(r["crossre_dev"]) == set(CROSSRE_DOMAINS)
        assert set(r["crossre_dev"]["ai"]) == {"descriptions", "names"} and "fused" not in r["crossre_dev"]["ai"]["names"]
        assert 0 <= r["fewrel_m15"]["recall_only"] <= 100 and r["train"]["instances"] == 6
    run(["control"], toy_data, results, tmp_path / "runs", per_relation=3, two_stage=False, seed=1, fewrel_cap=3, **tiny)
    assert len(read(results)) == 2 and "already in" in capsys.readouterr().out
    text = table(read(results))
    assert text.count("\n| ") == 2 and "| control | 3/rel, 1 epoch, recall only, seed 1 |" in text
    assert "three FewRel m = 15 splits" not in text

    splits = toy_data / "splits" / "fewrel_rel2id"
    for seed in ("40", "41"):  # the other two splits: the same relations here, so each run trains anew in its own folder
        (splits / f"fewrel_rel2id_15_{seed}.json").write_text((splits / "fewrel_rel2id_15_ori.json").read_text())
        run(["control"], toy_data, results, tmp_path / "runs", per_relation=3, two_stage=False, seed=1, fewrel_cap=3,
            split_seed=seed, **tiny)
    records = read(results)
    assert [r["budget"]["train_split"] for r in records] == ["fewrel m15 ori"] * 2 + ["fewrel m15 40", "fewrel m15 41"]
    assert (tmp_path / "runs" / "transfer-grid" / "control_n3_recall_s1_m15-41").is_dir()
    text = table(records)
    three = text.split("three FewRel m = 15 splits")[1]
    assert "| control | " in three and "adapters" not in three


@pytest.mark.slow
def test_gzsl_on_the_split_holds_back_trained_sentences_and_chooses_the_margin_on_dev(toy_data, tiny_checkpoint, tmp_path):
    from research.gzsl_split import run as gzsl_run, sets, table as gzsl_table

    split = toy_data / "splits" / "fewrel_rel2id" / "fewrel_rel2id_15_ori.json"
    split.write_text(json.dumps({"train": {"founded by": 0, "born in": 1}, "eval": {"capital of": 2}, "test": {"member of": 3}}))
    got = sets(toy_data, trained_cap=1, seen_per_relation=1, unseen_per_relation=3)
    trained = set(trained_on(fewrel_pool(toy_data), m15_split(toy_data), 1))
    seen = got["dev"][0] + got["test"][0]
    assert len(seen) == 4 and not trained & set(seen)  # two held back per train relation, none trained on
    assert {i.relation for i in got["dev"][1]} == {"capital of"} and {i.relation for i in got["test"][1]} == {"member of"}
    assert got["trained"] == {"founded by", "born in"} and len(got["descriptions"]) == 4
    record = gzsl_run(tiny_checkpoint, toy_data, tmp_path / "g.jsonl", [0.0, 0.5], trained_cap=1, seen_per_relation=1,
                      unseen_per_relation=3)
    assert [r["margin"] for r in record["rows"]] == [0.0, 0.5] and record["rule"] == "fused"
    dev_h = {r["margin"]: r["dev"]["fused"]["H"] for r in record["rows"]}
    assert dev_h[record["chosen_margin"]] == max(dev_h.values())
    # a margin of 0.5 on cosines takes (nearly) every sentence away from the trained relations
    big = record["rows"][1]["test"]["fused"]
    assert big["seen"] <= record["rows"][0]["test"]["fused"]["seen"] and big["unseen"] >= record["rows"][0]["test"]["fused"]["unseen"]
    assert "| emma-tiny |" in gzsl_table(read(tmp_path / "g.jsonl"))


@pytest.mark.slow
def test_gzsl_with_the_catalogue_scores_each_margin_on_the_chosen_crossre_split(toy_data, tiny_checkpoint, toy_instances,
                                                                                 toy_descriptions, tmp_path, monkeypatch):
    import emma
    from research import gzsl
    from research.gzsl import CROSSRE_PREFIX, run as gzsl_run, table as gzsl_table

    catalogue = tmp_path / "relations.json"
    catalogue.write_text(json.dumps([{"id": r, "text": d, "source": "FewRel"} for r, d in list(toy_descriptions.items())[:2]]))
    for d in CROSSRE_DOMAINS:
        write_jsonl(toy_instances[:4], toy_data / "crossre" / f"{d}-test.jsonl")
    records = gzsl_run(tiny_checkpoint, toy_data, catalogue, tmp_path / "g.jsonl", [0.0, 1.0], seen_per_relation=2,
                       unseen_per_domain=3, split="test")
    assert [r["margin"] for r in records] == [0.0, 1.0] and {r["crossre_split"] for r in records} == {"test"}
    assert records[0]["candidates"] == 2 + 4 and records[0]["unseen_instances"] == 6 * 3
    # δ = 1 puts every trained relation below every new one: no unseen sentence is taken by a trained relation
    assert records[1]["fused"]["unseen_taken_by_trained"] == 0.0 and records[1]["recall"]["seen"] == 0.0
    assert "| test | 6 | trained relations | 1.0 | fused |" in gzsl_table(records) and CROSSRE_PREFIX == "crossre:"

    # the whole catalogue: its untrained default relations are candidates too (the switched-off one is not)
    rows = json.loads(catalogue.read_text())
    (name, text), (off, off_text) = list(toy_descriptions.items())[2:4]
    # (texts of their own: the toy CrossRE types share the toy descriptions, and tied scores order arbitrarily)
    rows += [{"id": "Q1", "label": name, "text": f"untrained: {text}", "source": "Wiki-ZSL", "default": True},
             {"id": "Q2", "label": off, "text": off_text, "source": "Wiki-ZSL", "default": False}]
    catalogue.write_text(json.dumps(rows))
    # sentences of the untrained catalogue relation (by its id, as the Wiki-ZSL sample labels them) are scored too
    monkeypatch.setattr(gzsl, "WIKIZSL_SAMPLE", Path("wikizsl-sample.jsonl"))
    write_jsonl([emma.Instance(i.tokens, i.head, i.tail, "Q1") for i in toy_instances[:2]]
                + [emma.Instance(i.tokens, i.head, i.tail, "Q2") for i in toy_instances[2:4]], toy_data / "wikizsl-sample.jsonl")
    whole = gzsl_run(tiny_checkpoint, toy_data, catalogue, tmp_path / "g2.jsonl", [0.0, 1.0], seen_per_relation=2,
                     unseen_per_domain=3, split="test", whole_catalogue=True)
    assert whole[0]["candidates"] == 2 + 1 + 4
    assert whole[0]["catalogue_instances"] == 2  # Q2 is switched off in the catalogue: not scored
    assert 0.0 <= whole[0]["fused"]["catalogue_untrained"] <= 100.0
    # lowering the trained relations can only help an untrained relation's own sentences in recall
    assert whole[1]["recall"]["catalogue_untrained"] >= whole[0]["recall"]["catalogue_untrained"]
    assert whole[1]["recall"]["seen"] == 0.0
    # a sentence the untrained catalogue relation takes at δ = 0 it keeps when the trained ones are lowered
    assert whole[1]["recall"]["seen_taken_by_catalogue"] >= whole[0]["recall"]["seen_taken_by_catalogue"]
    assert whole[1]["recall"]["unseen_taken_by_catalogue"] >= whole[0]["recall"]["unseen_taken_by_catalogue"]
    assert "seen_taken_by_catalogue" not in records[0]["recall"]
    assert "| test | 7 | trained relations | 1.0 | recall |" in gzsl_table(whole)
    assert gzsl_table(whole + whole).count("| test | 7 | trained relations | 1.0 | recall |") == 1  # a setting measured twice: one row
    # δ off every catalogue relation (as the workbench applies it): at δ = 1 the user's relations (CrossRE) take
    # every unseen sentence from trained and untrained catalogue relations alike, and the catalogue's own sentences too
    lowered = gzsl_run(tiny_checkpoint, toy_data, catalogue, tmp_path / "g3.jsonl", [1.0], seen_per_relation=2,
                       unseen_per_domain=3, split="test", whole_catalogue=True, margin_on="catalogue")
    (record,) = lowered
    assert record["margin_on"] == "catalogue" and "margin_on" not in whole[1]
    assert record["recall"]["unseen_taken_by_trained"] == record["recall"]["unseen_taken_by_catalogue"] == 0.0
    assert record["recall"]["catalogue_untrained"] == record["recall"]["seen"] == 0.0
    assert "| test | 7 | the catalogue's relations | 1.0 | recall |" in gzsl_table(whole + lowered)
    assert gzsl_table(whole + lowered).count("| test | 7 |") == 6  # the two settings of δ = 1 kept apart
    with pytest.raises(ValueError, match="margin_on"):
        gzsl_run(tiny_checkpoint, toy_data, catalogue, tmp_path / "g4.jsonl", [1.0], seen_per_relation=2,
                 unseen_per_domain=3, margin_on="user")
