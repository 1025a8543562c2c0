"""Ground-truth token masks in the model (issue 25): the encoder maps' token grids, the oracle
arm's masked pooling, and the supervised-attention arm's auxiliary loss.

A mask is bool [B, N] over a map's N = H * W tokens (row-major, as ``to_rows(..., "tokens")``);
True marks an interfered token (``data.interference.MASK_THRESHOLD`` of it covered).

* ``config.token_masks = "oracle"`` (PIA/NIA off): the generator pools over the clean tokens
  only (``masked_mean_pool``), in training and at test time (``engine.scoring.BIANetScorer``).
* ``config.token_masks = "supervised"`` (PIA and NIA on): ``attention_supervision_loss`` pushes
  PIA's attention mass off and NIA's onto the interfered tokens; the model never sees a mask,
  and is tested without one.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from bianet_lib.config import BIANetConfig

#: Config fields that set the encoders' map shapes.
_MAP_FIELDS = ("face_encoder", "audio_encoder", "face_size", "face_widths", "audio_widths", "audio_blocks",
               "face_strides", "encoder_map", "n_mels", "clip_seconds")


def map_grids(cfg: BIANetConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """((H, W) of the face map, (H, W) of the voice map) the config's encoders produce, read by
    running them on a zero batch (never assumed from strides)."""
    return _map_grids(tuple((f, getattr(cfg, f)) for f in _MAP_FIELDS))


@lru_cache(maxsize=16)
def _map_grids(fields: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    from bianet_lib.data.types import SAMPLE_RATE
    from bianet_lib.model.encoders import AudioEncoder, FaceEncoder

    c = dict(fields)
    face = FaceEncoder(c["face_encoder"], c["face_widths"], None, c["face_strides"], c["encoder_map"]).eval()
    voice = AudioEncoder(c["audio_encoder"], c["audio_widths"], c["audio_blocks"], c["n_mels"], c["encoder_map"]).eval()
    with torch.no_grad():
        f = face(torch.zeros(1, 3, c["face_size"], c["face_size"]))
        v = voice(torch.zeros(1, int(round(c["clip_seconds"] * SAMPLE_RATE))))
    return (int(f.shape[-2]), int(f.shape[-1])), (int(v.shape[-2]), int(v.shape[-1]))


def masked_mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, C]: the mean of map x [B, C, H, W] over the tokens where ``mask`` [B, H * W] is False;
    a sample with every token masked keeps them all (its plain mean)."""
    b, c = x.shape[:2]
    keep = (~mask.bool()).to(x.dtype).reshape(b, 1, -1)
    keep = torch.where(keep.sum(-1, keepdim=True) > 0, keep, torch.ones_like(keep))
    return (x.reshape(b, c, -1) * keep).sum(-1) / keep.sum(-1)


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
