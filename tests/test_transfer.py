"""The transfer table (research/transfer.py) on the tiny checkpoint and a toy CrossRE-shaped folder."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emma.data import write_jsonl
from research.cli import cli
from research.transfer import FLOOR, read, run, table

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
    run(tiny_checkpoint, toy_data, results)
    records = read(results)
    models = {r["model"] for r in records}
    assert models == {FLOOR, "emma-tiny"} and len(records) == 12
    run(tiny_checkpoint, toy_data, results)
    assert len(read(results)) == 12  # done rows are skipped
    text = table(records)
    assert text.count("\n| ") == 8 and "| **mean** |" in text  # a header, six domains and their mean
    metrics = tmp_path / "emma-tiny" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"rows": []}))
    out = CliRunner().invoke(cli, ["transfer-table", "--results", str(results), "--metrics", str(metrics)])
    assert out.exit_code == 0, out.output
    saved = json.loads(metrics.read_text())
    assert saved["rows"] == [] and set(saved["transfer"]["domains"]) == set(DOMAINS)
    ai = saved["transfer"]["domains"]["ai"]
    assert ai["untrained_floor"] == next(r["recall_only"] for r in records if r["model"] == FLOOR and r["set"] == "crossre-ai")
