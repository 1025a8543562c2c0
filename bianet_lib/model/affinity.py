"""The intra-modal correlation matrix and its strong/weak disentangling (Eq. 7, 9, 10, 11).

Normalisation: every row of Q and of K (a channel's response over the spatial positions, or a
position's response over the channels, depending on ``axis``) is L2-normalised, so A holds
cosine similarities in [-1, 1]. Why: Table 6's fixed thresholds 0.01 / 0.1 / 0.2 only have a
meaning on a bounded, scale-free affinity; an unnormalised X X^T grows with the feature norm.

Axis: "channels" gives a C x C affinity (the authors' related code: each channel is a vector
over the H*W positions); "tokens" gives an HW x HW affinity over spatial positions, which is
what the attention maps over face images show.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def to_rows(x: torch.Tensor, axis: str) -> torch.Tensor:
    """[B, C, H, W] -> the matrix whose rows are correlated: [B, C, HW] or [B, HW, C]."""
    flat = x.flatten(2)
    return flat if axis == "channels" else flat.transpose(1, 2)


def from_rows(rows: torch.Tensor, axis: str, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`to_rows` for a map of the given [B, C, H, W] shape."""
    flat = rows if axis == "channels" else rows.transpose(1, 2)
    return flat.reshape(shape)


def affinity(q_rows: torch.Tensor, k_rows: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Eq. 9: A = X X^T, here between query and key rows, cosine-normalised (see module doc).

    ``center`` subtracts each matrix's mean row first (departure, why: post-ReLU maps share one
    direction that dominates every row, so the uncentred cosines all pile near +-1 and the
    thresholds of Eq. 10-11 only split by sign; centred, A compares how rows differ).
    """
    if center:
        q_rows = q_rows - q_rows.mean(dim=1, keepdim=True)
        k_rows = k_rows - k_rows.mean(dim=1, keepdim=True)
    return F.normalize(q_rows, dim=-1, eps=1e-6) @ F.normalize(k_rows, dim=-1, eps=1e-6).transpose(1, 2)


def split_affinity(a: torch.Tensor, epsilon: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 10 and Eq. 11 read literally, for teaching and for the invariants.

    A_hat (Eq. 10, "clamp(A, eps)") keeps the strong correlations A >= eps and zeroes the rest
    (we read clamp as a truncation; flooring at eps would leave every weak entry in play).
    A_tilde (Eq. 11) = ReLU(-(ReLU(A) - eps)) = max(0, eps - max(0, A)): zero where A >= eps.
    Their supports are complementary (for eps > 0), but A_hat + A_tilde != A.
    """
    strong = a >= epsilon
    a_hat = torch.where(strong, a, torch.zeros_like(a))
    a_tilde = F.relu(-(F.relu(a) - epsilon))
    return a_hat, a_tilde


def strong_gate_log(a: torch.Tensor, epsilon: torch.Tensor, sharpness: float) -> torch.Tensor:
    """log of a soft indicator [A >= eps]: 0 on strong entries, very negative on weak ones.

    Added to softmax logits it drops the weak entries the way -inf would (a zeroed logit
    would still get weight exp(0) = 1), yet stays differentiable in eps so eps can be learned;
    as ``sharpness`` -> 0 it becomes the hard -inf mask of Eq. 10. The row maximum is always
    kept strong so that no row is empty.
    """
    z = (a - epsilon) / sharpness
    row_max = a.amax(dim=-1, keepdim=True)
    return torch.where(a >= row_max, torch.zeros_like(z), F.logsigmoid(z))


def weak_gate_log(a: torch.Tensor, epsilon: torch.Tensor, sharpness: float) -> torch.Tensor:
    """log of a soft indicator [A < eps], the complement of :func:`strong_gate_log`.

    The row minimum is always kept weak so that no row is empty.
    """
    z = (epsilon - a) / sharpness
    row_min = a.amin(dim=-1, keepdim=True)
    return torch.where(a <= row_min, torch.zeros_like(z), F.logsigmoid(z))


class Threshold(nn.Module):
    """The disentangling threshold epsilon of Eq. 10-11: fixed, learned scalar, or adaptive.

    - "fixed": a constant (Table 6: 0.01, 0.1, 0.2).
    - "learned": one scalar per module, trained with the network (the paper's "self-learned").
    - "adaptive": per sample and row, as in the authors' related adaptive-threshold attention:
      an MLP on [row max, column max] of |A| gives a sigmoid factor; times the row mean of |A|
      it is the threshold.
    Default "learned": it is the paper's preferred setting (Table 6) and, unlike "adaptive",
    it is a single number a reader can watch move during training.
    """

    def __init__(self, mode: str = "learned", epsilon: float = 0.1, hidden: int = 16):
        super().__init__()
        self.mode = mode
        if mode == "fixed":
            self.register_buffer("value", torch.tensor(float(epsilon)))
        elif mode == "learned":
            # eps = tanh(theta) keeps the threshold inside the cosine range (-1, 1)
            self.theta = nn.Parameter(torch.tensor(math.atanh(float(epsilon))))
        elif mode == "adaptive":
            self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            raise ValueError(f"unknown epsilon mode {mode!r}: expected fixed, learned or adaptive")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Epsilon broadcastable against A [B, N, N]: a scalar tensor or [B, N, 1]."""
        if self.mode == "fixed":
            return self.value
        if self.mode == "learned":
            return torch.tanh(self.theta)
        mag = a.abs()
        stats = torch.stack([mag.amax(dim=-1), mag.amax(dim=-2)], dim=-1)  # [B, N, 2]
        factor = torch.sigmoid(self.mlp(stats))  # [B, N, 1]
        return factor * mag.mean(dim=-1, keepdim=True)
