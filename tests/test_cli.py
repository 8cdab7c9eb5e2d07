"""The command line through click's CliRunner: help (of `python -m emma` and `python -m research`), predict, evaluate,
train, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from emma.cli import CliGroup, cli
from emma.data import DataError, write_jsonl
from emma.evaluate import evaluate
from emma.pipeline import Extractor
from research.cli import cli as research_cli

GROUPS = {"emma": cli, "research": research_cli}


def _command_paths(group, prefix=()):
    """Every command and subcommand of the click group, as argument lists."""
    out = []
    for name, command in sorted(group.commands.items()):
        out.append([*prefix, name])
        if isinstance(command, click.Group):
            out.extend(_command_paths(command, (*prefix, name)))
    return out


COMMANDS = ["train", "evaluate", "predict"]
ALL_COMMANDS = [(package, path) for package, group in GROUPS.items() for path in _command_paths(group)]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def files(tmp_path, toy_instances, toy_descriptions):
    data = tmp_path / "toy.jsonl"
    write_jsonl(toy_instances, data)
    desc = tmp_path / "descriptions.json"
    desc.write_text(json.dumps(toy_descriptions))
    return {"data": str(data), "descriptions": str(desc), "dir": tmp_path}


def _assert_clean_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in last, last


# ----------------------------------------------------------------------------- help


def test_group_help_lists_every_command(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("package, path", ALL_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_command_has_help_with_an_example(runner, package, path):
    result = runner.invoke(GROUPS[package], [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = GROUPS[package]
    for name in path:
        command = command.commands[name]
    if not isinstance(command, click.Group):  # a group's help lists its commands; each command shows an example
        assert "Example:" in result.output and f"python -m {package} {' '.join(path)}" in result.output


def test_the_library_commands_and_the_research_commands_are_apart():
    assert {"bench", "experiment", "table", "probe"} <= set(research_cli.commands)
    assert not set(research_cli.commands) & set(cli.commands)


def test_the_documented_commands_exist():
    assert set(COMMANDS) <= set(cli.commands)


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "emma", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m emma" in result.stdout and "evaluate" in result.stdout


# ----------------------------------------------------------------------------- predict


def test_predict_prints_json(runner, tiny_checkpoint, files, toy_descriptions):
    result = runner.invoke(cli, ["predict", "--checkpoint", tiny_checkpoint, "--descriptions", files["descriptions"],
                                 "--text", "Apple was founded by Steve Jobs.", "--head", "apple", "--tail", "Steve Jobs",
                                 "--top-k", "3"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["label"] in toy_descriptions and out["description"] == toy_descriptions[out["label"]]
    assert len(out["recall"]) == 3 and [r for r, _ in out["recall"]][:2] == out["candidates"]
    assert out["reranked"] is True and len(out["probabilities"]) == 2
    assert sum(out["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    deciding = out["fused"] if out["decision"] == "fused" else out["probabilities"]
    assert out["label"] in out["candidates"] and out["score"] == pytest.approx(max(deciding))


def test_predict_unknown_entity_is_a_clean_error(runner, tiny_checkpoint, files):
    result = runner.invoke(cli, ["predict", "--checkpoint", tiny_checkpoint, "--descriptions", files["descriptions"],
                                 "--text", "Apple was founded by Steve Jobs.", "--head", "Microsoft", "--tail", "Steve Jobs"])
    _assert_clean_error(result, "'Microsoft' does not occur")


def test_predict_missing_checkpoint_is_a_clean_error(runner, files, tmp_path):
    result = runner.invoke(cli, ["predict", "--checkpoint", str(tmp_path / "nothing"), "--descriptions", files["descriptions"],
                                 "--text", "Apple was founded by Steve Jobs.", "--head", "Apple", "--tail", "Steve Jobs"])
    _assert_clean_error(result, "no such checkpoint folder")


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_prints_and_writes_the_report(runner, tiny_checkpoint, files, tiny_extractor, toy_instances):
    out_file = files["dir"] / "report.json"
    result = runner.invoke(cli, ["evaluate", "--checkpoint", tiny_checkpoint, "--data", files["data"],
                                 "--descriptions", files["descriptions"], "--precision", "fp32",
                                 "--output", str(out_file), "--markdown"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_instances"] == 12 and report["n_relations"] == 4 and report["k"] == 2
    for key in ("recall_only", "emma"):
        assert {"precision", "recall", "f1"} <= set(report[key])
        assert all(0 <= report[key][m] <= 100 for m in ("precision", "recall", "f1"))
    assert json.loads(out_file.read_text()) == report
    assert report["protocol"]["checkpoint"] == tiny_checkpoint and report["protocol"]["precision"] == "fp32"
    assert "| recall only |" in result.stderr
    # the same numbers as the Python API
    expected = evaluate(tiny_extractor, toy_instances)
    assert report["emma"] == pytest.approx(expected["emma"]) and report["recall_only"] == pytest.approx(expected["recall_only"])


def test_evaluate_with_split_and_cap(runner, tiny_checkpoint, files):
    split = files["dir"] / "toy_rel2id_3_0.json"
    split.write_text(json.dumps({"train": {"founded by": 0}, "eval": {}, "test": {"born in": 0, "capital of": 1, "member of": 2}}))
    result = runner.invoke(cli, ["evaluate", "--checkpoint", tiny_checkpoint, "--data", files["data"], "--descriptions",
                                 files["descriptions"], "--split", str(split), "--max-per-relation", "2", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_relations"] == 3 and report["n_instances"] == 6 and report["protocol"]["split"] == str(split)


def test_evaluate_with_examples_uses_k_shots_never_scored(runner, tiny_checkpoint, files, toy_instances, toy_descriptions):
    from emma.data import draw_shots, write_jsonl
    from emma.pipeline import Extractor

    scored, pool = toy_instances[0::2], toy_instances  # half the pool is scored and must never be drawn
    write_jsonl(scored, files["dir"] / "scored.jsonl")
    write_jsonl(pool, files["dir"] / "pool.jsonl")
    args = ["evaluate", "--checkpoint", tiny_checkpoint, "--data", str(files["dir"] / "scored.jsonl"),
            "--descriptions", files["descriptions"], "--precision", "fp32"]
    zero = json.loads(runner.invoke(cli, args).stdout)
    result = runner.invoke(cli, [*args, "--examples", str(files["dir"] / "pool.jsonl"), "--shots", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert zero["shots"] == 0 and zero["examples"] == 0
    assert report["shots"] == 1 and report["examples"] == 4 and report["protocol"]["seed"] == 3
    # the same as drawing the shots by hand: one unscored instance per relation, added as examples
    ex = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    ex.set_relations(toy_descriptions)
    for relation, labelled in draw_shots(pool, 1, seed=3, exclude=scored).items():
        assert not set(labelled) & set(scored)
        ex.add_examples(relation, labelled)
    assert report["recall_only"] == pytest.approx(evaluate(ex, scored)["recall_only"])
    fits = ex.index.description_fits()
    assert report["description_fit"]["examples"] == 4 and report["description_fit"]["right"] == sum(f.right for f in fits)
    assert report["description_fit"]["per_relation"] == {f.relation: {"right": f.right, "examples": 1, "taken_by": dict(f.taken_by)}
                                                         for f in fits}
    assert "description_fit" not in zero
    _assert_clean_error(runner.invoke(cli, [*args, "--shots", "2"]), "--shots 2 needs --examples FILE")
    # K = 0 of a sweep over K is the zero-shot evaluation, --examples given or not; a negative K is refused.
    swept = json.loads(runner.invoke(cli, [*args, "--examples", str(files["dir"] / "pool.jsonl"), "--shots", "0"]).stdout)
    assert {k: v for k, v in swept.items() if k != "protocol"} == {k: v for k, v in zero.items() if k != "protocol"}
    result = runner.invoke(cli, [*args, "--examples", str(files["dir"] / "pool.jsonl"), "--shots", "-1"])
    assert result.exit_code == 2 and "--shots" in result.output and "Traceback" not in result.output


def test_evaluate_split_with_unknown_relation(runner, tiny_checkpoint, files):
    split = files["dir"] / "bad_split.json"
    split.write_text(json.dumps({"train": {}, "test": {"born in": 0, "P999": 1}}))
    result = runner.invoke(cli, ["evaluate", "--checkpoint", tiny_checkpoint, "--data", files["data"],
                                 "--descriptions", files["descriptions"], "--split", str(split)])
    _assert_clean_error(result, "bad_split.json (test)", "P999")


def test_evaluate_k_mismatch(runner, tiny_checkpoint, files):
    result = runner.invoke(cli, ["evaluate", "--checkpoint", tiny_checkpoint, "--data", files["data"],
                                 "--descriptions", files["descriptions"], "--k", "3"])
    _assert_clean_error(result, "--k 3", "k=2")


@pytest.mark.parametrize(
    "content, fragments",
    [
        (None, ["missing.jsonl: no such file"]),
        ('{"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 2], "relation": "born in"}\n'
         '{"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 9], "relation": "born in"}\n', ["bad.jsonl: record 2", "outside"]),
        ('{"tokens": ["a", "b"], "head": [0, 1], "tail": [0, 1], "relation": "born in"}\n', ["bad.jsonl: record 1", "same span"]),
        ("this is not json\n", ["bad.jsonl: line 1 is neither JSON nor JSONL"]),
    ],
)
def test_evaluate_bad_data_file(runner, tiny_checkpoint, files, content, fragments):
    path = files["dir"] / ("missing.jsonl" if content is None else "bad.jsonl")
    if content is not None:
        path.write_text(content)
    result = runner.invoke(cli, ["evaluate", "--checkpoint", tiny_checkpoint, "--data", str(path),
                                 "--descriptions", files["descriptions"]])
    _assert_clean_error(result, *fragments)
    assert len(result.output.strip().splitlines()) == 1  # one line, nothing else


def test_evaluate_bad_descriptions_file(runner, tiny_checkpoint, files):
    desc = files["dir"] / "bad_desc.json"
    desc.write_text(json.dumps({"born in": ["only a name"]}))
    result = runner.invoke(cli, ["evaluate", "--checkpoint", tiny_checkpoint, "--data", files["data"], "--descriptions", str(desc)])
    _assert_clean_error(result, "bad_desc.json", "born in")


@pytest.mark.parametrize("error", [ValueError("bad value"), FileNotFoundError("nothing here"), DataError("bad record")])
def test_user_errors_become_one_line_in_every_command(runner, error):
    """CliGroup handles the library's user errors once, for every command of a group built on it."""

    @click.group(cls=CliGroup)
    def group() -> None:
        pass

    @group.command()
    def fails() -> None:
        raise error

    _assert_clean_error(runner.invoke(group, ["fails"]), str(error))


def test_missing_required_option(runner):
    result = runner.invoke(cli, ["evaluate", "--data", "x.json"])
    assert result.exit_code == 2 and "Missing option '--descriptions'" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------- train


TRAIN_FLAGS = ["--max-steps", "2", "--batch-size", "4", "--precision", "fp32", "--max-length", "32", "--warmup-steps", "0"]


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_accelerate")
def test_train_writes_a_loadable_checkpoint(runner, tiny_encoder_dir, files, toy_instances):
    out = files["dir"] / "run"
    result = runner.invoke(cli, ["train", "--data", files["data"], "--descriptions", files["descriptions"], "--output", str(out),
                                 "--encoder", tiny_encoder_dir, *TRAIN_FLAGS])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    ex = Extractor.load(out, device="cpu", precision="fp32")
    # Data flags alone give the shipped recipe: two stages, shared head over h[CLS] ⊕ markers, fused decision.
    assert (ex.config.classifier_head, ex.config.classifier_features, ex.config.decision) == ("shared", "cls_entities", "fused")
    assert ex.config.max_length == 32 and ex.config.k == 2
    recall, classifier = json.loads((out / "training.json").read_text())["stages"]
    assert classifier["step"] == 2 and classifier["config"]["batch_size"] == 4 and classifier["config"]["model"]["max_length"] == 32
    assert recall["config"]["model"]["use_classifier"] is False and classifier["config"]["train_recall"] is False
    ex.set_relations({"a": "founded by: founder", "b": "place of birth"})
    assert ex.predict_batch(toy_instances[:1])[0].reranked


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_accelerate")
def test_train_paper_recipe(runner, tiny_encoder_dir, files):
    out = files["dir"] / "paper"
    result = runner.invoke(cli, ["train", "--data", files["data"], "--descriptions", files["descriptions"], "--output", str(out),
                                 "--encoder", tiny_encoder_dir, "--paper", *TRAIN_FLAGS])
    assert result.exit_code == 0, result.output
    config = Extractor.load(out, device="cpu", precision="fp32").config
    assert (config.classifier_head, config.classifier_features, config.decision, config.max_length) == ("concat", "cls", "classifier", 32)
    meta = json.loads((out / "training.json").read_text())
    assert meta["step"] == 2 and meta["config"]["schedule"] == "joint"  # one stage: recall and classifier together


@pytest.mark.usefixtures("fresh_accelerate")
def test_train_config_file_and_its_errors(runner, tiny_encoder_dir, files):
    config = files["dir"] / "config.json"
    config.write_text(json.dumps({"encoder": tiny_encoder_dir, "max_steps": 1, "batch_size": 2, "precision": "fp32",
                                  "model": {"max_length": 32}, "colour": "red"}))
    result = runner.invoke(cli, ["train", "--data", files["data"], "--descriptions", files["descriptions"],
                                 "--output", str(files["dir"] / "r"), "--config", str(config)])
    _assert_clean_error(result, "unknown keys ['colour']")
    config.write_text(json.dumps({"encoder": tiny_encoder_dir, "model": {"max_length": 32, "shade": 1}}))
    result = runner.invoke(cli, ["train", "--data", files["data"], "--descriptions", files["descriptions"],
                                 "--output", str(files["dir"] / "r"), "--config", str(config)])
    _assert_clean_error(result, "unknown EmmaConfig keys: ['shade']")
    config.write_text(json.dumps({"encoder": tiny_encoder_dir, "max_steps": 1, "batch_size": 2, "precision": "fp32"}))
    result = runner.invoke(cli, ["train", "--data", files["data"], "--descriptions", files["descriptions"],
                                 "--output", str(files["dir"] / "r"), "--config", str(config), "--batch-size", "1"])
    _assert_clean_error(result, "batch_size=1")  # the flag overrides the file


@pytest.mark.usefixtures("fresh_accelerate")
def test_train_bad_inputs(runner, tiny_encoder_dir, files):
    desc = files["dir"] / "partial.json"
    desc.write_text(json.dumps({"born in": "place of birth"}))
    result = runner.invoke(cli, ["train", "--data", files["data"], "--descriptions", str(desc),
                                 "--output", str(files["dir"] / "r"), "--encoder", tiny_encoder_dir, "--max-steps", "1"])
    _assert_clean_error(result, "relations without a description")
