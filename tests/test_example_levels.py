"""research.example_levels: a checkpoint's example levels, measured on FewRel's training relations and kept in its config."""

from __future__ import annotations

import json
import shutil

import emma
from emma.index import ExampleLevels


def test_levels_are_measured_for_every_count_and_written_into_the_config(tiny_checkpoint, shared_data, tmp_path, monkeypatch):
    import research.example_levels as levels_module

    monkeypatch.setattr(levels_module, "SCORED", 2)
    monkeypatch.setattr(levels_module, "DATA_DIR", shared_data)
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    weights = (folder / "model.safetensors").read_bytes()
    levels = levels_module.main(str(folder), set_config=True, precision="fp32")
    assert levels.counts == (0, *levels_module.COUNTS) and all(-1 <= m <= 1 for m in levels.means)
    assert json.loads((folder / "config.json").read_text())["example_levels"] == levels.to_config()
    assert (folder / "model.safetensors").read_bytes() == weights  # the weights are not touched
    loaded = emma.Extractor.load(str(folder), precision="fp32")
    assert loaded.example_levels == ExampleLevels.from_config(levels.to_config())
    assert levels_module.measure(loaded).to_config() == levels.to_config()  # fixed draws: the same figures
