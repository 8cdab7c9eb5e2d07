"""What every session shares (the model, the store, the catalogue) and whose session an event is.

`Workbench` holds the shared resources; the three tabs (`predict_tab`, `relations_tab`,
`feedback_tab`) each hold their handlers, which take everything per user as arguments (the session
dict from `gr.State`) and return new values, so they can be called directly in tests. Bad input
raises `gr.Error` with one plain sentence (through `BadInput`), before anything is written.

Who owns a session's relations and feedback ("owner", see `identity`): the logged-in user
("user:NAME") with --auth, checked on every event against the request, so a session hash taken
from another user opens nothing of theirs; otherwise an HMAC of a random token the server gave the
browser ("browser:HMAC", so a reload or a restart finds the same relations); for an API client
without a page load, an HMAC of its session hash ("session:HMAC"). Only admins see others' rows.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from emma import Instance

from .catalogue import Catalogue
from .engine import Engine
from .finetuning import Finetuner
from .identity import Identity, username
from .serving import MAX_BATCH, ModelWorker, load_extractor
from .session import BadInput, check_request_id, new_session, relations_in_force, stored_switches
from .storage import RequestIdReused, Store

MODEL_CONCURRENCY = MAX_BATCH  # model events waiting on the model's thread at once (it batches them; the queue holds the rest)
DB_CONCURRENCY = 8  # SQLite writes at a time (WAL + busy timeout serialise them safely)
UI_CONCURRENCY = 16  # cheap events: previews, tables
# /predict from API clients is served outside Gradio's queue (POST /gradio_api/run/predict: one round trip, no
# event stream), each request holding one of Gradio's worker threads while the model's thread batches it. At most
# this many at once, the rest refused at once, so a flood of them cannot take the threads every other event needs.
API_PREDICTIONS = 2 * MAX_BATCH
WORKER_THREADS = 64  # Gradio's pool for every event's handler (its default is 40): API_PREDICTIONS leave half free
MODEL = dict(concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
DB = dict(concurrency_id="db", concurrency_limit=DB_CONCURRENCY)
EXPORT_TTL_S = 900  # exported files (and Gradio's copies) are deleted after 15 minutes
MAX_LOADED_MODELS = 3  # fine-tuned versions kept in memory at once (about 180 MB each)
PRIVATE = dict(api_visibility="private")
QUIET = dict(api_visibility="private", show_progress="hidden")


def user_errors(fn):
    """Turn `BadInput` into `gr.Error` (shown as a toast; the event's outputs stay unchanged)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            raise gr.Error(str(e), print_exception=False) from None

    return wrapper


def lenient(component):
    """Let a component with choices hand any value to its handler, which refuses a bad one in a plain
    sentence (Gradio's own check would answer with its internal "not in the list of choices" message).
    An instance attribute, not a subclass: Gradio writes a .pyi stub beside every Component subclass; so
    only for components no handler changes with `gr.update` (Gradio rebuilds those from their arguments)."""
    component.preprocess = lambda payload: payload
    return component


def clears_first(trigger, status) -> None:
    """Blank the `status` line in the browser the moment `trigger` fires, before its handler answers: a refused action
    (its toast) must not leave an earlier action's "Added …" on show as if it were this one's outcome."""
    trigger(None, None, [status], js="() => ''", **QUIET)


def warn(message: str) -> None:
    """A recoverable problem: a yellow toast in the UI, a Python warning elsewhere."""
    gr.Warning(message)


class Workbench:
    """The shared resources and the sessions' owners.

    Args:
        engine: the shared model and description cache.
        store: the SQLite store.
        catalogue: the default relation catalogue.
        examples: example sentences (see `catalogue.load_examples`).
        admins: logins that may view and export everyone's feedback (only meaningful with --auth).

    Example:
        >>> wb = Workbench(Engine(Extractor.load()), Store(tmp_path / "wb.db"), Catalogue.load())
        >>> wb.open_session("user:ann")["enabled"][:1]
        ['head of government']
    """

    def __init__(self, engine: Engine, store: Store, catalogue: Catalogue, examples: list[dict] | None = None,
                 admins=(), models_dir: str | Path | None = None, finetune_from: dict[str, Path] | None = None) -> None:
        self.engine = engine
        self.store = store
        # {name: checkpoint folder}: other models a user's fine-tune may start from (`--finetune-from`).
        self.finetune_from = dict(finetune_from or {})
        # Fine-tuned model versions: files beside the database unless told otherwise; loaded on first use.
        self.finetuner = Finetuner(store, models_dir or store.path.parent / "models")
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self.catalogue = catalogue
        self.examples = examples or []
        self.identity = Identity(store.secret("owner_key"), admins)
        self.model = ModelWorker(engine)  # every model call of every session goes through its thread
        self.api_predictions = threading.BoundedSemaphore(API_PREDICTIONS)
        # Exports live in a private (0700) folder removed when the process ends; each export's own folder
        # is deleted after EXPORT_TTL_S (Gradio serves copies from its cache, cleaned on the same timer).
        self._exports = tempfile.TemporaryDirectory(prefix="emma-workbench-exports-")
        # On the model's thread, like every torch call of the app (see `serving`: a second thread's OpenMP team
        # would halve the model's speed).
        self.model.call(functools.partial(engine.encode, [e.text for e in catalogue.entries], pin=True))

    def export_folder(self) -> Path:
        """A new private folder for one export (0700; `private_files` makes its files 0600); stale ones go."""
        for old in Path(self._exports.name).iterdir():
            try:
                stale = time.time() - old.stat().st_mtime > EXPORT_TTL_S
            except FileNotFoundError:  # a concurrent export removed it first
                continue
            if stale:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self._exports.name))

    @staticmethod
    def private_files(paths):
        """Make exported files readable by this user only; returns them as strings for `gr.File`."""
        for path in paths:
            os.chmod(path, 0o600)
        return [str(p) for p in paths]

    # ------------------------------------------------------------------ model versions

    def engine_for(self, session: dict) -> Engine:
        """The model a session predicts with: its owner's chosen fine-tuned version, else the server's model.

        Versions are loaded on first use and the least recently used is dropped beyond
        `MAX_LOADED_MODELS` (the model thread holds a reference while it uses one).
        """
        name = session.get("model")
        if not name:
            return self.engine
        with self._engines_lock:
            engine = self._engines.get(name)
            if engine is not None:
                self._engines.move_to_end(name)
                return engine
        if self.own_version(session.get("owner"), name) is None:
            return self.engine
        # Loaded outside the lock (seconds), so that users of versions already loaded do not wait for it.
        base = self.engine.extractor
        loaded = Engine(load_extractor(self.finetuner.models_dir / name, device=str(base.device), precision=base.precision),
                        built_in=self.engine.built_in)
        with self._engines_lock:
            engine = self._engines.setdefault(name, loaded)  # a concurrent first use may have loaded it as well
            self._engines.move_to_end(name)
            while len(self._engines) > MAX_LOADED_MODELS:
                self._engines.popitem(last=False)
        return engine

    def own_version(self, owner: str | None, name: str) -> dict | None:
        """Model version `name` if `owner` may use it (theirs, and its folder is there), else None."""
        version = self.store.model_version(name)
        if version is None or version["owner"] != owner or not (self.finetuner.models_dir / name).is_dir():
            return None
        return version

    def delete_version(self, owner: str, name: str) -> None:
        """Delete `owner`'s model version `name`: its record, its copy in memory, its files. BadInput when it is not
        theirs, when their predictions use it, or while their fine-tune runs (which may be reading it)."""
        running = self.finetuner.running()
        if running is not None and running.owner == owner:
            raise BadInput("Your fine-tune is running and may be reading that version; delete it once the fine-tune has finished.")
        outcome = self.store.delete_model_version(owner, name)
        if outcome == "not theirs":
            raise BadInput("That model version is not one of yours (or is deleted already).")
        if outcome == "in use":
            raise BadInput(f"Your predictions use {name}: choose another model for them first.")
        with self._engines_lock:
            self._engines.pop(name, None)
        self.finetuner.delete_files(name)

    def model_choice(self, owner: str) -> str | None:
        """The version `owner` chose, if they may still use it (else None: the server's model)."""
        name = self.store.model_choice(owner)
        return name if name and self.own_version(owner, name) is not None else None

    def model_line(self, session: dict | None) -> str:
        """The page header's line: the model a session predicts with (its owner's chosen version, read from the
        store rather than loaded), the classifier's k and the device."""
        name = (session or {}).get("model")
        version = self.store.model_version(name) if name else None
        model = f"`{version['checkpoint']}` (your fine-tuned version)" if version else f"`{self.engine.checkpoint_id}`"
        return f"Model {model} · classifier reranks the top k = {self.engine.k} · device {self.engine.extractor.device}"

    def new_session(self) -> dict:
        return new_session(self.catalogue)

    def open_session(self, owner: str) -> dict:
        """A session for `owner` with the relations saved for them (encoded later, by the model's queue)."""
        session = self.new_session()
        session["owner"] = owner
        session["enabled"] = stored_switches(self.store.workspace(owner), self.catalogue)
        session["user"] = self.store.user_relations(owner)
        session["model"] = self.model_choice(owner)
        return session

    def load(self, token: str | None, request: gr.Request = None):
        """Page load: find the owner (login name, else this browser's token) and their saved relations.

        Returns (session, the browser's token, update showing "Everyone's feedback" to admins only).
        A token the server did not issue in its format is replaced by a new one (a new workspace).
        """
        if not self.identity.valid_token(token):
            token = self.identity.issue_token()
        name = username(request)
        owner = f"user:{name}" if name else self.identity.browser_owner(token)
        return self.open_session(owner), token, gr.update(visible=self.identity.is_admin(request))

    def owned(self, session: dict | None, request: gr.Request | None) -> dict:
        """The session of whoever sent `request`.

        With --auth the login decides: a session owned by anyone else (a session hash reused by
        another user) is replaced by the caller's own. Without --auth the server-side session's
        owner stands; API clients never fire the page-load event, so theirs is set here.
        """
        name = username(request)
        if name:
            if session and session.get("owner") == f"user:{name}":
                return session
            return self.open_session(f"user:{name}")
        if session and session.get("owner"):
            return session
        fresh = copy.deepcopy(session) if session else self.new_session()
        fresh["owner"] = self.identity.session_owner(getattr(request, "session_hash", None))
        return fresh

    def relations(self, session: dict) -> dict[str, str]:
        """{name: text} of the relations in force (a relation defined by examples alone once it has one)."""
        return relations_in_force(session, self.catalogue, self.labelled_relations(session))

    def labelled_relations(self, session: dict) -> set[str]:
        """The owner's relations with labelled examples, read only when one of theirs lacks a description."""
        if all(session["user"].values()) or not session.get("owner"):
            return set()
        return set(self.store.example_counts(session["owner"]))

    def labelled(self, session: dict) -> tuple[Instance, ...]:
        """The owner's labelled examples as instances (relation set), oldest first; all relations, in force or not.

        Read from the store at each prediction, so a judgement saved in any tab or session of this
        owner counts at once (rows are parsed once, by the engine's cache).
        """
        return self.engine.instances(self.store.labelled(session["owner"]))

    def to_predict(self, session: dict) -> tuple[dict[str, str], tuple[Instance, ...]]:
        """(the relations in force, the owner's labelled examples of them) for a prediction, an extraction, a
        suggestion or the description check; BadInput when no relation is in force.

        Both come from one read of the examples, so a relation defined by examples alone is in force exactly
        when an example of it is passed with it, whatever another tab removes meanwhile. Examples of
        relations switched off are kept and wait until their relation is switched on again.
        """
        examples = self.labelled(session)
        relations = relations_in_force(session, self.catalogue, {e.relation for e in examples})
        if not relations:
            raise BadInput("No relation is switched on; enable some in the Relations tab or add your own.")
        return relations, tuple(e for e in examples if e.relation in relations)

    # ------------------------------------------------------------------ idempotent writes

    def replay(self, session: dict, request_id: str | None, action: str) -> str | None:
        """The first status line of a repeated client request id, or None for a new (or no) id."""
        try:
            return self.store.request_result(session["owner"], check_request_id(request_id), action)
        except RequestIdReused:
            raise BadInput("That request id was already used for another action; send a new one.") from None

    def once(self, session: dict, request_id: str | None, action: str, write) -> tuple[dict, str]:
        """`write(db)` in one transaction, remembered under the request id (see `Store.once`).

        Returns (`session`, the status line); when a concurrent request with the same id wrote first,
        its status line and the session as stored instead.
        """
        wrote = []

        def tracked(db):
            wrote.append(True)
            return write(db)

        try:
            status = self.store.once(session["owner"], check_request_id(request_id), action, tracked)
        except RequestIdReused:
            raise BadInput("That request id was already used for another action; send a new one.") from None
        return (session if wrote else self.refreshed(session)), status

    def current(self, session: dict | None, request: gr.Request | None) -> dict:
        """The caller's session (`owned`) with their relations and switches as stored: what a change is checked
        against and built on, since another tab or client of the same owner may have changed them since this
        session was loaded (a stale copy would overwrite or re-add what the other one saved)."""
        return self.refreshed(self.owned(session, request))

    def refreshed(self, session: dict) -> dict:
        """The session with its relations and switches as stored."""
        stored = self.open_session(session["owner"])
        return {**session, "enabled": stored["enabled"], "user": stored["user"]}
