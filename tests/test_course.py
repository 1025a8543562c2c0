"""bianet course run: discovery, parameter parsing, cleaning, and failures that name the cell."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from bianet_lib.cli import UsageError
from bianet_lib.commands.course import parse_params
from bianet_lib.course import (
    NotebookExecutionError,
    clean_executed,
    discover_notebooks,
    run_notebook,
)


def _write(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_discover_sorted_and_filtered(tmp_path):
    for name in ["10_b.ipynb", "02_a.ipynb", "notes.ipynb", "1_bad.ipynb", "01_z.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in discover_notebooks(tmp_path)] == ["01_z.ipynb", "02_a.ipynb", "10_b.ipynb"]
    assert [p.name for p in discover_notebooks(tmp_path, "02")] == ["02_a.ipynb"]
    assert [p.name for p in discover_notebooks(tmp_path, "0[12]_*")] == ["01_z.ipynb", "02_a.ipynb"]
    assert discover_notebooks(tmp_path, "99") == []


def test_parse_params_types_and_errors():
    assert parse_params(["FAST=True", "SEED=3", "LR=0.5", "DEVICE=cpu"]) == {
        "FAST": True, "SEED": 3, "LR": 0.5, "DEVICE": "cpu",
    }
    for bad in ["FAST", "1x=2", "=3"]:
        with pytest.raises(UsageError):
            parse_params([bad])


def test_clean_executed_drops_injected_cell_and_papermill_metadata():
    params = new_code_cell("A = 1", metadata={"tags": ["parameters"], "papermill": {"duration": 1}})
    injected = new_code_cell("A = 2", metadata={"tags": ["injected-parameters"]})
    other = new_code_cell("print(A)", metadata={"tags": [], "execution": {"iopub.execute_input": "2026-01-01T00:00:00Z"}}, execution_count=3)
    nb = new_notebook(cells=[params, injected, other], metadata={"papermill": {"x": 1}, "language_info": {"name": "python"}})
    clean_executed(nb)
    assert [c.source for c in nb.cells] == ["A = 1", "print(A)"]
    assert "papermill" not in nb.metadata and "language_info" in nb.metadata
    assert nb.cells[0].metadata == {"tags": ["parameters"]}
    assert nb.cells[1].metadata == {} and nb.cells[1].execution_count == 3


@pytest.mark.slow
def test_run_notebook_parameters_and_failure(tmp_path):
    good = _write(tmp_path / "01_ok.ipynb", [
        new_markdown_cell("# t"),
        new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("print(X * 10)"),
    ])
    out = tmp_path / "out" / "01_ok.ipynb"
    run_notebook(good, out, {"X": 4}, progress_bar=False, log_output=False)
    nb = nbformat.read(out, as_version=4)
    assert len(nb.cells) == 3 and "papermill" not in nb.metadata
    assert nb.cells[2].outputs[0]["text"] == "40\n"
    assert nb.cells[2].execution_count is not None

    bad = _write(tmp_path / "02_bad.ipynb", [
        new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("y = 2\nraise ValueError('boom')"),
    ])
    before = bad.read_bytes()
    with pytest.raises(NotebookExecutionError) as info:
        run_notebook(bad, None, {"X": 2}, progress_bar=False, log_output=False)
    assert info.value.cell_index == 1 and info.value.first_line == "y = 2"
    assert "02_bad.ipynb" in str(info.value) and "ValueError: boom" in str(info.value)
    assert bad.read_bytes() == before  # a failed run never overwrites the notebook
