"""Training batches: B distinct identities, one voice and one face each, and the in-batch trials.

Every embedding is computed once per step; the V-F and F-V trials (query + K candidates) are
index arrays into the batch, so K candidates cost no extra encoder passes.

Two halves: :class:`IdentityBatchSampler` draws *which* samples form each batch (indices, flips,
crop seeds) from one torch.Generator; the batch is then read either from memory (SynthVox,
in-process, the fast path) or from an on-disk feature store through a torch DataLoader with
worker processes, pinned memory and prefetching (``bianet_lib.data.loader``). Both give the
same :class:`Batch`, and the sampler runs in the main process in both, so its generator state,
saved in checkpoints, makes resume exact.
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

    def pin_memory(self) -> Batch:  # called by the DataLoader's pin-memory thread
        return Batch(self.voices.pin_memory(), self.faces.pin_memory(), self.identity.pin_memory())


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


def read_in_memory(split: SplitData, plan: BatchPlan) -> Batch:
    """The in-memory fast path (SynthVox): index the split's tensors, flip the chosen faces."""
    v, f = torch.tensor(plan.voice), torch.tensor(plan.face)
    flip = torch.tensor(plan.flip)
    faces = split.faces[f]
    faces = torch.where(flip[:, None, None, None], faces.flip(-1), faces)  # train-only flip
    return Batch(split.voices[v], faces, torch.tensor(plan.identity))


class IdentityBatches:
    """The Trainer's batches: an IdentityBatchSampler read from memory or, for a split held in
    a feature store (``bianet_lib.data.store``), through a DataLoader with ``workers`` processes
    (None: chosen from the CPU count), pinned memory when ``pin_memory`` and prefetching.
    Stored splits get random audio crops (see ``data/loader.py`` for why).

    All randomness comes from the sampler's torch.Generator (``.generator``), whose state is
    saved in checkpoints, so a resumed run draws exactly the batches an uninterrupted run would.
    """

    def __init__(self, split: SplitData, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 workers: int | None = None, pin_memory: bool = False):
        self.split = split
        self.stored = getattr(split, "store", None) is not None
        self.sampler = IdentityBatchSampler(split.voice_identity, split.face_identity, split.n_identities,
                                            batch_size, seed, rank, world, crops=self.stored,
                                            name=split.name)
        self.generator = self.sampler.generator
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self._loader = None
        if self.stored:
            from bianet_lib.data.loader import make_loader

            self._loader = make_loader(split, self.sampler, workers, pin_memory, seed)

    @property
    def rounds(self) -> int:
        return self.sampler.rounds

    @property
    def per_round(self) -> int:
        return self.sampler.per_round

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self):
        """Yield this rank's share of each batch of one epoch."""
        if self._loader is not None:
            yield from self._loader
            return
        for plan in self.sampler.plans():
            yield read_in_memory(self.split, plan)


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
