"""The public `Extractor`: relation index, recall, rerank, attention, batching, precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import emma.precision
from emma.data import DataError
from emma.features import collate_instances, encode_instances
from emma.pipeline import Extractor, Prediction, decide, fuse
from emma.precision import autocast, cpu_has_bf16, resolve_precision


def _instance_vectors(ex, instances, precision="fp32"):
    """Reference path: instance vectors straight from the recall encoder, one at a time."""
    out = []
    for inst in instances:
        enc = encode_instances(ex.tokenizer, [inst], ex.config.max_length)
        with torch.no_grad(), autocast(ex.device, precision):
            v = ex.model.recall.encode_instances(**collate_instances(ex.tokenizer, enc.ids))
        out.append(v[0].float())
    return torch.stack(out)


# ----------------------------------------------------------------------------- predictions


def test_prediction_fields(tiny_extractor, toy_instances):
    p = tiny_extractor.predict_tokens(toy_instances[0].tokens, toy_instances[0].head, toy_instances[0].tail)
    assert isinstance(p, Prediction)
    names = list(tiny_extractor.relations)
    assert sorted(r for r, _ in p.recall) == sorted(names)  # all relations by default
    scores = [s for _, s in p.recall]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)
    assert p.candidates == [r for r, _ in p.recall[:2]]  # top-k in recall order
    assert p.recall_label == p.recall[0][0]
    assert p.reranked and p.note == ""
    assert len(p.probabilities) == 2 and sum(p.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert p.decision == tiny_extractor.config.decision == "fused"  # the shipped rule is the default
    cosines = [s for _, s in p.recall[:2]]
    assert p.fused == pytest.approx(fuse(p.probabilities, cosines, tiny_extractor.config.temperature))
    assert p.deciding_scores == p.fused and p.score == pytest.approx(max(p.fused))
    assert p.label == p.candidates[p.fused.index(max(p.fused))] == p.choice("fused")
    assert p.choice("classifier") == p.candidates[p.probabilities.index(max(p.probabilities))]
    assert p.choice("recall") == p.recall_label
    assert set(p.timings_ms) == {"encode", "recall", "rerank"}


def test_the_classifier_share_scales_its_vote_from_none_to_all():
    probs, cos, tau = [0.9, 0.1], [0.50, 0.52], 0.02
    recall_alone = torch.softmax(torch.tensor(cos) / tau, dim=0).tolist()
    assert fuse(probs, cos, tau, 0.0) == pytest.approx(recall_alone)
    product = [p * r for p, r in zip(probs, recall_alone)]
    assert fuse(probs, cos, tau) == pytest.approx([x / sum(product) for x in product])
    assert fuse(probs, cos, tau)[0] > fuse(probs, cos, tau, 0.5)[0] > fuse(probs, cos, tau, 0.0)[0]


def test_attention_weights_sum_to_one_over_description_tokens(tiny_extractor, toy_instances):
    p = tiny_extractor.predict_batch(toy_instances[:1])[0]
    assert set(p.attention) == set(p.candidates)
    for relation, att in p.attention.items():
        expected_tokens = tiny_extractor.tokenizer.tokenize(tiny_extractor.relations[relation])
        assert att["tokens"] == expected_tokens  # word pieces, no [CLS]/[SEP]
        for head in ("head", "tail"):
            assert len(att[head]) == len(att["tokens"])
            assert sum(att[head]) == pytest.approx(1.0, abs=1e-5)
            assert min(att[head]) > 0
    assert tiny_extractor.attention(p.candidates[0]) == p.attention[p.candidates[0]]


def test_top_k_limits_recall_only(tiny_extractor, toy_instances):
    full = tiny_extractor.predict_batch(toy_instances[:3])
    one = tiny_extractor.predict_batch(toy_instances[:3], top_k=1)
    for a, b in zip(full, one):
        assert len(b.recall) == 1 and b.recall[0][0] == a.recall[0][0]
        assert b.candidates == a.candidates and b.reranked  # the classifier still sees k candidates


def test_recall_ranking_equals_brute_force_cosine(tiny_extractor, toy_instances):
    ex = tiny_extractor
    preds = ex.predict_batch(toy_instances)
    desc = torch.stack([r.vector for r in ex.encode_descriptions(list(ex.relations.values()))])  # (N, 3d), unit rows
    torch.testing.assert_close(desc, ex.index.vectors)
    cos = F.cosine_similarity(_instance_vectors(ex, toy_instances)[:, None], desc[None], dim=-1)  # (B, N)
    names = list(ex.relations)
    for p, row in zip(preds, cos):
        order = row.argsort(descending=True).tolist()
        assert [r for r, _ in p.recall] == [names[j] for j in order]
        torch.testing.assert_close(torch.tensor([s for _, s in p.recall]), row[order], atol=1e-5, rtol=1e-5)


def test_batched_equals_single(tiny_extractor, toy_instances):
    ex = tiny_extractor
    ex.batch_size = 5  # several length-sorted batches
    batched = ex.predict_batch(toy_instances)
    for inst, b in zip(toy_instances, batched):
        s = ex.predict_tokens(inst.tokens, inst.head, inst.tail)
        assert s.label == b.label and s.candidates == b.candidates and [r for r, _ in s.recall] == [r for r, _ in b.recall]
        torch.testing.assert_close(torch.tensor([x for _, x in s.recall]), torch.tensor([x for _, x in b.recall]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.tensor(s.probabilities), torch.tensor(b.probabilities), atol=1e-5, rtol=1e-5)


def test_predict_text_equals_predict_tokens(tiny_extractor):
    text = "Apple was founded by Steve Jobs."
    p = tiny_extractor.predict(text, head=(0, 5), tail=(21, 31))
    q = tiny_extractor.predict_tokens(["Apple", "was", "founded", "by", "Steve", "Jobs", "."], (0, 1), (4, 6))
    assert p.label == q.label and p.recall == q.recall and p.probabilities == q.probabilities


def test_rerank_off_and_bad_input(tiny_extractor, toy_instances):
    p = tiny_extractor.predict_batch(toy_instances[:1], rerank=False)[0]
    assert not p.reranked and p.probabilities == [] and p.label == p.recall[0][0] and "rerank off" in p.note
    assert p.score == pytest.approx(p.recall[0][1])
    with pytest.raises(DataError, match="overlap"):
        tiny_extractor.predict("Apple was founded by Steve Jobs.", head=(0, 5), tail=(2, 8))
    with pytest.raises(DataError):
        tiny_extractor.predict_tokens(["a", "b"], (0, 1), (0, 1))
    assert tiny_extractor.predict_batch([]) == []


def test_fewer_relations_than_k_skips_the_classifier(tiny_checkpoint, toy_instances):
    ex = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    ex.set_relations({"founded by": "founded by: founder of this organization"})
    p = ex.predict_batch(toy_instances[:2])
    for q in p:
        assert not q.reranked and q.probabilities == [] and q.label == "founded by"
        assert q.candidates == ["founded by"] and "only 1 relation" in q.note and "k=2" in q.note
        assert set(q.attention) == {"founded by"}


# ----------------------------------------------------------------------------- the relation index


def test_add_relation_equals_rebuilding(tiny_checkpoint, toy_descriptions, toy_instances):
    items = list(toy_descriptions.items())
    incremental = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    incremental.set_relations(dict(items[:2]))
    for name, text in items[2:]:
        incremental.add_relation(name, text)
    rebuilt = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    rebuilt.set_relations(dict(items))
    assert incremental.relations == rebuilt.relations
    torch.testing.assert_close(incremental.index.vectors, rebuilt.index.vectors, atol=1e-5, rtol=1e-5)
    for a, b in zip(incremental.index.rows, rebuilt.index.rows):
        torch.testing.assert_close(torch.tensor(a.head_weights), torch.tensor(b.head_weights), atol=1e-5, rtol=1e-5)
        assert a.tokens == b.tokens and a.token_ids == b.token_ids
    pa, pb = incremental.predict_batch(toy_instances), rebuilt.predict_batch(toy_instances)
    assert [p.label for p in pa] == [p.label for p in pb]


def test_remove_relation(tiny_extractor, toy_instances):
    ex = tiny_extractor
    before = dict(zip(ex.index.names, ex.index.vectors))
    ex.remove_relation("born in")
    assert list(ex.relations) == ["founded by", "capital of", "member of"]
    assert ex.index.vectors.shape[0] == 3 == len(ex.index.rows) == len(ex.index.names)
    for name, row in zip(ex.index.names, ex.index.vectors):
        torch.testing.assert_close(row, before[name])
    for p in ex.predict_batch(toy_instances):
        assert "born in" not in [r for r, _ in p.recall] and p.label != "born in"
    with pytest.raises(ValueError, match="no relation named 'born in'"):
        ex.remove_relation("born in")
    for name in list(ex.relations):
        ex.remove_relation(name)
    assert len(ex.index) == 0 and ex.relations == {}
    with pytest.raises(ValueError, match="no relations to choose from"):
        ex.predict_batch(toy_instances[:1])
    ex.add_relation("born in", "place of birth")  # an emptied index takes new relations
    assert ex.predict_batch(toy_instances[:1])[0].label == "born in"


def test_add_relation_errors_and_replace(tiny_extractor, toy_descriptions):
    ex = tiny_extractor
    with pytest.raises(ValueError, match="a relation named 'born in' already exists"):
        ex.add_relation("born in", "something new")
    with pytest.raises(ValueError, match="relation 'born in' already has this description"):
        ex.add_relation("birthplace", toy_descriptions["born in"])
    with pytest.raises(ValueError, match="'x' needs a description or labelled examples"):
        ex.add_relation("x", "   ")
    with pytest.raises(ValueError, match="name is empty"):
        ex.add_relation("  ", "some description")
    assert ex.relations == toy_descriptions  # failed calls changed nothing
    ex.add_relation("born in", "born in: where a person was born", replace=True)
    assert ex.relations["born in"] == "born in: where a person was born" and len(ex.relations) == 4
    with pytest.raises(ValueError, match="empty"):
        ex.set_relations({"a": "fine", "b": ""})


def test_rejected_replace_leaves_the_index_unchanged(tiny_extractor, toy_descriptions):
    ex = tiny_extractor
    with pytest.raises(ValueError, match="already has this description"):
        ex.add_relation("born in", toy_descriptions["capital of"], replace=True)
    assert ex.relations == toy_descriptions


# ----------------------------------------------------------------------------- precision


def test_resolve_precision():
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    assert resolve_precision("auto", torch.device("cpu"), inference=True) in ("bf16", "int8", "fp32")
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if cuda_bf16 else "fp16")
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision='half'; choose one of"):
        resolve_precision("half", torch.device("cpu"))


@pytest.mark.parametrize("bf16_faster, int8, measured, inference, expected", [
    (True, True, True, True, "bf16"),     # bf16 faster than fp32 here: bf16
    (False, True, True, True, "int8"),    # no bf16, or bf16 slower (AVX512-BF16 on some CPUs): the measured int8 path
    (False, False, True, True, "fp32"),   # no int8 kernels (e.g. a torch without them)
    (False, True, False, True, "fp32"),   # had the measurement not favoured int8
    (False, True, True, False, "fp32"),   # training never gets int8
    (True, True, True, False, "bf16"),
])
def test_auto_picks_per_cpu(monkeypatch, bf16_faster, int8, measured, inference, expected):
    monkeypatch.setattr(emma.precision, "bf16_pays_off", lambda: bf16_faster)
    monkeypatch.setattr(emma.precision, "cpu_has_int8", lambda: int8)
    monkeypatch.setattr(emma.precision, "INT8_WHERE_NO_BF16", measured)
    assert resolve_precision("auto", torch.device("cpu"), inference=inference) == expected


@pytest.mark.parametrize("native, speedup, expected", [(True, 1.6, True), (True, 0.6, False), (True, 1.1, False), (False, 3.0, False)])
def test_bf16_pays_off_only_where_it_is_timed_faster(monkeypatch, native, speedup, expected):
    monkeypatch.setattr(emma.precision, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(emma.precision, "_bf16_speedup", lambda: speedup)
    assert emma.precision.bf16_pays_off() is expected


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_bf16_speedup_is_timed_once_per_process_and_leaves_the_random_state_alone():
    emma.precision._bf16_speedup.cache_clear()
    state = torch.random.get_rng_state()
    first = emma.precision._bf16_speedup()
    assert torch.equal(torch.random.get_rng_state(), state)  # a seeded training run draws the same numbers on every CPU
    assert first > 0 and emma.precision._bf16_speedup() == first  # cached: the choice cannot flip within a process


def test_auto_extractor_where_bf16_does_not_pay_off_runs_int8(monkeypatch, tiny_checkpoint, toy_descriptions, toy_instances):
    monkeypatch.setattr(emma.precision, "bf16_pays_off", lambda: False)
    ex = Extractor.load(tiny_checkpoint, device="cpu")
    assert ex.precision == ("int8" if emma.precision.cpu_has_int8() else "fp32")
    ex.set_relations(toy_descriptions)
    assert all(p.label in toy_descriptions for p in ex.predict_batch(toy_instances))
    monkeypatch.setattr(emma.precision, "bf16_pays_off", lambda: True)
    assert Extractor.load(tiny_checkpoint, device="cpu").precision == "bf16"


def test_cpu_capabilities_name_the_path():
    caps = emma.precision.cpu_capabilities()
    assert set(caps) == {"isa", "bf16", "bf16_faster", "int8", "quantized_engine"}
    assert isinstance(caps["bf16"], bool) and caps["bf16_faster"] == emma.precision.bf16_pays_off()
    assert caps["bf16"] or not caps["bf16_faster"]


def test_load_defaults_to_cpu_here(tiny_checkpoint):
    ex = Extractor.load(tiny_checkpoint)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ex.device.type == expected and ex.checkpoint == tiny_checkpoint


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_bf16_matches_fp32(tiny_checkpoint, toy_descriptions, toy_instances):
    fp32 = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    bf16 = Extractor.load(tiny_checkpoint, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    for ex in (fp32, bf16):
        ex.set_relations(toy_descriptions)
    assert (F.cosine_similarity(fp32.index.vectors, bf16.index.vectors, dim=-1) >= 0.99).all()
    a, b = _instance_vectors(fp32, toy_instances, "fp32"), _instance_vectors(bf16, toy_instances, "bf16")
    assert (F.cosine_similarity(a, b, dim=-1) >= 0.99).all()
    for p, q in zip(fp32.predict_batch(toy_instances), bf16.predict_batch(toy_instances)):
        sp, sq = dict(p.recall), dict(q.recall)
        assert all(abs(sp[r] - sq[r]) < 0.02 for r in sp)
        if p.candidates == q.candidates:
            assert all(abs(x - y) < 0.05 for x, y in zip(p.probabilities, q.probabilities))
        else:  # only a near-tie at the edge of the top k may swap under bf16
            scores = [s for _, s in p.recall]
            assert scores[len(p.candidates) - 1] - scores[len(p.candidates)] < 0.04, (p.recall[:3], q.recall[:3])


def test_replace_may_keep_its_own_description(tiny_extractor, toy_descriptions):
    ex = tiny_extractor
    ex.add_relation("born in", toy_descriptions["born in"], replace=True)  # same text: not a duplicate of itself
    assert ex.relations["born in"] == toy_descriptions["born in"] and len(ex.relations) == len(toy_descriptions)


def test_with_index_predicts_over_another_relation_set_without_touching_either(tiny_extractor, toy_descriptions):
    from emma.pipeline import Extractor

    other = Extractor(tiny_extractor.model, tiny_extractor.tokenizer, precision="fp32")
    other.set_relations({"born in": toy_descriptions["born in"], "capital of": toy_descriptions["capital of"]})
    view = tiny_extractor.with_index(other.index)
    p = view.predict("Marie Curie was born in Warsaw .", (0, 11), (24, 30))
    assert {name for name, _ in p.recall} == {"born in", "capital of"}
    assert tiny_extractor.relations == toy_descriptions and len(other.relations) == 2
    assert view.model is tiny_extractor.model
