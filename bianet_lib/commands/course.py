"""``bianet course run``: execute the course notebooks in order with papermill."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from bianet_lib.cli import UsageError

HELP = "run the course notebooks (notebooks/NN_*.ipynb) in order with papermill"


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


def parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--param wants KEY=VALUE with a Python name as KEY, got {item!r}")
        try:
            params[key.strip()] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as exc:
            raise UsageError(f"--param {key}: cannot read value {value!r}: {exc}") from None
    return params


def run(args) -> int:
    from bianet_lib.course import NotebookExecutionError, discover_notebooks, run_course

    folder = Path(args.notebooks_dir)
    if not folder.is_dir():
        raise UsageError(f"--notebooks-dir {folder} is not a folder")
    if not discover_notebooks(folder, args.only):
        raise UsageError(f"no NN_slug.ipynb notebook in {folder}" + (f" matching {args.only!r}" if args.only else ""))
    params = parse_params(args.param)
    if args.figures_dir:
        params["FIGURES_DIR"] = str(Path(args.figures_dir).resolve())
    if params and not args.output_dir:
        print(
            "bianet course: warning: running in place with non-default parameters "
            f"{sorted(params)}; the committed parameters cell will not explain these outputs",
            file=sys.stderr,
        )
    try:
        run_course(folder, args.only, params, args.output_dir, progress_bar=not args.no_progress)
    except NotebookExecutionError as exc:
        print(f"bianet course: error: {exc}", file=sys.stderr)
        return 1
    return 0
