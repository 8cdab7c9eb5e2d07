"""The paper's evaluation protocol (Tables 1-2, ablations, Figure 5's k sweep) at a stated budget.

One *run* = (dataset, m unseen relations, split seed, variant, k, budget): train a fresh model on
the split's train relations only, evaluate on its test relations, and append one JSON line to a
results file. Runs already in the results file are skipped, and a run's training resumes from its
run folder, so the table can grow run by run across sessions. `render_table` rebuilds the
markdown from the results file.

Variants: "full" (EMMA), "no_virtual" (description vector from [CLS] only), "no_classifier"
(recall only), "no_both", and "untrained" (the base encoder's mean-pooled sentence and
description embeddings, no training: the floor).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .checkpoint import REPO_ROOT
from .choices import CLASSIFIER_VARIANTS, DATASETS, SCHEDULES, VARIANTS, check_choice
from .data import Instance, cap_per_relation, read_descriptions, read_instances, read_split, select

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
WIKIZSL_SAMPLE = "sample"  # RunSpec.seed for the Wiki-ZSL sentences that exist here (see _wikizsl_sample)
PAPER_F1 = {("fewrel", 5): 94.67, ("fewrel", 10): 87.22, ("fewrel", 15): 80.10,
            ("wikizsl", 5): 90.98, ("wikizsl", 10): 85.27, ("wikizsl", 15): 78.07}


@dataclass(frozen=True)
class RunSpec:
    """One cell-run of the table. The budget fields are part of the identity of a result."""

    dataset: str = "fewrel"
    m: int = 15
    seed: str = "ori"
    variant: str = "full"
    k: int = 2
    max_per_relation: int | None = 300
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    max_length: int = 128
    eval_per_relation: int | None = None
    train_seed: int = 42
    # Protocols (each fixed something that changes results; a record keeps the one it ran under):
    # 1 first runs; 2 the classifier's candidate slots shuffled in training (in recall order it learned
    # "pick slot 0": protocol-1 EMMA numbers are not valid, recall-only ones are), each stage clipped on
    # its own; 3 fresh heads at head_lr 1e-3, warm-up capped at 10 % of the run; 4 entity markers start
    # from the embeddings of "@"/"#" (before, all four started equal and stayed so), classifier head
    # options, and the two-stage schedule.
    protocol: int = 4
    head_lr: float | None = 1e-3
    # Our classifier recipe (the paper's is concat/cls): measured better at CPU budgets, see the README.
    classifier_head: str = "shared"  # EmmaConfig.classifier_head
    classifier_features: str = "cls_entities"  # EmmaConfig.classifier_features
    # "joint": recall and classifier trained together (the paper); "two_stage": recall first, then the
    # classifier on the frozen recall's hard negatives. Two-stage runs share their first stage with
    # every run that differs only in the classifier (k sweep, heads), and its recall-only numbers are
    # exactly the "without classifier" ablation of the same budget.
    schedule: str = "two_stage"
    classifier_init: str = "recall"  # two-stage only: TrainConfig.classifier_init

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("variant", self.variant, VARIANTS)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.seed == WIKIZSL_SAMPLE and (self.dataset, self.m) != ("wikizsl", 5):
            raise ValueError(f"seed={WIKIZSL_SAMPLE!r} is the Wiki-ZSL sample of 5 relations: use dataset='wikizsl', m=5")
        if not self.classifier:
            # Settings of a classifier this run does not have: blanked, so they neither split the
            # run's identity (results key, table row) nor make a finished run look undone.
            for field in ("classifier_head", "classifier_features", "classifier_init"):
                object.__setattr__(self, field, None)

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def name(self) -> str:
        return f"{self.dataset}_m{self.m}_{self.seed}_{self.variant}_k{self.k}_n{self.max_per_relation}_e{self.epochs}_p{self.protocol}"

    @property
    def virtual_entities(self) -> bool:
        return self.variant not in ("no_virtual", "no_both")

    @property
    def classifier(self) -> bool:
        return self.variant in CLASSIFIER_VARIANTS

    @property
    def recall_stage_name(self) -> str:
        """Folder of the first stage of a two-stage run: everything that shapes recall, nothing of the classifier."""
        recall = {f: getattr(self, f) for f in ("dataset", "m", "seed", "max_per_relation", "epochs", "batch_size", "lr",
                                                  "max_length", "train_seed", "protocol", "head_lr")}
        digest = hashlib.sha1(json.dumps(recall, sort_keys=True).encode()).hexdigest()[:8]
        pooling = "attention" if self.virtual_entities else "cls"
        return f"{self.dataset}_m{self.m}_{self.seed}_recall-{pooling}_n{self.max_per_relation}_e{self.epochs}_{digest}"


def dataset_files(dataset: str, data_dir: Path) -> tuple[list[Path], Path]:
    """(instance files, descriptions file) of a dataset under ../shared/data."""
    if dataset == "fewrel":
        files = [data_dir / "fewrel" / "val_wiki.json", data_dir / "fewrel" / "partial" / "train_wiki_partial_union.json.gz"]
        return files, data_dir / "fewrel" / "relation_description" / "relation_description_processed.json"
    files = [data_dir / "wikizsl" / "partial" / "relationprompt_wiki_dev_5rel.jsonl.gz"]
    return files, data_dir / "wikizsl" / "relation_description" / "relation_description_processed.json"


def split_file(dataset: str, m: int, seed: str, data_dir: Path) -> Path:
    return data_dir / "splits" / f"{dataset}_rel2id" / f"{dataset}_rel2id_{m}_{seed}.json"


@dataclass
class RunData:
    """What one run trains and tests on: train sentences with their descriptions, test sentences
    with the descriptions of the unseen relations (the candidates), and where the split came from."""

    train: list[Instance]
    train_descriptions: dict[str, str]
    test: list[Instance]
    test_descriptions: dict[str, str]
    split_name: str
    test_relations_in_split: int


def load_run_data(spec: RunSpec, data_dir: Path) -> RunData:
    """A standard split of FewRel or Wiki-ZSL, or the Wiki-ZSL sample (see `RunSpec.seed`)."""
    if spec.dataset == "wikizsl" and spec.seed == WIKIZSL_SAMPLE:
        return _wikizsl_sample(data_dir)
    files, desc_file = dataset_files(spec.dataset, data_dir)
    split = read_split(split_file(spec.dataset, spec.m, spec.seed, data_dir))
    instances: list[Instance] = []
    for f in files:
        instances.extend(read_instances(f, skip_invalid=spec.dataset == "wikizsl"))  # 3 broken records there
    descriptions = read_descriptions(desc_file)
    present = {i.relation for i in instances}
    test_rels = [r for r in split.test if r in present]
    train_rels = [r for r in split.train if r in present]
    if len(test_rels) < len(split.test):
        logger.warning("%s: only %d of %d test relations have sentences", split.name, len(test_rels), len(split.test))
    return RunData(select(instances, train_rels), descriptions, select(instances, test_rels), {r: descriptions[r] for r in test_rels},
                   split.name, len(split.test))


def _wikizsl_sample(data_dir: Path) -> RunData:
    """Zero-shot transfer to the Wiki-ZSL sentences that exist here: test on all of them (their relations,
    with Wiki-ZSL's descriptions, are the candidates), train on FewRel's relations minus those (4 of the
    5 are FewRel relations too), with FewRel's descriptions. No standard Wiki-ZSL split can be run: only
    5 of its 113 relations have sentences here."""
    files, desc_file = dataset_files("wikizsl", data_dir)
    test = [i for f in files for i in read_instances(f, skip_invalid=True)]
    wiki_descriptions = read_descriptions(desc_file)
    test_rels = sorted({i.relation for i in test})
    fewrel_files, fewrel_desc_file = dataset_files("fewrel", data_dir)
    train = [i for f in fewrel_files for i in read_instances(f) if i.relation not in test_rels]
    return RunData(train, read_descriptions(fewrel_desc_file), test, {r: wiki_descriptions[r] for r in test_rels},
                   f"wikizsl sample ({len(test_rels)} relations with sentences; trained on FewRel without them)", len(test_rels))


def done_keys(results: Path) -> set[str]:
    if not results.is_file():
        return set()
    keys = set()
    for line in results.read_text().splitlines():
        if line.strip():
            keys.add(json.loads(line)["key"])
    return keys


def run(spec: RunSpec, data_dir: Path = DEFAULT_DATA_DIR, results: Path = REPO_ROOT / "results" / "experiments.jsonl",
        runs_dir: Path = REPO_ROOT / "runs", keep_checkpoint: bool = False) -> dict | None:
    """Train and evaluate one run, append its record to `results`; None if it was already there."""
    from .evaluate import evaluate
    from .model import EmmaConfig
    from .pipeline import Extractor
    from .train import TrainConfig, train

    if spec.key in done_keys(results):
        logger.info("%s: already in %s", spec.name, results)
        return None
    data = load_run_data(spec, data_dir)
    train_set, descriptions = data.train, data.train_descriptions
    test = cap_per_relation(data.test, spec.eval_per_relation, seed=0)
    record = {"key": spec.key, "spec": asdict(spec), "split": data.split_name, "test_relations": len(data.test_descriptions),
              "test_relations_in_split": data.test_relations_in_split, "n_test": len(test)}
    t0 = time.perf_counter()
    if spec.variant == "untrained":
        record["recall_only"] = untrained_recall(test, data.test_descriptions)
        record["emma"] = None
        record["train"] = None
    else:
        budget = dict(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, head_lr=spec.head_lr, seed=spec.train_seed,
                      max_per_relation=spec.max_per_relation)
        head = dict(classifier_head=spec.classifier_head, classifier_features=spec.classifier_features) if spec.classifier else {}
        model = EmmaConfig(k=spec.k, max_length=spec.max_length, use_classifier=spec.classifier,
                           description_pooling="attention" if spec.virtual_entities else "cls", **head)
        run_dir = runs_dir / spec.name
        stages = []
        if spec.schedule == "two_stage":
            # Stage 1, recall only, kept under runs/ for the other runs that share it.
            recall_dir = runs_dir / spec.recall_stage_name
            recall = EmmaConfig(max_length=spec.max_length, description_pooling=model.description_pooling, use_classifier=False)
            train(TrainConfig(model=recall, **budget), train_set, descriptions, recall_dir, resume=True)
            stages.append(recall_dir)
            if spec.classifier:
                train(TrainConfig(model=model, init_checkpoint=str(recall_dir), train_recall=False,
                                  classifier_init=spec.classifier_init, **budget),
                      train_set, descriptions, run_dir, resume=True)
                stages.append(run_dir)
            else:
                run_dir = recall_dir
        else:
            train(TrainConfig(model=model, **budget), train_set, descriptions, run_dir, resume=True)
            stages.append(run_dir)
        metas = [json.loads((d / "training.json").read_text()) for d in stages]
        record["train"] = {"steps": sum(m["step"] for m in metas), "instances": metas[0]["instances"],
                           "relations": metas[0]["relations"], "wall_time_s": round(sum(m["wall_time_s"] for m in metas), 1),
                           "device": metas[-1]["device"], "mixed_precision": metas[-1]["mixed_precision"],
                           "stages": [{"folder": d.name, "steps": m["step"], "wall_time_s": m["wall_time_s"]} for d, m in zip(stages, metas)]}
        ex = Extractor.load(run_dir)
        ex.set_relations(data.test_descriptions)
        report = evaluate(ex, test)
        record["recall_only"] = report["recall_only"]
        for stage in ("emma", "emma_fused", "top_k"):  # the classifier's numbers; None for recall-only runs
            record[stage] = report[stage] if ex.model.classifier is not None else None
        if not keep_checkpoint and run_dir.name == spec.name:  # a shared first stage stays
            shutil.rmtree(run_dir, ignore_errors=True)
    record.update({"wall_time_s": round(time.perf_counter() - t0, 1), "host": platform.node(),
                   "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    results.parent.mkdir(parents=True, exist_ok=True)
    # One write() on an O_APPEND file: runs in parallel processes can share one results file.
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
    return record


@torch.inference_mode()
def untrained_recall(instances: list[Instance], descriptions: dict[str, str], encoder: str | None = None) -> dict:
    """Recall with the base encoder's mean-pooled embeddings (sentence vs description): the floor."""
    from transformers import AutoModel, AutoTokenizer

    from .checkpoint import default_encoder, pick_device
    from .evaluate import macro_prf

    path = encoder or default_encoder()
    device = pick_device()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 64):
            batch = tok(texts[i : i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state  # (B, L, d)
            mask = batch["attention_mask"][..., None].float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    names = list(descriptions)
    d = embed([descriptions[n] for n in names])
    x = embed([" ".join(i.tokens) for i in instances])
    pred = [names[j] for j in (x @ d.T).argmax(1).tolist()]
    return macro_prf([i.relation for i in instances], pred)


# ------------------------------------------------------------------------------ the table


def _budget(spec: dict, records: list[dict]) -> str:
    trains = [r["train"] for r in records if r.get("train")]
    if not trains:
        return "no training"
    per_rel = "all" if spec["max_per_relation"] is None else f"≤{spec['max_per_relation']}"
    steps = statistics.mean(t["steps"] for t in trains)
    by_device: dict[str, list[float]] = {}
    for t in trains:
        by_device.setdefault(t["device"].split(":")[0], []).append(t["wall_time_s"])
    walls = ", ".join(f"{statistics.mean(w) / 60:.1f} min ({dev}{f' ×{len(w)}' if len(by_device) > 1 else ''})"
                      for dev, w in by_device.items())
    return f"{per_rel}/rel, {spec['epochs']} ep, {steps:.0f} steps, {walls}"


def _records(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.is_file() else []


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"mean": round(statistics.mean(values), 2), "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
            "values": [round(v, 2) for v in values]}


def summarize(results: Path) -> list[dict]:
    """One entry per table row: runs that differ only in the split seed, with mean/std of each metric.

    Each entry: dataset, m, variant, k, label (as in the table), splits, protocol, schedule, classifier
    settings, budget (text), paper_f1, and {"precision", "recall", "f1"} stats for recall_only, emma
    and emma_fused (None where the variant has no classifier). This is what metrics.json holds.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in _records(results):
        s = r["spec"]
        has_classifier = s["variant"] in CLASSIFIER_VARIANTS
        budget = Budget(s["max_per_relation"], s["epochs"], s["batch_size"], s["lr"], s.get("eval_per_relation"), s.get("protocol", 1),
                        s.get("schedule", "joint"), s.get("classifier_head", "concat") if has_classifier else None,
                        s.get("classifier_features", "cls") if has_classifier else None,
                        s.get("classifier_init", "base") if has_classifier else None,
                        s.get("train_seed", 42), s.get("max_length", 128), s.get("head_lr"))
        # The Wiki-ZSL sample is its own dataset row: another protocol (FewRel-trained), no paper number.
        dataset = f"{s['dataset']}-{WIKIZSL_SAMPLE}" if s["seed"] == WIKIZSL_SAMPLE else s["dataset"]
        groups.setdefault((dataset, s["m"], s["variant"], s["k"], budget), []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], VARIANTS.index(k[2]), k[3], k[4].protocol, _extras(k[4]))):
        recs = groups[key]
        ds, m, variant, k, b = key
        entry = {"dataset": ds, "m": m, "variant": variant, "k": k, "label": _label(key),
                 "splits": sorted(str(r["spec"]["seed"]) for r in recs), "protocol": b.protocol, "schedule": b.schedule,
                 "classifier": {"head": b.head, "features": b.features, "init": b.init} if b.head else None,
                 "test_per_relation": b.test_cap, "budget": _budget(recs[0]["spec"], recs), "paper_f1": PAPER_F1.get((ds, m))}
        for stage in ("recall_only", "emma", "emma_fused"):
            valid = [r[stage] for r in recs if r.get(stage)] if not (stage != "recall_only" and b.protocol == 1) else []
            entry[stage] = {metric: _stats([v[metric] for v in valid if metric in v]) for metric in ("precision", "recall", "f1")} if valid else None
        out.append(entry)
    return out


class Budget(NamedTuple):
    """Everything but the split seed that makes runs comparable: runs share a table row iff these match."""

    per_relation: int | None
    epochs: int
    batch_size: int
    lr: float
    test_cap: int | None
    protocol: int
    schedule: str
    head: str | None
    features: str | None
    init: str | None
    train_seed: int
    max_length: int
    head_lr: float | None


def _extras(b: Budget) -> str:
    """The settings where a row departs from the protocol's defaults (RunSpec), for its label."""
    d = RunSpec()
    extras = [f"lr {b.lr:g}" if b.lr != d.lr else "", f"batch {b.batch_size}" if b.batch_size != d.batch_size else "",
              f"train seed {b.train_seed}" if b.train_seed != d.train_seed else "",
              f"max length {b.max_length}" if b.max_length != d.max_length else "",
              ("heads at encoder lr" if b.head_lr is None else f"head lr {b.head_lr:g}") if b.protocol >= 3 and b.head_lr != d.head_lr else ""]
    return ", ".join(e for e in extras if e)


def _label(key: tuple) -> str:
    variant, k, b = key[2], key[3], key[4]
    text = variant if k == 2 else f"{variant}, k={k}"
    if variant != "untrained":
        tags = [f"p{b.protocol}"]
        if b.protocol >= 4:
            tags.append(b.schedule.replace("_", "-"))
            if b.head:
                tags.append(f"{b.head}/{b.features}" + (f", classifier from {b.init}" if b.schedule == "two_stage" else ""))
        extras = _extras(b)
        tags += [extras] if extras else []
        text += f" [{', '.join(tags)}]" + (" (classifier unshuffled: EMMA not valid)" if b.protocol == 1 else "")
    if b.test_cap:
        text += f", test ≤{b.test_cap}/rel"
    return text


def _cell(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{stats['mean']:.2f}" if stats["std"] is None else f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def render_table(results: Path, title: str = "Evaluation results") -> str:
    """The markdown table of `summarize(results)`: mean ± std over splits."""
    rows = []
    for e in summarize(results):
        rec, emma, fused = e["recall_only"], e["emma"] or {}, e["emma_fused"] or {}
        cells = [e["dataset"], str(e["m"]), e["label"], f"{len(e['splits'])} ({','.join(e['splits'])})",
                 _cell(rec["precision"]), _cell(rec["recall"]), _cell(rec["f1"]),
                 _cell(emma.get("precision")), _cell(emma.get("recall")), _cell(emma.get("f1")), _cell(fused.get("f1")),
                 str(e["paper_f1"] or ""), e["budget"]]
        rows.append("| " + " | ".join(cells) + " |")
    header = ("| dataset | m | variant [protocol] | splits | recall-only P | R | F1 | EMMA P | R | F1 | fused F1 | paper EMMA F1 | training budget (mean per run) |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"# {title}", "",
             f"Generated by `python -m emma table --results {results}` from the results file; every run trains a fresh model on the",
             "split's train relations and tests on its m unseen relations. Macro P/R/F1 in percent (README: formula).",
             "Protocol: p1 = before the classifier's candidate slots were shuffled (its EMMA numbers are not valid,",
             "recall-only ones are); p2 = shuffled slots, per-stage clipping; p3 = p2 + fresh heads at lr 1e-3, warm-up ≤ 10 %;",
             "p4 = p3 + entity markers initialised from '@'/'#' (before, all four started equal and stayed so), with the",
             "schedule (joint, or two-stage: recall, then the classifier on frozen recall) and the classifier head",
             "(concat = the paper's MLP over the k concatenated pair states, shared = each pair scored alone; cls or",
             "cls_entities pair features; a two-stage classifier starts from the trained recall encoder or the base one).",
             "EMMA = the classifier decides among recall's top k (the paper's rule); fused = classifier probability ×",
             "recall softmax over the k candidates. Wall times on cuda were measured with up to 8 runs sharing one GPU.",
             "A row's settings in brackets after the protocol are where it departs from the defaults (lr 5e-5, batch 32,",
             "train seed 42, max length 128, pooling heads at lr 1e-3).", "",
             header, *rows, ""]
    return "\n".join(lines)


def default_plan(budget: dict | None = None) -> list[RunSpec]:
    """The runs of the full table, most important first (so a partial run still gives a useful table)."""
    b = budget or {}
    plan = []
    for seed in ("ori", "40", "41"):
        for m in (15, 10, 5):
            plan.append(RunSpec("fewrel", m, seed, "full", **b))
    plan += [RunSpec("fewrel", 15, "ori", v, **b) for v in ("no_virtual", "no_classifier", "no_both")]
    plan += [RunSpec("fewrel", 15, "ori", "full", k=k, **b) for k in (3, 4)]
    plan += [RunSpec("fewrel", m, s, "untrained", **b) for m in (15, 10, 5) for s in ("ori", "40", "41")]
    # Wiki-ZSL: only 5 of its 113 relations have sentences here, so no standard split can run; the
    # sample is measured as zero-shot transfer from FewRel (see load_run_data).
    plan += [RunSpec("wikizsl", 5, WIKIZSL_SAMPLE, v, **b) for v in ("full", "untrained")]
    return plan


def plan_tasks(plan: list[RunSpec]) -> list[list[RunSpec]]:
    """The plan's runs grouped by the first stage they share (plan order kept): one process runs a
    group, so no two processes ever train, or wait for, the same stage."""
    tasks: dict[str, list[RunSpec]] = {}
    for spec in plan:
        shares = spec.schedule == "two_stage" and spec.variant != "untrained"
        tasks.setdefault(spec.recall_stage_name if shares else spec.key, []).append(spec)
    return list(tasks.values())


def run_plan(plan: list[RunSpec], deadline_s: float | None = None, workers: int = 1, **kwargs) -> int:
    """Run the plan, skipping done runs, starting none that would end past the deadline; returns runs done now.

    workers > 1 runs that many processes at once (each claims the next group of `plan_tasks`), for a GPU
    that one small-batch run leaves mostly idle: 8 processes ran the whole table in 4 minutes on an H200.
    With one worker the runs go in plan order, most important first.
    """
    deadline_at = time.time() + deadline_s if deadline_s is not None else None
    with tempfile.TemporaryDirectory(prefix="emma-claims-") as claims:
        if workers <= 1:
            return _plan_worker([[spec] for spec in plan], Path(claims), deadline_at, None, kwargs)
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        tasks = plan_tasks(plan)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            jobs = [pool.submit(_plan_worker, tasks, Path(claims), deadline_at, threads, kwargs, f"worker {i}")
                    for i in range(workers)]
            return sum(job.result() for job in jobs)


def _plan_worker(tasks: list[list[RunSpec]], claims: Path, deadline_at: float | None, threads: int | None, kwargs: dict,
                 name: str | None = None) -> int:
    """Claim tasks in order (mkdir is atomic), run their specs; returns runs done."""
    if name:  # a spawned process: its own logging and its share of the CPU threads
        logging.basicConfig(level=logging.INFO, format=f"[{name}] %(levelname)s %(name)s: %(message)s")
    if threads:
        torch.set_num_threads(threads)
    done = 0
    durations: list[float] = []

    def too_late(spec: RunSpec) -> bool:
        expected = 1.2 * statistics.mean(durations) if durations else 0.0
        if deadline_at is not None and time.time() + expected > deadline_at:
            logger.info("stopping before %s: deadline", spec.name)
            return True
        return False

    for index, task in enumerate(tasks):
        if too_late(task[0]):
            break
        try:
            (claims / str(index)).mkdir()
        except FileExistsError:  # another worker has it
            continue
        for spec in task:
            if spec is not task[0] and too_late(spec):
                return done
            t = time.perf_counter()
            try:
                if run(spec, **kwargs) is not None:
                    done += 1
                    if spec.variant != "untrained":
                        durations.append(time.perf_counter() - t)
            except Exception:  # one broken run must not lose the rest of the table
                logger.exception("run %s failed", spec.name)
    return done
