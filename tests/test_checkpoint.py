"""Checkpoint folders: round trip, half precision on disk, float32 once loaded, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from emma.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint, read_config, save_checkpoint
from emma.features import collate_pairs, collate_single, encode_descriptions, encode_instances, marker_ids
from emma.model import EmmaConfig


def _outputs(model, tokenizer, instances, descriptions):
    """Everything a checkpoint must reproduce: instance vectors, description vectors and weights, logits."""
    enc = encode_instances(tokenizer, instances, 64)
    inst = collate_single(tokenizer, enc.ids)
    head = torch.tensor([m + 1 for m in enc.head_marker])
    tail = torch.tensor([m + 1 for m in enc.tail_marker])
    desc_ids = encode_descriptions(tokenizer, descriptions, 32).ids
    k = model.config.k
    pairs = collate_pairs(tokenizer, [i for i in enc.ids for _ in range(k)], [d for _ in enc.ids for d in desc_ids[:k]])
    with torch.no_grad():
        vecs = model.recall.encode_instances(inst["input_ids"], inst["attention_mask"], head, tail)
        desc = model.recall.encode_descriptions(**collate_single(tokenizer, desc_ids))
        logits = model.classifier(**pairs)
    return {"instances": vecs, "descriptions": desc.vectors, "head_weights": desc.head_weights, "logits": logits}


@pytest.fixture
def saved(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    folder = save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    return model, tokenizer, folder


def test_round_trip_outputs_match(saved, toy_instances, toy_descriptions):
    model, tokenizer, folder = saved
    loaded, loaded_tokenizer = load_checkpoint(folder, device="cpu")
    texts = list(toy_descriptions.values())
    before = _outputs(model, tokenizer, toy_instances, texts)
    after = _outputs(loaded, loaded_tokenizer, toy_instances, texts)
    # half precision on disk: compare with a tolerance that fp16 rounding of the weights allows
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=2e-2, rtol=2e-2, msg=key)
        if key in ("instances", "descriptions"):
            cos = torch.nn.functional.cosine_similarity(after[key], before[key], dim=-1)
            assert (cos > 0.999).all(), key
    # and exactly what the fp16-rounded weights give
    rounded = type(model)(model.config, model.recall.encoder, model.classifier.encoder)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    exact = _outputs(rounded.eval(), tokenizer, toy_instances, texts)
    for key in exact:
        torch.testing.assert_close(after[key], exact[key], atol=1e-5, rtol=1e-5, msg=key)


def test_weights_are_float16_on_disk_and_float32_loaded(saved):
    model, _, folder = saved
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert set(keys) == set(model.state_dict())
    assert dtypes <= {"F16", "I64"} and "F16" in dtypes
    loaded, _ = load_checkpoint(folder, device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"


def test_folder_layout_config_and_tokenizer(saved):
    model, tokenizer, folder = saved
    assert {CONFIG_FILE, WEIGHTS_FILE, "README.md", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.tmp"))
    data = json.loads((folder / CONFIG_FILE).read_text())
    assert data["k"] == model.config.k and data["temperature"] == model.config.temperature
    assert data["format_version"] == 1 and "_name_or_path" not in data["encoder_config"]  # no path of the saving machine
    assert data["encoder_config"]["hidden_size"] == 32 and data["encoder_config"]["vocab_size"] == len(tokenizer)
    config, encoder_config = read_config(folder)
    assert config == model.config and encoder_config["num_hidden_layers"] == 2
    assert "EMMA checkpoint" in (folder / "README.md").read_text()
    _, loaded_tokenizer = load_checkpoint(folder, device="cpu")
    assert marker_ids(loaded_tokenizer) == marker_ids(tokenizer)
    assert loaded_tokenizer("Apple [E_h] x")["input_ids"] == tokenizer("Apple [E_h] x")["input_ids"]


def test_card_and_extra_files(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    folder = save_checkpoint(model, tokenizer, tmp_path / "c", card="# my card\n", extra_files={"metrics.json": {"f1": 1.5}})
    assert (folder / "README.md").read_text() == "# my card\n"
    assert json.loads((folder / "metrics.json").read_text()) == {"f1": 1.5}
    save_checkpoint(model, tokenizer, folder)  # saving again keeps an existing card
    assert (folder / "README.md").read_text() == "# my card\n"


def test_checkpoint_without_classifier_round_trips(tiny_model, tmp_path):
    from emma.model import Emma

    model, tokenizer = tiny_model
    config = EmmaConfig(encoder="tiny", use_classifier=False, description_pooling="cls")
    recall_only = Emma(config, model.recall.encoder, None)
    folder = save_checkpoint(recall_only, tokenizer, tmp_path / "r")
    loaded, _ = load_checkpoint(folder, device="cpu")
    assert loaded.classifier is None and loaded.config == config


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def broken(tiny_checkpoint, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="nope: no such checkpoint folder"):
        load_checkpoint(tmp_path / "nope")


def test_missing_config(broken):
    (broken / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=rf"{broken / CONFIG_FILE}: missing"):
        load_checkpoint(broken, device="cpu")


@pytest.mark.parametrize("text", ["{not json", "null", "[1]", '"text"', '{"k": 2}', '{"encoder_config": {}, "k": 2, "colour": 1}', '{"encoder_config": {}, "k": 0}'])
def test_corrupt_config(broken, text):
    (broken / CONFIG_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=rf"{broken / CONFIG_FILE}: corrupt"):
        load_checkpoint(broken, device="cpu")


def test_missing_weights(broken):
    (broken / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=rf"{broken / WEIGHTS_FILE}: missing"):
        load_checkpoint(broken, device="cpu")


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_corrupt_weights(broken, how):
    path = broken / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00\x01 not a safetensors file" * 10, "empty": b""}[how])
    with pytest.raises(CheckpointError, match=rf"{path}: corrupt"):
        load_checkpoint(broken, device="cpu")


def test_missing_and_unexpected_keys(broken):
    path = broken / WEIGHTS_FILE
    state = load_file(str(path))
    gone = "recall.head_pool.score.weight"
    value = state.pop(gone)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"{path}: missing keys \['{gone}'\]"):
        load_checkpoint(broken, device="cpu")
    state[gone] = value
    state["recall.extra.weight"] = value.clone()
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['recall.extra.weight'\]"):
        load_checkpoint(broken, device="cpu")


def test_wrong_shape(broken):
    path = broken / WEIGHTS_FILE
    state = load_file(str(path))
    state["recall.head_pool.score.weight"] = torch.zeros(1, 7, dtype=torch.float16)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"recall.head_pool.score.weight has shape \(1, 7\), expected \(1, 32\)"):
        load_checkpoint(broken, device="cpu")


def test_missing_tokenizer(broken):
    for p in broken.glob("tokenizer*"):
        p.unlink()
    for p in broken.glob("vocab*"):
        p.unlink()
    with pytest.raises(CheckpointError, match=rf"{broken}: tokenizer files missing or corrupt"):
        load_checkpoint(broken, device="cpu")
