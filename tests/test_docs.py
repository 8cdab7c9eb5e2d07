"""The README stays honest: its commands exist, its Python example runs, its numbers come from files."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from emma.checkpoint import DEFAULT_CHECKPOINT
from emma.cli import cli
from research.cli import cli as research_cli

REPO = Path(__file__).resolve().parent.parent

README = (REPO / "README.md").read_text()


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


GROUPS = {"emma": cli, "research": research_cli}


@pytest.mark.parametrize("package", GROUPS)
def test_every_command_in_the_readme_exists(package):
    known = {" ".join(c) for c in _commands(GROUPS[package])}
    used = re.findall(rf"-m {package} ([a-z][a-z-]*(?: (?:export|import))?)", README)
    assert used, f"the README shows no `python -m {package}` command"
    for cmd in used:
        assert cmd in known, f"README uses `python -m {package} {cmd}`, which does not exist"


@pytest.mark.parametrize("package", GROUPS)
def test_every_command_is_documented_in_the_readme(package):
    for name in GROUPS[package].commands:
        assert f"-m {package} {name}" in README, f"`python -m {package} {name}` is missing from the README"


def test_the_readme_names_no_script_that_moved():
    for gone in ("emma/bench.py", "emma/experiments.py", "results/recall_probes.py", "results/recall_probe_sweep.py"):
        assert gone not in README, f"the README still names {gone}"
    assert not list((REPO / "results").glob("*.py")), "results/ holds results, not code"


def test_make_targets_in_the_readme_exist():
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"^make (\w+)", README, flags=re.M)):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"make {target} is not a Makefile target"


@pytest.mark.slow
def test_readme_python_example_runs_on_the_shipped_checkpoint():
    if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        pytest.skip("no shipped checkpoint")
    block = re.search(r"## Python API\s+```python\n(.*?)```", README, flags=re.S).group(1)
    namespace = {"instances": [], "other": types.SimpleNamespace(index=None)}  # names the README leaves to the reader
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    p = namespace["p"]
    assert p.label in namespace["ex"].relations
    assert p.candidates and p.attention
