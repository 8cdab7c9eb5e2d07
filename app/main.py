"""Wire the parts together: load the model once, open the store, build the Blocks.

`create_app` is what `app.py` and the tests call; the model is loaded once per process (CUDA when
present) and shared by every session through `Engine`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr

from emma import CheckpointError, Extractor
from emma.checkpoint import read_config

from .catalogue import Catalogue, load_examples
from .engine import Engine
from .serving import load_extractor
from .workbench import Workbench
from .layout import build_demo
from .storage import Store

logger = logging.getLogger(__name__)


class AppError(RuntimeError):
    """The app cannot start; the message says why and what to do."""


def default_db_path() -> Path:
    """$XDG_DATA_HOME/emma/workbench.db, else ~/.local/share/emma/workbench.db."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "emma" / "workbench.db"


def create_workbench(checkpoint: str | Path | Extractor, db: str | Path, catalogue: Catalogue | None = None,
                     examples: list[dict] | None = None, admins=(), finetune_from=()) -> Workbench:
    """The shared resources: the model (loaded here unless an `Extractor` is given), the store, the catalogue.

    `admins` are the logins that may view and export everyone's feedback; `finetune_from`, checkpoint folders a
    user's fine-tune may start from instead of the model they use (checked here, loaded only by a fine-tune).
    """
    starts = {}
    for folder in map(Path, finetune_from):
        try:
            read_config(folder)
        except CheckpointError as e:
            raise AppError(f"cannot offer --finetune-from {folder}: {e}") from None
        name = folder.resolve().name  # what the panel shows and the API's start_from names
        if name in starts:
            raise AppError(f"--finetune-from {folder}: another start is also named {name!r}; give each its own folder name")
        starts[name] = folder
    if isinstance(checkpoint, Extractor):
        extractor = checkpoint
    else:
        try:
            extractor = load_extractor(checkpoint)
        except CheckpointError as e:
            raise AppError(f"cannot load the checkpoint: {e}. Train one (python -m emma train …) or pass --checkpoint FOLDER.") from None
    # The server's own model is no other start (make run ARGS="--checkpoint checkpoints/emma-mpnet").
    starts = {name: folder for name, folder in starts.items() if folder.resolve() != Path(extractor.checkpoint).resolve()}
    store = Store(db)
    logger.info("model %s on %s; database %s", extractor.checkpoint, extractor.device, store.path)
    catalogue = catalogue if catalogue is not None else Catalogue.load()
    return Workbench(
        Engine(extractor, built_in=catalogue.texts()),
        store,
        catalogue,
        examples if examples is not None else load_examples(),
        admins=admins,
        finetune_from=starts,
    )


def create_app(checkpoint: str | Path | Extractor, db: str | Path, **kwargs) -> gr.Blocks:
    return build_demo(create_workbench(checkpoint, db, **kwargs))
