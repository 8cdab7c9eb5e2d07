"""The evaluation protocol (research.protocol, .scheduler, .table): one run trains on a split's train relations
and tests on its unseen ones, appends one record, is skipped when repeated, and the table is rebuilt from the records."""

from __future__ import annotations

import gzip
import json

import pytest

from research import RESULTS_DIR
from research.protocol import VARIANTS, RunSpec, default_plan, load_run_data, read_records, run
from research.scheduler import plan_tasks, run_plan
from research.table import render_table, summarize

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


@pytest.fixture
def data_dir(tmp_path, toy_instances, toy_descriptions):
    """A miniature ../shared/data: FewRel-format sentences of six relations, descriptions, one m=2 split file."""
    root = tmp_path / "data"
    (root / "fewrel" / "partial").mkdir(parents=True)
    (root / "fewrel" / "relation_description").mkdir()
    (root / "splits" / "fewrel_rel2id").mkdir(parents=True)
    descriptions = dict(toy_descriptions)
    by_relation: dict[str, list] = {}
    for inst in toy_instances:
        record = {"tokens": list(inst.tokens), "h": ["h", "Q1", [list(range(*inst.head))]], "t": ["t", "Q2", [list(range(*inst.tail))]]}
        by_relation.setdefault(inst.relation, []).append(record)
        if inst.relation in ("born in", "capital of"):  # two more relations, so four can train with k up to 4
            twin = f"{inst.relation} (twin)"
            by_relation.setdefault(twin, []).append(record)
            descriptions[twin] = descriptions[inst.relation] + " (a twin relation)"
    relations = sorted(by_relation)
    # Sentences come from two files, as the real FewRel data does (validation file + reconstructed train file).
    (root / "fewrel" / "val_wiki.json").write_text(json.dumps({r: by_relation[r] for r in relations[:3]}))
    with gzip.open(root / "fewrel" / "partial" / "train_wiki_partial_union.json.gz", "wt") as f:
        json.dump({r: by_relation[r] for r in relations[3:]}, f)
    (root / "fewrel" / "relation_description" / "relation_description_processed.json").write_text(json.dumps(descriptions))
    test = ["born in", "member of"]
    split = {"train": {r: i for i, r in enumerate(r for r in relations if r not in test)}, "test": {r: i for i, r in enumerate(test)}}
    (root / "splits" / "fewrel_rel2id" / "fewrel_rel2id_2_ori.json").write_text(json.dumps(split))
    return root, relations


def _spec(**overrides) -> RunSpec:
    values = dict(dataset="fewrel", m=2, seed="ori", max_per_relation=3, batch_size=4, max_length=32, lr=1e-3)
    values.update(overrides)
    return RunSpec(**values)


@pytest.mark.slow
def test_a_run_trains_on_train_relations_tests_on_unseen_ones_and_is_recorded_once(data_dir, tmp_path, tiny_encoder_dir, monkeypatch):
    root, relations = data_dir
    monkeypatch.setenv("EMMA_DEFAULT_ENCODER", tiny_encoder_dir)
    results = tmp_path / "results.jsonl"
    spec = _spec()
    record = run(spec, data_dir=root, results=results, runs_dir=tmp_path / "runs")
    assert record["test_relations"] == 2 and record["n_test"] == 6  # 3 sentences of each unseen relation
    assert record["train"]["relations"] == 4 and record["train"]["steps"] >= 1
    for stage in ("recall_only", "emma", "emma_fused"):
        assert 0 <= record[stage]["f1"] <= 100
    assert not (tmp_path / "runs" / spec.name).exists()  # checkpoints are deleted unless kept
    lines = results.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == spec.key
    # The same spec again is skipped; a different budget is a different run.
    assert run(spec, data_dir=root, results=results, runs_dir=tmp_path / "runs") is None
    assert len(results.read_text().splitlines()) == 1


@pytest.mark.slow
def test_two_stage_runs_share_their_recall_stage(data_dir, tmp_path, tiny_encoder_dir, monkeypatch):
    root, _ = data_dir
    monkeypatch.setenv("EMMA_DEFAULT_ENCODER", tiny_encoder_dir)
    results, runs = tmp_path / "results.jsonl", tmp_path / "runs"
    k2 = run(_spec(), data_dir=root, results=results, runs_dir=runs)
    stage1 = runs / _spec().recall_stage_name
    assert (stage1 / "model.safetensors").is_file()  # kept for the runs that share it
    assert [s["folder"] for s in k2["train"]["stages"]] == [stage1.name, _spec().name]
    stamp = (stage1 / "training.json").read_text()
    k3 = run(_spec(k=3), data_dir=root, results=results, runs_dir=runs)
    assert (stage1 / "training.json").read_text() == stamp  # not trained again
    assert k3["recall_only"] == k2["recall_only"]  # the same recall model
    alone = run(_spec(variant="no_classifier"), data_dir=root, results=results, runs_dir=runs)
    assert alone["recall_only"] == k2["recall_only"] and alone["emma"] is None
    paper = run(_spec(variant="paper"), data_dir=root, results=results, runs_dir=runs, keep_checkpoint=True)
    assert len(paper["train"]["stages"]) == 1 and paper["emma"] is not None  # joint: one stage
    config = json.loads((runs / _spec(variant="paper").name / "config.json").read_text())
    assert (config["classifier_head"], config["classifier_features"], config["decision"]) == ("concat", "cls", "classifier")
    assert _spec().recall_stage_name != _spec(variant="no_virtual").recall_stage_name
    assert _spec().recall_stage_name != _spec(max_per_relation=4).recall_stage_name


@pytest.mark.slow
def test_ablation_variants_build_the_matching_model(data_dir, tmp_path, tiny_encoder_dir, monkeypatch):
    root, _ = data_dir
    monkeypatch.setenv("EMMA_DEFAULT_ENCODER", tiny_encoder_dir)
    results = tmp_path / "results.jsonl"
    record = run(_spec(variant="no_both"), data_dir=root, results=results, runs_dir=tmp_path / "runs")
    assert record["emma"] is None and record["recall_only"]["f1"] >= 0
    config = json.loads((tmp_path / "runs" / _spec(variant="no_both").recall_stage_name / "config.json").read_text())
    assert config["use_classifier"] is False and config["description_pooling"] == "cls"
    full = run(_spec(variant="no_virtual"), data_dir=root, results=results, runs_dir=tmp_path / "runs", keep_checkpoint=True)
    config = json.loads((tmp_path / "runs" / _spec(variant="no_virtual").name / "config.json").read_text())
    assert full["emma"] is not None and config["description_pooling"] == "cls" and config["classifier_head"] == "shared"
    floor = run(_spec(variant="untrained"), data_dir=root, results=results, runs_dir=tmp_path / "runs")
    assert floor["train"] is None and floor["emma"] is None


def test_render_table_groups_splits_and_states_budgets(tmp_path):
    results = tmp_path / "results.jsonl"

    def record(seed, f1, variant="full", emma=True):
        spec = _spec(m=15, seed=seed, variant=variant)
        metrics = {"precision": f1, "recall": f1, "f1": f1}
        return {"key": spec.key, "spec": spec.record(), "recall_only": metrics,
                "emma": {**metrics, "f1": f1 + 1} if emma else None, "emma_fused": {**metrics, "f1": f1 + 2} if emma else None,
                "train": {"steps": 10, "wall_time_s": 60.0, "device": "cpu"}}

    on_gpu = {**record("40", 72.0), "train": {"steps": 10, "wall_time_s": 6.0, "device": "cuda:0"}}
    other_seed = record("ori", 50.0)
    other_seed["spec"]["train_seed"] = 7
    rows = [record("ori", 70.0), on_gpu, record("ori", 60.0, "no_classifier", emma=False), other_seed]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = render_table(results)
    full = next(line for line in table.splitlines() if "| full [p" in line and "train seed" not in line)
    cells = [c.strip() for c in full.strip("|").split("|")]
    assert cells[3] == "2 (40,ori)" and cells[6] == "71.00 ± 1.41"  # recall-only F1 mean ± std over the 2 splits
    assert cells[9] == "72.00 ± 1.41" and cells[10] == "73.00 ± 1.41" and cells[11] == "80.1"
    # The budget names each device's wall time; the label names where the run departs from the defaults.
    assert "≤3/rel, 1 ep, 10 steps, 1.0 min (cpu ×1), 0.1 min (cuda ×1)" in full
    assert "[p4, two-stage, shared/cls_entities, classifier from recall, lr 0.001, batch 4, max length 32]" in full
    # Another training seed is another row, never averaged with the splits of the default seed.
    seeded = next(line for line in table.splitlines() if "train seed 7" in line)
    assert "| 1 (ori) |" in seeded and "50.00" in seeded
    ablation = next(line for line in table.splitlines() if "| no_classifier [p" in line)
    assert "60.00" in ablation and "| – | – | – |" in ablation
    rows = summarize(results)  # what metrics.json holds: the same numbers
    full_row = next(r for r in rows if r["variant"] == "full" and "train seed" not in r["label"])
    assert full_row["splits"] == ["40", "ori"] and full_row["recall_only"]["f1"] == {"mean": 71.0, "std": 1.41, "values": [70.0, 72.0]}
    assert full_row["emma_fused"]["f1"]["mean"] == 73.0 and full_row["paper_f1"] == 80.1
    assert next(r for r in rows if r["variant"] == "no_classifier")["emma"] is None


def test_default_plan_puts_the_main_table_first_and_has_no_duplicates():
    plan = default_plan()
    assert len({s.key for s in plan}) == len(plan)
    assert [(s.m, s.variant) for s in plan[:3]] == [(15, "full"), (10, "full"), (5, "full")]
    assert {s.variant for s in plan} == set(VARIANTS)
    assert {s.k for s in plan} == {2, 3, 4}
    with pytest.raises(ValueError, match="variant='bigger'"):
        RunSpec(variant="bigger")


def test_table_command_writes_markdown_and_metrics(tmp_path):
    from click.testing import CliRunner

    from research.cli import cli

    spec = _spec(m=15)
    metrics = {"precision": 70.0, "recall": 70.0, "f1": 70.0}
    record = {"key": spec.key, "spec": spec.record(), "recall_only": metrics, "emma": metrics, "emma_fused": metrics,
              "train": {"steps": 10, "wall_time_s": 60.0, "device": "cpu"}}
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(record) + "\n")
    result = CliRunner().invoke(cli, ["table", "--results", str(results), "--output", str(tmp_path / "R.md"),
                                      "--metrics", str(tmp_path / "metrics.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "R.md").read_text().strip() == render_table(results).strip()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["rows"] == json.loads(json.dumps(summarize(results))) and "python -m research table" in written["note"]


def test_a_record_names_the_recipe_its_variant_fixes():
    full, paper, alone = RunSpec().record(), RunSpec(variant="paper").record(), RunSpec(variant="no_classifier").record()
    assert (full["schedule"], full["classifier_head"], full["classifier_features"], full["classifier_init"]) == (
        "two_stage", "shared", "cls_entities", "recall")
    assert (paper["schedule"], paper["classifier_head"], paper["classifier_features"]) == ("joint", "concat", "cls")
    # Settings of a classifier a run does not have are blank: they cannot split its identity.
    assert alone["classifier_head"] is alone["classifier_features"] is alone["classifier_init"] is None
    assert RunSpec(variant="paper").key != RunSpec().key


def test_runs_in_the_shipped_results_file_stay_done():
    """Every protocol-4 record of the shipped recipe has the key its RunSpec gives now: the plan skips it."""
    fields = set(RunSpec.__dataclass_fields__)
    records = [r for r in read_records(RESULTS_DIR / "experiments.jsonl") if r["spec"].get("protocol") == 4]
    if not records:
        pytest.skip("no protocol-4 records in results/experiments.jsonl")
    for r in records:
        assert RunSpec(**{k: v for k, v in r["spec"].items() if k in fields}).key == r["key"]


def test_plan_tasks_keep_runs_that_share_a_first_stage_together():
    plan = [_spec(), _spec(m=5), _spec(variant="no_classifier"), _spec(k=3), _spec(variant="no_virtual"), _spec(variant="no_both"),
            _spec(variant="untrained"), _spec(variant="paper"), _spec(variant="paper", k=3)]
    tasks = plan_tasks(plan)
    names = [[s.name for s in task] for task in tasks]
    assert names[0] == [_spec().name, _spec(variant="no_classifier").name, _spec(k=3).name]
    assert names[2] == [_spec(variant="no_virtual").name, _spec(variant="no_both").name]
    assert sorted(s.key for task in tasks for s in task) == sorted(s.key for s in plan)
    assert [len(t) for t in tasks[3:]] == [1, 1, 1]  # untrained and joint runs share nothing


@pytest.mark.slow
def test_parallel_workers_run_every_run_once_into_one_results_file(data_dir, tmp_path, tiny_encoder_dir, monkeypatch):
    root, _ = data_dir
    monkeypatch.setenv("EMMA_DEFAULT_ENCODER", tiny_encoder_dir)  # spawned workers inherit it
    results = tmp_path / "results.jsonl"
    plan = [_spec(), _spec(variant="no_classifier"), _spec(variant="no_both"), _spec(variant="untrained")]
    assert run_plan(plan, workers=2, data_dir=root, results=results, runs_dir=tmp_path / "runs") == 4
    records = [json.loads(line) for line in results.read_text().splitlines()]  # every line whole
    assert sorted(r["key"] for r in records) == sorted(s.key for s in plan)
    assert run_plan(plan, workers=2, data_dir=root, results=results, runs_dir=tmp_path / "runs") == 0  # all done


def test_a_plan_past_its_deadline_starts_nothing(data_dir, tmp_path):
    root, _ = data_dir
    results = tmp_path / "results.jsonl"
    assert run_plan([_spec()], deadline_s=0, data_dir=root, results=results, runs_dir=tmp_path / "runs") == 0
    assert not results.exists()


@pytest.mark.slow
def test_wikizsl_sample_tests_on_its_relations_and_trains_on_fewrel_without_them(data_dir, tmp_path, tiny_encoder_dir, monkeypatch,
                                                                                    toy_instances):
    root, relations = data_dir
    monkeypatch.setenv("EMMA_DEFAULT_ENCODER", tiny_encoder_dir)
    # The sample: two relations, one of them also a FewRel relation; plus one broken record, as the real file has.
    (root / "wikizsl" / "partial").mkdir(parents=True)
    (root / "wikizsl" / "relation_description").mkdir()
    triplets = [{"tokens": list(i.tokens), "head": list(range(*i.head)), "tail": list(range(*i.tail)),
                 "label_id": "born in" if i.relation == "born in" else "W1"} for i in toy_instances if i.relation in ("born in", "member of")]
    triplets.append({"tokens": ["a", "b"], "head": [0], "tail": [0], "label_id": "W1"})
    with gzip.open(root / "wikizsl" / "partial" / "relationprompt_wiki_dev_5rel.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"triplets": [t]}) + "\n" for t in triplets))
    wiki_descriptions = {"born in": "wiki: place of birth", "W1": "wiki: a relation FewRel does not have"}
    (root / "wikizsl" / "relation_description" / "relation_description_processed.json").write_text(json.dumps(wiki_descriptions))

    spec = RunSpec("wikizsl", 5, "sample", max_per_relation=3, batch_size=4, max_length=32, lr=1e-3)
    data = load_run_data(spec, root)
    assert data.test_descriptions == wiki_descriptions  # the sample's relations, with Wiki-ZSL's descriptions
    assert len(data.test) == len(triplets) - 1  # the broken record is skipped, not fatal
    assert {i.relation for i in data.train} == set(relations) - {"born in"}  # FewRel, without the sample's relations
    record = run(spec, data_dir=root, results=tmp_path / "results.jsonl", runs_dir=tmp_path / "runs")
    assert record["test_relations"] == 2 and record["train"]["relations"] == len(relations) - 1
    with pytest.raises(ValueError, match="Wiki-ZSL sample"):
        RunSpec("fewrel", 5, "sample")
