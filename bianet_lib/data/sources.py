"""Where a run's data comes from: ``load_world(cfg)`` -> {"train", "val", "test"} SplitData.

``cfg.data == "synthvox"``: a SynthVox world built from the config's world fields, cached as
one ``.pt`` file keyed by the WorldConfig and seed, so repeated runs, ``bianet evaluate`` and
notebooks load it instead of regenerating it. ``cfg.data == "voxceleb"``: ``build_index`` over
``audio_root``/``face_root`` for ``cfg.split``, then one on-disk feature store per split
(``bianet_lib.data.store``, under ``cache_dir``): splits read per item, memory bounded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
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

    wc = WorldConfig.preset(cfg.world_preset, n_train=cfg.world_n_train, n_val=cfg.world_n_val,
                            n_test=cfg.world_n_test, faces_per_id_train=cfg.world_per_id_train,
                            voices_per_id_train=cfg.world_per_id_train,
                            faces_per_id_eval=cfg.world_per_id_eval, voices_per_id_eval=cfg.world_per_id_eval,
                            face_size=cfg.face_size, clip_seconds=cfg.clip_seconds, rho=cfg.bias,
                            local_scale=cfg.world_local_scale)
    if wc.face_token_grid == -1 or wc.voice_tokens == -1:  # a token-snapped world: the model's own maps
        from bianet_lib.model.encoders import map_grids

        (fh, fw), (_, vt) = map_grids(cfg)
        if fh != fw:
            raise ValueError(f"world_preset={cfg.world_preset!r} needs a square face map, the encoder gives {fh} x {fw}")
        wc = dataclasses.replace(wc, face_token_grid=fh, voice_tokens=vt)
    wc.validate()
    return wc


#: WorldConfig fields added after worlds were cached, with the value that leaves a world as it
#: was: left out of the cache key at that value, so every earlier world keeps its cache file.
_LATER_FIELDS = {"face_token_grid": 0, "voice_tokens": 0, "face_local_source": "region",
                 "face_local_contrast": 1.0, "face_local_place": "anywhere"}


def world_cache_path(cfg: BIANetConfig) -> Path:
    """The cache file of the config's SynthVox world (same world fields + seed -> same file)."""
    world = {k: v for k, v in dataclasses.asdict(world_config(cfg)).items() if not (k in _LATER_FIELDS and _LATER_FIELDS[k] == v)}
    key = json.dumps({"world": world, "seed": cfg.world_seed,
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
            # through a file object: a failed write (a full disk) is then the OSError itself,
            # not torch's "[enforce fail at inline_container.cc]"; named with the cache's path
            try:
                with open(tmp, "wb") as fh:
                    torch.save(world, fh)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            from bianet_lib.engine.safeio import fsync_dir, fsync_file, normal_mode

            fsync_file(tmp)
            os.chmod(tmp, normal_mode())  # mkstemp's 0600 would hide the cache from other users
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return world


def _voxceleb(cfg: BIANetConfig) -> dict[str, SplitData]:
    """Index the roots, then each split's feature store (built on first use, reused after):
    splits whose samples are read per item from disk, never all held in memory."""
    from bianet_lib.data.store import StoreSettings, open_or_build
    from bianet_lib.data.voxceleb import build_index

    if not cfg.audio_root or not cfg.face_root:
        raise ValueError("data=voxceleb needs config fields audio_root and face_root")
    for name in ("audio_root", "face_root"):
        if not Path(getattr(cfg, name)).is_dir():
            raise ValueError(f"config field {name}={getattr(cfg, name)!r}: not a directory")
    index, report = build_index(cfg.audio_root, cfg.face_root, cfg.split)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    settings = StoreSettings(clip_seconds=cfg.clip_seconds, face_size=cfg.face_size)
    world = {}
    for split in ("train", "val", "test"):
        rows = index[index["split"] == split]
        if rows.empty:
            raise ValueError(f"split {split!r} has no files in the index")
        world[split], built = open_or_build(rows, cache, split, settings)
        report.files += built.skipped
        report.identities += built.dropped_identities
        _check_m4a(rows, built.skipped)
    summary = report.summary()
    for split in world.values():
        split.skip_summary = summary
    print(report.headline(), file=sys.stderr)
    return world


def _check_m4a(rows, skipped) -> None:
    bad = {p for p, r in skipped if p.endswith(".m4a") and r.startswith("cannot decode")}
    m4a = [p for p in rows["path"] if p.endswith(".m4a")]
    if m4a and set(m4a) <= bad:
        raise ValueError(f"{m4a[0]}: no .m4a file could be decoded; install ffmpeg (audioread "
                         "uses it) or convert VoxCeleb2 audio to .wav")


def save_skip_report(world: dict[str, SplitData], run_dir: str | Path) -> Path | None:
    """Write the data's skip report (every skipped file and identity, with its reason) to
    ``run_dir/skipped.txt``; None for sources without one (SynthVox)."""
    summary = getattr(world.get("train"), "skip_summary", "")
    if not summary:
        return None
    path = Path(run_dir) / "skipped.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(summary + "\n")
    os.replace(tmp, path)
    return path
