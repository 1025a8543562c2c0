"""Eq. 22: the curriculum weight, the default counterfactual loss, and why the literal one breaks."""

import math

import pytest
import torch
import torch.nn.functional as F

from bianet_lib.model.counterfactual import (
    counterfactual_logits,
    counterfactual_loss,
    curriculum_weight,
    literal_argument_invalid_fraction,
)


def test_cosine_weight_endpoints_and_midpoint():
    assert curriculum_weight(0, 10) == 0.0
    assert curriculum_weight(10, 10) == pytest.approx(1.0)
    assert curriculum_weight(5, 10) == pytest.approx(0.5)
    assert curriculum_weight(2.5, 10) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)


def test_weight_is_monotone_and_clipped():
    ws = [curriculum_weight(e, 20) for e in range(-2, 25)]
    assert all(a <= b for a, b in zip(ws, ws[1:], strict=False))
    assert ws[0] == 0.0 and ws[-1] == pytest.approx(1.0)


def test_paper_literal_weight_reaches_two():
    assert curriculum_weight(10, 10, "paper") == pytest.approx(2.0)
    assert curriculum_weight(10, 10, "constant") == 1.0
    assert curriculum_weight(3, 10, "off") == 0.0
    with pytest.raises(ValueError):
        curriculum_weight(1, 10, "bogus")


def test_default_loss_is_cross_entropy_on_difference():
    z_pos = torch.tensor([[2.0, 0.5], [0.1, 0.3]])
    z_neg = torch.tensor([[1.0, 1.5], [0.2, -0.4]])
    y = torch.tensor([0, 1])
    w = 0.25
    expected = F.cross_entropy(z_pos - w * z_neg, y)
    assert counterfactual_loss(z_pos, z_neg, y, w) == pytest.approx(expected.item())
    # hand value for the first row: z = [1.75, 0.125]
    z0 = torch.tensor([1.75, 0.125])
    assert counterfactual_logits(z_pos, z_neg, w)[0].tolist() == pytest.approx(z0.tolist())


def test_no_negative_branch_means_plain_cross_entropy():
    z = torch.tensor([[0.3, -0.2]])
    y = torch.tensor([1])
    assert counterfactual_loss(z, None, y, 0.7) == pytest.approx(F.cross_entropy(z, y).item())


def test_literal_eq22_is_undefined_when_negative_dominates():
    z_pos = torch.tensor([[0.0, 0.0]])  # P_cp[y] = 0.5
    z_neg = torch.tensor([[5.0, 0.0]])  # P_cn[y] ~ 0.993
    y = torch.tensor([0])
    assert literal_argument_invalid_fraction(z_pos, z_neg, y, 1.0) == 1.0
    loss = counterfactual_loss(z_pos, z_neg, y, 1.0, literal=True)
    assert loss == pytest.approx(-math.log(1e-6))  # floored, the printed loss has no value
    assert literal_argument_invalid_fraction(z_pos, z_neg, y, 0.0) == 0.0
