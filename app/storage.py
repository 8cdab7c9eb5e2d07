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
    annotation_*    imported queues of instances (m004): queues, items, judgements (one per item and
                    annotator), each annotator's chosen order, the model's doubt per item and relation set
    model_versions  fine-tuned models (m005): name, owner, checkpoint id, parent, rows used, report, created
    model_choice    owner -> the model version their predictions use (absent: the server's model)
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


@migrations()
def m004_annotation(db: Database) -> None:
    """Annotation queues (see the "annotation queues" block of `Store`)."""
    db["annotation_queues"].create(
        {"id": int, "owner": str, "name": str, "shared": int, "source": str, "format": str, "n_items": int, "created": str},
        pk="id", not_null={"owner", "name", "created"},
    )
    db["annotation_queues"].create_index(["owner", "name"], unique=True)
    db["annotation_items"].create(
        {
            "queue_id": int,
            "position": int,  # file order, from 0
            "line": int,  # where it came from in the imported file (None: not known)
            "tokens": str,  # JSON list of words
            "head": str,  # JSON [start, end) over tokens
            "tail": str,
            "text": str,  # the original text when the file had one (character-span formats), else None
            "head_chars": str,  # JSON [start, end) over text, or None
            "tail_chars": str,
            "gold": str,  # the file's relation, "no_relation" for a negative, None when unlabelled
        },
        pk=("queue_id", "position"), not_null={"tokens", "head", "tail"},
    )
    db["annotation_judgements"].create(
        {
            "id": int,
            "queue_id": int,
            "position": int,
            "owner": str,
            "verdict": str,  # "accepted" | "none" | "skipped"
            "relation": str,  # the accepted relation (None unless accepted)
            "suggested": str,  # the model's suggestion shown
            "checkpoint": str,  # emma.checkpoint_id of the model that suggested
            "relation_set_id": str,
            "created": str,
        },
        pk="id", not_null={"queue_id", "position", "owner", "verdict", "created"},
    )
    # One judgement per item and annotator: two windows of the same login never judge an item twice.
    db["annotation_judgements"].create_index(["queue_id", "owner", "position"], unique=True)
    db["annotation_cursors"].create({"queue_id": int, "owner": str, "ordering": str, "updated": str},
                                    pk=("queue_id", "owner"))
    # The model's doubt per item and relation set (set id + examples digest), for the "most doubtful first" order.
    db["annotation_scores"].create({"queue_id": int, "position": int, "set_key": str, "margin": float, "label": str},
                                   pk=("queue_id", "set_key", "position"))


@migrations()
def m005_model_versions(db: Database) -> None:
    """Fine-tuned models (see the "model versions" block of `Store`)."""
    db["model_versions"].create(
        {
            "name": str,  # also its folder under the workbench's models folder
            "owner": str,  # whose labels it was fine-tuned on: only they can use it (it has learnt their sentences)
            "checkpoint": str,  # emma.checkpoint_id of the new weights
            "parent": str,  # emma.checkpoint_id of the model it started from
            "rows": int,  # labelled rows trained on
            "held_back": int,  # labelled rows scored before and after
            "report": str,  # the fine-tune's JSON report
            "created": str,
        },
        pk="name", not_null={"owner", "checkpoint", "created"},
    )
    db["model_choice"].create({"owner": str, "name": str, "updated": str}, pk="owner")


@migrations()
def m006_numbers_per_owner(db: Database) -> None:
    """Feedback rows and examples numbered per owner (1, 2, …): the numbers a user sees and removes by. Row ids are
    shared by every user, so "Saved feedback #9" on a first judgement told a user how many rows others had saved."""
    db["numbers"].create({"owner": str, "kind": str, "last": int}, pk=("owner", "kind"))  # the last number given
    for table in ("feedback", "examples"):
        db[table].add_column("number", int)
        db.execute(f"with r as (select id, row_number() over (partition by owner order by id) as n from {table}) "
                   f"update {table} set number = (select n from r where r.id = {table}.id)")
        db[table].create_index(["owner", "number"], unique=True)
        db.execute(f"insert into numbers (owner, kind, last) select owner, '{table}', max(number) from {table} "
                   f"group by owner")


def next_number(db: Database, table: str, owner: str) -> int:
    """The owner's next number in `table` ("feedback" or "examples"), inside the write transaction. Never given twice,
    even after the latest row is removed: a retried "remove example #3" must not remove a newer #3."""
    row = db.execute("select last from numbers where owner = ? and kind = ?", [owner, table]).fetchone()
    number = (row[0] if row else 0) + 1
    db.execute("insert or replace into numbers (owner, kind, last) values (?, ?, ?)", [owner, table, number])
    return number


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

    def update_workspace(self, owner: str, change: Callable[[list[str] | None], list[str]]) -> list[str]:
        """Replace the owner's enabled catalogue labels with `change(the stored ones, None when never saved)`, read
        and written in one transaction: two switches at once (two windows) both stand. Returns the new labels."""
        with self.transaction() as db:
            rows = list(db["workspaces"].rows_where("owner = ?", [owner]))
            enabled = change(json.loads(rows[0]["enabled"]) if rows else None)
            db["workspaces"].upsert({"owner": owner, "enabled": json.dumps(enabled), "updated": now()}, pk="owner")
        return enabled

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
            return insert_feedback(db, row, relations)[0]

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
        """The owner's examples, oldest first: {id, number, relation, tokens, head, tail, created, feedback_id,
        feedback_number} (JSON decoded; `number` and `feedback_number` are the owner's own, as shown)."""
        with self.connect() as db:
            rows = db.query("select e.*, f.number as feedback_number from examples e left join feedback f "
                            "on f.id = e.feedback_id where e.owner = ? order by e.id", [owner])
            return [{**r, "tokens": json.loads(r["tokens"]), "head": json.loads(r["head"]), "tail": json.loads(r["tail"])}
                    for r in rows]

    def labelled(self, owner: str) -> list[tuple[str, str, str, str]]:
        """The owner's examples as stored (relation, tokens JSON, head JSON, tail JSON), oldest first: what
        prediction reads, so plain SQL (5 ms for 1,000 examples, against 20-40 through `rows_where` dicts)."""
        with self.connect() as db:
            return db.execute("select relation, tokens, head, tail from examples where owner = ? order by id", [owner]).fetchall()

    def annotated(self, owner: str) -> list[tuple[str, str, str, str]]:
        """The owner's accepted annotation judgements, as `labelled` gives examples (relation, tokens, head, tail JSON),
        oldest first. Not examples (suggestions would change under the annotator at every key), but training rows."""
        with self.connect() as db:
            return db.execute(
                "select j.relation, i.tokens, i.head, i.tail from annotation_judgements j join annotation_items i"
                " on i.queue_id = j.queue_id and i.position = j.position"
                " where j.owner = ? and j.verdict = 'accepted' order by j.id", [owner]).fetchall()

    def example_counts(self, owner: str) -> dict[str, int]:
        """{relation: number of the owner's examples}."""
        with self.connect() as db:
            return dict(db.execute("select relation, count(*) from examples where owner = ? group by relation", [owner]).fetchall())

    # ------------------------------------------------------------------ annotation queues
    # A queue is an imported file of instances, owned by its importer. Under --auth a queue can be
    # shared: then every login ("user:" owners) sees it and judges it separately; judgements are per
    # (item, annotator), so two logins give two judgements and agreement can be measured on the overlap.
    # Browser and API owners never see another owner's queue. A user's position is derived from their
    # judgements (the first item they have not judged in their chosen order), so it survives reloads,
    # restarts and other windows without a cursor to keep in step.

    def import_queue(self, owner: str, name: str, items: list[dict], shared: bool = False, source: str = "",
                     fmt: str = "", progress: Callable[[int, int], None] | None = None, chunk: int = 1000) -> int:
        """Create a queue of `items` ({tokens, head, tail, line?, text?, head_chars?, tail_chars?, gold?}) in one
        transaction (a crash leaves no part of it); returns its id. `progress(done, total)` is called per chunk.

        Raises:
            ValueError: the owner already has a queue of that name, or `shared` without a login.
        """
        if shared and not owner.startswith("user:"):
            raise ValueError("only a logged-in user can share a queue (start the workbench with --auth)")
        with self.transaction() as db:
            if db.execute("select 1 from annotation_queues where owner = ? and name = ?", [owner, name]).fetchone():
                raise ValueError(f"you already have a queue named {name!r}")
            table = db["annotation_queues"]
            table.insert({"owner": owner, "name": name, "shared": int(shared), "source": source, "format": fmt,
                          "n_items": len(items), "created": now()})
            queue_id = table.last_pk
            for start in range(0, len(items), chunk):
                rows = [_item_row(queue_id, start + i, item) for i, item in enumerate(items[start : start + chunk])]
                db.conn.executemany(
                    "insert into annotation_items (queue_id, position, line, tokens, head, tail, text, head_chars, tail_chars, gold)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                if progress:
                    progress(min(start + chunk, len(items)), len(items))
            return queue_id

    def queues(self, owner: str) -> list[dict]:
        """The queues `owner` may open (their own, and shared ones for logins), newest first."""
        with self.connect() as db:
            rows = db.execute(f"select * from annotation_queues where {VISIBLE} order by id desc", [owner, owner]).fetchall()
            columns = [c.name for c in db["annotation_queues"].columns]
        return [dict(zip(columns, r)) for r in rows]

    def queue(self, owner: str, queue_id: int) -> dict | None:
        """One queue if `owner` may open it, else None (whether it exists is not told)."""
        return next((q for q in self.queues(owner) if q["id"] == int(queue_id)), None)

    def queue_item(self, queue_id: int, position: int) -> dict | None:
        with self.connect() as db:
            rows = list(db["annotation_items"].rows_where("queue_id = ? and position = ?", [queue_id, position]))
        return _decoded_item(rows[0]) if rows else None

    def queue_items(self, queue_id: int) -> list[dict]:
        """Every item of a queue in file order (JSON decoded)."""
        with self.connect() as db:
            return [_decoded_item(r) for r in db["annotation_items"].rows_where("queue_id = ?", [queue_id], order_by="position")]

    def next_positions(self, queue_id: int, owner: str, ordering: str = "file", set_key: str = "", n: int = 1) -> list[int]:
        """The next `n` items `owner` has not judged: file order, or "doubt" (smallest scored margin under
        `set_key` first, then the items not scored yet in file order)."""
        if ordering not in ("file", "doubt"):
            raise ValueError(f"ordering={ordering!r}: use 'file' or 'doubt'")
        order = "i.position" if ordering == "file" else "s.margin is null, s.margin, i.position"
        sql = (f"select i.position from annotation_items i left join annotation_scores s on s.queue_id = i.queue_id"
               f" and s.position = i.position and s.set_key = ? where i.queue_id = ? and not exists (select 1 from"
               f" annotation_judgements j where j.queue_id = i.queue_id and j.position = i.position and j.owner = ?)"
               f" order by {order} limit ?")
        with self.connect() as db:
            return [r[0] for r in db.execute(sql, [set_key, queue_id, owner, int(n)]).fetchall()]

    def queue_progress(self, queue_id: int, owner: str) -> tuple[int, int]:
        """(items `owner` has judged, skips included; items in the queue)."""
        with self.connect() as db:
            done = db.execute("select count(*) from annotation_judgements where queue_id = ? and owner = ?", [queue_id, owner]).fetchone()[0]
            total = db.execute("select count(*) from annotation_items where queue_id = ?", [queue_id]).fetchone()[0]
        return done, total

    def judgements(self, queue_id: int, owner: str | None = None) -> list[dict]:
        """Judgements of a queue (one annotator's, or everyone's), oldest first."""
        where, params = "queue_id = ?", [queue_id]
        if owner is not None:
            where, params = where + " and owner = ?", params + [owner]
        with self.connect() as db:
            return list(db["annotation_judgements"].rows_where(where, params, order_by="id"))

    def ordering(self, queue_id: int, owner: str) -> str:
        """The order `owner` chose for this queue ("file" until they choose)."""
        with self.connect() as db:
            row = db.execute("select ordering from annotation_cursors where queue_id = ? and owner = ?", [queue_id, owner]).fetchone()
        return row[0] if row else "file"

    def set_ordering(self, queue_id: int, owner: str, ordering: str) -> None:
        if ordering not in ("file", "doubt"):
            raise ValueError(f"ordering={ordering!r}: use 'file' or 'doubt'")
        with self.transaction() as db:
            db["annotation_cursors"].upsert({"queue_id": queue_id, "owner": owner, "ordering": ordering, "updated": now()},
                                            pk=("queue_id", "owner"))

    def last_queue(self, owner: str) -> int | None:
        """The queue `owner` opened last and may still open (None: none)."""
        with self.connect() as db:
            row = db.execute(f"select c.queue_id from annotation_cursors c join annotation_queues q on q.id = c.queue_id"
                             f" where c.owner = ? and {VISIBLE.replace('owner', 'q.owner').replace('shared', 'q.shared')}"
                             f" order by c.updated desc limit 1", [owner, owner, owner]).fetchone()
        return row[0] if row else None

    def judged(self, queue_id: int, owner: str, position: int) -> bool:
        with self.connect() as db:
            return db.execute("select 1 from annotation_judgements where queue_id = ? and owner = ? and position = ?",
                              [queue_id, owner, position]).fetchone() is not None

    def save_scores(self, queue_id: int, set_key: str, scores: list[tuple[int, float, str]]) -> None:
        """Store the model's margin and suggestion per item position under a relation set key."""
        with self.transaction() as db:
            db.conn.executemany("insert or replace into annotation_scores (queue_id, position, set_key, margin, label)"
                                " values (?, ?, ?, ?, ?)", [(queue_id, p, set_key, m, lab) for p, m, lab in scores])

    def unscored_positions(self, queue_id: int, set_key: str, limit: int) -> list[int]:
        with self.connect() as db:
            return [r[0] for r in db.execute(
                "select position from annotation_items i where queue_id = ? and not exists (select 1 from annotation_scores s"
                " where s.queue_id = i.queue_id and s.position = i.position and s.set_key = ?) order by position limit ?",
                [queue_id, set_key, int(limit)]).fetchall()]


    # ------------------------------------------------------------------ model versions

    def add_model_version(self, row: dict) -> None:
        """Record a fine-tuned model (a `model_versions` row); a name is recorded once."""
        with self.transaction() as db:
            db["model_versions"].insert({**row, "created": row.get("created") or now()}, pk="name", ignore=True)

    def model_versions(self, owner: str) -> list[dict]:
        """`owner`'s fine-tuned models, oldest first."""
        with self.connect() as db:
            return list(db["model_versions"].rows_where("owner = ?", [owner], order_by="created"))

    def model_version(self, name: str) -> dict | None:
        with self.connect() as db:
            rows = list(db["model_versions"].rows_where("name = ?", [name]))
        return rows[0] if rows else None

    def delete_model_version(self, owner: str, name: str) -> str:
        """Forget `owner`'s version `name` unless they predict with it, in one transaction (a choice made meanwhile
        in another tab is seen). Returns "deleted", "in use" or "not theirs" (also for a version deleted already)."""
        with self.transaction() as db:
            if not list(db["model_versions"].rows_where("name = ? and owner = ?", [name, owner])):
                return "not theirs"
            if list(db["model_choice"].rows_where("owner = ? and name = ?", [owner, name])):
                return "in use"
            db["model_versions"].delete_where("name = ? and owner = ?", [name, owner])
            return "deleted"

    def model_choice(self, owner: str) -> str | None:
        """The model version `owner` chose for their predictions (None: the server's model)."""
        with self.connect() as db:
            rows = list(db["model_choice"].rows_where("owner = ?", [owner]))
        return rows[0]["name"] if rows else None

    def choose_model(self, owner: str, name: str | None) -> None:
        """Use model version `name` for `owner`'s predictions from now on (None: the server's model)."""
        with self.transaction() as db:
            if name is None:
                db["model_choice"].delete_where("owner = ?", [owner])
            else:
                db["model_choice"].upsert({"owner": owner, "name": name, "updated": now()}, pk="owner")


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
                               "created": now(), "feedback_id": feedback_id, "number": next_number(db, "examples", owner)})
    return old[0] if old else None


def count_examples(db: Database, owner: str, relation: str) -> int:
    return db.execute("select count(*) from examples where owner = ? and relation = ?", [owner, relation]).fetchone()[0]


def delete_example(db: Database, owner: str, number: int) -> str | None:
    """Delete the owner's example with this number (theirs, as shown); returns its relation (None: they have no such
    example)."""
    rows = list(db["examples"].rows_where("owner = ? and number = ?", [owner, number]))
    if not rows:
        return None
    db.execute("delete from examples where owner = ? and number = ?", [owner, number])
    return rows[0]["relation"]


def upsert_user_relation(db: Database, owner: str, name: str, description: str, text: str, stamp: str | None = None) -> None:
    stamp = stamp or now()
    old = list(db["user_relations"].rows_where("owner = ? and name = ?", [owner, name]))
    created = old[0]["created"] if old else stamp
    db["user_relations"].upsert(
        {"owner": owner, "name": name, "description": description, "text": text, "created": created, "updated": stamp},
        pk=("owner", "name"),
    )


def add_user_relation(db: Database, owner: str, name: str, description: str, text: str) -> bool:
    """Store a new relation of `owner`'s unless one of that name is stored (it is left as it is); True if added."""
    if db["user_relations"].count_where("owner = ? and name = ?", [owner, name]):
        return False
    upsert_user_relation(db, owner, name, description, text)
    return True


def replace_user_relations(db: Database, owner: str, relations: dict[str, tuple[str, str]], enabled: list[str]) -> None:
    stamp = now()
    for name, (description, text) in relations.items():
        upsert_user_relation(db, owner, name, description, text, stamp)
    db["workspaces"].upsert({"owner": owner, "enabled": json.dumps(enabled), "updated": stamp}, pk="owner")


def delete_user_relation(db: Database, owner: str, name: str) -> None:
    db.execute("delete from user_relations where owner = ? and name = ?", [owner, name])


def insert_feedback(db: Database, row: dict, relations: dict[str, str]) -> tuple[int, int]:
    """Insert one feedback row and its relation set; returns (row id, the owner's number for it)."""
    set_id = relation_set_id(relations)
    db["relation_sets"].insert(
        {"id": set_id, "relations": json.dumps(relations, ensure_ascii=False), "size": len(relations), "created": now()},
        pk="id",
        ignore=True,
    )
    table = db["feedback"]
    number = next_number(db, "feedback", row.get("owner"))
    table.insert({**row, "relation_set_id": set_id, "n_relations": len(relations), "created": row.get("created") or now(),
                  "number": number})
    return table.last_pk, number


# ---------------------------------------------------------------------- annotation queues (inside a transaction)

# Who may open a queue: its owner, and every login when it is shared (parameters: owner, owner).
VISIBLE = "(owner = ? or (shared = 1 and ? like 'user:%'))"
VERDICTS = ("accepted", "none", "skipped")


def _json_or_none(value) -> str | None:
    return None if value is None else json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)


def _item_row(queue_id: int, position: int, item: dict) -> tuple:
    return (queue_id, position, item.get("line"), json.dumps(list(item["tokens"]), ensure_ascii=False),
            json.dumps(list(item["head"])), json.dumps(list(item["tail"])), item.get("text"),
            _json_or_none(item.get("head_chars")), _json_or_none(item.get("tail_chars")), item.get("gold"))


def _decoded_item(row: dict) -> dict:
    out = dict(row)
    for key in ("tokens", "head", "tail", "head_chars", "tail_chars"):
        out[key] = json.loads(row[key]) if row[key] is not None else None
    return out


def remember_relation_set(db: Database, relations: dict[str, str]) -> str:
    """Store a relation set once (content-addressed, as feedback rows do); returns its id."""
    set_id = relation_set_id(relations)
    if not db.execute("select 1 from relation_sets where id = ?", [set_id]).fetchone():
        db["relation_sets"].insert({"id": set_id, "relations": json.dumps(relations, ensure_ascii=False), "size": len(relations),
                                    "created": now()}, pk="id")
    return set_id


def add_judgement(db: Database, row: dict) -> int | None:
    """Insert one judgement ({queue_id, position, owner, verdict, relation, suggested, checkpoint, relation_set_id});
    returns its id, or None when this annotator has judged that item already (e.g. in another window)."""
    if row["verdict"] not in VERDICTS:
        raise ValueError(f"verdict={row['verdict']!r}: use one of {VERDICTS}")
    if db.execute("select 1 from annotation_judgements where queue_id = ? and owner = ? and position = ?",
                  [row["queue_id"], row["owner"], row["position"]]).fetchone():
        return None
    table = db["annotation_judgements"]
    table.insert({**row, "created": row.get("created") or now()})
    return table.last_pk


def undo_judgement(db: Database, queue_id: int, owner: str) -> dict | None:
    """Delete `owner`'s latest judgement in the queue; returns it (None: nothing to undo)."""
    rows = list(db["annotation_judgements"].rows_where("queue_id = ? and owner = ?", [queue_id, owner],
                                                         order_by="id desc", limit=1))
    if not rows:
        return None
    db.execute("delete from annotation_judgements where id = ?", [rows[0]["id"]])
    return rows[0]


def forget_requests(db: Database, owner: str, prefix: str) -> None:
    """Forget `owner`'s remembered request ids that start with `prefix` (in the caller's transaction)."""
    db.execute("delete from requests where owner = ? and substr(request_id, 1, ?) = ?", [owner, len(prefix), prefix])


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
