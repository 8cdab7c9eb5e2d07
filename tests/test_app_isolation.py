"""Isolation tested as an attacker would: every registered event of the Blocks, called over HTTP as
user B with user A's identifiers, returns nothing of A's and changes nothing of A's.

Events are called the way a browser calls them (POST /gradio_api/queue/join with an fn_index, then
the server-sent events of /gradio_api/queue/data), so events hidden from the API list are attacked
too. Loopback only.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.feedback_tab import FeedbackTab
from app.predict_tab import PredictTab
from app.relations_tab import RelationsTab
from app.workbench import Workbench
from app.layout import build_demo, launch
from app.storage import Store

SENTENCE = "Apple was founded by Steve Jobs in 1976."
A_RELATION = "annrel"
A_DESCRIPTION = "zebracorn keeper of the private orchard"
A_SENTENCE = "Quuxley founded Zorblaxia in 1999."
A_SIMILAR = "Quuxley founded Zorblaxia in 2001."
A_NOTE = "ann private note wombat"
SECRETS = (A_DESCRIPTION, "zebracorn", "Quuxley", "Zorblaxia", "wombat")


@contextlib.contextmanager
def serve(tiny_extractor, db, auth=None, admins=()):
    wb = Workbench(Engine(tiny_extractor), Store(db), Catalogue.load(), load_examples(), admins=admins)
    demo = build_demo(wb)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True, auth=auth)
    try:
        yield demo, url.rstrip("/"), wb.store
    finally:
        demo.close()


def call_event(http: httpx.Client, fn, data: list, session_hash: str, event_data=None) -> dict:
    """Run one event by its fn_index, as the browser does; returns the completion (or refusal) message."""
    trigger = fn.targets[0][0] if fn.targets else None
    body = {"data": data, "fn_index": fn._id, "session_hash": session_hash, "event_data": event_data, "trigger_id": trigger}
    r = http.post("/gradio_api/queue/join", json=body)
    if r.status_code != 200:
        return {"msg": "refused", "status": r.status_code, "detail": r.text}
    event_id = r.json()["event_id"]
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    return msg
    raise AssertionError(f"no completion for fn {fn._id}")


def hostile_value(component, text: str, upload):
    """What B sends for one input: A's identifier wherever a string fits, the widest switch elsewhere."""
    if isinstance(component, gr.BrowserState):
        return text
    if isinstance(component, gr.State):
        return None  # the server keeps state; a client's value is ignored
    if isinstance(component, gr.Dataset):
        return 0  # the first example
    if isinstance(component, gr.UploadButton):
        return upload
    if isinstance(component, gr.Checkbox):
        return True  # "everyone's feedback"
    if isinstance(component, gr.CheckboxGroup):
        return []  # its choices are the caller's own search results; Gradio checks them
    if getattr(component, "elem_id", None) in ("head", "tail"):
        return {"head": "Apple", "tail": "Steve Jobs"}[component.elem_id]
    if getattr(component, "elem_id", None) == "sentence":
        return SENTENCE
    return text


def attack(demo, http: httpx.Client, identifiers: list[str], session_hashes: list[str], upload) -> list[dict]:
    """Every event × every identifier × every session hash; returns the messages B received."""
    received = []
    for fn in demo.fns.values():
        if fn.fn is None:
            continue
        for text in identifiers:
            data = [hostile_value(c, text, upload) for c in fn.inputs]
            event_data = {"index": [0, 5], "value": text, "row_value": [text, "", ""], "selected": True}
            for session_hash in session_hashes:
                msg = call_event(http, fn, data, session_hash, event_data)
                out = json.dumps(msg)
                leaks = [s for s in SECRETS if s in out]
                assert not leaks, f"event {fn._id} ({fn.name}) sent to B: {leaks} in {out[:500]}"
                received.append(msg)
                # Whatever B sends, a failure is the app's own sentence (or a refusal), never an unexplained crash
                # nor Gradio's internal validation message.
                error = msg.get("output", {}).get("error") if msg.get("success") is False else ""
                assert error is not None and "choices" not in error and "preprocess" not in error, f"event {fn._id} ({fn.name}): {out[:300]}"
    return received


def snapshot(store: Store, owners: list[str]) -> str:
    """Everything stored for `owners`, as one comparable string."""
    marks = ",".join("?" * len(owners))
    with store.connect() as db:
        return json.dumps({table: db.execute(f"select * from {table} where owner in ({marks}) order by 1, 2", owners).fetchall()
                           for table in ("workspaces", "user_relations", "feedback", "examples", "model_versions", "model_choice")})


def upload_file(http: httpx.Client, tmp_path) -> dict:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({A_RELATION: "bob's attempt to overwrite ann's relation"}))
    with open(path, "rb") as f:
        r = http.post("/gradio_api/upload", files={"files": ("set.json", f, "application/json")})
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": "set.json", "meta": {"_type": "gradio.FileData"}}


def give_a_data(client: Client) -> None:
    """A's relation, a judged sentence (an example of A's relation), and an example of a catalogue relation B has too."""
    client.predict(name=A_RELATION, description=A_DESCRIPTION, api_name="/add_relation")
    client.predict(sentence=A_SENTENCE, head="Quuxley", tail="Zorblaxia", api_name="/predict")
    client.predict(verdict="wrong", correct_relation=A_RELATION, note=A_NOTE, api_name="/feedback")
    client.predict(sentence=A_SIMILAR, head="Quuxley", tail="Zorblaxia", api_name="/predict")
    status = client.predict(verdict="correct", correct_relation="", note="", api_name="/feedback")
    assert "It is now an example of" in status


def assert_uninfluenced(record: dict) -> None:
    """A prediction that used no labelled example (B has none; A's must never count)."""
    assert record["n_examples"] == 0 and record["examples"] == {}
    assert all(ex is None for _, ex in record["recall_parts"].values())


def test_attacker_under_auth_gets_nothing_of_another_user(tiny_extractor, tmp_path):
    users = [("ann", "pw-ann"), ("bob", "pw-bob"), ("carl", "pw-carl")]
    with serve(tiny_extractor, tmp_path / "wb.db", auth=users, admins=["carl"]) as (demo, url, store):
        ann = Client(url, auth=users[0], verbose=False, download_files=False)
        give_a_data(ann)
        # A fine-tuned version of ann's, as a finished fine-tune leaves it (B must not delete, choose or read it).
        a_version = store.path.parent / "models" / "ft-ann-version"
        a_version.mkdir(parents=True)
        (a_version / "model.safetensors").write_bytes(b"weights")
        store.add_model_version({"name": a_version.name, "owner": "user:ann", "checkpoint": "ft-ann-version@0", "parent": "p",
                                 "rows": 12, "held_back": 3, "report": "{}"})
        before = snapshot(store, ["user:ann"])
        assert A_NOTE in before
        a_examples = [str(e["number"]) for e in store.examples("user:ann")]
        assert len(a_examples) == 2 and "Quuxley" in json.dumps(store.examples("user:ann"))

        with httpx.Client(base_url=url, timeout=60) as bob:
            assert bob.post("/login", data={"username": "bob", "password": "pw-bob"}).status_code == 200
            # Ann's session hash is bound to her login: B can neither send events on it nor read its stream.
            on_ann = attack(demo, bob, [A_RELATION], [ann.session_hash], upload_file(bob, tmp_path))
            assert all(m["msg"] == "refused" and m["status"] == 403 for m in on_ann)
            stream = bob.get("/gradio_api/queue/data", params={"session_hash": ann.session_hash})
            assert stream.status_code == 403 and "another login" in stream.text
            # Nor by dressing the body up: whitespace before the JSON, or a body Gradio could not read either.
            fn = next(f for f in demo.fns.values() if f.api_name == "predict")
            join = {"data": [], "fn_index": fn._id, "session_hash": ann.session_hash, "trigger_id": None}
            padded = bob.post("/gradio_api/queue/join", content=b" \n" + json.dumps(join).encode(),
                              headers={"content-type": "application/json"})
            assert padded.status_code == 403, padded.text
            broken = bob.post("/gradio_api/queue/join", content=b'{"session_hash": "x", ', headers={"content-type": "application/json"})
            assert broken.status_code == 400
            # /predict's direct route (it is not queued) checks the same; no queued event answers there at all.
            direct = {"data": [A_SENTENCE, "Quuxley", "Zorblaxia", None, None], "session_hash": ann.session_hash}
            refused = bob.post("/gradio_api/run/predict", json=direct)
            assert refused.status_code == 403 and "Quuxley" not in refused.text
            assert bob.post("/gradio_api/run/predict", content=b'{"session_hash": "x", ',
                            headers={"content-type": "application/json"}).status_code == 400
            queued = [f.api_name for f in demo.fns.values() if isinstance(f.api_name, str) and f.queue]
            assert len(queued) > 20 and "predict" not in queued
            for name in queued:
                r = bob.post(f"/gradio_api/run/{name}", json={"data": [], "session_hash": uuid.uuid4().hex})
                assert r.status_code == 404, (name, r.status_code, r.text[:200])
            # A's example numbers too: B's remove_example (and everything else) must refuse them.
            received = attack(demo, bob, [A_RELATION, "user:ann", "ann", a_version.name, *a_examples], [uuid.uuid4().hex],
                              upload_file(bob, tmp_path))
        assert sum(m.get("success") is True for m in received) > len(received) // 3, "the attack must reach the handlers"
        assert snapshot(store, ["user:ann"]) == before and (a_version / "model.safetensors").is_file()

        # B predicting A's sentences is not influenced by A's examples (same relations in force but A's own).
        bob_client = Client(url, auth=users[1], verbose=False, download_files=False)
        for text in (A_SENTENCE, A_SIMILAR):
            assert_uninfluenced(bob_client.predict(sentence=text, head="Quuxley", tail="Zorblaxia", api_name="/predict"))
        assert store.examples("user:bob") == []

        # Ann still works with her own session after B used its hash, and her examples still count.
        record = ann.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
        assert A_RELATION in {n for n, _ in record["recall"]}
        assert record["n_examples"] == 2

        # Only the admin sees everyone's feedback, owner ids included.
        view = next(fn for fn in demo.fns.values() if fn.name == "feedback_view")
        with httpx.Client(base_url=url, timeout=60) as carl:
            assert carl.post("/login", data={"username": "carl", "password": "pw-carl"}).status_code == 200
            msg = call_event(carl, view, ["all", "", True, None], uuid.uuid4().hex)
        assert msg["success"] and A_NOTE in json.dumps(msg) and "user:ann" in json.dumps(msg)


def test_attacker_without_auth_cannot_open_another_browsers_workspace(tiny_extractor, tmp_path):
    with serve(tiny_extractor, tmp_path / "wb.db") as (demo, url, store):
        load = next(fn for fn in demo.fns.values() if fn.name == "on_load")
        add = next(fn for fn in demo.fns.values() if fn.api_name == "add_relation")
        with httpx.Client(base_url=url, timeout=60) as a:
            a_hash = uuid.uuid4().hex
            msg = call_event(a, load, [None, "", SENTENCE, "Apple", "Steve Jobs", None], a_hash)
            token = msg["output"]["data"][1]
            assert len(token) == 43
            assert call_event(a, add, [A_RELATION, A_DESCRIPTION, None, ""], a_hash)["success"]
            # A reload with the token finds the workspace; the token never appears as the owner.
            again = call_event(a, load, [token, "", SENTENCE, "Apple", "Steve Jobs", None], uuid.uuid4().hex)
        with store.connect() as db:
            owners = [r[0] for r in db.execute("select owner from user_relations")]
        assert len(owners) == 1 and owners[0].startswith("browser:") and token not in owners[0]
        a_owner = owners[0]
        assert again["success"] and A_RELATION in json.dumps(again["output"])

        api_client = Client(url, verbose=False, download_files=False)
        give_a_data(api_client)
        owners = [a_owner] + [r for r in store.feedback()["owner"]]
        before = snapshot(store, owners)

        with httpx.Client(base_url=url, timeout=60) as b:
            identifiers = [*set(owners), a_owner.split(":", 1)[1], A_RELATION]
            received = attack(demo, b, identifiers, [uuid.uuid4().hex], upload_file(b, tmp_path))
        assert snapshot(store, owners) == before
        # Owner ids are never shown to anyone without --admin, not even one's own.
        with store.connect() as db:
            b_owners = {r[0] for r in db.execute("select owner from workspaces union select owner from user_relations")} - set(owners)
        assert b_owners and not any(o in json.dumps(m) for m in received for o in b_owners)


@pytest.mark.parametrize("everyone", [False, True])
def test_feedback_of_others_is_never_listed_or_exported(tiny_extractor, tmp_path, everyone):
    """Direct handler calls: a non-admin's view and export hold only their rows; "everyone" is refused."""
    wb = Workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.load(), load_examples())
    predict, fb = PredictTab(wb), FeedbackTab(wb)

    class Request:
        def __init__(self, name):
            self.username, self.session_hash = name, uuid.uuid4().hex

    ann, bob = Request("ann"), Request("bob")
    fresh, _ = predict.predict(A_SIMILAR, "Quuxley", "Zorblaxia", {}, None, bob)  # before A labelled anything
    _, session = predict.predict(A_SENTENCE, "Quuxley", "Zorblaxia", {}, None, ann)
    fb.feedback("correct", None, A_NOTE, session, request=ann)
    [a_example] = wb.store.examples("user:ann")
    if everyone:
        with pytest.raises(gr.Error, match="Only an admin"):
            fb.feedback_view("all", "", True, None, bob)
        with pytest.raises(gr.Error, match="Only an admin"):
            fb.export_feedback("all", "", True, None, bob)
        return
    # B's request with A's session (a session hash reused by another login) gets only B's own things.
    assert len(fb.feedback_view("all", "", False, session, bob)) == 0
    paths, _ = fb.export_feedback("all", "", False, session, bob)
    assert not any(A_NOTE in open(p, encoding="utf-8").read() for p in paths)
    assert "owner" not in fb.feedback_view("all", "", False, session, ann).columns
    relations = RelationsTab(wb)
    # A's example counts for A, never for B: B's prediction equals B's before A labelled anything.
    assert predict.predict(A_SIMILAR, "Quuxley", "Zorblaxia", {}, session, ann)[0]["n_examples"] == 1
    after, _ = predict.predict(A_SIMILAR, "Quuxley", "Zorblaxia", {}, session, bob)
    assert_uninfluenced(after)
    assert after["recall"] == fresh["recall"] and after["label"] == fresh["label"]
    assert relations.relation_views("", session, bob)[4].empty and "labelled" not in relations.relation_views("", session, bob)[2]
    assert relations.pick_example(session, type("Select", (), {"row_value": [a_example["number"]]})(), bob) == ""
    with pytest.raises(gr.Error, match=f"You have no example #{a_example['number']}"):
        relations.remove_example(str(a_example["number"]), session, request=bob)
    assert wb.store.examples("user:ann") == [a_example]
    session, _ = relations.add_relation(A_RELATION, A_DESCRIPTION, session, request=ann)
    assert predict.show_prediction(session, bob)[2] == ""
    assert A_RELATION not in json.dumps(relations.relation_views("", session, bob)[3].to_dict())
    assert relations.pick_user_relation(session, type("Select", (), {"row_value": [A_RELATION]})(), bob) == ("", "")
    assert A_RELATION not in open(relations.export_relations(session, bob), encoding="utf-8").read()
    with pytest.raises(gr.Error, match="no relation named"):
        relations.delete_relation(A_RELATION, session, request=bob)
    with pytest.raises(gr.Error, match="Predict a relation first"):
        fb.feedback("correct", None, None, session, request=bob)
    assert wb.store.user_relations("user:ann") == {A_RELATION: A_DESCRIPTION}
