"""The transfer table (research/transfer.py) on the tiny checkpoint and a toy CrossRE-shaped folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from emma import checkpoint_id
from emma.data import write_jsonl
from research.cli import cli
from research.jsonl import read
from research.transfer import FLOOR, run, table

DOMAINS = ("ai", "science", "music", "literature", "politics", "news")


@pytest.fixture
def toy_data(tmp_path, toy_instances, toy_descriptions):
    crossre = tmp_path / "crossre"
    crossre.mkdir()
    (crossre / "descriptions.json").write_text(json.dumps(toy_descriptions))
    for d in DOMAINS:
        write_jsonl(toy_instances, crossre / f"{d}-dev.jsonl")
        write_jsonl(toy_instances[:4], crossre / f"{d}-train.jsonl")
    return tmp_path


@pytest.mark.slow  # the floor loads the packaged encoder
def test_scores_every_domain_beside_the_floor_and_fills_metrics(tiny_checkpoint, toy_data, tmp_path):
    results = tmp_path / "transfer.jsonl"
    run(tiny_checkpoint, toy_data, results, precision="fp32")
    records = read(results)
    model = checkpoint_id(tiny_checkpoint)
    assert model.startswith("emma-tiny@") and {r["model"] for r in records} == {FLOOR, model} and len(records) == 12
    assert {r["precision"] for r in records if r["model"] == model} == {"fp32"}
    run(tiny_checkpoint, toy_data, results, precision="fp32")
    assert len(read(results)) == 12  # done rows are skipped
    run(tiny_checkpoint, toy_data, results, precision="bf16")
    assert len(read(results)) == 18  # another precision is another row; the floor is not run again
    text = table(records)
    assert text.count("\n| ") == 8 and "| **mean** |" in text  # a header, six domains and their mean
    metrics = tmp_path / "emma-tiny" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"rows": []}))
    (metrics.parent / "model.safetensors").write_bytes((Path(tiny_checkpoint) / "model.safetensors").read_bytes())
    records = [r for r in read(results) if r["precision"] == "fp32" or r["model"] == FLOOR]
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = CliRunner().invoke(cli, ["transfer-table", "--results", str(results), "--metrics", str(metrics)])
    assert out.exit_code == 0, out.output
    saved = json.loads(metrics.read_text())
    assert saved["rows"] == [] and set(saved["transfer"]["domains"]) == set(DOMAINS)
    ai = saved["transfer"]["domains"]["ai"]
    assert ai["untrained_floor"] == next(r["recall_only"] for r in records if r["model"] == FLOOR and r["set"] == "crossre-ai")


def test_a_model_without_classifier_gets_recall_cells_only():
    domains = ["ai", "science", "music", "literature", "politics", "news"]
    rows = [{"model": "m@1", "set": f"crossre-{d}", "split": "dev", "recall_only": 30.0 + i, "emma": 30.0 + i,
             "emma_fused": 30.0 + i, "gold_in_top_k": None} for i, d in enumerate(domains)]
    text = table(rows)
    assert "| ai | — | 30.0 | — (no classifier) | — | — |" in text
    assert "| **mean** | — | 32.5 | — (no classifier) | — | — |" in text
