"""Research tooling beside the `emma` library: the paper's protocol, the speed benchmark, recipe probes.

Nothing here is needed to use a model. It measures the recipe (paper sections 4.1-4.4: Tables 1-2,
the ablations, Figure 3's speed comparison, Figure 5's k sweep) and records the numbers under
`results/`. It imports `emma`'s public API only, except the probes, which patch the library's
internals on purpose (see `research.probes`).

    python -m research --help

Paths default to this repository (`REPO_ROOT`, found from this package's location, never the
working directory): results in `results/`, run folders in `runs/`, data in `../shared/data`.
"""

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
RUNS_DIR = REPO_ROOT / "runs"
DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def write_config_value(checkpoint: str | Path | None, key: str, value) -> None:
    """Set `key` in a checkpoint's config.json (None: the shipped one), replacing the file at once; weights untouched.
    A measured setting (`extract_threshold`, `example_levels`) is written this way."""
    import emma

    folder = Path(checkpoint) if checkpoint else emma.DEFAULT_CHECKPOINT
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / "config.json")
