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
