"""Slim checkpoints: a trained model stored as its differences from a base encoder installed from a package.

A model trained with low-rank adapters (`TrainConfig.adapter_rank`) differs from its base encoder only
in the adapted linear layers (by a matrix of rank r each), the entity markers' embedding rows and the
fresh heads. `save_slim` keeps just that: each changed weight matrix as two factors of rank r (from its
difference to the base, by SVD; exact for merged adapters up to the half-precision rounding of the
merged checkpoint), the marker rows, and every tensor that has no base counterpart, in float16. The
folder holds `slim.safetensors` instead of `model.safetensors`, and `slim.json` names the base encoder
(`emma.encoders`); `load_checkpoint` rebuilds the weights from the installed base at load, offline. For
all-mpnet-base-v2 with rank-16 adapters that is ≈ 12 MB instead of 220 MB.

    python -m emma portable slim runs/emma-mpnet checkpoints/emma-mpnet --base all-mpnet-base-v2 --rank 16
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, WORD_EMBEDDINGS, CheckpointError

SLIM_FILE = "slim.safetensors"
SLIM_META = "slim.json"
ENCODER_PREFIXES = ("recall.encoder.", "classifier.encoder.")


def is_slim(directory: str | Path) -> bool:
    return (Path(directory) / SLIM_META).is_file()


def _base_state(base: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    from .encoders import encoder_folder

    model = AutoModel.from_pretrained(encoder_folder(base), add_pooling_layer=False, dtype=torch.float32)
    return model.state_dict()


def _base_key(key: str) -> str | None:
    return next((key[len(p):] for p in ENCODER_PREFIXES if key.startswith(p)), None)


def save_slim(directory: str | Path, output: str | Path, base: str, rank: int, tolerance: float = 0.02) -> Path:
    """Write the checkpoint `directory` as a slim folder `output` over the installed base encoder `base`.

    Args:
        rank: factors kept per changed weight matrix (the adapters' rank).
        tolerance: largest relative error allowed per factored matrix (‖W − W'‖ / ‖W‖); a change that rank
            `rank` cannot hold (a fully fine-tuned model) is refused rather than stored wrong.
    """
    directory, output = Path(directory), Path(output)
    state = load_file(str(directory / WEIGHTS_FILE))
    base_state = _base_state(base)
    slim: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        base_key = _base_key(key)
        if base_key is None or base_key not in base_state:
            slim[key] = value.half().contiguous()  # a head, or the classifier's MLP: no base counterpart
            continue
        reference = base_state[base_key].half()
        if base_key == WORD_EMBEDDINGS:
            rows = reference.shape[0]
            if not torch.equal(value[:rows], reference):
                raise CheckpointError(f"{key}: the base vocabulary's rows changed; only adapter-trained models slim down")
            slim[key + ".added"] = value[rows:].half().contiguous()  # the entity markers
        elif torch.equal(value, reference):
            continue
        elif value.dim() == 2:
            slim[key + ".down"], slim[key + ".up"] = _factors(key, value.float(), reference.float(), rank, tolerance)
        else:
            slim[key] = value.half().contiguous()
    output.mkdir(parents=True, exist_ok=True)
    save_file(slim, str(output / SLIM_FILE), metadata={"format": "pt"})
    for item in directory.iterdir():  # config, tokenizer, card, metrics: everything but the full weights
        if item.is_file() and item.name not in (WEIGHTS_FILE, SLIM_FILE) and item.suffix in (".json", ".md", ".txt", ".model"):
            shutil.copy(item, output / item.name)
    (output / SLIM_META).write_text(json.dumps({"base_encoder": base, "rank": rank}, indent=2) + "\n")
    if not Path(base).is_dir():  # name the packaged base, not the folder of the machine it was trained on
        config = json.loads((output / CONFIG_FILE).read_text())
        (output / CONFIG_FILE).write_text(json.dumps({**config, "encoder": base}, indent=2, sort_keys=True) + "\n")
    return output


def _factors(key: str, value: torch.Tensor, reference: torch.Tensor, rank: int, tolerance: float):
    """(down, up), float32, with value ≈ reference + down @ up, of rank `rank` or, for a classifier that started
    as a copy of the adapted recall encoder (its own adapters on top), 2 × `rank`."""
    u, s, vh = torch.linalg.svd(value - reference, full_matrices=False)
    for r in (rank, 2 * rank):
        down, up = (u[:, :r] * s[:r]).contiguous(), vh[:r].contiguous()
        error = (torch.linalg.norm(value - (reference + down @ up)) / torch.linalg.norm(value)).item()
        if error <= tolerance:
            return down, up
    raise CheckpointError(f"{key}: rank {2 * rank} holds its change only to {error:.3f} (tolerance {tolerance}); "
                          f"was the model trained with adapters of rank {rank}?")


def load_slim_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """The full state dict of a slim folder: the installed base encoder's weights plus the stored changes."""
    directory = Path(directory)
    meta = json.loads((directory / SLIM_META).read_text())
    stored = load_file(str(directory / SLIM_FILE))
    base_state = _base_state(meta["base_encoder"])
    state: dict[str, torch.Tensor] = {}
    for key, value in stored.items():
        if key.endswith(".added"):
            key = key[: -len(".added")]
            state[key] = torch.cat([base_state[_base_key(key)], value.float()])
        elif key.endswith(".down"):
            key = key[: -len(".down")]
            state[key] = base_state[_base_key(key)] + value @ stored[key + ".up"]
        elif not key.endswith(".up"):
            state[key] = value
    # Every other encoder tensor is the base's, under each encoder the model has.
    encoders = {p for p in ENCODER_PREFIXES if any(k.startswith(p) for k in stored)}
    for prefix in encoders:
        for base_key, value in base_state.items():
            state.setdefault(prefix + base_key, value)
    return state
