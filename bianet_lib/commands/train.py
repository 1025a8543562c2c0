"""``bianet train``: train BIANet, then evaluate the best (validation-chosen) checkpoint on test.

Works alone or under torchrun (``torchrun --nproc_per_node N -m bianet_lib train ...``): the
process group is initialised here (gloo on CPU, nccl on CUDA), every rank trains on its shard
of each batch, and only rank 0 writes checkpoints, metrics and results.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import tempfile
from pathlib import Path

from bianet_lib.cli import EnvironmentFault, UsageError, describe_os_error
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
                   help="continue DIR's run from latest.pt (its config, + --set)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a DIR that holds a run (deletes its checkpoints and results)")
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
    check_device(cfg)
    return cfg


def check_device(cfg) -> None:
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"config field device={cfg.device!r}: no CUDA device is available")
    elif cfg.device not in ("auto", "cpu"):
        raise UsageError(f"config field device={cfg.device!r}: expected auto, cpu or cuda[:N]")


def resume_config(args: argparse.Namespace, run_dir: Path):
    """The config of the run in ``run_dir`` (+ --set, which may not change it).

    latest.pt is the run's commit point and holds its config: config.yaml (derived from it) may
    be missing, empty or damaged and is then restored, never needed. Without a latest.pt (a run
    stopped before its first epoch ended) the config comes from config.yaml."""
    from bianet_lib.config import BIANetConfig, load_config
    from bianet_lib.engine.safeio import CheckpointError, read_checkpoint
    from bianet_lib.engine.trainer import CONFIG, LATEST, config_changes

    latest, saved_yaml = run_dir / LATEST, run_dir / CONFIG
    if latest.is_file():
        try:
            state = read_checkpoint(latest)
        except CheckpointError as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        if "optimizer" not in state:
            raise UsageError(f"{latest}: holds weights only (a best.pt?); resuming needs a latest.pt")
        try:
            saved = BIANetConfig.from_dict(dict(state["config"]))
            cfg = saved.with_overrides(args.overrides)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{latest}: {' '.join(str(exc).split())}") from None
        check_device(cfg)
        if not saved_yaml.is_file():
            what = "missing"
        elif not saved_yaml.read_bytes().strip():
            what = "empty"
        else:
            try:
                on_disk = load_config(path=saved_yaml)
                what = None
            except (ValueError, TypeError):
                what = "unreadable"
            if what is None and (edited := config_changes(saved.to_dict(), on_disk.to_dict())):
                # an edit of the derived file would otherwise be silently undone
                raise UsageError(f"--resume keeps the run's config (in {latest}); {saved_yaml} was changed: "
                                 f"{', '.join(edited)}; delete {saved_yaml} to restore it, or start a new "
                                 "--run-dir to train with it")
        if what is not None:  # restored when the resumed run writes its derived files
            print(f"{saved_yaml}: {what}; restored from {LATEST}")
    elif saved_yaml.is_file() and saved_yaml.read_bytes().strip():
        cfg = config_from_args(args, base_file=saved_yaml)
        try:
            saved = load_config(path=saved_yaml)
        except (ValueError, TypeError) as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        print(f"{run_dir}: no checkpoint yet (stopped before epoch 1 ended): training from the start")
    else:
        raise UsageError(f"--resume: {latest} not found (no run started in {run_dir})")
    changes = config_changes(saved.to_dict(), cfg.to_dict())
    if changes:  # refused: a run resumed under another config would be neither run
        raise UsageError(f"--resume keeps the run's config ({latest if latest.is_file() else saved_yaml}); "
                         f"--set changes {', '.join(changes)}: start a new --run-dir to train with it")
    return cfg


# --- the run folder and the machine, before any work ----------------------------------------------
def _broken_link(path: Path) -> str | None:
    """Why ``path`` is a symlink that leads nowhere (dangling, or a loop), else None."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"dangling symlink (to {os.readlink(path)}, which does not exist)"
    return None


def check_run_dir(raw: str) -> Path:
    """The --run-dir path, refused in one line when it cannot be a run folder: empty (2), a file
    or under a file (2), a broken symlink on the way (3)."""
    if not raw.strip():
        raise UsageError("--run-dir '': give a folder name (--run-dir . for the current folder)")
    run_dir = Path(raw)
    for path in (run_dir, *run_dir.parents):  # from the run folder up to the first that exists
        why = _broken_link(path)
        if why is not None:
            raise EnvironmentFault(f"--run-dir {run_dir}: {path} is a {why}")
        if os.path.lexists(path):
            if not path.is_dir():
                where = "is" if path == run_dir else f"is under {path}, which is"
                raise UsageError(f"--run-dir {run_dir} {where} a file, not a directory")
            break
    return run_dir


def check_writable(folder: Path, what: str) -> None:
    """Create and delete a probe file in ``folder`` (made if missing): a read-only, forbidden or
    full folder is one line (exit 3) before any work, not a traceback after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise EnvironmentFault(f"{what} {describe_os_error(exc, exc.filename or folder)}") from None


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.3g} GiB"


#: Size fields a model's parameter count grows with (the first that explains an oversized model
#: is named).
MODEL_SIZE_FIELDS = ("attn_channels", "embed_dim", "hidden_dim", "face_widths", "audio_widths",
                     "audio_blocks", "n_mels", "face_size", "k")


def model_parameters(cfg) -> int:
    """The model's parameter count, built on torch's meta device (no memory is allocated)."""
    import dataclasses

    import torch

    from bianet_lib.model.network import BIANet

    with torch.device("meta"):
        model = BIANet(dataclasses.replace(cfg, face_weights=None))
    return sum(p.numel() for p in model.parameters())


def world_bytes(cfg) -> dict[str, int]:
    """Bytes a SynthVox world holds in memory, per split (uint8 faces, float32 voices)."""
    from bianet_lib.data.audio import SAMPLE_RATE

    per_item = 3 * cfg.face_size ** 2 + 4 * round(cfg.clip_seconds * SAMPLE_RATE)
    return {"train": cfg.world_n_train * cfg.world_per_id_train * per_item,
            "val": cfg.world_n_val * cfg.world_per_id_eval * per_item,
            "test": cfg.world_n_test * cfg.world_per_id_eval * per_item}


def preflight_memory(cfg, memory: int | None = None) -> None:
    """Refuse, before allocating, a model or a SynthVox world larger than this machine's memory
    (a simple estimate: parameters x 16 bytes for weights, gradients and Adam's two moments; the
    world's stored samples), naming the field that makes it so."""
    import dataclasses

    from bianet_lib.config import BIANetConfig

    memory = memory or _memory_bytes()
    if not memory:
        return
    if cfg.data == "synthvox":
        sizes = world_bytes(cfg)
        if sum(sizes.values()) > memory:
            split = max(sizes, key=sizes.get)
            n_field = f"world_n_{split}"
            per = "world_per_id_train" if split == "train" else "world_per_id_eval"
            name = n_field if getattr(cfg, n_field) >= getattr(cfg, per) else per
            raise UsageError(f"config field {name}={getattr(cfg, name)}: the SynthVox world would hold "
                             f"{_gib(sum(sizes.values()))} ({split}: {getattr(cfg, n_field)} identities x "
                             f"{getattr(cfg, per)} faces and voices), more than this machine's "
                             f"{_gib(memory)} of memory")
    try:
        params = model_parameters(cfg)
    except (ValueError, TypeError, RuntimeError):  # a combination the model refuses: preflight_shapes
        return
    need = 16 * params
    if need > memory:
        default = BIANetConfig()
        best, name = need, MODEL_SIZE_FIELDS[0]
        for field in MODEL_SIZE_FIELDS:
            try:
                smaller = model_parameters(dataclasses.replace(cfg, **{field: getattr(default, field)}))
            except (ValueError, TypeError, RuntimeError):
                continue
            if 16 * smaller < best:
                best, name = 16 * smaller, field
        value = getattr(cfg, name)
        value = list(value) if isinstance(value, tuple) else value
        raise UsageError(f"config field {name}={value}: the model would have {params:.3g} parameters "
                         f"({_gib(need)} for weights, gradients and Adam), more than this machine's "
                         f"{_gib(memory)} of memory")


def preflight_disk(cfg) -> None:
    """The world cache's folder is writable and has room for the world (SynthVox, not cached yet)."""
    from bianet_lib.data.sources import world_cache_path

    if cfg.data != "synthvox":
        return
    path = world_cache_path(cfg)
    if path.is_file():
        return
    check_writable(path.parent, "world cache")
    need, free = sum(world_bytes(cfg).values()), shutil.disk_usage(path.parent).free
    if need > free:
        raise EnvironmentFault(f"world cache {path.parent}: no space left on device (the world needs "
                               f"about {_gib(need)}, {_gib(free)} free)")


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
    from bianet_lib.engine.safeio import CheckpointError, FileLock, LockBusy
    from bianet_lib.engine.trainer import (
        CONFIG,
        LATEST,
        ConfigMismatchError,
        Distributed,
        RunExistsError,
    )

    run_dir = check_run_dir(args.run_dir)

    def hint() -> str:  # the one line a SIGINT / SIGTERM prints (cli.main)
        if (run_dir / LATEST).is_file() or (run_dir / CONFIG).is_file():
            return f"continue with: bianet train --run-dir {run_dir} --resume"
        return "nothing was trained yet: run the same command again"

    args.interrupt_hint = hint
    if args.resume:
        if args.preset or args.config:
            raise UsageError("--resume takes the config from the run directory; use only --set")
        if args.overwrite:
            raise UsageError("--resume continues the run, --overwrite starts it again: pass one")
        if not run_dir.is_dir():
            raise UsageError(f"--resume: {run_dir / LATEST} not found (no run started in {run_dir})")
        cfg = None  # read under the lock
    else:
        cfg = config_from_args(args)
        validate_for_training(cfg)

    main = Distributed.from_env().is_main
    lock = FileLock(run_dir / ".lock") if main else None
    try:
        if lock is not None and not lock.acquire(blocking=False):
            raise UsageError(f"--run-dir {run_dir}: another process is training in this run folder "
                             f"(pid {lock.holder()})")
    except OSError as exc:  # a read-only or forbidden folder: the lock file cannot be made
        raise EnvironmentFault(f"--run-dir {describe_os_error(exc, exc.filename or run_dir)}") from None
    try:
        # under the lock: what the folder holds cannot change until this process is done
        if args.resume:
            cfg = resume_config(args, run_dir)
            validate_for_training(cfg)
        elif not args.overwrite:  # every rank: a refused rank 0 must not leave the others waiting
            held = [name for name in (LATEST, "results.json") if (run_dir / name).exists()]
            if held:
                raise UsageError(f"--run-dir {run_dir} already holds a run ({', '.join(held)}); pass "
                                 "--resume to continue it, --overwrite to start it again, or pick a new "
                                 "directory")
        if main and args.overwrite:  # the old run's skip report (this run writes its own)
            (run_dir / "skipped.txt").unlink(missing_ok=True)
        if main:
            check_writable(run_dir, "--run-dir")
            preflight_disk(cfg)
        return _train(args, cfg, run_dir, locked=lock is not None)
    except (CheckpointError, ConfigMismatchError, LockBusy, RunExistsError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    finally:
        if lock is not None:
            lock.release()


def validate_for_training(cfg) -> None:
    """Every check that needs no data, before any work: sizes, shapes, memory."""
    if cfg.data == "synthvox" and cfg.batch_size > cfg.world_n_train:
        raise UsageError(f"config field batch_size={cfg.batch_size}: must be <= world_n_train="
                         f"{cfg.world_n_train} (a batch holds distinct identities)")
    preflight_memory(cfg)
    preflight_shapes(cfg)


def _train(args, cfg, run_dir: Path, locked: bool) -> int:
    from bianet_lib.commands.evaluate import evaluate_checkpoint, print_summary
    from bianet_lib.engine.evaluate import write_results_json
    from bianet_lib.engine.trainer import BEST, Distributed, Trainer

    created = init_distributed(cfg.device)
    try:
        try:
            world = load_world_ranked(cfg)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:  # bad combinations the data reveals (batch_size > identities) are refused here
            trainer = Trainer(cfg, world["train"], world["val"], run_dir, progress=not args.no_progress)
        except ValueError as exc:
            raise UsageError(f"config field batch_size={cfg.batch_size}: {exc}") from None
        if Distributed.from_env().is_main:  # skips are never silent: saved beside the run
            from bianet_lib.data.sources import save_skip_report

            saved = save_skip_report(world, run_dir)
            if saved:
                print(f"skip report written to {saved}")
        trainer.fit(resume=args.resume, overwrite=args.overwrite, locked=locked)
        if not Distributed.from_env().is_main:
            return 0
        record = evaluate_checkpoint(run_dir / BEST, world, str(trainer.device))
        write_results_json(record, run_dir / "results.json")
        print_summary(record)
        print(f"results written to {run_dir / 'results.json'}")
        return 0
    finally:
        destroy_distributed(created)
