"""The README stays honest: its commands exist, its Python example runs, its numbers come from files."""

from __future__ import annotations

import re
import types

import pytest

from emma.checkpoint import DEFAULT_CHECKPOINT
from emma.cli import cli

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

README = (REPO / "README.md").read_text()


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


def test_every_emma_command_in_the_readme_exists():
    known = {" ".join(c) for c in _commands(cli)}
    used = re.findall(r"-m emma ([a-z][a-z-]*(?: (?:export|import))?)", README)
    assert used, "the README shows no command"
    for cmd in used:
        assert cmd in known, f"README uses `python -m emma {cmd}`, which does not exist"


def test_every_command_is_documented_in_the_readme():
    for name in cli.commands:
        assert f"-m emma {name}" in README, f"`python -m emma {name}` is missing from the README"


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
