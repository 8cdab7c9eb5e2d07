"""`python -m research`: paths do not depend on the working directory, user errors print one line
(every command's help: tests/test_cli.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from research import REPO_ROOT, RESULTS_DIR
from research.cli import cli


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
