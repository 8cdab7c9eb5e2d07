"""Recall calibration probes: changes to the recall recipe that the library does not offer, measured.

The issue's calibration: plain recall (entity markers, two masked pooling heads, InfoNCE τ = 0.02, batches of
distinct relations, lr 5e-5, 300 instances per relation, one epoch) should reach 75 macro F1 on FewRel `ori`
m = 15. Ours reaches 73.21 ± 0.70 over 5 training seeds (README, Results). Each probe here trains exactly
that recall stage (what `python -m emma experiment --variant no_classifier` trains) with one change patched
in, tests on all 10,500 sentences of the 15 unseen relations, and appends a line to
results/recall_probes.jsonl. Changes that lose stay out of the library; this script is their record.

    python results/recall_probes.py NAME [--freeze-word-embeddings] [--symmetric] [--segment-norm]
                                         [--all-negatives] [--zero-heads] [--train-seed N]
    python results/recall_probes.py --table     # the results file as a markdown table

One run is ~22 min on 2 CPU cores in fp32 (~20 min training, ~2 min testing). Needs ../shared/data.
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


def markdown_table(results: Path) -> str:
    rows = ["| probe | changes | train seed | P | R | F1 | steps | training (device, precision) |", "|---|---|---|---|---|---|---|---|"]
    for line in results.read_text().splitlines():
        r = json.loads(line)
        changes = ", ".join(k.replace("_", " ") for k, v in r["changes"].items() if v is True) or "none (the library's recall)"
        m = r["recall_only"]
        precision = "fp32" if r["mixed_precision"] == "no" else r["mixed_precision"]
        rows.append(f"| {r['name']} | {changes} | {r['changes']['train_seed']} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} "
                    f"| {r['steps']} | {r['train_wall_s'] / 60:.0f} min ({r['device']}, {precision}) |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", help="run name: its folder under runs/recall_probes/ and its results line")
    ap.add_argument("--table", action="store_true", help="print the results file as a markdown table and stop")
    ap.add_argument("--freeze-word-embeddings", action="store_true", help="TrainConfig.freeze_word_embeddings (a library option)")
    ap.add_argument("--symmetric", action="store_true", help=patch_symmetric.__doc__.splitlines()[0])
    ap.add_argument("--segment-norm", action="store_true", help=patch_segment_norm.__doc__.splitlines()[0])
    ap.add_argument("--all-negatives", action="store_true", help=patch_all_negatives.__doc__.splitlines()[0])
    ap.add_argument("--zero-heads", action="store_true", help=patch_zero_heads.__doc__.splitlines()[0])
    ap.add_argument("--train-seed", type=int, default=42)
    ap.add_argument("--results", type=Path, default=REPO / "results" / "recall_probes.jsonl")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(args.results))
        return
    if not args.name:
        ap.error("give a run name (or --table)")

    for flag, patch in (("symmetric", patch_symmetric), ("segment_norm", patch_segment_norm),
                        ("all_negatives", patch_all_negatives), ("zero_heads", patch_zero_heads)):
        if getattr(args, flag):
            patch()
    # The protocol's budget, from the run spec whose recall stage this is (no copy of its numbers here).
    spec = RunSpec(m=15, seed="ori", variant="no_classifier", train_seed=args.train_seed)
    data = load_run_data(spec, DEFAULT_DATA_DIR)
    config = train_module.TrainConfig(model=EmmaConfig(max_length=spec.max_length, use_classifier=False), epochs=spec.epochs,
                                      batch_size=spec.batch_size, lr=spec.lr, head_lr=spec.head_lr, seed=spec.train_seed,
                                      max_per_relation=spec.max_per_relation, freeze_word_embeddings=args.freeze_word_embeddings)
    out = REPO / "runs" / "recall_probes" / args.name
    t0 = time.perf_counter()
    train_module.train(config, data.train, data.train_descriptions, out, resume=True)
    extractor = Extractor.load(out)
    extractor.set_relations(data.test_descriptions)
    report = evaluate(extractor, data.test)
    flags = {k: v for k, v in vars(args).items() if k not in ("name", "results", "table")}
    meta = json.loads((out / "training.json").read_text())
    record = {"name": args.name, "changes": flags, "recall_only": report["recall_only"], "n_test": len(data.test),
              "steps": meta["step"], "train_wall_s": meta["wall_time_s"], "wall_s": round(time.perf_counter() - t0),
              "device": meta["device"], "mixed_precision": meta["mixed_precision"]}
    with open(args.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
