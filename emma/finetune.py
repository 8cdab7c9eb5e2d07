"""Fine-tuning a trained checkpoint on a user's labelled rows, without forgetting what it knew.

Labelled examples (`Extractor.add_examples`) help at once and cost nothing; fine-tuning is the
next step, run on demand: recall and classifier are trained together on the new rows (InfoNCE +
rerank cross-entropy, as in `emma.train`), starting from the checkpoint, for a few epochs, and the
new version is the trained weights averaged with the starting ones (`blend`: 70 % of the change
kept). Measured on the six CrossRE domains, 20 rows per relation, dev fused macro F1 with the rows
as examples (results/FINETUNE.md): examples only 33.2, fine-tuned 38.8 (blend 0.7) or 39.1 (the
trained weights as they are), while FewRel m = 15 `ori` drops 0.9–1.7 instead of 1.7–2.4 (89.9
before). The learning rate, 5e-5, was chosen there over 2e-5 and 1e-4. A pull back toward the
starting weights after every step (`anchor`) kept more of FewRel but cost more of the gain, and
FewRel rows mixed in ("replay") did worse on both counts; both are options, off by default.

A share of each relation's rows, in whole sentences, is held back and scored before and after by a
first model that never reads them, the other rows counting as examples both times (as in the
workbench), so every fine-tune reports whether it beat the examples alone on sentences it did not
train on (`FinetuneReport.improved`, and how firmly: `chance_better`); the new version is then
trained on every row (`FinetuneConfig.refit`). The new checkpoint is written
to a temporary sibling folder and renamed into place once complete: an interrupted fine-tune
leaves the output absent (and resumable), never half-written, and the starting checkpoint is
only read.

    >>> report = finetune("checkpoints/emma-minilm", rows, descriptions, "models/mine")  # doctest: +SKIP
    >>> report.before["emma_fused"], report.after["emma_fused"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .checkpoint import checkpoint_id, read_config
from .data import Instance, by_relation, cap_per_relation, check_relations, one_per_pair
from .evaluate import REPORT_RULES, label_counts, macro_prf, macro_prf_counts
from .model import EmmaConfig
from .pipeline import Extractor
from .train import STATE_FILE, TrainConfig, train

logger = logging.getLogger(__name__)

REPORT_FILE = "finetune.json"
SCORED_FILE = "held_back_after.json"  # the scoring model's predictions, kept until the new version is trained


@dataclass
class FinetuneConfig:
    """How a fine-tune runs; the defaults are the measured recipe (results/FINETUNE.md).

    About `held_back` of each relation's rows are kept out of training, in whole sentences (`hold_back`),
    and scored before and after. With `refit`, the model they score is a first one, and the new version
    is then trained on every row, held-back ones included: at a few hundred labels a fifth of them is
    worth more to the model than a second training costs (results/FINETUNE.md). `replay_per_relation`
    rows of each replay relation are mixed in when replay data is given.
    """

    epochs: int = 4
    lr: float = 5e-5
    head_lr: float = 1e-4
    batch_size: int = 16
    anchor: float = 0.0
    blend: float = 0.7
    held_back: float = 0.2
    replay_per_relation: int = 10
    refit: bool = True
    prototype_weight: float = 0.0
    # Low-rank adapters of this rank instead of moving every encoder weight (0: off; `TrainConfig.adapter_rank`):
    # they learn at `head_lr`, and the new version is saved merged. Adapters replace the blend (give blend=1).
    adapter_rank: int = 0
    # A start without a classifier (recall only, like emma-mpnet) gets one, a copy of its recall encoder trained on the rows.
    add_classifier: bool = True
    seed: int = 42
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.held_back < 1:
            raise ValueError(f"held_back={self.held_back}: give a fraction in [0, 1)")
        self.train_config("", 2)  # the training's own checks (epochs, blend, anchor, …) now, not after the scoring before

    def train_config(self, checkpoint: str, relations: int) -> TrainConfig:
        """The `TrainConfig` of this fine-tune: both stages trained jointly from `checkpoint`."""
        return TrainConfig(init_checkpoint=checkpoint, model=EmmaConfig(use_classifier=self.add_classifier),
                           train_recall=True, epochs=self.epochs, lr=self.lr,
                           head_lr=self.head_lr, batch_size=min(self.batch_size, relations), warmup_steps=10,
                           anchor=self.anchor, blend=self.blend, seed=self.seed, precision=self.precision,
                           classifier_max_per_relation=None, prototype_weight=self.prototype_weight,
                           adapter_rank=self.adapter_rank)


@dataclass
class FinetuneReport:
    """What a fine-tune did: rows used, and macro F1 (recall only, classifier, fused) on held-back rows before and after,
    the trained rows counting as examples both times (`examples_in_scores`), as in the workbench.

    `improved`: whether the first model did better on the held-back sentences by the shipped (fused) rule;
    `chance_better`: on what share of resamples of those sentences it did (None when nothing was held
    back). A few dozen of the user's sentences are a rough check, not a forecast for new text: on CrossRE
    (results/FINETUNE.md) their verdict agreed with the dev set 9 times in 18, firm verdicts 3 in 5, while
    the fine-tune beat the examples alone on dev 16 times in 18.
    """

    parent: str  # checkpoint id of the starting checkpoint
    output: str
    relations: list[str]
    trained_rows: int  # the user's rows the new version trained on (held-back ones too, with `refit`)
    held_back_rows: int
    replay_rows: int
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    config: dict = field(default_factory=dict)
    examples_in_scores: bool = True
    scoring_rows: int = 0  # the user's rows the model scored on the held-back ones trained on
    held_back_sentences: int = 0
    chance_better: float | None = None  # `chance_better` of the fused rule's predictions, after against before
    improved: bool | None = None
    baseline: str = ""  # checkpoint id of the model "before" scored: the parent, or the one a user would switch from

    def __post_init__(self) -> None:
        if self.before and self.after:
            self.improved = self.after["emma_fused"] > self.before["emma_fused"]

    def to_json(self) -> dict:
        return asdict(self)


def hold_back(rows: Sequence[Instance], fraction: float, seed: int) -> tuple[list[Instance], list[Instance]]:
    """(train, held back), in input order: whole sentences held back until about `fraction` of each relation's rows are
    (at least one of a relation with two or more where its sentences allow), never a relation's last trained row.

    A sentence's pairs go to one side together: held-back pairs from sentences the model trained on would
    score how well it remembers those sentences, not how it does on new ones (on CrossRE, holding back
    rows alone said "switch" on domains where the fine-tune then lost on dev; results/FINETUNE.md).
    """
    counts = Counter(r.relation for r in rows)
    target = {rel: 0 if not fraction or n < 2 else max(1, round(fraction * n)) for rel, n in counts.items()}
    sentences = sentence_groups(rows)
    random.Random(seed).shuffle(sentences)
    held_per_relation: Counter = Counter()
    held: set[int] = set()
    # First sentences that overshoot no relation's share, then any that fill one while holding back at most
    # half of any relation's rows.
    for overshoot in (False, True):
        for sentence in sentences:
            if sentence[0] in held:
                continue
            relations = Counter(rows[i].relation for i in sentence)
            fills = any(held_per_relation[r] < target[r] for r in relations)
            limit = {r: max(target[r], counts[r] // 2) if overshoot else target[r] for r in relations}
            fits = all(held_per_relation[r] + n <= limit[r] and held_per_relation[r] + n < counts[r]
                       for r, n in relations.items())
            if fills and fits:
                held.update(sentence)
                held_per_relation.update(relations)
    return ([r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held])


def sentence_groups(rows: Sequence[Instance]) -> list[list[int]]:
    """The positions in `rows` of each sentence's pairs, sentences in first-seen order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.tokens, []).append(i)
    return list(groups.values())


def check_rows(rows: Sequence[Instance], descriptions: dict[str, str]) -> None:
    """Refuse, in one sentence, rows a fine-tune cannot use: none, unlabelled, unknown relations, fewer than 2 relations."""
    if not rows:
        raise ValueError("no labelled rows to fine-tune on")
    if any(r.relation is None for r in rows):
        raise ValueError("every row needs a relation label (a 'none of these' row cannot be trained on)")
    check_relations(rows, descriptions, "fine-tuning data")
    n = len({r.relation for r in rows})
    if n < 2:
        raise ValueError(f"fine-tuning needs labelled rows of at least 2 relations (in-batch negatives); these have {n}")


def predictions(checkpoint: Path, rows: Sequence[Instance], descriptions: dict[str, str], precision: str,
                examples: Sequence[Instance] = ()) -> dict[str, list[str]]:
    """{report key: the relation each rule of `REPORT_RULES` picks for each of `rows`}, the candidates being `descriptions`
    and `examples` counting as their relations' examples ({} without rows, and then nothing is loaded)."""
    if not rows:
        return {}
    extractor = Extractor.load(checkpoint, precision=precision)
    extractor.set_relations(descriptions)
    for relation, group in by_relation(one_per_pair(examples)).items():
        extractor.add_examples(relation, group)
    predicted = extractor.predict_batch(rows, top_k=extractor.config.k)
    return {key: [p.choice(rule) for p in predicted] for key, rule in REPORT_RULES.items()}


def scores(rows: Sequence[Instance], predicted: dict[str, list[str]]) -> dict[str, float]:
    """Macro F1 of each rule's `predictions` on `rows` ({} without rows)."""
    gold = [r.relation for r in rows]
    return {key: round(macro_prf(gold, labels)["f1"], 2) for key, labels in predicted.items()} if rows else {}


def chance_better(rows: Sequence[Instance], before: list[str], after: list[str], resamples: int = 1000,
                  seed: int = 0) -> float:
    """Share of `resamples` draws of the held-back sentences (with replacement, a sentence's pairs together)
    in which `after` has the higher macro F1 than `before`, ties counting half.

    A fine-tune is judged on a few dozen sentences, where one sentence more or less right moves macro F1
    by points; this says how often the same verdict holds on sentences like them.
    """
    groups = sentence_groups(rows)
    # Each sentence's counts once; a resample's are their sum (cheap even at thousands of rows).
    parts = [(label_counts([rows[i].relation for i in g], [before[i] for i in g]),
              label_counts([rows[i].relation for i in g], [after[i] for i in g])) for g in groups]
    rng = random.Random(seed)
    wins = 0.0
    for _ in range(resamples):
        b, a = Counter(), Counter()
        for _ in groups:
            part_b, part_a = rng.choice(parts)
            b.update(part_b)
            a.update(part_a)
        f1_a, f1_b = macro_prf_counts(a)["f1"], macro_prf_counts(b)["f1"]
        wins += 1.0 if f1_a > f1_b else 0.5 if f1_a == f1_b else 0.0
    return round(wins / resamples, 3)


def finetune(
    checkpoint: str | Path,
    rows: Sequence[Instance],
    descriptions: dict[str, str],
    output: str | Path,
    config: FinetuneConfig | None = None,
    replay: tuple[Sequence[Instance], dict[str, str]] | None = None,
    resume: bool = False,
    baseline: str | Path | None = None,
) -> FinetuneReport:
    """Fine-tune `checkpoint` on labelled `rows` into a new checkpoint folder `output`.

    Args:
        rows: labelled instances of at least 2 relations, each with a description in `descriptions`.
        descriptions: {relation: text}, the candidates of the held-back scoring.
        output: the new checkpoint folder; must not exist yet.
        replay: (instances, descriptions) of data the checkpoint knew, mixed in at
            `config.replay_per_relation` rows per relation.
        resume: continue an interrupted fine-tune into the same `output`.
        baseline: the checkpoint "before" is scored with (default: `checkpoint`). A fine-tune that starts from
            another model than the one a user predicts with is judged against the one they would switch from.

    Returns:
        the `FinetuneReport`, also written to `output/finetune.json`.
    """
    config = config or FinetuneConfig()
    checkpoint, output = Path(checkpoint), Path(output)
    baseline = Path(baseline) if baseline is not None else checkpoint
    for folder in (checkpoint, baseline):
        read_config(folder)  # a clear error now, not after the held-back scoring, for a folder that is no checkpoint
    check_rows(rows, descriptions)
    if output.exists():
        raise ValueError(f"{output} already exists: choose a new folder for the fine-tuned model")
    partial = partial_folder(output)
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    started = time.perf_counter()
    kept, held = hold_back(rows, config.held_back, config.seed)
    mixed, all_descriptions, n_replay = list(kept), dict(descriptions), 0
    if replay is not None:
        replay_rows = cap_per_relation([r for r in replay[0] if r.relation not in descriptions],
                                       config.replay_per_relation, seed=config.seed)
        mixed += replay_rows
        all_descriptions = {**replay[1], **descriptions}
        n_replay = len(replay_rows)
    relations = sorted({r.relation for r in mixed})
    # Scored as the user's predictions will run: the trained rows stay examples of their relations,
    # before and after, so "after" beats "before" only if fine-tuning adds to what the examples already give.
    before = predictions(baseline, held, descriptions, config.precision, examples=kept)
    train_config = config.train_config(str(checkpoint), len(relations))
    refit = config.refit and bool(held)
    delivered = mixed + held if refit else mixed
    card = (f"# Fine-tuned EMMA checkpoint\n\nFine-tuned from `{checkpoint_id(checkpoint)}` on {len(delivered) - n_replay} "
            f"labelled rows of {len({r.relation for r in delivered if r.relation in descriptions})} relations "
            f"({n_replay} replayed), then averaged with its start ({config.blend:.0%} of the trained change kept); "
            f"see `{REPORT_FILE}` for the rows held back and the scores before and after.\n")
    scored = partial / SCORED_FILE
    # The first model's predictions survive an interruption of the second training, tied to the rows they score
    # and the recipe that trained it.
    key = hashlib.sha256(json.dumps([[[list(r.tokens), r.head, r.tail, r.relation] for r in held], asdict(config)]).encode()).hexdigest()
    saved = _read_json(scored) if refit and resume else None
    if saved and saved.get("held") == key:
        after = saved["predictions"]
    else:
        scoring = partial / "scoring" if refit else partial
        logger.info("fine-tuning %s%s on %d rows (%d replayed) of %d relations; %d held back", checkpoint,
                    " (part 1 of 2: a model to score the held-back rows)" if refit else "", len(mixed), n_replay,
                    len(relations), len(held))
        train(train_config, mixed, all_descriptions, scoring, resume=resume, card=card)
        after = predictions(scoring, held, descriptions, config.precision, examples=kept)
        if refit:
            temporary = scored.with_suffix(".tmp")
            temporary.write_text(json.dumps({"held": key, "predictions": after}))
            temporary.replace(scored)
    if refit:
        shutil.rmtree(partial / "scoring", ignore_errors=True)
        logger.info("fine-tuning %s (part 2 of 2: the new version) on all %d rows (%d replayed)", checkpoint,
                    len(delivered), n_replay)
        train(train_config, delivered, all_descriptions, partial, resume=resume, card=card)
    report = FinetuneReport(checkpoint_id(checkpoint), str(output), sorted(descriptions), len(delivered) - n_replay,
                            len(held), n_replay, scores(held, before), scores(held, after),
                            round(time.perf_counter() - started, 1), asdict(config), scoring_rows=len(kept),
                            held_back_sentences=len(sentence_groups(held)),
                            chance_better=chance_better(held, before["emma_fused"], after["emma_fused"]) if held else None,
                            baseline=checkpoint_id(baseline))
    (partial / STATE_FILE).unlink(missing_ok=True)  # optimizer state: three times the model, useless once done
    (partial / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    shutil.rmtree(partial / "scoring", ignore_errors=True)
    scored.unlink(missing_ok=True)
    partial.replace(output)
    return report


def partial_folder(output: str | Path) -> Path:
    """Where `finetune` writes `output` until it is complete (then renamed to `output`)."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def read_report(folder: str | Path) -> dict | None:
    """The `finetune.json` of a fine-tuned checkpoint folder, or None for a checkpoint that was not fine-tuned."""
    return _read_json(Path(folder) / REPORT_FILE)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
