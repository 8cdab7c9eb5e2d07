"""Training options for transfer (issue 18) on the tiny model: low-rank adapters and description forms."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from emma.adapters import LoraLinear, add_adapters, has_adapters, merged_copy
from emma.batches import TrainingData, description_forms
from emma.checkpoint import load_checkpoint, load_tokenizer
from emma.cli import cli
from emma.model import EmmaConfig
from emma.train import STATE_FILE, TrainConfig, train

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def _config(encoder, use_classifier=True, **changes):
    values = dict(encoder=encoder, batch_size=4, lr=1e-3, head_lr=1e-2, warmup_steps=0, precision="fp32", seed=1, max_steps=6)
    model = EmmaConfig(max_length=32, max_description_length=24, use_classifier=use_classifier)
    return TrainConfig(model=model, **{**values, **changes})


# ----------------------------------------------------------------------------- adapters


def test_an_adapter_starts_as_its_layer_and_merges_to_what_it_computes():
    torch.manual_seed(0)
    layer = nn.Linear(8, 5)
    lora = LoraLinear(layer, rank=2, alpha=4.0)
    x = torch.randn(3, 8)
    assert torch.equal(lora(x), layer(x))  # B starts at zero
    with torch.no_grad():
        lora.lora_b.normal_()
    assert not torch.allclose(lora(x), layer(x))
    assert torch.allclose(lora.merged()(x), lora(x), atol=1e-5)
    assert not layer.weight.requires_grad and lora.lora_a.requires_grad


def test_adapters_freeze_the_encoder_and_merge_into_a_plain_copy(tiny_encoder_dir):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_encoder_dir)
    n = add_adapters(encoder, rank=2)
    assert n == 6 * encoder.config.num_hidden_layers  # q, k, v, attention output, intermediate, output per layer
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    merged = merged_copy(encoder)
    assert has_adapters(encoder) and not has_adapters(merged)
    assert set(merged.state_dict()) == set(AutoModel.from_pretrained(tiny_encoder_dir).state_dict())
    with pytest.raises(ValueError, match="rank 0"):
        add_adapters(AutoModel.from_pretrained(tiny_encoder_dir), rank=0)


def test_adapters_and_classifier_pairs_work_on_an_mpnet_encoder():
    """all-mpnet-base-v2's architecture (the grid's larger encoder): attention layers named q, k, v, o and no
    segment embeddings; a tiny random one stands in for it."""
    from transformers import MPNetConfig, MPNetModel

    from emma.model import RerankClassifier

    encoder = MPNetModel(MPNetConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=40), add_pooling_layer=False).eval()
    ids = torch.randint(5, 60, (2, 7))
    before = encoder(input_ids=ids).last_hidden_state
    assert add_adapters(encoder, rank=2) == 6 * 2  # q, k, v, o, intermediate, output per layer
    assert torch.allclose(encoder(input_ids=ids).last_hidden_state, before, atol=1e-6)
    head = RerankClassifier(EmmaConfig(classifier_features="cls_entities"), merged_copy(encoder))
    types = torch.zeros_like(ids)  # what collate_pairs makes; an encoder without segments must not get them
    features = head.pair_features(ids, torch.ones_like(ids), types, torch.tensor([1, 2]), torch.tensor([3, 4]))
    assert features.shape == (2, 3 * 16)


@pytest.mark.slow
def test_adapter_training_moves_only_adapters_heads_and_markers(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    config = _config(tiny_encoder_dir, adapter_rank=4, schedule="joint")
    folder = train(config, toy_instances, toy_descriptions, tmp_path / "lora")
    model, tokenizer = load_checkpoint(folder, device="cpu")  # an ordinary checkpoint: adapters merged
    assert not has_adapters(model)
    from transformers import AutoModel

    base = AutoModel.from_pretrained(tiny_encoder_dir).state_dict()
    trained = model.recall.encoder.state_dict()
    moved = {k for k in trained if "word_embeddings" not in k and not torch.allclose(base[k], trained[k].float(), atol=1e-3)}
    # merged adapters change exactly the adapted linear weights; biases, norms and position embeddings stay
    assert moved and all(k.endswith(".weight") and any(f".{t}." in k for t in ("query", "key", "value", "dense")) for k in moved)
    rows = trained["embeddings.word_embeddings.weight"].float()
    base_rows = torch.zeros_like(rows)
    base_rows[: base["embeddings.word_embeddings.weight"].shape[0]] = base["embeddings.word_embeddings.weight"]
    changed = set((rows - base_rows).abs().amax(dim=1).gt(1e-3).nonzero().flatten().tolist())
    from emma.features import marker_ids

    assert changed <= set(marker_ids(tokenizer)) and changed
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    assert any(".lora_a" in k for k in state["model"])  # resume state keeps the adapters apart


@pytest.mark.slow
def test_adapter_runs_resume(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    config = _config(tiny_encoder_dir, adapter_rank=2, use_classifier=False)
    folder = train(dataclasses.replace(config, max_steps=3), toy_instances, toy_descriptions, tmp_path / "r")
    folder = train(config, toy_instances, toy_descriptions, folder, resume=True)
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]


def test_a_negative_adapter_rank_is_refused():
    with pytest.raises(ValueError, match="adapter_rank=-1"):
        TrainConfig(adapter_rank=-1)


# ----------------------------------------------------------------------------- description forms


def test_description_forms_are_checked_and_deduplicated():
    assert description_forms({"a": "x", "b": ["y", "z", "y"]}) == {"a": ["x"], "b": ["y", "z"]}
    with pytest.raises(ValueError, match="'b'"):
        description_forms({"a": "x", "b": ["y", " "]})


def test_each_instance_reads_one_of_its_relations_forms(tiny_encoder_dir, toy_instances, toy_descriptions):
    tokenizer = load_tokenizer(tiny_encoder_dir)
    forms = {r: [d, r] for r, d in toy_descriptions.items()}  # the description, or the name alone
    data = TrainingData.encode(tokenizer, EmmaConfig(max_length=32, max_description_length=24), toy_instances, forms, 4, seed=3)
    assert all(len(data.description_ids[r]) == 2 for r in data.relations)
    seen = set()
    for epoch in range(6):
        for idx in data.epoch(epoch):
            batch = data.batch(idx, torch.device("cpu"), epoch)
            for i, ids in zip(idx, batch["description_ids"]):
                form = data.description_ids[toy_instances[i].relation].index(ids)
                seen.add((toy_instances[i].relation, form))
            again = data.batch(idx, torch.device("cpu"), epoch)  # the same draw for the same batch (resume)
            assert again["description_ids"] == batch["description_ids"]
    assert {form for _, form in seen} == {0, 1}


@pytest.mark.slow
def test_train_cli_takes_several_description_files_as_forms(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    from emma.data import write_jsonl

    write_jsonl(toy_instances, tmp_path / "train.jsonl")
    (tmp_path / "long.json").write_text(json.dumps(toy_descriptions))
    (tmp_path / "names.json").write_text(json.dumps({r: r for r in toy_descriptions}))
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "train.jsonl"), "--descriptions", str(tmp_path / "long.json"),
                                      "--descriptions", str(tmp_path / "names.json"), "--output", str(tmp_path / "out"),
                                      "--encoder", tiny_encoder_dir, "--max-steps", "2", "--batch-size", "4",
                                      "--precision", "fp32", "--no-classifier", "--adapter-rank", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "training.json").read_text())
    assert meta["config"]["adapter_rank"] == 2 and meta["step"] == 2
