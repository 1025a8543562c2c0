"""Every course notebook runs (FAST, into a temp dir) and its checked outputs still match (nbval).

1. ``test_notebook_runs_fast``: papermill executes each ``notebooks/NN_*.ipynb`` with
   ``FAST=True`` and ``FIGURES_DIR=<tmp>/figures``; no cell may fail, and every figure the
   notebook is known to make (the committed ``figures/NN_*.png`` plus literal names passed to
   ``save_figure`` in its source) must appear in the temp folder. Committed figures and
   notebooks are never written.
2. ``test_nbval_checked_outputs``: one pytest subprocess runs nbval in lax mode over
   notebooks/: every cell executes with the committed parameters, cells marked
   ``# NBVAL_CHECK_OUTPUT`` must reproduce their stored output (after tests/nbval_sanitize.cfg).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bianet_lib.course import discover_notebooks, ensure_kernel, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")
SAVE_FIGURE_NAME = re.compile(r"""save_figure\(\s*[^,]+,\s*f?["']([^"'{}]+)["']""")


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")) if folder.exists() else []:
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def expected_figures(notebook: Path) -> set[str]:
    """Figures a notebook must produce: committed figures/NN_*.png and save_figure literals."""
    prefix = notebook.name[:3]  # "NN_"
    names = {p.name for p in (ROOT / "figures").glob(f"{prefix}*.png")}
    source = "\n".join(
        "".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"
    )
    names |= {f"{n}.png" for n in SAVE_FIGURE_NAME.findall(source)}
    return names


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_fast(notebook: Path, tmp_path: Path, notebook_times):
    ensure_kernel()
    figures = tmp_path / "figures"
    before = (_tree_digest(ROOT / "figures"), notebook.read_bytes())
    run = run_notebook(
        notebook,
        tmp_path / notebook.name,
        {"FAST": True, "FIGURES_DIR": str(figures)},
        progress_bar=False,
        log_output=False,
    )
    notebook_times[f"{notebook.name} (FAST, papermill)"] = run.seconds
    print(f"{notebook.name}: {run.seconds:.1f} s")
    made = {p.name for p in figures.glob("*.png")}
    missing = expected_figures(notebook) - made
    assert not missing, f"{notebook.name} did not write {sorted(missing)} to FIGURES_DIR"
    wrong = {n for n in made if not n.startswith(notebook.stem + "_")}
    assert not wrong, f"figures of {notebook.name} must be named {notebook.stem}_*.png: {sorted(wrong)}"
    assert (_tree_digest(ROOT / "figures"), notebook.read_bytes()) == before, "committed files were modified"


@pytest.mark.slow
def test_nbval_checked_outputs(notebook_times):
    if not NOTEBOOKS:
        pytest.skip("no notebooks/NN_*.ipynb yet")
    n_checked = sum(
        "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])
        for nb in NOTEBOOKS
        for c in json.loads(nb.read_text())["cells"]
        if c["cell_type"] == "code"
    )
    assert n_checked > 0, "no cell is marked # NBVAL_CHECK_OUTPUT: nbval would check nothing"
    ensure_kernel()
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
        "--nbval-lax", "--nbval-current-env",
        "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
        *[str(nb.relative_to(ROOT)) for nb in NOTEBOOKS],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    import time

    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    notebook_times["all notebooks (nbval, committed parameters)"] = time.perf_counter() - start
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"nbval failed (exit {proc.returncode}):\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout), tail
