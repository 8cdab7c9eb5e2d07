"""InfoNCE against hand computations, false-negative masking, hard negatives for the classifier."""

from __future__ import annotations

import math

import pytest
import torch

from emma.losses import ExampleBank, InfoNCELoss, hard_negatives, same_relation_mask, swapped_entities

# Unit-free vectors whose cosines are easy to write down.
INSTANCES = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # (2, 2)
DESCRIPTIONS = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (3, 2)
# cos(instance i, description j)
COS = [[1.0, 0.0, 1 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]]


def _hand_infonce(cos, targets, tau, masked=()):
    total = 0.0
    for i, t in enumerate(targets):
        denom = sum(math.exp(c / tau) for j, c in enumerate(cos[i]) if (i, j) not in masked)
        total += -(cos[i][t] / tau) + math.log(denom)
    return total / len(targets)


@pytest.mark.parametrize("tau", [1.0, 0.5, 0.02])
def test_infonce_matches_hand_computation(tau):
    loss = InfoNCELoss(tau)(INSTANCES, DESCRIPTIONS, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(_hand_infonce(COS, [0, 1], tau), rel=1e-5, abs=1e-6)
    swapped = InfoNCELoss(tau)(INSTANCES, DESCRIPTIONS, torch.tensor([2, 0]))
    assert swapped.item() == pytest.approx(_hand_infonce(COS, [2, 0], tau), rel=1e-5)


def test_infonce_wrong_target_costs_more():
    loss = InfoNCELoss(0.5)
    right = loss(INSTANCES, DESCRIPTIONS, torch.tensor([0, 1]))
    wrong = loss(INSTANCES, DESCRIPTIONS, torch.tensor([1, 0]))
    assert wrong.item() == pytest.approx(_hand_infonce(COS, [1, 0], 0.5), rel=1e-5)
    assert wrong > right


def test_false_negative_masking_by_hand():
    tau = 0.5
    loss = InfoNCELoss(tau)
    targets = torch.tensor([0, 1])
    mask = torch.tensor([[False, False, True], [False, False, False]])  # description 2 shares instance 0's relation
    masked = loss(INSTANCES, DESCRIPTIONS, targets, mask).item()
    plain = loss(INSTANCES, DESCRIPTIONS, targets).item()
    assert masked == pytest.approx(_hand_infonce(COS, [0, 1], tau, masked={(0, 2)}), rel=1e-5)
    # exactly the masked term leaves instance 0's denominator
    e = math.exp
    expected_change = (math.log(e(1 / tau) + e(0) + e(COS[0][2] / tau)) - math.log(e(1 / tau) + e(0))) / 2
    assert plain - masked == pytest.approx(expected_change, rel=1e-5)
    # masking every negative leaves a zero loss for that row
    all_neg = torch.tensor([[False, True, True], [True, False, True]])
    assert loss(INSTANCES, DESCRIPTIONS, targets, all_neg).item() == pytest.approx(0.0, abs=1e-6)


def test_extra_negatives_join_each_rows_denominator_by_hand():
    tau = 0.5
    extra = torch.tensor([[0.3], [-0.2]])  # one more negative cosine per instance
    loss = InfoNCELoss(tau)(INSTANCES, DESCRIPTIONS, torch.tensor([0, 1]), extra_negatives=extra).item()
    rows = [row + [x] for row, x in zip(COS, [0.3, -0.2])]
    assert loss == pytest.approx(_hand_infonce(rows, [0, 1], tau), rel=1e-5)


def test_swapped_entities_exchange_the_head_and_tail_parts():
    cls, head, tail = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    assert torch.equal(swapped_entities(torch.cat([cls, head, tail], dim=-1)), torch.cat([cls, tail, head], dim=-1))


def recall_only_batch(model, monkeypatch):
    """A batch of 3 whose recall vectors are fixed random ones (the encoder is not called), the classifier off."""
    inst, desc = torch.randn(3, 24), torch.randn(3, 24)
    model.classifier = None
    monkeypatch.setattr(model.recall, "encode_instances", lambda *args: inst)
    monkeypatch.setattr(model.recall, "encode_descriptions", lambda *args: type("Encoded", (), {"vectors": desc})())
    batch = {key: None for key in ("input_ids", "attention_mask", "head_marker", "tail_marker", "desc_input_ids",
                                   "desc_attention_mask", "desc_content_mask")}
    return inst, desc, batch


def test_swap_negatives_add_each_instance_read_the_other_way_to_its_row(tiny_model, monkeypatch):
    """With swap negatives on, the recall loss is InfoNCE with one more negative per row: the instance with head
    and tail parts swapped against its own description."""
    from emma.losses import JointObjective

    model, tokenizer = tiny_model
    inst, desc, batch = recall_only_batch(model, monkeypatch)
    batch["relation_ids"] = torch.arange(3)
    plain = JointObjective(model, tokenizer)(batch).recall_loss
    swapped = JointObjective(model, tokenizer, swap_negatives=True)(batch).recall_loss
    cos = torch.nn.functional.cosine_similarity(swapped_entities(inst), desc)
    expected = InfoNCELoss(model.config.temperature)(inst, desc, torch.arange(3), extra_negatives=cos[:, None])
    assert swapped.item() == pytest.approx(expected.item(), rel=1e-5) and swapped > plain


def test_example_bank_mixes_as_recall_does_leaving_each_instance_out_of_its_own_prototype():
    """Relation 0 has three rows, relation 1 one: row 0 is scored against relation 0's other two rows (w = 2/7)
    and relation 1's row (w = 1/6); row 3 against relation 0's three rows and no prototype of its own (w = 0)."""
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rel = torch.tensor([0, 0, 0, 1])
    bank = ExampleBank.of(rows * 3, rel, 2)  # lengths do not matter: the bank keeps unit vectors
    queries, descriptions = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    got = bank.mixed_scores(queries, descriptions, torch.tensor([0, 3]), torch.tensor([0, 1]), torch.tensor([0, 1]))

    unit = torch.nn.functional.normalize
    cos = lambda a, b: float(unit(a, dim=0) @ unit(b, dim=0))
    r = unit(rows, dim=-1)

    def mixed(q, d, prototype, n):
        w = n / (n + 5)
        return (1 - w) * cos(q, d) + (w * cos(q, prototype) if n else 0.0)

    expected = [[mixed(queries[0], descriptions[0], r[1] + r[2], 2), mixed(queries[0], descriptions[1], r[3], 1)],
                [mixed(queries[1], descriptions[0], r[0] + r[1] + r[2], 3), mixed(queries[1], descriptions[1], r[3], 0)]]
    assert got.flatten().tolist() == pytest.approx([x for row in expected for x in row], abs=1e-6)


def test_the_prototype_loss_adds_infonce_on_the_mixed_scores(tiny_model, monkeypatch):
    from emma.losses import JointObjective

    model, tokenizer = tiny_model
    inst, desc, batch = recall_only_batch(model, monkeypatch)
    batch |= {"relation_ids": torch.tensor([0, 1, 2]), "instance_index": torch.tensor([4, 0, 2])}
    bank = ExampleBank.of(torch.randn(6, 24), torch.tensor([1, 1, 2, 2, 0, 0]), 3)
    objective = JointObjective(model, tokenizer, prototype_weight=0.5)
    plain = objective(batch).recall_loss
    objective.bank = bank
    with_bank = objective(batch).recall_loss
    mixed = bank.mixed_scores(inst, desc, batch["instance_index"], batch["relation_ids"], batch["relation_ids"])
    expected = plain + 0.5 * torch.nn.functional.cross_entropy(mixed / model.config.temperature, torch.arange(3))
    assert with_bank.item() == pytest.approx(expected.item(), rel=1e-5) and with_bank > plain


def test_infonce_gradient_is_finite_with_masking():
    inst = INSTANCES.clone().requires_grad_(True)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    InfoNCELoss(0.02)(inst, DESCRIPTIONS, torch.tensor([0, 1]), mask).backward()
    assert torch.isfinite(inst.grad).all()


def test_infonce_argument_checks():
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        InfoNCELoss(0)
    loss = InfoNCELoss(0.5)
    with pytest.raises(AssertionError, match="a target cannot be masked"):
        loss(INSTANCES, DESCRIPTIONS, torch.tensor([0, 1]), torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(AssertionError, match="must be \\(B, N\\)"):
        loss(INSTANCES, DESCRIPTIONS, torch.tensor([0, 1]), torch.zeros(2, 2, dtype=torch.bool))


def test_same_relation_mask():
    instance_rel = torch.tensor([7, 8, 7])
    description_rel = torch.tensor([7, 8, 7, 9])
    mask = same_relation_mask(instance_rel, description_rel, torch.tensor([0, 1, 2]))
    assert mask.tolist() == [
        [False, False, True, False],
        [False, False, False, False],
        [True, False, False, False],
    ]


def test_same_relation_mask_across_gathered_batches():
    # rank 1 of 2, batch of 2: its targets sit at 2 and 3 of the 4 gathered descriptions
    local = torch.tensor([5, 6])
    gathered = torch.tensor([6, 1, 5, 6])
    mask = same_relation_mask(local, gathered, torch.tensor([2, 3]))
    assert mask.tolist() == [[False, False, False, False], [True, False, False, False]]


# ----------------------------------------------------------------------------- hard negatives


SCORES = torch.tensor(
    [
        [0.1, 0.9, 0.5, 0.7, 0.3],
        [0.8, 0.2, 0.6, 0.1, 0.4],
    ]
)


def test_hard_negatives_gold_plus_top_others_in_recall_order():
    cand = hard_negatives(SCORES, torch.tensor([0, 1]), None, k=3)
    # row 0: gold 0 (0.1) plus the two best others 1 (0.9), 3 (0.7) → recall order 1, 3, 0
    # row 1: gold 1 (0.2) plus 0 (0.8), 2 (0.6) → 0, 2, 1
    assert cand.tolist() == [[1, 3, 0], [0, 2, 1]]
    assert hard_negatives(SCORES, torch.tensor([1, 4]), None, k=2).tolist() == [[1, 3], [0, 4]]
    assert hard_negatives(SCORES, torch.tensor([2, 3]), None, k=1).tolist() == [[2], [3]]


def test_hard_negatives_never_pick_a_same_relation_description():
    excluded = torch.tensor(
        [
            [False, True, False, False, False],  # description 1 shares row 0's relation
            [True, False, True, False, False],
        ]
    )
    cand = hard_negatives(SCORES, torch.tensor([0, 1]), excluded, k=3)
    assert cand.tolist() == [[3, 2, 0], [4, 1, 3]]
    for row, ex in zip(cand.tolist(), excluded.tolist()):
        assert not any(ex[j] for j in row)
    # the gold one is always among the candidates exactly once
    assert [row.count(t) for row, t in zip(cand.tolist(), [0, 1])] == [1, 1]


def test_hard_negatives_do_not_track_gradients():
    scores = SCORES.clone().requires_grad_(True)
    cand = hard_negatives(scores, torch.tensor([0, 1]), None, k=2)
    assert cand.dtype == torch.long and not cand.requires_grad


def test_hard_negatives_need_enough_eligible_descriptions():
    with pytest.raises(AssertionError, match="k=3"):
        hard_negatives(SCORES[:, :2], torch.tensor([0, 1]), None, k=3)
    # after excluding same-relation descriptions only one other is left: k=3 cannot be filled honestly
    excluded = torch.tensor([[False, True, True, True, False], [False, False, False, False, False]])
    with pytest.raises(AssertionError, match="negatives"):
        hard_negatives(SCORES, torch.tensor([0, 1]), excluded, k=3)
