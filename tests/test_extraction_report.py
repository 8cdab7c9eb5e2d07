"""The extraction-threshold report (`python -m research extraction`): the signal it names, its files, the command."""

from __future__ import annotations

import json

from research.extraction import run, signal_name

DOMAINS = ("news", "ai", "science", "literature", "politics", "music")


def test_the_report_names_its_signal_results_file_and_command(tiny_checkpoint, toy_instances, toy_descriptions, tmp_path):
    crossre = tmp_path / "data" / "crossre"
    crossre.mkdir(parents=True)
    (crossre / "descriptions.json").write_text(json.dumps(toy_descriptions))
    lines = "".join(json.dumps({"tokens": list(i.tokens), "head": list(i.head), "tail": list(i.tail), "relation": i.relation,
                                "doc": f"doc-{n}"}) + "\n" for n, i in enumerate(toy_instances))  # CrossRE's lines
    for d in DOMAINS:
        (crossre / f"{d}-dev.jsonl").write_text(lines)
    results, markdown = tmp_path / "extraction_tiny.jsonl", tmp_path / "EXTRACTION_tiny.md"
    summary = run(tiny_checkpoint, tmp_path / "data", results, tmp_path / "cache", precision="fp32", markdown=markdown,
                  command="python -m research extraction --checkpoint tiny --results extraction_tiny.jsonl")
    assert summary["signal"] == "fused probability" and 0.0 <= summary["threshold"] <= 1.0
    assert json.loads(results.read_text().splitlines()[0]) == summary
    text = markdown.read_text()
    assert "(fused probability)" in text and "`results/extraction_tiny.jsonl`" in text
    assert "`python -m research extraction --checkpoint tiny --results extraction_tiny.jsonl`" in text


def test_a_checkpoint_without_classifier_is_thresholded_on_its_recall_cosine(tiny_extractor):
    assert signal_name(tiny_extractor) == "fused probability"
    tiny_extractor.model.classifier = None
    assert signal_name(tiny_extractor).startswith("recall cosine")
