"""The Annotate tab's handlers on the tiny model (no server), the queue storage, and queue isolation."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import gradio as gr
import pytest

from app.annotate_tab import N_BUTTONS, AnnotateTab
from app.catalogue import Catalogue, load_examples
from app.engine import Engine
from app.relations_tab import RelationsTab
from app.storage import Store, add_judgement, undo_judgement
from app.workbench import Workbench
from emma import read_corpus

from conftest import TOY_SENTENCES


class Request:
    """What the handlers read of a `gr.Request`: the login (None without --auth) and the session hash."""

    def __init__(self, username=None, session_hash="s1") -> None:
        self.username, self.session_hash = username, session_hash


@pytest.fixture
def wb(tiny_extractor, toy_descriptions, tmp_path):
    return Workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"), Catalogue.from_descriptions(toy_descriptions),
                     load_examples())


@pytest.fixture
def tab(wb):
    return AnnotateTab(wb)


def toy_file(tmp_path, n=None, bad=(), name="toy.jsonl"):
    """The toy sentences as text with character spans (and a gold relation), plus `bad` lines."""
    rows = []
    for relation, sentence, head, tail in TOY_SENTENCES[:n]:
        h = sentence.index(head)
        t = sentence.index(tail)
        rows.append({"text": sentence, "head": [h, h + len(head)], "tail": [t, t + len(tail)], "relation": relation})
    lines = [json.dumps(r) for r in rows]
    for at, line in bad:
        lines.insert(at, line)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def view_of(result, offset=0):
    """(state, sentence, progress html, suggestion, ordering, buttons) from a handler's outputs."""
    state, sentence, progress, text, ordering, *buttons = result[offset:]
    return state, sentence, progress, text, buttons


def position(state) -> int | None:
    return state["position"]


def imported(tab, tmp_path, owner="ann", **kwargs):
    session = tab.wb.open_session(f"user:{owner}")
    out = tab.import_file(toy_file(tmp_path, **kwargs), "", False, None, session, Request(owner))
    return session, out


# ---------------------------------------------------------------------- storage


def test_migration_creates_the_annotation_tables(tmp_path):
    store = Store(tmp_path / "wb.db")
    with store.connect() as db:
        assert {"annotation_queues", "annotation_items", "annotation_judgements", "annotation_cursors",
                "annotation_scores"} <= set(db.table_names())
        assert [r["name"] for r in db["_sqlite_migrations"].rows][3] == "m004_annotation"


def items(n):
    return [{"tokens": ["a", "b", "c"], "head": [0, 1], "tail": [2, 3], "line": i + 1} for i in range(n)]


def test_import_is_one_transaction(tmp_path):
    store = Store(tmp_path / "wb.db")
    calls = []

    def crash(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        store.import_queue("user:ann", "q", items(2500), progress=crash, chunk=1000)
    assert calls == [1000, 2000]
    assert store.queues("user:ann") == []
    with store.connect() as db:
        assert db["annotation_items"].count == 0
    # A queue name is per owner: another import under the same name is refused, nothing added.
    store.import_queue("user:ann", "q", items(3))
    with pytest.raises(ValueError, match="already have a queue"):
        store.import_queue("user:ann", "q", items(3))
    with store.connect() as db:
        assert db["annotation_items"].count == 3


def test_position_is_derived_from_judgements_and_undo(tmp_path):
    store = Store(tmp_path / "wb.db")
    q = store.import_queue("user:ann", "q", items(4))
    with store.transaction() as db:
        assert add_judgement(db, {"queue_id": q, "position": 0, "owner": "user:ann", "verdict": "accepted", "relation": "r"})
        assert add_judgement(db, {"queue_id": q, "position": 1, "owner": "user:ann", "verdict": "none"})
        # The same item again (another window): refused, not judged twice.
        assert add_judgement(db, {"queue_id": q, "position": 1, "owner": "user:ann", "verdict": "skipped"}) is None
    reopened = Store(tmp_path / "wb.db")  # a restart
    assert reopened.next_positions(q, "user:ann", n=2) == [2, 3]
    assert reopened.next_positions(q, "user:bob", n=1) == [0]  # another annotator has their own position
    assert reopened.queue_progress(q, "user:ann") == (2, 4)
    with reopened.transaction() as db:
        assert undo_judgement(db, q, "user:ann")["position"] == 1
    assert reopened.next_positions(q, "user:ann", n=1) == [1]
    with pytest.raises(ValueError, match="verdict"):
        with reopened.transaction() as db:
            add_judgement(db, {"queue_id": q, "position": 2, "owner": "user:ann", "verdict": "maybe"})


def test_doubt_order_puts_small_margins_first_then_unscored_in_file_order(tmp_path):
    store = Store(tmp_path / "wb.db")
    q = store.import_queue("user:ann", "q", items(5))
    store.save_scores(q, "k", [(3, 0.01, "x"), (1, 0.5, "y"), (4, 0.2, "z")])
    assert store.next_positions(q, "user:ann", "doubt", "k", n=5) == [3, 4, 1, 0, 2]
    assert store.next_positions(q, "user:ann", "doubt", "other", n=5) == [0, 1, 2, 3, 4]


def test_ten_thousand_instances_import(tmp_path, capsys):
    """Prints the time (not asserted); see the README for the figure on the 2-core machine."""
    store = Store(tmp_path / "wb.db")
    path = tmp_path / "big.jsonl"
    tokens = "The company Tesla was started by Elon Musk and others in a town near the sea .".split()
    path.write_text("".join(json.dumps({"tokens": tokens, "head": [2, 3], "tail": [6, 8]}) + "\n" for _ in range(10000)))
    seen = []
    t0 = time.perf_counter()
    corpus = read_corpus(path)
    t1 = time.perf_counter()
    rows = [{"tokens": r.instance.tokens, "head": r.instance.head, "tail": r.instance.tail, "line": r.line} for r in corpus.records]
    q = store.import_queue("user:ann", "big", rows, progress=lambda done, total: seen.append(done))
    t2 = time.perf_counter()
    assert store.queue_progress(q, "user:ann") == (0, 10000) and seen[-1] == 10000 and len(seen) == 10
    with capsys.disabled():
        print(f"\n10,000 instances: read {1e3 * (t1 - t0):.0f} ms, stored {1e3 * (t2 - t1):.0f} ms")


# ---------------------------------------------------------------------- handlers


def test_import_reports_bad_lines_and_opens_the_queue(tab, tmp_path):
    session = tab.wb.open_session("user:ann")
    bad = [(1, "not json"), (3, json.dumps({"text": "Short .", "head": [0, 5], "tail": [40, 45]})),
           (5, json.dumps({"text": "A and B .", "head": [0, 1], "tail": [6, 7], "relation": "unknown relation"}))]
    report, queues, *rest = tab.import_file(toy_file(tmp_path, bad=bad), "first", False, None, session, Request("ann"))
    assert "Imported 12 instances" in report and "3 bad records" in report
    assert "line 2: not JSON" in report and "line 4: the tail entity \\[40, 45]" in report  # Markdown-escaped
    assert "line 6: the relation 'unknown relation' is not one of the relations in force" in report
    state, sentence, progress, text, buttons = view_of(rest)
    assert position(state) == 0 and "1 / 12" in progress and 'data-position="0"' in progress
    assert [e["entity"] for e in sentence["entities"]] == ["HEAD", "TAIL"]
    assert "Suggestion:" in text and "The file says: founded by" in text
    shown = [b for b in buttons if b.get("visible")]
    assert len(shown) == min(N_BUTTONS, 4)  # four toy relations
    assert queues["choices"] == [("first (12 items)", state["queue"])]


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("not json\nat all\n", "No instance could be imported"),
])
def test_import_refuses_a_file_with_nothing_to_import(tab, tmp_path, content, message):
    path = tmp_path / "f.jsonl"
    path.write_text(content)
    with pytest.raises(gr.Error, match=message):
        tab.import_file(str(path), "", False, None, tab.wb.open_session("user:ann"), Request("ann"))
    assert tab.wb.store.queues("user:ann") == []


def test_the_reasons_nothing_was_imported_read_as_plain_sentences(tab, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "Ann met Bob.", "head": [0, 50], "tail": [8, 11]}\n'
                    '{"text": "Ann met Bob.", "head": [0, 3], "tail": [0, 1]}\n')
    with pytest.raises(gr.Error) as refused:
        tab.import_file(str(path), "", False, None, tab.wb.open_session("user:ann"), Request("ann"))
    message = refused.value.message
    assert re.match(r"^No instance could be imported: line 1: .*\[0, 50\].*; line 2: .*\.$", message), message
    assert "\\" not in message and "\n" not in message  # no Markdown escapes, no list: the toast shows it as it is


def test_import_with_no_relation_in_force_is_refused_and_writes_nothing(tab, tmp_path):
    session = {**tab.wb.open_session("user:ann"), "enabled": [], "user": {}}
    with pytest.raises(gr.Error, match="No relation is switched on"):
        tab.import_file(toy_file(tmp_path), "", False, None, session, Request("ann"))
    assert tab.wb.store.queues("user:ann") == []


def test_share_needs_a_login(tab, tmp_path):
    session = tab.wb.open_session("browser:x")
    with pytest.raises(gr.Error, match="logged-in"):
        tab.import_file(toy_file(tmp_path), "", True, None, session, Request(None))


def test_judge_by_candidate_suggestion_none_skip_and_undo(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    req = Request("ann")
    state = out[2]
    suggested = tab.suggester.cached(state["queue"], 0, next(iter(tab.suggester._cache))[2]).label
    status, *view = tab.judge("accept", "", state, session, "", req)  # Enter
    assert status == f"Item 1: accepted ({suggested})."
    state = view[0]
    assert position(state) == 1 and "2 / 12" in view[2]
    status, *view = tab.judge("accept", 2, view[0], session, "", req)  # key 2
    assert status.startswith("Item 2: accepted (")
    status, *view = tab.judge("none", "", view[0], session, "", req)  # N
    assert status == "Item 3: none of these."
    status, *view = tab.judge("skip", "", view[0], session, "", req)  # S
    assert status == "Item 4: skipped."
    status, *view = tab.undo(view[0], session, "u-1", req)  # U
    assert status == "Undone: item 4 (skipped)." and position(view[0]) == 3
    again, *_ = tab.undo(view[0], session, "u-1", req)  # a retried undo takes back nothing more
    assert again == status and len(tab.wb.store.judgements(state["queue"], "user:ann")) == 3
    status, *view = tab.judge("accept", "capital of", view[0], session, "", req)  # typed with /
    assert status == "Item 4: accepted (capital of)."
    verdicts = [(j["position"], j["verdict"], j["relation"]) for j in tab.wb.store.judgements(state["queue"], "user:ann")]
    assert [v[:2] for v in verdicts] == [(0, "accepted"), (1, "accepted"), (2, "none"), (3, "accepted")]
    assert verdicts[2][2] is None and verdicts[3][2] == "capital of"
    row = tab.wb.store.judgements(state["queue"], "user:ann")[0]
    assert row["checkpoint"] == tab.wb.engine.checkpoint_id and row["suggested"] == suggested


def test_a_key_pressed_once_the_queue_is_done_says_so(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    state, req = out[2], Request("ann")
    for action in ["accept"] * 11 + ["skip"]:
        status, *view = tab.judge(action, "", state, session, "", req)
        state = view[0]
    assert "Every item of this queue is done (12 / 12, judged or skipped)" in view[2] and "press U" in view[2]
    with pytest.raises(gr.Error, match="Every item of this queue is done: press U to undo"):
        tab.judge("accept", "", state, session, "", req)  # Enter again
    assert len(tab.wb.store.judgements(state["queue"], "user:ann")) == 12


@pytest.mark.parametrize("choice, message", [(9, "no candidate 9"), ("flies to", "not one of the relations in force")])
def test_judge_refuses_a_bad_choice(tab, tmp_path, choice, message):
    session, out = imported(tab, tmp_path)
    with pytest.raises(gr.Error, match=message):
        tab.judge("accept", choice, out[2], session, "", Request("ann"))
    assert tab.wb.store.judgements(out[2]["queue"]) == []


def test_a_retried_judgement_writes_once(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    req = Request("ann")
    first = tab.judge("none", "", out[2], session, "rid-1", req)
    again = tab.judge("none", "", out[2], session, "rid-1", req)  # the same request id (a retry)
    assert first[0] == again[0] == "Item 1: none of these."
    assert len(tab.wb.store.judgements(out[2]["queue"])) == 1


def test_two_windows_never_judge_an_item_twice(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    req = Request("ann")
    window_a = window_b = out[2]  # both show item 1
    tab.judge("none", "", window_a, session, "", req)
    status, *view = tab.judge("accept", "", window_b, session, "", req)
    assert "judged already" in status and position(view[0]) == 1
    assert len(tab.wb.store.judgements(out[2]["queue"])) == 1


def test_position_survives_a_reload_and_a_restart(tab, tmp_path, wb, tiny_extractor, toy_descriptions):
    session, out = imported(tab, tmp_path)
    state = out[2]
    for _ in range(3):
        state = tab.judge("skip", "", state, session, "", Request("ann"))[1]
    # A reload: a fresh session state; the tab opens the last queue at the first item not judged.
    queues, *view = tab.show(None, tab.wb.open_session("user:ann"), Request("ann"))
    assert queues["value"] == state["queue"] and position(view[0]) == 3 and "4 / 12" in view[2]
    # A restart: a new workbench on the same database file.
    restarted = AnnotateTab(Workbench(Engine(tiny_extractor), Store(tab.wb.store.path), Catalogue.from_descriptions(toy_descriptions)))
    queues, *view = restarted.show(None, restarted.wb.open_session("user:ann"), Request("ann"))
    assert position(view[0]) == 3


def test_doubt_order_is_scored_in_the_background(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    view = tab.open_queue(out[2]["queue"], "doubt", out[2], session, Request("ann"))
    assert view[4]["value"] == "doubt"
    deadline = time.time() + 60
    while len(list_scores(tab, out[2]["queue"])) < 12 and time.time() < deadline:
        time.sleep(0.05)
    margins = list_scores(tab, out[2]["queue"])
    assert len(margins) == 12
    view = tab.open_queue(out[2]["queue"], "doubt", view[0], session, Request("ann"))
    assert position(view[0]) == min(margins, key=lambda p: (margins[p], p))


def list_scores(tab, queue_id):
    with tab.wb.store.connect() as db:
        return dict(db.execute("select position, margin from annotation_scores where queue_id = ?", [queue_id]).fetchall())


def test_export_round_trips_the_judgements(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    req = Request("ann")
    state = out[2]
    for action, choice in (("accept", "born in"), ("none", ""), ("skip", ""), ("accept", "capital of")):
        state = tab.judge(action, choice, state, session, "", req)[1]
    files, status = tab.export(state, session, req)
    assert "Exported 3 judged items (1 none of these" in status
    assert json.loads(open(files[3]).read()) == {"born in": tab.wb.relations(session)["born in"],
                                                  "capital of": tab.wb.relations(session)["capital of"]}
    contents = []
    for path in files[:3]:
        back = read_corpus(path)
        assert back.bad == []
        contents.append([r.content() for r in back.records])
        assert oct(__import__("os").stat(path).st_mode & 0o777) == "0o600"
    assert contents[0] == contents[1] == contents[2]
    assert [c[3] for c in contents[0]] == ["born in", "no_relation", "capital of"]


def test_agreement_between_two_logins_on_a_shared_queue(tab, tmp_path):
    ann = tab.wb.open_session("user:ann")
    out = tab.import_file(toy_file(tmp_path, n=4), "shared", True, None, ann, Request("ann"))
    bob = tab.wb.open_session("user:bob")
    queues, *view = tab.show(None, bob, Request("bob"))
    assert queues["choices"] == [("shared (4 items, shared with you)", out[2]["queue"])]
    view = tab.open_queue(out[2]["queue"], "file", None, bob, Request("bob"))
    state_a, state_b = out[2], view[0]
    for a, b in ((("accept", "founded by"), ("accept", "founded by")), (("accept", "born in"), ("none", "")),
                 (("none", ""), ("none", "")), (("skip", ""), ("accept", "born in"))):
        state_a = tab.judge(*a, state_a, ann, "", Request("ann"))[1]
        state_b = tab.judge(*b, state_b, bob, "", Request("bob"))[1]
    summary, per_relation, disagreements = tab.agreement(out[2]["queue"], bob, Request("bob"))
    # Overlap (skips left out): 3 items; labels ann [f, b, n], bob [f, n, n]: p_o 2/3, p_e (1*1 + 1*0 + 1*2)/9 = 1/3 → κ 0.5
    assert "3 items judged by both, agree on 2, Cohen's κ = 0.500" in summary
    assert disagreements.to_dict("records") == [{"item": 2, "sentence": TOY_SENTENCES[1][1], "head": "Microsoft",
                                                 "tail": "Bill Gates", "ann": "born in", "bob": "none of these"}]
    assert set(per_relation["relation"]) == {"founded by", "born in", "none of these"}


# ---------------------------------------------------------------------- isolation


def test_queues_of_others_stay_private(tab, tmp_path):
    """A queue not shared is nobody else's: not listed, not opened, not judged, not exported, not measured;
    without --auth a browser never sees a shared queue either."""
    ann = tab.wb.open_session("user:ann")
    out = tab.import_file(toy_file(tmp_path, n=3), "mine", False, None, ann, Request("ann"))
    queue_id = out[2]["queue"]
    tab.judge("none", "", out[2], ann, "", Request("ann"))
    stolen = {"queue": queue_id, "position": 1, "seq": 0}  # a state crafted with ann's queue id
    for owner, request in (("user:eve", Request("eve")), ("browser:x", Request(None, "h2"))):
        eve = tab.wb.open_session(owner)
        queues, *_ = tab.show(stolen, eve, request)
        assert queues["choices"] == []
        for call in (lambda: tab.open_queue(queue_id, "file", stolen, eve, request),
                     lambda: tab.judge("none", "", stolen, eve, "", request),
                     lambda: tab.undo(stolen, eve, request=request),
                     lambda: tab.export(stolen, eve, request),
                     lambda: tab.agreement(queue_id, eve, request)):
            with pytest.raises(gr.Error, match="Choose one of your queues"):
                call()
    # Under --auth, a session of ann's sent by eve is replaced by eve's own (the login decides).
    with pytest.raises(gr.Error, match="Choose one of your queues"):
        tab.judge("none", "", stolen, ann, "", Request("eve"))
    assert len(tab.wb.store.judgements(queue_id)) == 1
    shared = tab.import_file(toy_file(tmp_path, n=3, name="s.jsonl"), "ours", True, None, ann, Request("ann"))
    assert tab.wb.store.queue("browser:x", shared[2]["queue"]) is None
    assert tab.wb.store.queue("user:eve", shared[2]["queue"]) is not None


def test_the_database_refuses_a_second_judgement_of_an_item(tmp_path):
    store = Store(tmp_path / "wb.db")
    q = store.import_queue("user:ann", "q", items(1))
    with store.connect() as db:
        db.execute("insert into annotation_judgements (queue_id, position, owner, verdict, created) values (?, 0, 'user:ann', 'none', 'x')", [q])
        db.conn.commit()
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("insert into annotation_judgements (queue_id, position, owner, verdict, created) values (?, 0, 'user:ann', 'none', 'y')", [q])


def test_suggestions_come_from_the_owners_chosen_model(tab, tmp_path, tiny_extractor, monkeypatch):
    """A user who switched to a fine-tuned version gets its suggestions; the judgement names that model."""
    mine = Engine(tiny_extractor, checkpoint_id="ann-finetuned@1234")
    monkeypatch.setattr(tab.wb, "engine_for", lambda session: mine if session["owner"] == "user:ann" else tab.wb.engine)
    session, out = imported(tab, tmp_path)
    tab.judge("accept", "", out[2], session, "", Request("ann"))
    (row,) = tab.wb.store.judgements(out[2]["queue"], "user:ann")
    assert row["checkpoint"] == "ann-finetuned@1234"
    keys = {key for _, _, key in tab.suggester._cache}
    assert len(keys) == 1  # one model, one relation set: one key; another model would never share its cache entries


def test_two_windows_judging_at_once_lose_nothing_and_judge_nothing_twice(tab, tmp_path):
    """Two windows of one login press keys as fast as they can on the same queue, at the same time."""
    import threading

    session, out = imported(tab, tmp_path)
    statuses, errors = [], []

    def window(state):
        try:
            while state["position"] is not None:  # until this window shows "all judged"
                status, state, *_ = tab.judge("none", "", state, session, "", Request("ann"))
                statuses.append(status)
        except Exception as e:  # noqa: BLE001 - any failure is the test's finding
            errors.append(e)

    threads = [threading.Thread(target=window, args=(dict(out[2]),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    saved = [s for s in statuses if "judged already" not in s and s.startswith("Item")]
    positions = [j["position"] for j in tab.wb.store.judgements(out[2]["queue"], "user:ann")]
    assert len(positions) == len(set(positions)) == len(saved) == 12  # every item once, every saved judgement kept


def test_a_file_over_the_size_limit_is_refused_before_reading(tab, tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.truncate(51_000_000)
    with pytest.raises(gr.Error, match="51 MB; import at most 50 MB"):
        tab.import_file(str(path), "", False, None, tab.wb.open_session("user:ann"), Request("ann"))


@pytest.mark.parametrize("packed, message", [
    (b"\0" * 51_000_000, "unpacks to more than 50 MB"),  # a small upload that unpacks to a large file
    (None, "not a readable gzip file"),
])
def test_a_gzipped_file_is_limited_by_what_it_unpacks_to(tab, tmp_path, packed, message):
    import gzip

    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(packed) if packed else b"\x1f\x8b not gzip at all")
    assert path.stat().st_size < 1_000_000
    relations = RelationsTab(tab.wb)
    for importer in (lambda: tab.import_file(str(path), "", False, None, tab.wb.open_session("user:ann"), Request("ann")),
                     lambda: relations.import_examples(str(path), tab.wb.open_session("user:ann"), "", Request("ann"))):
        with pytest.raises(gr.Error, match=message):
            importer()
    assert tab.wb.store.queues("user:ann") == [] and tab.wb.store.examples("user:ann") == []


def test_json_nested_too_deep_is_a_bad_record_not_a_crash(tab, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(
        {"text": "Paris is in France .", "head": [0, 5], "tail": [12, 18]}) + "\n")
    report, *_ = tab.import_file(str(path), "", False, None, tab.wb.open_session("user:ann"), Request("ann"))
    assert "nested too deeply" in report and len(tab.wb.store.queues("user:ann")) == 1
    relations = RelationsTab(tab.wb)
    with pytest.raises(gr.Error, match="Nothing was imported: line 1: JSON nested too deeply to read"):
        relations.import_examples(str(path), tab.wb.open_session("user:ann"), "", Request("ann"))
    with pytest.raises(gr.Error, match="not valid JSON"):
        relations.import_relations(str(path), tab.wb.open_session("user:ann"), "", Request("ann"))


def test_suggestion_margin_is_the_gap_between_the_two_best_deciding_scores():
    from emma import Prediction
    from app.suggestions import suggestion

    recall = [("a", 0.9), ("b", 0.8), ("c", 0.5), ("d", 0.1)]
    reranked = Prediction(label="b", score=0.7, recall=recall, candidates=["a", "b"], probabilities=[0.3, 0.7], reranked=True,
                          recall_label="a", decision="classifier")
    s = suggestion(reranked)
    assert s.label == "b" and [c for c, _ in s.candidates] == ["b", "a", "c", "d"] and s.margin == pytest.approx(0.4)
    alone = Prediction(label="a", score=0.9, recall=recall, candidates=[], probabilities=[], reranked=False, recall_label="a")
    assert suggestion(alone).margin == pytest.approx(0.1)


def test_judgements_name_a_stored_relation_set(tab, tmp_path):
    session, out = imported(tab, tmp_path)
    tab.judge("none", "", out[2], session, "", Request("ann"))
    (row,) = tab.wb.store.judgements(out[2]["queue"])
    assert tab.wb.store.relation_set(row["relation_set_id"]) == tab.wb.relations(session)


def test_user_text_in_the_import_report_is_not_markup(tab, tmp_path):
    session = tab.wb.open_session("user:ann")
    path = toy_file(tmp_path, n=1, bad=[(1, json.dumps({"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 2], "relation": "[x](javascript:y) <b>"}))])
    report = tab.import_file(path, "*bold* <i>", False, None, session, Request("ann"))[0]
    assert "'\\*bold\\* &lt;i&gt;'" in report and "\\[x](javascript:y) &lt;b&gt;" in report  # no link, no tag


def test_error_analysis_scores_the_files_relations(tab, tmp_path):
    from emma import macro_prf

    session, out = imported(tab, tmp_path)
    state = out[2]
    summary, figure, per_relation, errors = tab.score_file(state, session, Request("ann"))
    key = next(iter(tab.suggester._cache))[2]
    predicted = [tab.suggester.cached(state["queue"], p, key).label for p in range(12)]
    gold = [relation for relation, *_ in TOY_SENTENCES]
    m = macro_prf(gold, predicted)
    assert f"F1 {m['f1']:.1f}" in summary and "12 items" in summary
    assert sum(map(sum, figure.data[0].z)) == 12
    assert len(errors) == sum(g != p for g, p in zip(gold, predicted))
    assert per_relation["in the file"].sum() == 12


def test_error_analysis_needs_labelled_items(tab, tmp_path):
    session = tab.wb.open_session("user:ann")
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"tokens": ["a", "b", "c"], "head": [0, 1], "tail": [2, 3]}) + "\n")
    state = tab.import_file(str(path), "", False, None, session, Request("ann"))[2]
    with pytest.raises(gr.Error, match="No item of this queue has a relation"):
        tab.score_file(state, session, Request("ann"))


def test_a_differing_row_opens_in_the_predict_tab(tab, tmp_path):
    from app.predict_tab import PredictTab

    session, out = imported(tab, tmp_path)
    state = out[2]
    *_, errors = tab.score_file(state, session, Request("ann"))
    row = list(errors.iloc[0]) if not errors.empty else [1]  # the tiny model got every item right: item 1 then
    item = tab.wb.store.queue_item(state["queue"], int(row[0]) - 1)

    def click(row_value):
        return gr.SelectData(None, {"index": [0, 1], "value": "", "row_value": row_value, "col_value": []})

    sentence, head, tail, spans, marked, hint, tabs = tab.open_error(PredictTab(tab.wb), state, session, click(row), Request("ann"))
    assert sentence.split() == list(item["tokens"])
    assert head == " ".join(item["tokens"][slice(*item["head"])]) and sentence[slice(*spans["head"])] == head
    assert tail == " ".join(item["tokens"][slice(*item["tail"])]) and tabs["selected"] == "predict-tab"
    with pytest.raises(gr.Error, match="no longer shown"):
        tab.open_error(PredictTab(tab.wb), state, session, click(["not a number"]), Request("ann"))
    with pytest.raises(gr.Error, match="not in this queue"):
        tab.open_error(PredictTab(tab.wb), state, session, click([999]), Request("ann"))
    with pytest.raises(gr.Error):  # another user's session cannot open ann's queue
        tab.open_error(PredictTab(tab.wb), state, tab.wb.open_session("user:bob"), click(row), Request("bob"))


def test_the_example_sentences_make_a_queue_once_with_their_labels_where_in_force(tiny_extractor, toy_descriptions, tmp_path):
    examples = load_examples()
    in_force = examples[0]["relation"]
    wb = Workbench(Engine(tiny_extractor), Store(tmp_path / "wb.db"),
                   Catalogue.from_descriptions({**toy_descriptions, in_force: f"{in_force}: a relation"}), examples)
    tab = AnnotateTab(wb)
    session = wb.open_session("user:ann")
    report, queues, *view = tab.import_examples(None, session, Request("ann"))
    assert report.startswith(f"Imported {len(examples)} instances into the queue 'Example sentences'")
    [queue] = wb.store.queues("user:ann")
    assert queues["value"] == queue["id"] and queue["n_items"] == len(examples)
    _, sentence, *_ = view_of(view)
    assert sentence["text"] == examples[0]["text"]
    with wb.store.connect() as db:
        gold = [r[0] for r in db.execute("select gold from annotation_items where queue_id = ? order by position", [queue["id"]])]
    # Only the relation in force is kept as the file's label; the others come without one.
    assert gold == [e["relation"] if e["relation"] == in_force else None for e in examples]
    # A second click opens the same queue: nothing imported twice.
    report, queues, *view = tab.import_examples(None, session, Request("ann"))
    assert report == "Opened your queue 'Example sentences' again." and queues["value"] == queue["id"]
    assert len(wb.store.queues("user:ann")) == 1
    # Another user gets a queue of their own.
    tab.import_examples(None, wb.open_session("user:bob"), Request("bob"))
    assert [q["owner"] for q in wb.store.queues("user:bob")] == ["user:bob"]


def test_two_clicks_at_once_on_the_example_sentences_open_one_queue(wb, tab, monkeypatch):
    session = wb.open_session("user:ann")
    tab.import_examples(None, session, Request("ann"))
    # The second click checked for the queue before the first had made it, then met it on import.
    real, calls = tab._open_sample, []
    monkeypatch.setattr(tab, "_open_sample", lambda annotation, ctx: calls.append(1) or (real(annotation, ctx) if len(calls) > 1 else None))
    report, queues, *_ = tab.import_examples(None, session, Request("ann"))
    assert report == "Opened your queue 'Example sentences' again." and len(calls) == 2
    assert len(wb.store.queues("user:ann")) == 1
