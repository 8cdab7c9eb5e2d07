"""Would two model threads of one torch thread each serve more sentences per second than one thread of two?

An int8 model runs one text at a time, so that no user's answer depends on who else was in the batch (README
"Speed"); batching concurrent users then shares no arithmetic, and the workbench's one model thread serves them one
after another at two torch threads (`app.serving`). Two model threads, each with one torch thread and one core,
could compute two users' sentences side by side instead. This probe measures both on the same sentences before
anything of the kind is built: the workbench's example sentences, its default catalogue relations, each mode run on
threads that start, compute and end (as `app.serving` loads the model), the modes alternating for `--rounds`
rounds. Run it on an otherwise idle machine.

    python -m research.threads_probe [--checkpoint C] [--precision int8] [--sentences 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from app.catalogue import Catalogue, load_examples
from app.serving import in_passing_thread, load_extractor
from emma import Extractor, Instance, instance_from_text
from emma.precision import cpu_capabilities

# (model threads, torch threads each): the workbench's way, and two single-core workers.
MODES = ((1, 2), (2, 1))
WARM_UP = 4  # predictions per worker before the clock starts (first calls allocate)


@dataclass
class ModeRun:
    """One round of one mode: `workers` model threads, each with `threads_each` torch threads."""

    workers: int
    threads_each: int
    sentences_per_s: float
    p50_ms: float
    labels: list[str]  # in the sentences' order, so the modes can be checked to agree


def serve(ex: Extractor, instances: list[Instance], workers: int, threads_each: int) -> ModeRun:
    """Predict every instance one at a time, split round-robin over `workers` threads of `threads_each` torch threads."""
    labels: list[str | None] = [None] * len(instances)
    latencies: list[float] = []
    errors: list[BaseException] = []
    ready = threading.Barrier(workers + 1)
    lock = threading.Lock()

    def work(rows: list[int]) -> None:
        torch.set_num_threads(threads_each)  # this thread's team only
        try:
            for i in rows[:WARM_UP]:
                ex.predict_batch([instances[i]])
            ready.wait()
            for i in rows:
                t = time.perf_counter()
                label = ex.predict_batch([instances[i]])[0].label
                with lock:
                    latencies.append(time.perf_counter() - t)
                    labels[i] = label
        except BaseException as e:  # handed to the caller; the others and the clock stop waiting instead of hanging
            errors.append(e)
            ready.abort()

    threads = [threading.Thread(target=work, args=(list(range(w, len(instances), workers)),)) for w in range(workers)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return ModeRun(workers, threads_each, len(instances) / wall, 1e3 * statistics.median(latencies), labels)


def measure(checkpoint: str | Path, precision: str, sentences: int, rounds: int) -> list[ModeRun]:
    ex = load_extractor(checkpoint, precision=precision)
    relations = {e.label: e.text for e in Catalogue.load().entries if e.default}
    in_passing_thread(ex.set_relations, relations)
    examples = load_examples()
    instances = [instance_from_text(e["text"], tuple(e["head"]), tuple(e["tail"])) for e in examples]
    instances = (instances * (sentences // len(instances) + 1))[:sentences]
    print(f"{ex.precision}, one text at a time: {ex.batch_size == 1}; {len(relations)} relations, {sentences} sentences")
    runs = []
    for r in range(rounds):
        for workers, threads_each in MODES:
            run = serve(ex, instances, workers, threads_each)
            runs.append(run)
            print(f"round {r + 1}: {workers} model thread(s) × {threads_each} torch thread(s): "
                  f"{run.sentences_per_s:.1f}/s, p50 {run.p50_ms:.1f} ms", flush=True)
    return runs


def summary(runs: list[ModeRun]) -> str:
    """Median over rounds per mode, and whether every mode gave every sentence the same label."""
    lines = ["| model threads × torch threads | sentences/s (median; each round) | p50 ms (median) |", "|---|---|---|"]
    for workers, threads_each in MODES:
        mine = [r for r in runs if (r.workers, r.threads_each) == (workers, threads_each)]
        rates = [r.sentences_per_s for r in mine]
        lines.append(f"| {workers} × {threads_each} | {statistics.median(rates):.1f} ({' / '.join(f'{x:.1f}' for x in rates)}) "
                     f"| {statistics.median(r.p50_ms for r in mine):.1f} |")
    same = all(r.labels == runs[0].labels for r in runs)
    lines.append(f"\nEvery mode and round gave each sentence the same label: {'yes' if same else 'NO'}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/emma-minilm")
    parser.add_argument("--precision", default="int8", help="as Extractor.load's (default int8: one text at a time)")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="JSON file for the runs")
    args = parser.parse_args()
    runs = measure(args.checkpoint, args.precision, args.sentences, args.rounds)
    print(summary(runs))
    if args.output:
        args.output.write_text(json.dumps({"command": "python -m research.threads_probe", "precision": args.precision,
                                           "cpu": cpu_capabilities(), "runs": [asdict(r) for r in runs]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
