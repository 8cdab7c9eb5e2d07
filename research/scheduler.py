"""Run a plan of protocol runs: in order, or in several processes sharing one machine.

A GPU that one small-batch run leaves mostly idle can run several at once: 8 processes ran the
whole table in 4 minutes on an H200. Runs that share a first (recall) stage go to the same process,
so no two processes ever train, or wait for, the same stage.

Example:
    >>> run_plan(default_plan(), workers=8, deadline_s=3000, data_dir=DATA_DIR,
    ...          results=RESULTS_DIR / "experiments.jsonl", runs_dir=RUNS_DIR)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .protocol import RunSpec, run

logger = logging.getLogger(__name__)


def plan_tasks(plan: list[RunSpec]) -> list[list[RunSpec]]:
    """The plan's runs grouped by the first stage they share (plan order kept)."""
    tasks: dict[str, list[RunSpec]] = {}
    for spec in plan:
        shares = spec.two_stage and spec.variant != "untrained"
        tasks.setdefault(spec.recall_stage_name if shares else spec.key, []).append(spec)
    return list(tasks.values())


def run_plan(plan: list[RunSpec], deadline_s: float | None = None, workers: int = 1, **run_kwargs) -> int:
    """Run the plan, skipping done runs, starting none that would end past the deadline; returns runs done now.

    Args:
        deadline_s: seconds from now after which no run starts (a run's length is estimated from
            the runs done so far).
        workers: processes at once (each claims the next group of `plan_tasks`); with one, the runs
            go in plan order, most important first.
        run_kwargs: `run`'s data_dir, results, runs_dir, keep_checkpoint.
    """
    deadline_at = time.time() + deadline_s if deadline_s is not None else None
    with tempfile.TemporaryDirectory(prefix="emma-claims-") as claims:
        if workers <= 1:
            return _plan_worker([[spec] for spec in plan], Path(claims), deadline_at, None, run_kwargs)
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        tasks = plan_tasks(plan)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            jobs = [pool.submit(_plan_worker, tasks, Path(claims), deadline_at, threads, run_kwargs, f"worker {i}")
                    for i in range(workers)]
            return sum(job.result() for job in jobs)


def _plan_worker(tasks: list[list[RunSpec]], claims: Path, deadline_at: float | None, threads: int | None, run_kwargs: dict,
                 name: str | None = None) -> int:
    """Claim tasks in order (mkdir is atomic), run their specs; returns runs done."""
    if name:  # a spawned process of its own: its logging and its share of the CPU threads
        import torch

        logging.basicConfig(level=logging.INFO, format=f"[{name}] %(levelname)s %(name)s: %(message)s")
        torch.set_num_threads(threads)
    done = 0
    durations: list[float] = []

    def too_late(spec: RunSpec) -> bool:
        expected = 1.2 * statistics.mean(durations) if durations else 0.0
        if deadline_at is not None and time.time() + expected > deadline_at:
            logger.info("stopping before %s: deadline", spec.name)
            return True
        return False

    for index, task in enumerate(tasks):
        if too_late(task[0]):
            break
        try:
            (claims / str(index)).mkdir()
        except FileExistsError:  # another worker has it
            continue
        for spec in task:
            if spec is not task[0] and too_late(spec):
                return done
            t = time.perf_counter()
            try:
                if run(spec, **run_kwargs) is not None:
                    done += 1
                    if spec.variant != "untrained":
                        durations.append(time.perf_counter() - t)
            except Exception:  # one broken run must not lose the rest of the table
                logger.exception("run %s failed", spec.name)
    return done
