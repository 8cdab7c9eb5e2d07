"""The few-shot table (research/fewshot.py) on the tiny checkpoint and a toy CrossRE-shaped folder."""

from __future__ import annotations

import json

import pytest

from emma.data import write_jsonl
from emma import checkpoint_id
from research.fewshot import run, table
from research.jsonl import read


@pytest.fixture
def toy_data(tmp_path, toy_instances, toy_descriptions):
    crossre = tmp_path / "crossre"
    crossre.mkdir()
    (crossre / "descriptions.json").write_text(json.dumps(toy_descriptions))
    write_jsonl(toy_instances[0::2], crossre / "ai-dev.jsonl")
    write_jsonl(toy_instances[1::2], crossre / "ai-train.jsonl")
    return tmp_path


def test_runs_each_set_k_and_seed_once_and_resumes(tiny_checkpoint, toy_data, tmp_path):
    results = tmp_path / "fewshot.jsonl"
    run(tiny_checkpoint, toy_data, results, shots=[0, 1], seeds=[0, 1], names=["crossre-ai"], precision="fp32")
    records = read(results)
    assert {(r["checkpoint"], r["precision"]) for r in records} == {(checkpoint_id(tiny_checkpoint), "fp32")}
    assert [(r["set"], r["shots"], r["seed"]) for r in records] == [("crossre-ai", 0, 0), ("crossre-ai", 1, 0), ("crossre-ai", 1, 1)]
    assert [r["examples"] for r in records] == [0, 4, 4]  # one per relation of the four
    assert all(r["n_instances"] == 6 for r in records)  # every K scores the same dev instances
    run(tiny_checkpoint, toy_data, results, shots=[0, 1], seeds=[0, 1], names=["crossre-ai"], precision="fp32")
    assert len(read(results)) == 3  # done runs are skipped
    text = table(records)
    assert "| crossre-ai |" in text and "K = 1" in text and "| CrossRE mean |" not in text.split("crossre-ai")[0]
