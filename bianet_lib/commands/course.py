"""``bianet course run``: execute the course notebooks in order with papermill.

``bianet course verify --runs DIR``: the regeneration check behind ``make verify-course``:
compare course runs trained afresh into DIR (and the notebooks re-executed on them into a work
folder) with the committed ones, number by number; exit 1 when anything differs beyond
``--tolerance``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from bianet_lib.cli import UsageError

HELP = "run the course notebooks (notebooks/NN_*.ipynb) in order with papermill, or verify a regeneration"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="execute notebooks and write them back with their outputs")
    run.add_argument("--notebooks-dir", default="notebooks", help="folder of NN_slug.ipynb files")
    run.add_argument("--only", metavar="PATTERN", help="only notebooks whose name starts with, contains or globs PATTERN")
    run.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="papermill parameter; VALUE is read as YAML (True, 3, 0.5, text); repeatable",
    )
    run.add_argument("--figures-dir", help="sets the FIGURES_DIR parameter (made absolute)")
    run.add_argument("--output-dir", help="write executed notebooks here instead of in place")
    run.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")
    verify = sub.add_parser("verify", help="compare freshly trained course runs and re-executed notebooks "
                                           "with the committed ones")
    verify.add_argument("--runs", required=True, help="folder holding freshly trained bianet-cpu-small/ "
                                                      "and baseline-cpu-small/")
    verify.add_argument("--work-dir", required=True, help="where re-executed notebooks and figures go")
    verify.add_argument("--root", default=".", help="repository root (committed results/, notebooks/, figures/)")
    verify.add_argument("--tolerance", type=float, default=0.0,
                        help="largest absolute difference accepted for any number (default 0: bit-identical)")
    verify.add_argument("--runs-only", action="store_true", help="compare the run folders only, no notebooks")


def parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--param wants KEY=VALUE with a Python name as KEY, got {item!r}")
        try:
            params[key.strip()] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", "") or exc.__class__.__name__)
            raise UsageError(f"--param {key}: cannot read value {value!r} as YAML ({problem})") from None
    return params


def run(args) -> int:
    from bianet_lib.course import (
        NotebookExecutionError,
        UnknownParameterError,
        discover_notebooks,
        run_course,
    )

    if args.action == "verify":
        return _verify(args)

    folder = Path(args.notebooks_dir)
    if args.only is not None and not args.only.strip():
        raise UsageError("--only '': an empty pattern would select every notebook; leave --only out for all")
    if not folder.is_dir():
        raise UsageError(f"--notebooks-dir {folder} is not a folder")
    if not discover_notebooks(folder, args.only):
        raise UsageError(f"no NN_slug.ipynb notebook in {folder}" + (f" matching {args.only!r}" if args.only else ""))
    params = parse_params(args.param)
    if args.figures_dir:
        params["FIGURES_DIR"] = str(Path(args.figures_dir).resolve())
        os.environ["BIANET_FIGURES_DIR"] = params["FIGURES_DIR"]  # the kernels' override must not win over it
    if params and not args.output_dir:
        print(
            "bianet course: warning: running in place with non-default parameters "
            f"{sorted(params)}; the committed parameters cell will not explain these outputs",
            file=sys.stderr,
        )
    try:
        run_course(folder, args.only, params, args.output_dir, progress_bar=not args.no_progress)
    except UnknownParameterError as exc:
        raise UsageError(str(exc)) from None
    except NotebookExecutionError as exc:
        print(f"bianet course: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _verify(args) -> int:
    from bianet_lib.course import COURSE_RUNS, NotebookExecutionError, verify_course

    runs = Path(args.runs)
    for name in COURSE_RUNS:
        if not (runs / name / "best.pt").is_file():
            raise UsageError(f"--runs {runs}: no trained {name}/best.pt there (run `make verify-course`)")
    if args.tolerance < 0:
        raise UsageError(f"--tolerance {args.tolerance}: must be >= 0")
    try:
        n = verify_course(runs, args.work_dir, args.root, args.tolerance, notebooks=not args.runs_only)
    except NotebookExecutionError as exc:
        print(f"bianet course: error: {exc}", file=sys.stderr)
        return 1
    return 1 if n else 0
