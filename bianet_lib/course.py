"""Execute the course notebooks with papermill and keep the executed copies clean for git.

Conventions every notebook follows (see ``notebooks/01_causal_effects.ipynb``, the template):

* file name ``notebooks/NN_slug.ipynb`` (two digits, then a slug); notebooks run in sorted order;
* the first code cell is tagged ``parameters`` and holds literals only, at least
  ``SEED``, ``FAST``, ``FIGURES_DIR = "../figures"`` and ``DEVICE = "auto"``;
* figures are saved with :func:`bianet_lib.viz.save_figure` to ``FIGURES_DIR`` as ``NN_slug_*.png``;
* cells whose output is deterministic carry a ``# NBVAL_CHECK_OUTPUT`` comment (nbval --nbval-lax).

What :func:`run_notebook` does to the executed notebook before writing it:

* the kernel runs in the notebook's own folder (papermill's ``cwd``), kernel ``python3``;
* papermill's ``injected-parameters`` cell is **removed**, so the committed parameters cell stays
  the single place where defaults live (nbval re-runs the notebook with exactly those). Running
  in place with non-default parameters therefore leaves outputs that the visible parameters do
  not explain: use ``--output-dir`` for such runs (the command warns);
* ``metadata.papermill`` and each cell's ``metadata.papermill`` / ``metadata.execution``
  (timestamps) are stripped, as are papermill's empty ``tags`` lists;
* execution counts and outputs are kept (nbval never compares a cell whose count is null).

A failing cell raises :class:`NotebookExecutionError` naming the notebook, the cell index (in
the notebook as committed) and the cell's first source line; the destination is not touched and
the half-executed notebook is left in a temporary folder for inspection.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

NOTEBOOK_RE = re.compile(r"^\d{2}_[A-Za-z0-9_\-]+\.ipynb$")
KERNEL_NAME = "python3"
INJECTED_TAG = "injected-parameters"
ERROR_TAG = "papermill-error-cell-tag"


class NotebookExecutionError(RuntimeError):
    """A notebook cell raised; the message names the notebook and the cell."""

    def __init__(self, notebook: Path, cell_index: int | None, first_line: str, detail: str, failed_copy: Path | None):
        self.notebook = notebook
        self.cell_index = cell_index
        self.first_line = first_line
        self.failed_copy = failed_copy
        where = f"cell {cell_index}" if cell_index is not None else "an unknown cell"
        msg = f"{notebook}: {where} failed (first line: {first_line!r}): {detail}"
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
    """Drop the injected-parameters cell and papermill/timing metadata (in place; returns ``nb``)."""
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        md = cell.get("metadata", {})
        md.pop("papermill", None)
        md.pop("execution", None)
        if "tags" in md and not md["tags"]:
            del md["tags"]
    return nb


def _committed_cell_index(executed_nb, papermill_index: int | None) -> int | None:
    """Translate papermill's cell index (counting an injected cell) to the committed notebook's."""
    if papermill_index is None:
        return None
    # papermill's index counts the executed cells before it adds its two error-banner cells
    cells = [c for c in executed_nb.cells if ERROR_TAG not in c.get("metadata", {}).get("tags", [])]
    injected = [i for i, c in enumerate(cells) if INJECTED_TAG in c.get("metadata", {}).get("tags", [])]
    return papermill_index - sum(1 for i in injected if i < papermill_index)


def run_notebook(
    notebook: str | Path,
    output: str | Path | None = None,
    parameters: dict[str, Any] | None = None,
    progress_bar: bool = True,
    log_output: bool = True,
    clean: bool = True,
) -> NotebookRun:
    """Execute ``notebook`` with papermill (cwd = its folder) and write the cleaned result.

    ``output`` defaults to the notebook itself (in place). Raises :class:`NotebookExecutionError`.
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    output = notebook if output is None else Path(output).resolve()
    tmp_dir = Path(tempfile.mkdtemp(prefix="bianet-course-"))
    executed = tmp_dir / notebook.name
    start = time.perf_counter()
    try:
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
        first = next((line for line in (exc.source or "").splitlines() if line.strip()), "")
        index = exc.cell_index
        if executed.exists():
            index = _committed_cell_index(nbformat.read(executed, as_version=4), exc.cell_index)
        raise NotebookExecutionError(
            notebook, index, first, f"{exc.ename}: {exc.evalue}", executed if executed.exists() else None
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
