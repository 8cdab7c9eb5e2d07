"""The Annotate tab's HTTP API (gradio_client): import a file into a queue, judge, retry, undo."""

from __future__ import annotations

import gzip
import json
import random
import time

from gradio_client import handle_file

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.storage import Store
from app.workbench import Workbench
from conftest import TOY_SENTENCES
from test_app_client import client, serve


def test_import_ten_thousand_gzipped_instances_and_judge_over_http(tiny_extractor, toy_descriptions, tmp_path, capsys):
    rng = random.Random(0)
    lines = []
    for i in range(10000):
        relation, sentence, head, tail = TOY_SENTENCES[i % len(TOY_SENTENCES)]
        words = sentence.split()
        words.insert(len(words) - 1, f"w{rng.randrange(10**6)}")  # distinct sentences, as in a real file
        text = " ".join(words)
        h, t = text.index(head), text.index(tail)
        lines.append(json.dumps({"text": text, "head": [h, h + len(head)], "tail": [t, t + len(tail)], "relation": relation}))
    path = tmp_path / "big.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert path.stat().st_size < 1_000_000  # under the server's upload cap

    store = Store(tmp_path / "wb.db")
    wb = Workbench(Engine(tiny_extractor), store, Catalogue.from_descriptions(toy_descriptions), load_examples())
    with serve(wb) as url:
        c = client(url)
        t0 = time.perf_counter()
        report, queues, sentence, progress, suggestion, ordering, *buttons = c.predict(
            file=handle_file(str(path)), name="big", shared=False, api_name="/import_queue")
        seconds = time.perf_counter() - t0
        assert report.startswith("Imported 10000 instances into the queue 'big' (text format).")
        assert "1 / 10000" in progress
        first = c.predict(choice="", request_id="j-1", api_name="/annotate_none")
        again = c.predict(choice="", request_id="j-1", api_name="/annotate_none")  # a retry: written once
        assert first[0] == again[0] == "Item 1: none of these."
        status = c.predict(choice="2", request_id="j-2", api_name="/annotate_accept")[0]
        assert status.startswith("Item 2: accepted (")
        assert c.predict(request_id="u-1", api_name="/annotate_undo")[0].startswith("Undone: item 2 (accepted, ")
        assert c.predict(request_id="u-1", api_name="/annotate_undo")[0].startswith("Undone: item 2 (accepted, ")  # a retry
    ((owner,),) = _owners(store)
    (queue,) = store.queues(owner)
    assert [(j["position"], j["verdict"]) for j in store.judgements(queue["id"])] == [(0, "none")]
    with capsys.disabled():
        print(f"\n10,000 instances (gzipped {path.stat().st_size / 1e3:.0f} kB) imported over HTTP in {seconds:.1f} s "
              "(upload, read, store, first suggestion)")


def _owners(store):
    with store.connect() as db:
        return db.execute("select owner from annotation_queues").fetchall()
