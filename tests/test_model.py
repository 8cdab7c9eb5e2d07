"""The recall bi-encoder, masked attention pooling, the rerank classifier and EmmaConfig."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from emma.features import collate_pairs, collate_single, encode_descriptions, encode_instances
from emma.model import Emma, EmmaConfig, RecallEncoder, RerankClassifier, WeightPooling, cosine_scores

# ----------------------------------------------------------------------------- WeightPooling


def _pooling(w, b):
    pool = WeightPooling(len(w))
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([w]))
        pool.score.bias.fill_(b)
    return pool


def test_weight_pooling_by_hand():
    pool = _pooling([1.0, 0.0, -1.0], 0.5)
    hidden = torch.tensor(
        [
            [[9.0, 9.0, 9.0], [1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [1e4, 1e4, -1e4]],  # [CLS], two tokens, padding
            [[9.0, 9.0, 9.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]],  # [CLS], one token, [SEP], pad
        ]
    )  # (2, 4, 3)
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]])
    pooled, weights = pool(hidden, mask)

    # row 0: scores 1·1 + 0.5 = 1.5 and 0 − 1 + 0.5 = −0.5 → softmax
    e = torch.exp(torch.tensor([1.5, -0.5]))
    w0 = e / e.sum()
    expected_weights = torch.tensor([[0.0, w0[0], w0[1], 0.0], [0.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(weights, expected_weights)
    assert (weights[mask == 0] == 0).all()  # exactly zero, not merely small
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    torch.testing.assert_close(pooled[0], w0[0] * hidden[0, 1] + w0[1] * hidden[0, 2])
    torch.testing.assert_close(pooled[1], hidden[1, 1])
    torch.testing.assert_close(pooled, torch.einsum("bl,bld->bd", weights, hidden))


def test_weight_pooling_random_masks():
    torch.manual_seed(0)
    pool = WeightPooling(8)
    hidden = torch.randn(5, 7, 8)
    mask = (torch.rand(5, 7) > 0.5).long()
    mask[:, 3] = 1  # every row has a token
    pooled, weights = pool(hidden, mask)
    assert weights.shape == (5, 7) and pooled.shape == (5, 8)
    assert (weights[mask == 0] == 0).all() and (weights[mask == 1] > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    torch.testing.assert_close(pooled, (weights[..., None] * hidden).sum(1))
    # what sits under the mask does not matter
    noisy = hidden.masked_fill((mask == 0)[..., None], 1e6)
    torch.testing.assert_close(pool(noisy, mask)[0], pooled)


def test_weight_pooling_needs_a_token_and_matching_shapes():
    pool = WeightPooling(3)
    with pytest.raises(AssertionError, match="at least one token"):
        pool(torch.randn(2, 4, 3), torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(AssertionError, match="disagree"):
        pool(torch.randn(2, 4, 3), torch.ones(2, 5))


# ----------------------------------------------------------------------------- recall encoder


def _instance_inputs(tokenizer, instances, max_length=64):
    enc = encode_instances(tokenizer, instances, max_length)
    batch = collate_single(tokenizer, enc.ids)
    head = torch.tensor([m + 1 for m in enc.head_marker])  # +1 for [CLS]
    tail = torch.tensor([m + 1 for m in enc.tail_marker])
    return batch, head, tail


def test_instance_vector_is_cls_head_marker_tail_marker(tiny_model, toy_instances):
    model, tokenizer = tiny_model
    batch, head, tail = _instance_inputs(tokenizer, toy_instances[:4])
    with torch.no_grad():
        vecs = model.recall.encode_instances(batch["input_ids"], batch["attention_mask"], head, tail)
        states = model.recall.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    d = model.recall.encoder.config.hidden_size
    assert vecs.shape == (4, 3 * d) and model.recall.dim == 3 * d
    h_open, t_open = tokenizer.convert_tokens_to_ids(["[E_h]", "[E_t]"])
    for i in range(4):
        assert batch["input_ids"][i, head[i]] == h_open and batch["input_ids"][i, tail[i]] == t_open
        expected = torch.cat([states[i, 0], states[i, head[i]], states[i, tail[i]]])
        torch.testing.assert_close(vecs[i], expected)


def test_instance_vector_ignores_padding(tiny_model, toy_instances):
    model, tokenizer = tiny_model
    batch, head, tail = _instance_inputs(tokenizer, toy_instances[:3])
    alone, h1, t1 = _instance_inputs(tokenizer, toy_instances[2:3])
    with torch.no_grad():
        together = model.recall.encode_instances(batch["input_ids"], batch["attention_mask"], head, tail)[2]
        single = model.recall.encode_instances(alone["input_ids"], alone["attention_mask"], h1, t1)[0]
    torch.testing.assert_close(together, single, atol=1e-5, rtol=1e-5)


def _description_inputs(tokenizer, texts):
    return collate_single(tokenizer, encode_descriptions(tokenizer, texts, 32).ids)


def test_description_vector_and_pooling_weights(tiny_model, toy_descriptions):
    model, tokenizer = tiny_model
    texts = list(toy_descriptions.values()) + ["short one"]
    batch = _description_inputs(tokenizer, texts)
    with torch.no_grad():
        out = model.recall.encode_descriptions(**batch)
        states = model.recall.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    d = model.recall.encoder.config.hidden_size
    assert out.vectors.shape == (len(texts), 3 * d)
    content = batch["content_mask"]
    for weights in (out.head_weights, out.tail_weights):
        assert weights.shape == content.shape
        assert (weights[content == 0] == 0).all()  # [CLS], [SEP] and padding take no weight
        torch.testing.assert_close(weights.sum(1), torch.ones(len(texts)))
    torch.testing.assert_close(out.vectors[:, :d], states[:, 0])
    torch.testing.assert_close(out.vectors[:, d : 2 * d], torch.einsum("bl,bld->bd", out.head_weights, states))
    torch.testing.assert_close(out.vectors[:, 2 * d :], torch.einsum("bl,bld->bd", out.tail_weights, states))
    # the two heads are different parameters, so they attend differently
    assert not torch.allclose(out.head_weights, out.tail_weights)
    # the short description, padded here, gives the same vector alone
    with torch.no_grad():
        alone = model.recall.encode_descriptions(**_description_inputs(tokenizer, ["short one"]))
    torch.testing.assert_close(alone.vectors[0], out.vectors[-1], atol=1e-5, rtol=1e-5)


def test_cls_description_pooling_ablation(tiny_model, toy_descriptions):
    model, tokenizer = tiny_model
    config = dataclasses.replace(model.config, description_pooling="cls")
    recall = RecallEncoder(config, model.recall.encoder).eval()
    batch = _description_inputs(tokenizer, list(toy_descriptions.values()))
    with torch.no_grad():
        out = recall.encode_descriptions(**batch)
        cls = model.recall.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[:, 0]
    torch.testing.assert_close(out.vectors, torch.cat([cls, cls, cls], dim=-1))
    assert out.vectors.shape[1] == recall.dim
    assert not out.head_weights.any() and not out.tail_weights.any()


def test_cosine_scores():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[0.8, -0.6, 7 / 5 / 2**0.5], [0.0, -1.0, 1 / 2**0.5]])
    torch.testing.assert_close(cosine_scores(a, b), expected)
    assert cosine_scores(a.half(), b.half()).dtype == torch.float32


# ----------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("k", [2, 3])
def test_classifier_logits_shape(tiny_model, toy_instances, toy_descriptions, k):
    model, tokenizer = tiny_model
    config = dataclasses.replace(model.config, k=k)
    classifier = RerankClassifier(config, model.classifier.encoder).eval()
    inst = encode_instances(tokenizer, toy_instances[:3], 64).ids
    desc = encode_descriptions(tokenizer, list(toy_descriptions.values())[:k], 32).ids
    pairs = collate_pairs(tokenizer, [i for i in inst for _ in range(k)], [d for _ in inst for d in desc])
    with torch.no_grad():
        logits = classifier(**pairs)
    assert logits.shape == (3, k) and torch.isfinite(logits).all()
    # an instance's logits depend only on its own k pairs
    one = collate_pairs(tokenizer, [inst[1]] * k, desc)
    with torch.no_grad():
        torch.testing.assert_close(classifier(**one)[0], logits[1], atol=1e-5, rtol=1e-5)
    with pytest.raises(AssertionError, match="not a multiple of k"):
        classifier(**{key: v[: 3 * k - 1] for key, v in pairs.items()})


@pytest.mark.parametrize("features", ["cls", "cls_entities"])
def test_shared_classifier_scores_each_pair_alone(tiny_model, toy_instances, toy_descriptions, features):
    model, tokenizer = tiny_model
    config = dataclasses.replace(model.config, k=3, classifier_head="shared", classifier_features=features)
    classifier = RerankClassifier(config, model.classifier.encoder).eval()
    assert classifier.mlp[-1].out_features == 1
    inst = encode_instances(tokenizer, toy_instances[:2], 64).ids
    desc = encode_descriptions(tokenizer, list(toy_descriptions.values())[:3], 32).ids
    pairs = collate_pairs(tokenizer, [i for i in inst for _ in range(3)], [d for _ in inst for d in desc])
    with torch.no_grad():
        logits = classifier(**pairs)  # (2, 3)
        flipped = classifier(**collate_pairs(tokenizer, [i for i in inst for _ in range(3)], [d for _ in inst for d in desc[::-1]]))
        feats = classifier.pair_features(**pairs)
    assert feats.shape == (6, 32 * (3 if features == "cls_entities" else 1))
    # Permutation-equivariant: reversing the candidates reverses the logits, whatever the slot.
    torch.testing.assert_close(flipped, logits.flip(1), atol=1e-5, rtol=1e-5)


def test_entity_features_read_the_marker_states(tiny_model, toy_instances, toy_descriptions):
    model, tokenizer = tiny_model
    config = dataclasses.replace(model.config, classifier_features="cls_entities")
    classifier = RerankClassifier(config, model.classifier.encoder).eval()
    inst = encode_instances(tokenizer, toy_instances[:1], 64).ids
    desc = encode_descriptions(tokenizer, list(toy_descriptions.values())[:2], 32).ids
    pairs = collate_pairs(tokenizer, [inst[0]] * 2, desc)
    with torch.no_grad():
        hidden = classifier.encoder(input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"],
                                    token_type_ids=pairs["token_type_ids"]).last_hidden_state
        feats = classifier.pair_features(**pairs)
    h, t = pairs["head_marker"][0], pairs["tail_marker"][0]
    torch.testing.assert_close(feats[0], torch.cat([hidden[0, 0], hidden[0, h], hidden[0, t]]))


def test_with_new_classifier_keeps_recall(tiny_encoder_dir, tiny_model):
    model, tokenizer = tiny_model
    recall_only = Emma(dataclasses.replace(model.config, use_classifier=False), model.recall.encoder, None)
    recall_only.recall.load_state_dict(model.recall.state_dict())
    config = dataclasses.replace(model.config, k=3, classifier_head="shared")
    both = recall_only.with_new_classifier(config, len(tokenizer), pretrained=tiny_encoder_dir)
    assert both.classifier is not None and both.config.k == 3 and both.classifier.config.classifier_head == "shared"
    assert all(torch.equal(v, recall_only.recall.state_dict()[k]) for k, v in both.recall.state_dict().items())
    warm = recall_only.with_new_classifier(config, len(tokenizer), from_recall=True)
    assert warm.classifier.encoder is not warm.recall.encoder  # a copy: the two train apart
    assert all(torch.equal(v, recall_only.recall.encoder.state_dict()[k]) for k, v in warm.classifier.encoder.state_dict().items())
    with pytest.raises(ValueError, match="must not change: \\['max_length'\\]"):
        recall_only.with_new_classifier(dataclasses.replace(config, max_length=40), len(tokenizer), pretrained=tiny_encoder_dir)


def test_emma_layout(tiny_model):
    model, tokenizer = tiny_model
    assert model.recall.encoder is not model.classifier.encoder  # trained apart
    assert model.recall.encoder.get_input_embeddings().num_embeddings == len(tokenizer)
    keys = model.state_dict().keys()
    assert all(k.startswith(("recall.", "classifier.")) for k in keys)
    assert any(k.startswith("recall.head_pool.") for k in keys) and any(k.startswith("classifier.mlp.") for k in keys)
    assert model.encoder_config()["hidden_size"] == 32


def test_from_encoder_without_classifier_and_argument_checks(tiny_encoder_dir, tiny_model):
    _, tokenizer = tiny_model
    config = EmmaConfig(use_classifier=False)
    model = Emma.from_encoder(config, len(tokenizer), encoder_config={"model_type": "bert", "hidden_size": 16,
                                                                    "num_hidden_layers": 1, "num_attention_heads": 2,
                                                                    "intermediate_size": 32, "vocab_size": 30522})
    assert model.classifier is None and model.recall.dim == 48
    assert model.recall.encoder.get_input_embeddings().num_embeddings == len(tokenizer)
    with pytest.raises(ValueError, match="exactly one"):
        Emma.from_encoder(config, len(tokenizer))
    with pytest.raises(ValueError, match="exactly one"):
        Emma.from_encoder(config, len(tokenizer), pretrained=tiny_encoder_dir, encoder_config={"model_type": "bert"})


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=0), "k must be at least 1, got 0"),
        (dict(description_pooling="mean"), "description_pooling='mean'; choose one of \\('attention', 'cls'\\)"),
        (dict(temperature=0.0), "temperature must be positive, got 0.0"),
        (dict(classifier_head="max"), "classifier_head='max'; choose one of \\('concat', 'shared'\\)"),
        (dict(classifier_features="mean"), "classifier_features='mean'"),
        (dict(temperature=-1), "temperature must be positive"),
        (dict(max_length=4), "max_length=4"),
        (dict(max_description_length=2), "max_description_length=2"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmmaConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    config = EmmaConfig(encoder="x", k=3, temperature=0.05, description_pooling="cls", use_classifier=False)
    assert EmmaConfig.from_dict(config.to_dict()) == config
    assert (config.classifier_head, config.classifier_features, config.decision) == ("shared", "cls_entities", "fused")
    paper = EmmaConfig.paper()
    assert (paper.classifier_head, paper.classifier_features, paper.decision) == ("concat", "cls", "classifier")
    # keys an earlier version wrote and nothing reads load at their old value, and only at it
    legacy = {**config.to_dict(), "markers": ["[E_h]", "[/E_h]", "[E_t]", "[/E_t]"], "version": 1, "classifier_hidden": 0}
    assert EmmaConfig.from_dict(legacy) == config
    with pytest.raises(ValueError, match="classifier_hidden=0 is the only value"):
        EmmaConfig.from_dict({**config.to_dict(), "classifier_hidden": 64})
    with pytest.raises(ValueError, match="unknown EmmaConfig keys: \\['colour'\\]"):
        EmmaConfig.from_dict({**config.to_dict(), "colour": "red"})


def test_unit_normalised_cosine_matches_torch(tiny_model, toy_instances, toy_descriptions):
    model, tokenizer = tiny_model
    batch, head, tail = _instance_inputs(tokenizer, toy_instances[:2])
    with torch.no_grad():
        inst = model.recall.encode_instances(batch["input_ids"], batch["attention_mask"], head, tail)
        desc = model.recall.encode_descriptions(**_description_inputs(tokenizer, list(toy_descriptions.values()))).vectors
    expected = F.cosine_similarity(inst[:, None, :], desc[None, :, :], dim=-1)
    torch.testing.assert_close(cosine_scores(inst, desc), expected, atol=1e-6, rtol=1e-5)
