"""The extraction-rules probe's selection of triples (research/extraction_rules_probe.py), on hand-made pairs."""

from research.extraction_rules_probe import direction_counts, evaluate, kept


def row(sentence, head, tail, label, score, cosine, gold=()):
    return {"sentence": sentence, "head": list(head), "tail": list(tail), "label": label, "score": score,
            "cosine": cosine, "gold": list(gold)}


A, B, C = (0, 1), (3, 4), (6, 7)
ROWS = [
    row(0, A, B, "part-of", 0.95, 0.50, ["part-of"]),  # gold direction
    row(0, B, A, "part-of", 0.97, 0.40),  # reversed, same relation, higher score
    row(0, A, C, "role", 0.92, 0.45),
    row(0, C, A, "usage", 0.91, 0.44),  # the same pair of entities, another relation
    row(1, A, B, "part-of", 0.50, 0.30, ["part-of"]),  # below the threshold
]


def labels(triples):
    return sorted((r["sentence"], tuple(r["head"]), tuple(r["tail"]), r["label"]) for r in triples)


def test_the_threshold_alone_keeps_every_pair_over_it():
    assert len(kept(ROWS, "threshold", 0.9)) == 4
    assert len(kept(ROWS, "and cosine", 0.9, cosine=0.45)) == 2


def test_one_direction_keeps_the_higher_score_of_two_directions_with_the_same_relation():
    got = labels(kept(ROWS, "one direction", 0.9))
    assert (0, B, A, "part-of") in got and (0, A, B, "part-of") not in got
    assert (0, A, C, "role") in got and (0, C, A, "usage") in got  # different relations: both stay


def test_one_per_pair_keeps_a_single_triple_per_pair_of_entities():
    got = labels(kept(ROWS, "one per pair", 0.9))
    assert got == [(0, A, C, "role"), (0, B, A, "part-of")]


def test_the_oracle_keeps_the_gold_direction():
    got = labels(kept(ROWS, "oracle direction", 0.9))
    assert (0, A, B, "part-of") in got and (0, B, A, "part-of") not in got


def test_scores_and_direction_counts():
    record = {"gold": 2, "pairs": ROWS}
    result = evaluate({"d": record}, "threshold", 0.9)
    p, r, f1 = result["domains"]["d"]
    assert (p, r) == (25.0, 50.0) and abs(f1 - 100 / 3) < 1e-9
    assert direction_counts({"d": record}) == {"triples": 1, "gold direction scores higher": 0,
                                               "gold direction has the higher cosine": 1}
