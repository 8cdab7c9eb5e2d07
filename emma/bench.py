"""Inference benchmark: EMMA (recall + rerank) against recall only and the all-pairs cross-encoder.

EMMA's efficiency claim (paper section 3.1 and the speed comparison of Figure 3): description
vectors are computed once, so recall costs one encoder pass per sentence plus a matrix product, and
only k pairs go through the cross-encoder. A PromptMatch-style matcher runs the cross-encoder over
every (sentence, relation) pair, n passes per sentence. The ideal speed-up is therefore n / (1 + k);
this module measures the real one, side by side, on one checkpoint, machine and set of sentences.

The all-pairs baseline uses EMMA's own classifier, so the comparison isolates the matching scheme.
That classifier's MLP reads k concatenated [CLS] states, so it has no single-pair score; we form one
("reference" scoring): for sentence x with pair states c_1..c_n, the reference state c̄ is their mean
(the sentence's average relation). Relation r is put in each slot j in turn with c̄ in the other k-1
slots, and its score is the mean over j of z_j minus the mean of the other logits. Every relation is
scored by the same function against the same per-sentence comparator, so the scores rank all n
relations, do not depend on the order the relations are listed in, and cancel the slot bias the
classifier learns from being fed candidates in recall order. The cross-encoder cost is exactly one
pass per pair (the MLP is negligible). A knock-out "tournament" of k-way matches (winners advance,
slots cyclically permuted) is available as the alternative; its winner depends on the bracket order.

Example:
    >>> from emma.bench import BenchConfig, run_benchmark
    >>> report = run_benchmark(extractor, instances, descriptions, BenchConfig(relations=(5, 15), limit=50))
    >>> report["results"][0]["sentences_per_s"]
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import resource
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import click
import numpy as np
import torch

from .checkpoint import CheckpointError
from .choices import PRECISIONS
from .data import DataError, Instance, cap_per_relation, read_descriptions, read_instances
from .evaluate import macro_prf
from .features import collate_pairs, encode_descriptions, encode_instances
from .pipeline import Extractor, autocast

logger = logging.getLogger(__name__)

METHODS = ("emma", "recall_only", "all_pairs")
ALL_PAIRS_SCORES = ("reference", "tournament")
DEFAULT_RELATIONS = (5, 15, 80, 1000, 10000)


@dataclass
class BenchConfig:
    """What to measure.

    Args:
        relations: relation-set sizes n; sizes beyond the real descriptions are filled with synthetic ones.
        limit: sentences per size (balanced over the gold relations, seeded).
        methods: any of "emma", "recall_only", "all_pairs".
        latency_sentences: single-sentence calls timed per method and size.
        all_pairs_budget: cross-encoder pairs the all-pairs throughput run may spend per size; beyond
            it the sentences are sub-sampled and the row is flagged "estimated" (F1 then null).
        all_pairs_score: "reference" or "tournament" (see the module docstring).
        latency_top_k: `top_k` of the timed `Extractor.predict` calls (None: every recall score).
        batch_size: sentences per encoder batch (the all-pairs baseline makes classifier calls of the
            same size as EMMA's rerank).
        warmup: untimed passes before each timed run (each: one batch, then the latency sentences one
            by one), so kernels for the sentence lengths at hand exist, as in a long-running workbench.
        seed: sentence sampling, relation choice and synthetic descriptions.
    """

    relations: tuple[int, ...] = DEFAULT_RELATIONS
    limit: int = 240
    methods: tuple[str, ...] = METHODS
    latency_sentences: int = 30
    all_pairs_budget: int = 20000
    all_pairs_score: str = "reference"
    latency_top_k: int | None = None
    batch_size: int = 64
    warmup: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.relations = tuple(int(n) for n in self.relations)
        self.methods = tuple(self.methods)
        if not self.relations or any(n < 1 for n in self.relations):
            raise ValueError(f"relations={self.relations}: give positive sizes, e.g. 5,15,80")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods={list(self.methods)}; choose from {list(METHODS)}")
        if self.all_pairs_score not in ALL_PAIRS_SCORES:
            raise ValueError(f"all_pairs_score={self.all_pairs_score!r}; choose one of {ALL_PAIRS_SCORES}")
        for name in ("limit", "latency_sentences", "all_pairs_budget", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup} must be 0 or more")


# --------------------------------------------------------------------------- relation sets and sentences


@dataclass
class Setting:
    """One relation-set size: the relations, and the sentences whose gold relation is among them."""

    n: int
    relations: dict[str, str]
    instances: list[Instance]
    n_synthetic: int = 0

    @property
    def labelled(self) -> bool:
        return bool(self.instances) and all(i.relation in self.relations for i in self.instances)


def synthetic_descriptions(real: dict[str, str], count: int, seed: int = 0) -> dict[str, str]:
    """`count` distinct made-up descriptions for scale, with the length profile of the real ones.

    Each is the first half of one real description's words followed by the second half of
    another's, so its word pieces and length look like a real description's. Ids are
    ``synthetic-00000`` and up; texts differ from every real text and from each other.
    """
    if count <= 0:
        return {}
    if not real:
        raise ValueError("synthetic descriptions need at least one real description to mix")
    rng = random.Random(seed)
    words = [t.split() for t in real.values()]
    seen = set(real.values())
    out: dict[str, str] = {}
    for i in range(count):
        for attempt in range(20):
            a, b = rng.choice(words), rng.choice(words)
            text = " ".join(a[: (len(a) + 1) // 2] + b[(len(b) + 1) // 2 :])
            if attempt == 19 or (text not in seen):
                break
        if text in seen:  # a tiny catalogue runs out of mixtures
            text = f"{text} ({i})"
        seen.add(text)
        out[f"synthetic-{i:05d}"] = text
    return out


def sample_instances(instances: Sequence[Instance], limit: int, seed: int = 0) -> list[Instance]:
    """At most `limit` instances, balanced over their relations, seeded."""
    if len(instances) <= limit:
        return list(instances)
    n_rel = len({i.relation for i in instances})
    picked = cap_per_relation(instances, math.ceil(limit / max(1, n_rel)), seed=seed)
    if len(picked) > limit:
        picked = random.Random(seed).sample(picked, limit)
    return picked


def relation_sets(
    instances: Sequence[Instance], descriptions: dict[str, str], sizes: Sequence[int],
    limit: int, pool: Sequence[str] = (), seed: int = 0,
) -> list[Setting]:
    """A relation set and its sentences for each size n.

    Sizes up to the number of labelled relations use a seeded subset of them (nested: the 5 are
    among the 15) and only their sentences. Larger sizes take every labelled relation, then the
    relations of `pool` (e.g. the FewRel 80), then the other real descriptions (seeded order), then
    synthetic ones, so every sentence's gold relation is a candidate and F1 stays measurable.
    Sentences with no label, or none described, are used only when there are no labelled ones.
    """
    labelled = sorted({i.relation for i in instances if i.relation in descriptions})
    rng = random.Random(seed)
    gold = list(labelled)
    rng.shuffle(gold)
    in_gold = set(gold)
    pool_ids = list(dict.fromkeys(r for r in pool if r in descriptions and r not in in_gold))
    rest = [r for r in descriptions if r not in in_gold and r not in set(pool_ids)]
    rng.shuffle(rest)
    fill = gold + pool_ids + rest
    settings = []
    for n in sizes:
        chosen = fill[:n]
        chosen_set = set(chosen)
        relations = {r: descriptions[r] for r in chosen}
        synthetic = synthetic_descriptions(descriptions, n - len(relations), seed)
        relations.update(synthetic)
        if labelled:
            pool_instances = [i for i in instances if i.relation in chosen_set]
        else:
            pool_instances = list(instances)
        settings.append(Setting(n, relations, sample_instances(pool_instances, limit, seed), len(synthetic)))
    return settings


# --------------------------------------------------------------------------- the all-pairs baseline


def reference_scores(mlp: Callable, states: torch.Tensor, k: int) -> torch.Tensor:
    """Score each pair state against the mean state, symmetrised over the classifier's k slots.

    Args:
        mlp: the classifier head, (P, k·d) → (P, k).
        states: (n, d) [CLS] states of one sentence paired with each of n relations.

    Returns:
        (n,) scores; higher is better. For k = 2: ½[(z₀ − z₁)(c_r, c̄) + (z₁ − z₀)(c̄, c_r)].
    """
    n, d = states.shape
    if k == 1:
        return mlp(states).float()[:, 0]
    ref = states.mean(0)  # (d,)
    total = torch.zeros(n, device=states.device)
    for j in range(k):
        slots = ref.expand(n, k, d).clone()  # (n, k, d)
        slots[:, j] = states
        z = mlp(slots.reshape(n, k * d)).float()  # (n, k)
        total += z[:, j] - (z.sum(1) - z[:, j]) / (k - 1)
    return total / k


def tournament_winner(mlp: Callable, states: torch.Tensor, k: int) -> int:
    """Index of the knock-out winner: groups of k in list order, each group's best margin advances.

    Every group is played in its k cyclic slot orders (margins summed) so no slot is favoured; a
    short last group is filled with the mean state, which cannot win.
    """
    n, d = states.shape
    if k == 1:  # one slot: no matches to play, the logit is the score
        return int(reference_scores(mlp, states, k).argmax())
    alive = torch.arange(n, device=states.device)
    ref = states.mean(0)
    while len(alive) > 1:
        g = math.ceil(len(alive) / k)
        pad = g * k - len(alive)
        members = torch.cat([alive, alive.new_full((pad,), -1)]).view(g, k)  # (g, k); -1 = filler
        x = torch.where((members >= 0)[..., None], states[members.clamp(min=0)], ref)  # (g, k, d)
        margin = torch.zeros(g, k, device=states.device)
        for s in range(k):
            z = mlp(x.roll(s, dims=1).reshape(g, k * d)).float()  # (g, k)
            m = z - (z.sum(1, keepdim=True) - z) / max(1, k - 1)
            margin += m.roll(-s, dims=1)
        margin = margin.masked_fill(members < 0, float("-inf"))
        alive = members[torch.arange(g, device=states.device), margin.argmax(1)]
    return int(alive[0])


class AllPairs:
    """The PromptMatch-style baseline: the classifier's cross-encoder over every (sentence, relation) pair.

    Uses the extractor's relation set (its stored description token ids: the catalogue is tokenized
    once, as EMMA's is) and precision. Pairs are length-sorted and batched `pair_batch` at a time.

    Args:
        extractor: an `Extractor` with a classifier and relations set.
        score: "reference" or "tournament" (module docstring).
        pair_batch: pairs per cross-encoder call (default: as many as EMMA's classifier calls take,
            `rerank_batch_size` (else `batch_size`) × k; small calls pad least and run fastest on CPU).
        max_pairs: pairs whose states are held at once (sentences are grouped to stay under it).
    """

    def __init__(self, extractor: Extractor, score: str = "reference", pair_batch: int | None = None, max_pairs: int = 8192) -> None:
        if score not in ALL_PAIRS_SCORES:
            raise ValueError(f"score={score!r}; choose one of {ALL_PAIRS_SCORES}")
        if extractor.model.classifier is None:
            raise ValueError("this checkpoint has no classifier, so there is no cross-encoder to run over all pairs")
        self.ex = extractor
        self.score = score
        self.k = extractor.config.k
        self.pair_batch = pair_batch or (extractor.rerank_batch_size or extractor.batch_size) * self.k
        self.max_pairs = max_pairs

    @torch.inference_mode()
    def pair_states(self, firsts: list[list[int]], seconds: list[list[int]]) -> torch.Tensor:
        """States (P, F), float32, of "[CLS] first [SEP] second [SEP]" pairs, as the classifier's MLP reads them."""
        ex, clf = self.ex, self.ex.model.classifier
        pairs = {key: v.to(ex.device, non_blocking=True) for key, v in collate_pairs(ex.tokenizer, firsts, seconds).items()}
        with autocast(ex.device, ex.precision):
            return clf.pair_features(**pairs).float()  # (P, F)

    @torch.inference_mode()
    def predict(self, instances: Sequence[Instance]) -> list[str]:
        """The best relation for each instance, after scoring all n relations with the cross-encoder."""
        ex = self.ex
        n = len(ex.index)
        if n == 0:
            raise ValueError("no relations to choose from")
        enc = encode_instances(ex.tokenizer, instances, ex.config.max_length)
        descs = ex.index.token_ids
        clf = ex.model.classifier
        mlp = clf.mlp
        shared = clf.config.classifier_head == "shared"
        width = mlp[0].in_features // (1 if shared else self.k)  # F: one pair's state
        if shared:  # a per-pair score: exact, no comparator needed
            pick = lambda states: int(mlp(states).squeeze(-1).argmax())  # noqa: E731
        elif self.score == "reference":
            pick = lambda states: int(reference_scores(mlp, states, self.k).argmax())  # noqa: E731
        else:
            pick = lambda states: tournament_winner(mlp, states, self.k)  # noqa: E731
        group = max(1, self.max_pairs // n)
        labels = []
        for g0 in range(0, len(instances), group):
            rows = list(range(g0, min(g0 + group, len(instances))))
            pairs = [(i, r) for i in rows for r in range(n)]
            order = sorted(range(len(pairs)), key=lambda p: len(enc.ids[pairs[p][0]]) + len(descs[pairs[p][1]]))
            states = torch.empty(len(pairs), width, device=ex.device)  # (G·n, F)
            for c in range(0, len(order), self.pair_batch):
                chunk = order[c : c + self.pair_batch]
                firsts = [enc.ids[pairs[p][0]] for p in chunk]
                seconds = [descs[pairs[p][1]] for p in chunk]
                states[torch.tensor(chunk, device=ex.device)] = self.pair_states(firsts, seconds)
            states = states.view(len(rows), n, -1)  # (G, n, F)
            labels.extend(ex.index.names[pick(states[g])] for g in range(len(rows)))
        return labels


# --------------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak memory (MiB) while the block runs: CUDA's max_memory_allocated, else the process RSS.

    RSS is sampled every 5 ms by a thread (psutil); without psutil it is the process high-water mark.
    Freed heap is first handed back to the OS (glibc ``malloc_trim``), so an earlier, larger run
    does not inflate a later one's RSS.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with accelerate
            return self
        _trim_heap()
        proc = psutil.Process()
        self.mb = proc.memory_info().rss / 2**20

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.mb = max(self.mb, proc.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            import psutil

            self.mb = max(self.mb, psutil.Process().memory_info().rss / 2**20)
        else:  # pragma: no cover
            self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _trim_heap() -> None:
    """Return freed heap pages to the OS where glibc allows it (elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable, *args, **kwargs):
    _sync(device)
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(device)
    return out, time.perf_counter() - t


def instance_text(inst: Instance) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """The sentence as text (tokens joined by spaces) and the entities' character spans (end exclusive)."""
    starts, pos = [], 0
    for tok in inst.tokens:
        starts.append(pos)
        pos += len(tok) + 1
    span = lambda s, e: (starts[s], starts[e - 1] + len(inst.tokens[e - 1]))  # noqa: E731
    return " ".join(inst.tokens), span(*inst.head), span(*inst.tail)


def _percentiles(ms: list[float]) -> tuple[float | None, float | None]:
    if not ms:
        return None, None
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def _f1(instances: Sequence[Instance], labels: Sequence[str]) -> tuple[float | None, float | None]:
    if not instances or any(i.relation is None for i in instances):
        return None, None
    m = macro_prf([i.relation for i in instances], list(labels))
    return m["f1"], m["accuracy"]


def _topk_ms(ex: Extractor, reps: int = 50) -> float:
    """Mean time of recall's exact top-k (one query × the whole index), the part that grows with n."""
    q = torch.randn(1, ex.model.recall.dim, device=ex.device)
    k = min(ex.config.k, len(ex.index))
    for _ in range(5):
        ex.index.scores(q).topk(k, dim=1)
    _sync(ex.device)
    t = time.perf_counter()
    for _ in range(reps):
        ex.index.scores(q).topk(k, dim=1)[1].cpu()
    return (time.perf_counter() - t) / reps * 1e3


def _single(ex: Extractor, inst: Instance, rerank: bool, top_k: int | None):
    """One workbench-style call: raw text and character spans through `Extractor.predict`."""
    text, head, tail = instance_text(inst)
    try:
        return ex.predict(text, head, tail, top_k=top_k, rerank=rerank)
    except DataError:  # a token the raw-text splitter cuts differently; same path otherwise
        return ex.predict_tokens(inst.tokens, inst.head, inst.tail, top_k=top_k, rerank=rerank)


def _measure_extractor(ex: Extractor, setting: Setting, rerank: bool, config: BenchConfig) -> dict:
    sentences = setting.instances
    lat = sentences[: config.latency_sentences]
    for _ in range(config.warmup):
        ex.predict_batch(sentences[: ex.batch_size], top_k=ex.config.k, rerank=rerank)
        for inst in lat:
            _single(ex, inst, rerank, config.latency_top_k)
    with PeakMemory(ex.device) as mem:
        preds, seconds = _timed(ex.device, ex.predict_batch, sentences, top_k=ex.config.k, rerank=rerank)
        times, stages = [], []
        for inst in lat:
            p, s = _timed(ex.device, _single, ex, inst, rerank, config.latency_top_k)
            times.append(s * 1e3)
            stages.append(p.timings_ms)
    p50, p95 = _percentiles(times)
    f1, acc = _f1(sentences, [p.label if rerank else p.recall_label for p in preds])
    stage_p50 = {key: float(np.median([s[key] for s in stages])) for key in (stages[0] if stages else {})}
    return {
        "sentences_per_s": len(sentences) / seconds,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_n": len(times),
        "stage_p50_ms": stage_p50,
        "f1": f1,
        "accuracy": acc,
        "peak_memory_mb": mem.mb,
        "n_sentences": len(sentences),
        "estimated": False,
        "reranked": all(p.reranked for p in preds) if rerank else False,
    }


def _measure_all_pairs(ex: Extractor, setting: Setting, config: BenchConfig) -> dict:
    scorer = AllPairs(ex, config.all_pairs_score)
    n = len(ex.index)
    sentences = setting.instances
    sample = sentences[: max(1, config.all_pairs_budget // n)]
    estimated = len(sample) < len(sentences)
    for _ in range(config.warmup):  # a few sentences: n pairs each already span the shapes at hand
        for inst in sample[:3]:
            scorer.predict([inst])
    with PeakMemory(ex.device) as mem:
        if n >= scorer.pair_batch:
            # One sentence already fills whole batches, so the batched run is a series of single-sentence
            # runs: time each, and the same calls give the latency.
            labels, times = [], []
            for inst in sample:
                out, s = _timed(ex.device, scorer.predict, [inst])
                labels += out
                times.append(s * 1e3)
            seconds = sum(times) / 1e3
        else:
            labels, seconds = _timed(ex.device, scorer.predict, sample)
            times = []
            for inst in sentences[: config.latency_sentences]:
                _, s = _timed(ex.device, scorer.predict, [inst])
                times.append(s * 1e3)
    p50, p95 = _percentiles(times)
    f1, acc = _f1(sample, labels) if not estimated else (None, None)
    return {
        "sentences_per_s": len(sample) / seconds,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_n": len(times),
        "f1": f1,
        "accuracy": acc,
        "peak_memory_mb": mem.mb,
        "n_sentences": len(sample),
        "estimated": estimated,
        "pairs": len(sample) * n,
        "all_pairs_score": config.all_pairs_score,
    }


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on (no host names)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_benchmark(
    extractor: Extractor, instances: Sequence[Instance], descriptions: dict[str, str],
    config: BenchConfig | None = None, pool: Sequence[str] = (), progress: bool = False,
) -> dict:
    """Measure every method at every relation-set size; returns the report (see `bench`'s help).

    The extractor's relation set is replaced. Timed runs follow untimed warm-up calls.
    """
    config = config or BenchConfig()
    ex = extractor
    ex.batch_size = config.batch_size
    k = ex.config.k
    started = time.perf_counter()
    settings = relation_sets(instances, descriptions, config.relations, config.limit, pool, config.seed)
    if not any(s.instances for s in settings):
        raise DataError("no sentences to benchmark")
    # Warm-up: first calls create kernels and caches that a long-running workbench has already made.
    first = next(s for s in settings if s.instances)
    ex.set_relations(dict(list(first.relations.items())[: max(k, 16)]))
    for _ in range(max(1, config.warmup)):
        ex.predict_batch(first.instances[: ex.batch_size], top_k=k)
    results = []
    for setting in settings:
        if not setting.instances:
            logger.warning("n=%d: no sentence has its gold relation in the set; skipped", setting.n)
            continue
        _, build_s = _timed(ex.device, ex.set_relations, setting.relations, progress=progress)
        _, tokenize_s = _timed(ex.device, encode_descriptions, ex.tokenizer, list(setting.relations.values()), ex.config.max_description_length)
        topk_ms = _topk_ms(ex)
        common = {"n_relations": setting.n, "n_synthetic": setting.n_synthetic, "labelled": setting.labelled}
        for method in config.methods:
            logger.info("n=%d: %s on %d sentences", setting.n, method, len(setting.instances))
            if method == "all_pairs":
                if ex.model.classifier is None:
                    logger.warning("all_pairs skipped: the checkpoint has no classifier")
                    continue
                row = _measure_all_pairs(ex, setting, config)
                row["index_build_s"] = tokenize_s  # the baseline only tokenizes the catalogue
            else:
                row = _measure_extractor(ex, setting, method == "emma", config)
                row["index_build_s"] = build_s
                row["topk_ms"] = topk_ms
            results.append({"method": method, **common, **row})
    report = {
        "results": results,
        "headline": headline(results, k),
        "machine": machine_info(ex.device),
        "threads": torch.get_num_threads(),
        "device": str(ex.device),
        "k": k,
        "precision": ex.precision,
        "config": asdict(config),
        "wall_s": time.perf_counter() - started,
    }
    return report


def headline(results: list[dict], k: int) -> list[dict]:
    """EMMA vs all-pairs throughput at each n, against the ideal n / (1 + k)."""
    by = {(r["method"], r["n_relations"]): r for r in results}
    out = []
    for (method, n), r in sorted(by.items(), key=lambda x: x[0][1]):
        ap = by.get(("all_pairs", n))
        if method != "emma" or ap is None:
            continue
        ratio = r["sentences_per_s"] / ap["sentences_per_s"]
        ideal = n / (1 + k)
        out.append({"n_relations": n, "speedup": ratio, "ideal": ideal, "fraction_of_ideal": ratio / ideal,
                    "all_pairs_estimated": ap["estimated"]})
    return out


# --------------------------------------------------------------------------- reporting


def _fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def format_table(report: dict) -> str:
    """A markdown table of the results plus the headline ratios."""
    lines = [
        f"device {report['device']}, {report['threads']} thread(s), precision {report['precision']}, k = {report['k']}",
        "",
        "| n relations | method | sentences/s | latency p50 ms | latency p95 ms | macro F1 | peak memory MB | index build s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        sps = _fmt(r["sentences_per_s"], ".1f" if r["sentences_per_s"] >= 1 else ".3f") + (" *" if r.get("estimated") else "")
        lines.append(
            f"| {r['n_relations']} | {r['method']} | {sps} | {_fmt(r['latency_p50_ms'], '.1f')} | "
            f"{_fmt(r['latency_p95_ms'], '.1f')} | {_fmt(r['f1'], '.2f')} | {_fmt(r['peak_memory_mb'], '.0f')} | "
            f"{_fmt(r['index_build_s'], '.2f')} |"
        )
    if any(r.get("estimated") for r in report["results"]):
        lines += ["", "\\* all-pairs estimated from a sample of the sentences (F1 not reported)."]
    if report["headline"]:
        lines += ["", "| n relations | EMMA / all-pairs throughput | ideal n/(1+k) | fraction of ideal |", "|---:|---:|---:|---:|"]
        for h in report["headline"]:
            lines.append(f"| {h['n_relations']} | {h['speedup']:.1f}× | {h['ideal']:.1f}× | {h['fraction_of_ideal']:.2f} |")
    return "\n".join(lines)


LABELS = {"emma": "EMMA (recall + rerank)", "recall_only": "recall only", "all_pairs": "all-pairs cross-encoder"}
COLORS = {"emma": "#1f77b4", "recall_only": "#2ca02c", "all_pairs": "#d62728"}


def figure(report: dict):
    """Figure-3 style: per-sentence runtime bars (log scale) and macro-F1 lines, against n relations."""
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    sizes = sorted({r["n_relations"] for r in report["results"]})
    x = [str(n) for n in sizes]
    for method in METHODS:
        rows = {r["n_relations"]: r for r in report["results"] if r["method"] == method}
        if not rows:
            continue
        ms = [1e3 / rows[n]["sentences_per_s"] if n in rows else None for n in sizes]
        text = ["est." if n in rows and rows[n].get("estimated") else "" for n in sizes]
        fig.add_trace({"type": "bar", "x": x, "y": ms, "name": f"{LABELS[method]}: ms / sentence", "text": text,
                       "textposition": "outside", "marker_color": COLORS[method], "opacity": 0.75}, secondary_y=False)
        f1 = [rows[n]["f1"] if n in rows else None for n in sizes]
        if any(v is not None for v in f1):
            fig.add_trace({"type": "scatter", "mode": "lines+markers", "x": x, "y": f1, "name": f"{LABELS[method]}: macro F1",
                           "line": {"color": COLORS[method], "dash": "dot" if method == "all_pairs" else "solid"},
                           "connectgaps": False}, secondary_y=True)
    x_ = lambda v: f"{v:.1f}×" if v < 10 else f"{v:.0f}×"  # noqa: E731
    heads = ", ".join(f"n={h['n_relations']}: {x_(h['speedup'])} (ideal {x_(h['ideal'])})" for h in report["headline"])
    fig.update_layout(
        title={"text": f"EMMA vs all-pairs — {report['device']}, {report['threads']} thread(s), {report['precision']}, k={report['k']}"
               + (f"<br><sup>throughput ratio {heads}</sup>" if heads else ""), "font": {"size": 14}},
        barmode="group", xaxis_title="relations (n)", legend={"orientation": "h", "y": -0.2}, template="plotly_white",
        width=1000, height=560,
    )
    fig.update_yaxes(title_text="runtime per sentence, batched (ms, log)", type="log", secondary_y=False)
    fig.update_yaxes(title_text="macro F1 (%)", range=[0, 105], tickmode="linear", tick0=0, dtick=20, showgrid=False, secondary_y=True)
    return fig


def write_plot(report: dict, path: str | Path) -> Path:
    """Write the figure: PNG for a ``.png`` path (kaleido), else self-contained HTML.

    A PNG needs kaleido and a local Chrome/Chromium; when that fails the figure goes to the same
    name with ``.html`` and a warning says why. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("kaleido", "choreographer"):  # they log every browser step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    fig = figure(report)
    if path.suffix.lower() == ".png":
        try:
            fig.write_image(str(path))
            return path
        except Exception as e:  # kaleido raises several types when no browser can render offline
            path = path.with_suffix(".html")
            logger.warning("PNG not written (%s: %s); writing %s instead", type(e).__name__, (str(e).splitlines() or [""])[0], path)
    fig.write_html(str(path), include_plotlyjs=True)
    return path


# --------------------------------------------------------------------------- command line


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated integers, e.g. 5,15,80") from None
    if not sizes or any(n < 1 for n in sizes):
        raise click.BadParameter(f"{text!r}: give positive sizes, e.g. 5,15,80")
    return sizes


def _parse_methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise click.BadParameter(f"{text!r}: choose from {','.join(METHODS)}")
    return methods


@click.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint folder (default: the shipped one).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(), help="Sentences (FewRel or any readable format); repeat for several files.")
@click.option("--descriptions", required=True, type=click.Path(), help="Relation descriptions file.")
@click.option("--pool", type=click.Path(), help="Descriptions file whose relation ids fill sizes beyond the labelled relations first (e.g. the FewRel 80).")
@click.option("--relations", default=",".join(map(str, DEFAULT_RELATIONS)), show_default=True, help="Relation-set sizes, comma-separated.")
@click.option("--limit", type=int, default=BenchConfig.limit, show_default=True, help="Sentences per size.")
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Methods, comma-separated.")
@click.option("--latency-sentences", type=int, default=BenchConfig.latency_sentences, show_default=True, help="Single-sentence calls timed per method and size.")
@click.option("--all-pairs-budget", type=int, default=BenchConfig.all_pairs_budget, show_default=True, help="Cross-encoder pairs per size for all-pairs; beyond it sentences are sampled (flagged).")
@click.option("--all-pairs-score", type=click.Choice(ALL_PAIRS_SCORES), default="reference", show_default=True, help="How the all-pairs baseline turns k-slot logits into one score per relation.")
@click.option("--threads", type=int, help="torch intra-op threads (default: torch's).")
@click.option("--device", help="cpu or cuda (default: CUDA when present).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=BenchConfig.batch_size, show_default=True, help="Sentences per batch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", type=click.Path(), help="Write the JSON report here.")
@click.option("--plot", multiple=True, type=click.Path(), help="Write the figure here: .html, or .png (kaleido); repeat for both.")
def bench(checkpoint, data, descriptions, pool, relations, limit, methods, latency_sentences, all_pairs_budget,
          all_pairs_score, threads, device, precision, batch_size, seed, output, plot) -> None:
    """Measure EMMA, recall only and the all-pairs cross-encoder side by side.

    For each relation-set size: throughput (sentences/s, batched), single-sentence latency p50/p95
    (Extractor.predict, the workbench's call), index build time, peak memory and macro F1. Prints a
    markdown table; --output writes JSON with "results" (one row per method and size) and the
    machine, threads, device, k and precision; --plot draws runtime bars and F1 lines.

    Example:

        python -m emma bench --checkpoint checkpoints/emma-minilm --data ../shared/data/fewrel/val_wiki.json \\
            --descriptions ../shared/data/fewrel/pid2name.json \\
            --pool ../shared/data/fewrel/relation_description/fewrel_relation_description.json \\
            --output results/bench_cpu.json --plot results/bench_cpu.html --plot results/bench_cpu.png
    """
    try:
        config = BenchConfig(
            relations=_parse_sizes(relations), limit=limit, methods=_parse_methods(methods),
            latency_sentences=latency_sentences, all_pairs_budget=all_pairs_budget,
            all_pairs_score=all_pairs_score, batch_size=batch_size, seed=seed,
        )
        if threads is not None:
            if threads < 1:
                raise ValueError(f"--threads {threads}: give 1 or more")
            torch.set_num_threads(threads)
        instances = []
        for path in data:
            instances.extend(read_instances(path))
        descs = read_descriptions(descriptions)
        pool_ids = list(read_descriptions(pool)) if pool else []
        ex = Extractor.load(checkpoint, device=device, precision=precision)
        report = run_benchmark(ex, instances, descs, config, pool=pool_ids)
    except (DataError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    report["checkpoint"] = checkpoint or "default"
    report["data"] = list(data)
    report["descriptions"] = descriptions
    report["pool"] = pool
    click.echo(format_table(report))
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=2) + "\n")
    for path in plot:
        click.echo(f"wrote {write_plot(report, path)}", err=True)
