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
                     examples: list[dict] | None = None, admins=()) -> Workbench:
    """The shared resources: the model (loaded here unless an `Extractor` is given), the store, the catalogue.

    `admins` are the logins that may view and export everyone's feedback.
    """
    if isinstance(checkpoint, Extractor):
        extractor = checkpoint
    else:
        try:
            extractor = load_extractor(checkpoint)
        except CheckpointError as e:
            raise AppError(f"cannot load the checkpoint: {e}. Train one (python -m emma train …) or pass --checkpoint FOLDER.") from None
    store = Store(db)
    logger.info("model %s on %s; database %s", extractor.checkpoint, extractor.device, store.path)
    catalogue = catalogue if catalogue is not None else Catalogue.load()
    return Workbench(
        Engine(extractor, built_in=catalogue.texts()),
        store,
        catalogue,
        examples if examples is not None else load_examples(),
        admins=admins,
    )


def create_app(checkpoint: str | Path | Extractor, db: str | Path, **kwargs) -> gr.Blocks:
    return build_demo(create_workbench(checkpoint, db, **kwargs))
