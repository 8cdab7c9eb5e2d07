"""The few-shot table (research/fewshot.py) on the tiny checkpoint and a toy CrossRE-shaped folder."""

from __future__ import annotations

import json

import pytest

from emma.data import write_jsonl
from emma import checkpoint_id
from research.fewshot import EXAMPLE_RULE, run, table
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


def test_records_of_the_uncapped_rule_count_as_shipped_only_where_the_cap_changes_nothing():
    from emma.index import EXAMPLES_COUNTED
    from research.fewshot import UNCAPPED_RULE, scored_rule

    assert scored_rule({"shots": EXAMPLES_COUNTED, "example_rule": UNCAPPED_RULE}) == EXAMPLE_RULE
    assert scored_rule({"shots": EXAMPLES_COUNTED + 1, "example_rule": UNCAPPED_RULE}) == UNCAPPED_RULE
    assert scored_rule({"rows_per_relation": EXAMPLES_COUNTED, "example_rule": UNCAPPED_RULE}) == EXAMPLE_RULE  # a fine-tune's
    assert scored_rule({"rows_per_relation": 1000, "example_rule": UNCAPPED_RULE}) == UNCAPPED_RULE
    assert scored_rule({"shots": 5, "example_rule": "n/(n+5)"}) == "n/(n+5)"  # before the classifier's share: not the same
    assert scored_rule({"shots": 5}) == "0.5"


def test_the_table_keeps_checkpoints_and_example_rules_apart():
    def record(checkpoint, shots, f1, rule=None):
        r = {"set": "crossre-ai", "shots": shots, "seed": 0, "checkpoint": checkpoint, "emma_fused": f1, "recall_only": f1}
        return {**r, "example_rule": rule} if rule else r

    records = [record("a@1", 0, 10.0), record("a@1", 5, 20.0), record("a@1", 5, 30.0, EXAMPLE_RULE), record("b@2", 0, 50.0)]
    with pytest.raises(ValueError, match="2 checkpoints"):
        table(records)
    shipped, before = table(records, checkpoint="a"), table(records, checkpoint="a", rule="0.5")
    assert "| crossre-ai | 10.0 (10.0) | 30.0 (30.0) |" in shipped  # K = 0 counts for every rule
    assert "| crossre-ai | 10.0 (10.0) | 20.0 (20.0) |" in before
    assert "50.0" not in shipped + before
    # By default the rule of the latest run with examples: a checkpoint given example levels since shows its new runs.
    records.append(record("a@1", 5, 40.0, EXAMPLE_RULE + ", levels x0.5"))
    assert "| crossre-ai | 10.0 (10.0) | 40.0 (40.0) |" in table(records, checkpoint="a")
    assert "| crossre-ai | 10.0 (10.0) | 30.0 (30.0) |" in table(records, checkpoint="a", rule=EXAMPLE_RULE)


def test_the_table_command_can_keep_one_precision(tmp_path):
    from click.testing import CliRunner

    from research.cli import cli

    def record(precision, shots, f1):
        return {"set": "crossre-ai", "shots": shots, "seed": 0, "checkpoint": "a@1", "precision": precision,
                "emma_fused": f1, "recall_only": f1, **({"example_rule": EXAMPLE_RULE} if shots else {})}

    results = tmp_path / "fewshot.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in (record("bf16", 0, 10.0), record("int8", 0, 12.0), record("int8", 5, 20.0))))
    args = ["fewshot-table", "--results", str(results), "--checkpoint", "a"]
    both = CliRunner().invoke(cli, args)
    one = CliRunner().invoke(cli, [*args, "--precision", "int8"])
    assert both.exit_code == 0 and one.exit_code == 0, both.output + one.output
    assert "| crossre-ai | 11.0 ± 1.4 (11.0) | 20.0 (20.0) |" in both.output
    assert "| crossre-ai | 12.0 (12.0) | 20.0 (20.0) |" in one.output


def test_a_run_names_the_levels_when_its_checkpoint_has_them(tiny_extractor):
    from research.fewshot import LEVELS, rule_of

    assert rule_of(tiny_extractor) == EXAMPLE_RULE
    tiny_extractor.config.example_levels = {"0": 0.3, "5": 0.4}
    assert rule_of(tiny_extractor) == EXAMPLE_RULE + LEVELS
