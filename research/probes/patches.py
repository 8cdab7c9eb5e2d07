"""The probes' changes to the recall recipe, patched into `emma`'s internals (experiments, on purpose).

Each `patch_*` replaces attributes of `emma` modules through `set_attr` (default `setattr`, for the
probe's own process; tests pass pytest's `monkeypatch.setattr` so that the change is undone). They
reach private names (`emma.batches.TrainingData.batch`, `emma.model._build_encoder`, ...), so a
restructured library can break them: `tests/test_probes.py` checks that each still applies.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def _emma(name: str):
    """An `emma` submodule by name (`emma.train` the attribute may be a function of the same name)."""
    return importlib.import_module(f"emma.{name}")


def patch_symmetric(set_attr=setattr) -> None:
    """InfoNCE both ways (CLIP-style mean): instance → batch descriptions and description → batch instances."""
    losses = _emma("losses")
    one_way = losses.InfoNCELoss.forward

    def forward(self, instances, descriptions, targets, false_negatives=None):
        to_descriptions = one_way(self, instances, descriptions, targets, false_negatives)
        logits = losses.cosine_scores(descriptions, instances) / self.temperature  # (N, B); N = B on one process
        if false_negatives is not None:
            logits = logits.masked_fill(false_negatives.T, float("-inf"))
        return 0.5 * (to_descriptions + F.cross_entropy(logits, targets))

    set_attr(losses.InfoNCELoss, "forward", forward)


def _unit_segments(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 3
    return torch.cat([F.normalize(x[..., i * d:(i + 1) * d], dim=-1) for i in range(3)], dim=-1)  # (…, 3d)


def patch_segment_norm(set_attr=setattr) -> None:
    """Scale each third of both vectors to unit length, so cosine = the mean of the three segment cosines.

    Measured on a trained recall model: instance segments [CLS]/[E_h]/[E_t] have norms ≈ 8 / 11 / 12,
    description segments [CLS]/pool₁/pool₂ ≈ 8 / 5 / 5: the description's [CLS] outweighs its virtual entities.
    """
    model = _emma("model")
    enc_inst, enc_desc = model.RecallEncoder.encode_instances, model.RecallEncoder.encode_descriptions

    def encode_instances(self, *args, **kwargs):
        return _unit_segments(enc_inst(self, *args, **kwargs))

    def encode_descriptions(self, *args, **kwargs):
        out = enc_desc(self, *args, **kwargs)
        out.vectors = _unit_segments(out.vectors)
        return out

    set_attr(model.RecallEncoder, "encode_instances", encode_instances)
    set_attr(model.RecallEncoder, "encode_descriptions", encode_descriptions)


def patch_all_negatives(set_attr=setattr) -> None:
    """Every train relation's description in every step's softmax (60 at m = 15 `ori`), not only the batch's 32."""
    batches, losses, features = _emma("batches"), _emma("losses"), _emma("features")
    make_batch = batches.TrainingData.batch

    def batch(self, idx, device, epoch=0):
        out = make_batch(self, idx, device, epoch)
        every = features.collate_single(self.tokenizer, [self.description_ids[r][0] for r in self.relations])
        out["all_descriptions"] = {k: v.to(device) for k, v in every.items()}
        return out

    def forward(self, batch):
        recall = self.model.recall
        inst = recall.encode_instances(batch["input_ids"], batch["attention_mask"], batch["head_marker"], batch["tail_marker"])
        d = batch["all_descriptions"]
        desc = recall.encode_descriptions(d["input_ids"], d["attention_mask"], d["content_mask"]).vectors
        loss = self.infonce(inst, desc, batch["relation_ids"])  # relation ids index the sorted relations
        return losses.StepOutput(loss, loss.detach(), torch.zeros(()))

    set_attr(batches.TrainingData, "batch", batch)
    set_attr(losses.JointObjective, "forward", forward)


def patch_zero_heads(set_attr=setattr) -> None:
    """Pooling heads start at zero: exactly mean pooling over the description tokens at step 0."""
    model = _emma("model")
    init = model.WeightPooling.__init__

    def __init__(self, dim):
        init(self, dim)
        torch.nn.init.zeros_(self.score.weight)
        torch.nn.init.zeros_(self.score.bias)

    set_attr(model.WeightPooling, "__init__", __init__)


def _change_encoders(change, set_attr) -> None:
    """Have every encoder the model builds pass through `change(encoder)` once built."""
    model = _emma("model")
    build = model._build_encoder

    def _build_encoder(*args, **kwargs):
        encoder = build(*args, **kwargs)
        change(encoder)
        return encoder

    set_attr(model, "_build_encoder", _build_encoder)


def patch_no_dropout(set_attr=setattr) -> None:
    """No dropout in the encoder (attention and hidden): the contrastive loss sees the model it is tested with."""

    def no_dropout(encoder):
        for module in encoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    _change_encoders(no_dropout, set_attr)


def patch_freeze_layers(n: int, set_attr=setattr) -> None:
    """The encoder's lowest `n` transformer layers stay as pretrained (embeddings and markers still learn)."""

    def freeze(encoder):
        for layer in encoder.encoder.layer[:n]:
            layer.requires_grad_(False)

    _change_encoders(freeze, set_attr)


def _mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, d)


def patch_mean_first(set_attr=setattr) -> None:
    """The first third of both vectors is the masked mean of the token states (what all-MiniLM-L6-v2 was trained
    to embed with), not h[CLS]: instances average their whole window, descriptions their content tokens."""
    model = _emma("model")

    def encode_instances(self, input_ids, attention_mask, head_marker, tail_marker):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, d)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return torch.cat([_mean(hidden, attention_mask), hidden[rows, head_marker], hidden[rows, tail_marker]], dim=-1)

    def encode_descriptions(self, input_ids, attention_mask, content_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, d)
        head, head_w = self.head_pool(hidden, content_mask)
        tail, tail_w = self.tail_pool(hidden, content_mask)
        return model.DescriptionEncoding(torch.cat([_mean(hidden, content_mask), head, tail], dim=-1), head_w, tail_w)

    set_attr(model.RecallEncoder, "encode_instances", encode_instances)
    set_attr(model.RecallEncoder, "encode_descriptions", encode_descriptions)


def patch_constant_lr(set_attr=setattr) -> None:
    """Constant learning rate after the warm-up, instead of the linear decay to zero."""
    import transformers

    def constant(optimizer, num_warmup_steps, num_training_steps):
        return transformers.get_constant_schedule_with_warmup(optimizer, num_warmup_steps)

    set_attr(transformers, "get_linear_schedule_with_warmup", constant)


# Probe flag → its patch (all take `set_attr`; freeze_layers also the layer count).
PATCHES = {"symmetric": patch_symmetric, "segment_norm": patch_segment_norm, "all_negatives": patch_all_negatives,
           "zero_heads": patch_zero_heads, "no_dropout": patch_no_dropout, "mean_first": patch_mean_first,
           "constant_lr": patch_constant_lr}


def typed_descriptions(data_dir: Path, kind: str) -> dict[str, str]:
    """Each description followed by its head and tail entity types, from the processed description files
    (RE-Matching's keywords; "synonym": with their added synonyms): "<description> ; head : town, city ;
    tail : head of government". Applies to train and test relations alike (types come with every relation)."""
    name = {"plain": "relation_description_processed.json", "synonym": "relation_description_addsynonym_processed.json"}[kind]
    records = json.loads((data_dir / "fewrel" / "relation_description" / name).read_text())
    return {r["relation"]: f"{' '.join(r['description'])} ; head : {', '.join(r['h'])} ; tail : {', '.join(r['t'])}"
            for r in records}
