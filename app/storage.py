"""SQLite storage for the workbench: user relations, per-user settings, feedback.

Gradio runs handlers on a pool of worker threads, and a sqlite3 connection (hence a sqlite-utils
`Database`) may not be shared across threads. So every call opens its own connection with a busy
timeout, on a database in WAL mode (readers never block the one writer), and closes it again.
Writes happen inside `db.atomic()`, so a failed call leaves nothing half-written. The schema is a
list of sqlite-utils `Migrations`, applied when the store opens.

The file holds annotation data: it is created 0600, and its folder 0700 when the store creates it.

Tables:
    settings        key/value (server secrets: the owner-id HMAC key, the BrowserState secret)
    workspaces      owner -> enabled catalogue labels (JSON list)
    user_relations  (owner, name) -> description, text the encoder reads
    relation_sets   content-addressed relation sets ({name: text} JSON), one per distinct set
    feedback        one row per judgement, with everything needed to reproduce and retrain
    examples        an owner's labelled sentences (tokens, head and tail token spans as JSON, the relation,
                    the feedback row it came from): one per (owner, sentence, spans), the latest
                    judgement's; prediction uses them at once (their vectors are a cache, never stored)
    requests        (owner, request id) -> action and status line of a write, so a retried request
                    with the same client request id returns the first result and writes nothing
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

BUSY_TIMEOUT_S = 30.0

logger = logging.getLogger(__name__)

migrations = Migrations("emma-workbench")


@migrations()
def m001_initial(db: Database) -> None:
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["workspaces"].create({"owner": str, "enabled": str, "updated": str}, pk="owner")
    db["user_relations"].create(
        {"owner": str, "name": str, "description": str, "text": str, "created": str, "updated": str},
        pk=("owner", "name"),
    )
    db["relation_sets"].create({"id": str, "relations": str, "size": int, "created": str}, pk="id")
    db["feedback"].create(
        {
            "id": int,
            "created": str,  # ISO 8601, UTC
            "owner": str,
            "checkpoint": str,
            "emma_version": str,
            "sentence": str,
            "head_start": int,  # character offsets, end exclusive
            "head_end": int,
            "tail_start": int,
            "tail_end": int,
            "head_text": str,
            "tail_text": str,
            "tokens": str,  # JSON list: the words the model saw
            "head_tokens": str,  # JSON [start, end) over tokens
            "tail_tokens": str,
            "predicted": str,
            "score": float,
            "recall_label": str,
            "reranked": int,
            "candidates": str,  # JSON [{relation, recall_rank, recall_score, classifier_rank, probability}]
            "recall": str,  # JSON [[relation, cosine], ...] top of the recall ranking
            "verdict": str,  # "correct" | "wrong"
            "user_label": str,  # the correct relation (None: wrong, but the user did not say which)
            "user_label_description": str,
            "predicted_description": str,
            "note": str,
            "relation_set_id": str,
            "n_relations": int,
        },
        pk="id",
        not_null={"created", "owner", "sentence", "predicted", "verdict", "relation_set_id"},
    )
    db["feedback"].create_index(["owner"])
    db["feedback"].create_index(["created"])


@migrations()
def m002_request_ids(db: Database) -> None:
    db["requests"].create({"owner": str, "request_id": str, "action": str, "result": str, "created": str},
                          pk=("owner", "request_id"))


@migrations()
def m003_examples(db: Database) -> None:
    db["examples"].create(
        {
            "id": int,
            "owner": str,
            "relation": str,
            "tokens": str,  # JSON list of words
            "head": str,  # JSON [start, end) over tokens
            "tail": str,
            "created": str,
            "feedback_id": int,  # the feedback row it came from (None: added otherwise)
        },
        pk="id",
        not_null={"owner", "relation", "tokens", "head", "tail", "created"},
    )
    # One example per sentence and spans per owner: judging a sentence again replaces its example.
    db["examples"].create_index(["owner", "tokens", "head", "tail"], unique=True)


class RequestIdReused(ValueError):
    """A client request id already used by the same owner for another action."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def relation_set_id(relations: dict[str, str]) -> str:
    """Content hash of an ordered {name: text} set (the same set always gets the same id)."""
    blob = json.dumps(list(relations.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Store:
    """The workbench database at `path` (created and migrated on open).

    Example:
        >>> store = Store(tmp_path / "workbench.db")
        >>> store.save_user_relation("user:ann", "founded by", "founder of it", "founded by: founder of it")
        >>> store.user_relations("user:ann")
        {'founded by': 'founder of it'}
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        make_private(self.path)
        with self.connect() as db:
            db.enable_wal()
            migrations.apply(db)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Database]:
        """A fresh connection for this call only (sqlite3 connections stay on their thread)."""
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S)
        try:
            yield Database(conn)
        finally:
            conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A fresh connection holding the write lock from the start (BEGIN IMMEDIATE).

        A deferred transaction that reads first and writes later fails at once with "database is
        locked" when another connection wrote in between (WAL snapshot conflict, no busy wait);
        taking the lock up front makes writers queue on the busy timeout instead. sqlite-utils
        calls inside run in `db.atomic()` savepoints of this transaction.
        """
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                with db.atomic():
                    yield db
            except BaseException:
                db.conn.rollback()
                raise
            db.conn.commit()

    # ------------------------------------------------------------------ settings

    def secret(self, key: str = "browser_state_secret") -> str:
        """A random secret created once per database (survives restarts)."""
        with self.transaction() as db:
            rows = list(db["settings"].rows_where("key = ?", [key]))
            if rows:
                return rows[0]["value"]
            value = secrets.token_urlsafe(24)
            db["settings"].insert({"key": key, "value": value})
            return value

    # ------------------------------------------------------------------ relations

    def workspace(self, owner: str) -> list[str] | None:
        """The owner's enabled catalogue labels, or None when never saved."""
        with self.connect() as db:
            rows = list(db["workspaces"].rows_where("owner = ?", [owner]))
        return json.loads(rows[0]["enabled"]) if rows else None

    def save_workspace(self, owner: str, enabled: list[str]) -> None:
        with self.transaction() as db:
            db["workspaces"].upsert({"owner": owner, "enabled": json.dumps(enabled), "updated": now()}, pk="owner")

    def user_relations(self, owner: str) -> dict[str, str]:
        """{name: description} of the owner's relations, oldest first."""
        with self.connect() as db:
            rows = db["user_relations"].rows_where("owner = ?", [owner], order_by="created, rowid")
            return {r["name"]: r["description"] for r in rows}

    def save_user_relation(self, owner: str, name: str, description: str, text: str) -> None:
        """Insert or update one relation (the creation time of an edited one is kept)."""
        with self.transaction() as db:
            upsert_user_relation(db, owner, name, description, text)

    def replace_user_relations(self, owner: str, relations: dict[str, tuple[str, str]], enabled: list[str]) -> None:
        """Write several relations ({name: (description, text)}) and the enabled set in one transaction."""
        with self.transaction() as db:
            replace_user_relations(db, owner, relations, enabled)

    def delete_user_relation(self, owner: str, name: str) -> None:
        with self.transaction() as db:
            delete_user_relation(db, owner, name)

    # ------------------------------------------------------------------ client request ids

    def request_result(self, owner: str, request_id: str | None, action: str) -> str | None:
        """The status line of an earlier write with this request id, or None."""
        if not request_id:
            return None
        with self.connect() as db:
            return _prior_result(db, owner, request_id, action)

    def once(self, owner: str, request_id: str | None, action: str, write: Callable[[Database], str]) -> str:
        """Run `write(db)` (returning a status line) in one transaction, remembered under the request id.

        A request id seen before returns its first status line and writes nothing; the check and the
        write share the transaction, so two concurrent retries cannot both write.
        """
        with self.transaction() as db:
            if request_id:
                prior = _prior_result(db, owner, request_id, action)
                if prior is not None:
                    return prior
            result = write(db)
            if request_id:
                db["requests"].insert({"owner": owner, "request_id": request_id, "action": action,
                                       "result": result, "created": now()})
            return result

    # ------------------------------------------------------------------ feedback

    def add_feedback(self, row: dict, relations: dict[str, str]) -> int:
        """Insert one feedback row and its relation set (stored once per distinct set); returns the row id."""
        with self.transaction() as db:
            return insert_feedback(db, row, relations)

    def relation_set(self, set_id: str) -> dict[str, str]:
        with self.connect() as db:
            rows = list(db["relation_sets"].rows_where("id = ?", [set_id]))
        if not rows:
            raise KeyError(set_id)
        return json.loads(rows[0]["relations"])

    def feedback(self, owner: str | None = None, verdict: str | None = None, contains: str = "",
                 limit: int | None = None) -> pd.DataFrame:
        """Feedback rows, newest first, optionally only one owner's, one verdict, matching text, the newest `limit`."""
        where, params = [], []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if verdict:
            where.append("verdict = ?")
            params.append(verdict)
        if contains and contains.strip():
            like = f"%{contains.strip().lower()}%"
            where.append("(lower(sentence) like ? or lower(predicted) like ? or lower(coalesce(user_label, '')) like ? or lower(coalesce(note, '')) like ?)")
            params += [like] * 4
        sql = "select * from feedback" + (" where " + " and ".join(where) if where else "") + " order by id desc"
        if limit is not None:
            sql += f" limit {int(limit)}"
        with self.connect() as db:
            columns = [c.name for c in db["feedback"].columns]
            rows = db.execute(sql, params).fetchall()
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype(object).where(frame.notna(), None)  # SQL NULL stays None, not NaN

    def count_feedback(self) -> int:
        with self.connect() as db:
            return db["feedback"].count

    # ------------------------------------------------------------------ labelled examples

    def examples(self, owner: str) -> list[dict]:
        """The owner's examples, oldest first: {id, relation, tokens, head, tail, created, feedback_id} (JSON decoded)."""
        with self.connect() as db:
            rows = db["examples"].rows_where("owner = ?", [owner], order_by="id")
            return [{**r, "tokens": json.loads(r["tokens"]), "head": json.loads(r["head"]), "tail": json.loads(r["tail"])}
                    for r in rows]

    def labelled(self, owner: str) -> list[tuple[str, str, str, str]]:
        """The owner's examples as stored (relation, tokens JSON, head JSON, tail JSON), oldest first: what
        prediction reads, so plain SQL (5 ms for 1,000 examples, against 20-40 through `rows_where` dicts)."""
        with self.connect() as db:
            return db.execute("select relation, tokens, head, tail from examples where owner = ? order by id", [owner]).fetchall()

    def example_counts(self, owner: str) -> dict[str, int]:
        """{relation: number of the owner's examples}."""
        with self.connect() as db:
            return dict(db.execute("select relation, count(*) from examples where owner = ? group by relation", [owner]).fetchall())


# ---------------------------------------------------------------------- writes inside a transaction


EXAMPLE_KEY = "owner = ? and tokens = ? and head = ? and tail = ?"


def _example_key(owner: str, tokens, head, tail) -> list:
    return [owner, json.dumps(list(tokens), ensure_ascii=False), json.dumps(list(head)), json.dumps(list(tail))]


def other_examples(db: Database, owner: str, tokens, head, tail) -> int:
    """How many examples the owner has besides the one for this sentence and spans."""
    return db.execute(f"select count(*) from examples where owner = ? and not ({EXAMPLE_KEY})",
                      [owner, *_example_key(owner, tokens, head, tail)]).fetchone()[0]


def replace_example(db: Database, owner: str, tokens: list[str], head: list[int], tail: list[int], relation: str | None,
                    feedback_id: int | None = None) -> str | None:
    """Make `relation` (None: nothing) the owner's example for this sentence and spans; returns the relation it had before."""
    key = _example_key(owner, tokens, head, tail)
    where = EXAMPLE_KEY
    old = [r["relation"] for r in db["examples"].rows_where(where, key)]
    db.execute(f"delete from examples where {where}", key)
    if relation:
        db["examples"].insert({"owner": owner, "relation": relation, "tokens": key[1], "head": key[2], "tail": key[3],
                               "created": now(), "feedback_id": feedback_id})
    return old[0] if old else None


def delete_example(db: Database, owner: str, example_id: int) -> str | None:
    """Delete one of the owner's examples; returns its relation (None: the owner has no such example)."""
    rows = list(db["examples"].rows_where("owner = ? and id = ?", [owner, example_id]))
    if not rows:
        return None
    db.execute("delete from examples where owner = ? and id = ?", [owner, example_id])
    return rows[0]["relation"]


def upsert_user_relation(db: Database, owner: str, name: str, description: str, text: str, stamp: str | None = None) -> None:
    stamp = stamp or now()
    old = list(db["user_relations"].rows_where("owner = ? and name = ?", [owner, name]))
    created = old[0]["created"] if old else stamp
    db["user_relations"].upsert(
        {"owner": owner, "name": name, "description": description, "text": text, "created": created, "updated": stamp},
        pk=("owner", "name"),
    )


def replace_user_relations(db: Database, owner: str, relations: dict[str, tuple[str, str]], enabled: list[str]) -> None:
    stamp = now()
    for name, (description, text) in relations.items():
        upsert_user_relation(db, owner, name, description, text, stamp)
    db["workspaces"].upsert({"owner": owner, "enabled": json.dumps(enabled), "updated": stamp}, pk="owner")


def delete_user_relation(db: Database, owner: str, name: str) -> None:
    db.execute("delete from user_relations where owner = ? and name = ?", [owner, name])


def insert_feedback(db: Database, row: dict, relations: dict[str, str]) -> int:
    set_id = relation_set_id(relations)
    db["relation_sets"].insert(
        {"id": set_id, "relations": json.dumps(relations, ensure_ascii=False), "size": len(relations), "created": now()},
        pk="id",
        ignore=True,
    )
    table = db["feedback"]
    table.insert({**row, "relation_set_id": set_id, "n_relations": len(relations), "created": row.get("created") or now()})
    return table.last_pk


def _prior_result(db: Database, owner: str, request_id: str, action: str) -> str | None:
    rows = list(db["requests"].rows_where("owner = ? and request_id = ?", [owner, request_id]))
    if not rows:
        return None
    if rows[0]["action"] != action:
        raise RequestIdReused(f"request id used before for {rows[0]['action']}")
    return rows[0]["result"]


def make_private(path: Path) -> None:
    """Create the database file 0600 (and its folder 0700 when it does not exist yet); tighten an existing file."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    elif path.parent.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("the folder of %s is readable by other users; the database file itself is kept 0600", path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name.exists():
            os.chmod(name, 0o600)
