"""Labelled examples in recall: prototype mix, example-only relations, nearest examples, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emma.data import Instance
from emma.index import EXAMPLES_COUNTED, LEVEL_SHARE, ExampleLevels, example_weight
from emma.pipeline import Extractor, fuse


def _vectors(ex, instances):
    return torch.stack([r.vector for r in ex.encode_examples(instances)])


def test_no_examples_is_exactly_zero_shot(tiny_extractor, toy_instances):
    before = tiny_extractor.predict_batch(toy_instances)
    tiny_extractor.add_examples("born in", toy_instances[3:4])
    tiny_extractor.remove_examples("born in")
    after = tiny_extractor.predict_batch(toy_instances)
    for p, q in zip(before, after):
        assert p.recall == q.recall and p.probabilities == q.probabilities and p.label == q.label
        assert all(e is None for _, e in q.recall_parts.values()) and q.examples == {}


def test_recall_mixes_description_and_prototype_by_hand(tiny_extractor, toy_instances):
    ex = tiny_extractor
    shots = {"born in": toy_instances[3:5], "capital of": toy_instances[6:7]}  # 2 and 1 examples: two weights
    for relation, instances in shots.items():
        ex.add_examples(relation, instances)
    query = toy_instances[5]
    p = ex.predict_tokens(query.tokens, query.head, query.tail)
    q = F.normalize(_vectors(ex, [query])[0], dim=0)
    for name, score in p.recall:
        desc = float(q @ ex.index.vectors[ex.index.position(name)])
        if name in shots:
            proto = F.normalize(_vectors(ex, shots[name]).mean(0), dim=0)
            w = example_weight(len(shots[name]))
            expected = (1 - w) * desc + w * float(q @ proto)
            assert p.recall_parts[name][1] == pytest.approx(float(q @ proto), abs=1e-5)
        else:
            expected = desc
            assert p.recall_parts[name][1] is None
        assert score == pytest.approx(expected, abs=1e-5) and p.recall_parts[name][0] == pytest.approx(desc, abs=1e-5)
    assert [s for _, s in p.recall] == sorted((s for _, s in p.recall), reverse=True)


def test_an_example_is_its_own_nearest_example(tiny_extractor, toy_instances):
    ex = tiny_extractor
    ex.add_examples("member of", toy_instances[9:12])
    target = toy_instances[10]
    p = ex.predict_tokens(target.tokens, target.head, target.tail, top_k=4)
    assert set(p.examples) == {"member of"} and "member of" in p.candidates  # its own example pulls it into the top k
    nearest = p.examples["member of"]
    assert len(nearest) == 3 and nearest[0][0].tokens == target.tokens and nearest[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [c for _, c in nearest] == sorted((c for _, c in nearest), reverse=True)


def test_a_relation_defined_by_examples_alone(tiny_checkpoint, toy_descriptions, toy_instances):
    ex = Extractor.load(tiny_checkpoint, device="cpu", precision="fp32")
    ex.set_relations({k: v for k, v in toy_descriptions.items() if k != "born in"})
    ex.add_relation("born in", examples=toy_instances[3:5])
    assert "born in" in ex.index.undescribed and ex.relations["born in"] == "born in"
    query = toy_instances[5]
    p = ex.predict_tokens(query.tokens, query.head, query.tail)
    name, proto = p.recall_parts["born in"]
    w = example_weight(2)  # its name stands for the description, mixed with its two examples as for a description
    assert dict(p.recall)["born in"] == pytest.approx((1 - w) * name + w * proto, abs=1e-6)
    assert ex.index.description_share([ex.index.names.index("born in")]) == pytest.approx(1 - w)
    with pytest.raises(ValueError, match="'born in' has neither a description nor examples"):
        ex.remove_examples("born in")
    assert "born in" in ex.index.examples  # the refused call changed nothing


def test_bad_examples_are_refused_and_change_nothing(tiny_extractor, toy_instances):
    ex = tiny_extractor
    ex.add_examples("born in", toy_instances[3:4])
    index = ex.index
    with pytest.raises(ValueError, match="no relation named 'lives in'; add it before its examples"):
        ex.add_examples("lives in", toy_instances[3:4])
    with pytest.raises(ValueError, match="already an example of 'born in'"):
        ex.add_examples("born in", toy_instances[3:4])
    with pytest.raises(ValueError, match="already an example of 'born in'"):
        ex.add_examples("capital of", [Instance(toy_instances[3].tokens, toy_instances[3].head, toy_instances[3].tail)])
    with pytest.raises(ValueError, match="labelled 'founded by' cannot be an example of 'born in'"):
        ex.add_examples("born in", toy_instances[0:1])
    with pytest.raises(ValueError, match="already an example"):
        ex.add_examples("born in", [toy_instances[4], toy_instances[4]])
    assert ex.index is index
    ex.remove_relation("born in")
    assert "born in" not in ex.index.examples


def test_draw_shots_is_seeded_capped_and_never_draws_a_scored_instance(toy_instances):
    from emma.data import draw_shots

    shots = draw_shots(toy_instances, 2, seed=1, exclude=toy_instances[:1])
    assert shots == draw_shots(toy_instances, 2, seed=1, exclude=toy_instances[:1])
    assert set(shots) == {i.relation for i in toy_instances} and all(len(v) == 2 for v in shots.values())
    assert toy_instances[0] not in shots["founded by"]  # the one excluded: only the other two remain to draw
    assert sorted(map(id, shots["founded by"])) == sorted(map(id, toy_instances[1:3]))
    assert draw_shots(toy_instances, 0) == {} == draw_shots([Instance(("a", "b"), (0, 1), (1, 2), None)], 0)  # nothing read
    twice = [toy_instances[0], Instance(toy_instances[0].tokens, toy_instances[0].head, toy_instances[0].tail, "born in")]
    assert draw_shots(twice, 5) == {"founded by": [toy_instances[0]]}  # one pair, drawn once, by its first label
    with pytest.raises(ValueError, match="shots=-1"):
        draw_shots(toy_instances, -1)


def test_remove_examples_matches_sentence_and_spans_whatever_the_label(tiny_extractor, toy_instances):
    ex = tiny_extractor
    unlabelled = [Instance(i.tokens, i.head, i.tail) for i in toy_instances[3:5]]
    ex.add_examples("born in", unlabelled)
    assert len(ex.index.examples["born in"]) == 2
    ex.remove_examples("born in", unlabelled[:1])  # the same pair as given, though stored with its label
    assert [e.instance.pair for e in ex.index.examples["born in"]] == [unlabelled[1].pair]
    ex.remove_examples("born in", toy_instances[4:5])  # labelled this time: matched all the same
    assert "born in" not in ex.index.examples


def test_the_classifier_counts_as_much_as_the_candidates_descriptions_do(tiny_extractor, toy_instances):
    """The fused rule weighs the classifier's log-probability by 1 − the candidates' mean example weight."""
    ex = tiny_extractor
    target = toy_instances[10]
    zero_shot = ex.predict_tokens(target.tokens, target.head, target.tail)
    assert zero_shot.classifier_share == 1.0
    ex.add_examples("member of", toy_instances[9:12])
    p = ex.predict_tokens(target.tokens, target.head, target.tail)
    assert p.reranked and "member of" in p.candidates  # its own example pulls it in
    share = 1 - sum(example_weight(3 if c == "member of" else 0) for c in p.candidates) / len(p.candidates)
    assert p.classifier_share == pytest.approx(share) and share < 1
    cosines = [dict(p.recall)[c] for c in p.candidates]
    assert p.fused == pytest.approx(fuse(p.probabilities, cosines, ex.config.temperature, share))
    assert p.fused != pytest.approx(fuse(p.probabilities, cosines, ex.config.temperature), abs=1e-6)
    assert p.label == p.candidates[p.fused.index(max(p.fused))]


def test_only_relations_with_examples_mix_in_their_prototype(tiny_extractor, toy_instances):
    ex = tiny_extractor
    query = toy_instances[6]
    before = dict(ex.predict_tokens(query.tokens, query.head, query.tail).recall)
    ex.add_examples("capital of", toy_instances[7:9])
    p = ex.predict_tokens(query.tokens, query.head, query.tail)
    after = dict(p.recall)
    assert all(after[n] == pytest.approx(before[n], abs=1e-6) for n in after if n != "capital of")
    assert after["capital of"] != pytest.approx(before["capital of"], abs=1e-4)


def test_a_relation_with_many_examples_leaves_its_description_and_the_classifier_a_fifth(tiny_extractor, toy_instances):
    """Past EXAMPLES_COUNTED examples, more sharpen the prototype but do not push the description further out."""
    ex = tiny_extractor
    source, target = toy_instances[9], toy_instances[10]
    many = [Instance(source.tokens + (f"extra{i}",), source.head, source.tail, "member of") for i in range(3 * EXAMPLES_COUNTED)]
    ex.add_examples("member of", many)
    p = ex.predict_tokens(target.tokens, target.head, target.tail)
    assert p.reranked and "member of" in p.candidates
    assert p.classifier_share == pytest.approx(1 - 0.8 / len(p.candidates))  # w = 20 / 25 for it, 0 for the others


def test_examples_count_more_the_more_there_are_up_to_a_cap():
    """w = m / (m + 5), m = min(n, 20): one example barely moves recall, five count as much as the description,
    and a relation with hundreds of imported rows still leaves its description (and the classifier) a fifth."""
    weights = [example_weight(n) for n in range(0, 401)]
    assert weights[0] == 0 and weights[1] == pytest.approx(1 / 6) and weights[5] == pytest.approx(0.5)
    assert all(a < b < 1 for a, b in zip(weights[:EXAMPLES_COUNTED + 1], weights[1:EXAMPLES_COUNTED + 1]))
    assert weights[EXAMPLES_COUNTED:] == pytest.approx([0.8] * (401 - EXAMPLES_COUNTED))
    # The training objective passes counts as a tensor: the same rule elementwise.
    counts = torch.tensor([0.0, 1.0, 5.0, 20.0, 21.0, 400.0])
    assert example_weight(counts).tolist() == pytest.approx([example_weight(int(n)) for n in counts.tolist()])


def test_description_fits_say_which_description_ranks_each_example_first():
    """A relation's description is checked against its own examples as recall scores without examples: described
    relations only (C, known by its examples alone, is neither checked nor ever a pick), offsets included."""
    from emma.index import DescriptionFit, DescriptionRow, ExampleRow, RelationIndex

    def row(*v):
        return DescriptionRow("text", F.normalize(torch.tensor(v), dim=0), (), (), (), ())

    def examples(relation, *vectors):
        return [ExampleRow(Instance(("x", "y", str(i)), (0, 1), (1, 2), relation), F.normalize(torch.tensor(v), dim=0))
                for i, v in enumerate(vectors)]

    a = examples("A", (0.2, 1.0, 0.1), (0.3, 1.0, 0.0), (1.0, 0.2, 0.9), (0.5, 0.1, 1.0))  # B's, B's, A's, C's row but A's
    index = RelationIndex.build(["A", "B", "C"], [row(1.0, 0.0, 0.0), row(0.0, 1.0, 0.0), row(0.0, 0.0, 1.0)],
                                {"A": a, "C": examples("C", (0.0, 0.0, 1.0))}, undescribed=["C"])
    assert index.description_fits() == [DescriptionFit("A", 4, 2, (("B", 2),))]
    # B's recall scores lowered by 0.9: its description no longer takes A's first two examples.
    assert index.with_offsets({"B": -0.9}).description_fits() == [DescriptionFit("A", 4, 4, ())]
    assert RelationIndex.build(["A"], [row(1.0, 0.0, 0.0)]).description_fits() == []  # no examples, nothing to check


LEVELS = {"0": 0.30, "1": 0.31, "5": 0.40, "20": 0.45}


def test_example_levels_take_part_of_the_gap_to_the_descriptions_level_off_a_mixed_score():
    levels = ExampleLevels.from_config(LEVELS)
    full = levels.shift(torch.tensor([0.0, 5.0, 20.0, 60.0, 3.0]), share=1.0)
    assert full[0].item() == 0.0  # no examples: the description's cosine untouched
    assert full[1].item() == pytest.approx(0.30 - 0.40, abs=1e-6) and full[2].item() == pytest.approx(0.30 - 0.45, abs=1e-6)
    assert full[3].item() == pytest.approx(0.30 - 0.45, abs=1e-6)  # past the last count: the last
    assert full[4].item() == pytest.approx(0.30 - (0.31 + 0.40) / 2, abs=1e-6)  # 3 examples: halfway between 1 and 5
    assert levels.shift(torch.tensor([5.0])).item() == pytest.approx(LEVEL_SHARE * (0.30 - 0.40), abs=1e-6)
    assert levels.shift(torch.tensor(5.0)).shape == ()  # any shape, a single count too
    assert ExampleLevels.from_config(levels.to_config()) == levels and ExampleLevels.from_config({}) is None


@pytest.mark.parametrize("bad", [{"1": 0.3, "5": 0.4}, {"0": 0.3}, {"0": 0.3, "5": 1.5}, {"0": 0.3, "5": float("nan")}])
def test_malformed_example_levels_are_refused_when_a_config_is_made(bad):
    from emma.model import EmmaConfig

    with pytest.raises(ValueError, match="example level"):
        EmmaConfig(example_levels=bad)


def test_recall_puts_each_mixed_score_on_the_descriptions_level(tiny_extractor, toy_instances):
    """With the checkpoint's levels, a relation's mix (1 − w)·desc + w·proto plus its count's shift, and a relation
    without examples keeps its description's cosine; when all relations have as many examples, no ranking changes."""
    ex = tiny_extractor
    shots = {"born in": toy_instances[3:5], "capital of": toy_instances[6:7]}
    for relation, instances in shots.items():
        ex.add_examples(relation, instances)
    query = toy_instances[5]
    plain = dict(ex.predict_tokens(query.tokens, query.head, query.tail).recall)
    ex.config.example_levels = LEVELS
    ex.set_relations(ex.relations)  # a new index reads the checkpoint's levels …
    for relation, instances in shots.items():
        ex.add_examples(relation, instances)
    levels = ExampleLevels.from_config(LEVELS)
    assert ex.index.levels == levels
    levelled = ex.predict_tokens(query.tokens, query.head, query.tail)
    for name, score in levelled.recall:
        shift = float(levels.shift(torch.tensor(float(len(shots.get(name, ()))))))
        assert score == pytest.approx(plain[name] + shift, abs=1e-5) and (shift < 0) == (name in shots)
    assert levelled.recall_parts["born in"][1] is not None  # the two sources shown as they are
    ex.add_examples("capital of", toy_instances[7:8])  # … and keeps them as examples come and go
    assert ex.index.levels == levels


def test_one_labelled_relation_keeps_what_its_examples_say_under_the_levels(tiny_extractor, toy_instances):
    """The levels depend on a relation's own count only: with one relation labelled, its examples still count (a rule
    fitted per sentence over the labelled relations would give it its description's score)."""
    ex = tiny_extractor
    ex.config.example_levels = LEVELS
    ex.set_relations(ex.relations)
    query = toy_instances[5]
    before = dict(ex.predict_tokens(query.tokens, query.head, query.tail).recall)
    ex.add_examples("born in", [query])  # the sentence itself: its prototype cosine is 1
    after = dict(ex.predict_tokens(query.tokens, query.head, query.tail).recall)
    assert after["born in"] > before["born in"]
    assert all(after[n] == pytest.approx(before[n], abs=1e-6) for n in after if n != "born in")
