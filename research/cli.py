"""Command line: ``python -m research bench | experiment | table | example-levels | fewshot | fewshot-table | transfer | transfer-table | transfer-grid | transfer-grid-table | train-recipe | gzsl | gzsl-table | gzsl-split | finetune-compare | finetune-blend | finetune-table | finetune-sweep | finetune-sweep-table | workbench-finetune | ui-latency | loadtest | crashtest | extraction | extraction-latency | probe | probe-table | probe-sweep``.

The library's own commands (train, evaluate, predict, portable) are ``python -m emma``. Paths default
to this repository's results/, runs/ and ../shared/data, whatever the working directory; user errors
print one line (emma's `CliGroup`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from emma.choices import INFERENCE_PRECISIONS
from emma.cli import CliGroup

from . import DATA_DIR, RESULTS_DIR, RUNS_DIR
from .bench.measure import DEFAULT_RELATIONS, METHODS, BenchConfig
from .probes.commands import probe, probe_sweep, probe_table
from .protocol import DATASETS, SPLIT_SEEDS, VARIANTS, RunSpec


def _emit(text: str, output) -> None:
    """A rendered table: printed, and written to `output` too when given."""
    click.echo(text)
    if output:
        Path(output).write_text(text + "\n")


EXPERIMENTS = RESULTS_DIR / "experiments.jsonl"


@click.group(cls=CliGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """Research tooling beside the emma library: the paper's protocol, tables, the speed benchmark, probes.

    Example:

        python -m research experiment --dataset fewrel --m 15 --seed ori
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        import transformers

        transformers.logging.set_verbosity_error()  # weight-loading reports are noise here


def _int_list(minimum: int, example: str):
    """A click callback reading comma-separated integers of at least `minimum`."""

    def parse(ctx, param, text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"{text!r}: give comma-separated integers, e.g. {example}") from None
        if not values or any(v < minimum for v in values):
            raise click.BadParameter(f"{text!r}: give integers of {minimum} or more, e.g. {example}")
        return values

    return parse


_parse_sizes = _int_list(1, "5,15,80")
_parse_sizes_or_zero = _int_list(0, "0,1,5")


def _parse_precisions(ctx, param, text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not chosen or any(p not in INFERENCE_PRECISIONS for p in chosen):
        raise click.BadParameter(f"{text!r}: choose from {','.join(INFERENCE_PRECISIONS)}")
    return chosen


def _parse_methods(ctx, param, text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    if not methods or any(m not in METHODS for m in methods):
        raise click.BadParameter(f"{text!r}: choose from {','.join(METHODS)}")
    return methods


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(), help="Sentences (FewRel or any readable format); repeat for several files.")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file.")
@click.option("--pool", type=click.Path(), help="Descriptions file whose relation ids fill sizes beyond the labelled relations first (e.g. the FewRel 80).")
@click.option("--relations", default=",".join(map(str, DEFAULT_RELATIONS)), show_default=True, callback=_parse_sizes, help="Relation-set sizes, comma-separated.")
@click.option("--limit", type=int, default=BenchConfig.limit, show_default=True, help="Sentences per size.")
@click.option("--methods", default=",".join(METHODS), show_default=True, callback=_parse_methods, help="Methods, comma-separated.")
@click.option("--latency-sentences", type=int, default=BenchConfig.latency_sentences, show_default=True, help="Single-sentence calls timed per method and size.")
@click.option("--all-pairs-budget", type=int, default=BenchConfig.all_pairs_budget, show_default=True, help="Cross-encoder pairs per size for all-pairs; beyond it sentences are sampled (flagged).")
@click.option("--threads", type=int, help="torch intra-op threads while measuring (default: torch's).")
@click.option("--device", help="cpu or cuda (default: CUDA when present).")
@click.option("--precision", default="auto", show_default=True, callback=_parse_precisions,
              help="auto, fp32, bf16, fp16 or int8 (CPU); several, comma-separated (e.g. fp32,int8), are measured side by side.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rounds over the precisions, interleaved; the report gives medians and per-round ratios to the first.")
@click.option("--batch-size", type=int, default=BenchConfig.batch_size, show_default=True, help="Sentences per batch.")
@click.option("--seed", type=int, default=BenchConfig.seed, show_default=True)
@click.option("--output", type=click.Path(), help="Write the JSON report here.")
@click.option("--plot", multiple=True, type=click.Path(), help="Write the figure here: .html, or .png (kaleido); repeat for both.")
def bench(checkpoint, data, descriptions, pool, threads, device, precision, repeats, output, plot, **settings) -> None:
    """Measure EMMA, recall only and the all-pairs cross-encoder side by side.

    For each relation-set size: throughput (sentences/s, batched), single-sentence latency p50/p95
    (Extractor.predict, the workbench's call), index build time, peak memory and macro F1. Prints the
    CPU's capabilities and the precision path used, and a markdown table; --output writes JSON with
    "results" (one row per precision, method and size) and the machine, threads, device, k and
    precision; --plot draws runtime bars and F1 lines. With several precisions (and --repeats) the
    rows are medians and "comparison" holds each one's ratio to the first, measured round by round.

    Example:

        python -m research bench --checkpoint checkpoints/emma-minilm --data ../shared/data/fewrel/val_wiki.json \\
            --descriptions ../shared/data/fewrel/pid2name.json \\
            --pool ../shared/data/fewrel/relation_description/fewrel_relation_description.json \\
            --output results/bench_cpu.json --plot results/bench_cpu.html --plot results/bench_cpu.png
        python -m research bench --data ../shared/data/fewrel/val_wiki.json --descriptions ../shared/data/fewrel/pid2name.json \
            --relations 100 --methods emma,recall_only --precision fp32,int8 --repeats 3 --threads 2
    """
    from emma import Extractor, read_descriptions, read_instances

    from .bench.measure import compare_precisions, torch_threads
    from .bench.report import format_table, write_plot

    config = BenchConfig(**settings)
    instances = [i for path in data for i in read_instances(path)]
    descs = read_descriptions(descriptions)
    pool_ids = list(read_descriptions(pool)) if pool else []
    with torch_threads(threads):
        try:
            extractors = {p: Extractor.load(checkpoint, device=device, precision=p) for p in precision}
        except ValueError as e:  # e.g. int8 asked for on CUDA
            raise click.ClickException(str(e)) from None
        report = compare_precisions(extractors, instances, descs, config, pool=pool_ids, repeats=repeats, progress=True)
    report.update(checkpoint=checkpoint or "default", data=list(data), descriptions=descriptions, pool=pool)
    click.echo(format_table(report))
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=2) + "\n")
    for path in plot:
        click.echo(f"wrote {write_plot(report, path)}", err=True)


@cli.command()
@click.option("--results", type=click.Path(path_type=Path), default=EXPERIMENTS, show_default="results/experiments.jsonl",
              help="Results file (JSON lines) to append to.")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=RUNS_DIR, show_default="runs/",
              help="Where run folders go (two-stage runs keep their shared recall stage there).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data",
              help="Folder holding fewrel/, wikizsl/ and splits/.")
@click.option("--dataset", type=click.Choice(DATASETS), help="One run: dataset (else the whole plan).")
@click.option("--m", type=int, help="One run: number of unseen test relations (5, 10, 15).")
@click.option("--seed", "split_seed", help="One run: split seed (ori, 40, 41, ...).")
@click.option("--variant", type=click.Choice(VARIANTS), default=RunSpec.variant, show_default=True,
              help="full: the shipped recipe; paper: the paper's (joint, concat head over h[CLS]); the rest are ablations.")
@click.option("--k", type=int, default=RunSpec.k, show_default=True)
@click.option("--max-per-relation", type=int, default=RunSpec.max_per_relation, show_default=True, help="Training budget: instances per relation (0: all).")
@click.option("--epochs", type=int, default=RunSpec.epochs, show_default=True)
@click.option("--batch-size", type=int, default=RunSpec.batch_size, show_default=True)
@click.option("--lr", type=float, default=RunSpec.lr, show_default=True)
@click.option("--max-length", type=int, default=RunSpec.max_length, show_default=True, help="Instance window in word pieces.")
@click.option("--eval-per-relation", type=int, help="Test on at most N instances per unseen relation (seeded; default all).")
@click.option("--train-seed", type=int, default=RunSpec.train_seed, show_default=True, help="Seed of the training run (not of the split).")
@click.option("--deadline", type=float, help="Plan mode: start no run that would end after this many seconds.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Plan mode: runs at once, in separate processes (a GPU that one run leaves mostly idle: 8 on an H200).")
@click.option("--keep-checkpoint", is_flag=True, help="Keep each run's model under --runs-dir (deleted by default).")
def experiment(results, runs_dir, data_dir, dataset, m, split_seed, variant, k, deadline, workers, keep_checkpoint, **budget) -> None:
    """Run the paper's protocol: train per split on its train relations, test on its unseen ones.

    With --dataset/--m/--seed, one run; without, the whole plan (main table, the paper's recipe,
    ablations, k sweep, untrained floor, Wiki-ZSL sample), most important first. Runs already in
    --results are skipped; interrupted training resumes. Render the table with `python -m research table`.

    Example:

        python -m research experiment --dataset fewrel --m 15 --seed ori --max-per-relation 100
    """
    from .protocol import default_plan, run
    from .scheduler import run_plan

    if not (data_dir / "splits").is_dir():
        raise click.ClickException(f"{data_dir}: no splits/ folder; point --data-dir at the shared data")
    budget["max_per_relation"] = budget["max_per_relation"] or None
    where = dict(data_dir=data_dir, results=results, runs_dir=runs_dir, keep_checkpoint=keep_checkpoint)
    if dataset or m or split_seed:
        if not (dataset and m and split_seed):
            raise click.ClickException("one run needs --dataset, --m and --seed together")
        record = run(RunSpec(dataset, m, split_seed, variant, k=k, **budget), **where)
        click.echo(json.dumps(record, indent=2) if record else "already done")
    else:
        n = run_plan(default_plan(budget), deadline_s=deadline, workers=workers, **where)
        click.echo(f"{n} run(s) done; results in {results}")


@cli.command()
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=EXPERIMENTS, show_default="results/experiments.jsonl")
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
@click.option("--metrics", type=click.Path(), help="Also write the rows as JSON (e.g. a checkpoint's metrics.json).")
@click.option("--title", default="Evaluation results", show_default=True, help="Heading of the markdown.")
def table(results, output, metrics, title) -> None:
    """Render the evaluation tables (markdown) from a results file of `experiment`.

    Example:

        python -m research table --results results/experiments.jsonl --output results/RESULTS.md \\
            --metrics checkpoints/emma-minilm/metrics.json
        python -m research table --results results/probes.jsonl --output results/PROBES.md --title "Budget and recipe probes"
    """
    from .table import metrics_json, render_table

    text = render_table(results, title)
    _emit(text, output)
    if metrics:  # other entries of the file (e.g. "transfer", from transfer-table) are kept
        current = json.loads(Path(metrics).read_text()) if Path(metrics).is_file() else {}
        Path(metrics).write_text(json.dumps({**current, **metrics_json(results)}, indent=1, ensure_ascii=False) + "\n")


FEWSHOT = RESULTS_DIR / "fewshot.jsonl"


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=FEWSHOT, show_default="results/fewshot.jsonl")
@click.option("--shots", callback=_parse_sizes_or_zero, default="0,1,5,10", show_default=True, help="Examples per relation.")
@click.option("--seeds", callback=_parse_sizes_or_zero, default="0,1,2", show_default=True, help="Draws per K > 0.")
@click.option("--set", "sets", multiple=True, help="Only these sets (crossre-ai … crossre-news, fewrel-val).")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="auto", show_default=True,
              help="Recorded with each run and part of what makes a run done.")
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True,
              help="CrossRE file to score (FewRel always scores its own sample); test is the last check.")
def fewshot(checkpoint, data_dir, results, shots, seeds, sets, precision, split) -> None:
    """K labelled examples per relation, used at once (no training): macro F1 per set and K, one line per run.

    Runs already in the results file are skipped, so an interrupted table resumes.

    Example:

        python -m research fewshot --checkpoint checkpoints/emma-minilm --shots 0,5 --seeds 0
    """
    from .fewshot import run

    run(checkpoint, data_dir, results, list(shots), list(seeds), list(sets) or None, precision, split)


@cli.command("example-levels")
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--set-config", is_flag=True, help="Write the levels into the checkpoint's config.json (example_levels).")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="auto", show_default=True)
def example_levels(checkpoint, set_config, precision) -> None:
    """Where recall scores of other relations' sentences sit, for descriptions alone and mixed with n examples.

    Measured on FewRel's training relations; recall lowers a relation's mixed score toward a description's level with
    them (`emma.index.ExampleLevels`).

    Example:

        python -m research example-levels --checkpoint checkpoints/emma-minilm --set-config
    """
    import torch

    from .example_levels import main

    torch.set_num_threads(2)
    levels = main(checkpoint, set_config, precision)
    click.echo(json.dumps(levels.to_config()))


@cli.command("fewshot-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=FEWSHOT, show_default="results/fewshot.jsonl")
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True)
@click.option("--checkpoint", "checkpoint_id", default="emma-minilm", show_default=True,
              help="Only the runs of the checkpoint whose id starts with this.")
@click.option("--rule", default=None, help="How the runs weighed examples (default: that of the latest run with examples; 'min(n,20)/(min(n,20)+5), classifier 1-w': before the example levels, with them ', levels x0.5' added; 'n/(n+5), classifier 1-w': before the cap on n; 'n/(n+5)': before the classifier's share; 0.5: the fixed weight before that).")
@click.option("--precision", type=click.Choice([p for p in INFERENCE_PRECISIONS if p != "auto"]), default=None,
              help="Only the runs scored at this precision (default: all; records hold the precision `auto` chose).")
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
def fewshot_table(results, split, checkpoint_id, rule, precision, output) -> None:
    """Render the few-shot table (markdown) from a results file of `fewshot`.

    Example:

        python -m research fewshot-table --output results/FEWSHOT.md
    """
    from .fewshot import table
    from .jsonl import read

    records = [r for r in read(results) if precision is None or r["precision"] == precision]
    text = table(records, split, checkpoint_id, rule)
    _emit(text, output)


TRANSFER = RESULTS_DIR / "transfer.jsonl"


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=TRANSFER, show_default="results/transfer.jsonl")
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True,
              help="CrossRE file to score; tune on dev, keep test as a last check.")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="auto", show_default=True,
              help="Recorded with each row and part of what makes a row done.")
def transfer(checkpoint, data_dir, results, split, precision) -> None:
    """Zero-shot transfer: a checkpoint on every CrossRE domain (16 types), beside the untrained floor.

    Example:

        python -m research transfer --checkpoint checkpoints/emma-minilm
    """
    from .transfer import run

    run(checkpoint, data_dir, results, split, precision)


@cli.command("transfer-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=TRANSFER, show_default="results/transfer.jsonl")
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True)
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
@click.option("--metrics", type=click.Path(exists=True, path_type=Path),
              help="A checkpoint's metrics.json: its 'transfer' entry is set from its own rows.")
def transfer_table(results, split, output, metrics) -> None:
    """Render the transfer table (markdown) from a results file of `transfer`.

    Example:

        python -m research transfer-table --output results/TRANSFER.md --metrics checkpoints/emma-minilm/metrics.json
    """
    from emma import checkpoint_id as emma_checkpoint_id

    from .jsonl import read
    from .transfer import metrics as transfer_metrics
    from .transfer import table

    records = read(results)
    text = table(records, split)
    _emit(text, output)
    if metrics:
        current = json.loads(metrics.read_text())
        model = emma_checkpoint_id(metrics.parent)
        current["transfer"] = {"data": f"CrossRE {split}, all 16 types as candidates, macro F1",
                               "command": "python -m research transfer", "domains": transfer_metrics(records, model, split)}
        metrics.write_text(json.dumps(current, indent=1, ensure_ascii=False) + "\n")


FINETUNE = RESULTS_DIR / "finetune.jsonl"
FINETUNE_BLEND = RESULTS_DIR / "finetune_blend.jsonl"


def _known(name: str, given: str, allowed) -> list[str]:
    """The comma-separated values of `given`, each one of `allowed`; else an error naming the first that is not."""
    values = given.split(",")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise click.BadParameter(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    return values


@cli.command("finetune-compare")
@click.option("--checkpoint", type=click.Path(exists=True), help="Checkpoint folder (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=FINETUNE, show_default="results/finetune.jsonl")
@click.option("--domains", default="ai", show_default=True, help="CrossRE domains, comma-separated.")
@click.option("--recipes", default="default", show_default=True, help="Comma-separated recipe names of research.finetune.RECIPES (an unknown name lists them).")
@click.option("--rows", type=int, default=20, show_default=True, help="Labelled rows per relation, from the domain's train file.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fewrel-cap", type=int, default=100, show_default=True, help="FewRel m = 15 ori instances per relation scored.")
@click.option("--keep", is_flag=True, help="Keep the fine-tuned folders under runs/.")
def finetune_cmd(checkpoint, data_dir, results, domains, recipes, rows, seed, fewrel_cap, keep) -> None:
    """Examples only vs fine-tuning on the same labelled rows of a CrossRE domain, and what FewRel forgets.

    Example:

        python -m research finetune-compare --domains ai,news --recipes default,anchor-0.02
    """
    from .finetune import DOMAINS, RECIPES, run

    domains, recipes = _known("domain", domains, DOMAINS), _known("recipe", recipes, RECIPES)
    from emma import DEFAULT_CHECKPOINT

    run(str(checkpoint or DEFAULT_CHECKPOINT), data_dir, results, domains, recipes, rows, seed, fewrel_cap, RUNS_DIR, keep)


@cli.command("finetune-blend")
@click.option("--checkpoint", type=click.Path(exists=True), help="The checkpoint the kept fine-tunes started from (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=FINETUNE_BLEND, show_default="results/finetune_blend.jsonl")
@click.option("--compared", type=click.Path(path_type=Path), default=FINETUNE, show_default="results/finetune.jsonl",
              help="finetune-compare's results, for examples only beside each row.")
@click.option("--domains", help="CrossRE domains, comma-separated (default: all six).")
@click.option("--recipe", default="no-blend", show_default=True, help="The recipe whose fine-tunes were kept.")
@click.option("--rows", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--blends", default="1,0.8,0.7,0.5", show_default=True, help="Shares of the trained change kept, comma-separated.")
@click.option("--fewrel-cap", type=int, default=100, show_default=True)
def finetune_blend_cmd(checkpoint, data_dir, results, compared, domains, recipe, rows, seed, blends, fewrel_cap) -> None:
    """Choose the blend share without training again: kept fine-tunes averaged with their start, scored per share.

    The fine-tunes are kept by `finetune-compare --recipes no-blend --keep`.

    Example:

        python -m research finetune-blend --recipe no-blend --blends 1,0.8,0.7,0.5
    """
    from emma import DEFAULT_CHECKPOINT

    from .finetune import DOMAINS, RECIPES, blend_grid, blend_table
    from .jsonl import read

    domains = _known("domain", domains, DOMAINS) if domains else DOMAINS
    _known("recipe", recipe, RECIPES)
    blend_grid(str(checkpoint or DEFAULT_CHECKPOINT), data_dir, results, domains, recipe, rows, seed,
               [float(b) for b in blends.split(",")], fewrel_cap, RUNS_DIR)
    records = [r for r in read(results) if r["recipe"] == recipe and r["seed"] == seed and r["rows_per_relation"] == rows]
    click.echo(blend_table(records, [r for r in read(compared) if r["rows_per_relation"] == rows]))


WORKBENCH_FINETUNE = RESULTS_DIR / "workbench_finetune.jsonl"


@cli.command("workbench-finetune")
@click.option("--checkpoint", type=click.Path(exists=True), help="The server's model (default: the shipped one).")
@click.option("--start", type=click.Path(exists=True), help="A model the server offers to start from (app.py --finetune-from); default: the server's.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=WORKBENCH_FINETUNE, show_default="results/workbench_finetune.jsonl")
@click.option("--domain", default="science", show_default=True, help="A CrossRE domain, or several comma-separated (one run each).")
@click.option("--rows", type=int, default=20, show_default=True, help="Labelled rows per relation, from the domain's train file.")
@click.option("--seed", type=int, default=0, show_default=True)
def workbench_finetune_cmd(checkpoint, start, data_dir, results, domain, rows, seed) -> None:
    """The workbench's "Improve the model from my labels" end to end on a CrossRE domain: the user's model and the new
    version scored on dev with the same labels as examples.

    Example:

        python -m research workbench-finetune --start checkpoints/emma-mpnet --domain news
    """
    from emma import DEFAULT_CHECKPOINT

    from .finetune import DOMAINS
    from .workbench_finetune import run

    for name in _known("domain", domain, DOMAINS):
        run(str(checkpoint or DEFAULT_CHECKPOINT), start, data_dir, name, rows, seed, results)


FINETUNE_SWEEP = RESULTS_DIR / "finetune_sweep.jsonl"


@cli.command("finetune-sweep")
@click.option("--checkpoint", type=click.Path(exists=True), help="Checkpoint folder (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=FINETUNE_SWEEP, show_default="results/finetune_sweep.jsonl")
@click.option("--domains", help="CrossRE domains, comma-separated (default: all six).")
@click.option("--trainings", help="Comma-separated names of research.finetune.SWEEP_TRAININGS, run in this order (default: all).")
@click.option("--blends", default="1,0.85,0.7,0.5", show_default=True, help="Shares of the trained change kept, comma-separated.")
@click.option("--rows", type=int, default=20, show_default=True, help="Labelled rows per relation, from the domain's train file.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Draws of the labelled rows, comma-separated.")
@click.option("--fewrel-cap", type=int, default=100, show_default=True)
@click.option("--minutes", type=float, help="Start no fine-tune after this many minutes (the records so far stay).")
def finetune_sweep_cmd(checkpoint, data_dir, results, domains, trainings, blends, rows, seeds, fewrel_cap, minutes) -> None:
    """Training strength against the blend share, over several draws of the labelled rows (on a GPU, one process per
    domain and draw can share it: each appends whole lines to the results file).

    Example:

        python -m research finetune-sweep --domains ai --trainings epochs-4-lr-5e-5,epochs-8-lr-5e-5
    """
    from emma import DEFAULT_CHECKPOINT

    from .finetune import DOMAINS, SWEEP_TRAININGS, sweep

    domains = _known("domain", domains, DOMAINS) if domains else DOMAINS
    trainings = _known("training", trainings, SWEEP_TRAININGS) if trainings else list(SWEEP_TRAININGS)
    sweep(str(checkpoint or DEFAULT_CHECKPOINT), data_dir, results, domains, trainings, [float(b) for b in blends.split(",")],
          rows, [int(s) for s in seeds.split(",")], fewrel_cap, RUNS_DIR, minutes)


@cli.command("finetune-sweep-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=FINETUNE_SWEEP, show_default="results/finetune_sweep.jsonl")
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
def finetune_sweep_table(results, output) -> None:
    """Render `finetune-sweep`'s table (markdown): per training and blend share, means over domains and draws.

    Example:

        python -m research finetune-sweep-table --output results/tmp/sweep.md
    """
    from .finetune import sweep_table
    from .jsonl import read

    _emit(sweep_table(read(results)), output)


@cli.command("finetune-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=FINETUNE, show_default="results/finetune.jsonl")
@click.option("--rule", default=None, help="Only runs scored with this example rule (research.fewshot.EXAMPLE_RULE: the shipped one; 'n/(n+5), classifier 1-w': before the cap on n; 'n/(n+5)': before the classifier's share; 0.5: the fixed weight).")
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
def finetune_table(results, rule, output) -> None:
    """Render the fine-tune table (markdown) from a results file of `finetune-compare`.

    Example:

        python -m research finetune-table --output results/FINETUNE.md
    """
    from .finetune import table
    from .jsonl import read

    text = table(read(results), rule)
    _emit(text, output)


TRANSFER_GRID = RESULTS_DIR / "transfer_grid.jsonl"


@cli.command("transfer-grid")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=TRANSFER_GRID, show_default="results/transfer_grid.jsonl")
@click.option("--recipes", default="shipped,control,forms,adapters-r16", show_default=True,
              help="Comma-separated: shipped, control, forms, adapters-r16, adapters-r16+forms, anchor-0.02, "
                   "swap, adapters-r16+forms+swap, mpnet, mpnet+adapters-r16+forms.")
@click.option("--per-relation", type=int, default=100, show_default=True, help="Training instances per relation.")
@click.option("--two-stage", is_flag=True, help="Train the classifier too (default: recall only).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--fewrel-cap", type=int, default=200, show_default=True, help="FewRel m = 15 test instances scored per relation.")
@click.option("--split", "split_seed", type=click.Choice(SPLIT_SEEDS), default="ori", show_default=True,
              help="The FewRel m = 15 split whose train relations a run trains on and whose test relations score it.")
def transfer_grid(data_dir, results, recipes, per_relation, two_stage, seed, fewrel_cap, split_seed) -> None:
    """Train each recipe at one small budget and score it on FewRel m = 15 and CrossRE dev (issue 18).

    Example:

        python -m research transfer-grid --recipes shipped,control,forms,adapters-r16 --per-relation 100
    """
    from .transfer_grid import RECIPES, SHIPPED, run

    names = recipes.split(",")
    bad = [r for r in names if r not in RECIPES and r != SHIPPED]
    if bad:
        raise click.BadParameter(f"unknown recipe {bad[0]!r}; choose from {SHIPPED}, {', '.join(RECIPES)}")
    run(names, data_dir, results, RUNS_DIR, per_relation, two_stage, seed, fewrel_cap, split_seed)


@cli.command("train-recipe")
@click.option("--recipe", required=True, help="A transfer-grid recipe, e.g. mpnet+adapters-r16+forms.")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="Checkpoint folder (resumed when it holds a run).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--per-relation", type=int, default=100, show_default=True, help="Training instances per relation.")
@click.option("--two-stage", is_flag=True, help="Train the classifier too (default: recall only).")
@click.option("--seed", type=int, default=42, show_default=True)
def train_recipe(recipe, output, data_dir, per_relation, two_stage, seed) -> None:
    """Train a transfer-grid recipe on all 80 FewRel relations: a release candidate, scored with `transfer`.

    Example:

        python -m research train-recipe --recipe mpnet+adapters-r16+forms --output runs/emma-mpnet
    """
    from .transfer_grid import RECIPES, train_on_every_relation

    if recipe not in RECIPES:
        raise click.BadParameter(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    click.echo(str(train_on_every_relation(recipe, data_dir, output, per_relation, two_stage, seed)))


@cli.command("transfer-grid-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=TRANSFER_GRID, show_default="results/transfer_grid.jsonl")
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
def transfer_grid_table(results, output) -> None:
    """Render the transfer grid (markdown) from a results file of `transfer-grid`.

    Example:

        python -m research transfer-grid-table --output results/TRANSFER_GRID.md
    """
    from .jsonl import read
    from .transfer_grid import table

    _emit(table(read(results)), output)


@cli.command("ui-latency")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), help="Checkpoint folder (default: the shipped one).")
@click.option("--threads", type=int, default=2, show_default=True, help="torch threads of the server.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Passes over the five sentences.")
@click.option("--output", type=click.Path(path_type=Path), help="Write the timings (JSON) here too.")
def ui_latency(checkpoint, threads, rounds, output) -> None:
    """Perceived latency in Chromium: Predict click → prediction shown → every panel drawn (issue 15).

    Example:

        python -m research ui-latency --output results/ui_latency.json
    """
    from emma import DEFAULT_CHECKPOINT

    from .ui_latency import measure

    report = measure(checkpoint or Path(DEFAULT_CHECKPOINT), threads, rounds)
    text = json.dumps(report, indent=1)
    click.echo(json.dumps({"median": report["median"], "max": report["max"]}))
    if output:
        Path(output).write_text(text + "\n")


EXTRACTION = RESULTS_DIR / "extraction.jsonl"


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=EXTRACTION, show_default="results/extraction.jsonl")
@click.option("--markdown", type=click.Path(path_type=Path), default=RESULTS_DIR / "EXTRACTION.md", show_default="results/EXTRACTION.md")
@click.option("--figure", type=click.Path(path_type=Path), default=RESULTS_DIR / "extraction_pr.png", show_default="results/extraction_pr.png",
              help="The precision-recall curve: this PNG and an HTML beside it.")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="auto", show_default=True)
@click.option("--set-config", is_flag=True, help="Write the chosen threshold into the checkpoint's config.json (extract_threshold).")
def extraction(checkpoint, data_dir, results, markdown, figure, precision, set_config) -> None:
    """The extraction threshold: every entity pair of CrossRE dev, P / R / F1 per domain as the threshold moves.

    Per-pair scores are cached in runs/extraction/, so a rerun only sweeps again.

    Example:

        python -m research extraction --checkpoint checkpoints/emma-minilm --set-config
    """
    from .extraction import run

    summary = run(checkpoint, data_dir, results, RUNS_DIR / "extraction", precision, markdown, figure, set_config,
                  command=" ".join(["python -m research", *sys.argv[1:]]))
    click.echo(f"threshold {summary['threshold']:.3f}; F1 per domain: "
               + ", ".join(f"{d} {v['f1']:.1f}" for d, v in summary["at_threshold"].items()))


@cli.command("extraction-latency")
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--threads", type=int, default=2, show_default=True, help="torch threads.")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="auto", show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True)
def extraction_latency(checkpoint, threads, precision, repeats) -> None:
    """Time `Extractor.extract` end to end on a 5-sentence paragraph (entities suggested, about 20 pairs); prints figures.

    Example:

        python -m research extraction-latency --threads 2
    """
    from .extraction import latency

    click.echo(json.dumps(latency(checkpoint, threads, precision, repeats), indent=2))


GZSL = RESULTS_DIR / "gzsl.jsonl"


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=GZSL, show_default="results/gzsl.jsonl")
@click.option("--margins", default="0,0.05,0.1,0.15,0.2", show_default=True, help="δ values, comma-separated.")
@click.option("--seen-per-relation", type=int, default=10, show_default=True)
@click.option("--unseen-per-domain", type=int, default=200, show_default=True)
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True,
              help="CrossRE files of the unseen sentences: dev to choose δ, test as the last check.")
@click.option("--classifier-margins", default="0", show_default=True,
              help="γ values, comma-separated: trained candidates' classifier probabilities × e^−γ (a probe).")
@click.option("--whole-catalogue", is_flag=True,
              help="Also the catalogue's other default relations (untrained, Wiki-ZSL) as candidates, as in the workbench.")
@click.option("--margin-on", type=click.Choice(["trained", "catalogue"]), default="trained", show_default=True,
              help="Take δ off the trained relations, or off every catalogue relation (trained or not) as the workbench does.")
def gzsl(checkpoint, data_dir, results, margins, seen_per_relation, unseen_per_domain, split, classifier_margins,
         whole_catalogue, margin_on) -> None:
    """Generalized zero-shot: the 80 trained FewRel relations and 16 new CrossRE types in force together;
    seen / unseen accuracy and their harmonic mean per margin δ taken off the trained relations' recall.

    Example:

        python -m research gzsl --margins 0,0.1
    """
    from . import REPO_ROOT
    from .gzsl import run

    values = [float(m) for m in margins.split(",")]
    gammas = [float(g) for g in classifier_margins.split(",")]
    run(checkpoint, data_dir, REPO_ROOT / "assets" / "relations.json", results, values, seen_per_relation, unseen_per_domain, split,
        gammas, whole_catalogue, margin_on)


@cli.command("gzsl-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=GZSL, show_default="results/gzsl.jsonl")
@click.option("--output", type=click.Path(), help="Write the markdown here too.")
def gzsl_table(results, output) -> None:
    """Render the generalized zero-shot table from a results file of `gzsl`.

    Example:

        python -m research gzsl-table --output results/GZSL.md
    """
    from .gzsl import table
    from .jsonl import read

    text = table(read(results))
    _emit(text, output)


GZSL_SPLIT = RESULTS_DIR / "gzsl_split.jsonl"


@cli.command("gzsl-split")
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help="A model trained on FewRel m = 15 ori's train relations.")
@click.option("--trained-cap", type=int, default=100, show_default=True, help="Instances per relation it was trained on (as transfer-grid draws them).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data")
@click.option("--results", type=click.Path(path_type=Path), default=GZSL_SPLIT, show_default="results/gzsl_split.jsonl")
@click.option("--margins", default="0,0.05,0.1,0.15,0.2", show_default=True, help="δ values, comma-separated.")
@click.option("--output", type=click.Path(), help="Write the table (every record of the results file) here too.")
def gzsl_split(checkpoint, trained_cap, data_dir, results, margins, output) -> None:
    """Generalized zero-shot on FewRel m = 15 ori with a split-trained model: held-back seen instances and the
    split's unseen relations, all 80 in force; δ chosen on the eval relations, reported on the test relations.

    Example:

        python -m research gzsl-split --checkpoint runs/transfer-grid/control_n100_recall_s42 --output results/GZSL_SPLIT.md
    """
    from .gzsl_split import run, table
    from .jsonl import read

    run(checkpoint, data_dir, results, [float(m) for m in margins.split(",")], trained_cap)
    _emit(table(read(results)), output)

@cli.command()
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), help="Checkpoint folder (default: the shipped one).")
@click.option("--clients", default="1,4,8,16", show_default=True, callback=_int_list(1, "1,4,8,16"),
              help="Concurrent clients per level, comma-separated (at most 32).")
@click.option("--requests", type=click.IntRange(1, 200), default=20, show_default=True, help="/predict calls per client.")
@click.option("--threads", type=int, default=2, show_default=True, help="torch threads of the server.")
@click.option("--deadline", type=float, default=900, show_default=True, help="Seconds for the whole run.")
@click.option("--client", type=click.Choice(["run", "call", "gradio", "model"]), default="run", show_default=True,
              help="run: one POST to /gradio_api/run/predict per call, one session each; call: Gradio's queued "
                   "route (POST, then the event's stream); gradio: the gradio_client package; model: no server, "
                   "threads calling the model's thread in this process (the batching ceiling).")
@click.option("--output", type=click.Path(path_type=Path), help="Also write the rows as JSON here.")
def loadtest(checkpoint, clients, requests, threads, deadline, client, output) -> None:
    """Load test of the workbench's /predict on a loopback port: N clients × R requests → p50, p95, throughput, errors.

    Starts app.py in a child process (its own temporary database, torch limited to --threads); loopback only,
    bounded in clients, requests and time.

    Example:

        python -m research loadtest --clients 1,8 --requests 10 --output results/loadtest.json
    """
    from emma import DEFAULT_CHECKPOINT

    from .loadtest import MAX_CLIENTS, markdown, measure

    if max(clients) > MAX_CLIENTS:
        raise click.BadParameter(f"at most {MAX_CLIENTS} clients per level", param_hint="--clients")
    checkpoint = checkpoint or Path(DEFAULT_CHECKPOINT)
    rows = measure(checkpoint, list(clients), requests, threads, deadline, client)
    click.echo(markdown(rows))
    if output:
        output.write_text(json.dumps({"threads": threads, "checkpoint": str(checkpoint), "client": client, "rows": rows},
                                     indent=1) + "\n")


@cli.command()
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), help="Checkpoint folder (default: the shipped one).")
@click.option("--writers", type=click.IntRange(1, 16), default=4, show_default=True, help="Concurrent writers.")
@click.option("--kills", type=click.IntRange(1, 10), default=3, show_default=True, help="SIGKILLs during the run.")
def crashtest(checkpoint, writers, kills) -> None:
    """kill -9 the workbench (loopback only) while clients save feedback, restart it, count acknowledged vs stored.

    Exits 1 when an acknowledged row is lost, a row is stored twice or the integrity check fails.

    Example:

        python -m research crashtest --writers 8 --kills 5
    """
    from emma import DEFAULT_CHECKPOINT

    from .crashtest import failed, measure

    result = measure(checkpoint or Path(DEFAULT_CHECKPOINT), writers, kills)
    click.echo(" · ".join(f"{k} {v}" for k, v in result.items()))
    if failed(result):
        raise SystemExit(1)


cli.add_command(probe)
cli.add_command(probe_table)
cli.add_command(probe_sweep)


def main() -> None:  # pragma: no cover - entry point
    cli(prog_name="python -m research")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
