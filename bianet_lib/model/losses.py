"""The training losses besides Eq. 22: the adversarial game on H and the metric losses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VOICE, FACE = 1, 0


def discriminator_loss(logits_voice: torch.Tensor, logits_face: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the modality discriminator (voice 1, face 0), on detached embeddings."""
    return _modality_ce(logits_voice, VOICE) + _modality_ce(logits_face, FACE)


def generator_adversarial_loss(logits_voice: torch.Tensor, logits_face: torch.Tensor,
                               target: str = "confusion") -> torch.Tensor:
    """The generator's side of the game.

    "flipped": the discriminator's cross-entropy with flipped labels (the authors' code).
    "confusion" (default): cross-entropy against (1/2, 1/2) for every sample, minimum 2 ln 2.
    Departure, why: flipped labels reward swapping the modalities' sides, which a linear
    discriminator lets the generator do in a few steps; once the discriminator could see (one
    joint batch), cpu-small measured a discriminator loss of 2.8 > 2 ln 2 and matching still at
    chance after an epoch. The confusion target asks for what the paper wants: modalities the
    discriminator cannot tell apart.
    """
    if target == "flipped":
        return _modality_ce(logits_voice, FACE) + _modality_ce(logits_face, VOICE)
    if target == "confusion":
        return -(F.log_softmax(logits_voice, dim=1).mean(1).mean() + F.log_softmax(logits_face, dim=1).mean(1).mean())
    raise ValueError(f"unknown adversarial target {target!r}: expected confusion or flipped")


def _modality_ce(logits: torch.Tensor, label: int) -> torch.Tensor:
    return F.cross_entropy(logits, torch.full((len(logits),), label, device=logits.device))


def lifted_structure_loss(voice: torch.Tensor, face: torch.Tensor, margin: float = 1.2) -> torch.Tensor:
    """Lifted-structure loss (Oh Song et al.) on voice-face distances, as the authors' code.

    Row i of ``voice`` and ``face`` is the same identity; every other pair is negative:
    J_ii = log(sum_j exp(m - D_ij) + sum_j exp(m - D_ji)) + D_ii, loss = mean relu(J_ii)^2 / 2.
    """
    dist = torch.cdist(voice, face)
    n = len(dist)
    off = ~torch.eye(n, dtype=torch.bool, device=dist.device)
    neg_rows = (margin - dist).masked_fill(~off, float("-inf"))
    j = torch.logsumexp(torch.cat([neg_rows, neg_rows.T], dim=1), dim=1) + dist.diagonal()
    return (F.relu(j) ** 2).mean() / 2


def info_nce_loss(voice: torch.Tensor, face: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarity (the contrastive family of Wen et al. and peers)."""
    logits = F.normalize(voice, dim=1) @ F.normalize(face, dim=1).T / temperature
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def metric_loss(kind: str, voice: torch.Tensor, face: torch.Tensor, margin: float) -> torch.Tensor:
    if kind == "lifted":
        return lifted_structure_loss(voice, face, margin)
    if kind == "infonce":
        return info_nce_loss(voice, face)
    raise ValueError(f"unknown metric loss {kind!r}")


def adversarial_ramp(progress: float, schedule: str = "dann") -> float:
    """The weight factor of the generator's adversarial loss at ``progress`` in [0, 1] of training.

    "dann": 2 / (1 + exp(-10 p)) - 1, from 0 to about 1 (Ganin and Lempitsky's schedule for a
    domain-adversarial game); "constant": 1. The paper gives no schedule. Departure, why: a live
    discriminator from the first step pulls the random initial embeddings towards each other
    before they carry any identity (measured at initialisation: its gradient on the embeddings is
    30-80% of the metric loss's), and cpu-small then stayed near chance for two epochs.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "dann":
        p = min(max(progress, 0.0), 1.0)
        return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0
    raise ValueError(f"unknown adversarial schedule {schedule!r}: expected dann or constant")


# --- the supervised-attention arm (config.token_masks="supervised", issue 25) -----------------------
def attention_mass(attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: the mean over query rows of the attention [B, N, N] on the masked tokens [B, N]."""
    return (attn.float() @ mask.float()[..., None])[..., 0].mean(-1)


def attention_supervision_loss(outputs, masks, eps: float = 1e-6) -> torch.Tensor:
    """Mean over the modalities' samples that carry interference (some but not every token
    masked) of -log(1 - PIA's mass on the mask) - log(NIA's mass on it): 0 when every PIA row
    avoids the interfered tokens and every NIA row lies on them.

    ``outputs``: the InterventionOutput of each modality (``Embedding.maps``), ``masks`` the
    matching bool [B, N] masks (None entries are skipped). 0 (with a graph) when no sample has any."""
    terms = []
    if masks is None:
        raise ValueError("attention_supervision_loss needs the batch's token masks (config.token_masks='supervised')")
    for out, mask in zip(outputs, masks, strict=True):
        if out is None or mask is None:
            continue
        m = mask.bool()
        use = m.any(-1) & ~m.all(-1)
        if not use.any():
            continue
        for attn, toward in ((out.positive_attention, False), (out.negative_attention, True)):
            if attn is None:
                continue
            mass = attention_mass(attn[use], m[use]).clamp(eps, 1 - eps)
            terms.append(-torch.log(mass if toward else 1 - mass))
    if not terms:
        ref = next((o.affinity for o in outputs if o is not None), None)
        return torch.zeros(()) if ref is None else ref.sum() * 0.0
    return torch.cat(terms).mean()
