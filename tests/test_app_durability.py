"""kill -9 while feedback is being written: every acknowledged row survives, the database stays intact, and
retrying the unacknowledged writes with their request ids stores each exactly once.

The writers run in a child process through the store's own write path (`Store.once` + `insert_feedback`,
what the /feedback handler calls); the child prints a request id once its transaction has committed (the
moment the handler would answer), and is killed with SIGKILL mid-stream, three times in a row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.storage import Store, insert_feedback

REPO = Path(__file__).resolve().parent.parent

WRITER = r"""
import sys, threading
from app.storage import Store, insert_feedback
store, run = Store(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def say(kind, rid):  # one whole line per write, never interleaved between threads
    with lock:
        sys.stdout.write(f"{kind} {rid}\n")
        sys.stdout.flush()
def writer(w):
    for i in range(100000):
        rid = f"{run}-{w}-{i}"
        say("try", rid)
        row = {"owner": "user:ann", "sentence": "s", "predicted": "r", "verdict": "correct", "note": rid}
        store.once("user:ann", rid, "feedback", lambda db: f"#{insert_feedback(db, row, {'r': 'r: x'})}")
        say("ack", rid)
threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_kill_9_loses_no_acknowledged_row_and_retries_write_once(tmp_path):
    db = tmp_path / "wb.db"
    Store(db)
    tried, acked = set(), set()
    for run in range(3):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"run{run}"], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        start = time.monotonic()
        lines = []
        for line in child.stdout:
            if len(line.split()) == 2:
                lines.append(line.split())
            if len(lines) > 200 and time.monotonic() - start > 0.5:
                break
        os.kill(child.pid, signal.SIGKILL)
        # Read through the same file object: what its iterator had buffered, then the rest until the pipe closes
        # (communicate() would read the pipe's descriptor directly and lose the buffered lines).
        rest = child.stdout.read()
        child.wait(timeout=30)
        lines += [line.split() for line in rest.splitlines() if len(line.split()) == 2]
        tried |= {rid for kind, rid in lines if kind == "try"}
        acked |= {rid for kind, rid in lines if kind == "ack"}
        assert child.returncode == -signal.SIGKILL

    store = Store(db)  # reopening after the crash: migrations and WAL recovery
    with store.connect() as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    stored = set(store.feedback()["note"])
    assert acked and acked <= stored, f"{len(acked - stored)} acknowledged rows lost"
    assert stored <= tried

    # The client retries whatever it never saw acknowledged, with the same request ids.
    row = {"owner": "user:ann", "sentence": "s", "predicted": "r", "verdict": "correct"}
    for rid in tried - acked:
        store.once("user:ann", rid, "feedback", lambda conn, rid=rid: f"#{insert_feedback(conn, {**row, 'note': rid}, {'r': 'r: x'})}")
    notes = list(store.feedback()["note"])
    assert len(notes) == len(set(notes)) == len(tried), "each write stored exactly once"
