"""The paper's evaluation protocol (section 4.1, Tables 1-2, the ablations, Figure 5's k sweep) at a stated budget.

One *run* = (dataset, m unseen relations, split seed, variant, k, budget): train a fresh model on
the split's train relations only, evaluate on its test relations, and append one JSON line to a
results file. Runs already in the results file are skipped, and a run's training resumes from its
run folder, so the table can grow run by run across sessions; `research.table` renders it.

Variants:
    full: the shipped recipe: recall first, then a shared-head classifier over h[CLS] ⊕ h[E_h] ⊕ h[E_t]
        trained on the frozen recall's hard negatives, its encoder a copy of the trained recall
        encoder; fused decision (`EmmaConfig()`).
    paper: the paper's recipe: recall and a concat-head classifier over h[CLS] trained jointly, the
        classifier decides (`EmmaConfig.paper()`).
    no_virtual: full, with the description vector from [CLS] only (no virtual entities).
    no_classifier, no_both: recall only (full's first stage), with or without virtual entities.
    untrained: the base encoder's mean-pooled sentence and description embeddings, no training: the floor.

Example:
    >>> record = run(RunSpec("fewrel", 15, "ori"), data_dir=DATA_DIR, results=RESULTS_DIR / "experiments.jsonl",
    ...              runs_dir=RUNS_DIR)
    >>> record["emma_fused"]["f1"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from emma import (EmmaConfig, Extractor, Instance, TrainConfig, cap_per_relation, default_encoder, evaluate, macro_prf,
                  read_descriptions, read_instances, read_split)

logger = logging.getLogger(__name__)

DATASETS = ("fewrel", "wikizsl")
SPLIT_SEEDS = ("ori", "40", "41")  # the three standard FewRel splits per m
VARIANTS = ("full", "paper", "no_virtual", "no_classifier", "no_both", "untrained")
CLASSIFIER_VARIANTS = ("full", "paper", "no_virtual")  # the variants that train and use a classifier
WIKIZSL_SAMPLE = "sample"  # RunSpec.seed for the Wiki-ZSL sentences that exist here (see _wikizsl_sample)
# Every new run follows protocol 4; records keep the protocol they ran under (research.table explains 1-3).
PROTOCOL = 4


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {choices}")


@dataclass(frozen=True)
class RunSpec:
    """One run of the table: what a user picks. The recipe a variant fixes is in `record()`.

    Args:
        dataset, m, seed: the split file `{dataset}_rel2id_{m}_{seed}.json` (or the Wiki-ZSL sample).
        variant: one of VARIANTS (module docstring).
        k: candidates the classifier reranks.
        max_per_relation: training instances per relation (None: all).
        epochs, batch_size, lr, max_length, train_seed: the training budget (TrainConfig, EmmaConfig).
        eval_per_relation: test on at most this many sentences per unseen relation (None: all).
    """

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

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("variant", self.variant, VARIANTS)
        if self.seed == WIKIZSL_SAMPLE and (self.dataset, self.m) != ("wikizsl", 5):
            raise ValueError(f"seed={WIKIZSL_SAMPLE!r} is the Wiki-ZSL sample of 5 relations: use dataset='wikizsl', m=5")

    @property
    def classifier(self) -> bool:
        return self.variant in CLASSIFIER_VARIANTS

    @property
    def two_stage(self) -> bool:
        """Recall first, then the classifier on frozen recall; the paper's variant trains both at once."""
        return self.variant != "paper"

    def architecture(self) -> EmmaConfig:
        """The model this run trains (its last stage)."""
        make = EmmaConfig.paper if self.variant == "paper" else EmmaConfig
        pooling = "cls" if self.variant in ("no_virtual", "no_both") else "attention"
        return make(k=self.k, max_length=self.max_length, use_classifier=self.classifier, description_pooling=pooling)

    def record(self) -> dict:
        """What ran, as the results file keeps it: the spec plus the recipe its variant fixes.

        Classifier settings are None where the variant has no classifier, so they neither split a
        run's identity nor make a finished run look undone.
        """
        arch, clf = self.architecture(), self.classifier
        return {**asdict(self), "protocol": PROTOCOL, "head_lr": TrainConfig().head_lr,
                "schedule": "two_stage" if self.two_stage else "joint",
                "classifier_head": arch.classifier_head if clf else None,
                "classifier_features": arch.classifier_features if clf else None,
                "classifier_init": "recall" if clf and self.two_stage else None}

    @property
    def key(self) -> str:
        """The run's identity in a results file (a record's "key")."""
        return json.dumps(self.record(), sort_keys=True)

    @property
    def name(self) -> str:
        return f"{self.dataset}_m{self.m}_{self.seed}_{self.variant}_k{self.k}_n{self.max_per_relation}_e{self.epochs}_p{PROTOCOL}"

    @property
    def recall_stage_name(self) -> str:
        """Folder of the first stage of a two-stage run: everything that shapes recall, nothing of the classifier."""
        record = self.record()
        recall = {f: record[f] for f in ("dataset", "m", "seed", "max_per_relation", "epochs", "batch_size", "lr",
                                         "max_length", "train_seed", "protocol", "head_lr")}
        digest = hashlib.sha1(json.dumps(recall, sort_keys=True).encode()).hexdigest()[:8]
        pooling = self.architecture().description_pooling
        return f"{self.dataset}_m{self.m}_{self.seed}_recall-{pooling}_n{self.max_per_relation}_e{self.epochs}_{digest}"


def dataset_files(dataset: str, data_dir: Path) -> tuple[list[Path], Path]:
    """(instance files, descriptions file) of a dataset under the data folder."""
    if dataset == "fewrel":
        files = [data_dir / "fewrel" / "val_wiki.json", data_dir / "fewrel" / "partial" / "train_wiki_partial_union.json.gz"]
        return files, data_dir / "fewrel" / "relation_description" / "relation_description_processed.json"
    files = [data_dir / "wikizsl" / "partial" / "relationprompt_wiki_dev_5rel.jsonl.gz"]
    return files, data_dir / "wikizsl" / "relation_description" / "relation_description_processed.json"


def fewrel_pool(data_dir: Path) -> list[Instance]:
    """Every FewRel instance here, from the files of `dataset_files` (val_wiki, then the reconstructed train file)."""
    files, _ = dataset_files("fewrel", data_dir)
    return [i for f in files for i in read_instances(f)]


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
    instances = [i for f in files for i in read_instances(f, skip_invalid=spec.dataset == "wikizsl")]  # 3 broken records there
    descriptions = read_descriptions(desc_file)
    present = {i.relation for i in instances}
    test_rels = [r for r in split.test if r in present]
    train_rels = {r for r in split.train if r in present}
    if len(test_rels) < len(split.test):
        logger.warning("%s: only %d of %d test relations have sentences", split.name, len(test_rels), len(split.test))
    return RunData([i for i in instances if i.relation in train_rels], descriptions,
                   [i for i in instances if i.relation in set(test_rels)], {r: descriptions[r] for r in test_rels},
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


def read_records(results: Path) -> list[dict]:
    """The records of a results file (JSON lines); none when it does not exist yet."""
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.is_file() else []


def run(spec: RunSpec, *, data_dir: Path, results: Path, runs_dir: Path, keep_checkpoint: bool = False) -> dict | None:
    """Train and evaluate one run, append its record to `results`; None if it was already there.

    Run folders go under `runs_dir`; a two-stage run's first stage stays there for the runs that
    share it, the rest is deleted unless `keep_checkpoint`.
    """
    if spec.key in {r["key"] for r in read_records(results)}:
        logger.info("%s: already in %s", spec.name, results)
        return None
    data = load_run_data(spec, data_dir)
    test = cap_per_relation(data.test, spec.eval_per_relation, seed=0)
    record = {"key": spec.key, "spec": spec.record(), "split": data.split_name, "test_relations": len(data.test_descriptions),
              "test_relations_in_split": data.test_relations_in_split, "n_test": len(test)}
    t0 = time.perf_counter()
    if spec.variant == "untrained":
        record.update(recall_only=untrained_recall(test, data.test_descriptions), emma=None, train=None)
    else:
        run_dir, stages = _train_stages(spec, data, runs_dir)
        record["train"] = _training_summary(stages)
        record.update(_scores(run_dir, data.test_descriptions, test))
        if not keep_checkpoint and run_dir.name == spec.name:  # a shared first stage stays
            shutil.rmtree(run_dir, ignore_errors=True)
    record.update({"wall_time_s": round(time.perf_counter() - t0, 1), "host": platform.node(),
                   "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    append_record(results, record)
    return record


def _train_stages(spec: RunSpec, data: RunData, runs_dir: Path) -> tuple[Path, list[Path]]:
    """Train the run's model (resuming where a folder exists); returns (its folder, every stage's folder)."""
    from emma.train import train  # not exported by emma: the name would hide the emma.train module

    budget = dict(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.train_seed,
                  max_per_relation=spec.max_per_relation)
    model = spec.architecture()
    run_dir = runs_dir / spec.name
    fit = lambda config, folder: train(config, data.train, data.train_descriptions, folder, resume=True)  # noqa: E731
    if not spec.two_stage:
        fit(TrainConfig.paper(model=model, **budget), run_dir)
        return run_dir, [run_dir]
    # The two stages as two runs of train(), not its own two-stage schedule: stage 1 (recall only) stays
    # under runs_dir for the other runs that share it.
    recall_dir = runs_dir / spec.recall_stage_name
    recall = EmmaConfig(max_length=spec.max_length, description_pooling=model.description_pooling, use_classifier=False)
    fit(TrainConfig(model=recall, **budget), recall_dir)
    if not spec.classifier:
        return recall_dir, [recall_dir]
    fit(TrainConfig(model=model, init_checkpoint=str(recall_dir), train_recall=False, classifier_init="recall", **budget), run_dir)
    return run_dir, [recall_dir, run_dir]


def _training_summary(stages: list[Path]) -> dict:
    """Steps, data and wall time of a run's stages, from their `training.json`."""
    metas = [json.loads((d / "training.json").read_text()) for d in stages]
    return {"steps": sum(m["step"] for m in metas), "instances": metas[0]["instances"],
            "relations": metas[0]["relations"], "wall_time_s": round(sum(m["wall_time_s"] for m in metas), 1),
            "device": metas[-1]["device"], "mixed_precision": metas[-1]["mixed_precision"],
            "stages": [{"folder": d.name, "steps": m["step"], "wall_time_s": m["wall_time_s"]} for d, m in zip(stages, metas)]}


def _scores(run_dir: Path, descriptions: dict[str, str], test: list[Instance]) -> dict:
    """recall_only, emma, emma_fused and top_k of the trained model (the last three None without a classifier)."""
    ex = Extractor.load(run_dir)
    ex.set_relations(descriptions)
    report = evaluate(ex, test)
    has_classifier = ex.model.classifier is not None
    return {"recall_only": report["recall_only"],
            **{stage: report[stage] if has_classifier else None for stage in ("emma", "emma_fused", "top_k")}}


def append_record(results: Path, record: dict) -> None:
    """One write() on an O_APPEND file: runs in parallel processes can share one results file."""
    results.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


@torch.inference_mode()
def untrained_recall(instances: list[Instance], descriptions: dict[str, str], with_entities: bool = False) -> dict:
    """Recall with the base encoder's mean-pooled embeddings (sentence vs description): the floor.

    `with_entities`: the sentence is followed by the head and tail names, so the floor knows which
    pair is asked about (the transfer table's floor).
    """
    from transformers import AutoModel, AutoTokenizer

    path = default_encoder()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 64):
            batch = tok(texts[i : i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state  # (B, L, d)
            mask = batch["attention_mask"][..., None].float()  # (B, L, 1)
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))  # (B, d)
        return torch.cat(out)

    names = list(descriptions)
    d = embed([descriptions[n] for n in names])  # (N, d)
    x = embed([" ".join(i.tokens) + (f" {i.head_text} {i.tail_text}" if with_entities else "") for i in instances])  # (B, d)
    pred = [names[j] for j in (x @ d.T).argmax(1).tolist()]
    return macro_prf([i.relation for i in instances], pred)


def default_plan(budget: dict | None = None) -> list[RunSpec]:
    """The runs of the full table, most important first (so a partial run still gives a useful table).

    `budget`: RunSpec fields applied to every run (max_per_relation, epochs, batch_size, lr, ...).
    """
    b = budget or {}
    plan = [RunSpec("fewrel", m, seed, "full", **b) for seed in SPLIT_SEEDS for m in (15, 10, 5)]
    plan += [RunSpec("fewrel", 15, "ori", v, **b) for v in ("paper", "no_virtual", "no_classifier", "no_both")]
    plan += [RunSpec("fewrel", 15, "ori", "full", k=k, **b) for k in (3, 4)]
    plan += [RunSpec("fewrel", m, s, "untrained", **b) for m in (15, 10, 5) for s in SPLIT_SEEDS]
    # Wiki-ZSL: only 5 of its 113 relations have sentences here, so no standard split can run; the
    # sample is measured as zero-shot transfer from FewRel (see load_run_data).
    plan += [RunSpec("wikizsl", 5, WIKIZSL_SAMPLE, v, **b) for v in ("full", "untrained")]
    return plan
