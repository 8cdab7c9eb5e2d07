"""End to end with the packaged all-MiniLM-L6-v2 and real FewRel sentences: train, save, load, predict, evaluate."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emma.cli import cli
from emma.data import read_descriptions, read_instances
from emma.evaluate import evaluate
from emma.model import EmmaConfig
from emma.pipeline import Extractor
from emma.train import TrainConfig, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_accelerate")]

TRAIN_RELATIONS = 5
TEST_RELATIONS = 3
PER_RELATION = 3


@pytest.fixture(scope="module")
def fewrel_subset(shared_data, tmp_path_factory):
    """A few FewRel val_wiki relations, written back in the FewRel format: 5 to train on, 3 unseen to test on."""
    raw = json.loads((shared_data / "fewrel" / "val_wiki.json").read_text())
    relations = list(raw)[: TRAIN_RELATIONS + TEST_RELATIONS]
    folder = tmp_path_factory.mktemp("fewrel")
    train_file, test_file = folder / "train.json", folder / "test.json"
    train_file.write_text(json.dumps({r: raw[r][:PER_RELATION] for r in relations[:TRAIN_RELATIONS]}))
    test_file.write_text(json.dumps({r: raw[r][:PER_RELATION] for r in relations[TRAIN_RELATIONS:]}))
    descriptions_file = shared_data / "fewrel" / "pid2name.json"
    return {"train": train_file, "test": test_file, "descriptions": descriptions_file,
            "train_relations": relations[:TRAIN_RELATIONS], "test_relations": relations[TRAIN_RELATIONS:]}


def test_train_save_load_predict_evaluate(fewrel_subset, packaged_encoder, tmp_path):
    train_instances = read_instances(fewrel_subset["train"])
    test_instances = read_instances(fewrel_subset["test"])
    descriptions = read_descriptions(fewrel_subset["descriptions"])
    assert len(train_instances) == TRAIN_RELATIONS * PER_RELATION and len(test_instances) == TEST_RELATIONS * PER_RELATION

    config = TrainConfig(model=EmmaConfig(max_length=64, max_description_length=32), encoder=packaged_encoder, max_steps=2,
                         batch_size=TRAIN_RELATIONS, lr=2e-5, warmup_steps=0, precision="fp32")
    folder = train(config, train_instances, descriptions, tmp_path / "ckpt")
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(0 < r["loss"] < 100 for r in log)

    ex = Extractor.load(folder, device="cpu", precision="fp32")
    assert ex.model.recall.encoder.config.hidden_size == 384 and ex.model.recall.dim == 3 * 384
    test_descriptions = {r: descriptions[r] for r in fewrel_subset["test_relations"]}
    ex.set_relations(test_descriptions)

    # predict on raw text with character spans
    inst = test_instances[0]
    text = " ".join(inst.tokens)
    start = len(" ".join(inst.tokens[: inst.head[0]])) + (1 if inst.head[0] else 0)
    head = (start, start + len(inst.head_text))
    start = len(" ".join(inst.tokens[: inst.tail[0]])) + (1 if inst.tail[0] else 0)
    tail = (start, start + len(inst.tail_text))
    assert text[head[0] : head[1]] == inst.head_text and text[tail[0] : tail[1]] == inst.tail_text
    p = ex.predict(text, head, tail)
    assert p.label in test_descriptions and p.reranked and len(p.recall) == TEST_RELATIONS
    for att in p.attention.values():
        assert sum(att["head"]) == pytest.approx(1.0, abs=1e-4) and sum(att["tail"]) == pytest.approx(1.0, abs=1e-4)
    q = ex.predict_tokens(inst.tokens, inst.head, inst.tail)
    assert q.label in test_descriptions and q.candidates == [r for r, _ in q.recall[:2]]

    # evaluate through the Python API ...
    report = evaluate(ex, test_instances)
    assert report["n_instances"] == len(test_instances) and report["n_relations"] == TEST_RELATIONS
    for key in ("recall_only", "emma"):
        assert 0 <= report[key]["f1"] <= 100
    # ... and through the CLI, on the same files: the same numbers
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "--checkpoint", str(folder), "--data", str(fewrel_subset["test"]),
                                 "--descriptions", str(fewrel_subset["descriptions"]), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    cli_report = json.loads(result.stdout)
    assert cli_report["n_instances"] == report["n_instances"] and cli_report["n_relations"] == TEST_RELATIONS
    assert cli_report["emma"] == pytest.approx(report["emma"]) and cli_report["recall_only"] == pytest.approx(report["recall_only"])

    result = runner.invoke(cli, ["predict", "--checkpoint", str(folder), "--descriptions", str(fewrel_subset["descriptions"]),
                                 "--text", text, "--head", inst.head_text, "--tail", inst.tail_text, "--top-k", "3"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["label"] in descriptions and len(out["recall"]) == 3 and out["reranked"]


def test_cli_train_with_split_then_evaluate(fewrel_subset, packaged_encoder, tmp_path):
    split = tmp_path / "subset_rel2id_3_0.json"
    split.write_text(json.dumps({"train": {r: i for i, r in enumerate(fewrel_subset["train_relations"])}, "eval": {},
                                 "test": {r: i for i, r in enumerate(fewrel_subset["test_relations"])}}))
    runner = CliRunner()
    out = tmp_path / "cli_ckpt"
    result = runner.invoke(cli, ["train", "--data", str(fewrel_subset["train"]), "--data", str(fewrel_subset["test"]),
                                 "--descriptions", str(fewrel_subset["descriptions"]), "--split", str(split),
                                 "--output", str(out), "--encoder", packaged_encoder, "--max-steps", "1",
                                 "--batch-size", str(TRAIN_RELATIONS), "--max-length", "64", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    stages = json.loads((out / "training.json").read_text())["stages"]  # the default: recall, then the classifier
    assert [s["name"] for s in stages] == ["recall", "classifier"]
    assert all(s["relations"] == TRAIN_RELATIONS and s["step"] == 1 for s in stages)  # only the split's train relations
    result = runner.invoke(cli, ["evaluate", "--checkpoint", str(out), "--data", str(fewrel_subset["train"]),
                                 "--data", str(fewrel_subset["test"]), "--descriptions", str(fewrel_subset["descriptions"]),
                                 "--split", str(split), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_relations"] == TEST_RELATIONS and report["n_instances"] == TEST_RELATIONS * PER_RELATION
    assert {"precision", "recall", "f1"} <= set(report["emma"]) and {"precision", "recall", "f1"} <= set(report["recall_only"])
