"""The labelled-margin probe's rules (research/labelled_margin_probe.py): which catalogue relations lose how much."""

import pytest

from research.gzsl import CROSSRE_PREFIX
from research.labelled_margin_probe import RULES, offsets

RELATIONS = {"P19": "place of birth", "P551": "residence", CROSSRE_PREFIX + "origin": "origin"}


def test_every_rule_lowers_unlabelled_catalogue_relations_and_never_the_users_own():
    for rule in RULES:
        got = offsets(RELATIONS, {"P19": 5}, 0.1, rule)
        assert got["P551"] == -0.1 and CROSSRE_PREFIX + "origin" not in got


def test_a_labelled_catalogue_relation_loses_all_part_or_none_of_the_margin():
    assert offsets(RELATIONS, {"P19": 5}, 0.1, "every catalogue relation")["P19"] == -0.1
    assert offsets(RELATIONS, {"P19": 5}, 0.1, "by the description's share")["P19"] == pytest.approx(-0.05)  # w = 1/2
    assert "P19" not in offsets(RELATIONS, {"P19": 5}, 0.1, "not the labelled ones")
    with pytest.raises(ValueError, match="unknown rule"):
        offsets(RELATIONS, {"P19": 1}, 0.1, "none")
