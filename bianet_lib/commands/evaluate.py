"""``bianet evaluate``: re-evaluate a run's checkpoint on the same world and trial lists.

The config comes from the checkpoint, the world from it (SynthVox: regenerated or read from
the cache, identical either way), the trials from :func:`bianet_lib.engine.protocols.standard_trials`
with the fixed protocol seed; so evaluating ``best`` reproduces ``results.json`` exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bianet_lib.cli import UsageError

HELP = "evaluate a run's checkpoint (both routes, every protocol) and write the results as JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, metavar="DIR", help="a directory written by bianet train")
    p.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                   help="best.pt (chosen on validation; default), latest.pt, or a checkpoint file")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="results file (default DIR/evaluate-<checkpoint>.json)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or auto (default: the device field of the run's config)")


def evaluate_checkpoint(path: str | Path, world: dict | None = None, device: str | None = None) -> dict:
    """The results record of one checkpoint: metrics of both routes, config, seed, versions.

    Evaluated under the run's own settings (its ``num_threads``: float sums depend on the
    thread count), so the numbers equal those written at training time bit for bit. Raises
    ``safeio.CheckpointError`` (one line) for a damaged or foreign checkpoint file.
    """
    import torch

    from bianet_lib.config import BIANetConfig
    from bianet_lib.data.sources import load_world
    from bianet_lib.engine.evaluate import results_record
    from bianet_lib.engine.protocols import evaluate_model
    from bianet_lib.engine.safeio import read_checkpoint
    from bianet_lib.engine.trainer import model_from_checkpoint, resolve_device

    path = Path(path)
    state = read_checkpoint(path)  # on the CPU; the model moves to the device below
    model = model_from_checkpoint(path, state)
    cfg = BIANetConfig.from_dict(dict(state["config"]))
    device = str(resolve_device(device or cfg.device))
    model = model.to(device)
    world = world if world is not None else load_world(cfg)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        metrics = evaluate_model(model, world["test"], world["val"], device)
    finally:
        torch.set_num_threads(threads)
    record = results_record(metrics, cfg.to_dict(), cfg.seed)
    record["checkpoint"] = {"file": path.name, "epoch": state["epoch"], "step": state["step"],
                            "best_val_acc": state["best_val"], "selected_on": world["val"].name}
    return record


def print_summary(record: dict) -> None:
    from bianet_lib.engine.protocols import format_summary

    ck = record["checkpoint"]
    print(f"{ck['file']}: epoch {ck['epoch']}, validation 1:2 accuracy {ck['best_val_acc']:.3f} "
          f"(selected on {ck['selected_on']}); test:")
    print(format_summary(record["metrics"]))


def _resolve(run_dir: Path, which: str) -> Path:
    if which in ("best", "latest"):
        return run_dir / f"{which}.pt"
    return Path(which)


def _warn_if_foreign(run_dir: Path, path: Path, config: dict) -> None:
    """One warning line when the checkpoint was trained with another config than the run folder's
    (for example a ``paper`` checkpoint copied into a ``cpu-small`` run): the results describe the
    checkpoint, not the run the folder holds."""
    import sys

    import yaml

    from bianet_lib.config import BIANetConfig

    own = run_dir / "config.yaml"
    try:
        folder = BIANetConfig.from_dict(dict(yaml.safe_load(own.read_text()) or {})).to_dict()
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return  # no readable config of its own: nothing to compare with
    differ = sorted(k for k in set(folder) | set(config)
                    if k not in ("device", "num_threads", "cache_dir", "loader_workers")
                    and folder.get(k) != config.get(k))
    if differ:
        shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        print(f"bianet evaluate: warning: {path} was trained with another config than {own} "
              f"(differs in {shown}); these results describe the checkpoint, not this run", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from bianet_lib.engine.evaluate import write_results_json
    from bianet_lib.engine.trainer import resolve_device

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: no such directory")
    path = _resolve(run_dir, args.checkpoint)
    if not path.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: {path} not found")
    device = None
    if args.device is not None:
        try:
            device = str(resolve_device(args.device))
            if device.startswith("cuda"):
                import torch

                if not torch.cuda.is_available():
                    raise ValueError("no CUDA device is available")
        except (RuntimeError, ValueError) as exc:
            raise UsageError(f"--device {args.device}: {exc}") from None
    from bianet_lib.engine.safeio import check_out_file

    out = Path(args.out) if args.out else run_dir / f"evaluate-{path.stem}.json"
    try:
        check_out_file(out, "--out")
        record = evaluate_checkpoint(path, device=device)
    except ValueError as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    write_results_json(record, out)
    print_summary(record)
    _warn_if_foreign(run_dir, path, record["config"])
    previous = run_dir / "results.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        if old.get("checkpoint", {}).get("file") == path.name and old.get("checkpoint", {}).get("epoch") == \
                record["checkpoint"]["epoch"]:
            same = json.loads(json.dumps(record["metrics"])) == old["metrics"]
            print(f"{'identical to' if same else 'DIFFERENT FROM'} the metrics in {previous}")
    print(f"results written to {out}")
    return 0
