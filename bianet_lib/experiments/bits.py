"""Per-trial correctness, bit-packed: how a run's record stores one bool per trial (written by
``experiments.endpoints``, read by ``experiments.records``), so arms can be paired trial by trial."""

from __future__ import annotations

import base64

import numpy as np


def pack_bits(correct) -> str:
    """bool [T] -> base64 of np.packbits (the length is stored beside it)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` for a vector of length n."""
    raw = np.frombuffer(base64.b64decode(text.encode("ascii")), dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"packed bits hold {len(raw) * 8} bits, expected {n}")
    return np.unpackbits(raw)[:n].astype(bool)
