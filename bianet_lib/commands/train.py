"""``bianet train``: train BIANet, then evaluate the best (validation-chosen) checkpoint on test.

Works alone or under torchrun (``torchrun --nproc_per_node N -m bianet_lib train ...``): the
process group is initialised here (gloo on CPU, nccl on CUDA), every rank trains on its shard
of each batch, and only rank 0 writes checkpoints, metrics and results.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bianet_lib.cli import UsageError
from bianet_lib.config import PRESETS

HELP = "train BIANet on the configured data, then evaluate its best checkpoint on test"


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="starting config (default: the --config file's preset:, else cpu-small)")
    p.add_argument("--config", metavar="FILE", default=None, help="YAML file of config fields")
    # extend + nargs: `--set a=1 b=2` (several after one flag, as people write it) and repeated
    # `--set a=1 --set b=2` both give ["a=1", "b=2"]
    p.add_argument("--set", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
                   dest="overrides",
                   help="override config fields (values parsed as YAML): --set a=1 b=2; repeatable")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--run-dir", required=True, metavar="DIR",
                   help="where config.yaml, metrics.jsonl, latest.pt, best.pt, results.json go")
    p.add_argument("--resume", action="store_true",
                   help="continue DIR's run from latest.pt (config from DIR/config.yaml + --set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# --- config from the command line -------------------------------------------------------------
def config_from_args(args: argparse.Namespace, base_file: str | Path | None = None):
    """The BIANetConfig of --preset/--config/--set (or of ``base_file`` + --set)."""
    import yaml

    from bianet_lib.config import load_config

    if args.config is not None and not Path(args.config).is_file():
        raise UsageError(f"--config {args.config}: no such file")
    try:
        cfg = load_config(args.preset, base_file or args.config, args.overrides)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"config field device={cfg.device!r}: no CUDA device is available")
    elif cfg.device not in ("auto", "cpu"):
        raise UsageError(f"config field device={cfg.device!r}: expected auto, cpu or cuda[:N]")
    return cfg


# --- torchrun -----------------------------------------------------------------------------------
def init_distributed(device: str = "auto") -> bool:
    """Join the torchrun process group if WORLD_SIZE > 1; True when this call created it.

    Backend: nccl when training on CUDA, else gloo. Call before constructing the Trainer (it
    wraps the model in DistributedDataParallel when WORLD_SIZE > 1).
    """
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return False
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def destroy_distributed(created: bool) -> None:
    import torch.distributed as dist

    if created and dist.is_initialized():
        dist.destroy_process_group()


def load_world_ranked(cfg):
    """load_world on rank 0 first (it fills the cache), then on the other ranks."""
    import torch.distributed as dist

    from bianet_lib.data.sources import load_world

    distributed = dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = load_world(cfg) if rank == 0 else None
    if distributed:
        dist.barrier()
    return world if world is not None else load_world(cfg)


def preflight_shapes(cfg) -> None:
    """One face and one clip of the configured sizes through both encoders (CPU, eval mode, no
    gradients) before any data is read: sizes too small for the attention's 3x3 map (a 64x64
    face through ResNet-18 leaves 2x2) are refused in one line naming the field, not by a
    traceback at the first training step."""
    import torch

    from bianet_lib.data.audio import SAMPLE_RATE
    from bianet_lib.model.encoders import AudioEncoder, FaceEncoder

    checks = (("face_size", cfg.face_size, lambda: FaceEncoder(
                  cfg.face_encoder, cfg.face_widths, None, cfg.face_strides, cfg.encoder_map),
               lambda: torch.zeros(1, 3, cfg.face_size, cfg.face_size)),
              ("clip_seconds", cfg.clip_seconds, lambda: AudioEncoder(
                  cfg.audio_encoder, cfg.audio_widths, cfg.audio_blocks, cfg.n_mels, cfg.encoder_map),
               lambda: torch.zeros(1, round(cfg.clip_seconds * SAMPLE_RATE))))
    for field, value, build, sample in checks:
        try:
            with torch.no_grad():
                build().eval()(sample())
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"config field {field}={value}: {' '.join(str(exc).split())}") from None


def run(args: argparse.Namespace) -> int:
    from bianet_lib.commands.evaluate import evaluate_checkpoint, print_summary
    from bianet_lib.config import load_config
    from bianet_lib.engine.evaluate import write_results_json
    from bianet_lib.engine.safeio import CheckpointError, LockBusy
    from bianet_lib.engine.trainer import (
        BEST,
        CONFIG,
        LATEST,
        ConfigMismatchError,
        Distributed,
        Trainer,
        config_changes,
    )

    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir} is not a directory")
    if args.resume:
        if args.preset or args.config:
            raise UsageError("--resume takes the config from the run directory; use only --set")
        if not (run_dir / CONFIG).is_file():
            raise UsageError(f"--resume: {run_dir / LATEST} not found (no run started in {run_dir})")
        cfg = config_from_args(args, base_file=run_dir / CONFIG)
        try:
            saved = load_config(path=run_dir / CONFIG)
        except ValueError as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        changes = config_changes(saved.to_dict(), cfg.to_dict())
        if changes:  # refused: a run resumed under another config would be neither run
            raise UsageError(f"--resume keeps the run's config ({run_dir / CONFIG}); --set changes "
                             f"{', '.join(changes)}: start a new --run-dir to train with it")
        if not (run_dir / LATEST).is_file():
            print(f"{run_dir}: no checkpoint yet (stopped before epoch 1 ended): training from the start")
    else:
        if (run_dir / LATEST).exists():
            raise UsageError(f"--run-dir {run_dir} already holds a run; pass --resume or pick a new directory")
        cfg = config_from_args(args)
    if cfg.data == "synthvox" and cfg.batch_size > cfg.world_n_train:
        raise UsageError(f"config field batch_size={cfg.batch_size}: must be <= world_n_train="
                         f"{cfg.world_n_train} (a batch holds distinct identities)")

    preflight_shapes(cfg)
    created = init_distributed(cfg.device)
    try:
        try:
            world = load_world_ranked(cfg)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if Distributed.from_env().is_main:  # skips are never silent: saved beside the run
            from bianet_lib.data.sources import save_skip_report

            saved = save_skip_report(world, run_dir)
            if saved:
                print(f"skip report written to {saved}")
        try:  # bad combinations the data reveals (batch_size > identities) are refused here
            trainer = Trainer(cfg, world["train"], world["val"], run_dir, progress=not args.no_progress)
        except ValueError as exc:
            raise UsageError(f"config field batch_size={cfg.batch_size}: {exc}") from None
        try:
            trainer.fit(resume=args.resume)
        except (CheckpointError, ConfigMismatchError, LockBusy) as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        if not Distributed.from_env().is_main:
            return 0
        record = evaluate_checkpoint(run_dir / BEST, world, str(trainer.device))
        write_results_json(record, run_dir / "results.json")
        print_summary(record)
        print(f"results written to {run_dir / 'results.json'}")
        return 0
    finally:
        destroy_distributed(created)
