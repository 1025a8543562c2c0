"""The streaming training path: a torch Dataset over a feature store, read through a DataLoader.

The batch sampler (``sampler.IdentityBatchSampler``) runs in the main process and hands each
worker a whole batch plan (rows, flips, crop seeds); the worker reads those rows from the
memory-mapped store and returns a ready ``Batch``. Memory is bounded by batch size x
(workers x prefetch_factor + 1) batches, whatever the dataset's size.

Audio crops: training reads a random window of clip_seconds from each stored clip (the store
keeps up to twice that, see ``store.default_store_seconds``), evaluation the first window. Why:
a fixed first window shows the model the same second of speech every epoch; a random window
makes every epoch hear other syllables of the same utterance (Wen et al. crop 2.5-5 s at
random for the same reason) at no cost, and the window is drawn by the sampler's generator,
so resume stays exact. Faces get the training-only horizontal flip (the authors' only face
augmentation), also drawn by the sampler.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bianet_lib.data.sampler import Batch, BatchPlan, IdentityBatchSampler
from bianet_lib.data.store import StoredSplit


class StoreDataset(Dataset):
    """Items are whole BatchPlans (``__getitems__`` gets a list of one plan) -> one Batch."""

    def __init__(self, split: StoredSplit):
        self.store = split.store

    def __len__(self) -> int:
        return len(self.store.voice_meta)

    def read(self, plan: BatchPlan) -> Batch:
        seeds = plan.crop_seed or [None] * len(plan.voice)
        voices = np.stack([self.store.voice(i, s) for i, s in zip(plan.voice, seeds, strict=True)])
        faces = np.stack([self.store.face(j) for j in plan.face])
        flip = np.asarray(plan.flip, dtype=bool)
        faces[flip] = faces[flip][..., ::-1]  # train-only horizontal flip
        return Batch(torch.from_numpy(voices), torch.from_numpy(np.ascontiguousarray(faces)),
                     torch.tensor(plan.identity))

    def __getitems__(self, plans: list[BatchPlan]) -> Batch:
        (plan,) = plans
        return self.read(plan)

    def __getitem__(self, plan: BatchPlan) -> Batch:
        return self.read(plan)


def _as_is(batch: Batch) -> Batch:  # the dataset already returns a whole Batch (module level: picklable)
    return batch


def default_workers(world: int = 1) -> int:
    """Half the CPUs of this process's share (the other half feeds the GPU and the main loop),
    at most 8, at least 0 (0: read in the main process)."""
    share = (os.cpu_count() or 1) // max(1, world)
    return min(8, share // 2)


def make_loader(split: StoredSplit, sampler: IdentityBatchSampler, workers: int | None = None,
                pin_memory: bool = False, seed: int = 0, prefetch_factor: int = 4) -> DataLoader:
    """DataLoader over the store in the sampler's batches; persistent workers, prefetching, and
    pinned memory (for CUDA). Its own generator: the global torch RNG is not touched."""
    workers = default_workers(sampler.world) if workers is None else workers
    extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor} if workers > 0 else {}
    return DataLoader(StoreDataset(split), batch_sampler=sampler, num_workers=workers,
                      collate_fn=_as_is, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), **extra)
