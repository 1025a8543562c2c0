"""Two CPU processes with gloo: DDP averages gradients exactly like one process on the whole
batch, and Trainer.fit runs under DDP with only rank 0 writing files.

The gradient test runs the model in eval mode: in train mode BatchNorm normalises each rank's
half of the batch with that half's statistics (standard DDP, no SyncBatchNorm), which is not
the same function as one process normalising the whole batch; in eval mode (running
statistics) the per-trial computation is identical, so the averaged gradients must agree.
"""

import gc
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from bianet_lib.model.network import BIANet
from tests.helpers import random_split, tiny_config

N_TRIALS, K, W = 8, 2, 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed_batch():
    g = torch.Generator().manual_seed(7)
    voices = torch.randn(N_TRIALS, 2000, generator=g)
    faces = torch.randint(0, 256, (N_TRIALS * K, 3, 32, 32), generator=g, dtype=torch.uint8)
    target = torch.randint(K, (N_TRIALS,), generator=g)
    return voices, faces, target


class TrialLoss(nn.Module):
    """Mean matching cross-entropy of explicit trials: voice i against faces [K*i, K*i+K)."""

    def __init__(self, model: BIANet):
        super().__init__()
        self.model = model

    def forward(self, voices, faces, target):
        ev, ef = self.model(voices, faces)
        cands = ef.stacked().view(len(voices), K, *ef.stacked().shape[1:])
        z, _, _ = self.model.match_logits(ev.stacked(), cands, W)
        return F.cross_entropy(z, target)


def _model():
    torch.manual_seed(0)
    return BIANet(tiny_config(n_mels=16)).eval()


def _grad_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(TrialLoss(model), find_unused_parameters=True)
        voices, faces, target = _fixed_batch()
        half = slice(rank * N_TRIALS // world, (rank + 1) * N_TRIALS // world)
        fhalf = slice(half.start * K, half.stop * K)
        ddp(voices[half], faces[fhalf], target[half]).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in model.named_parameters()}, out)
        # tear down in order: both ranks done, then the DDP reducer (it holds the gloo group)
        # freed before the group is destroyed. Without this one rank could destroy its group
        # while the other was still saving, and the reducer's group was freed at interpreter
        # exit: CI once saw rank 1 abort with "terminate called without an active exception"
        dist.barrier()
        del ddp, model
        gc.collect()
    finally:
        dist.destroy_process_group()


def test_two_process_gradients_equal_one_process(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(_grad_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp_grads = torch.load(out)

    torch.set_num_threads(1)
    model = _model()
    TrialLoss(model)(*_fixed_batch()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    # float32 sums in another order (two half batches, BatchNorm and InstanceNorm backward):
    # entries near zero carry rounding noise of ~1e-6 of the largest gradient, so atol is
    # 1e-4 of it; a missing all-reduce or a sum instead of a mean is off by O(the gradient)
    atol = 1e-4 * max(float(g.abs().max()) for g in grads.values())
    for name, grad in grads.items():
        assert ddp_grads[name] is not None, name
        assert torch.allclose(ddp_grads[name], grad, rtol=1e-3, atol=atol), name
    compared = len(grads)
    assert compared > 20  # encoders, interventions, generator and classifier all took part


def _fit_worker(rank, world, port, root):
    from bianet_lib.commands.train import destroy_distributed, init_distributed
    from bianet_lib.engine.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    created = init_distributed("cpu")
    try:
        train = random_split(16, 1, face_size=32, seed=0, name="train")
        val = random_split(6, 2, face_size=32, seed=1, name="val")
        trainer = Trainer(tiny_config(epochs=1), train, val, f"{root}/rank{rank}", progress=False)
        history = trainer.fit()
        with open(f"{root}/history{rank}.json", "w") as fh:
            json.dump(history, fh)
        dist.barrier()  # same ordered teardown as _grad_worker
        del trainer
        gc.collect()
    finally:
        destroy_distributed(created)


def test_trainer_fit_under_two_process_gloo(tmp_path):
    mp.spawn(_fit_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert {p.name for p in (tmp_path / "rank0").iterdir()} >= {"latest.pt", "best.pt", "metrics.jsonl",
                                                                  "config.yaml"}
    assert list((tmp_path / "rank1").iterdir()) == []  # only rank 0 writes
    h0, h1 = (json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1))
    assert h0[0]["step"] == h1[0]["step"] == 2
    assert h0[0]["loss"] == h1[0]["loss"]  # metrics are reduced over ranks
