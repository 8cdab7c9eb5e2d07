"""The probe commands: ``probe`` (one run), ``probe-table`` (its results as markdown), ``probe-sweep`` (many on a GPU)."""

from __future__ import annotations

from pathlib import Path

import click

from emma import EmmaConfig, TrainConfig

from .. import DATA_DIR, RESULTS_DIR, RUNS_DIR
from .patches import PATCHES, patch_freeze_layers, typed_descriptions
from .run import CONTROL

PROBES = RESULTS_DIR / "recall_probes.jsonl"
# Options of `probe` that say where, not what: left out of a record's "changes".
WHERE = ("name", "results", "data", "runs", "dry_run")

_train, _arch = TrainConfig(), EmmaConfig()


def _first_line(fn) -> str:
    return fn.__doc__.splitlines()[0]


@click.command()
@click.argument("name")
# Changes the library does not offer, patched in.
@click.option("--symmetric", is_flag=True, help=_first_line(PATCHES["symmetric"]))
@click.option("--segment-norm", is_flag=True, help=_first_line(PATCHES["segment_norm"]))
@click.option("--all-negatives", is_flag=True, help=_first_line(PATCHES["all_negatives"]))
@click.option("--zero-heads", is_flag=True, help=_first_line(PATCHES["zero_heads"]))
@click.option("--no-dropout", is_flag=True, help=_first_line(PATCHES["no_dropout"]))
@click.option("--mean-first", is_flag=True, help=_first_line(PATCHES["mean_first"]))
@click.option("--constant-lr", is_flag=True, help=_first_line(PATCHES["constant_lr"]))
@click.option("--freeze-layers", type=int, default=0, show_default=True, help=_first_line(patch_freeze_layers))
@click.option("--typed-descriptions", type=click.Choice(("plain", "synonym")), default=None, help=_first_line(typed_descriptions))
# Library options (TrainConfig / EmmaConfig), at the protocol's values unless given.
@click.option("--freeze-word-embeddings", is_flag=True, help="TrainConfig.freeze_word_embeddings")
@click.option("--lr", type=float, default=CONTROL.lr, show_default=True)
@click.option("--head-lr", type=float, default=_train.head_lr, show_default=True)
@click.option("--warmup-steps", type=int, default=_train.warmup_steps, show_default=True)
@click.option("--weight-decay", type=float, default=_train.weight_decay, show_default=True)
@click.option("--max-grad-norm", type=float, default=_train.max_grad_norm, show_default=True)
@click.option("--precision", default=_train.precision, show_default=True, help="TrainConfig.precision (auto: bf16 where supported).")
@click.option("--temperature", type=float, default=_arch.temperature, show_default=True, help="τ (the calibration fixes 0.02).")
@click.option("--description-pooling", default=_arch.description_pooling, show_default=True, help="EmmaConfig.description_pooling.")
@click.option("--max-length", type=int, default=CONTROL.max_length, show_default=True, help="Instance window in word pieces.")
@click.option("--max-description-length", type=int, default=_arch.max_description_length, show_default=True)
@click.option("--train-seed", type=int, default=CONTROL.train_seed, show_default=True)
# Where, and dry runs.
@click.option("--data", type=click.Path(path_type=Path), default=DATA_DIR, show_default="../shared/data", help="The data folder.")
@click.option("--results", type=click.Path(path_type=Path), default=PROBES, show_default="results/recall_probes.jsonl")
@click.option("--runs", type=click.Path(path_type=Path), default=RUNS_DIR / "recall_probes", show_default="runs/recall_probes",
              help="Where run folders go.")
@click.option("--dry-run", type=int, default=0, metavar="N", help="N train and N test sentences per relation (a check of the code, not a probe).")
def probe(name, data, results, runs, dry_run, **changes) -> None:
    """Train the protocol's recall stage with one change to the recipe, test it, record it (an experiment).

    NAME names the run's folder under --runs and its line in --results. The flags above the library
    options patch emma's internals for this process (research.probes.patches).

    Example:

        python -m research probe no_dropout_s1 --no-dropout --train-seed 1
    """
    from .run import run_probe

    click.echo(run_probe(name, changes, data_dir=data, results=results, runs_dir=runs, dry_run=dry_run))


def probe_defaults() -> dict:
    """The control's `changes`: every recorded probe option at its default."""
    ctx = click.Context(probe)
    return {p.name: p.get_default(ctx) for p in probe.params if p.name not in WHERE}


@click.command("probe-table")
@click.option("--results", type=click.Path(exists=True, path_type=Path), default=PROBES, show_default="results/recall_probes.jsonl")
@click.option("--summary", is_flag=True, help="One row per probe: mean ± std over its training seeds, paired to the control.")
def probe_table(results, summary) -> None:
    """Print the probes' results file as a markdown table, one row per run (or per probe).

    Example:

        python -m research probe-table --summary
    """
    from .records import runs_table, summary_table

    click.echo((summary_table if summary else runs_table)(results, probe_defaults()))


@click.command("probe-sweep")
@click.option("--plan", type=click.Choice(("recipe", "windows")), default="recipe", show_default=True,
              help="recipe: every PHASE1 probe, then the best at more seeds; windows: the WINDOWS probes.")
@click.option("--results", type=click.Path(path_type=Path), required=True)
@click.option("--data", type=click.Path(path_type=Path), help="The data folder (default: probe's).")
@click.option("--runs", type=click.Path(path_type=Path), help="Where run folders go (default: probe's).")
@click.option("--logs", type=click.Path(path_type=Path), default=RUNS_DIR / "recall_probes" / "logs", show_default="runs/recall_probes/logs")
@click.option("--prefix", default="gpu_", show_default=True, help="Put before every run name.")
@click.option("--workers", type=click.IntRange(min=1), help="Probes at once (default: every phase-1 probe).")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads per process.")
@click.option("--confirm", type=int, default=3, show_default=True, help="Phase-1 winners to re-run at more seeds.")
@click.option("--deadline", type=float, default=480, show_default=True, help="Seconds; no run starts that would end later.")
@click.option("--dry-run", type=int, default=0, metavar="N", help="N sentences per relation (a check of the code).")
def probe_sweep(plan, workers, **options) -> None:
    """Run many probes side by side on one GPU, each in its own process.

    Example:

        python -m research probe-sweep --results /tmp/sweep.jsonl --deadline 480
    """
    from .sweep import PHASE1, Sweep, run_sweep

    run_sweep(Sweep(workers=workers or len(PHASE1), **options), plan)
