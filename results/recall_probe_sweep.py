"""Many recall calibration probes at once, sharing one GPU (one recall-only run leaves it mostly idle).

Phase 1 runs every probe of PHASE1 at training seed 42, side by side. Phase 2 takes the (at most) `--confirm`
best phase-1 changes that stay within the calibration's recipe, and the pair of the best two, and runs them
and the control at three more training seeds, so that a winner is told apart from seed noise (± 0.7 F1 on
CPU). Each run is `results/recall_probes.py` in its own process; records go to `--results`.

    python results/recall_probe_sweep.py --results OUT.jsonl [--plan recipe|windows] [--data DIR] [--deadline S] [--dry-run N]

Made for a lent GPU (16 CPU cores: one thread per process); on this project's 2-core machine run
single probes with recall_probes.py instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "results" / "recall_probes.py"

# (name, recall_probes.py flags). All at the protocol's budget (300 per relation, 1 epoch, FewRel m = 15 ori).
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
# at length 64; ours cuts instances at 128 word pieces. Each (name, flags, seeds); no second phase.
# (The control and len64 at seeds 4–11, in results/recall_probes.jsonl too, were then run directly:
# `recall_probes.py gpu_len64_sN --max-length 64 --train-seed N`, and likewise gpu_control_sN.)
WINDOWS = [
    ("len64", ["--max-length", "64"], (42, 1, 2, 3)),
    ("len96", ["--max-length", "96"], (42, 1)),
    ("len64_lr1e-4", ["--max-length", "64", "--lr", "1e-4"], (42, 1)),
    ("len64_cls", ["--max-length", "64", "--description-pooling", "cls"], (42, 1)),
    ("cls", ["--description-pooling", "cls"], (1, 2)),
    ("desc32", ["--max-description-length", "32"], (42, 1)),
]


def run_probe(name: str, flags: list[str], seed: int, args, logs: Path) -> None:
    t = time.time()
    cmd = [sys.executable, str(PROBE), f"{args.prefix}{name}_s{seed}", *flags, "--train-seed", str(seed), "--results", str(args.results)]
    for option in ("data", "runs", "dry_run"):  # else recall_probes.py's own defaults
        if getattr(args, option):
            cmd += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    with open(logs / f"{name}_s{seed}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    print(f"{time.strftime('%T')} {name} seed {seed}: rc {rc} in {time.time() - t:.0f} s", flush=True)


def run_phase(jobs: list[tuple[str, list[str], int]], args, logs: Path, start: float, estimate: float) -> None:
    """Run `jobs` side by side; a job that could not end before the deadline is not started."""
    if not jobs or time.time() - start + estimate > args.deadline:
        print(f"skipping {len(jobs)} runs: the deadline ({args.deadline} s) is too near", flush=True)
        return
    with ThreadPoolExecutor(max_workers=min(args.workers, len(jobs))) as pool:
        list(pool.map(lambda job: run_probe(*job, args, logs), jobs))


def f1_by_name(results: Path, prefix: str) -> dict[str, float]:
    """Phase-1 F1 of each probe name (seed 42) in the results file."""
    scores = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            if r["name"].startswith(prefix) and r["name"].endswith("_s42"):
                scores[r["name"][len(prefix):-len("_s42")]] = r["recall_only"]["f1"]
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", choices=("recipe", "windows"), default="recipe",
                    help="recipe: PHASE1 then its best at more seeds; windows: WINDOWS")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="the data folder (default: recall_probes.py's, ../shared/data)")
    ap.add_argument("--runs", type=Path, help="where run folders go (default: recall_probes.py's)")
    ap.add_argument("--logs", type=Path, default=Path("/tmp/recall_probe_logs"))
    ap.add_argument("--prefix", default="gpu_", help="put before every run name")
    ap.add_argument("--workers", type=int, default=len(PHASE1))
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    ap.add_argument("--confirm", type=int, default=3, help="phase-1 winners to re-run at more seeds")
    ap.add_argument("--deadline", type=float, default=480, help="seconds; no run starts that would end later")
    ap.add_argument("--dry-run", type=int, default=0, metavar="N", help="N sentences per relation (a check of the script)")
    args = ap.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if args.plan == "windows":
        run_phase([(name, flags, seed) for name, flags, seeds in WINDOWS for seed in seeds], args, args.logs, start, 0)
        print(f"sweep finished after {time.time() - start:.0f} s", flush=True)
        return

    run_phase([(name, flags, 42) for name, flags in PHASE1], args, args.logs, start, 0)
    phase1_s = time.time() - start
    scores = f1_by_name(args.results, args.prefix)
    control = scores.get("control")
    print("phase 1 (seed 42):", json.dumps(dict(sorted(scores.items(), key=lambda kv: -kv[1]))), flush=True)
    if control is None:
        print("no control result: stopping")
        return
    flags = dict(PHASE1)
    ranked = sorted((n for n in scores if n not in NOT_CANDIDATES), key=lambda n: -scores[n])
    best = ranked[: args.confirm]
    jobs = [("control", [], s) for s in CONFIRM_SEEDS] + [(n, flags[n], s) for n in best for s in CONFIRM_SEEDS]
    winners = [n for n in best if scores[n] > control]
    # The two best together, if they change different things (two --typed-descriptions would not add up).
    winners = winners[:1] + [n for n in winners[1:] if flags[n][0] != flags[winners[0]][0]]
    if len(winners) >= 2:
        pair = f"{winners[0]}+{winners[1]}"
        jobs += [(pair, flags[winners[0]] + flags[winners[1]], s) for s in (42, *CONFIRM_SEEDS)]
    print("phase 2:", sorted({j[0] for j in jobs}), flush=True)
    run_phase(jobs, args, args.logs, start, phase1_s)
    print(f"sweep finished after {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
