"""``bianet experiments GRID``: run a named grid of runs (resumable), one JSON per run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bianet_lib.cli import UsageError

HELP = "run an experiment grid (the test-bed's, the paper's, smoke); finished runs are skipped"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", help="grid name, e.g. testbed-reduced (notebook 07's), testbed-16 (the converged grid), "
                                "testbed-16-reduced (its two-run reproduction), full-paper (GPU), smoke; "
                                "an unknown name lists them all")
    p.add_argument("--results-dir", default=None, metavar="DIR",
                   help="where <grid>/<run-id>.json go (default: results/experiments of the repository, "
                        "wherever the command runs from)")
    p.add_argument("--only", default=None, metavar="NAME", help="only the runs of this name (or run id)")
    p.add_argument("--list", action="store_true", help="list the grid's runs and whether each is done")
    p.add_argument("--workers", type=int, default=None,
                   help="runs trained at once in separate processes (default: the grid's, 2 for the CPU grids)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bianet_lib.experiments.grids import GRIDS, result_path
    from bianet_lib.experiments.runner import GridRunError, pending_runs, run_grid

    if args.grid not in GRIDS:
        raise UsageError(f"unknown grid {args.grid!r}: expected one of {', '.join(sorted(GRIDS))}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    grid = GRIDS[args.grid]
    if args.results_dir is None:
        from bianet_lib.engine.safeio import repo_relative

        args.results_dir = str(repo_relative("results/experiments"))
    elif Path(args.results_dir).exists() and not Path(args.results_dir).is_dir():
        raise UsageError(f"--results-dir {args.results_dir}: not a folder")
    try:
        todo = pending_runs(args.grid, args.results_dir, args.only)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if args.list:
        print(f"grid {grid.name} ({grid.preset}; base {' '.join(grid.base) or '-'}): {grid.description}")
        for r in grid.runs:
            if args.only is None or args.only in (r.name, r.run_id):
                state = "done" if result_path(args.results_dir, grid.name, r).is_file() else "todo"
                print(f"  {state}  {r.run_id:<28} {' '.join(r.overrides)}")
        return 0
    if grid.check is not None:  # e.g. the fair grid before its calibration is committed
        try:
            grid.check()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    print(f"grid {grid.name}: {len(todo)} run(s) to do")
    try:
        written = run_grid(args.grid, args.results_dir, args.only, progress=not args.no_progress,
                           workers=args.workers)
    except GridRunError as exc:
        print(f"bianet experiments: {exc}", file=sys.stderr)
        return 1
    print(f"{len(written)} result(s) written under {args.results_dir}/{grid.store}")
    return 0
