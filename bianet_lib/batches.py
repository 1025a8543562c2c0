"""Training batches: B distinct identities, one voice and one face each, and the in-batch trials.

Every embedding is computed once per step; the V-F and F-V trials (query + K candidates) are
index arrays into the batch, so K candidates cost no extra encoder passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bianet_lib.data.types import SplitData


@dataclass
class Batch:
    voices: torch.Tensor  # [B, L]
    faces: torch.Tensor  # uint8 [B, 3, S, S]
    identity: torch.Tensor  # [B], distinct


class IdentityBatches:
    """Epochs in shuffled batches of distinct identities.

    An epoch is as many rounds over the identities as there are voices per identity, so
    that it sees about as many voice clips as the split holds.

    All randomness comes from one torch.Generator whose state is saved in checkpoints, so a
    resumed run draws exactly the batches an uninterrupted run would.
    """

    def __init__(self, split: SplitData, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if split.n_identities < batch_size:
            raise ValueError(f"split {split.name!r} has {split.n_identities} identities, fewer than "
                             f"batch_size={batch_size}")
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} must divide evenly over {world} processes")
        self.split, self.batch_size, self.rank, self.world = split, batch_size, rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self._voice_pools = _pools(split.voice_identity, split.n_identities)
        self._face_pools = _pools(split.face_identity, split.n_identities)
        self.rounds = max(1, len(split.voices) // split.n_identities)
        self.per_round = split.n_identities // batch_size

    def __len__(self) -> int:
        return self.rounds * self.per_round

    def epoch(self):
        """Yield this rank's share of each batch; every rank draws the same global batches."""
        for _ in range(self.rounds):
            yield from self._round()

    def _round(self):
        order = torch.randperm(self.split.n_identities, generator=self.generator)
        for b in range(self.per_round):
            ids = order[b * self.batch_size:(b + 1) * self.batch_size]
            v = torch.stack([_pick(self._voice_pools[i], self.generator) for i in ids.tolist()])
            f = torch.stack([_pick(self._face_pools[i], self.generator) for i in ids.tolist()])
            flip = torch.rand(len(ids), generator=self.generator) < 0.5
            share = slice(self.rank * len(ids) // self.world, (self.rank + 1) * len(ids) // self.world)
            faces = self.split.faces[f]
            faces = torch.where(flip[:, None, None, None], faces.flip(-1), faces)  # train-only flip
            yield Batch(self.split.voices[v][share], faces[share], ids[share])


def _pools(identity: torch.Tensor, n: int) -> list[torch.Tensor]:
    pools = [torch.nonzero(identity == i).flatten() for i in range(n)]
    empty = [i for i, p in enumerate(pools) if len(p) == 0]
    if empty:
        raise ValueError(f"identities {empty[:5]} have no samples of one modality")
    return pools


def _pick(pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return pool[torch.randint(len(pool), (1,), generator=generator)[0]]


def in_batch_trials(n: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of n queries: K candidate rows (its own row + K-1 others), target column.

    The true match's column is uniform, so a head that prefers a slot cannot score.
    """
    if k > n:
        raise ValueError(f"K={k} candidates need at least K samples in a batch, got {n}")
    others = torch.argsort(torch.rand(n, n, generator=generator), dim=1)
    rows = torch.arange(n)
    others = others[others != rows[:, None]].view(n, n - 1)[:, : k - 1]
    target = torch.randint(k, (n,), generator=generator)
    cands = torch.empty(n, k, dtype=torch.long)
    slot = torch.arange(k)[None, :] == target[:, None]
    cands[slot] = rows
    cands[~slot] = others.reshape(-1)
    return cands, target
