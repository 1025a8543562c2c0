"""Every exercise of the course has a worked solution, and every solution still runs.

``notebooks/solutions/NN_slug_solutions.ipynb`` holds the solutions of ``notebooks/NN_slug.ipynb``,
one ``## Exercise N`` section per numbered item of the notebook's ``## Exercises`` section.

1. ``test_every_exercise_has_a_solution``: structure only (fast): a solutions notebook per course
   notebook, a section per exercise, nothing extra.
2. ``test_committed_solutions_are_executed``: every code cell was executed, no stored error, no
   machine path or warning in a stored output.
3. ``test_solution_runs_fast``: papermill executes each solutions notebook with ``FAST=True`` into a
   temporary folder (kernel in ``notebooks/solutions/``); a solution whose code stopped working, or
   whose assertion about its numbers no longer holds, fails here. Nothing in the tree is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bianet_lib.course import discover_notebooks, ensure_kernel, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")
SOLUTIONS_DIR = ROOT / "notebooks" / "solutions"
SOLUTIONS = sorted(SOLUTIONS_DIR.glob("*_solutions.ipynb"))
DIRTY = re.compile(r"/work/|/home/|/root/|/tmp/|\.venv|site-packages|IProgress|\b\w+Warning:")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def exercises(notebook: Path) -> list[int]:
    """Numbers of the items of the notebook's ``## Exercises`` section (markdown ``1.``, ``2.``)."""
    text = "\n".join("".join(c["source"]) for c in _cells(notebook) if c["cell_type"] == "markdown")
    if "## Exercises" not in text:
        return []
    section = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    return [int(n) for n in re.findall(r"^(\d+)\.\s", section, flags=re.M)]


def solved(solutions: Path) -> list[int]:
    text = "\n".join("".join(c["source"]) for c in _cells(solutions) if c["cell_type"] == "markdown")
    return [int(n) for n in re.findall(r"^## Exercise (\d+)\b", text, flags=re.M)]


def solutions_for(notebook: Path) -> Path:
    return SOLUTIONS_DIR / f"{notebook.stem}_solutions.ipynb"


def test_exercise_parser_reads_numbered_items(tmp_path):
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("## Summary\n1. not an exercise\n\n## Exercises\n\n1. a\n   more\n2. b\n"
                                               "\n## After\n3. not one either")])
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    assert exercises(path) == [1, 2]


def test_every_exercise_has_a_solution():
    assert NOTEBOOKS, "no course notebooks found"
    problems = []
    for nb in NOTEBOOKS:
        wanted = exercises(nb)
        if not wanted:
            continue
        sol = solutions_for(nb)
        if not sol.exists():
            problems.append(f"{nb.name}: exercises {wanted} but no {sol.relative_to(ROOT)}")
        elif solved(sol) != wanted:
            problems.append(f"{sol.name}: sections for exercises {solved(sol)}, the notebook has {wanted}")
    orphans = {s.name for s in SOLUTIONS} - {solutions_for(nb).name for nb in NOTEBOOKS}
    assert not orphans, f"solutions without a course notebook: {sorted(orphans)}"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("solutions", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_committed_solutions_are_executed(solutions: Path):
    for i, cell in enumerate(_cells(solutions)):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("execution_count") is not None, f"{solutions.name}: cell {i} was never executed"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{solutions.name}: cell {i} stored an error"
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if not k.startswith("image/")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else str(text)
                m = DIRTY.search(text)
                assert not m, f"{solutions.name}: cell {i} stores {text[max(0, m.start() - 40):m.end() + 40]!r}"


@pytest.mark.slow
@pytest.mark.parametrize("solutions", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_runs_fast(solutions: Path, tmp_path: Path, notebook_times, monkeypatch):
    ensure_kernel()
    monkeypatch.setenv("BIANET_FIGURES_DIR", str(tmp_path / "figures"))  # the kernel inherits it
    before = solutions.read_bytes()
    run = run_notebook(solutions, tmp_path / solutions.name, {"FAST": True}, progress_bar=False, log_output=False)
    notebook_times[f"solutions/{solutions.name} (FAST, papermill)"] = run.seconds
    assert solutions.read_bytes() == before, "the committed solutions notebook was modified"
