"""Recall calibration probes: changes to the recall recipe that the library does not offer, measured.

The issue's calibration: plain recall (entity markers, two masked pooling heads, InfoNCE τ = 0.02, batches of
distinct relations, lr 5e-5, 300 instances per relation, one epoch) should reach 75 macro F1 on FewRel `ori`
m = 15. Ours reaches 73.21 ± 0.70 over 5 training seeds on CPU, 73.06 ± 1.07 over 12 on an H200. Each probe here trains exactly
that recall stage (what `python -m emma experiment --variant no_classifier` trains) with one change patched
in, tests on all 10,500 sentences of the 15 unseen relations, and appends a line to
results/recall_probes.jsonl. Changes that lose stay out of the library; this script is their record.

    python results/recall_probes.py NAME [--freeze-word-embeddings] [--symmetric] [--segment-norm]
                                         [--all-negatives] [--zero-heads] [--no-dropout] [--mean-first]
                                         [--typed-descriptions plain|synonym] [--constant-lr]
                                         [--freeze-layers N] [--lr X] [--warmup-steps N] ... [--train-seed N]
    python results/recall_probes.py --table     # the results file as a markdown table, one row per run
    python results/recall_probes.py --summary   # one row per probe: mean ± std over seeds, paired to the control

One run is ~22 min on 2 CPU cores in fp32 (~20 min training, ~2 min testing), ~1–2 min on a GPU.
Needs ../shared/data (or --data). Many probes at once on one GPU: results/recall_probe_sweep.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import emma.losses as losses  # noqa: E402
import emma.model as model_module  # noqa: E402
import emma.train as train_module  # noqa: E402
from emma.data import cap_per_relation  # noqa: E402
from emma.evaluate import evaluate  # noqa: E402
from emma.experiments import DEFAULT_DATA_DIR, RunSpec, load_run_data  # noqa: E402
from emma.features import collate_single  # noqa: E402
from emma.model import EmmaConfig  # noqa: E402
from emma.pipeline import Extractor  # noqa: E402


def patch_symmetric() -> None:
    """InfoNCE both ways (CLIP-style mean): instance → batch descriptions and description → batch instances."""
    one_way = losses.InfoNCELoss.forward

    def forward(self, instances, descriptions, targets, false_negatives=None):
        to_descriptions = one_way(self, instances, descriptions, targets, false_negatives)
        logits = losses.cosine_scores(descriptions, instances) / self.temperature  # (N, B); N = B on one process
        if false_negatives is not None:
            logits = logits.masked_fill(false_negatives.T, float("-inf"))
        return 0.5 * (to_descriptions + F.cross_entropy(logits, targets))

    losses.InfoNCELoss.forward = forward


def patch_segment_norm() -> None:
    """Scale each third of both vectors to unit length, so cosine = the mean of the three segment cosines.

    Measured on a trained recall model: instance segments [CLS]/[E_h]/[E_t] have norms ≈ 8 / 11 / 12,
    description segments [CLS]/pool₁/pool₂ ≈ 8 / 5 / 5: the description's [CLS] outweighs its virtual entities.
    """
    def unit_segments(x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1] // 3
        return torch.cat([F.normalize(x[..., i * d:(i + 1) * d], dim=-1) for i in range(3)], dim=-1)

    enc_inst, enc_desc = model_module.RecallEncoder.encode_instances, model_module.RecallEncoder.encode_descriptions

    def encode_instances(self, *args, **kwargs):
        return unit_segments(enc_inst(self, *args, **kwargs))

    def encode_descriptions(self, *args, **kwargs):
        out = enc_desc(self, *args, **kwargs)
        out.vectors = unit_segments(out.vectors)
        return out

    model_module.RecallEncoder.encode_instances = encode_instances
    model_module.RecallEncoder.encode_descriptions = encode_descriptions


def patch_all_negatives() -> None:
    """Every train relation's description in every step's softmax (60 at m = 15 `ori`), not only the batch's 32."""
    make_batch = train_module._make_batch

    def _make_batch(tokenizer, enc_inst, desc_ids, relation_index, instances, idx, device):
        batch = make_batch(tokenizer, enc_inst, desc_ids, relation_index, instances, idx, device)
        relations = sorted(relation_index, key=relation_index.get)
        batch["all_descriptions"] = {k: v.to(device) for k, v in collate_single(tokenizer, [desc_ids[r] for r in relations]).items()}
        return batch

    def forward(self, batch):
        recall = self.model.recall
        inst = recall.encode_instances(batch["input_ids"], batch["attention_mask"], batch["head_marker"], batch["tail_marker"])
        d = batch["all_descriptions"]
        desc = recall.encode_descriptions(d["input_ids"], d["attention_mask"], d["content_mask"]).vectors
        loss = self.infonce(inst, desc, batch["relation_ids"])  # relation ids index the sorted relations
        return train_module.StepOutput(loss, loss.detach(), torch.zeros(()))

    train_module._make_batch = _make_batch
    train_module.JointObjective.forward = forward


def patch_zero_heads() -> None:
    """Pooling heads start at zero: exactly mean pooling over the description tokens at step 0."""
    init = model_module.WeightPooling.__init__

    def __init__(self, dim):
        init(self, dim)
        torch.nn.init.zeros_(self.score.weight)
        torch.nn.init.zeros_(self.score.bias)

    model_module.WeightPooling.__init__ = __init__


def _change_encoders(change) -> None:
    """Have every encoder the model builds pass through `change(encoder)` once built."""
    build = model_module._build_encoder

    def _build_encoder(*args, **kwargs):
        encoder = build(*args, **kwargs)
        change(encoder)
        return encoder

    model_module._build_encoder = _build_encoder


def patch_no_dropout() -> None:
    """No dropout in the encoder (attention and hidden): the contrastive loss sees the model it is tested with."""

    def no_dropout(encoder):
        for module in encoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    _change_encoders(no_dropout)


def patch_freeze_layers(n: int) -> None:
    """The encoder's lowest `n` transformer layers stay as pretrained (embeddings and markers still learn)."""

    def freeze(encoder):
        for layer in encoder.encoder.layer[:n]:
            layer.requires_grad_(False)

    _change_encoders(freeze)


def patch_mean_first() -> None:
    """The first third of both vectors is the masked mean of the token states (what all-MiniLM-L6-v2 was trained
    to embed with), not h[CLS]: instances average their whole window, descriptions their content tokens."""

    def mean(hidden, mask):
        mask = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def encode_instances(self, input_ids, attention_mask, head_marker, tail_marker):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return torch.cat([mean(hidden, attention_mask), hidden[rows, head_marker], hidden[rows, tail_marker]], dim=-1)

    def encode_descriptions(self, input_ids, attention_mask, content_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        head, head_w = self.head_pool(hidden, content_mask)
        tail, tail_w = self.tail_pool(hidden, content_mask)
        return model_module.DescriptionEncoding(torch.cat([mean(hidden, content_mask), head, tail], dim=-1), head_w, tail_w)

    model_module.RecallEncoder.encode_instances = encode_instances
    model_module.RecallEncoder.encode_descriptions = encode_descriptions


def patch_constant_lr() -> None:
    """Constant learning rate after the warm-up, instead of the linear decay to zero."""
    import transformers

    def constant(optimizer, num_warmup_steps, num_training_steps):
        return transformers.get_constant_schedule_with_warmup(optimizer, num_warmup_steps)

    transformers.get_linear_schedule_with_warmup = constant


def typed_descriptions(data_dir: Path, kind: str) -> dict[str, str]:
    """Each description followed by its head and tail entity types, from the processed description files
    (RE-Matching's keywords; "synonym": with their added synonyms): "<description> ; head : town, city ;
    tail : head of government". Applies to train and test relations alike (types come with every relation)."""
    name = {"plain": "relation_description_processed.json", "synonym": "relation_description_addsynonym_processed.json"}[kind]
    records = json.loads((data_dir / "fewrel" / "relation_description" / name).read_text())
    return {r["relation"]: f"{' '.join(r['description'])} ; head : {', '.join(r['h'])} ; tail : {', '.join(r['t'])}"
            for r in records}


def changes_label(changes: dict, defaults: dict) -> str:
    """The probe's departures from the control, e.g. "no dropout, lr=3e-05" (records predating an option lack its key)."""
    parts = []
    for key, value in changes.items():
        if key == "train_seed" or value == defaults.get(key, value):
            continue
        shown = f"{value:g}" if isinstance(value, float) else value
        parts.append(key.replace("_", " ") if value is True else f"{key.replace('_', ' ')}={shown}")
    return ", ".join(parts) or "none (the library's recall)"


def markdown_table(results: Path, defaults: dict) -> str:
    rows = ["| probe | changes | train seed | P | R | F1 | steps | training (device, precision) |", "|---|---|---|---|---|---|---|---|"]
    for line in results.read_text().splitlines():
        r = json.loads(line)
        m = r["recall_only"]
        precision = "fp32" if r["mixed_precision"] == "no" else r["mixed_precision"]
        wall = r["train_wall_s"]
        wall = f"{wall / 60:.0f} min" if wall >= 600 else f"{wall:.0f} s"
        rows.append(f"| {r['name']} | {changes_label(r['changes'], defaults)} | {r['changes']['train_seed']} | {m['precision']:.2f} "
                    f"| {m['recall']:.2f} | {m['f1']:.2f} | {r['steps']} | {wall} ({r['device']}, {precision}) |")
    return "\n".join(rows)


def summary_table(results: Path, defaults: dict) -> str:
    """One row per probe and device: mean ± std over its training seeds, and its paired difference to the
    same device's control over the seeds both ran (seed noise is ± 0.7–1.1 F1, so single runs mislead).
    "auto" precision is fp32 on a CPU without bf16 and bf16 on a GPU."""
    import statistics

    groups: dict[tuple[str, str], dict[int, float]] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        key = (changes_label(r["changes"], defaults), r["device"])  # a precision other than auto's is a change
        groups.setdefault(key, {})[r["changes"]["train_seed"]] = r["recall_only"]["f1"]
    controls = {device: f1s for (label, device), f1s in groups.items() if label.startswith("none")}
    rows = ["| changes | device | seeds | F1 mean ± std | best | vs control, same seeds |", "|---|---|---|---|---|---|"]
    for (label, device), f1s in sorted(groups.items(), key=lambda kv: (kv[0][1], -statistics.mean(kv[1].values()))):
        values = list(f1s.values())
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        control = controls.get(device, {})
        shared = sorted(set(f1s) & set(control))
        versus = "—"
        if shared and not label.startswith("none"):
            diffs = [f1s[seed] - control[seed] for seed in shared]
            versus = f"{statistics.mean(diffs):+.2f} over {len(shared)}"
        rows.append(f"| {label} | {device} | {len(values)} | {statistics.mean(values):.2f}{spread} | {max(values):.2f} | {versus} |")
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    spec, train, arch = RunSpec(variant="no_classifier"), train_module.TrainConfig(), EmmaConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", help="run name: its folder under runs/recall_probes/ and its results line")
    ap.add_argument("--table", action="store_true", help="print the results file as a markdown table and stop")
    ap.add_argument("--summary", action="store_true", help="print mean ± std per probe over its seeds and stop")
    # Changes the library does not offer, patched in.
    ap.add_argument("--symmetric", action="store_true", help=patch_symmetric.__doc__.splitlines()[0])
    ap.add_argument("--segment-norm", action="store_true", help=patch_segment_norm.__doc__.splitlines()[0])
    ap.add_argument("--all-negatives", action="store_true", help=patch_all_negatives.__doc__.splitlines()[0])
    ap.add_argument("--zero-heads", action="store_true", help=patch_zero_heads.__doc__.splitlines()[0])
    ap.add_argument("--no-dropout", action="store_true", help=patch_no_dropout.__doc__.splitlines()[0])
    ap.add_argument("--mean-first", action="store_true", help=patch_mean_first.__doc__.splitlines()[0])
    ap.add_argument("--constant-lr", action="store_true", help=patch_constant_lr.__doc__.splitlines()[0])
    ap.add_argument("--freeze-layers", type=int, default=0, help=patch_freeze_layers.__doc__.splitlines()[0])
    ap.add_argument("--typed-descriptions", choices=("plain", "synonym"), default=None,
                    help=typed_descriptions.__doc__.splitlines()[0])
    # Library options (TrainConfig / EmmaConfig), at the protocol's values unless given.
    ap.add_argument("--freeze-word-embeddings", action="store_true", help="TrainConfig.freeze_word_embeddings")
    ap.add_argument("--lr", type=float, default=spec.lr)
    ap.add_argument("--head-lr", type=float, default=spec.head_lr)
    ap.add_argument("--warmup-steps", type=int, default=train.warmup_steps)
    ap.add_argument("--weight-decay", type=float, default=train.weight_decay)
    ap.add_argument("--max-grad-norm", type=float, default=train.max_grad_norm)
    ap.add_argument("--precision", default=train.precision, help="TrainConfig.precision (auto: bf16 where supported)")
    ap.add_argument("--temperature", type=float, default=arch.temperature, help="τ (the calibration fixes 0.02)")
    ap.add_argument("--description-pooling", default=arch.description_pooling, help="EmmaConfig.description_pooling")
    ap.add_argument("--max-length", type=int, default=spec.max_length, help="instance window in word pieces")
    ap.add_argument("--max-description-length", type=int, default=arch.max_description_length)
    ap.add_argument("--train-seed", type=int, default=spec.train_seed)
    # Where, and dry runs.
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the data folder (../shared/data)")
    ap.add_argument("--results", type=Path, default=REPO / "results" / "recall_probes.jsonl")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "recall_probes", help="where run folders go")
    ap.add_argument("--dry-run", type=int, default=0, metavar="N",
                    help="N train and N test sentences per relation (a check of the script, not a probe)")
    return ap


RECORD_SKIPS = ("name", "results", "table", "summary", "data", "runs", "dry_run")


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    defaults = {k: v for k, v in vars(ap.parse_args([])).items() if k not in RECORD_SKIPS}
    if args.table or args.summary:
        print(markdown_table(args.results, defaults) if args.table else summary_table(args.results, defaults))
        return
    if not args.name:
        ap.error("give a run name (or --table, --summary)")

    for flag, patch in (("symmetric", patch_symmetric), ("segment_norm", patch_segment_norm),
                        ("all_negatives", patch_all_negatives), ("zero_heads", patch_zero_heads),
                        ("no_dropout", patch_no_dropout), ("mean_first", patch_mean_first), ("constant_lr", patch_constant_lr)):
        if getattr(args, flag):
            patch()
    if args.freeze_layers:
        patch_freeze_layers(args.freeze_layers)
    # The protocol's budget, from the run spec whose recall stage this is (no copy of its numbers here).
    spec = RunSpec(m=15, seed="ori", variant="no_classifier", train_seed=args.train_seed)
    data = load_run_data(spec, args.data)
    train_descriptions, test_descriptions = data.train_descriptions, data.test_descriptions
    if args.typed_descriptions:
        typed = typed_descriptions(args.data, args.typed_descriptions)
        train_descriptions = {r: typed[r] for r in train_descriptions}
        test_descriptions = {r: typed[r] for r in test_descriptions}
    test = cap_per_relation(data.test, args.dry_run, seed=0) if args.dry_run else data.test
    arch = EmmaConfig(max_length=args.max_length, max_description_length=args.max_description_length, use_classifier=False,
                      temperature=args.temperature, description_pooling=args.description_pooling)
    config = train_module.TrainConfig(
        model=arch, epochs=spec.epochs, batch_size=spec.batch_size, lr=args.lr, head_lr=args.head_lr, seed=spec.train_seed,
        max_per_relation=args.dry_run or spec.max_per_relation, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, precision=args.precision, freeze_word_embeddings=args.freeze_word_embeddings)
    out = args.runs / args.name
    t0 = time.perf_counter()
    train_module.train(config, data.train, train_descriptions, out, resume=True)
    extractor = Extractor.load(out)
    extractor.set_relations(test_descriptions)
    report = evaluate(extractor, test)
    flags = {k: v for k, v in vars(args).items() if k not in RECORD_SKIPS}
    meta = json.loads((out / "training.json").read_text())
    record = {"name": args.name, "changes": flags, "recall_only": report["recall_only"], "n_test": len(test),
              "steps": meta["step"], "train_wall_s": meta["wall_time_s"], "wall_s": round(time.perf_counter() - t0),
              "device": meta["device"], "mixed_precision": meta["mixed_precision"]}
    with open(args.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
