"""Load test of the workbench's /predict: N concurrent clients × R requests → p50, p95, throughput, errors.

    python -m app.loadtest                                   # shipped checkpoint, 1/4/8/16 clients × 20, 2 threads
    python -m app.loadtest --clients 1,8 --requests 10 --output results/loadtest.json

Starts `app.py` in a child process on a free loopback port (its own temporary database; torch
limited to --threads), drives it with `gradio_client` from this process, and stops it. Loopback
only, bounded in clients (32), requests (200 per client) and time (--deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import emma

from .catalogue import load_examples

REPO = Path(__file__).resolve().parent.parent
MAX_CLIENTS, MAX_REQUESTS = 32, 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, threads: int, folder: Path, timeout_s: float = 180, extra: list[str] = ()):
    """`python app.py` on 127.0.0.1:PORT (its database in `folder`); returns (process, url) once it answers."""
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "GRADIO_TEMP_DIR": str(folder)}
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", str(checkpoint), "--db",
                                str(folder / "workbench.db"), "--port", str(port), *extra], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            if httpx.get(url + "config", timeout=2).status_code in (200, 401):  # 401: up, behind a login
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app.py did not answer within {timeout_s:.0f} s")


def run_level(url: str, clients: int, requests: int, examples: list[dict]) -> dict:
    """`clients` threads, each its own gradio_client session, `requests` /predict calls each after one warm-up."""
    from gradio_client import Client

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        c = Client(url, verbose=False, download_files=False)
        ex = examples[i % len(examples)]
        c.predict(sentence=ex["text"], head=ex["head_text"], tail=ex["tail_text"], api_name="/predict")
        ready.wait()
        for j in range(requests):
            ex = examples[(i + j) % len(examples)]
            t0 = time.perf_counter()
            try:
                c.predict(sentence=ex["text"], head=ex["head_text"], tail=ex["tail_text"], api_name="/predict")
            except Exception as e:  # counted, reported below
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "clients": clients,
        "requests": clients * requests,
        "throughput_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "errors": len(errors),
    }


def markdown(rows: list[dict]) -> str:
    base = rows[0]["throughput_per_s"] or 1
    lines = ["| clients | requests | throughput /s | × 1 client | p50 ms | p95 ms | errors |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['throughput_per_s']} | {r['throughput_per_s'] / base:.1f} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['errors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.loadtest", description=__doc__.split("\n\n")[0],
                                     epilog="Example: python -m app.loadtest --clients 1,8 --requests 10 (loopback only)")
    parser.add_argument("--checkpoint", type=Path, default=Path(emma.DEFAULT_CHECKPOINT), help="default: %(default)s")
    parser.add_argument("--clients", default="1,4,8,16", help="concurrent clients per level (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=20, help="/predict calls per client (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=900, help="seconds for the whole run (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.clients.split(",")]
    if not all(1 <= n <= MAX_CLIENTS for n in levels) or not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"clients must be 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}")
    examples = load_examples()
    with tempfile.TemporaryDirectory(prefix="emma-loadtest-") as tmp:
        process, url = start_server(args.checkpoint, args.threads, Path(tmp))
        timer = threading.Timer(args.deadline, process.kill)  # bounded in time whatever happens
        timer.start()
        try:
            rows = [run_level(url, n, args.requests, examples) for n in levels]
        finally:
            timer.cancel()
            process.kill()
            process.wait()
    print(markdown(rows))
    if args.output:
        args.output.write_text(json.dumps({"threads": args.threads, "checkpoint": str(args.checkpoint), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
