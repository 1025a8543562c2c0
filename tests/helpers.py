"""Tiny in-memory splits for fast model and engine tests."""

import pandas as pd
import pytest
import torch

from bianet_lib.config import BIANetConfig
from bianet_lib.data.types import SplitData


def random_split(n_ids: int, per_id: int = 1, *, face_size: int = 32, samples: int = 4000,
                 seed: int = 0, name: str = "train") -> SplitData:
    """Random noise voices and faces; each identity's samples share a random template."""
    g = torch.Generator().manual_seed(seed)
    voice_t = torch.randn(n_ids, samples, generator=g)
    face_t = torch.randint(0, 256, (n_ids, 3, face_size, face_size), generator=g)
    ids = torch.arange(n_ids).repeat_interleave(per_id)
    voices = voice_t[ids] + 0.1 * torch.randn(len(ids), samples, generator=g)
    faces = (face_t[ids] + torch.randint(-8, 9, face_t[ids].shape, generator=g)).clamp(0, 255)
    meta = pd.DataFrame({"identity": ids.numpy(), "video": [f"v{i % 2}" for i in range(len(ids))]})
    identities = pd.DataFrame({"name": [f"{name}_{i}" for i in range(n_ids)],
                               "gender": ["m" if i % 2 else "f" for i in range(n_ids)]})
    return SplitData(name, faces.to(torch.uint8), voices.float(), meta, meta.copy(), identities)


def tiny_config(**overrides) -> BIANetConfig:
    values = dict(face_size=32, face_widths=(8, 8, 16, 16), audio_widths=(8, 8, 16, 16),
                  attn_channels=8, hidden_dim=32, embed_dim=16, n_mels=16, batch_size=8,
                  epochs=2, lr_encoders=3e-3, lr_heads=3e-3, num_threads=1, device="cpu")
    values.update(overrides)
    return BIANetConfig(**values)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread for the test, restored afterwards (import it into a test module: autouse)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def poison_nth_call(fn, n: int, factor: float):
    """A wrapper of ``fn`` whose ``n``-th call (1-based) returns its value times ``factor`` (nan,
    inf): a loss term that goes bad at a known step; every other call is ``fn``'s."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        value = fn(*args, **kwargs)
        return value * factor if len(calls) == n else value

    return wrapped
