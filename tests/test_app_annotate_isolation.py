"""Queues as an attacker sees them: every event of the Annotate tab (and its Feedback panel), called over HTTP
as user B with user A's identifiers (queue ids, login, owner id) and then as a browser without logins, returns
nothing of A's unshared queue and changes none of A's judgements (see tests/test_app_isolation.py for the rest).
"""

from __future__ import annotations

import json
import uuid

import gradio as gr
import httpx
from gradio_client import Client, handle_file

from test_app_isolation import call_event, serve, upload_file

A_SENTENCE = "Quuxley founded Zorblaxia in 1999 ."
SECRETS = ("Quuxley", "Zorblaxia", "ann-secret-queue")


def hostile(component, text: str, upload):
    if isinstance(component, gr.State):
        return None
    if isinstance(component, gr.UploadButton):
        return upload
    if isinstance(component, gr.Checkbox):
        return True
    return text


def annotate_events(demo):
    return [fn for fn in demo.fns.values() if fn.fn is not None and getattr(fn.fn, "__module__", "") == "app.annotate_tab"]


def attack(demo, http, identifiers, upload) -> list[dict]:
    received = []
    events = annotate_events(demo)
    assert {fn.name for fn in events} >= {"import_file", "import_examples", "open_queue", "judge_accept", "judge_none", "judge_skip", "undo",
                                          "export", "show", "agreement", "score_file"}
    for fn in events:
        for text in identifiers:
            # Select events (a clicked row) carry event data; the others ignore it.
            event_data = {"index": [0, 0], "value": text, "row_value": [text], "selected": True}
            msg = call_event(http, fn, [hostile(c, text, upload) for c in fn.inputs], uuid.uuid4().hex, event_data)
            out = json.dumps(msg)
            assert not [s for s in SECRETS if s in out], f"event {fn.name} sent A's queue to B: {out[:500]}"
            error = msg.get("output", {}).get("error") if msg.get("success") is False else ""
            assert error is not None and "preprocess" not in error, f"event {fn.name}: {out[:300]}"
            received.append(msg)
    return received


def a_queue(tmp_path, client: Client) -> None:
    path = tmp_path / "a.jsonl"
    h, t = A_SENTENCE.index("Quuxley"), A_SENTENCE.index("Zorblaxia")
    path.write_text(json.dumps({"text": A_SENTENCE, "head": [h, h + 7], "tail": [t, t + 9]}) + "\n")
    report = client.predict(file=handle_file(str(path)), name="ann-secret-queue", shared=False, api_name="/import_queue")[0]
    assert report.startswith("Imported 1 instance into")
    assert client.predict(choice="", api_name="/annotate_none")[0] == "Item 1: none of these."


def judgements(store) -> str:
    with store.connect() as db:
        return json.dumps(db.execute("select * from annotation_judgements order by id").fetchall())


def test_another_login_and_a_browser_get_nothing_of_an_unshared_queue(tiny_extractor, tmp_path):
    users = [("ann", "pw-ann"), ("bob", "pw-bob")]
    with serve(tiny_extractor, tmp_path / "wb.db", auth=users) as (demo, url, store):
        ann = Client(url, auth=users[0], verbose=False, download_files=False)
        a_queue(tmp_path, ann)
        (queue,) = store.queues("user:ann")
        before = judgements(store)
        with httpx.Client(base_url=url, timeout=60) as bob:
            assert bob.post("/login", data={"username": "bob", "password": "pw-bob"}).status_code == 200
            received = attack(demo, bob, [str(queue["id"]), "user:ann", "ann"], upload_file(bob, tmp_path))
        # Every call reached a handler (no refusal before it): the refusals are the app's own sentences.
        assert all(m["msg"] == "process_completed" for m in received) and any(m.get("success") for m in received)
        assert any("Choose one of your queues" in (m["output"].get("error") or "") for m in received)
        assert judgements(store) == before
        # Bob's only queue is his own, made by "Try the example sentences" from the built-in ones.
        assert [(q["owner"], q["name"]) for q in store.queues("user:bob")] == [("user:bob", "Example sentences")]
        # Ann's own work is untouched and still hers.
        assert ann.predict(api_name="/annotate_undo")[0] == "Undone: item 1 (none of these)."

    with serve(tiny_extractor, tmp_path / "open.db") as (demo, url, store):
        ann = Client(url, verbose=False, download_files=False)
        a_queue(tmp_path, ann)
        (queue,) = [q for q in _all_queues(store)]
        before = judgements(store)
        with httpx.Client(base_url=url, timeout=60) as other:
            attack(demo, other, [str(queue["id"]), queue["owner"]], upload_file(other, tmp_path))
        assert judgements(store) == before


def _all_queues(store):
    with store.connect() as db:
        return [dict(zip(("id", "owner"), r)) for r in db.execute("select id, owner from annotation_queues").fetchall()]
