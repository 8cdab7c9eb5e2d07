"""Joint training on the tiny model: batches, loss going down, checkpoints, resume, clipping, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import emma.losses as losses_module
import emma.train as train_module
from emma.checkpoint import load_checkpoint
from emma.data import Instance
from emma.model import EmmaConfig
from emma.train import RECALL_STAGE, STATE_FILE, TrainConfig, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_accelerate")]


ARCHITECTURE = {f.name for f in dataclasses.fields(EmmaConfig)} - {"encoder"}


def _config(encoder, **overrides):
    """A small TrainConfig, one joint stage unless `schedule` says otherwise; architecture fields (k, max_length,
    use_classifier, ...) go to its EmmaConfig."""
    model = dict(max_length=32, max_description_length=24)
    values = dict(encoder=encoder, schedule="joint", batch_size=4, lr=1e-3, head_lr=None, warmup_steps=0, precision="fp32", seed=1)
    for key, value in overrides.items():
        (model if key in ARCHITECTURE else values)[key] = value
    return TrainConfig(model=EmmaConfig(**model), **values)


def _log(folder):
    return [json.loads(line) for line in (Path(folder) / "train_log.jsonl").read_text().splitlines()]


def _weights(folder):
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)["model"]


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_training_needs_two_relations(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    one = [i for i in toy_instances if i.relation == "born in"]
    with pytest.raises(ValueError, match="at least max\\(2, k=2\\) relations, the data has 1"):
        train(_config(tiny_encoder_dir, max_steps=1), one, toy_descriptions, tmp_path / "x")


# ----------------------------------------------------------------------------- training runs


def test_a_few_steps_lower_the_loss_and_write_a_checkpoint(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    config = _config(tiny_encoder_dir, max_steps=24, lr=2e-3)
    folder = train(config, toy_instances, toy_descriptions, tmp_path / "run")
    log = _log(folder)
    assert [r["step"] for r in log] == list(range(1, 25))
    losses = [r["loss"] for r in log]
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
    assert all(r["loss"] == pytest.approx(r["recall_loss"] + r["rerank_loss"], rel=1e-4) for r in log)

    model, tokenizer = load_checkpoint(folder, device="cpu")
    assert model.config.max_length == 32 and model.config.k == 2 and model.classifier is not None
    meta = json.loads((folder / "training.json").read_text())
    assert meta["step"] == 24 and meta["instances"] == 12 and meta["relations"] == 4 and meta["processes"] == 1
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    assert state["step"] == 24 and {"model", "optimizer", "scheduler", "config"} <= set(state)
    # the checkpoint is the trained weights (fp16 on disk)
    saved = {k: v for k, v in model.state_dict().items()}
    assert _max_diff(saved, state["model"]) < 5e-3


def test_recall_only_training(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    folder = train(_config(tiny_encoder_dir, max_steps=2, use_classifier=False), toy_instances, toy_descriptions, tmp_path / "r")
    assert all(r["rerank_loss"] == 0 for r in _log(folder))
    model, _ = load_checkpoint(folder, device="cpu")
    assert model.classifier is None


def test_epochs_and_cap(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    config = _config(tiny_encoder_dir, epochs=2, max_per_relation=2)
    folder = train(config, toy_instances, toy_descriptions, tmp_path / "e")
    meta = json.loads((folder / "training.json").read_text())
    # two instances of each of four relations, batches of four distinct relations: two steps per epoch
    assert meta["instances"] == 8 and meta["step"] == 4
    assert {r["epoch"] for r in _log(folder)} == {0, 1}


def test_deterministic_on_cpu(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    config = _config(tiny_encoder_dir, max_steps=3)
    a = _weights(train(config, toy_instances, toy_descriptions, tmp_path / "a"))
    b = _weights(train(config, toy_instances, toy_descriptions, tmp_path / "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _log(tmp_path / "a")] == [r["loss"] for r in _log(tmp_path / "b")]
    c = _weights(train(_config(tiny_encoder_dir, max_steps=3, seed=2), toy_instances, toy_descriptions, tmp_path / "c"))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_from_the_saved_step(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path, monkeypatch):
    config = _config(tiny_encoder_dir, max_steps=5, batch_size=2, save_every=2, eval_every=3)
    straight = train(config, toy_instances, toy_descriptions, tmp_path / "straight")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted after step 3")

    monkeypatch.setattr(train_module, "_dev_scores", crash)
    with pytest.raises(KeyboardInterrupt):
        train(config, toy_instances, toy_descriptions, tmp_path / "resumed", dev=(toy_instances, toy_descriptions))
    state = torch.load(tmp_path / "resumed" / STATE_FILE, map_location="cpu", weights_only=False)
    assert state["step"] == 2  # the last save before the interruption
    monkeypatch.undo()

    resumed = train(config, toy_instances, toy_descriptions, tmp_path / "resumed", resume=True)
    assert json.loads((resumed / "training.json").read_text())["step"] == 5
    log = _log(resumed)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]  # step 3 died before it was logged, then ran again
    straight_log = _log(straight)
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in straight_log], rel=1e-5)
    a, b = _weights(straight), _weights(resumed)
    assert _max_diff(a, b) < 1e-6


def test_resume_without_state_starts_fresh(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    folder = train(_config(tiny_encoder_dir, max_steps=1), toy_instances, toy_descriptions, tmp_path / "f", resume=True)
    assert [r["step"] for r in _log(folder)] == [1]


def test_gradients_are_clipped_before_the_step(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path, monkeypatch):
    norms = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads = [p.grad.flatten() for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.cat(grads).norm().item())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    train(_config(tiny_encoder_dir, max_steps=3, max_grad_norm=0.05), toy_instances, toy_descriptions, tmp_path / "clip")
    # recall and classifier are clipped separately, each to 0.05, so together at most 0.05·√2
    assert len(norms) == 3 and all(n <= 0.05 * 2 ** 0.5 * (1 + 1e-4) for n in norms), norms
    monkeypatch.undo()

    # and the clip changes what the step does: with a tiny norm AdamW's epsilon dominates, parameters barely move
    start = _weights(train(_config(tiny_encoder_dir, max_steps=1, lr=0.0), toy_instances, toy_descriptions, tmp_path / "0"))
    free = _weights(train(_config(tiny_encoder_dir, max_steps=1, weight_decay=0.0, max_grad_norm=1e9),
                          toy_instances, toy_descriptions, tmp_path / "free"))
    tiny = _weights(train(_config(tiny_encoder_dir, max_steps=1, weight_decay=0.0, max_grad_norm=1e-9),
                          toy_instances, toy_descriptions, tmp_path / "tiny"))
    moved = lambda w: sum((w[k] - start[k]).abs().sum().item() for k in start)  # noqa: E731  total L1 movement
    moved_free, moved_tiny = moved(free), moved(tiny)
    assert _max_diff(free, start) > 5e-4 and moved_tiny < 0.01 * moved_free, (moved_free, moved_tiny)


def test_train_twice_in_one_process_with_different_precision(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    for precision in ("fp32", "bf16", "fp32"):  # accelerate's process-wide state must not carry over
        folder = train(_config(tiny_encoder_dir, max_steps=1, precision=precision), toy_instances, toy_descriptions,
                       tmp_path / precision)
        meta = json.loads((folder / "training.json").read_text())
        assert meta["mixed_precision"] == ("no" if precision == "fp32" else "bf16") and meta["step"] == 1


def test_instances_of_one_relation_never_share_a_batch(tiny_encoder_dir, toy_descriptions, tmp_path, monkeypatch):
    # four instances of "born in" and one of each other relation: batches must still hold distinct relations
    instances = [Instance(("a", "b", "c"), (0, 1), (2, 3), "born in")] * 4 + [
        Instance(("x", "y", "z"), (0, 1), (2, 3), r) for r in toy_descriptions if r != "born in"
    ]
    seen = []
    original = losses_module.JointObjective.forward

    def forward(self, batch):
        seen.append(batch["relation_ids"].tolist())
        return original(self, batch)

    monkeypatch.setattr(losses_module.JointObjective, "forward", forward)
    train(_config(tiny_encoder_dir, epochs=1), instances, toy_descriptions, tmp_path / "d")
    assert seen and all(len(set(b)) == len(b) for b in seen)


def test_the_prototype_loss_trains_on_a_bank_refreshed_each_epoch(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path, monkeypatch):
    banks = []
    original = train_module.Run.example_bank

    def example_bank(self):
        banks.append(original(self))
        return banks[-1]

    monkeypatch.setattr(train_module.Run, "example_bank", example_bank)
    plain = _log(train(_config(tiny_encoder_dir, epochs=2), toy_instances, toy_descriptions, tmp_path / "plain"))
    assert not banks
    with_bank = _log(train(_config(tiny_encoder_dir, epochs=2, prototype_weight=1.0), toy_instances, toy_descriptions, tmp_path / "bank"))
    assert len(banks) == 2 and banks[0].vectors.shape[0] == len(toy_instances)
    assert banks[0].counts.sum() == len(toy_instances) and not torch.equal(banks[0].vectors, banks[1].vectors)
    # the same batches, seeds and first weights: only the added term differs at step 1
    assert with_bank[0]["recall_loss"] > plain[0]["recall_loss"]
    with pytest.raises(ValueError, match="prototype_weight"):
        _config(tiny_encoder_dir, prototype_weight=-1)


# ----------------------------------------------------------------------------- two processes (gloo)

DDP_SCRIPT = r'''
"""Run under `torch.distributed.run --nproc_per_node 2`: JointObjective with gathered negatives, then train()."""
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from emma.checkpoint import load_tokenizer
from emma.data import read_instances, read_descriptions
from emma.losses import InfoNCELoss, same_relation_mask
from emma.model import Emma, EmmaConfig
from emma.batches import TrainingData
from emma.losses import JointObjective
from emma.train import TrainConfig, train

args = json.loads(Path(sys.argv[1]).read_text())
instances = read_instances(args["data"])
descriptions = read_descriptions(args["descriptions"])
rank = int(os.environ["RANK"])
result = {"rank": rank}

# 1. JointObjective directly: rank 0 holds (founded by, born in), rank 1 (capital of, born in).
if args["objective"]:
    state = PartialState(cpu=True)  # initialises the gloo process group from the launcher's environment
    assert state.num_processes == 2 and state.process_index == rank and torch.distributed.get_backend() == "gloo"
    tokenizer = load_tokenizer(args["encoder"])
    torch.manual_seed(0)
    model = Emma.from_encoder(EmmaConfig(max_length=32, max_description_length=24, temperature=0.1), len(tokenizer),
                              pretrained=args["encoder"]).eval()
    first = {}
    for i, inst in enumerate(instances):
        first.setdefault(inst.relation, i)
    picks = [[first["founded by"], first["born in"]], [first["capital of"], first["born in"] + 1]]
    data = TrainingData.encode(tokenizer, model.config, instances, descriptions, batch_size=2, seed=42)
    batches = [data.batch(p, torch.device("cpu")) for p in picks]
    objective = JointObjective(model, tokenizer, world_size=2, rank=rank)
    with torch.no_grad():
        out = objective(batches[rank])
        # single-process reference over the concatenated descriptions of both ranks
        b = batches[rank]
        inst = model.recall.encode_instances(b["input_ids"], b["attention_mask"], b["head_marker"], b["tail_marker"])
        desc = [model.recall.encode_descriptions(x["desc_input_ids"], x["desc_attention_mask"], x["desc_content_mask"]).vectors
                for x in batches]
        all_desc = torch.cat(desc)
        all_rel = torch.cat([x["relation_ids"] for x in batches])
        targets = torch.arange(2) + 2 * rank
        mask = same_relation_mask(b["relation_ids"], all_rel, targets)
        loss = InfoNCELoss(0.1)
        result["recall_loss"] = out.recall_loss.item()
        result["reference"] = loss(inst, all_desc, targets, mask).item()
        result["local_only"] = loss(inst, desc[rank], torch.arange(2), same_relation_mask(b["relation_ids"], b["relation_ids"], torch.arange(2))).item()
        result["masked_pairs"] = int(mask.sum())

    # Gradients flow back through the gather: the rank-averaged gradients (what DDP applies) equal the
    # gradient of the mean loss computed in one process over both batches. Recall only, to isolate it.
    torch.manual_seed(0)
    recall_only = Emma.from_encoder(EmmaConfig(max_length=32, max_description_length=24, temperature=0.1,
                                               use_classifier=False), len(tokenizer), pretrained=args["encoder"]).eval()
    JointObjective(recall_only, tokenizer, world_size=2, rank=rank)(batches[rank]).loss.backward()
    grads = {n: p.grad.clone() for n, p in recall_only.named_parameters() if p.grad is not None}
    for g in grads.values():
        torch.distributed.all_reduce(g)
        g /= 2
    recall_only.zero_grad()
    enc_r = recall_only.recall
    all_desc = torch.cat([enc_r.encode_descriptions(x["desc_input_ids"], x["desc_attention_mask"], x["desc_content_mask"]).vectors
                          for x in batches])
    reference = 0
    for r, x in enumerate(batches):
        inst = enc_r.encode_instances(x["input_ids"], x["attention_mask"], x["head_marker"], x["tail_marker"])
        t = torch.arange(2) + 2 * r
        reference = reference + InfoNCELoss(0.1)(inst, all_desc, t, same_relation_mask(x["relation_ids"], all_rel, t)) / 2
    reference.backward()
    result["grad_params"] = len(grads)
    result["grad_max_err"] = max((grads[n] - p.grad).abs().max().item() for n, p in recall_only.named_parameters() if n in grads)
    result["grad_scale"] = max(p.grad.abs().max().item() for n, p in recall_only.named_parameters() if n in grads)
    result["pool_grad"] = recall_only.recall.head_pool.score.weight.grad.abs().sum().item()

# 2. The training loop for two steps: record how many descriptions each InfoNCE call contrasts.
seen = []
original = InfoNCELoss.forward
def forward(self, instances_, descriptions_, targets_, false_negatives=None):
    seen.append([instances_.shape[0], descriptions_.shape[0], targets_.tolist()])
    return original(self, instances_, descriptions_, targets_, false_negatives)
InfoNCELoss.forward = forward
config = TrainConfig(model=EmmaConfig(max_length=32, max_description_length=24), encoder=args["encoder"], batch_size=2,
                     schedule="joint", max_steps=2, lr=1e-3, warmup_steps=0, precision="fp32", seed=1)
train(config, instances, descriptions, args["output"])
InfoNCELoss.forward = original
result["infonce_calls"] = seen
Path(args["results"], f"rank{rank}.json").write_text(json.dumps(result))
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(tmp_path, tiny_encoder_dir, toy_instances, toy_descriptions, objective, extra_env):
    """Launch DDP_SCRIPT on two CPU processes (gloo) with torch.distributed.run; returns both ranks' results."""
    import os
    import subprocess
    import sys

    from emma.data import write_jsonl

    write_jsonl(toy_instances, tmp_path / "toy.jsonl")
    (tmp_path / "desc.json").write_text(json.dumps(toy_descriptions))
    (tmp_path / "results").mkdir()
    args = {"encoder": tiny_encoder_dir, "data": str(tmp_path / "toy.jsonl"), "descriptions": str(tmp_path / "desc.json"),
            "output": str(tmp_path / "ddp_run"), "results": str(tmp_path / "results"), "objective": objective}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent), **extra_env})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(tmp_path / "ddp.py"), str(tmp_path / "args.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((tmp_path / "results" / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_two_processes_gather_negatives(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    # ACCELERATE_USE_CPU=1 is what `accelerate launch --cpu` sets; the test below checks plain torchrun without it.
    results = _run_two_processes(tmp_path, tiny_encoder_dir, toy_instances, toy_descriptions, True, {"ACCELERATE_USE_CPU": "1"})

    for r in results:
        # the recall loss contrasts against all 2×B gathered descriptions, same-relation ones masked
        assert r["recall_loss"] == pytest.approx(r["reference"], rel=1e-5, abs=1e-6)
        assert r["recall_loss"] != pytest.approx(r["local_only"], rel=1e-3)
        # "born in" is on both ranks: each rank masks the other rank's copy of its own relation
        assert r["masked_pairs"] == 1
        # gradients through the differentiable gather match the single-process gradient of the mean loss
        assert r["grad_params"] > 10 and r["pool_grad"] > 0
        assert r["grad_max_err"] <= 1e-4 * r["grad_scale"] + 1e-7, (r["grad_max_err"], r["grad_scale"])
        # in the training loop every InfoNCE call saw B instances against 2·B descriptions, targets offset by rank
        assert len(r["infonce_calls"]) == 2
        for n_inst, n_desc, targets in r["infonce_calls"]:
            assert n_desc == 2 * n_inst == 4
            assert targets == [2 * r["rank"], 2 * r["rank"] + 1]

    folder = tmp_path / "ddp_run"
    meta = json.loads((folder / "training.json").read_text())
    assert meta["processes"] == 2 and meta["step"] == 2
    model, _ = load_checkpoint(folder, device="cpu")
    assert model.classifier is not None


@pytest.mark.slow
def test_two_cpu_processes_without_accelerate_env(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the bug concerns CPU-only machines")
    results = _run_two_processes(tmp_path, tiny_encoder_dir, toy_instances, toy_descriptions, False, {})
    assert json.loads((tmp_path / "ddp_run" / "training.json").read_text())["processes"] == 2
    for r in results:
        assert all(n_desc == 2 * n_inst for n_inst, n_desc, _ in r["infonce_calls"])


# ----------------------------------------------------------------------------- classifier slots and continuing


def test_classifier_sees_the_gold_candidate_in_every_slot(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path, monkeypatch):
    # In recall order the gold candidate sits in slot 0 almost always, and an MLP over concatenated
    # [CLS] states would learn "pick slot 0"; training must shuffle the slots.
    golds = []
    real_ce = losses_module.F.cross_entropy

    def spy(logits, target, *a, **kw):
        if logits.shape[1] == 2:  # the rerank loss (k = 2), not InfoNCE over the batch
            golds.extend(target.tolist())
        return real_ce(logits, target, *a, **kw)

    monkeypatch.setattr(losses_module.F, "cross_entropy", spy)
    train(_config(tiny_encoder_dir, max_steps=12), toy_instances, toy_descriptions, tmp_path / "run")
    assert golds and set(golds) == {0, 1}
    assert 0.2 < sum(golds) / len(golds) < 0.8


def test_continue_from_checkpoint_training_only_the_classifier(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    first = train(_config(tiny_encoder_dir, max_steps=2), toy_instances, toy_descriptions, tmp_path / "first")
    before, _ = load_checkpoint(first, device="cpu")
    second = train(_config(tiny_encoder_dir, max_steps=3, init_checkpoint=str(first), train_recall=False),
                   toy_instances, toy_descriptions, tmp_path / "second")
    after, _ = load_checkpoint(second, device="cpu")
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if k.startswith("recall."))
    assert any(not torch.equal(b[k], a[k]) for k in b if k.startswith("classifier."))
    assert all(r["rerank_loss"] > 0 for r in _log(second))


def test_batches_must_hold_k_candidates(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    with pytest.raises(ValueError, match="k=3 candidates from the batch's descriptions, but batches hold only 2 relations"):
        train(_config(tiny_encoder_dir, max_steps=1, k=3, batch_size=2), toy_instances, toy_descriptions, tmp_path / "r")


def test_two_stages_recall_then_a_new_classifier(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    first = train(_config(tiny_encoder_dir, max_steps=2, use_classifier=False), toy_instances, toy_descriptions, tmp_path / "recall")
    before, _ = load_checkpoint(first, device="cpu")
    assert before.classifier is None
    second = train(_config(tiny_encoder_dir, max_steps=2, init_checkpoint=str(first), train_recall=False,
                           classifier_head="shared", classifier_features="cls_entities", decision="fused"),
                   toy_instances, toy_descriptions, tmp_path / "classifier")
    after, _ = load_checkpoint(second, device="cpu")
    assert after.classifier is not None and after.config.classifier_head == "shared"
    assert after.config.classifier_features == "cls_entities" and after.config.decision == "fused"
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b)  # recall untouched
    assert all(r["rerank_loss"] > 0 for r in _log(second))


def test_fresh_heads_get_their_own_learning_rate(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    # lr 0 for the pretrained encoders, head_lr for the randomly initialised pooling and rerank heads
    start = _weights(train(_config(tiny_encoder_dir, max_steps=1, lr=0.0), toy_instances, toy_descriptions, tmp_path / "0"))
    after = _weights(train(_config(tiny_encoder_dir, max_steps=2, lr=0.0, head_lr=1e-2, weight_decay=0.0),
                           toy_instances, toy_descriptions, tmp_path / "heads"))
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and all(".encoder." not in f".{k}" for k in moved), sorted(moved)
    assert {"recall.head_pool.score.weight", "classifier.mlp.0.weight"} <= moved


def test_the_default_schedule_trains_recall_then_a_classifier_on_it(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path):
    config = _config(tiny_encoder_dir, schedule="two_stage", max_steps=2, max_per_relation=3, classifier_max_per_relation=2)
    folder = train(config, toy_instances, toy_descriptions, tmp_path / "staged")
    assert not (folder / RECALL_STAGE).exists()  # the first stage's folder is gone once the second is saved
    stages = json.loads((folder / "training.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["recall", "classifier"] and [s["step"] for s in stages] == [2, 2]
    assert [s["instances"] for s in stages] == [12, 8]  # 3 per relation, then the smaller cap, 2, for the classifier
    assert stages[0]["config"]["model"]["use_classifier"] is False and stages[1]["config"]["train_recall"] is False
    # the recall stage is exactly a recall-only run, and the second stage leaves it untouched
    recall_only = train(_config(tiny_encoder_dir, max_steps=2, max_per_relation=3, use_classifier=False), toy_instances,
                        toy_descriptions, tmp_path / "r")
    staged, _ = load_checkpoint(folder, device="cpu")
    alone, _ = load_checkpoint(recall_only, device="cpu")
    a, b = staged.state_dict(), alone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert staged.classifier is not None and staged.config.decision == "fused"
    assert all(r["rerank_loss"] > 0 and r["loss"] == r["rerank_loss"] for r in _log(folder))


def test_a_two_stage_run_resumes_in_its_second_stage(tiny_encoder_dir, toy_instances, toy_descriptions, tmp_path, monkeypatch):
    config = _config(tiny_encoder_dir, schedule="two_stage", max_steps=3, save_every=1)
    straight = _weights(train(config, toy_instances, toy_descriptions, tmp_path / "straight"))
    calls = []
    original = train_module.Run.step

    def crash_in_stage_two(self, *args, **kwargs):
        if not self.config.train_recall and self.position.step == 2:
            raise KeyboardInterrupt("interrupted in the classifier stage")
        calls.append(self.config.train_recall)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(train_module.Run, "step", crash_in_stage_two)
    with pytest.raises(KeyboardInterrupt):
        train(config, toy_instances, toy_descriptions, tmp_path / "resumed")
    monkeypatch.undo()
    assert calls == [True, True, True, False, False]
    resumed = train(config, toy_instances, toy_descriptions, tmp_path / "resumed", resume=True)
    assert [r["step"] for r in _log(resumed)] == [1, 2, 3]  # the classifier's log, continued
    assert _max_diff(straight, _weights(resumed)) < 1e-6
    meta = (resumed / "training.json").read_text()
    again = train(config, toy_instances, toy_descriptions, resumed, resume=True)  # finished: nothing to do
    assert (again / "training.json").read_text() == meta and not (again / RECALL_STAGE).exists()
