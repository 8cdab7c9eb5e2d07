"""Results files: one JSON object per line, appended as each run finishes, so a table resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path


def read(path: Path) -> list[dict]:
    """Every record of a results file (none when it does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append(path: Path, record: dict) -> None:
    """Add one record as one line (one write, so a crash never leaves half a line behind a whole one)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
