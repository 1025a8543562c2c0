"""Eq. 9-19 against hand-computed references and their invariants."""

import math

import pytest
import torch

from bianet_lib.model.affinity import (
    Threshold,
    affinity,
    from_rows,
    split_affinity,
    strong_gate_log,
    to_rows,
)
from bianet_lib.model.attention import (
    BidirectionalIntervention,
    bidirectional_attention,
    negative_attention,
    nia_drop_mask,
    positive_attention,
)

A = torch.tensor([[[1.0, 0.3, -0.2], [0.3, 1.0, 0.05], [-0.2, 0.05, 1.0]]])


def test_affinity_is_cosine_between_rows():
    q = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    k = torch.tensor([[[0.0, 2.0], [5.0, 0.0]]])
    expected = torch.tensor([[[0.8, 0.6], [0.0, 1.0]]])
    assert torch.allclose(affinity(q, k), expected)


def test_rows_round_trip_both_axes():
    x = torch.randn(2, 4, 3, 3)
    assert to_rows(x, "channels").shape == (2, 4, 9)
    assert to_rows(x, "tokens").shape == (2, 9, 4)
    for axis in ("channels", "tokens"):
        assert torch.equal(from_rows(to_rows(x, axis), axis, x.shape), x)


def test_split_affinity_hand_values():
    a_hat, a_tilde = split_affinity(A, 0.1)
    assert torch.allclose(a_hat, torch.tensor([[[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]]]))
    # max(0, eps - max(0, A)): 0.1 where A <= 0, 0.05 at A = 0.05, 0 where strong
    assert torch.allclose(a_tilde, torch.tensor([[[0.0, 0.0, 0.1], [0.0, 0.0, 0.05], [0.1, 0.05, 0.0]]]))


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.2])
def test_strong_and_weak_supports_are_complementary(eps):
    a = torch.rand(4, 16, 16) * 2 - 1
    a_hat, a_tilde = split_affinity(a, eps)
    strong, weak = a_hat != 0, a_tilde != 0
    assert not (strong & weak).any()
    assert (strong | weak).all()  # every entry feeds exactly one part
    assert not torch.allclose(a_hat + a_tilde, a)  # the literal Eq. 11 is not A - A_hat


def test_positive_attention_equals_hard_masked_softmax_at_small_sharpness():
    attn = positive_attention(A, torch.tensor(0.1), tau1=5.0, sharpness=1e-4)
    hard = torch.where(A >= 0.1, 5.0 * A, torch.full_like(A, -math.inf)).softmax(-1)
    assert torch.allclose(attn, hard, atol=1e-6)
    assert torch.allclose(attn.sum(-1), torch.ones(1, 3))


def test_weak_entries_really_get_zero_weight_not_exp0():
    # a zeroed logit would get weight exp(0); the gate must push it to ~0
    attn = positive_attention(A, torch.tensor(0.1), tau1=1.0, sharpness=1e-3)
    assert attn[0, 0, 2] < 1e-6 and attn[0, 2, 0] < 1e-6


def test_negative_attention_hand_value():
    attn = negative_attention(A, torch.tensor(0.1), sharpness=1e-4)
    # row 1: only entry 2 (A = 0.05) is weak -> all weight there
    assert torch.allclose(attn[0, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    # row 0: only entry 2 weak
    assert attn[0, 0, 2] > 0.999


def test_rows_never_empty_when_everything_is_strong_or_weak():
    all_strong = torch.full((1, 3, 3), 0.9)
    all_weak = torch.full((1, 3, 3), -0.9)
    eps = torch.tensor(0.1)
    for a in (all_strong, all_weak):
        assert torch.isfinite(positive_attention(a, eps, 5.0, 0.05)).all()
        assert torch.isfinite(negative_attention(a, eps, 0.05)).all()


@pytest.mark.parametrize("p", [0.5, 0.9, 0.999])
def test_nia_drop_mask_never_masks_a_whole_row_so_no_nan(p):
    torch.manual_seed(0)
    a = torch.rand(8, 32, 32) * 2 - 1
    d = nia_drop_mask(a, p)
    assert (d == 0).any(dim=-1).all()
    attn = negative_attention(a, torch.tensor(0.1), 0.05, d)
    assert torch.isfinite(attn).all()
    assert torch.allclose(attn.sum(-1), torch.ones(8, 32), atol=1e-5)
    assert abs((d == -math.inf).float().mean().item() - p) < 0.05


def test_bidirectional_attention_hand_value():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    tau = 2.0
    # A' = identity; softmax(+2I) and softmax(-2I) rows sum to the all-ones mixing matrix
    plus = torch.softmax(tau * torch.eye(2), -1)
    minus = torch.softmax(-tau * torch.eye(2), -1)
    expected = (plus + minus) @ x[0]
    assert torch.allclose(bidirectional_attention(x, tau)[0], expected)
    assert torch.allclose(expected, torch.ones(2, 2))


def test_learned_epsilon_gets_gradient_and_moves():
    torch.manual_seed(0)
    module = BidirectionalIntervention(8, 4, epsilon_mode="learned", epsilon=0.1)
    opt = torch.optim.SGD([module.threshold.theta], lr=0.5)
    x = torch.randn(4, 8, 3, 3)
    before = torch.tanh(module.threshold.theta).item()
    out = module(x)
    (out.positive.square().mean() + out.negative.square().mean()).backward()
    assert module.threshold.theta.grad is not None and module.threshold.theta.grad.abs() > 0
    opt.step()
    assert torch.tanh(module.threshold.theta).item() != pytest.approx(before, abs=1e-6)


def test_adaptive_threshold_is_per_row_and_positive():
    eps = Threshold("adaptive")(A.repeat(2, 1, 1))
    assert eps.shape == (2, 3, 1)
    assert (eps > 0).all()


def test_fixed_threshold_has_no_parameters():
    assert list(Threshold("fixed", 0.2).parameters()) == []


def test_strong_gate_is_zero_on_strong_entries():
    g = strong_gate_log(A, torch.tensor(0.1), 0.05)
    assert torch.all(g[A >= 0.5] == 0)


@pytest.mark.parametrize("axis", ["channels", "tokens"])
def test_intervention_eval_mode_is_deterministic_and_train_mode_random(axis):
    torch.manual_seed(0)
    module = BidirectionalIntervention(8, 4, axis=axis, drop_p=0.5)
    x = torch.randn(3, 8, 3, 3)
    module.eval()
    a, b = module(x), module(x)
    assert torch.equal(a.negative, b.negative) and torch.equal(a.positive, b.positive)
    module.train()
    c, d = module(x), module(x)
    assert not torch.equal(c.negative, d.negative)
    n = 4 if axis == "channels" else 9  # C' = 4 attention channels, or 3x3 tokens
    assert a.positive_attention.shape == (3, n, n)
    assert torch.allclose(a.positive_attention.sum(-1), torch.ones(3, n), atol=1e-5)


def test_fusion_is_identity_when_the_mask_is_closed():
    module = BidirectionalIntervention(8, 4, use_nia=False)
    # force m -> 0: the SE output bias very negative
    with torch.no_grad():
        module.pia_mask.se[-1].bias.fill_(-1e4)
    x = torch.randn(2, 8, 3, 3)
    module.eval()
    assert torch.allclose(module(x).positive, x, atol=1e-5)
    assert module(x).negative is None
