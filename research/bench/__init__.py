"""Inference benchmark: EMMA (recall + rerank) against recall only and the all-pairs cross-encoder.

EMMA's efficiency claim (paper section 3.1 and the speed comparison of Figure 3): description
vectors are computed once, so recall costs one encoder pass per sentence plus a matrix product, and
only k pairs go through the cross-encoder. A PromptMatch-style matcher runs the cross-encoder over
every (sentence, relation) pair, n passes per sentence. The ideal speed-up is therefore n / (1 + k);
this package measures the real one, side by side, on one checkpoint, machine and set of sentences.

Modules: `sets` (relation sets of each size, synthetic descriptions), `all_pairs` (the baseline),
`memory` (peak memory), `measure` (`BenchConfig`, `run_benchmark`), `report` (table and figure).

Example:
    >>> from research.bench import BenchConfig, run_benchmark
    >>> report = run_benchmark(extractor, instances, descriptions, BenchConfig(relations=(5, 15), limit=50))
    >>> report["results"][0]["sentences_per_s"]
"""

from .measure import BenchConfig, run_benchmark

__all__ = ["BenchConfig", "run_benchmark"]
