"""Command line: ``python -m emma train | evaluate | predict | convert | portable | install-encoder``.

Flags fill the `TrainConfig` dataclass, optionally over a JSON config file (``--config``).
User errors (missing files, bad data, bad flags) print one line, never a traceback: `CliGroup`
turns the library's errors into `click.ClickException` once, for every command. Research commands
(benchmark, protocol runner, tables, probes) are ``python -m research``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

import click

from .checkpoint import CheckpointError
from .choices import (
    BASE_ENCODERS,
    CLASSIFIER_FEATURES,
    CLASSIFIER_HEADS,
    CLASSIFIER_INITS,
    DECISIONS,
    DESCRIPTION_POOLINGS,
    INFERENCE_PRECISIONS,
    PRECISIONS,
    SCHEDULES,
)
from .data import DataError, Split, read_descriptions, read_instances, read_split, select

USER_ERRORS = (DataError, CheckpointError, ValueError, FileNotFoundError)


class CliGroup(click.Group):
    """A click group whose commands fail in one line: the library's user errors become `click.ClickException`.

    Example:

        @click.group(cls=CliGroup)
        def cli() -> None: ...
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from None


def _load_instances(paths, skip_invalid: bool = False) -> list:
    instances = []
    for p in paths:
        instances.extend(read_instances(p, skip_invalid=skip_invalid))
    return instances


def _split_or_none(path) -> Split | None:
    return read_split(path) if path else None


@click.group(cls=CliGroup)
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
@click.option("--descriptions", required=True, multiple=True, type=click.Path(),
              help="Relation descriptions file; repeat it to train on several forms of each description "
                   "(e.g. names only, name + description), one drawn per instance and step.")
@click.option("--split", type=click.Path(), help="rel2id split file: train on its 'train' relations, validate on 'eval'.")
@click.option("--output", required=True, type=click.Path(), help="Checkpoint folder to write.")
@click.option("--config", "config_file", type=click.Path(exists=True), help="JSON file of TrainConfig fields; flags override it.")
@click.option("--encoder", help="Base encoder path or name (default: the packaged all-MiniLM-L6-v2).")
@click.option("--epochs", type=int)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--max-per-relation", type=int, help="Cap training instances per relation.")
@click.option("--schedule", type=click.Choice(SCHEDULES),
              help="two_stage (default): recall first, then the classifier on frozen recall; joint: both at once (paper).")
@click.option("--classifier-max-per-relation", type=int, help="Two-stage: cap per relation of the classifier stage (default 300).")
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
@click.option("--adapter-rank", type=int, help="Train low-rank adapters of this rank instead of the whole encoder (0: off).")
@click.option("--swap-negatives", is_flag=True, default=None,
              help="Direction: each instance with head and tail swapped is a negative of its own description.")
@click.option("--init-checkpoint", type=click.Path(exists=True), help="Start from this trained checkpoint instead of the base encoder.")
@click.option("--no-train-recall", is_flag=True, default=None, help="Freeze the recall encoder; train only the classifier.")
@click.option("--classifier-init", type=click.Choice(CLASSIFIER_INITS),
              help="A classifier added to a recall-only --init-checkpoint starts from its recall encoder (default) or the base one.")
@click.option("--paper", is_flag=True,
              help="The paper's recipe (TrainConfig.paper(): concat head over h[CLS] trained jointly with recall, the "
                   "classifier decides) instead of the shipped one; other flags still apply.")
@click.option("--resume", is_flag=True, help="Continue from the output folder's training state.")
def train(data, descriptions, split, output, config_file, resume, no_classifier, no_train_recall, paper, **flags) -> None:
    """Train EMMA and write a checkpoint folder.

    The defaults are the shipped recipe: recall first, then a shared classifier head over h[CLS] ⊕ h[E_h] ⊕ h[E_t]
    on the frozen recall's hard negatives, fused decision; --paper trains the paper's recipe instead.

    Example:

        python -m emma train --data ../shared/data/fewrel/val_wiki.json \\
            --descriptions ../shared/data/fewrel/pid2name.json --output runs/demo --max-steps 50
    """
    from .train import train as run_training

    if no_train_recall:
        flags["train_recall"] = False
    if no_classifier:
        flags["use_classifier"] = False
    config = _train_config(config_file, flags, paper)
    instances, descs, dev = _training_data(data, descriptions, split)
    click.echo(str(run_training(config, instances, descs, output, resume=resume, dev=dev)))


def _train_config(config_file, flags: dict, paper: bool):
    """`TrainConfig` from the JSON file, then the flags given (architecture flags into its `EmmaConfig`)."""
    from .model import EmmaConfig
    from .train import TrainConfig

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
    arch = EmmaConfig.from_dict(model)  # names unknown keys
    if paper:
        return TrainConfig.paper(**{**values, "model": EmmaConfig.paper(**model)})
    return TrainConfig(**{**values, "model": arch})


def _training_data(data, descriptions, split) -> tuple[list, dict, tuple | None]:
    """(train instances, descriptions, dev set or None): a split keeps its train relations, validates on its eval ones."""
    instances = _load_instances(data)
    unlabelled = sum(i.relation is None for i in instances)
    if unlabelled:  # negatives ("none of these") and unjudged items of an annotation export
        click.echo(f"Skipped {unlabelled} instances without a relation (negatives or unlabelled): EMMA trains on relations.", err=True)
        instances = [i for i in instances if i.relation is not None]
    forms: dict[str, list[str]] = {}
    for path in descriptions:
        for relation, text in read_descriptions(path).items():
            forms.setdefault(relation, []).append(text)
    sp = _split_or_none(split)
    if sp is None:
        return instances, forms, None
    eval_instances = [i for i in instances if i.relation in set(sp.eval)]
    dev = (eval_instances, {r: forms[r][0] for r in sp.eval if r in forms}) if eval_instances else None
    return select(instances, sp.train, f"{split} (train)"), forms, dev


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(), help="Labelled file(s).")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file.")
@click.option("--split", type=click.Path(), help="rel2id split file: evaluate on its 'test' relations.")
@click.option("--k", type=int, help="Must match the checkpoint's k (its classifier reads exactly k candidates).")
@click.option("--max-per-relation", type=int, help="Evaluate on at most N instances per relation (seeded).")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="auto", show_default=True)
@click.option("--output", type=click.Path(), help="Also write the JSON report here.")
@click.option("--markdown", is_flag=True, help="Print a markdown table to stderr too.")
@click.option("--skip-invalid", is_flag=True, help="Drop broken records (logged) instead of stopping at the first.")
@click.option("--examples", type=click.Path(), help="Labelled file to draw --shots examples per relation from (never an evaluated instance).")
@click.option("--shots", type=click.IntRange(min=0), default=0, show_default=True,
              help="Labelled examples per relation, used at once by recall (0: zero-shot, --examples unread).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for drawing the examples.")
def evaluate(checkpoint, data, descriptions, split, k, max_per_relation, precision, output, markdown, skip_invalid,
             examples, shots, seed) -> None:
    """Score recall-only and full EMMA (macro P/R/F1) on a zero-shot (or few-shot) test set.

    Prints one JSON object with keys recall_only and emma (precision, recall, f1 in percent),
    n_instances and n_relations, and shots (examples per relation drawn from --examples; 0 without). With
    examples, description_fit says how many of them their own relation's description alone ranks first, in all
    and per relation (`RelationIndex.description_fits`): how well the descriptions suit this text.
    Without --split every described relation in the data is a candidate.

    Example:

        python -m emma evaluate --checkpoint checkpoints/emma-minilm --data ../shared/data/fewrel/val_wiki.json \\
            --descriptions ../shared/data/fewrel/pid2name.json --split ../shared/data/splits/fewrel_rel2id/fewrel_rel2id_15_ori.json

        python -m emma evaluate --data ../shared/data/crossre/ai-dev.jsonl --descriptions ../shared/data/crossre/descriptions.json \\
            --examples ../shared/data/crossre/ai-train.jsonl --shots 5
    """
    from .data import cap_per_relation
    from .evaluate import evaluate as run_evaluation
    from .evaluate import markdown_table
    from .pipeline import Extractor

    descs = read_descriptions(descriptions)
    instances, relations = _test_set(_load_instances(data, skip_invalid), descs, split, descriptions)
    instances = cap_per_relation(instances, max_per_relation)
    ex = Extractor.load(checkpoint, precision=precision)
    if k is not None and k != ex.config.k:
        raise click.ClickException(f"--k {k}: this checkpoint's classifier was trained for k={ex.config.k}")
    ex.set_relations({r: descs[r] for r in relations})
    drawn = _draw_examples(examples, shots, seed, instances, relations, skip_invalid)
    for relation, labelled in drawn.items():
        ex.add_examples(relation, labelled)
    report = run_evaluation(ex, instances, progress=True)
    report["shots"] = shots
    report["examples"] = sum(len(v) for v in drawn.values())
    if drawn:
        fits = ex.index.description_fits()
        report["description_fit"] = {
            "right": sum(f.right for f in fits), "examples": sum(f.examples for f in fits),
            "per_relation": {f.relation: {"right": f.right, "examples": f.examples, "taken_by": dict(f.taken_by)} for f in fits}}
    report["protocol"] = {
        "checkpoint": checkpoint or "default",
        "data": list(data),
        "descriptions": descriptions,
        "split": split,
        "max_per_relation": max_per_relation,
        "examples": examples,
        "seed": seed,
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
@click.option("--checkpoint", type=click.Path(), help="Checkpoint to start from (default: the shipped one).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(),
              help="Labelled file(s), e.g. the workbench's feedback.jsonl export; repeat the flag for several.")
@click.option("--descriptions", required=True, type=click.Path(), help="Descriptions of the labelled rows' relations.")
@click.option("--output", required=True, type=click.Path(), help="New checkpoint folder (must not exist).")
@click.option("--replay", type=click.Path(), help="Data the checkpoint was trained on, mixed in (e.g. FewRel).")
@click.option("--replay-descriptions", type=click.Path(), help="Descriptions of --replay's relations.")
@click.option("--epochs", type=int)
@click.option("--lr", type=float)
@click.option("--anchor", type=float, help="Share of the drift from the starting weights undone after each step (0: off).")
@click.option("--blend", type=float, help="Share of the trained change the new version keeps, averaged with the starting weights (1: all of it).")
@click.option("--prototype-weight", type=float, help="Weight of the recall loss on the score used with the rows as examples (description mixed with their prototype; 0: off).")
@click.option("--held-back", type=float, help="Share of each relation's rows held back (whole sentences) and scored before and after by a first model trained on the rest.")
@click.option("--add-classifier/--no-add-classifier", default=None, help="Whether a checkpoint without classifier (recall only) gets one, a copy of its recall encoder trained on the rows (default: it does).")
@click.option("--refit/--no-refit", default=None, help="Train the new version on every row after the scoring (default), or deliver the first model.")
@click.option("--seed", type=int)
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--skip-invalid", is_flag=True, help="Drop broken records (logged) instead of stopping at the first.")
@click.option("--resume", is_flag=True, help="Continue an interrupted fine-tune into the same --output.")
@click.option("--baseline", type=click.Path(), help="Checkpoint the held-back rows are scored with before (default: --checkpoint), e.g. the model a user would switch from.")
def finetune(checkpoint, data, descriptions, output, replay, replay_descriptions, skip_invalid, resume, baseline, **flags) -> None:
    """Adapt a trained checkpoint to labelled rows (recall and classifier), keeping what it knew.

    Holds back a share of each relation's rows (whole sentences), fine-tunes a first model on the rest and
    scores it there, then trains the new version on every row; prints a JSON report with macro F1 on the
    held-back rows before and after and how firm that verdict is (also written to OUTPUT/finetune.json).

    Example:

        python -m emma finetune --data feedback.jsonl --descriptions descriptions.json --output models/mine
    """
    from .checkpoint import DEFAULT_CHECKPOINT
    from .finetune import FinetuneConfig
    from .finetune import finetune as run_finetune

    if bool(replay) != bool(replay_descriptions):
        raise click.ClickException("--replay and --replay-descriptions go together")
    known = {f.name for f in fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: v for k, v in flags.items() if v is not None and k in known})
    rows = _load_instances(data, skip_invalid)
    extra = (_load_instances([replay], skip_invalid), read_descriptions(replay_descriptions)) if replay else None
    report = run_finetune(checkpoint or DEFAULT_CHECKPOINT, rows, read_descriptions(descriptions), output, config,
                          replay=extra, resume=resume, baseline=baseline)
    click.echo(json.dumps(report.to_json(), indent=2))


def _draw_examples(path, shots: int, seed: int, scored: list, relations: list, skip_invalid: bool) -> dict:
    """{relation: labelled examples} for the candidate relations, none of them a scored instance."""
    from .data import draw_shots

    if shots and not path:
        raise click.ClickException(f"--shots {shots} needs --examples FILE to draw them from")
    if not shots:  # K = 0 in a sweep over K is the zero-shot evaluation, --examples or not
        return {}
    labelled = [i for i in _load_instances([path], skip_invalid) if i.relation in set(relations)]
    if not labelled:
        raise click.ClickException(f"{path}: no labelled instance of the evaluated relations")
    return draw_shots(labelled, shots, seed=seed, exclude=scored)


def _test_set(instances: list, descs: dict, split, descriptions) -> tuple[list, list]:
    """(test instances, candidate relations): a split's test relations, else every described relation in the data."""
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
    return instances, relations


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file (the candidate relations).")
@click.option("--text", required=True, help="The sentence.")
@click.option("--head", required=True, help="Head entity text (its first occurrence is used).")
@click.option("--tail", required=True, help="Tail entity text.")
@click.option("--top-k", type=int, default=5, show_default=True, help="Recall scores to print.")
def predict(checkpoint, descriptions, text, head, tail, top_k) -> None:
    """Predict the relation between two entities of a sentence; prints JSON.

    Keys: label, description, score (under the decision rule in force), recall, candidates,
    probabilities (the classifier's), fused, classifier_share (its power in fused), decision, reranked, note.

    Example:

        python -m emma predict --descriptions ../shared/data/fewrel/pid2name.json \\
            --text "Apple was founded by Steve Jobs." --head Apple --tail "Steve Jobs"
    """
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
        "fused": p.fused,
        "classifier_share": p.classifier_share,
        "decision": p.decision,
        "reranked": p.reranked,
        "note": p.note,
    }, indent=2))


@cli.command()
@click.option("--input", "input_path", required=True, type=click.Path(), help="Instances in any format the workbench imports.")
@click.option("--to", "fmt", required=True, type=click.Choice(["fewrel", "labelstudio", "doccano"]),
              help="fewrel: the project's trainable JSONL; labelstudio: Label Studio JSON; doccano: doccano relation JSONL.")
@click.option("--output", required=True, type=click.Path(), help="File to write.")
def convert(input_path, fmt, output) -> None:
    """Convert a file of instances (JSONL with token spans, FewRel, text with character spans, Label Studio or
    doccano exports) to another format. Bad records are listed by line and left out; the others are written.

    Example:

        python -m emma convert --input judged.jsonl --to labelstudio --output judged.labelstudio.json
    """
    from .corpus import read_corpus, write_corpus

    corpus = read_corpus(input_path)
    for bad in corpus.bad:
        click.echo(str(bad), err=True)
    write_corpus(corpus.records, output, fmt)
    click.echo(f"Wrote {len(corpus.records)} instances to {output} ({len(corpus.bad)} bad records left out).")


@cli.command()
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Text file: one text (a sentence or a paragraph) per line.")
@click.option("--descriptions", type=click.Path(exists=True), help="Relation descriptions file (default: the workbench's default relations, assets/relations.json).")
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--threshold", type=click.FloatRange(0, 1), help="No relation below this score (default: the checkpoint's extract_threshold).")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the JSONL here instead of stdout.")
def extract(input_path, descriptions, checkpoint, threshold, output) -> None:
    """Every relation between entities of the same sentence, for each line of a text file; JSONL of triples.

    Entities are suggested by the packaged English NER (en_core_web_sm 3.8). One JSON object per input
    line: {"line", "triples": [{"head", "relation", "tail", "score", "head_span", "tail_span", "sentence", …}],
    "pairs", "warnings"}; a line that cannot be read (too long, fewer than two entities) gets "error" instead.

    Example:

        python -m emma extract --input paragraphs.txt --output triples.jsonl
    """
    from tqdm.auto import tqdm

    from .checkpoint import REPO_ROOT
    from .entities import EntityModelError
    from .pipeline import Extractor

    lines = Path(input_path).read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise click.ClickException(f"{input_path}: no text in the file (one text per line)")
    if descriptions:
        relations = read_descriptions(descriptions)
    else:
        catalogue = json.loads((REPO_ROOT / "assets" / "relations.json").read_text())
        relations = {e["label"]: e["text"] for e in catalogue if e.get("default", True)}
    ex = Extractor.load(checkpoint)
    ex.set_relations(relations)
    out = open(output, "w", encoding="utf-8") if output else None
    try:
        for n, line in enumerate(tqdm(lines, desc="extracting", unit="line"), start=1):
            if not line.strip():
                continue
            try:
                result = ex.extract(line, threshold=threshold, top_k=1)
                record = {"line": n, "triples": [t.to_dict() for t in result.triples], "pairs": len(result.pairs),
                          "threshold": result.threshold, "warnings": result.warnings}
            except EntityModelError:
                raise  # no line can be read without the NER: stop, in one line (CliGroup)
            except ValueError as e:  # one bad line (too long, < 2 entities) does not stop the file
                record = {"line": n, "error": str(e), "triples": []}
            click.echo(json.dumps(record, ensure_ascii=False), file=out)
    finally:
        if out:
            out.close()


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

    for p in save_portable(checkpoint, output):
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

    click.echo(str(restore_portable(portable_dir, output)))


@portable.command("slim")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("output", type=click.Path())
@click.option("--base", type=click.Choice(BASE_ENCODERS), required=True,
              help="The base encoder it was trained from (installed from its package).")
@click.option("--rank", type=int, required=True, help="The rank of its adapters (train --adapter-rank).")
def portable_slim(checkpoint, output, base, rank) -> None:
    """Write an adapter-trained CHECKPOINT as a slim folder OUTPUT: only its changes to the base encoder.

    `load_checkpoint` (and app.py --checkpoint) reads the slim folder directly, rebuilding the weights from
    the installed base encoder.

    Example:

        python -m emma portable slim runs/emma-mpnet checkpoints/emma-mpnet --base all-mpnet-base-v2 --rank 16
    """
    from .slim import save_slim

    click.echo(str(save_slim(checkpoint, output, base, rank)))


@cli.command("install-encoder")
@click.argument("name", type=click.Choice(BASE_ENCODERS))
def install_encoder(name) -> None:
    """Install a base encoder from its packages (idempotent) and print its folder; nothing downloads at load.

    Example:

        python -m emma install-encoder all-mpnet-base-v2
    """
    from .encoders import install

    click.echo(install(name))


def main() -> None:  # pragma: no cover - entry point
    cli(prog_name="python -m emma")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
