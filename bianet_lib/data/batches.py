"""Training batches: B distinct identities, one voice and one face each, and the in-batch trials.

Every embedding is computed once per step; the V-F and F-V trials (query + K candidates) are
index arrays into the batch, so K candidates cost no extra encoder passes.

Two halves: :class:`IdentityBatchSampler` (``bianet_lib.data.sampler``) draws *which* samples form each batch (indices, flips,
crop seeds) from one torch.Generator; the batch is then read either from memory (SynthVox,
in-process, the fast path) or from an on-disk feature store through a torch DataLoader with
worker processes, pinned memory and prefetching (``bianet_lib.data.loader``). Both give the
same :class:`Batch`, and the sampler runs in the main process in both, so its generator state,
saved in checkpoints, makes resume exact.
"""

from __future__ import annotations

import torch

from bianet_lib.data.interference import TokenMasks
from bianet_lib.data.sampler import Batch, BatchPlan, IdentityBatchSampler
from bianet_lib.data.types import SplitData


def read_in_memory(split: SplitData, plan: BatchPlan, masks: TokenMasks | None = None) -> Batch:
    """The in-memory fast path (SynthVox): index the split's tensors, flip the chosen faces;
    with ``masks``, each sample's interfered-token masks (a flipped face's flipped)."""
    v, f = torch.tensor(plan.voice), torch.tensor(plan.face)
    flip = torch.tensor(plan.flip)
    faces = split.faces[f]
    faces = torch.where(flip[:, None, None, None], faces.flip(-1), faces)  # train-only flip
    if masks is None:
        return Batch(split.voices[v], faces, torch.tensor(plan.identity))
    return Batch(split.voices[v], faces, torch.tensor(plan.identity), masks.voices(v), masks.faces(f, flip))


class IdentityBatches:
    """The Trainer's batches: an IdentityBatchSampler read from memory or, for a split held in
    a feature store (``bianet_lib.data.store``), through a DataLoader with ``workers`` processes
    (None: chosen from the CPU count), pinned memory when ``pin_memory`` and prefetching.
    Stored splits get random audio crops (see ``data/loader.py`` for why).

    All randomness comes from the sampler's torch.Generator (``.generator``), whose state is
    saved in checkpoints, so a resumed run draws exactly the batches an uninterrupted run would.
    """

    def __init__(self, split: SplitData, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 workers: int | None = None, pin_memory: bool = False,
                 token_grids: tuple[tuple[int, int], tuple[int, int]] | None = None):
        self.split = split
        # (face grid, voice grid): batches carry interfered-token masks (only arms that use them)
        self.masks = None if token_grids is None else TokenMasks(split, *token_grids)
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
            yield read_in_memory(self.split, plan, self.masks)


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
