"""Which samples form each training batch: :class:`IdentityBatchSampler` and the :class:`Batch`
and :class:`BatchPlan` it describes.

The sampler draws B distinct identities, one voice and one face each (indices, flips, crop seeds)
from one torch.Generator and runs in the main process, so its generator state, saved in
checkpoints, makes resume exact. The plans are read from memory (``bianet_lib.data.batches``) or
from a feature store through a DataLoader (``bianet_lib.data.loader``); both import from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    voices: torch.Tensor  # [B, L]
    faces: torch.Tensor  # uint8 [B, 3, S, S]
    identity: torch.Tensor  # [B], distinct
    # interfered-token masks (bool [B, N]) for the arms that use them (config.token_masks), else None
    voice_mask: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None

    def pin_memory(self) -> Batch:  # called by the DataLoader's pin-memory thread
        return Batch(self.voices.pin_memory(), self.faces.pin_memory(), self.identity.pin_memory(),
                     *(None if m is None else m.pin_memory() for m in (self.voice_mask, self.face_mask)))


@dataclass
class BatchPlan:
    """What one rank reads for one batch: rows of the split's voices and faces, the identity
    index, the train-only horizontal flip, and (stored splits only) a seed per voice crop."""

    voice: list[int]
    face: list[int]
    identity: list[int]
    flip: list[bool]
    crop_seed: list[int] | None = None


class IdentityBatchSampler:
    """Epochs in shuffled batches of distinct identities, as index plans.

    An epoch is as many rounds over the identities as there are voices per identity, so
    that it sees about as many voice clips as the split holds. Draw order per batch: the
    identity permutation (once per round), one voice per identity, one face per identity, the
    flips, then (``crops=True``) one crop seed per voice; with ``crops=False`` the draws are
    exactly those of the earlier in-memory IdentityBatches, so SynthVox runs are unchanged.
    Iterating gives one list of plans per batch (a DataLoader ``batch_sampler``).
    """

    def __init__(self, voice_identity: torch.Tensor, face_identity: torch.Tensor, n_identities: int,
                 batch_size: int, seed: int, rank: int = 0, world: int = 1, crops: bool = False,
                 name: str = "train"):
        if n_identities < batch_size:
            raise ValueError(f"split {name!r} has {n_identities} identities, fewer than "
                             f"batch_size={batch_size}")
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} must divide evenly over {world} processes")
        self.n_identities, self.batch_size, self.rank, self.world = n_identities, batch_size, rank, world
        self.crops = crops
        self.generator = torch.Generator().manual_seed(seed)
        self._voice_pools = _pools(voice_identity, n_identities)
        self._face_pools = _pools(face_identity, n_identities)
        self.rounds = max(1, len(voice_identity) // n_identities)
        self.per_round = n_identities // batch_size

    def __len__(self) -> int:
        return self.rounds * self.per_round

    def plans(self):
        """This rank's share of each batch; every rank draws the same global batches."""
        for _ in range(self.rounds):
            order = torch.randperm(self.n_identities, generator=self.generator)
            for b in range(self.per_round):
                ids = order[b * self.batch_size:(b + 1) * self.batch_size]
                v = torch.stack([_pick(self._voice_pools[i], self.generator) for i in ids.tolist()])
                f = torch.stack([_pick(self._face_pools[i], self.generator) for i in ids.tolist()])
                flip = torch.rand(len(ids), generator=self.generator) < 0.5
                crop = (torch.randint(2**31 - 1, (len(ids),), generator=self.generator)
                        if self.crops else None)
                s = slice(self.rank * len(ids) // self.world, (self.rank + 1) * len(ids) // self.world)
                yield BatchPlan(v[s].tolist(), f[s].tolist(), ids[s].tolist(), flip[s].tolist(),
                                None if crop is None else crop[s].tolist())

    def __iter__(self):
        for plan in self.plans():
            yield [plan]  # one "index" per batch: the dataset reads the whole plan at once


def _pools(identity: torch.Tensor, n: int) -> list[torch.Tensor]:
    pools = [torch.nonzero(identity == i).flatten() for i in range(n)]
    empty = [i for i, p in enumerate(pools) if len(p) == 0]
    if empty:
        raise ValueError(f"identities {empty[:5]} have no samples of one modality")
    return pools


def _pick(pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return pool[torch.randint(len(pool), (1,), generator=generator)[0]]
