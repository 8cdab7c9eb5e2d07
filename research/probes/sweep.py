"""Many probes at once, sharing one GPU (one recall-only run leaves it mostly idle).

Plan "recipe": phase 1 runs every probe of PHASE1 at training seed 42, side by side; phase 2 takes the
(at most) `confirm` best phase-1 changes that stay within the calibration's recipe, and the pair of the
best two, and runs them and the control at three more training seeds, so that a winner is told apart
from seed noise (± 0.7 F1 on CPU). Plan "windows": WINDOWS, no second phase. Each run is
``python -m research probe`` in its own process. Made for a lent GPU (16 CPU cores: one thread per
process); on a 2-core machine run single probes instead.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import REPO_ROOT
from ..protocol import read_records

logger = logging.getLogger(__name__)

# (name, probe flags). All at the protocol's budget (300 per relation, 1 epoch, FewRel m = 15 ori).
PHASE1 = [
    ("control", []),
    ("control_fp32", ["--precision", "fp32"]),
    ("no_dropout", ["--no-dropout"]),
    ("warmup0", ["--warmup-steps", "0"]),
    ("wd0", ["--weight-decay", "0"]),
    ("lr3e-5", ["--lr", "3e-5"]),
    ("lr7e-5", ["--lr", "7e-5"]),
    ("constant_lr", ["--constant-lr"]),
    ("head_lr3e-3", ["--head-lr", "3e-3"]),
    ("typed_plain", ["--typed-descriptions", "plain"]),
    ("typed_synonym", ["--typed-descriptions", "synonym"]),
    ("mean_first", ["--mean-first"]),
    ("freeze3", ["--freeze-layers", "3"]),
    ("no_clip", ["--max-grad-norm", "1e9"]),
    ("cls", ["--description-pooling", "cls"]),
    ("tau0.05", ["--temperature", "0.05"]),
]
# References, not candidates: the control itself, and changes outside the calibration's recipe
# (it fixes two-head pooling and τ = 0.02).
NOT_CANDIDATES = {"control", "control_fp32", "cls", "tau0.05"}
CONFIRM_SEEDS = (1, 2, 3)
# Second sweep (after PHASE1 found nothing above the control): the windows. The issue measured its budget
# at length 64; ours cuts instances at 128 word pieces. Each (name, flags, seeds).
# (The control and len64 at seeds 4–11, in results/recall_probes.jsonl too, were then run directly:
# `probe gpu_len64_sN --max-length 64 --train-seed N`, and likewise gpu_control_sN.)
WINDOWS = [
    ("len64", ["--max-length", "64"], (42, 1, 2, 3)),
    ("len96", ["--max-length", "96"], (42, 1)),
    ("len64_lr1e-4", ["--max-length", "64", "--lr", "1e-4"], (42, 1)),
    ("len64_cls", ["--max-length", "64", "--description-pooling", "cls"], (42, 1)),
    ("cls", ["--description-pooling", "cls"], (1, 2)),
    ("desc32", ["--max-description-length", "32"], (42, 1)),
]


@dataclass
class Sweep:
    """Where and how the sweep runs its probes (the `probe-sweep` options)."""

    results: Path
    logs: Path
    data: Path | None = None
    runs: Path | None = None
    prefix: str = "gpu_"
    workers: int = len(PHASE1)
    threads: int = 1
    confirm: int = 3
    deadline: float = 480
    dry_run: int = 0

    def probe(self, name: str, flags: list[str], seed: int) -> None:
        """One probe in its own process (its output in `logs`)."""
        t = time.time()
        cmd = [sys.executable, "-m", "research", "probe", f"{self.prefix}{name}_s{seed}", *flags,
               "--train-seed", str(seed), "--results", str(self.results)]
        for option, value in (("--data", self.data), ("--runs", self.runs), ("--dry-run", self.dry_run)):
            if value:  # else the probe's own defaults
                cmd += [option, str(value)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "TOKENIZERS_PARALLELISM": "false"}
        with open(self.logs / f"{name}_s{seed}.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT).returncode
        logger.info("%s seed %d: rc %d in %.0f s", name, seed, rc, time.time() - t)

    def phase(self, jobs: list[tuple[str, list[str], int]], start: float, estimate: float) -> None:
        """Run `jobs` side by side; none starts if it could not end before the deadline."""
        if not jobs or time.time() - start + estimate > self.deadline:
            logger.info("skipping %d runs: the deadline (%s s) is too near", len(jobs), self.deadline)
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
            list(pool.map(lambda job: self.probe(*job), jobs))

    def seed42_f1(self) -> dict[str, float]:
        """Phase-1 F1 of each probe name (seed 42) in the results file."""
        return {r["name"][len(self.prefix):-len("_s42")]: r["recall_only"]["f1"] for r in read_records(self.results)
                if r["name"].startswith(self.prefix) and r["name"].endswith("_s42")}


def confirm_jobs(scores: dict[str, float], control: float, confirm: int) -> list[tuple[str, list[str], int]]:
    """Phase 2: the control and the `confirm` best candidates at CONFIRM_SEEDS, and the best two together."""
    flags = dict(PHASE1)
    ranked = sorted((n for n in scores if n not in NOT_CANDIDATES), key=lambda n: -scores[n])
    best = ranked[:confirm]
    jobs = [("control", [], s) for s in CONFIRM_SEEDS] + [(n, flags[n], s) for n in best for s in CONFIRM_SEEDS]
    winners = [n for n in best if scores[n] > control]
    # The two best together, if they change different things (two --typed-descriptions would not add up).
    winners = winners[:1] + [n for n in winners[1:] if flags[n][0] != flags[winners[0]][0]]
    if len(winners) >= 2:
        pair = f"{winners[0]}+{winners[1]}"
        jobs += [(pair, flags[winners[0]] + flags[winners[1]], s) for s in (42, *CONFIRM_SEEDS)]
    return jobs


def run_sweep(sweep: Sweep, plan: str = "recipe") -> None:
    """Run the plan ("recipe" or "windows"); records go to `sweep.results`."""
    sweep.logs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if plan == "windows":
        sweep.phase([(name, flags, seed) for name, flags, seeds in WINDOWS for seed in seeds], start, 0)
    else:
        sweep.phase([(name, flags, 42) for name, flags in PHASE1], start, 0)
        phase1_s = time.time() - start
        scores = sweep.seed42_f1()
        logger.info("phase 1 (seed 42): %s", json.dumps(dict(sorted(scores.items(), key=lambda kv: -kv[1]))))
        if "control" not in scores:
            logger.warning("no control result: stopping")
            return
        jobs = confirm_jobs(scores, scores["control"], sweep.confirm)
        logger.info("phase 2: %s", sorted({j[0] for j in jobs}))
        sweep.phase(jobs, start, phase1_s)
    logger.info("sweep finished after %.0f s", time.time() - start)
