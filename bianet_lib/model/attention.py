"""Positive and Negative Intervention Attention (Eq. 12-19) and the module that holds both.

Both branches read one correlation matrix A (Eq. 9) of the query/key projections and split it
with one threshold epsilon (Eq. 10-11): PIA aggregates over the strong part, NIA over the weak
part. The "X" the paper multiplies by is, here, the value projection V; a 1x1 convolution maps
the result back to the encoder's width so the fusion of Eq. 14 and the shared generator see
the encoder's shape. Why: Q/K/V reduce the channels (512 -> 128 in the authors' code), so the
attended map must be projected back before it can be mixed with X.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bianet_lib.model.affinity import (
    Threshold,
    affinity,
    from_rows,
    strong_gate_log,
    to_rows,
    weak_gate_log,
)


def positive_attention(a: torch.Tensor, epsilon: torch.Tensor, tau1: float,
                       sharpness: float, truncation: str = "drop") -> torch.Tensor:
    """Eq. 10 + 12: softmax(tau_1 * A_hat).

    "drop" (default): the weak entries are dropped (a soft -inf gate), not zeroed.
    "zero" (literal): A_hat = A on strong entries and 0 on weak ones, so every weak entry keeps
    weight exp(0) = 1; ``sharpness`` 0 is the hard truncation (no gradient to epsilon from
    here), > 0 multiplies A by sigmoid((A - eps) / sharpness) instead.
    """
    if truncation == "zero":
        return torch.softmax(tau1 * strong_part(a, epsilon, sharpness), dim=-1)
    return torch.softmax(tau1 * a + strong_gate_log(a, epsilon, sharpness), dim=-1)


def strong_part(a: torch.Tensor, epsilon: torch.Tensor, sharpness: float) -> torch.Tensor:
    """A_hat of Eq. 10 read as a zeroing truncation: A where A >= eps, else 0 (soft when sharpness > 0)."""
    if sharpness == 0:
        return torch.where(a >= epsilon, a, torch.zeros_like(a))
    return a * torch.sigmoid((a - epsilon) / sharpness)


def nia_drop_mask(a: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 17: d = -inf with probability p, else 0, never on a row's weakest entry.

    Keeping the row minimum (which the weak gate always admits) means no row is ever fully
    masked, so the softmax of Eq. 15 cannot produce NaN even as p -> 1.
    """
    u = torch.rand(a.shape, device=a.device, dtype=a.dtype, generator=generator)
    drop = u < p
    # the row minimum's one-hot (scatter, not F.one_hot: that reads its indices on the host)
    protected = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, a.argmin(dim=-1, keepdim=True), True)
    return torch.zeros_like(a).masked_fill(drop & ~protected, float("-inf"))


def negative_attention(a: torch.Tensor, epsilon: torch.Tensor, sharpness: float,
                       drop: torch.Tensor | None = None, tau: float = 1.0,
                       truncation: str = "drop") -> torch.Tensor:
    """Eq. 11 + 15: softmax(tau A_tilde + d).

    A_tilde is Eq. 11 literally. "drop" (default): the strong entries are dropped with the
    complement of PIA's gate, because the literal A_tilde is 0 there and softmax would still
    give them weight 1. "zero" (literal): they keep that weight exp(0) = 1.
    ``tau`` is not in the paper (Eq. 15 has no temperature; tau = 1 is literal): A_tilde lies
    in [0, eps], so with tau = 1 the weights differ by at most a factor exp(eps), near uniform.
    """
    a_tilde = F.relu(-(F.relu(a) - epsilon))
    logits = tau * a_tilde
    if truncation != "zero":
        logits = logits + weak_gate_log(a, epsilon, sharpness)
    if drop is not None:
        logits = logits + drop
    return torch.softmax(logits, dim=-1)


def bidirectional_attention(x_rows: torch.Tensor, tau2: float, center: bool = False) -> torch.Tensor:
    """Eq. 18-19: A' = X~ X~^T, then softmax(+tau_2 A') X~ + softmax(-tau_2 A') X~."""
    a2 = affinity(x_rows, x_rows, center)
    return torch.softmax(tau2 * a2, dim=-1) @ x_rows + torch.softmax(-tau2 * a2, dim=-1) @ x_rows


class ChannelMask(nn.Module):
    """The SE-style mask of Eq. 14, from average- and max-pooled channel statistics.

    "joint" (default, a departure): sigmoid(SE(avg) + SE(max)), so that m stays in (0, 1) and
    Eq. 14 stays a convex mix. "sum": the authors' sigmoid(SE(avg)) + sigmoid(SE(max)) in (0, 2).
    """

    def __init__(self, channels: int, reduction: int = 4, form: str = "joint"):
        super().__init__()
        if form not in ("joint", "sum"):
            raise ValueError(f"unknown SE mask form {form!r}: expected joint or sum")
        self.form = form
        hidden = max(channels // reduction, 4)
        self.se = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.adaptive_avg_pool2d(x, 1)
        mx = F.adaptive_max_pool2d(x, 1)
        if self.form == "sum":
            return torch.sigmoid(self.se(avg)) + torch.sigmoid(self.se(mx))
        return torch.sigmoid(self.se(avg) + self.se(mx))


@dataclass
class InterventionOutput:
    """What one pass of :class:`BidirectionalIntervention` produces."""

    positive: torch.Tensor  # X-bar of Eq. 14 (or X when PIA is off), [B, C, H, W]
    negative: torch.Tensor | None  # X~ of Eq. 19, [B, C, H, W], None when NIA is off
    affinity: torch.Tensor  # A of Eq. 9, [B, N, N]
    epsilon: torch.Tensor  # the threshold used, scalar or [B, N, 1]
    positive_attention: torch.Tensor | None  # softmax(tau_1 A_hat), [B, N, N]
    negative_attention: torch.Tensor | None  # softmax(A_tilde + d), [B, N, N]


class BidirectionalIntervention(nn.Module):
    """PIA (Eq. 12-14) and NIA (Eq. 15-19) on one encoder map, sharing A and epsilon."""

    def __init__(self, channels: int, attn_channels: int, *, axis: str = "channels",
                 epsilon_mode: str = "learned", epsilon: float = 0.1, gate_sharpness: float = 0.05,
                 tau1: float = 5.0, tau2: float = 10.0, drop_p: float = 0.1,
                 use_pia: bool = True, use_nia: bool = True, center: bool = False,
                 tau_nia: float = 1.0, pia_norm: str = "instance", truncation: str = "drop",
                 se_mask: str = "joint"):
        super().__init__()
        self.axis, self.tau1, self.tau2, self.tau_nia, self.center = axis, tau1, tau2, tau_nia, center
        self.truncation = truncation
        self.sharpness, self.drop_p = gate_sharpness, drop_p
        self.use_pia, self.use_nia = use_pia, use_nia
        # centred token rows: a bias adds one vector to every row, which the centring removes
        qk_bias = not (center and axis == "tokens")
        self.query = nn.Conv2d(channels, attn_channels, 1, bias=qk_bias)
        self.key = nn.Conv2d(channels, attn_channels, 1, bias=qk_bias)
        self.value = nn.Conv2d(channels, attn_channels, 1)
        self.threshold = Threshold(epsilon_mode, epsilon)
        if use_pia:
            # IN removes any per-channel constant, so a bias before it would get no gradient
            self.pia_out = nn.Conv2d(attn_channels, channels, 1, bias=pia_norm != "instance")
            # "instance": the paper's IN; "layer": one group over the whole map (see config.pia_norm)
            self.pia_norm = (nn.InstanceNorm2d(channels) if pia_norm == "instance"
                             else nn.GroupNorm(1, channels))
            self.pia_mask = ChannelMask(channels, form=se_mask)
        if use_nia:
            self.nia_out = nn.Conv2d(attn_channels, channels, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of the first version carry a bias on pia_out (before IN) and on query/key
        # (before centring); both are removed exactly by what follows them, so dropping them
        # leaves every output unchanged
        for name in ("pia_out", "query", "key"):
            layer = getattr(self, name, None)
            if layer is not None and layer.bias is None:
                state_dict.pop(f"{prefix}{name}.bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> InterventionOutput:
        q, k, v = self.query(x), self.key(x), self.value(x)
        v_rows = to_rows(v, self.axis)
        a = affinity(to_rows(q, self.axis), to_rows(k, self.axis), self.center)  # Eq. 9
        eps = self.threshold(a)
        positive, pos_attn = x, None
        if self.use_pia:
            pos_attn = positive_attention(a, eps, self.tau1, self.sharpness, self.truncation)
            x_hat = self.pia_out(from_rows(pos_attn @ v_rows, self.axis, v.shape))  # Eq. 12
            m = self.pia_mask(x)
            positive = (1 - m) * x + m * self.pia_norm(x_hat)  # Eq. 14
        negative, neg_attn = None, None
        if self.use_nia:
            drop = nia_drop_mask(a, self.drop_p) if self.training and self.drop_p > 0 else None
            neg_attn = negative_attention(a, eps, self.sharpness, drop, self.tau_nia, self.truncation)
            x_tilde = bidirectional_attention(neg_attn @ v_rows, self.tau2, self.center)  # Eq. 15, 18-19
            negative = self.nia_out(from_rows(x_tilde, self.axis, v.shape))
        return InterventionOutput(positive, negative, a, eps, pos_attn, neg_attn)


class TokenSelfAttention(nn.Module):
    """The control arm: X + W_o softmax(Q K^T / sqrt(d)) V over the map's positions (tokens).

    Same place as :class:`BidirectionalIntervention` (between encoder and generator) and, with
    :func:`control_width`, the same number of parameters (within 1%), but none of BIANet's ideas: no
    threshold, no strong/weak split, no mask, no negative branch. A gain of BIANet over the
    baseline that this control also shows is capacity, not intervention.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.width = width
        self.query = nn.Conv2d(channels, width, 1)
        self.key = nn.Conv2d(channels, width, 1, bias=False)  # q . b is one constant per row: cancels in softmax
        self.value = nn.Conv2d(channels, width, 1)
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (to_rows(f(x), "tokens") for f in (self.query, self.key, self.value))
        attn = torch.softmax(q @ k.transpose(1, 2) / self.width ** 0.5, dim=-1)
        return x + self.out(from_rows(attn @ v, "tokens", (x.shape[0], self.width, *x.shape[2:])))


def control_width(channels: int, target_params: int) -> int:
    """The width whose :class:`TokenSelfAttention` has the parameter count closest to ``target``:
    4 C w + 2 w + C parameters (four 1x1 convolutions, the key's without bias)."""
    return max(1, round((target_params - channels) / (4 * channels + 2)))
