"""The inference fast path keeps its answers.

Exact top-k equals a brute-force reference (each sentence and description encoded alone, no
batching, no index); relations added one by one score exactly as a rebuilt index; batched and
single predictions agree; a single prediction encodes one sentence and nothing of the catalogue;
bf16 (and fp16 on CUDA) stays close to fp32; the int8 CPU path (quantized encoders) predicts as fp32
does except where fp32 itself nearly ties, on the tiny model and on the shipped checkpoint (slow).
CUDA cases run when a GPU is present.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import emma.precision
from emma.features import collate_instances, collate_single, encode_descriptions, encode_instances
from emma.model import cosine_scores
from emma.pipeline import Extractor, RelationIndex
from emma.precision import resolve_precision

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def catalogue(toy_descriptions, count: int = 60) -> dict[str, str]:
    """The toy relations plus made-up ones (halves of two real descriptions), so top-k has something to choose from."""
    texts = [t.split() for t in toy_descriptions.values()]
    made_up = {}
    for i in range(count - len(toy_descriptions)):
        a, b = texts[i % len(texts)], texts[(i * 7 + 3) % len(texts)]
        made_up[f"made-up {i}"] = " ".join(a[: len(a) // 2] + b[len(b) // 2 :] + [f"({i})"])
    return {**toy_descriptions, **made_up}


@torch.inference_mode()
def brute_force(ex: Extractor, instances, descriptions: dict[str, str]) -> torch.Tensor:
    """(B, N) cosine scores with every description and sentence encoded on its own, fp32."""
    model, tok = ex.model, ex.tokenizer
    enc = encode_descriptions(tok, list(descriptions.values()), ex.config.max_description_length)
    descs = []
    for ids in enc.ids:
        inputs = {k: v.to(ex.device) for k, v in collate_single(tok, [ids]).items()}
        descs.append(model.recall.encode_descriptions(**inputs).vectors[0])
    sents = []
    enc = encode_instances(tok, instances, ex.config.max_length)
    for i in range(len(instances)):
        inputs = {k: v.to(ex.device) for k, v in collate_instances(tok, [enc.ids[i]]).items()}
        sents.append(model.recall.encode_instances(**inputs)[0])
    return cosine_scores(torch.stack(sents), torch.stack(descs)).cpu()  # (B, N)


def assert_same_ranking(names: list[str], scores: list[float], ref_names: list[str], ref_scores: torch.Tensor, tol: float = 1e-5):
    """Equal scores; equal order wherever the reference scores are not tied within `tol`."""
    assert torch.allclose(torch.tensor(scores), ref_scores.float(), atol=tol), (scores, ref_scores)
    for i in range(len(names)):
        tied = (i > 0 and ref_scores[i - 1] - ref_scores[i] < tol) or (i + 1 < len(names) and ref_scores[i] - ref_scores[i + 1] < tol)
        if not tied:
            assert names[i] == ref_names[i], f"rank {i}: {names[i]} != {ref_names[i]}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_k", [3, None])
def test_topk_equals_brute_force(tiny_checkpoint, toy_instances, toy_descriptions, device, top_k):
    ex = Extractor.load(tiny_checkpoint, device=device, precision="fp32")
    ex.batch_size = 5  # several batches, each padded differently
    rels = catalogue(toy_descriptions)
    ex.set_relations(rels)
    ref = brute_force(ex, toy_instances, rels)  # (B, N)
    names = list(rels)
    width = len(names) if top_k is None else top_k
    for row, pred in enumerate(ex.predict_batch(toy_instances, top_k=top_k)):
        ref_scores, ref_idx = ref[row].topk(width)
        assert len(pred.recall) == width
        assert_same_ranking([n for n, _ in pred.recall], [s for _, s in pred.recall], [names[j] for j in ref_idx], ref_scores)
        assert pred.candidates == [n for n, _ in pred.recall[: ex.config.k]]


@pytest.mark.parametrize("device", DEVICES)
def test_appended_relations_score_like_a_rebuilt_index(tiny_checkpoint, toy_instances, toy_descriptions, device):
    rels = catalogue(toy_descriptions, 40)
    items = list(rels.items())
    grown = Extractor.load(tiny_checkpoint, device=device, precision="fp32")
    grown.set_relations(dict(items[:5]))
    first = grown.index
    snapshot = first.vectors.clone()
    for name, text in items[5:]:  # one at a time
        grown.add_relation(name, text)
    rebuilt = Extractor.load(tiny_checkpoint, device=device, precision="fp32")
    rebuilt.set_relations(rels)

    assert grown.index.names == rebuilt.index.names
    assert grown.index.vectors.shape == (len(rels), grown.model.recall.dim)
    assert torch.allclose(grown.index.vectors, rebuilt.index.vectors, atol=1e-5)
    assert torch.equal(first.vectors, snapshot) and len(first) == 5, "an index handed out never changes"
    for a, b in zip(grown.index.rows, rebuilt.index.rows):
        assert torch.allclose(torch.tensor(a.head_weights), torch.tensor(b.head_weights), atol=1e-5)
        assert a.token_ids == b.token_ids
    for p, q in zip(grown.predict_batch(toy_instances), rebuilt.predict_batch(toy_instances)):
        assert_same_ranking([n for n, _ in p.recall], [s for _, s in p.recall], [n for n, _ in q.recall], torch.tensor([s for _, s in q.recall]))
        assert torch.allclose(torch.tensor(p.probabilities), torch.tensor(q.probabilities), atol=1e-5)


def test_remove_and_re_add_keep_positions_consistent(tiny_extractor, toy_descriptions, toy_instances):
    ex = tiny_extractor
    before = ex.index.vectors.clone()
    ex.remove_relation("born in")
    assert "born in" not in ex.relations
    assert ex.index.vectors.shape[0] == len(ex.index) == 3
    assert torch.equal(ex.index.vectors, before[[0, 2, 3]])
    for i, name in enumerate(ex.index.names):
        assert ex.index.position(name) == i
    with pytest.raises(KeyError):
        ex.index.position("born in")
    ex.add_relation("born in", toy_descriptions["born in"])
    assert ex.index.position("born in") == 3
    assert torch.allclose(ex.index.vectors[3], before[1], atol=1e-6)
    assert all(p.label in ex.relations for p in ex.predict_batch(toy_instances))
    for name in list(ex.relations):
        ex.remove_relation(name)
    assert ex.index.vectors is None and len(ex.index) == 0
    ex.add_relation("born in", toy_descriptions["born in"])
    assert ex.index.vectors.shape[0] == 1


def test_index_is_built_from_rows_and_never_changes(tiny_extractor):
    rows = tiny_extractor.encode_descriptions(["a: first", "b: second", "c: third"])
    index = RelationIndex.build(["a", "b", "c"], rows)
    assert index.position("c") == 2 and index.texts == ["a: first", "b: second", "c: third"]
    assert torch.equal(index.vectors, torch.stack([r.vector for r in rows]))
    smaller = index.without("a")
    assert smaller.position("c") == 1 and index.position("c") == 2  # the original is untouched
    with pytest.raises(KeyError):
        smaller.position("a")
    replaced = index.with_relations(["a"], rows[2:])  # a name already present moves to the end
    assert replaced.names == ("b", "c", "a") and replaced.rows[2] is rows[2] and index.names == ("a", "b", "c")
    with pytest.raises(ValueError, match="distinct"):
        RelationIndex.build(["a", "a"], rows[:2])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rerank_batch_size", [None, 3])
def test_batched_and_single_predictions_agree(tiny_checkpoint, toy_instances, toy_descriptions, device, rerank_batch_size):
    ex = Extractor.load(tiny_checkpoint, device=device, precision="fp32")
    ex.set_relations(catalogue(toy_descriptions, 20))
    ex.batch_size = 8  # a full and a partial batch, the classifier's pairs regrouped in threes or not at all
    ex.rerank_batch_size = rerank_batch_size
    batched = ex.predict_batch(toy_instances)
    for inst, b in zip(toy_instances, batched):
        text, head, tail = inst.as_text()
        for single in (ex.predict_tokens(inst.tokens, inst.head, inst.tail), ex.predict(text, head, tail)):
            assert_same_ranking([n for n, _ in single.recall], [s for _, s in single.recall], [n for n, _ in b.recall],
                                torch.tensor([s for _, s in b.recall]))
            assert torch.allclose(torch.tensor(single.probabilities), torch.tensor(b.probabilities), atol=1e-5)
            if b.probabilities and abs(b.probabilities[0] - b.probabilities[1]) > 1e-4:
                assert single.label == b.label
            assert single.attention == b.attention


class CountingTokenizer:
    """Delegates to a tokenizer and records how many texts each call tokenizes."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.calls: list[int] = []

    def __call__(self, texts, *args, **kwargs):
        self.calls.append(len(texts) if isinstance(texts, list) else 1)
        return self._tok(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __len__(self) -> int:
        return len(self._tok)


def test_single_prediction_touches_nothing_of_the_catalogue(tiny_extractor, toy_descriptions, monkeypatch):
    ex = tiny_extractor
    ex.set_relations(catalogue(toy_descriptions, 30))
    counting = CountingTokenizer(ex.tokenizer)
    ex.tokenizer = counting

    def forbidden(*args, **kwargs):
        raise AssertionError("descriptions were encoded or tokenized again during prediction")

    monkeypatch.setattr("emma.pipeline.encode_descriptions", forbidden)
    monkeypatch.setattr(ex.model.recall, "encode_descriptions", forbidden)
    p = ex.predict("Apple was founded by Steve Jobs in 1976 .", head=(0, 5), tail=(21, 31))
    assert p.reranked and len(p.recall) == 30
    assert counting.calls == [1], "one sentence, and only it, is tokenized"


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_stays_close_to_fp32(tiny_checkpoint, toy_instances, toy_descriptions, device):
    half = "fp16" if device == "cuda" else "bf16"
    rels = catalogue(toy_descriptions, 20)
    exact = Extractor.load(tiny_checkpoint, device=device, precision="fp32")
    fast = Extractor.load(tiny_checkpoint, device=device, precision=half)
    assert fast.precision == half
    for ex in (exact, fast):
        ex.set_relations(rels)
    cos = torch.nn.functional.cosine_similarity(exact.index.vectors, fast.index.vectors, dim=-1)
    assert cos.min() > 0.999, cos.min()
    for p, q in zip(exact.predict_batch(toy_instances), fast.predict_batch(toy_instances)):
        ps, qs = dict(p.recall), dict(q.recall)
        assert max(abs(ps[n] - qs[n]) for n in ps) < 0.01
        if p.candidates == q.candidates:
            assert torch.allclose(torch.tensor(p.probabilities), torch.tensor(q.probabilities), atol=0.02)
        else:  # only a near-tie at the edge of the top k may swap in half precision
            scores = [s for _, s in p.recall]
            assert scores[len(p.candidates) - 1] - scores[len(p.candidates)] < 0.02, (p.recall[:3], q.recall[:3])


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_half_where_the_hardware_has_it(monkeypatch, native):
    monkeypatch.setattr(emma.precision, "bf16_pays_off", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: native)
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp16")
    with pytest.raises(ValueError, match="choose one of"):
        resolve_precision("int8", torch.device("cpu"))


@pytest.mark.slow
def test_half_precision_on_the_real_encoder(packaged_encoder, tmp_path, toy_instances, toy_descriptions):
    """The packaged MiniLM (real weights): bf16 embeddings match fp32 to cosine ≥ 0.999, same top-k."""
    from emma.checkpoint import load_tokenizer, save_checkpoint
    from emma.model import Emma, EmmaConfig

    tok = load_tokenizer(packaged_encoder)
    save_checkpoint(Emma.from_encoder(EmmaConfig(encoder="minilm"), len(tok), pretrained=packaged_encoder), tok, tmp_path / "ckpt")
    exact = Extractor.load(tmp_path / "ckpt", device="cpu", precision="fp32")
    fast = Extractor.load(tmp_path / "ckpt", device="cpu", precision="bf16")
    for ex in (exact, fast):
        ex.set_relations(toy_descriptions)
    cos = torch.nn.functional.cosine_similarity(exact.index.vectors, fast.index.vectors, dim=-1)
    assert cos.min() > 0.999, cos.min()
    for p, q in zip(exact.predict_batch(toy_instances), fast.predict_batch(toy_instances)):
        ps, qs = dict(p.recall), dict(q.recall)
        assert max(abs(ps[n] - qs[n]) for n in ps) < 0.01
        assert p.recall_label == q.recall_label or abs(p.recall[0][1] - p.recall[1][1]) < 0.01


# ----------------------------------------------------------------------------- int8 (CPUs without bf16)


def assert_int8_agrees(fp32_preds, int8_preds, recall_tie: float, probability_tol: float, label_ties: bool = True) -> int:
    """int8 predictions equal fp32's, except where fp32 itself nearly ties; returns how many near ties were met.

    Recall: every score within `recall_tie` of fp32's; so the k candidates differ only where a relation
    entering or leaving the top k scored within twice `recall_tie` of the k-th (both scores move), counted as a
    near tie. Classifier: on the same
    candidates, probabilities within `probability_tol`; with `label_ties`, the same label unless
    fp32's two best deciding scores are within it (without: flips are counted, not excused, since
    the fused rule divides recall's drift by its temperature).
    """
    ties = 0
    for p, q in zip(fp32_preds, int8_preds):
        ref = dict(p.recall)
        swapped = set(p.candidates) ^ set(q.candidates)
        ties += bool(swapped)  # the drift check below bounds a swap: it and the k-th within 2 × recall_tie
        assert all(abs(ref[name] - s) < recall_tie for name, s in q.recall), "int8 recall scores drift beyond the tie width"
        if swapped or not p.reranked:
            continue
        probs = dict(zip(q.candidates, q.probabilities))
        drift = max(abs(probs[name] - x) for name, x in zip(p.candidates, p.probabilities))
        assert drift < probability_tol, f"classifier probabilities {p.probabilities} -> {q.probabilities}"
        if p.label != q.label and label_ties:
            top = sorted(p.deciding_scores, reverse=True)
            assert top[0] - top[1] < probability_tol, f"label {p.label} -> {q.label} though fp32 decided by {top[0] - top[1]:.3f}"
            ties += 1
    return ties


def test_int8_quantizes_a_copy_of_the_encoders(tiny_checkpoint):
    from emma.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(tiny_checkpoint, "cpu")
    ex = Extractor(model, tokenizer, precision="int8")
    assert ex.precision == "int8" and ex.model is not model
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert not any(isinstance(m, quantized) for m in model.modules()), "the model handed in stays float32 (trainable)"
    for encoder in (ex.model.recall.encoder, ex.model.classifier.encoder):
        layers = {name: m for name, m in encoder.named_modules() if isinstance(m, (torch.nn.Linear, quantized))}
        kept = {name for name, m in layers.items() if not isinstance(m, quantized)}
        assert kept == {name for name in layers if name.endswith("output.dense") and "attention" not in name}, \
            "all but the feed-forward down-projections are int8"
    assert type(ex.model.recall.head_pool.score) is torch.nn.Linear and type(ex.model.classifier.mlp[0]) is torch.nn.Linear
    assert ex.with_index(ex.index).model is ex.model, "views share the quantized copy"


def test_int8_matches_fp32_on_the_tiny_model(tiny_checkpoint, toy_instances, toy_descriptions):
    fp32 = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    int8 = Extractor.load(tiny_checkpoint, device="cpu", precision="int8")
    rels = catalogue(toy_descriptions, 30)
    for ex in (fp32, int8):
        ex.set_relations(rels)
    assert (torch.nn.functional.cosine_similarity(fp32.index.vectors, int8.index.vectors, dim=-1) >= 0.99).all()
    assert_int8_agrees(fp32.predict_batch(toy_instances), int8.predict_batch(toy_instances), recall_tie=0.02, probability_tol=0.05)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_sentence_gets_the_same_scores_alone_and_in_any_batch(tiny_checkpoint, toy_instances, toy_descriptions, precision):
    """Dynamic int8 scales each activation tensor by its own range: run as one batch, a sentence would be scored
    differently beside others (the server batches users together), so the Extractor runs int8 one text at a time."""
    ex = Extractor.load(tiny_checkpoint, device="cpu", precision=precision)
    ex.set_relations(catalogue(toy_descriptions, 30))
    long = replace(toy_instances[0], tokens=toy_instances[0].tokens + ("filler",) * 40)  # much padding for the rest
    batched = ex.predict_batch([long, *toy_instances])[1:]
    for instance, together in zip(toy_instances, batched):
        alone = ex.predict_batch([instance])[0]
        assert [r for r, _ in alone.recall] == [r for r, _ in together.recall]
        # Float sums in another order differ in the last bits; batched int8 differed by 3.5e-5 here, 0.056 on the
        # shipped checkpoint.
        assert [c for _, c in alone.recall] == pytest.approx([c for _, c in together.recall], abs=1e-5)
        assert alone.probabilities == pytest.approx(together.probabilities, abs=1e-5)
    vectors = ex.encode_descriptions(["a short one", "a much longer description " * 8])
    assert torch.allclose(vectors[0].vector, ex.encode_descriptions(["a short one"])[0].vector, atol=1e-5)


def test_int8_is_for_the_cpu_only(tiny_checkpoint):
    with pytest.raises(ValueError, match="int8' runs on the CPU only, not on cuda"):
        resolve_precision("int8", torch.device("cuda"), inference=True)
    with pytest.raises(ValueError, match="precision='int8'; choose one of"):
        resolve_precision("int8", torch.device("cpu"))  # training: bf16, fp16 or fp32 only


@pytest.mark.slow
def test_int8_matches_fp32_on_the_shipped_checkpoint(shared_data):
    """The 16 FewRel val_wiki relations (real, distinct descriptions), 5 sentences each."""
    from emma import macro_prf, read_descriptions, read_instances

    fewrel = shared_data / "fewrel"
    instances = read_instances(fewrel / "val_wiki.json")
    descriptions = read_descriptions(fewrel / "pid2name.json")
    names = sorted({i.relation for i in instances})
    sample = [i for r in names for i in [x for x in instances if x.relation == r][:5]]
    fp32 = Extractor.load(device="cpu", precision="fp32")
    int8 = Extractor.load(device="cpu", precision="int8")
    for ex in (fp32, int8):
        ex.set_relations({r: descriptions[r] for r in names})
    assert (torch.nn.functional.cosine_similarity(fp32.index.vectors, int8.index.vectors, dim=-1) >= 0.98).all()
    a, b = fp32.predict_batch(sample), int8.predict_batch(sample)
    ties = assert_int8_agrees(a, b, recall_tie=0.06, probability_tol=0.25, label_ties=False)
    same = sum(p.label == q.label for p, q in zip(a, b))
    assert same >= 0.9 * len(a), f"int8 changed {len(a) - same} of {len(a)} labels ({ties} candidate sets at near ties)"
    gold = [i.relation for i in sample]
    f1 = [macro_prf(gold, [p.label for p in preds])["f1"] for preds in (a, b)]
    assert f1[1] >= f1[0] - 3, f"macro F1 fp32 {f1[0]:.2f} vs int8 {f1[1]:.2f} on {len(a)} sentences"
