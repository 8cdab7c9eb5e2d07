"""Command line: ``python -m emma train | evaluate | predict``.

Flags fill the `TrainConfig` dataclass, optionally over a JSON config file (``--config``).
User errors (missing files, bad data, bad flags) print one line, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

import click

from .checkpoint import CheckpointError
from .choices import (CLASSIFIER_FEATURES, CLASSIFIER_HEADS, CLASSIFIER_INITS, DATASETS, DECISIONS, DESCRIPTION_POOLINGS, PRECISIONS,
                      SCHEDULES, VARIANTS)
from .data import DataError, Split, read_descriptions, read_instances, read_split, select


def _fail_cleanly(fn):
    """Turn the library's user-facing errors into ClickException (one line, exit code 1)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DataError, CheckpointError, ValueError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def _load_instances(paths, skip_invalid: bool = False) -> list:
    instances = []
    for p in paths:
        instances.extend(read_instances(p, skip_invalid=skip_invalid))
    return instances


def _split_or_none(path) -> Split | None:
    return read_split(path) if path else None


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """EMMA: zero-shot relation extraction by multi-grained matching.

    Example:

        python -m emma predict --descriptions rels.json --text "Apple was founded by Steve Jobs." --head Apple --tail "Steve Jobs"
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        import transformers

        transformers.logging.set_verbosity_error()  # weight-loading reports are noise here


@cli.command()
@click.option("--data", "data", multiple=True, required=True, type=click.Path(), help="Training file(s); repeat the flag for several.")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file.")
@click.option("--split", type=click.Path(), help="rel2id split file: train on its 'train' relations, validate on 'eval'.")
@click.option("--output", required=True, type=click.Path(), help="Checkpoint folder to write.")
@click.option("--config", "config_file", type=click.Path(exists=True), help="JSON file of TrainConfig fields; flags override it.")
@click.option("--encoder", help="Base encoder path or name (default: the packaged all-MiniLM-L6-v2).")
@click.option("--epochs", type=int)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--max-per-relation", type=int, help="Cap training instances per relation.")
@click.option("--k", type=int, help="Candidates reranked by the classifier (paper: 2).")
@click.option("--batch-size", type=int, help="Instances (of distinct relations) per batch.")
@click.option("--lr", type=float)
@click.option("--warmup-steps", type=int)
@click.option("--seed", type=int)
@click.option("--max-length", type=int, help="Instance window in word pieces.")
@click.option("--eval-every", type=int, help="Score the split's eval relations every N steps.")
@click.option("--save-every", type=int, help="Also save a resumable checkpoint every N steps.")
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--description-pooling", type=click.Choice(DESCRIPTION_POOLINGS), help="'cls' is the no-virtual-entity ablation.")
@click.option("--no-classifier", is_flag=True, default=None, help="Recall only (ablation).")
@click.option("--classifier-head", type=click.Choice(CLASSIFIER_HEADS),
              help="'concat': one MLP over the k pair states (paper); 'shared': each pair scored alone.")
@click.option("--classifier-features", type=click.Choice(CLASSIFIER_FEATURES),
              help="Pair state: h[CLS] (paper) or h[CLS] ⊕ h[E_h] ⊕ h[E_t].")
@click.option("--decision", type=click.Choice(DECISIONS),
              help="Final pick among the k: the classifier's (paper) or classifier × recall ('fused'). Saved with the checkpoint.")
@click.option("--freeze-word-embeddings", is_flag=True, default=None, help="Keep the base vocabulary's embeddings fixed (markers still learn).")
@click.option("--init-checkpoint", type=click.Path(exists=True), help="Start from this trained checkpoint instead of the base encoder.")
@click.option("--no-train-recall", is_flag=True, default=None, help="Freeze the recall encoder; train only the classifier.")
@click.option("--classifier-init", type=click.Choice(CLASSIFIER_INITS),
              help="A classifier added to a recall-only --init-checkpoint starts from its recall encoder (default) or the base one.")
@click.option("--resume", is_flag=True, help="Continue from the output folder's training state.")
def train(data, descriptions, split, output, config_file, resume, no_classifier, no_train_recall, **flags) -> None:
    """Train EMMA and write a checkpoint folder.

    Example:

        python -m emma train --data ../shared/data/fewrel/val_wiki.json \\
            --descriptions ../shared/data/fewrel/pid2name.json --output runs/demo --max-steps 50
    """
    if no_train_recall:
        flags["train_recall"] = False
    _train(data, descriptions, split, output, config_file, resume, no_classifier, flags)


@_fail_cleanly
def _train(data, descriptions, split, output, config_file, resume, no_classifier, flags) -> None:
    from .model import EmmaConfig
    from .train import TrainConfig, train as run_training

    values = json.loads(Path(config_file).read_text()) if config_file else {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise click.ClickException(f"{config_file}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
    model = dict(values.get("model") or {})
    architecture = {f.name for f in fields(EmmaConfig)} - {"encoder"}  # --encoder is the path to start from
    for key, value in flags.items():
        if value is not None:
            (model if key in architecture else values)[key] = value
    if no_classifier:
        model["use_classifier"] = False
    try:
        config = TrainConfig(**{**values, "model": EmmaConfig.from_dict(model)})
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    instances = _load_instances(data)
    descs = read_descriptions(descriptions)
    sp = _split_or_none(split)
    dev = None
    if sp is not None:
        train_instances = select(instances, sp.train, f"{split} (train)")
        eval_instances = [i for i in instances if i.relation in set(sp.eval)]
        if eval_instances:
            dev = (eval_instances, {r: descs[r] for r in sp.eval if r in descs})
        instances = train_instances
    folder = run_training(config, instances, descs, output, resume=resume, dev=dev)
    click.echo(str(folder))


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(), help="Labelled file(s).")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file.")
@click.option("--split", type=click.Path(), help="rel2id split file: evaluate on its 'test' relations.")
@click.option("--k", type=int, help="Must match the checkpoint's k (its classifier reads exactly k candidates).")
@click.option("--max-per-relation", type=int, help="Evaluate on at most N instances per relation (seeded).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--output", type=click.Path(), help="Also write the JSON report here.")
@click.option("--markdown", is_flag=True, help="Print a markdown table to stderr too.")
@click.option("--skip-invalid", is_flag=True, help="Drop broken records (logged) instead of stopping at the first.")
def evaluate(checkpoint, data, descriptions, split, k, max_per_relation, precision, output, markdown, skip_invalid) -> None:
    """Score recall-only and full EMMA (macro P/R/F1) on a zero-shot test set.

    Prints one JSON object with keys recall_only and emma (precision, recall, f1 in percent),
    n_instances and n_relations. Without --split every described relation in the data is a candidate.

    Example:

        python -m emma evaluate --checkpoint checkpoints/emma-minilm --data ../shared/data/fewrel/val_wiki.json \\
            --descriptions ../shared/data/fewrel/pid2name.json --split ../shared/data/splits/fewrel_rel2id/fewrel_rel2id_15_ori.json
    """
    _evaluate(checkpoint, data, descriptions, split, k, max_per_relation, precision, output, markdown, skip_invalid)


@_fail_cleanly
def _evaluate(checkpoint, data, descriptions, split, k, max_per_relation, precision, output, markdown, skip_invalid) -> None:
    from .data import cap_per_relation
    from .evaluate import evaluate as run_evaluation
    from .evaluate import markdown_table
    from .pipeline import Extractor

    instances = _load_instances(data, skip_invalid)
    descs = read_descriptions(descriptions)
    sp = _split_or_none(split)
    if sp is not None:
        relations = list(sp.test)
        instances = select(instances, relations, f"{split} (test)")
    else:
        present = {i.relation for i in instances}
        relations = [r for r in descs if r in present]
        instances = [i for i in instances if i.relation in set(relations)]
    missing = [r for r in relations if r not in descs]
    if missing:
        raise DataError(f"{descriptions}: no description for {', '.join(missing[:10])}")
    if not instances:
        raise DataError("no instance of a described relation in the data")
    instances = cap_per_relation(instances, max_per_relation)
    ex = Extractor.load(checkpoint, precision=precision)
    if k is not None and k != ex.config.k:
        raise click.ClickException(f"--k {k}: this checkpoint's classifier was trained for k={ex.config.k}")
    ex.set_relations({r: descs[r] for r in relations})
    report = run_evaluation(ex, instances, progress=True)
    report["protocol"] = {
        "checkpoint": checkpoint or "default",
        "data": list(data),
        "descriptions": descriptions,
        "split": split,
        "max_per_relation": max_per_relation,
        "precision": ex.precision,
        "device": str(ex.device),
    }
    text = json.dumps(report, indent=2)
    click.echo(text)
    if output:
        Path(output).write_text(text + "\n")
    if markdown:
        click.echo(markdown_table(report), err=True)


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file (the candidate relations).")
@click.option("--text", required=True, help="The sentence.")
@click.option("--head", required=True, help="Head entity text (its first occurrence is used).")
@click.option("--tail", required=True, help="Tail entity text.")
@click.option("--top-k", type=int, default=5, show_default=True, help="Recall scores to print.")
def predict(checkpoint, descriptions, text, head, tail, top_k) -> None:
    """Predict the relation between two entities of a sentence; prints JSON.

    Example:

        python -m emma predict --descriptions ../shared/data/fewrel/pid2name.json \\
            --text "Apple was founded by Steve Jobs." --head Apple --tail "Steve Jobs"
    """
    _predict(checkpoint, descriptions, text, head, tail, top_k)


@_fail_cleanly
def _predict(checkpoint, descriptions, text, head, tail, top_k) -> None:
    from .features import find_entity
    from .pipeline import Extractor

    head_span = find_entity(text, head)
    tail_span = find_entity(text, tail, avoid=head_span)
    ex = Extractor.load(checkpoint)
    ex.set_relations(read_descriptions(descriptions))
    p = ex.predict(text, head_span, tail_span, top_k=top_k)
    click.echo(json.dumps({
        "label": p.label,
        "description": ex.relations[p.label],
        "score": p.score,
        "recall": p.recall,
        "candidates": p.candidates,
        "probabilities": p.probabilities,
        "reranked": p.reranked,
        "note": p.note,
    }, indent=2))


@cli.command()
@click.option("--results", type=click.Path(), default="results/experiments.jsonl", show_default=True, help="Results file (JSON lines) to append to.")
@click.option("--data-dir", type=click.Path(), help="Folder holding fewrel/, wikizsl/ and splits/ (default: ../shared/data).")
@click.option("--dataset", type=click.Choice(DATASETS), help="One run: dataset (else the whole plan).")
@click.option("--m", type=int, help="One run: number of unseen test relations (5, 10, 15).")
@click.option("--seed", "split_seed", help="One run: split seed (ori, 40, 41, ...).")
@click.option("--variant", type=click.Choice(VARIANTS), default="full", show_default=True)
@click.option("--k", type=int, default=2, show_default=True)
@click.option("--max-per-relation", type=int, default=300, show_default=True, help="Training budget: instances per relation (0: all).")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--eval-per-relation", type=int, help="Test on at most N instances per unseen relation (seeded; default all).")
@click.option("--deadline", type=float, help="Plan mode: start no run that would end after this many seconds.")
@click.option("--train-seed", type=int, default=42, show_default=True, help="Seed of the training run (not of the split).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Plan mode: runs at once, in separate processes (a GPU that one run leaves mostly idle: 8 on an H200).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="two_stage", show_default=True,
              help="two_stage: recall first, then the classifier on frozen recall (the first stage is shared by runs "
                   "that differ only in the classifier); joint: both at once, as the paper.")
@click.option("--classifier-head", type=click.Choice(CLASSIFIER_HEADS), default="shared", show_default=True,
              help="concat: the paper's MLP over the k pair states; shared: each pair scored alone.")
@click.option("--classifier-features", type=click.Choice(CLASSIFIER_FEATURES), default="cls_entities", show_default=True)
@click.option("--classifier-init", type=click.Choice(CLASSIFIER_INITS), default="recall", show_default=True,
              help="two_stage: the classifier starts from the trained recall encoder, or from the base encoder.")
@click.option("--keep-checkpoint", is_flag=True, help="Keep each run's model under runs/ (deleted by default).")
def experiment(results, data_dir, dataset, m, split_seed, variant, k, max_per_relation, epochs, batch_size, lr, eval_per_relation, deadline,
               train_seed, workers, schedule, classifier_head, classifier_features, classifier_init, keep_checkpoint) -> None:
    """Run the paper's protocol: train per split on its train relations, test on its unseen ones.

    With --dataset/--m/--seed, one run; without, the whole plan (main table, ablations, k sweep,
    untrained floor), most important first. Runs already in --results are skipped; interrupted
    training resumes. Render the table with `python -m emma table`.

    Example:

        python -m emma experiment --dataset fewrel --m 15 --seed ori --max-per-relation 100
    """
    _experiment(results, data_dir, dataset, m, split_seed, variant, k, max_per_relation, epochs, batch_size, lr, eval_per_relation, deadline,
                train_seed, workers, schedule, classifier_head, classifier_features, classifier_init, keep_checkpoint)


@_fail_cleanly
def _experiment(results, data_dir, dataset, m, split_seed, variant, k, max_per_relation, epochs, batch_size, lr, eval_per_relation, deadline,
                train_seed, workers, schedule, classifier_head, classifier_features, classifier_init, keep_checkpoint) -> None:
    from .experiments import DEFAULT_DATA_DIR, RunSpec, default_plan, run, run_plan

    data = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    if not (data / "splits").is_dir():
        raise click.ClickException(f"{data}: no splits/ folder; point --data-dir at the shared data")
    budget = dict(max_per_relation=max_per_relation or None, train_seed=train_seed, epochs=epochs, batch_size=batch_size, lr=lr, eval_per_relation=eval_per_relation,
                  schedule=schedule, classifier_head=classifier_head, classifier_features=classifier_features,
                  classifier_init=classifier_init)
    if dataset or m or split_seed:
        if not (dataset and m and split_seed):
            raise click.ClickException("one run needs --dataset, --m and --seed together")
        record = run(RunSpec(dataset, m, split_seed, variant, k=k, **budget), data_dir=data, results=Path(results),
                     keep_checkpoint=keep_checkpoint)
        click.echo(json.dumps(record, indent=2) if record else "already done")
    else:
        if workers < 1:
            raise click.ClickException(f"--workers {workers}: need at least 1")
        n = run_plan(default_plan(budget), deadline_s=deadline, workers=workers, data_dir=data, results=Path(results), keep_checkpoint=keep_checkpoint)
        click.echo(f"{n} run(s) done; results in {results}")


@cli.command()
@click.option("--results", type=click.Path(exists=True), default="results/experiments.jsonl", show_default=True)
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
@click.option("--metrics", type=click.Path(), help="Also write the rows as JSON (e.g. a checkpoint's metrics.json).")
@click.option("--title", default="Evaluation results", show_default=True, help="Heading of the markdown.")
def table(results, output, metrics, title) -> None:
    """Render the evaluation tables (markdown) from a results file.

    Example:

        python -m emma table --results results/experiments.jsonl --output results/RESULTS.md \\
            --metrics checkpoints/emma-minilm/metrics.json
        python -m emma table --results results/probes.jsonl --output results/PROBES.md --title "Budget and recipe probes"
    """
    from .experiments import render_table, summarize

    text = render_table(Path(results), title)
    click.echo(text)
    if output:
        Path(output).write_text(text + "\n")
    if metrics:
        note = ("Zero-shot scores of the recipe: each row from fresh models trained on a split's train relations "
                "only and tested on its m unseen ones (macro P/R/F1 in percent, mean/std over splits). "
                f"Generated by `python -m emma table` from {results}.")
        Path(metrics).write_text(json.dumps({"note": note, "rows": summarize(Path(results))}, indent=1, ensure_ascii=False) + "\n")


@cli.group()
def portable() -> None:
    """Move a checkpoint trained with --freeze-word-embeddings as small shards (base vocabulary rows left out)."""


@portable.command("export")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("output", type=click.Path())
def portable_export(checkpoint, output) -> None:
    """Write CHECKPOINT as shards of at most 15 MB into OUTPUT.

    Example:

        python -m emma portable export runs/shipped /tmp/out
    """
    from .checkpoint import save_portable

    for p in _fail_cleanly(save_portable)(checkpoint, output):
        click.echo(str(p))


@portable.command("import")
@click.argument("portable_dir", type=click.Path(exists=True))
@click.argument("output", type=click.Path())
def portable_import(portable_dir, output) -> None:
    """Rebuild a full checkpoint in OUTPUT from shards plus the packaged base encoder.

    Example:

        python -m emma portable import /tmp/out checkpoints/emma-minilm
    """
    from .checkpoint import restore_portable

    click.echo(str(_fail_cleanly(restore_portable)(portable_dir, output)))


from .bench import bench as _bench  # noqa: E402
cli.add_command(_bench)


def main() -> None:  # pragma: no cover - entry point
    cli(prog_name="python -m emma")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
