"""``bianet diagnose``: is each part of a trained run's BIANet doing anything? (diagnostics.py)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bianet_lib.cli import EnvironmentFault, UsageError

HELP = "the mechanism's health of a run's checkpoint: mask, threshold, entropies, ablations, probes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, metavar="DIR", help="a directory written by bianet train")
    p.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                   help="best.pt (default), latest.pt, or a checkpoint file")
    p.add_argument("--split", default="test", choices=("test", "val"), help="held-out split (default test)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="JSON report (default DIR/diagnose-<checkpoint>.json)")


def run(args: argparse.Namespace) -> int:
    from bianet_lib.data.sources import load_world
    from bianet_lib.engine.diagnostics import diagnose
    from bianet_lib.engine.safeio import NotWritableError, atomic_write_text, check_out_file
    from bianet_lib.engine.trainer import load_model
    from bianet_lib.reports.diagnostics import format_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: no such directory")
    path = run_dir / f"{args.checkpoint}.pt" if args.checkpoint in ("best", "latest") else Path(args.checkpoint)
    if not path.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: {path} not found")
    out = Path(args.out) if args.out else run_dir / f"diagnose-{path.stem}.json"
    try:  # before any work: a folder, a missing folder, a read-only one
        check_out_file(out)
    except NotWritableError as exc:
        raise EnvironmentFault(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        model = load_model(path)
        world = load_world(model.cfg)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    report = diagnose(model, world[args.split])
    atomic_write_text(out, json.dumps(report, indent=1, sort_keys=True) + "\n")  # no .tmp left behind
    print(format_report(report))
    print(f"report written to {out}")
    return 0
