"""BIANet: encoders -> PIA/NIA -> shared embedding -> matching classifier (Eq. 12-22).

Each modality has its own encoder and its own :class:`BidirectionalIntervention`; one shared
"generator" MLP maps both modalities' maps into the 128-d space H (Sec. 4.4), a discriminator
plays the adversarial game on H, and the matching classifier C_m scores a query against K
candidates from exp(h_0 - h_k) (Eq. 20-21). Counterfactual inference (Eq. 22) combines the
positive (PIA) and negative (NIA) predictions: see :mod:`bianet_lib.model.counterfactual`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from bianet_lib.config import BIANetConfig
from bianet_lib.model.attention import (
    BidirectionalIntervention,
    InterventionOutput,
    TokenSelfAttention,
    control_width,
)
from bianet_lib.model.counterfactual import counterfactual_logits
from bianet_lib.model.encoders import MAP_SIZE, AudioEncoder, FaceEncoder


def masked_mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, C]: the oracle arm's pooling (config.token_masks="oracle", issue 25): the mean of map x [B, C, H, W] over the tokens where ``mask`` [B, H * W] is False;
    a sample with every token masked keeps them all (its plain mean)."""
    b, c = x.shape[:2]
    keep = (~mask.bool()).to(x.dtype).reshape(b, 1, -1)
    keep = torch.where(keep.sum(-1, keepdim=True) > 0, keep, torch.ones_like(keep))
    return (x.reshape(b, c, -1) * keep).sum(-1) / keep.sum(-1)



class SharedEmbedding(nn.Module):
    """The "generator" that maps both modalities' C x 3 x 3 maps into the shared space H.

    "paper": flatten -> 256 (BN, LeakyReLU 0.2, dropout 0.1) -> 128 (BN, Tanh), spectral norm
    on the linears, as the authors' related code (without biases: batch norm removes them).
    "linear": global average pool -> linear C -> 128 -> Tanh. Departure for the CPU preset:
    on SynthVox the batch-normalised layers kept the contrastive loss at chance for the first
    hundreds of steps (measured), while this head learns at once.
    Both end in Tanh rather than L2 normalisation, because exp(h_0 - h_k) of unit vectors in
    128-d is about 1 +- 0.1 and C_m cannot learn from it.
    """

    def __init__(self, channels: int, map_size: int, hidden: int = 256, out: int = 128,
                 kind: str = "paper", dropout: float = 0.1):
        super().__init__()
        if kind == "paper":
            self.net = nn.Sequential(
                nn.Flatten(), spectral_norm(nn.Linear(channels * map_size * map_size, hidden, bias=False)),
                nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                spectral_norm(nn.Linear(hidden, out, bias=False)), nn.BatchNorm1d(out), nn.Tanh())
        elif kind == "linear":
            self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, out),
                                     nn.Tanh())
        else:
            raise ValueError(f"unknown generator {kind!r}: expected paper or linear")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding of maps x; with ``mask`` (bool [B, H * W], "linear" only) the average
        pool runs over the unmasked tokens (``masked_mean_pool``; the oracle arm)."""
        if mask is None:
            return self.net(x)
        if not isinstance(self.net[0], nn.AdaptiveAvgPool2d):
            raise ValueError("masked pooling needs the 'linear' generator (global average pool)")
        return self.net[2:](masked_mean_pool(x, mask))


class ModalityDiscriminator(nn.Module):
    """Linear 128 -> 2 after batch norm; class 1 = voice, 0 = face (authors' code).

    Call it on ONE batch holding both modalities (:meth:`BIANet.discriminate`): batch norm over a
    voice-only and then a face-only batch standardises each modality on its own and erases the
    very difference it must see (the first version's loss sat at 2 ln 2 in every epoch).
    """

    def __init__(self, dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, 2))

    def forward(self, h: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Modality logits [N, 2]. ``frozen``: the same computation (batch statistics, running
        statistics updated as in training) with the weights detached, so the generator's
        adversarial loss reaches ``h`` but never the discriminator (the ops of ``self.net``,
        called directly rather than through ``torch.func.functional_call``)."""
        if not frozen:
            return self.net(h)
        bn, linear = self.net
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)  # what BatchNorm1d.forward does with momentum set
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight.detach(), bn.bias.detach(),
                         bn.training, bn.momentum, bn.eps)
        return F.linear(h, linear.weight.detach(), linear.bias.detach())


class MatchingClassifier(nn.Module):
    """C_m of Eq. 20-21 on the features exp(h_0 - h_k), k = 1..K.

    "tied": one linear scorer shared by every candidate slot (dropout 0.1 first), so the same
    head serves any K, is invariant to candidate order, and with K = 1 is the verification head.
    "paper": dropout -> linear K*D -> K on the concatenation, as the paper implies; fixed K.
    """

    def __init__(self, dim: int = 128, mode: str = "tied", k: int = 2, dropout: float = 0.1):
        super().__init__()
        self.mode, self.k = mode, k
        self.dropout = nn.Dropout(dropout)
        self.slot = nn.Linear(dim, 1)
        if mode == "paper":
            self.mix = nn.Linear(k * dim, k)
        elif mode != "tied":
            raise ValueError(f"unknown matching head {mode!r}: expected tied or paper")

    def forward(self, query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """query [T, D], candidates [T, K, D] -> logits [T, K]."""
        feats = self.dropout(torch.exp(query[:, None, :] - candidates))
        if self.mode == "tied":
            return self.slot(feats).squeeze(-1)
        if candidates.shape[1] != self.k:
            raise ValueError(f"the paper's matching head was built for K={self.k}, "
                             f"got {candidates.shape[1]} candidates; use matching_head='tied'")
        return self.mix(feats.flatten(1))

    def verify(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """Verification (one candidate): the slot scorer's logit for the pair, [T]."""
        return self.slot(self.dropout(torch.exp(voice - face))).squeeze(-1)


@dataclass
class Embedding:
    """The shared-space embeddings of a batch of samples of one modality."""

    positive: torch.Tensor  # h-hat (Eq. 20), [N, D]
    negative: torch.Tensor | None  # h-tilde (Eq. 21), [N, D], None without NIA
    maps: InterventionOutput | None  # attention internals, for the notebooks

    def stacked(self) -> torch.Tensor:
        """[N, 2, D] (positive, negative) or [N, 1, D]: one tensor for the evaluator."""
        parts = [self.positive] + ([self.negative] if self.negative is not None else [])
        return torch.stack(parts, dim=1)


class BIANet(nn.Module):
    """The whole network. With use_pia = use_nia = False it is the paper's baseline (Table 5a)."""

    def __init__(self, cfg: BIANetConfig):
        super().__init__()
        self.cfg = cfg
        self.face_encoder = FaceEncoder(cfg.face_encoder, cfg.face_widths, cfg.face_weights,
                                        cfg.face_strides, cfg.encoder_map)
        self.voice_encoder = AudioEncoder(cfg.audio_encoder, cfg.audio_widths, cfg.audio_blocks,
                                          cfg.n_mels, cfg.encoder_map)
        channels = self.face_encoder.out_channels
        if self.voice_encoder.out_channels != channels:
            raise ValueError("face and voice encoders must end in the same width for the shared "
                             f"generator: {channels} != {self.voice_encoder.out_channels}")
        self.face_intervention = self._intervention(channels)
        self.voice_intervention = self._intervention(channels)
        self.face_control = self.voice_control = None
        if cfg.control_attention:  # as many parameters as BIANet's module (PIA + NIA) would have
            reference = sum(p.numel() for p in self._intervention(channels, force=True).parameters())
            width = control_width(channels, reference)
            self.face_control = TokenSelfAttention(channels, width)
            self.voice_control = TokenSelfAttention(channels, width)
        self.generator = SharedEmbedding(channels, MAP_SIZE, cfg.hidden_dim, cfg.embed_dim, cfg.generator)
        self.discriminator = ModalityDiscriminator(cfg.embed_dim)
        self.classifier = MatchingClassifier(cfg.embed_dim, cfg.matching_head, cfg.k)
        if cfg.channels_last:  # NHWC conv weights; inputs follow in embed_faces / AudioEncoder
            self.to(memory_format=torch.channels_last)

    def _intervention(self, channels: int, force: bool = False) -> BidirectionalIntervention | None:
        cfg = self.cfg
        if force:  # the full module (PIA and NIA), to size the control arm
            cfg = BIANetConfig(**{**cfg.to_dict(), "use_pia": True, "use_nia": True,
                                  "control_attention": False})
        elif not (cfg.use_pia or cfg.use_nia):
            return None
        return BidirectionalIntervention(
            channels, cfg.attn_channels, axis=cfg.affinity_axis, epsilon_mode=cfg.epsilon_mode,
            epsilon=cfg.epsilon, gate_sharpness=cfg.gate_sharpness, tau1=cfg.tau1, tau2=cfg.tau2,
            drop_p=cfg.nia_drop_p, use_pia=cfg.use_pia, use_nia=cfg.use_nia,
            center=cfg.affinity_center, tau_nia=cfg.tau_nia, pia_norm=cfg.pia_norm,
            truncation=cfg.truncation, se_mask=cfg.se_mask)

    def forward(self, voices: torch.Tensor, faces: torch.Tensor, masks=None) -> tuple[Embedding, Embedding]:
        """Both modalities of a training batch (one call, so DistributedDataParallel sees it);
        ``masks`` = (voice mask, face mask) of the interfered tokens, the oracle arm's only."""
        vm, fm = (None, None) if masks is None else masks
        return self.embed_voices(voices, vm), self.embed_faces(faces, fm)

    def discriminate(self, h_voice: torch.Tensor, h_face: torch.Tensor, frozen: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality logits of voices and faces, from one joint batch (see ModalityDiscriminator).

        ``frozen`` detaches the discriminator's parameters: the generator's adversarial loss
        reaches the embeddings but never moves the discriminator.
        """
        def disc(x):
            return self.discriminator(x, frozen=frozen)
        if self.cfg.discriminator_batch == "separate":  # the first version's (and literal) form
            return disc(h_voice), disc(h_face)
        h = torch.cat([h_voice, h_face])
        logits = disc(h)
        return logits[:len(h_voice)], logits[len(h_voice):]

    def _embed(self, feature_map: torch.Tensor, intervention: BidirectionalIntervention | None,
               control: TokenSelfAttention | None = None, mask: torch.Tensor | None = None) -> Embedding:
        if mask is not None:  # the oracle arm (config validation: no PIA/NIA, no control)
            return Embedding(self.generator(feature_map, mask), None, None)
        if control is not None:
            feature_map = control(feature_map)
        if intervention is None:
            return Embedding(self.generator(feature_map), None, None)
        out = intervention(feature_map)
        negative = self.generator(out.negative) if out.negative is not None else None
        return Embedding(self.generator(out.positive), negative, out)

    def embed_faces(self, faces: torch.Tensor, mask: torch.Tensor | None = None) -> Embedding:
        """uint8 [N, 3, S, S] (or float already in [-1, 1]) -> embeddings; ``mask``: see forward."""
        if faces.dtype == torch.uint8:
            faces = faces.float() / 127.5 - 1.0  # mean 0.5, std 0.5 as the authors
        if self.cfg.channels_last:
            faces = faces.contiguous(memory_format=torch.channels_last)
        return self._embed(self.face_encoder(faces), self.face_intervention, self.face_control, mask)

    def embed_voices(self, waves: torch.Tensor, mask: torch.Tensor | None = None) -> Embedding:
        """float waveforms [N, L] at 16 kHz -> embeddings; ``mask``: see forward."""
        return self._embed(self.voice_encoder(waves.float()), self.voice_intervention, self.voice_control, mask)

    def match_logits(self, query: torch.Tensor, candidates: torch.Tensor, w: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Stacked embeddings query [T, P, D], candidates [T, K, P, D] -> (z, z_pos, z_neg).

        z_pos from the positive embeddings (Eq. 20), z_neg from the negative ones (Eq. 21),
        z = z_pos - w z_neg (Eq. 22, default form).
        """
        z_pos = self.classifier(query[:, 0], candidates[:, :, 0])
        z_neg = self.classifier(query[:, 1], candidates[:, :, 1]) if query.shape[1] > 1 else None
        return counterfactual_logits(z_pos, z_neg, w), z_pos, z_neg

    def verify_scores(self, voice: torch.Tensor, face: torch.Tensor, w: float) -> torch.Tensor:
        """Stacked embeddings [T, P, D] of voice-face pairs -> verification logits [T]."""
        s_pos = self.classifier.verify(voice[:, 0], face[:, 0])
        if voice.shape[1] == 1:
            return s_pos
        return s_pos - w * self.classifier.verify(voice[:, 1], face[:, 1])
