"""Adapters that let the evaluator score a trained BIANet, by its classifier or by cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bianet_lib.data.types import SplitData
from bianet_lib.model.counterfactual import curriculum_weight
from bianet_lib.model.network import BIANet


class BIANetScorer:
    """The paper's route: embeddings -> C_m with the counterfactual combination at w = w(N).

    The same inference as training (Eq. 22, "the same architecture during training and
    testing"); the model is always put in eval mode, so BatchNorm uses running statistics and
    neither dropout nor the NIA mask is active.

    ``embeddings``: a dict shared by scorers of one (unchanging) model, so that the classifier
    and cosine routes embed each split once; keyed by the split object and the modality.
    """

    def __init__(self, model: BIANet, device: str | torch.device = "cpu", batch_size: int = 256,
                 embeddings: dict | None = None):
        self.model, self.device, self.batch_size = model, torch.device(device), batch_size
        cfg = model.cfg
        self.w = curriculum_weight(1, 1, cfg.curriculum) if cfg.use_nia else 0.0
        self._embeddings = {} if embeddings is None else embeddings

    def embed(self, split: SplitData, modality: str, batch_size: int | None = None) -> torch.Tensor:
        key = (id(split), modality)
        if key not in self._embeddings:
            self._embeddings[key] = (split, self._embed(split, modality, batch_size))
        return self._embeddings[key][1]

    @torch.no_grad()
    def _embed(self, split: SplitData, modality: str, batch_size: int | None) -> torch.Tensor:
        self.model.eval()
        data = split.voices if modality == "voice" else split.faces
        fn = self.model.embed_voices if modality == "voice" else self.model.embed_faces
        step = batch_size or self.batch_size
        masks = self._oracle_masks(split, modality)
        chunks = [fn(data[i:i + step].to(self.device),
                     *(() if masks is None else (masks[i:i + step].to(self.device),))).stacked().float().cpu()
                  for i in range(0, len(data), step)]
        return torch.cat(chunks)

    def _oracle_masks(self, split: SplitData, modality: str) -> torch.Tensor | None:
        """The oracle arm's test-time masks (config.token_masks="oracle"): the split's own
        interfered tokens at the model's map grids; None for every other arm."""
        if self.model.cfg.token_masks != "oracle":
            return None
        from bianet_lib.data.interference import TokenMasks
        from bianet_lib.model.encoders import map_grids

        n = len(split.voices if modality == "voice" else split.faces)
        masks = TokenMasks(split, *map_grids(self.model.cfg))
        return masks.voices(range(n)) if modality == "voice" else masks.faces(range(n))

    @torch.no_grad()
    def match_logits(self, query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        z, _, _ = self.model.match_logits(query.to(self.device), candidates.to(self.device), self.w)
        return z.float().cpu()

    @torch.no_grad()
    def verify_scores(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model.verify_scores(voice.to(self.device), face.to(self.device), self.w).float().cpu()


class EmbeddingCosineScorer(BIANetScorer):
    """The cosine route: cosine similarity of the positive shared embeddings h-hat."""

    def match_logits(self, query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(query[:, None, 0], candidates[:, :, 0], dim=-1)

    def verify_scores(self, voice: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(voice[:, 0], face[:, 0], dim=-1)
