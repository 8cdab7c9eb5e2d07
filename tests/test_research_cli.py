"""`python -m research`: every command has help with an example, paths do not depend on the working directory,
user errors print one line."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from research import REPO_ROOT, RESULTS_DIR
from research.cli import cli


def _command_paths(group, prefix=()):
    out = []
    for name, command in sorted(group.commands.items()):
        out.append([*prefix, name])
        if isinstance(command, click.Group):
            out.extend(_command_paths(command, (*prefix, name)))
    return out


@pytest.mark.parametrize("path", _command_paths(cli), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and f"python -m research {' '.join(path)}" in result.output


def test_the_library_commands_stay_with_the_library():
    from emma.cli import cli as emma_cli

    assert {"bench", "experiment", "table", "probe"} <= set(cli.commands)
    assert not set(cli.commands) & set(emma_cli.commands)


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "research", "--help"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m research" in result.stdout and "experiment" in result.stdout


def test_paths_default_to_the_repository_not_the_working_directory(tmp_path, monkeypatch):
    defaults = {p.name: p.default for p in cli.commands["experiment"].params}
    assert defaults["results"] == RESULTS_DIR / "experiments.jsonl" and defaults["results"].is_absolute()
    assert defaults["runs_dir"] == REPO_ROOT / "runs"
    if not (RESULTS_DIR / "experiments.jsonl").is_file():
        pytest.skip("no results/experiments.jsonl")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["table"])
    assert result.exit_code == 0, result.output
    assert "--results results/experiments.jsonl" in result.output, "the table names the file relative to the repository"


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "fewrel", "--m", "15"], "one run needs --dataset, --m and --seed together"),
    (["--dataset", "fewrel", "--m", "5", "--seed", "sample"], "Wiki-ZSL sample"),
])
def test_experiment_user_errors_are_one_line(tmp_path, flags, message):
    (tmp_path / "splits").mkdir()
    result = CliRunner().invoke(cli, ["experiment", "--data-dir", str(tmp_path), "--results", str(tmp_path / "r.jsonl"), *flags])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and message in result.output


def test_experiment_without_data_names_the_folder(tmp_path):
    result = CliRunner().invoke(cli, ["experiment", "--data-dir", str(tmp_path / "none"), "--dataset", "fewrel", "--m", "5",
                                      "--seed", "ori"])
    assert result.exit_code == 1 and "no splits/ folder" in result.output
