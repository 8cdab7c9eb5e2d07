"""The benchmark (research.bench): relation sets and sentences, the all-pairs baseline's scoring, the command end to end.

Nothing here asserts a timing: benchmarks are measured, not tested.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from emma.data import write_jsonl
from emma.features import collate_pairs, encode_instances
from emma.model import RerankClassifier
from research.bench.all_pairs import AllPairs, reference_scores
from research.bench.measure import BenchConfig, headline, torch_threads
from research.bench.sets import relation_sets, synthetic_descriptions
from research.cli import cli

ROW_KEYS = {"method", "n_relations", "sentences_per_s", "latency_p50_ms", "latency_p95_ms", "f1", "peak_memory_mb", "index_build_s"}
REPORT_KEYS = {"results", "machine", "threads", "device", "k", "precision", "headline"}


def first_feature(k: int, d: int):
    """A stand-in concat head whose logit for each slot is that slot's first feature."""
    return lambda x: x.view(-1, k, d)[..., 0]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_reference_score_ranks_like_a_monotone_head(k, n):
    torch.manual_seed(n * 10 + k)
    states = torch.randn(n, 4)
    scores = reference_scores(first_feature(k, 4), states, k)
    assert scores.shape == (n,)
    assert int(scores.argmax()) == int(states[:, 0].argmax())
    assert torch.equal(scores.argsort(), states[:, 0].argsort()), "the reference score ranks every relation"


def test_reference_score_cancels_slot_bias():
    """A head that always prefers slot 0 must not favour any relation."""
    k, d = 2, 3
    states = torch.randn(5, d)
    biased = lambda x: first_feature(k, d)(x) + torch.tensor([5.0, 0.0])  # noqa: E731
    assert torch.allclose(reference_scores(biased, states, k), reference_scores(first_feature(k, d), states, k), atol=1e-5)


def with_head(extractor, **changes):
    """A copy of `extractor` whose classifier has another head (same encoder, fresh MLP)."""
    ex = copy.copy(extractor)
    ex.model = copy.deepcopy(extractor.model)
    config = dataclasses.replace(ex.model.config, **changes)
    ex.model.classifier = RerankClassifier(config, ex.model.classifier.encoder).eval()
    return ex


@pytest.mark.parametrize("head", ["shared", "concat"])
def test_all_pairs_states_are_what_the_classifier_reads(tiny_extractor, toy_instances, head):
    """Pair states through AllPairs equal the classifier's own: its head on them gives its logits."""
    ex = with_head(tiny_extractor, classifier_head=head)
    clf = ex.model.classifier
    scorer = AllPairs(ex)
    enc = encode_instances(ex.tokenizer, toy_instances[:1], ex.config.max_length)
    firsts, seconds = [enc.ids[0]] * 2, [list(row.token_ids) for row in ex.index.rows[:2]]
    states = scorer.pair_states(firsts, seconds)  # (2, F)
    with torch.inference_mode():
        logits = clf(**collate_pairs(ex.tokenizer, firsts, seconds))  # (1, 2)
        assert torch.allclose(clf.logits(states), logits, atol=1e-5)
        alone = torch.cat([scorer.pair_states([f], [s]) for f, s in zip(firsts, seconds)])
    assert torch.allclose(states, alone, atol=1e-5), "batching pairs must not change their states"


@pytest.mark.parametrize("head", ["shared", "concat"])
def test_all_pairs_predicts_a_relation_of_the_set_in_any_grouping(tiny_extractor, toy_instances, head):
    ex = with_head(tiny_extractor, classifier_head=head)
    labels = AllPairs(ex, max_pairs=10).predict(toy_instances)  # groups of 2 sentences
    assert len(labels) == len(toy_instances)
    assert set(labels) <= set(ex.relations)
    assert labels == AllPairs(ex).predict(toy_instances)


def test_all_pairs_reference_ignores_relation_order(tiny_extractor, toy_instances, toy_descriptions):
    ex = with_head(tiny_extractor, classifier_head="concat", classifier_features="cls")
    forward = AllPairs(ex).predict(toy_instances)
    ex.set_relations(dict(reversed(list(toy_descriptions.items()))))
    assert AllPairs(ex).predict(toy_instances) == forward


def test_all_pairs_with_a_shared_head_scores_every_pair_exactly(tiny_extractor, toy_instances):
    """A per-pair scorer needs no comparator: all-pairs picks the relation whose pair scores highest."""
    ex = with_head(tiny_extractor, classifier_head="shared", classifier_features="cls_entities")
    labels = AllPairs(ex).predict(toy_instances[:3])
    enc = encode_instances(ex.tokenizer, toy_instances[:3], ex.config.max_length)
    descriptions = [list(row.token_ids) for row in ex.index.rows]
    with torch.inference_mode():
        for i, label in enumerate(labels):
            pairs = collate_pairs(ex.tokenizer, [enc.ids[i]] * len(descriptions), descriptions)
            scores = ex.model.classifier.mlp(ex.model.classifier.pair_features(**pairs)).squeeze(-1)
            assert label == ex.index.names[int(scores.argmax())]


def test_synthetic_descriptions_are_distinct_and_seeded(toy_descriptions):
    made = synthetic_descriptions(toy_descriptions, 30, seed=3)
    assert len(made) == 30 and list(made)[0] == "synthetic-00000"
    assert len(set(made.values())) == 30
    assert not set(made.values()) & set(toy_descriptions.values())
    assert made == synthetic_descriptions(toy_descriptions, 30, seed=3)
    assert synthetic_descriptions(toy_descriptions, 0) == {}


def test_relation_sets_keep_gold_relations_among_the_candidates(toy_instances, toy_descriptions):
    descriptions = {**toy_descriptions, "spouse": "spouse: the subject has the object as husband or wife",
                    "sibling": "sibling: the subject and the object have a parent in common"}
    small, full, big = relation_sets(toy_instances, descriptions, (2, 5, 12), limit=6, pool=["sibling"], seed=0)
    assert len(small.relations) == 2 and small.n_synthetic == 0
    assert small.relations.keys() <= toy_descriptions.keys()
    assert all(i.relation in small.relations for i in small.instances) and len(small.instances) == 6
    assert list(full.relations)[:4] == list(big.relations)[:4] and set(list(full.relations)[:4]) == set(toy_descriptions)
    assert list(full.relations)[4] == "sibling", "the pool fills before other descriptions"
    assert big.n_synthetic == 6 and len(big.relations) == 12
    assert all(s.labelled for s in (small, full, big))
    assert {i.relation for i in big.instances} == set(toy_descriptions), "sampling stays balanced over relations"


def test_headline_compares_with_the_ideal_ratio():
    rows = [{"method": "emma", "n_relations": 15, "sentences_per_s": 40.0},
            {"method": "all_pairs", "n_relations": 15, "sentences_per_s": 10.0, "estimated": False},
            {"method": "recall_only", "n_relations": 15, "sentences_per_s": 90.0}]
    (h,) = headline(rows, k=2)
    assert h["speedup"] == 4.0 and h["ideal"] == 5.0 and h["fraction_of_ideal"] == pytest.approx(0.8)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="choose from"):
        BenchConfig(methods=("emma", "brute"))
    with pytest.raises(ValueError, match="positive"):
        BenchConfig(relations=(0,))
    with pytest.raises(ValueError, match="limit=0"):
        BenchConfig(limit=0)


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads=0"):
        with torch_threads(0):
            pass


def run_bench(checkpoint, tmp_path, instances, descriptions, *flags):
    """`python -m research bench` on the toy sentences and descriptions (written to `tmp_path`) with `flags`."""
    data, descs = tmp_path / "toy.jsonl", tmp_path / "descriptions.json"
    write_jsonl(instances, data)
    descs.write_text(json.dumps(descriptions))
    return CliRunner().invoke(cli, ["bench", "--checkpoint", checkpoint, "--data", str(data), "--descriptions", str(descs), *flags])


def test_bench_end_to_end_on_the_tiny_checkpoint(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.html"
    threads = torch.get_num_threads()
    result = run_bench(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions, "--relations", "3,20",
                       "--limit", "8", "--latency-sentences", "3", "--threads", "1", "--device", "cpu",
                       "--output", str(out), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads, "--threads holds while measuring only"
    assert "| n relations | method |" in result.output
    report = json.loads(out.read_text())
    assert REPORT_KEYS <= set(report)
    assert report["threads"] == 1 and report["device"] == "cpu" and report["k"] == 2
    assert {(r["method"], r["n_relations"]) for r in report["results"]} == {
        (m, n) for m in ("emma", "recall_only", "all_pairs") for n in (3, 20)}
    for row in report["results"]:
        assert ROW_KEYS <= set(row), row
        assert row["sentences_per_s"] > 0 and row["peak_memory_mb"] > 0 and row["index_build_s"] >= 0
        assert row["latency_p50_ms"] <= row["latency_p95_ms"]
        assert row["f1"] is not None and 0 <= row["f1"] <= 100
        assert row["n_sentences"] == 8
    assert [h["n_relations"] for h in report["headline"]] == [3, 20]
    assert plot.is_file() and "<html>" in plot.read_text()[:200].lower()


def test_bench_samples_all_pairs_beyond_its_budget(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions):
    out = tmp_path / "bench.json"
    result = run_bench(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions, "--relations", "20",
                       "--limit", "8", "--latency-sentences", "2", "--all-pairs-budget", "50", "--methods", "emma,all_pairs",
                       "--output", str(out))
    assert result.exit_code == 0, result.output
    emma, all_pairs = json.loads(out.read_text())["results"]
    assert emma["method"] == "emma" and not emma["estimated"] and emma["f1"] is not None
    assert all_pairs["estimated"] and all_pairs["n_sentences"] == 2 and all_pairs["f1"] is None
    assert "estimated from a sample" in result.output


def test_bench_compares_precisions_side_by_side(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions):
    """fp32 and int8 interleaved over two rounds: medians per precision, per-round ratios to fp32, the CPU path printed."""
    out = tmp_path / "bench.json"
    result = run_bench(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions, "--relations", "4",
                       "--limit", "6", "--latency-sentences", "2", "--methods", "emma,recall_only", "--device", "cpu",
                       "--precision", "fp32,int8", "--repeats", "2", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "torch uses ISA" in result.output and "native bf16" in result.output and "int8 kernels" in result.output
    report = json.loads(out.read_text())
    assert report["precision"] == "fp32,int8" and report["asked"] == ["fp32", "int8"] and report["repeats"] == 2
    assert {(r["precision"], r["method"]) for r in report["results"]} == {(p, m) for p in ("fp32", "int8") for m in ("emma", "recall_only")}
    assert all(r["rounds"] == 2 for r in report["results"]) and len(report["rounds"]) == 8
    assert {(c["precision"], c["reference"], c["method"]) for c in report["comparison"]} == {("int8", "fp32", "emma"), ("int8", "fp32", "recall_only")}
    for c in report["comparison"]:
        assert c["rounds"] == 2 and len(c["latency_p50_ratios"]) == 2 and c["throughput_ratio"] > 0 and c["f1_difference"] is not None
    assert set(report["machine"]["torch_cpu"]) == {"isa", "bf16", "bf16_faster", "int8", "quantized_engine"}
    assert ("faster than fp32" in result.output) == report["machine"]["torch_cpu"]["bf16"]
    assert "int8 vs fp32" in result.output


@pytest.mark.parametrize("flags, message", [
    (["--relations", "5,x"], "comma-separated integers"),
    (["--methods", "emma,brute"], "choose from"),
    (["--limit", "0"], "limit=0"),
    (["--threads", "0"], "threads=0"),
    (["--precision", "fp8"], "'fp8': choose from auto,fp32,bf16,fp16,int8"),
    (["--precision", "int8", "--device", "meta"], "int8' runs on the CPU only"),
    (["--repeats", "0"], "--repeats"),
])
def test_bench_bad_flags_fail_in_one_line(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions, flags, message):
    result = run_bench(tiny_checkpoint, tmp_path, toy_instances, toy_descriptions, *flags)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_bench_on_fewrel(shared_data, tiny_checkpoint, tmp_path):
    """The real data layout: FewRel val sentences, pid2name descriptions, the FewRel 80 as pool."""
    fewrel = shared_data / "fewrel"
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, [
        "bench", "--checkpoint", tiny_checkpoint, "--data", str(fewrel / "val_wiki.json"),
        "--descriptions", str(fewrel / "pid2name.json"),
        "--pool", str(fewrel / "relation_description" / "fewrel_relation_description.json"),
        "--relations", "3,20", "--limit", "8", "--latency-sentences", "2", "--output", str(out),
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert all(r["f1"] is not None for r in rows)
    assert {r["n_synthetic"] for r in rows} == {0}
