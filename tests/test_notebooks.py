"""Every course notebook runs (FAST, into a temp dir) and its checked outputs still match (nbval).

1. ``test_notebook_runs_fast``: papermill executes each ``notebooks/NN_*.ipynb`` with
   ``FAST=True`` and ``FIGURES_DIR=<tmp>/figures``; no cell may fail, and every figure the
   notebook is known to make (the committed ``figures/NN_*.png`` plus literal names passed to
   ``save_figure`` in its source) must appear in the temp folder. Committed figures and
   notebooks are never written.
2. ``test_nbval_checked_outputs``: one pytest subprocess runs nbval in lax mode over
   notebooks/: every cell executes with the committed parameters, cells marked
   ``# NBVAL_CHECK_OUTPUT`` must reproduce their stored output (after tests/nbval_sanitize.cfg).
   Figures go to ``$BIANET_FIGURES_DIR`` (a temporary folder set by tests/conftest.py), never
   to figures/. Cells that print trained-model results (the course runs' accuracies, learned
   epsilons, the validation history) are checked too, rounded to 3 decimals: evaluating a fixed
   checkpoint on the CPU is deterministic, so a change to what the committed runs print fails here.
3. ``test_committed_outputs_are_clean``: no stored output names a machine path or carries a
   Python warning (explicit allow-list for notebooks waiting to be re-executed).
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

from bianet_lib.course import discover_notebooks, ensure_kernel, kernel_threads, run_notebook

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
def test_notebook_runs_fast(notebook: Path, tmp_path: Path, notebook_times, monkeypatch):
    ensure_kernel()
    figures = tmp_path / "figures"
    monkeypatch.setenv("BIANET_FIGURES_DIR", str(figures))  # the kernel inherits it
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
def test_nbval_checked_outputs(notebook_times, tmp_path):
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
    with kernel_threads():  # the kernels' thread count as when the outputs were committed
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "BIANET_FIGURES_DIR": str(tmp_path / "figures"),  # nbval's kernels never write figures/
               "BIANET_TREE_CHECK": "off"}  # the outer session checks the tree
    import time

    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    notebook_times["all notebooks (nbval, committed parameters)"] = time.perf_counter() - start
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"nbval failed (exit {proc.returncode}):\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout), tail


#: Python warnings and this machine's paths must not be stored in a committed output.
DIRTY = re.compile(r"/work/|/home/|/root/|/tmp/|\.venv|site-packages|IProgress|\b\w+Warning:")
#: Notebooks whose stored outputs predate the fix of their cause (tqdm's "IProgress not found",
#: a home path): the fix is in their source; the outputs clean up when they are re-executed at
#: the end of the model retraining (issue 10/15). Remove a line once its notebook is re-executed;
#: the test fails for a listed notebook that is already clean, so the list cannot go stale.
PENDING_REEXECUTION: dict[str, str] = {}  # every notebook is re-executed on the current code


def dirty_outputs(notebook: Path) -> list[str]:
    """``"cell i: <match>"`` for each stored output that names a machine path or a warning."""
    found = []
    for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if not k.startswith("image/")]
            texts += out.get("traceback", [])
            for text in texts:
                text = "".join(text) if isinstance(text, list) else str(text)
                m = DIRTY.search(text)
                if m:
                    found.append(f"cell {i}: ...{text[max(0, m.start() - 40):m.end() + 40]!r}...")
    return found


def test_dirty_output_scanner_finds_paths_and_warnings(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    nb = new_notebook(cells=[
        new_code_cell("a", outputs=[new_output("stream", name="stdout", text="accuracy 0.853 at ../figures\n")]),
        new_code_cell("b", outputs=[new_output("stream", name="stderr", text=(
            "/x/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found."))]),
        new_code_cell("c", outputs=[new_output("execute_result", data={"text/plain": "PosixPath('/home/u/f.png')"},
                                               execution_count=1)]),
    ])
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    assert [f.split(":")[0] for f in dirty_outputs(path)] == ["cell 1", "cell 2"]


def test_committed_outputs_are_clean():
    problems, stale = [], []
    for nb in NOTEBOOKS:
        found = dirty_outputs(nb)
        if nb.name in PENDING_REEXECUTION:
            if not found:
                stale.append(nb.name)
        elif found:
            problems.append(f"{nb.name}: " + "; ".join(found[:3]))
    assert not problems, "stored outputs name a machine path or carry a warning (fix the cause, " \
        "then re-execute):\n" + "\n".join(problems)
    assert not stale, f"clean now, remove from PENDING_REEXECUTION: {stale}"


def test_notebooks_write_figures_where_the_tests_redirect_them():
    """Every notebook resolves FIGURES through figures_dir (so $BIANET_FIGURES_DIR redirects it)
    and selects text progress bars; a notebook loading the course runs resolves them through
    course_run_dir and has at least one checked cell after loading them (trained results)."""
    for nb in NOTEBOOKS:
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        sources = ["".join(c["source"]) for c in cells]
        source = "\n".join(sources)
        assert "FIGURES = figures_dir(FIGURES_DIR)" in source, nb.name
        assert "text_progress_bars()" in source, nb.name
        assert "Path(FIGURES_DIR)" not in source and "Path(RUN_DIR)" not in source, nb.name
        if "RUN_DIR = " in sources[0]:
            assert "course_run_dir(RUN_DIR)" in source, nb.name
            load = next(i for i, s in enumerate(sources) if "train_or_load(" in s and "import" not in s)
            checked = [i for i, s in enumerate(sources) if "# NBVAL_CHECK_OUTPUT" in s and i >= load]
            assert checked, f"{nb.name}: no checked cell prints the trained runs' results"
