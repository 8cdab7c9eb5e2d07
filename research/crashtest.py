"""kill -9 the workbench while clients save feedback, restart it, and count: acknowledged vs stored.

    python -m research crashtest                         # tiny run: 4 writers, 3 kills, the shipped checkpoint
    python -m research crashtest --writers 8 --kills 5

Starts `app.py` on a free loopback port with logins w0, w1, … (so a writer is the same owner after a
restart), lets each writer predict once and then save feedback in a loop, every row with its own
client request id, and kills the server with SIGKILL after a random 1–3 s. After each restart every
writer retries the one save it never saw answered, with the same request id. At the end: every
acknowledged row is stored, every attempted row is stored exactly once, `integrity_check` is ok.
Exits 1 when any of that fails. Loopback only; the database is a temporary file.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from app.catalogue import load_examples
from app.security import hash_password

from .loadtest import start_server

PASSWORD = "crash-test"


def writer(url: str, name: str, pending: dict, acked: set, stop: threading.Event, lock: threading.Lock) -> None:
    """Predict, then save rows until the server dies; a save in flight stays in `pending`."""
    from gradio_client import Client

    try:
        c = Client(url, auth=(name, PASSWORD), verbose=False, download_files=False)
        ex = load_examples()[0]
        c.predict(sentence=ex["text"], head=ex["head_text"], tail=ex["tail_text"], api_name="/predict")
        i = 0
        while not stop.is_set():
            rid = pending.get(name) or f"{name}-{time.time_ns()}-{i}"
            pending[name] = rid
            c.predict(verdict="correct", correct_relation="", note=rid, request_id=rid, api_name="/feedback")
            with lock:
                acked.add(rid)
            pending.pop(name, None)
            i += 1
    except Exception:  # the server was killed under this client: its pending row is retried after the restart
        return


def run(checkpoint: Path, writers: int, kills: int, folder: Path) -> dict:
    names = [f"w{i}" for i in range(writers)]
    hashes = folder / "users.txt"
    hashes.write_text("".join(f"{n}:{hash_password(PASSWORD)}\n" for n in names))
    pending: dict[str, str] = {}
    acked: set[str] = set()
    lock = threading.Lock()
    retried = 0
    for round_ in range(kills + 1):
        retried += len(pending)  # saves in flight at the last kill, sent again with their request ids
        process, url = start_server(checkpoint, 2, folder, extra=["--auth-file", str(hashes)])
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(url, n, pending, acked, stop, lock), daemon=True) for n in names]
        for t in threads:
            t.start()
        time.sleep(random.uniform(1, 3) if round_ < kills else 2)
        if round_ < kills:
            process.send_signal(signal.SIGKILL)
        else:
            stop.set()
            for t in threads:
                t.join(timeout=60)
            process.kill()
        process.wait()
        for t in threads:
            t.join(timeout=60)
    with sqlite3.connect(folder / "workbench.db") as db:
        integrity = db.execute("pragma integrity_check").fetchone()[0]
        notes = [r[0] for r in db.execute("select note from feedback")]
    return {"acknowledged": len(acked), "retried after a kill": retried, "stored": len(notes), "lost": len(acked - set(notes)),
            "duplicates": len(notes) - len(set(notes)), "unanswered_at_end": len(pending), "integrity": integrity}


def measure(checkpoint: Path, writers: int, kills: int) -> dict:
    """The whole run in a temporary folder; see the module docstring."""
    threading.excepthook = lambda args: None  # gradio_client's own threads complain when the server is killed
    with tempfile.TemporaryDirectory(prefix="emma-crashtest-") as tmp:
        return run(checkpoint, writers, kills, Path(tmp))


def failed(result: dict) -> bool:
    return bool(result["lost"] or result["duplicates"] or result["integrity"] != "ok")
