"""Measuring EMMA, recall only and the all-pairs baseline at each relation-set size.

Per method and size: throughput (sentences/s, batched), single-sentence latency p50/p95 through
`Extractor.predict` on raw text (the workbench's call), index build time, peak memory and macro F1.
Each timed run follows an untimed one, so kernels and caches exist as in a long-running workbench.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from emma import DataError, Extractor, Instance, macro_prf
from emma.precision import cpu_capabilities

from .all_pairs import AllPairs
from .memory import PeakMemory
from .sets import Setting, relation_sets

logger = logging.getLogger(__name__)

METHODS = ("emma", "recall_only", "all_pairs")
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
        batch_size: sentences per encoder batch (the all-pairs baseline makes classifier calls of the
            same size as EMMA's rerank).
        seed: sentence sampling, relation choice and synthetic descriptions.
    """

    relations: tuple[int, ...] = DEFAULT_RELATIONS
    limit: int = 240
    methods: tuple[str, ...] = METHODS
    latency_sentences: int = 30
    all_pairs_budget: int = 20000
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        self.relations = tuple(int(n) for n in self.relations)
        self.methods = tuple(self.methods)
        if not self.relations or any(n < 1 for n in self.relations):
            raise ValueError(f"relations={self.relations}: give positive sizes, e.g. 5,15,80")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods={list(self.methods)}; choose from {list(METHODS)}")
        for name in ("limit", "latency_sentences", "all_pairs_budget", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` inside the block (None: unchanged), restored after."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads}: give 1 or more")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_benchmark(
    extractor: Extractor, instances: Sequence[Instance], descriptions: dict[str, str],
    config: BenchConfig | None = None, pool: Sequence[str] = (), progress: bool = False,
) -> dict:
    """Measure every method at every relation-set size.

    The extractor's relation set and batch size are replaced.

    Returns:
        {"results": one row per method and size, "headline": EMMA vs all-pairs throughput against
        the ideal n/(1+k), "machine", "threads", "device", "k", "precision", "config", "wall_s"}.

    Example:
        >>> report = run_benchmark(extractor, instances, descriptions, BenchConfig(relations=(5, 15), limit=50))
        >>> report["results"][0]["sentences_per_s"]
    """
    config = config or BenchConfig()
    ex = extractor
    ex.batch_size = config.batch_size
    started = time.perf_counter()
    settings = relation_sets(instances, descriptions, config.relations, config.limit, pool, config.seed)
    if not any(s.instances for s in settings):
        raise DataError("no sentences to benchmark")
    # Warm-up: first calls create kernels and caches that a long-running workbench has already made.
    first = next(s for s in settings if s.instances)
    ex.set_relations(dict(list(first.relations.items())[: max(ex.config.k, 16)]))
    ex.predict_batch(first.instances[: ex.batch_size], top_k=ex.config.k)
    results = []
    for setting in settings:
        if not setting.instances:
            logger.warning("n=%d: no sentence has its gold relation in the set; skipped", setting.n)
            continue
        results += _measure_setting(ex, setting, config, progress)
    return {
        "results": results,
        "headline": headline(results, ex.config.k),
        "machine": machine_info(ex.device),
        "threads": torch.get_num_threads(),
        "device": str(ex.device),
        "k": ex.config.k,
        "precision": ex.precision,
        "config": asdict(config),
        "wall_s": time.perf_counter() - started,
    }


def _measure_setting(ex: Extractor, setting: Setting, config: BenchConfig, progress: bool) -> list[dict]:
    """One row per method for one relation-set size."""
    _, build_s = _timed(ex.device, ex.set_relations, setting.relations, progress=progress)
    texts = list(setting.relations.values())
    _, tokenize_s = _timed(ex.device, ex.tokenizer, texts, add_special_tokens=False)  # all the baseline builds
    topk_ms = _topk_ms(ex)
    common = {"n_relations": setting.n, "n_synthetic": setting.n_synthetic, "labelled": setting.labelled}
    rows = []
    for method in config.methods:
        logger.info("n=%d: %s on %d sentences", setting.n, method, len(setting.instances))
        if method != "all_pairs":
            row = {**_measure_extractor(ex, setting, method == "emma", config), "index_build_s": build_s, "topk_ms": topk_ms}
        elif ex.model.classifier is None:
            logger.warning("all_pairs skipped: the checkpoint has no classifier")
            continue
        else:
            row = {**_measure_all_pairs(ex, setting, config), "index_build_s": tokenize_s}
        rows.append({"method": method, **common, **row})
    return rows


def compare_precisions(
    extractors: dict[str, Extractor], instances: Sequence[Instance], descriptions: dict[str, str],
    config: BenchConfig | None = None, pool: Sequence[str] = (), repeats: int = 1, progress: bool = False,
) -> dict:
    """`run_benchmark` for each extractor in turn, `repeats` rounds interleaved; medians, and ratios to the first.

    On a machine shared with other work absolute timings drift; runs interleaved in one process see
    the same drift, so the per-round ratio to the first extractor (e.g. fp32) is the figure to read.

    Args:
        extractors: {precision as asked (e.g. "fp32", "auto"): extractor}; the first is the reference.

    Returns:
        `run_benchmark`'s report, whose rows (and headline) carry "precision" and hold medians over
        the rounds, plus "comparison" (per method, size and other precision: median ratio of latency
        p50 and throughput to the reference, F1 difference), "rounds" (every run's rows) and "repeats".

    Example:
        >>> compare_precisions({"fp32": fp32, "int8": int8}, instances, descriptions, BenchConfig(relations=(100,)), repeats=3)
    """
    if not extractors or repeats < 1:
        raise ValueError(f"give at least one extractor and repeats >= 1 (got {len(extractors)}, {repeats})")
    started = time.perf_counter()
    rounds: list[list[dict]] = []
    reports = {}
    for r in range(repeats):
        for asked, ex in extractors.items():
            logger.info("round %d/%d: precision %s (%s)", r + 1, repeats, asked, ex.precision)
            reports[asked] = run_benchmark(ex, instances, descriptions, config, pool, progress)
            rounds.append([{**row, "precision": ex.precision, "asked": asked, "round": r} for row in reports[asked]["results"]])
    flat = [row for rows in rounds for row in rows]
    results = _medians(flat)
    first = next(iter(extractors.values()))
    return {**reports[next(iter(extractors))], "results": results,
            "headline": [{**h, "precision": p} for p in dict.fromkeys(r["precision"] for r in results)
                         for h in headline([r for r in results if r["precision"] == p], first.config.k)],
            "precision": ",".join(dict.fromkeys(ex.precision for ex in extractors.values())),
            "asked": list(extractors), "comparison": _ratios(flat, first.precision), "rounds": flat, "repeats": repeats,
            "wall_s": time.perf_counter() - started}


MEDIAN_KEYS = ("sentences_per_s", "latency_p50_ms", "latency_p95_ms", "peak_memory_mb", "index_build_s", "topk_ms", "f1", "accuracy")


def _medians(rows: list[dict]) -> list[dict]:
    """One row per (precision, method, size): the first round's row with timings replaced by medians over rounds."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["precision"], row["method"], row["n_relations"]), []).append(row)
    out = []
    for group in groups.values():
        merged = {key: value for key, value in group[0].items() if key != "round"}
        for key in MEDIAN_KEYS:
            values = [g[key] for g in group if g.get(key) is not None]
            merged[key] = float(np.median(values)) if values else group[0].get(key)
        out.append({**merged, "rounds": len(group)})
    return out


def _ratios(rows: list[dict], reference: str) -> list[dict]:
    """Per round, each other precision's latency p50 and throughput over the reference's; medians over rounds."""
    by = {(r["precision"], r["method"], r["n_relations"], r["round"]): r for r in rows}
    pairs: dict[tuple, list[tuple[dict, dict]]] = {}
    for (p, method, n, rnd), row in by.items():
        ref = by.get((reference, method, n, rnd))
        if p != reference and ref is not None:
            pairs.setdefault((p, method, n), []).append((row, ref))
    out = []
    for (p, method, n), group in pairs.items():
        lat = [a["latency_p50_ms"] / b["latency_p50_ms"] for a, b in group if a["latency_p50_ms"] and b["latency_p50_ms"]]
        f1 = [a["f1"] - b["f1"] for a, b in group if a["f1"] is not None and b["f1"] is not None]
        out.append({"precision": p, "reference": reference, "method": method, "n_relations": n, "rounds": len(group),
                    "latency_p50_ratio": float(np.median(lat)) if lat else None,
                    "latency_p50_ratios": lat,
                    "throughput_ratio": float(np.median([a["sentences_per_s"] / b["sentences_per_s"] for a, b in group])),
                    "f1_difference": float(np.median(f1)) if f1 else None})
    return out


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


# CPU flags that decide the fast path, and the variables that lower what torch uses (AVX2 emulation).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on (no host names): the CPU, its flags, what torch uses of them."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(terse=True),
            "python": platform.python_version(), "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_flags": [f for f in CPU_FLAGS if f in flags], "torch_cpu": cpu_capabilities(),
            "isa_limits": {v: os.environ[v] for v in ISA_VARIABLES[:3] if v in os.environ}}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable, *args, **kwargs):
    _sync(device)
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(device)
    return out, time.perf_counter() - t


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
    """Mean time of recall's exact top-k (one query's cosines with the index's (N, 3d) unit rows, then top-k):
    the part that grows with n."""
    q = F.normalize(torch.randn(1, ex.model.recall.dim, device=ex.device), dim=-1)  # (1, 3d)
    k = min(ex.config.k, len(ex.index))
    for _ in range(5):
        (q @ ex.index.vectors.T).topk(k, dim=1)  # (1, N) → (1, k)
    _sync(ex.device)
    t = time.perf_counter()
    for _ in range(reps):
        (q @ ex.index.vectors.T).topk(k, dim=1)[1].cpu()
    return (time.perf_counter() - t) / reps * 1e3


def _single(ex: Extractor, inst: Instance, rerank: bool):
    """One workbench-style call: raw text and character spans through `Extractor.predict`, every recall score."""
    text, head, tail = inst.as_text()
    try:
        return ex.predict(text, head, tail, rerank=rerank)
    except DataError:  # a token the raw-text splitter cuts differently; same path otherwise
        return ex.predict_tokens(inst.tokens, inst.head, inst.tail, rerank=rerank)


def _measure_extractor(ex: Extractor, setting: Setting, rerank: bool, config: BenchConfig) -> dict:
    sentences = setting.instances
    lat = sentences[: config.latency_sentences]
    ex.predict_batch(sentences[: ex.batch_size], top_k=ex.config.k, rerank=rerank)  # warm-up
    for inst in lat:
        _single(ex, inst, rerank)
    with PeakMemory(ex.device) as mem:
        preds, seconds = _timed(ex.device, ex.predict_batch, sentences, top_k=ex.config.k, rerank=rerank)
        times, stages = [], []
        for inst in lat:
            p, s = _timed(ex.device, _single, ex, inst, rerank)
            times.append(s * 1e3)
            stages.append(p.timings_ms)
    p50, p95 = _percentiles(times)
    f1, acc = _f1(sentences, [p.label if rerank else p.recall_label for p in preds])
    stage_p50 = {key: float(np.median([s[key] for s in stages])) for key in (stages[0] if stages else {})}
    return {"sentences_per_s": len(sentences) / seconds, "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_n": len(times),
            "stage_p50_ms": stage_p50, "f1": f1, "accuracy": acc, "peak_memory_mb": mem.mb, "n_sentences": len(sentences),
            "estimated": False, "reranked": all(p.reranked for p in preds) if rerank else False}


def _measure_all_pairs(ex: Extractor, setting: Setting, config: BenchConfig) -> dict:
    scorer = AllPairs(ex)
    n = len(ex.index)
    sentences = setting.instances
    sample = sentences[: max(1, config.all_pairs_budget // n)]
    estimated = len(sample) < len(sentences)
    for inst in sample[:3]:  # warm-up: a few sentences' n pairs already span the shapes at hand
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
            times = [_timed(ex.device, scorer.predict, [inst])[1] * 1e3 for inst in sentences[: config.latency_sentences]]
    p50, p95 = _percentiles(times)
    f1, acc = _f1(sample, labels) if not estimated else (None, None)
    return {"sentences_per_s": len(sample) / seconds, "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_n": len(times),
            "f1": f1, "accuracy": acc, "peak_memory_mb": mem.mb, "n_sentences": len(sample), "estimated": estimated,
            "pairs": len(sample) * n}
