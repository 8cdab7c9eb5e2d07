"""research/inference_probes.py: the description forms it mixes."""

from research.inference_probes import FORM_MIXES, description_forms


def test_forms_split_name_and_description():
    forms = description_forms({"physical": "physical location: the head is located in the tail",
                               "P17": "country of the head entity"})
    assert forms["full"]["physical"] == "physical location: the head is located in the tail"
    assert forms["name"]["physical"] == "physical location"
    assert forms["body"]["physical"] == "the head is located in the tail"
    # a description without a name keeps its whole text in every form
    assert {f["P17"] for f in forms.values()} == {"country of the head entity"}
    assert {f for used in FORM_MIXES.values() for f in used} == set(forms)


def test_table_averages_the_six_domains_and_keeps_the_last_record_of_a_set():
    from research.inference_probes import table
    from research.fewshot import CROSSRE_DOMAINS

    records = [{"probe": "soup", "model": "a + b", "set": f"crossre-{d}", "n": 1, "recall_only": float(i), "wall_time_s": 1}
               for i, d in enumerate(CROSSRE_DOMAINS)]
    records.append({**records[0], "recall_only": 6.0})  # ai scored again: 6 replaces 0
    text = table(records)
    assert "### soup: a + b" in text
    assert "| crossre-ai | 6 |" in text and "| crossre-ai | 0 |" not in text
    assert "**CrossRE mean** | **3.50**" in text  # (6 + 1 + 2 + 3 + 4 + 5) / 6


def test_centering_lowers_the_relations_that_match_the_corpus_best(tiny_extractor, toy_instances):
    from research.inference_probes import CENTERING_STRENGTHS, centering, centering_offsets

    offsets = centering_offsets(tiny_extractor, toy_instances)
    means = {r: sum(dict(p.recall)[r] for p in tiny_extractor.predict_batch(toy_instances, top_k=None, rerank=False))
             / len(toy_instances) for r in tiny_extractor.index.names}
    assert set(offsets) == set(means)
    assert abs(sum(offsets.values())) < 1e-5  # centred on the mean over all relations
    assert min(offsets, key=offsets.get) == max(means, key=means.get)
    # with the offsets, every relation's mean cosine over the corpus is the same
    shifted = {r: means[r] + offsets[r] for r in means}
    assert max(shifted.values()) - min(shifted.values()) < 1e-5

    before = tiny_extractor.index
    scores = centering(tiny_extractor, toy_instances, dict(zip(before.names, before.texts)), toy_instances)
    assert set(scores) == {f"{rule} {s:g}" for s in CENTERING_STRENGTHS for rule in ("recall", "fused")}
    assert not tiny_extractor.index.offsets  # the model is left as it was
    import emma
    plain = emma.evaluate(tiny_extractor, toy_instances)  # strength 0 is the model as it is
    assert scores["recall 0"] == plain["recall_only"]["f1"] and scores["fused 0"] == plain["emma_fused"]["f1"]
