"""A generated VoxCeleb-shaped tree (standard library + numpy + PIL only), for benchmarks and the
GPU check: ``<root>/wav/<VoxCeleb ID>/<video>/<utt>.wav`` (16-bit PCM, 16 kHz) and
``<root>/faces/<VGGFace1 name>/<video>/<img>.jpg`` for the first identities of each part of a
split, so ``build_index`` maps them exactly as it maps the real data.

Content is learnable across modalities, not realistic: each identity has a latent z in [0, 1]
that sets the voice's pitch (f0 = 100 + 200 z Hz, three harmonics, noise) and the face's
brightness and hue, plus an identity-specific pattern; clip durations vary from 0.5x to 1.5x
``seconds`` so that random crops and loop padding both occur.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from PIL import Image

from bianet_lib.data.errors import ignore_sigint, interruptible
from bianet_lib.data.types import SAMPLE_RATE


def _write_wav(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def _write_identity(job) -> int:
    """One identity's clips and faces; its own generator (seed, position), so the tree is the
    same whatever the number of worker processes."""
    root, vid, name, k, seed, clips_per_id, faces_per_id, seconds, face_size = job
    rng = np.random.default_rng([seed, k])
    z = rng.uniform()
    f0 = 100 + 200 * z
    pattern = rng.uniform(-40, 40, (3, 4, 4))
    for c in range(clips_per_id):
        folder = root / "wav" / vid / f"vid{c % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        n_samp = int(seconds * SAMPLE_RATE * rng.uniform(0.5, 1.5))
        t = np.arange(n_samp) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3))
        x = 0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        _write_wav(folder / f"{c:05d}.wav", x + 0.02 * rng.standard_normal(n_samp))
    for c in range(faces_per_id):
        folder = root / "faces" / name / f"vid{c % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([80 + 120 * z, 100, 200 - 120 * z])[:, None, None]
        small = np.clip(base + pattern + rng.normal(0, 8, (3, 4, 4)), 0, 255)
        img = Image.fromarray(small.transpose(1, 2, 0).astype(np.uint8)).resize(
            (face_size, face_size), Image.BILINEAR)
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (face_size, face_size, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{c:05d}.jpg", quality=90)
    return clips_per_id + faces_per_id


def write_vox_tree(root: str | Path, n_train: int, n_val: int, n_test: int, clips_per_id: int = 3,
                   faces_per_id: int = 3, seconds: float = 1.0, face_size: int = 64, seed: int = 0,
                   split: str = "wen", workers: int = 0) -> dict[str, int]:
    """Write the tree; returns counts. Identities: the first n of each part of ``split``;
    ``workers`` processes (0: one per CPU)."""
    import multiprocessing
    import os
    import sys

    from bianet_lib.data.voxceleb import split_table

    root = Path(root)
    table = split_table(split)
    jobs = []
    for part, n in {"train": n_train, "val": n_val, "test": n_test}.items():
        ids = table[table["split"] == part].head(n)
        if len(ids) < n:
            raise ValueError(f"split {split!r} has only {len(ids)} {part} identities, asked for {n}")
        jobs += [(root, vid, name, len(jobs) + i, seed, clips_per_id, faces_per_id, seconds, face_size)
                 for i, (vid, name) in enumerate(zip(ids["id"], ids["name"], strict=True))]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers, initializer=ignore_sigint) as pool:
            n_files = sum(interruptible(pool.imap_unordered(_write_identity, jobs, chunksize=4)))
    else:
        n_files = sum(map(_write_identity, jobs))
    return {"identities": len(jobs), "files": n_files}
