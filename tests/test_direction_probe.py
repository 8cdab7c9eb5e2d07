"""The direction probe's figures (research/direction_probe.py) on the tiny model and toy sentences."""

from emma import Instance
from research.direction_probe import direction_scores, one_way


def test_one_way_drops_pairs_whose_reverse_is_an_instance_too():
    words = ("Ann", "met", "Bob", "and", "Cy")
    ab, ba, ac = Instance(words, (0, 1), (2, 3), "r"), Instance(words, (2, 3), (0, 1), "s"), Instance(words, (0, 1), (4, 5), "r")
    assert one_way([ab, ba, ac]) == [ac]


def test_direction_scores_compare_each_sentence_with_its_swapped_self(tiny_extractor, toy_instances):
    scores = direction_scores(tiny_extractor, toy_instances)
    given = tiny_extractor.predict_batch(toy_instances)
    turned = tiny_extractor.predict_batch([Instance(i.tokens, i.tail, i.head, i.relation) for i in toy_instances])
    n = len(toy_instances)
    assert scores["gold as given"] == 100 * sum(p.label == i.relation for i, p in zip(toy_instances, given)) / n
    assert scores["gold when swapped"] == 100 * sum(p.label == i.relation for i, p in zip(toy_instances, turned)) / n
    higher = sum(dict(p.recall)[i.relation] > dict(q.recall)[i.relation] for i, p, q in zip(toy_instances, given, turned))
    assert scores["gold cosine higher as given"] == 100 * higher / n
