"""Load test of the workbench's /predict: N concurrent clients × R requests → p50, p95, throughput, errors.

    python -m research loadtest                                   # shipped checkpoint, 1/4/8/16 clients × 20, 2 threads
    python -m research loadtest --clients 1,8 --requests 10 --output results/loadtest.json

Starts `app.py` in a child process on a free loopback port (its own temporary database; torch
limited to --threads), drives it from this process with light REST clients (one POST per prediction; `--client
call` for Gradio's queued route, `--client gradio` for `gradio_client`), and stops it. `--client model`
measures the model's thread alone, in this process (no server): the batching ceiling of the same load. Loopback
only, bounded in clients (32), requests (200 per client) and time (--deadline).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.catalogue import load_examples

REPO = Path(__file__).resolve().parent.parent
MAX_CLIENTS = 32  # per level; requests per client are bounded by the command (200)


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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux's /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class RunClient:
    """The lightest client of /predict (`--client run`, the default): one POST to Gradio's direct route
    /gradio_api/run/predict, which answers with the result (the event is not queued). A few milliseconds of CPU
    per call, where `gradio_client` spends 70–95 (measured): on a machine shared with the server, a heavy client
    takes the CPU the server would have served with."""

    route = "/gradio_api/run/predict"

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/") + self.route
        self.http = httpx.Client(timeout=60)
        # One session per client, as a browser tab has: without it every call is a new Gradio session, whose
        # set-up (a copy of every component's config) costs the server more than the prediction.
        self.session_hash = secrets.token_hex(8)

    def predict(self, sentence: str, head: str, tail: str):
        # The direct route takes every input of the event: the entity spans (none: found from the texts) and
        # the session (Gradio's own, whatever is sent).
        response = self.http.post(self.url, json={"data": [sentence, head, tail, None, None], "session_hash": self.session_hash})
        if response.status_code != 200:
            raise RuntimeError(f"/predict failed ({response.status_code}): {response.text[:200]}")
        return response.json()["data"][0]


class CallClient(RunClient):
    """`--client call`: Gradio's queued REST route, POST /gradio_api/call/predict and then a GET of the event's
    result stream (two requests and the queue's event handling per prediction)."""

    route = "/gradio_api/call/predict"

    def predict(self, sentence: str, head: str, tail: str):
        response = self.http.post(self.url, json={"data": [sentence, head, tail], "session_hash": self.session_hash})
        response.raise_for_status()
        event = None
        with self.http.stream("GET", f"{self.url}/{response.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"/predict failed: {line[5:].strip()}")
                    return json.loads(line[5:])
        raise RuntimeError("/predict: the result stream ended without a result")


def gradio_client(url: str):
    """The official Python client (heavier; `--client gradio`)."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)

    class Adapter:
        def predict(self, sentence, head, tail):
            return client.predict(sentence=sentence, head=head, tail=tail, api_name="/predict")

    return Adapter()


class ModelClients:
    """`--client model`: no server, no HTTP; each client thread calls the workbench's model thread (`ModelWorker`)
    in this process with the same relations a new session has. What batching alone gives: the ceiling for
    the server's ratio, whatever Gradio's event handling costs on top."""

    def __init__(self, checkpoint: Path, threads: int, folder: Path) -> None:
        import torch

        from app.main import create_workbench

        torch.set_num_threads(threads)
        self.wb = create_workbench(checkpoint, folder / "workbench.db")
        self.relations = self.wb.relations(self.wb.new_session())

    def __call__(self, url: str | None = None) -> "ModelClients":
        return self  # stateless: every client thread can share it (the model's thread serialises the calls)

    def predict(self, sentence: str, head: str, tail: str):
        from app.session import resolve_entities

        h, t = resolve_entities(sentence, head, tail, None)
        return self.wb.model.predict(sentence, h, t, self.relations)


CLIENTS = {"run": RunClient, "call": CallClient, "gradio": gradio_client}


def run_level(url: str | None, clients: int, requests: int, examples: list[dict], server_pid: int | None = None,
              client: "str | ModelClients" = "run") -> dict:
    """`clients` threads, each its own client session, `requests` /predict calls each after one warm-up.

    Beside the timings: CPU milliseconds per request spent by the server process and by these clients
    (they share the machine, so the clients' share is CPU the server did not get)."""
    make_client = CLIENTS[client] if isinstance(client, str) else client  # a name, or a factory (`ModelClients`)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def one_client(i: int) -> None:
        c = make_client(url)
        ex = examples[i % len(examples)]
        c.predict(ex["text"], ex["head_text"], ex["tail_text"])
        ready.wait()
        for j in range(requests):
            ex = examples[(i + j) % len(examples)]
            t0 = time.perf_counter()
            try:
                c.predict(ex["text"], ex["head_text"], ex["tail_text"])
            except Exception as e:  # counted, reported below
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=one_client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0, server0, client0 = time.perf_counter(), cpu_seconds(server_pid) if server_pid else None, time.process_time()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server1, client1 = cpu_seconds(server_pid) if server_pid else None, time.process_time()
    latencies.sort()
    done = max(1, len(latencies))
    return {
        "clients": clients,
        "requests": clients * requests,
        "throughput_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(latencies[math.ceil(0.95 * len(latencies)) - 1], 1) if latencies else None,  # nearest rank
        "errors": len(errors),
        "server_cpu_ms_per_request": round((server1 - server0) * 1e3 / done, 1) if server0 is not None and server1 is not None else None,
        "client_cpu_ms_per_request": round((client1 - client0) * 1e3 / done, 1),
    }


def markdown(rows: list[dict]) -> str:
    base = rows[0]["throughput_per_s"] or 1
    lines = ["| clients | requests | throughput /s | × 1 client | p50 ms | p95 ms | errors | server CPU ms/request | clients' CPU ms/request |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['throughput_per_s']} | {r['throughput_per_s'] / base:.1f} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['errors']} | {r.get('server_cpu_ms_per_request')} | "
                     f"{r.get('client_cpu_ms_per_request')} |")
    return "\n".join(lines)


def measure(checkpoint: Path, levels: list[int], requests: int, threads: int = 2, deadline: float = 900,
            client: str = "run") -> list[dict]:
    """Start the workbench, run each level of clients against it, stop it; one row per level."""
    examples = load_examples()
    with tempfile.TemporaryDirectory(prefix="emma-loadtest-") as tmp:
        if client == "model":  # in this process: its CPU is the "server" CPU, clients' threads included
            clients = ModelClients(checkpoint, threads, Path(tmp))
            return [run_level(None, n, requests, examples, os.getpid(), clients) for n in levels]
        process, url = start_server(checkpoint, threads, Path(tmp))
        timer = threading.Timer(deadline, process.kill)  # bounded in time whatever happens
        timer.start()
        try:
            return [run_level(url, n, requests, examples, process.pid, client) for n in levels]
        finally:
            timer.cancel()
            process.kill()
            process.wait()
