"""The workbench launched on 127.0.0.1 and driven through its named API with gradio_client."""

from __future__ import annotations

import contextlib
import re
import threading
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.workbench import Workbench
from app.layout import build_demo, launch
from app.storage import Store

SENTENCE = "Apple was founded by Steve Jobs in 1976."


@contextlib.contextmanager
def serve(workbench: Workbench):
    """Launch the app in this process (prevent_thread_lock) and close it afterwards."""
    demo = build_demo(workbench)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """(url, store, owner of a client) of one workbench per module on the tiny model and the real catalogue.

    Started once: each test is its own client (its own session and owner) and looks only at its own rows.
    """
    from emma import Extractor

    extractor = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    store = Store(tmp_path_factory.mktemp("client") / "workbench.db")
    wb = Workbench(Engine(extractor), store, Catalogue.load(), load_examples())
    with serve(wb) as url:
        yield url, store, lambda c: wb.identity.session_owner(c.session_hash)


def client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def test_predict_add_relation_feedback(server):
    url, store, owner_of = server
    c = client(url)
    record = c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    assert record["n_relations"] == 135 and len(record["recall"]) == 135
    assert record["label"] in {name for name, _ in record["recall"]}
    assert (record["head"], record["tail"]) == ([0, 5], [21, 31])

    status = c.predict(name="works at", description="person who is employed by this organization", api_name="/add_relation")
    assert status == "Added 'works at'; 136 relations in force."
    record = c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    ranks = [name for name, _ in record["recall"]]
    assert record["n_relations"] == 136 and "works at" in ranks

    # Another client (another user) does not see it.
    other = client(url).predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    assert other["n_relations"] == 135 and "works at" not in {n for n, _ in other["recall"]}

    label = "works at" if record["label"] != "works at" else "founded by"
    status = c.predict(verdict="wrong", correct_relation=label, note="from the API test", api_name="/feedback")
    assert re.match(r"Saved feedback #\d+: wrong", status)
    rows = store.feedback(owner=owner_of(c))
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["sentence"], row["head_text"], row["tail_text"], row["user_label"]) == (SENTENCE, "Apple", "Steve Jobs", label)
    assert row["owner"].startswith("session:") and row["n_relations"] == 136
    assert "works at" in store.relation_set(row["relation_set_id"])
    # The judged sentence is an example at once: the next /predict uses it; /remove_example forgets it.
    assert f"It is now an example of '{label}'" in status
    again = c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    assert again["n_examples"] == 1 and again["recall_parts"][label][1] > 0.9
    [example] = store.examples(row["owner"])
    assert c.predict(example_id=str(example["id"]), api_name="/remove_example") == f"Removed example #{example['id']} of '{label}'."
    assert store.examples(row["owner"]) == []

    c.predict(name="works at", description="person paid by this organization", api_name="/edit_relation")
    assert store.user_relations(row["owner"]) == {"works at": "person paid by this organization"}
    assert c.predict(name="works at", api_name="/delete_relation").startswith("Deleted 'works at'; 135")
    assert store.user_relations(row["owner"]) == {}


@pytest.mark.parametrize("endpoint, kwargs, message", [
    ("/predict", dict(sentence="", head="Apple", tail="Steve Jobs"), "Enter a sentence first."),
    ("/predict", dict(sentence=SENTENCE, head="Google", tail="Steve Jobs"), "The head entity 'Google' does not occur in the sentence."),
    ("/predict", dict(sentence=SENTENCE, head="Steve Jobs", tail="Jobs"), "The head and tail entities overlap"),
    ("/predict", dict(sentence="word " * 500, head="word", tail="word"), "at most 2000"),
    ("/add_relation", dict(name="works at", description="\u200b"), "The description has no visible characters"),
    ("/add_relation", dict(name="twin", description="country: sovereign state of this item; don't use on humans"),
     "Relation 'country' already has this description"),
    ("/add_relation", dict(name="country", description="land"), "'country' is a catalogue relation"),
    ("/feedback", dict(verdict="correct", correct_relation="", note=""), "Predict a relation first"),
    ("/feedback", dict(verdict="maybe", correct_relation="", note=""), "Predict a relation first"),
    ("/add_relation", dict(name="\u200b", description="zero-width name"), "Give the relation a name."),
    ("/remove_example", dict(example_id="one"), "Give the number of one of your examples"),
    ("/remove_example", dict(example_id="1"), "You have no example #1."),
])
def test_bad_input_gives_an_error_and_no_rows(server, endpoint, kwargs, message):
    url, store, owner_of = server
    c = client(url)
    with pytest.raises(AppError, match=message):
        c.predict(**kwargs, api_name=endpoint)
    assert len(store.feedback(owner=owner_of(c))) == 0 and store.user_relations(owner_of(c)) == {}


@pytest.mark.slow
def test_concurrent_clients_lose_no_feedback(server):
    """8 clients at once, each submitting 25 feedback rows: all 200 arrive."""
    url, store, owner_of = server
    errors, owners = [], []

    def annotate(i: int) -> None:
        try:
            c = client(url)
            owners.append(owner_of(c))
            c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
            for j in range(25):
                c.predict(verdict="correct", correct_relation="", note=f"client {i} row {j}", api_name="/feedback")
        except Exception as e:  # collected and reported below: a thread's exception would be lost
            errors.append(repr(e))

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors
    rows = store.feedback()
    rows = rows[rows["owner"].isin(owners)]
    assert len(rows) == 200
    assert len(set(rows["note"])) == 200 and rows["owner"].nunique() == 8


def test_login_keeps_relations_per_user_across_restarts(tiny_extractor, tmp_path):
    """With --auth, a user's relations belong to the login and survive a server restart."""
    db = tmp_path / "workbench.db"
    for restart in range(2):
        wb = Workbench(Engine(tiny_extractor), Store(db), Catalogue.load(), load_examples())
        demo = build_demo(wb)
        _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True, auth=[("ann", "pw1"), ("bob", "pw2")])
        try:
            ann = Client(url, auth=("ann", "pw1"), verbose=False)
            # The direct route of /predict asks for the login like every other.
            anonymous = httpx.post(url + "gradio_api/run/predict", json={"data": [SENTENCE, "Apple", "Steve Jobs", None, None],
                                                                       "session_hash": "anonymous-1"}, timeout=30)
            assert anonymous.status_code == 401 and "Steve Jobs" not in anonymous.text
            if restart == 0:
                ann.predict(name="works at", description="person who is employed by this organization", api_name="/add_relation")
            record = ann.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
            assert record["n_relations"] == 136 and "works at" in {n for n, _ in record["recall"]}
            bob = Client(url, auth=("bob", "pw2"), verbose=False)
            assert bob.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")["n_relations"] == 135
        finally:
            demo.close()
    assert Store(db).user_relations("user:ann") == {"works at": "person who is employed by this organization"}


def test_predict_is_one_post_and_its_session_is_the_servers(server):
    """/predict answers a direct POST (not queued: one round trip). The session input comes from the server's
    state for that session hash: one sent in the body, here another owner's with three relations, is ignored."""
    url, store, owner_of = server
    forged = {"owner": "user:ann", "enabled": ["founded by", "member of", "country"], "user": {}, "last": None}
    with httpx.Client(base_url=url, timeout=60) as http:
        response = http.post("/gradio_api/run/predict", json={"data": [SENTENCE, "Apple", "Steve Jobs", None, forged],
                                                              "session_hash": "direct-client-1"})
        assert response.status_code == 200
        [record, _] = response.json()["data"]
        assert record["n_relations"] == 135 and (record["head"], record["tail"]) == ([0, 5], [21, 31])
        refused = http.post("/gradio_api/run/predict", json={"data": [SENTENCE, "Google", "Steve Jobs", None, None],
                                                             "session_hash": "direct-client-1"})
        assert "The head entity 'Google' does not occur in the sentence." in refused.text
        # Events that change data stay queued: no direct route to them.
        assert http.post("/gradio_api/run/feedback", json={"data": ["correct", "", "", None, None],
                                                            "session_hash": "direct-client-1"}).status_code != 200
    assert len(store.feedback(owner=owner_of(SimpleNamespace(session_hash="direct-client-1")))) == 0


def test_bad_verdict_gets_the_apps_own_message(server):
    url, store, owner_of = server
    c = client(url)
    c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    with pytest.raises(AppError, match="Choose whether the prediction was correct or wrong") as e:
        c.predict(verdict="maybe", correct_relation="", note="", api_name="/feedback")
    assert "choices" not in str(e.value)
    with pytest.raises(AppError, match="The relation name is longer than 100 characters"):
        c.predict(verdict="wrong", correct_relation="x" * 101, note="", api_name="/feedback")
    assert len(store.feedback(owner=owner_of(c))) == 0


def test_a_new_correct_relation_over_http_is_taught_by_that_sentence(server):
    url, store, owner_of = server
    c = client(url)
    c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    status = c.predict(verdict="wrong", correct_relation="started by", note="", api_name="/feedback")
    assert status.startswith("Saved feedback #") and "'started by' is a new relation of yours" in status
    assert store.user_relations(owner_of(c)) == {"started by": ""}
    # The client's session has it: the next prediction scores it, by its example alone.
    record = c.predict(sentence=SENTENCE.replace("1976", "1977"), head="Apple", tail="Steve Jobs", api_name="/predict")
    assert record["n_relations"] == 136 and record["n_examples"] == 1
    assert record["recall_parts"]["started by"][1] is not None  # its examples' cosine
    [row] = store.examples(owner_of(c))
    assert row["relation"] == "started by"


def test_request_ids_make_writes_idempotent_over_http(server):
    url, store, owner_of = server
    c = client(url)
    first = c.predict(name="works at", description="employed by this organization", request_id="r-add", api_name="/add_relation")
    assert c.predict(name="works at", description="employed by this organization", request_id="r-add",
                     api_name="/add_relation") == first
    c.predict(sentence=SENTENCE, head="Apple", tail="Steve Jobs", api_name="/predict")
    saved = c.predict(verdict="correct", correct_relation="", note="", request_id="r-fb", api_name="/feedback")
    assert c.predict(verdict="correct", correct_relation="", note="", request_id="r-fb", api_name="/feedback") == saved
    assert len(store.feedback(owner=owner_of(c))) == 1 and store.user_relations(owner_of(c)) == {
        "works at": "employed by this organization"}


def test_wrong_host_and_oversized_requests_are_refused(server):
    url, store, owner_of = server
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/config").status_code == 200
        assert http.get("/config", headers={"Host": "localhost"}).status_code == 200
        refused = http.get("/config", headers={"Host": "rebind.attacker.example"})
        assert refused.status_code == 403 and "host name" in refused.text
        big = http.post("/gradio_api/queue/join", content=b"x" * 3_000_000, headers={"content-type": "application/json"})
        assert big.status_code == 413 and "larger than 2 MB" in big.text
        upload = http.post("/gradio_api/upload", files={"files": ("set.json", b"{" + b" " * 1_500_000 + b"}", "application/json")})
        assert upload.status_code == 413
