"""Feedback rows and examples are numbered per owner: what one user sees says nothing of how many rows others saved."""

from __future__ import annotations

import sqlite3

from app.storage import Store, delete_example, replace_example

ROW = {"sentence": "Ann met Bob .", "predicted": "r", "verdict": "correct", "tokens": '["Ann", "met", "Bob", "."]',
       "head_tokens": "[0, 1]", "tail_tokens": "[2, 3]"}


def test_each_owner_counts_from_one_and_removes_by_their_own_number(tmp_path):
    store = Store(tmp_path / "wb.db")
    for owner in ("user:ann", "user:ann", "user:bob", "user:ann"):
        store.add_feedback({**ROW, "owner": owner}, {"r": "r: x"})
    numbers = lambda owner: sorted(store.feedback(owner=owner)["number"])  # noqa: E731
    assert numbers("user:ann") == [1, 2, 3] and numbers("user:bob") == [1]
    with store.transaction() as db:
        replace_example(db, "user:ann", ["Ann", "met", "Bob"], [0, 1], [2, 3], "r")
        replace_example(db, "user:bob", ["Bob", "met", "Ann"], [0, 1], [2, 3], "r")
        replace_example(db, "user:bob", ["Cy", "met", "Di"], [0, 1], [2, 3], "q")
    assert [e["number"] for e in store.examples("user:bob")] == [1, 2]
    with store.transaction() as db:
        assert delete_example(db, "user:ann", 2) is None  # bob's #2 is not ann's to remove
        assert delete_example(db, "user:bob", 2) == "q"
        replace_example(db, "user:bob", ["Ed", "met", "Flo"], [0, 1], [2, 3], "q")
    assert [e["number"] for e in store.examples("user:bob")] == [1, 3]  # a removed number is never given again


def test_an_older_database_gets_numbers_per_owner_in_the_order_rows_were_saved(tmp_path):
    path = tmp_path / "wb.db"
    store = Store(path)
    for owner in ("user:ann", "user:bob", "user:ann"):
        store.add_feedback({**ROW, "owner": owner}, {"r": "r: x"})
    with store.transaction() as db:
        replace_example(db, "user:bob", ["Ann", "met", "Bob"], [0, 1], [2, 3], "r")
    # Back to the schema before numbers: no column, no index, the migration not applied.
    with sqlite3.connect(path) as db:
        for table in ("feedback", "examples"):
            db.execute(f"drop index idx_{table}_owner_number")
            db.execute(f"alter table {table} drop column number")
        db.execute("drop table numbers")
        db.execute("delete from _sqlite_migrations where name = 'm006_numbers_per_owner'")
    store = Store(path)
    rows = store.feedback().sort_values("id")
    assert list(zip(rows["owner"], rows["number"])) == [("user:ann", 1), ("user:bob", 1), ("user:ann", 2)]
    assert [e["number"] for e in store.examples("user:bob")] == [1]
    store.add_feedback({**ROW, "owner": "user:bob"}, {"r": "r: x"})
    assert sorted(store.feedback(owner="user:bob")["number"]) == [1, 2]
    # The counter starts where the backfill ended: bob's removed #1 is not given to his next example.
    with store.transaction() as db:
        assert delete_example(db, "user:bob", 1) == "r"
        replace_example(db, "user:bob", ["Cy", "met", "Di"], [0, 1], [2, 3], "q")
    assert [e["number"] for e in store.examples("user:bob")] == [2]
