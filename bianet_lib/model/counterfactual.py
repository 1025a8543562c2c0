"""Counterfactual inference with the curriculum weight (Eq. 8, 20-22).

Eq. 22 as printed, -log(P_cp - (1 - cos(pi * epoch / N)) * P_cn), is ill-posed: the weight runs
from 0 to 2 and the argument of the log turns negative as soon as w * P_cn > P_cp. We default to
the standard counterfactual form on logits (counterfactual attention learning, counterfactual
VQA): z = z_pos - w(epoch) * z_neg with w = (1 - cos(pi * epoch / N)) / 2 rising from 0 to 1,
cross-entropy on softmax(z); the same z is the prediction at test time (w = w(N) = 1). The
literal form stays available as ``curriculum="paper"`` so a notebook can show it break.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LITERAL_FLOOR = 1e-6


def curriculum_weight(epoch: float, total: float, mode: str = "cosine") -> float:
    """The weight w(epoch) of the negative prediction (Eq. 22's cosine schedule).

    "cosine": (1 - cos(pi * e / N)) / 2, from 0 to 1 (our default; w(0) = 0, w(N) = 1).
    "paper": 1 - cos(pi * e / N), Eq. 22 as printed, from 0 to 2.
    "constant": 1 from the first step (the "without curriculum" row of Table 7).
    "off": 0, no negative prediction (used when NIA is off).
    """
    if total <= 0:
        raise ValueError(f"curriculum length must be positive, got {total}")
    progress = min(max(epoch / total, 0.0), 1.0)
    if mode == "cosine":
        return (1.0 - math.cos(math.pi * progress)) / 2.0
    if mode == "paper":
        return 1.0 - math.cos(math.pi * progress)
    if mode == "constant":
        return 1.0
    if mode == "off":
        return 0.0
    raise ValueError(f"unknown curriculum {mode!r}: expected cosine, paper, constant or off")


def counterfactual_logits(z_pos: torch.Tensor, z_neg: torch.Tensor | None, w: float) -> torch.Tensor:
    """TIE-style prediction (Eq. 8): the factual logits minus w times the intervened ones."""
    return z_pos if z_neg is None or w == 0 else z_pos - w * z_neg


def counterfactual_loss(z_pos: torch.Tensor, z_neg: torch.Tensor | None, target: torch.Tensor,
                        w: float, literal: bool = False) -> torch.Tensor:
    """Eq. 22. Default: cross-entropy on z = z_pos - w z_neg.

    ``literal=True``: -log(P_cp[y] - w P_cn[y]) with P = softmax (Eq. 20-21), the argument
    floored at 1e-6 because it is often <= 0, where the printed loss is undefined.
    """
    if not literal or z_neg is None:
        return F.cross_entropy(counterfactual_logits(z_pos, z_neg, w), target)
    p_cp = torch.softmax(z_pos, dim=-1).gather(1, target[:, None])
    p_cn = torch.softmax(z_neg, dim=-1).gather(1, target[:, None])
    return -torch.log((p_cp - w * p_cn).clamp_min(LITERAL_FLOOR)).mean()


def literal_argument_invalid_fraction(z_pos: torch.Tensor, z_neg: torch.Tensor,
                                      target: torch.Tensor, w: float) -> float:
    """Share of samples where Eq. 22's log argument P_cp - w P_cn is <= 0 (undefined loss)."""
    p_cp = torch.softmax(z_pos, dim=-1).gather(1, target[:, None])
    p_cn = torch.softmax(z_neg, dim=-1).gather(1, target[:, None])
    return float(((p_cp - w * p_cn) <= 0).float().mean())
