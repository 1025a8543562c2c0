"""Where a run's data comes from: ``load_world(cfg)`` -> {"train", "val", "test"} SplitData.

``cfg.data == "synthvox"``: a SynthVox world built from the config's world fields, cached as
one ``.pt`` file keyed by the WorldConfig and seed, so repeated runs, ``bianet evaluate`` and
notebooks load it instead of regenerating it. ``cfg.data == "voxceleb"``: ``build_index`` over
``audio_root``/``face_root`` for ``cfg.split``, then ``load_split`` (decoded arrays cached in
``cache_dir``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from bianet_lib.config import BIANetConfig
from bianet_lib.data.types import SplitData

#: Bump when SynthVox's generator changes its output, so stale cached worlds are not reused.
WORLD_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$BIANET_CACHE`` if set, else ``~/.cache/bianet``."""
    return Path(os.environ.get("BIANET_CACHE") or Path.home() / ".cache" / "bianet")


def world_config(cfg: BIANetConfig):
    """The SynthVox WorldConfig a BIANetConfig describes (bias is the train-only rho)."""
    from bianet_lib.data.synthvox import WorldConfig

    wc = WorldConfig(n_train=cfg.world_n_train, n_val=cfg.world_n_val, n_test=cfg.world_n_test,
                     faces_per_id_train=cfg.world_per_id_train, voices_per_id_train=cfg.world_per_id_train,
                     faces_per_id_eval=cfg.world_per_id_eval, voices_per_id_eval=cfg.world_per_id_eval,
                     face_size=cfg.face_size, clip_seconds=cfg.clip_seconds, rho=cfg.bias)
    wc.validate()
    return wc


def world_cache_path(cfg: BIANetConfig) -> Path:
    """The cache file of the config's SynthVox world (same world fields + seed -> same file)."""
    key = json.dumps({"world": dataclasses.asdict(world_config(cfg)), "seed": cfg.world_seed,
                      "version": WORLD_CACHE_VERSION}, sort_keys=True)
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    return root / "synthvox" / f"world-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def load_world(cfg: BIANetConfig, workers: int = 2, use_cache: bool = True) -> dict[str, SplitData]:
    """The train/val/test splits of ``cfg.data``; raises ValueError on a bad data config."""
    if cfg.data == "synthvox":
        return _synthvox(cfg, workers, use_cache)
    if cfg.data == "voxceleb":
        return _voxceleb(cfg)
    raise ValueError(f"config field data={cfg.data!r}: expected 'synthvox' or 'voxceleb'")


def _synthvox(cfg: BIANetConfig, workers: int, use_cache: bool) -> dict[str, SplitData]:
    from bianet_lib.data.synthvox import generate_world

    wc = world_config(cfg)
    path = world_cache_path(cfg)
    if use_cache and path.is_file():
        try:
            world = torch.load(path, weights_only=False)
            if isinstance(world, dict) and set(world) == {"train", "val", "test"}:
                return world
        except Exception:  # noqa: BLE001 - a damaged cache file is regenerated, not fatal
            pass
    world = generate_world(wc, cfg.world_seed, workers)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: concurrent runs (or torchrun ranks) never read a half-written world
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(world, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return world


def _voxceleb(cfg: BIANetConfig) -> dict[str, SplitData]:
    from bianet_lib.data.voxceleb import build_index, load_split

    if not cfg.audio_root or not cfg.face_root:
        raise ValueError("data=voxceleb needs config fields audio_root and face_root")
    for name in ("audio_root", "face_root"):
        if not Path(getattr(cfg, name)).is_dir():
            raise ValueError(f"config field {name}={getattr(cfg, name)!r}: not a directory")
    index, report = build_index(cfg.audio_root, cfg.face_root, cfg.split)
    world = {}
    for split in ("train", "val", "test"):
        world[split], report = load_split(index, split, cfg.clip_seconds, cfg.face_size,
                                          cfg.cache_dir, report)
    return world
