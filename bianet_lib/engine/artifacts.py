"""Finished runs the course reuses: train once, load afterwards.

A notebook that needs a trained model calls :func:`train_or_load`: it loads the run in
``run_dir`` when its checkpoint is there, and trains it otherwise (or when ``retrain``), so
re-executing a notebook costs seconds while ``make course`` still regenerates everything.
"""

from __future__ import annotations

import json
from pathlib import Path

from bianet_lib.config import BIANetConfig
from bianet_lib.data.types import SplitData
from bianet_lib.engine.trainer import BEST, Trainer, load_model
from bianet_lib.model.network import BIANet


def read_history(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_or_load(cfg: BIANetConfig, world: dict[str, SplitData], run_dir: str | Path,
                  retrain: bool = False, progress: bool = True) -> tuple[BIANet, list[dict]]:
    """The best (validation-selected) model of the run in ``run_dir`` and its history."""
    run_dir = Path(run_dir)
    if retrain or not (run_dir / BEST).exists():
        for stale in ("latest.pt", "best.pt", "metrics.jsonl"):
            (run_dir / stale).unlink(missing_ok=True)
        # overwrite: the decision to start over is this one (an earlier results.json is stale too)
        Trainer(cfg, world["train"], world["val"], run_dir, progress=progress).fit(overwrite=True)
    return load_model(run_dir / BEST), read_history(run_dir)
