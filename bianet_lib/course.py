"""Execute the course notebooks with papermill and keep the executed copies clean for git.

Conventions every notebook follows (see ``notebooks/01_causal_effects.ipynb``, the template):

* file name ``notebooks/NN_slug.ipynb`` (two digits, an optional letter, then a slug: ``05b_...``
  sorts between ``05_`` and ``06_``); notebooks run in sorted order;
* the first code cell is tagged ``parameters`` and holds literals only, at least
  ``SEED``, ``FAST``, ``FIGURES_DIR = "../figures"`` and ``DEVICE = "auto"``;
* figures are saved with :func:`bianet_lib.viz.save_figure` to ``FIGURES_DIR`` as ``NN_slug_*.png``;
* cells whose output is deterministic carry a ``# NBVAL_CHECK_OUTPUT`` comment (nbval --nbval-lax).

What :func:`run_notebook` does to the executed notebook before writing it:

* the kernel runs in the notebook's own folder (papermill's ``cwd``), kernel ``python3``, with one
  math-library thread unless ``OMP_NUM_THREADS`` is set (:func:`kernel_threads`: committed outputs
  must not depend on the machine's core count);
* papermill's ``injected-parameters`` cell is **removed**, so the committed parameters cell stays
  the single place where defaults live (nbval re-runs the notebook with exactly those). Running
  in place with non-default parameters therefore leaves outputs that the visible parameters do
  not explain: use ``--output-dir`` for such runs (the command warns);
* ``metadata.papermill`` and each cell's ``metadata.papermill`` / ``metadata.execution``
  (timestamps) are stripped, as are papermill's empty ``tags`` lists;
* execution counts and outputs are kept (nbval never compares a cell whose count is null).

A parameter the notebook's ``parameters`` cell does not assign is refused before anything runs
(:class:`UnknownParameterError`, with the closest declared name). A failing cell raises
:class:`NotebookExecutionError` naming the notebook, the cell index (in the notebook as
committed) and the failing line of that cell (its number and text, read from the traceback; the
cell's first line when the traceback names none); the destination is not touched and the
half-executed notebook is left in a temporary folder for inspection.

Redirections for tests and checks, read by the notebooks' setup cells through
:func:`figures_dir` and :func:`course_run_dir`: ``$BIANET_FIGURES_DIR`` replaces every
notebook's ``FIGURES_DIR`` (the test suite points it at a temporary folder, so neither papermill
nor nbval writes into ``figures/``), and ``$BIANET_COURSE_RUNS`` replaces the folder of the
course runs (``RUN_DIR``, ``BASELINE_RUN_DIR``): nbval can then check the committed outputs
against freshly trained runs (``tests/planted_regression.py``).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

NOTEBOOK_RE = re.compile(r"^\d{2}[a-z]?_[A-Za-z0-9_\-]+\.ipynb$")  # 05b_ sorts between 05_ and 06_
KERNEL_NAME = "python3"
INJECTED_TAG = "injected-parameters"
ERROR_TAG = "papermill-error-cell-tag"
FIGURES_ENV = "BIANET_FIGURES_DIR"
RUNS_ENV = "BIANET_COURSE_RUNS"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_FRAME = re.compile(r"Cell In\[(\d+)\], line (\d+)")


def figures_dir(default: str | Path) -> Path:
    """A notebook's figure folder: ``$BIANET_FIGURES_DIR`` when set (the tests), else ``default``."""
    return Path(os.environ.get(FIGURES_ENV) or default)


def course_run_dir(default: str | Path) -> Path:
    """A course run's folder; ``$BIANET_COURSE_RUNS`` (when set) replaces its parent folder."""
    root = os.environ.get(RUNS_ENV)
    return Path(root) / Path(default).name if root else Path(default)


def text_progress_bars() -> None:
    """Make ``tqdm.auto`` mean tqdm's plain text bars when ipywidgets is not installed.

    librosa (through pooch) imports ``tqdm.auto``; inside a Jupyter kernel without ipywidgets
    that import warns "IProgress not found" (naming the venv's path) and then falls back to
    the text bars anyway. Selecting the text bars first removes the cause of the warning; with
    ipywidgets installed nothing changes.
    """
    import importlib.util
    import types

    if importlib.util.find_spec("ipywidgets") is not None or "tqdm.auto" in sys.modules:
        return
    import tqdm
    import tqdm.std

    auto = types.ModuleType("tqdm.auto", "tqdm's text bars (bianet_lib.course.text_progress_bars)")
    auto.tqdm, auto.trange = tqdm.std.tqdm, tqdm.std.trange
    auto.__all__ = ["tqdm", "trange"]
    for name in ("tqdm.auto", "tqdm.autonotebook"):
        sys.modules[name] = auto
        setattr(tqdm, name.split(".")[1], auto)


class UnknownParameterError(ValueError):
    """A papermill parameter that the notebook's parameters cell does not declare."""


def declared_parameters(notebook) -> list[str]:
    """Names the ``parameters``-tagged cell assigns (empty when the notebook has none)."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            names = []
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    return []


def check_parameters(notebook_path: str | Path, parameters: dict[str, Any]) -> None:
    """Raise :class:`UnknownParameterError` for a parameter ``notebook_path`` does not declare."""
    import nbformat

    declared = declared_parameters(nbformat.read(notebook_path, as_version=4))
    for name in parameters:
        if name not in declared:
            same_case = [d for d in declared if d.lower() == name.lower()]  # fast -> FAST
            close = same_case or difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UnknownParameterError(
                f"{Path(notebook_path).name}: parameter {name!r} is not declared in its parameters cell{hint}; "
                f"declared: {', '.join(declared) or 'none'}")


def failing_line(source: str, traceback: list[str] | None) -> tuple[int | None, str]:
    """The 1-based number and text of the line of ``source`` that raised.

    IPython's traceback names cell frames "Cell In[n], line k"; the first such frame is the
    failing cell, and its deepest frame with the same n is the line that raised (inside a
    function defined in that cell, when there is one). Falls back to the first non-blank line.
    """
    lines = source.splitlines()
    frames = [(int(n), int(k)) for n, k in CELL_FRAME.findall(ANSI.sub("", "\n".join(traceback or [])))]
    if frames:
        cell = frames[0][0]
        number = [k for n, k in frames if n == cell][-1]
        if 1 <= number <= len(lines):
            return number, lines[number - 1].strip()
    return None, next((line.strip() for line in lines if line.strip()), "")


class NotebookExecutionError(RuntimeError):
    """A notebook cell raised; the message names the notebook and the cell."""

    def __init__(self, notebook: Path, cell_index: int | None, line_number: int | None, line: str, detail: str,
                 failed_copy: Path | None):
        self.notebook = notebook
        self.cell_index = cell_index
        self.line_number = line_number
        self.line = line
        self.failed_copy = failed_copy
        where = f"cell {cell_index}" if cell_index is not None else "an unknown cell"
        at = f"line {line_number}: {line!r}" if line_number is not None else f"first line: {line!r}"
        msg = f"{notebook}: {where} failed at {at}: {detail}"
        if failed_copy is not None:
            msg += f" [executed copy: {failed_copy}]"
        super().__init__(msg)


@dataclass(frozen=True)
class NotebookRun:
    notebook: Path
    output: Path
    seconds: float


def discover_notebooks(notebooks_dir: str | Path, only: str | None = None) -> list[Path]:
    """``NN_slug.ipynb`` files of ``notebooks_dir`` in sorted order, optionally filtered.

    ``only`` keeps the notebooks whose file name starts with it, contains it, or matches it as a
    glob (``--only 01`` or ``--only '0[1-3]_*'``).
    """
    folder = Path(notebooks_dir)
    found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_RE.match(p.name))
    if only:
        found = [p for p in found if p.name.startswith(only) or only in p.name or fnmatch(p.name, only)]
    return found


def ensure_kernel(name: str = KERNEL_NAME) -> None:
    """Install a ``name`` kernelspec into this interpreter's prefix if jupyter cannot find one."""
    from jupyter_client.kernelspec import KernelSpecManager

    if name in KernelSpecManager().find_kernel_specs():
        return
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", name, "--display-name", "Python 3"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def clean_executed(nb) -> Any:
    """Drop the injected-parameters cell and papermill/timing metadata and merge adjacent stream
    chunks (in place; returns ``nb``)."""
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        md = cell.get("metadata", {})
        md.pop("papermill", None)
        md.pop("execution", None)
        if "tags" in md and not md["tags"]:
            del md["tags"]
        if cell.get("outputs"):
            cell.outputs = _merge_streams(cell.outputs)
    return nb


def _merge_streams(outputs: list) -> list:
    """Adjacent stdout (or stderr) chunks as one output: how a cell's prints are split depends on
    when the kernel flushed, so an unmerged notebook differs from run to run in its JSON alone."""
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == out.get("name")):
            prev["text"] = "".join(prev["text"]) + "".join(out["text"])
        else:
            merged.append(out)
    return merged


def _committed_cell_index(executed_nb, papermill_index: int | None) -> int | None:
    """Translate papermill's cell index (counting an injected cell) to the committed notebook's."""
    if papermill_index is None:
        return None
    # papermill's index counts the executed cells before it adds its two error-banner cells
    cells = [c for c in executed_nb.cells if ERROR_TAG not in c.get("metadata", {}).get("tags", [])]
    injected = [i for i, c in enumerate(cells) if INJECTED_TAG in c.get("metadata", {}).get("tags", [])]
    return papermill_index - sum(1 for i in injected if i < papermill_index)


#: Threads of the kernel's math libraries when the caller has not chosen: torch defaults to the
#: number of cores and float sums in another order give other bits, so without a pin a notebook's
#: committed outputs (losses of a hand loop, a small model's training) would depend on the machine.
KERNEL_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def kernel_threads(threads: int = KERNEL_THREADS):
    """Set ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` for kernels started inside (they inherit the
    environment) unless the caller chose ``OMP_NUM_THREADS`` (then nothing is touched: torch would
    take a lone ``MKL_NUM_THREADS`` over it); the environment is restored on exit."""
    chosen = "OMP_NUM_THREADS" in os.environ
    added = [] if chosen else [v for v in THREAD_VARIABLES if v not in os.environ]
    for v in added:
        os.environ[v] = str(threads)
    try:
        yield
    finally:
        for v in added:
            os.environ.pop(v, None)


def run_notebook(
    notebook: str | Path,
    output: str | Path | None = None,
    parameters: dict[str, Any] | None = None,
    progress_bar: bool = True,
    log_output: bool = True,
    clean: bool = True,
) -> NotebookRun:
    """Execute ``notebook`` with papermill (cwd = its folder) and write the cleaned result.

    ``output`` defaults to the notebook itself (in place). Raises :class:`UnknownParameterError`
    (before running anything) and :class:`NotebookExecutionError`.
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    output = notebook if output is None else Path(output).resolve()
    check_parameters(notebook, dict(parameters or {}))
    tmp_dir = Path(tempfile.mkdtemp(prefix="bianet-course-"))
    executed = tmp_dir / notebook.name
    start = time.perf_counter()
    try:
        with kernel_threads():
            pm.execute_notebook(
                str(notebook),
                str(executed),
                parameters=dict(parameters or {}),
                kernel_name=KERNEL_NAME,
                cwd=str(notebook.parent),
                progress_bar=progress_bar,
                log_output=log_output,
            )
    except PapermillExecutionError as exc:
        number, line = failing_line(exc.source or "", exc.traceback)
        index = exc.cell_index
        if executed.exists():
            index = _committed_cell_index(nbformat.read(executed, as_version=4), exc.cell_index)
        raise NotebookExecutionError(
            notebook, index, number, line, f"{exc.ename}: {exc.evalue}", executed if executed.exists() else None
        ) from exc
    seconds = time.perf_counter() - start
    nb = nbformat.read(executed, as_version=4)
    if clean:
        clean_executed(nb)
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, output)
    executed.unlink()
    tmp_dir.rmdir()
    return NotebookRun(notebook=notebook, output=output, seconds=seconds)


def run_course(
    notebooks_dir: str | Path = "notebooks",
    only: str | None = None,
    parameters: dict[str, Any] | None = None,
    output_dir: str | Path | None = None,
    progress_bar: bool = True,
    log_output: bool = True,
    echo=print,
) -> list[NotebookRun]:
    """Run every ``NN_*.ipynb`` of ``notebooks_dir`` in order; print each wall time."""
    notebooks = discover_notebooks(notebooks_dir, only)
    if not notebooks:
        raise FileNotFoundError(f"no NN_slug.ipynb notebook in {notebooks_dir}" + (f" matching {only!r}" if only else ""))
    for nb_path in notebooks:  # a misspelt parameter fails before any notebook runs
        check_parameters(nb_path, dict(parameters or {}))
    ensure_kernel()
    runs = []
    for nb_path in notebooks:
        out = None if output_dir is None else Path(output_dir) / nb_path.name
        echo(f"== {nb_path.name}")
        run = run_notebook(nb_path, out, parameters, progress_bar=progress_bar, log_output=log_output)
        echo(f"== {nb_path.name}: {run.seconds:.1f} s -> {run.output}")
        runs.append(run)
    total = sum(r.seconds for r in runs)
    echo(f"== {len(runs)} notebook(s) in {total:.1f} s")
    return runs


# --- regeneration check (make verify-course) ------------------------------------------------
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: printed text that legitimately changes between runs: wall times and rates
VOLATILE = re.compile(r"\b\d+(?:\.\d+)?\s*(?:s|ms|min|sec|seconds|it/s|s/it|runs?/s)\b")
#: printed folders that the check redirects
MACHINE = re.compile(r"\b(FIGURES_DIR)=\S+")
#: per-epoch and run-record keys that are wall times or machine descriptions, not results
VOLATILE_KEYS = {"seconds", "wall_s", "timestamp", "versions", "code", "epochs_this_attempt"}


def printed_text(cell) -> str:
    """What a code cell printed (stdout and text/plain results; not stderr, not images)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and not any(k.startswith("image/") for k in data):
                parts.append(data["text/plain"])
    return "".join(parts)


def compare_printed(committed: str, fresh: str, tolerance: float) -> list[str]:
    """Differences between two printed texts: numbers beyond ``tolerance`` (absolute), or text.

    Wall times and rates are masked first; the rest must agree word for word, and each number
    within ``tolerance``.
    """
    a, b = (MACHINE.sub(r"\1=PATH", VOLATILE.sub("TIME", t)) for t in (committed, fresh))
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        la, lb = NUMBER.sub("#", a).splitlines(), NUMBER.sub("#", b).splitlines()
        first = next((i for i, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), min(len(la), len(lb)))
        show = lambda lines, i: lines[i].strip()[:100] if i < len(lines) else "<end>"  # noqa: E731
        return [f"text differs at printed line {first + 1}: {show(a.splitlines(), first)!r} -> "
                f"{show(b.splitlines(), first)!r}"]
    diffs = []
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
        if abs(float(x) - float(y)) > tolerance:
            diffs.append(f"{x} -> {y}")
    return diffs


def flatten_numbers(value, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON value as ``{"a.b.0": x}``, skipping :data:`VOLATILE_KEYS`."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in VOLATILE_KEYS:
                out.update(flatten_numbers(v, f"{prefix}{k}."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(flatten_numbers(v, f"{prefix}{i}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix.rstrip(".")] = float(value)
    elif value is not None and not isinstance(value, bool):
        out[prefix.rstrip(".")] = value  # strings must match exactly
    return out


def compare_json(committed, fresh, tolerance: float, label: str) -> list[str]:
    a, b = flatten_numbers(committed), flatten_numbers(fresh)
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            diffs.append(f"{label}: {key} only in the {'fresh' if x is None else 'committed'} run")
        elif isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > tolerance:
                diffs.append(f"{label}: {key} {x:.6g} -> {y:.6g} (diff {y - x:+.2e})")
        elif x != y:
            diffs.append(f"{label}: {key} {x!r} -> {y!r}")
    return diffs


#: the run folders ``make course-runs`` trains (results/course/<name>)
COURSE_RUNS = ("bianet-cpu-small", "baseline-cpu-small")


def compare_runs(committed_dir: Path, fresh_dir: Path, tolerance: float) -> list[str]:
    """Every number of ``results.json`` and ``metrics.jsonl``, ``config.yaml`` and the weights."""
    import json

    import yaml

    diffs = []
    for run in (committed_dir / name for name in COURSE_RUNS):
        fresh = fresh_dir / run.name
        if not run.is_dir():
            diffs.append(f"{run.name}: no committed run in {committed_dir}")
            continue
        if not fresh.is_dir():
            diffs.append(f"{run.name}: no fresh run in {fresh_dir}")
            continue
        for name in ("results.json",):
            diffs += compare_json(json.loads((run / name).read_text()), json.loads((fresh / name).read_text()),
                                  tolerance, f"{run.name}/{name}")
        lines = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
                 for d in (run, fresh)]
        diffs += compare_json(lines[0], lines[1], tolerance, f"{run.name}/metrics.jsonl")
        if yaml.safe_load((run / "config.yaml").read_text()) != yaml.safe_load((fresh / "config.yaml").read_text()):
            diffs.append(f"{run.name}/config.yaml: differs (the runs were not made with the same settings)")
        diffs += _compare_weights(run / "best.pt", fresh / "best.pt", tolerance, run.name)
    return diffs


def _compare_weights(a: Path, b: Path, tolerance: float, label: str) -> list[str]:
    import warnings

    from bianet_lib.engine.safeio import read_checkpoint

    with warnings.catch_warnings():  # "written before checksums": the committed runs may predate them
        warnings.simplefilter("ignore", UserWarning)
        sa, sb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    if set(sa) != set(sb):
        return [f"{label}/best.pt: different parameter names"]
    worst = max(((sa[k].double() - sb[k].double()).abs().max().item() if sa[k].numel() else 0.0, k)
                for k in sa if sa[k].shape == sb[k].shape and sa[k].is_floating_point())
    shapes = [k for k in sa if sa[k].shape != sb[k].shape]
    if shapes:
        return [f"{label}/best.pt: shapes differ in {', '.join(shapes[:3])}"]
    return [] if worst[0] <= tolerance else [f"{label}/best.pt: weights differ, largest |diff| {worst[0]:.2e} in {worst[1]}"]


def compare_notebooks(committed_dir: Path, fresh_dir: Path, tolerance: float) -> tuple[list[str], int]:
    """Printed differences cell by cell; also returns how many numbers were compared."""
    import nbformat

    diffs, n_numbers = [], 0
    for fresh_path in sorted(fresh_dir.glob("*.ipynb")):
        committed = nbformat.read(committed_dir / fresh_path.name, as_version=4)
        fresh = nbformat.read(fresh_path, as_version=4)
        code = [(i, c) for i, c in enumerate(committed.cells) if c.cell_type == "code"]
        fresh_code = [c for c in fresh.cells if c.cell_type == "code"]
        if len(code) != len(fresh_code):
            diffs.append(f"{fresh_path.name}: {len(code)} code cells committed, {len(fresh_code)} fresh")
            continue
        for (i, a), b in zip(code, fresh_code, strict=True):
            text = printed_text(a)
            n_numbers += len(NUMBER.findall(MACHINE.sub("", VOLATILE.sub("TIME", text))))
            diffs += [f"{fresh_path.name} cell {i}: {d}" for d in compare_printed(text, printed_text(b), tolerance)]
    return diffs, n_numbers


def compare_figures(committed_dir: Path, fresh_dir: Path) -> list[str]:
    """Figures whose PNG bytes differ (reported, not failed: fonts and libpng vary by machine)."""
    return [f"{p.name}: PNG differs" for p in sorted(fresh_dir.glob("*.png"))
            if not (committed_dir / p.name).is_file() or (committed_dir / p.name).read_bytes() != p.read_bytes()]


def verify_course(runs_dir: str | Path, work_dir: str | Path, root: str | Path = ".", tolerance: float = 0.0,
                  notebooks: bool = True, echo=print) -> int:
    """Compare freshly trained course runs (``runs_dir``) and notebooks re-executed on them with
    the committed ones; print each difference; return the number of differences."""
    import nbformat

    root, runs_dir, work_dir = Path(root).resolve(), Path(runs_dir).resolve(), Path(work_dir).resolve()
    diffs = compare_runs(root / "results" / "course", runs_dir, tolerance)
    echo(f"== course runs: {len(diffs)} difference(s) beyond {tolerance:g}")
    n_numbers, figure_diffs = 0, []
    if notebooks:
        out_dir, fig_dir = work_dir / "notebooks", work_dir / "figures"
        ensure_kernel()
        for nb_path in discover_notebooks(root / "notebooks"):
            declared = declared_parameters(nbformat.read(nb_path, as_version=4))
            params = {"FIGURES_DIR": str(fig_dir), "RUN_DIR": str(runs_dir / "bianet-cpu-small"),
                      "BASELINE_RUN_DIR": str(runs_dir / "baseline-cpu-small")}
            run = run_notebook(nb_path, out_dir / nb_path.name, {k: v for k, v in params.items() if k in declared},
                               progress_bar=False, log_output=False)
            echo(f"== {nb_path.name}: {run.seconds:.1f} s")
        nb_diffs, n_numbers = compare_notebooks(root / "notebooks", out_dir, tolerance)
        diffs += nb_diffs
        figure_diffs = compare_figures(root / "figures", fig_dir)
    for d in diffs:
        echo(f"DIFF {d}")
    for d in figure_diffs:
        echo(f"note: {d}")
    echo(f"== {len(diffs)} difference(s) beyond {tolerance:g} ({n_numbers} printed numbers compared); "
         f"{len(figure_diffs)} figure(s) not byte-identical")
    return len(diffs)
