"""The SynthVox ceiling: a matcher that sees each sample's clean identity parameters.

It reads the modality-observable parameters that the shared latents drive (voice: log F0,
log vocal-tract scale, jitter, breathiness; face: jaw, width, brow, hair length, greyness),
before any interference, and scores a voice-face pair by the log likelihood ratio
log N([v, f]) - log N(v) - log N(f) of one joint Gaussian fitted on TRAIN identities.
Private parameters are left out: they are independent across modalities by construction,
so they add nothing to the ratio but estimation noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bianet_lib.data.trials import MatchingTrials, make_matching_trials
from bianet_lib.data.types import SplitData

VOICE_OBS = ("voice_f0", "voice_vtl_scale", "voice_jitter", "voice_breathiness")
FACE_OBS = ("face_jaw", "face_width", "face_brow", "face_hair_length", "face_greyness")
_LOG = {"voice_f0", "voice_vtl_scale"}  # multiplicative parameters: Gaussian in log space


def _observables(split: SplitData, cols: tuple[str, ...]) -> np.ndarray:
    missing = [c for c in cols if c not in split.identities]
    if missing:
        raise ValueError(f"split {split.name!r} has no SynthVox parameter columns {missing}: "
                         "the oracle only works on SynthVox worlds")
    x = split.identities[list(cols)].to_numpy(dtype=float)
    return np.stack([np.log(x[:, j]) if c in _LOG else x[:, j] for j, c in enumerate(cols)], 1)


class _Gauss:
    def __init__(self, x: np.ndarray):
        self.mu = x.mean(0)
        cov = np.cov(x, rowvar=False) + 1e-9 * np.eye(x.shape[1])
        self.prec = np.linalg.inv(cov)
        self.logdet = np.linalg.slogdet(cov)[1]

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        d = x - self.mu
        return -0.5 * (np.einsum("ni,ij,nj->n", d, self.prec, d) + self.logdet)


@dataclass
class OracleMatcher:
    """Gaussian likelihood-ratio matcher on clean identity parameters; also an evaluator Scorer."""

    joint: _Gauss
    voice: _Gauss
    face: _Gauss

    @classmethod
    def fit(cls, train: SplitData) -> OracleMatcher:
        v, f = _observables(train, VOICE_OBS), _observables(train, FACE_OBS)
        if len(v) <= v.shape[1] + f.shape[1]:
            raise ValueError(f"oracle needs more than {v.shape[1] + f.shape[1]} train identities, "
                             f"got {len(v)}")
        return cls(_Gauss(np.concatenate([v, f], 1)), _Gauss(v), _Gauss(f))

    def llr(self, v: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Log likelihood ratio of voice observables v [..., 4] and face observables f [..., 5]."""
        shape = np.broadcast_shapes(v.shape[:-1], f.shape[:-1])
        v = np.broadcast_to(v, shape + v.shape[-1:]).reshape(-1, v.shape[-1])
        f = np.broadcast_to(f, shape + f.shape[-1:]).reshape(-1, f.shape[-1])
        out = self.joint.logpdf(np.concatenate([v, f], 1)) - self.voice.logpdf(v) - self.face.logpdf(f)
        return out.reshape(shape)

    def scores(self, split: SplitData, voice_idx: np.ndarray, face_idx: np.ndarray) -> np.ndarray:
        """Log likelihood ratio per (voice sample, face sample) pair; higher = same identity."""
        vi = split.voice_meta["identity"].to_numpy()[np.asarray(voice_idx)]
        fi = split.face_meta["identity"].to_numpy()[np.asarray(face_idx)]
        return self.llr(_observables(split, VOICE_OBS)[vi], _observables(split, FACE_OBS)[fi])

    __call__ = scores

    # The evaluator's Scorer protocol (bianet_lib.engine.evaluate). An embedding is
    # [is_voice, 4 voice observables, 5 face observables], the other modality's part zero,
    # so match_logits can tell which side is the voice.
    def embed(self, split: SplitData, modality: str, batch_size: int = 256) -> torch.Tensor:
        meta = split.voice_meta if modality == "voice" else split.face_meta
        idx = meta["identity"].to_numpy()
        out = np.zeros((len(idx), 1 + len(VOICE_OBS) + len(FACE_OBS)))
        if modality == "voice":
            out[:, 0] = 1
            out[:, 1:1 + len(VOICE_OBS)] = _observables(split, VOICE_OBS)[idx]
        else:
            out[:, 1 + len(VOICE_OBS):] = _observables(split, FACE_OBS)[idx]
        return torch.from_numpy(out)

    def verify_scores(self, voice_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
        n = 1 + len(VOICE_OBS)
        return torch.from_numpy(self.llr(voice_emb[..., 1:n].numpy(), face_emb[..., n:].numpy()))

    def match_logits(self, query_emb: torch.Tensor, cand_emb: torch.Tensor) -> torch.Tensor:
        q = query_emb[:, None, :]
        voice_query = bool(query_emb[0, 0] == 1)
        return self.verify_scores(q, cand_emb) if voice_query else self.verify_scores(cand_emb, q)


def matching_accuracy(scorer, split: SplitData, trials: MatchingTrials) -> float:
    """Share of trials whose highest-scored candidate is the target (any scorer of this shape)."""
    q = np.repeat(trials.query, trials.k)
    c = trials.candidates.reshape(-1)
    v, f = (q, c) if trials.direction == "vf" else (c, q)
    s = np.asarray(scorer(split, v, f)).reshape(len(trials), trials.k)
    return float((s.argmax(1) == trials.target).mean())


def oracle_ceilings(train: SplitData, test: SplitData, ks=(2, 5, 10), n_per_identity: int = 50,
                    seed: int = 0) -> dict[int, float]:
    """1:K voice-to-face accuracy of the oracle on ``test`` for each K."""
    oracle = OracleMatcher.fit(train)
    return {k: matching_accuracy(oracle, test, make_matching_trials(test, "vf", k, n_per_identity, seed))
            for k in ks}
