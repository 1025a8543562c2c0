"""bianet course run / verify: discovery, parameters (undeclared ones refused), cleaning, failures
that quote the failing line, and the regeneration check's comparisons."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from bianet_lib.cli import UsageError, main
from bianet_lib.commands.course import parse_params
from bianet_lib.course import (
    NotebookExecutionError,
    UnknownParameterError,
    clean_executed,
    compare_json,
    compare_notebooks,
    compare_printed,
    course_run_dir,
    declared_parameters,
    discover_notebooks,
    failing_line,
    figures_dir,
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


def test_discover_sorts_a_lettered_notebook_between_its_neighbours(tmp_path):
    for name in ["06_b.ipynb", "05b_hand.ipynb", "05_a.ipynb", "05bb_x.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in discover_notebooks(tmp_path)] == ["05_a.ipynb", "05b_hand.ipynb", "06_b.ipynb"]


def test_parse_params_types_and_errors():
    assert parse_params(["FAST=True", "SEED=3", "LR=0.5", "DEVICE=cpu"]) == {
        "FAST": True, "SEED": 3, "LR": 0.5, "DEVICE": "cpu",
    }
    for bad in ["FAST", "1x=2", "=3", "A=[1,"]:
        with pytest.raises(UsageError) as info:
            parse_params([bad])
        assert "\n" not in str(info.value)


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


def test_clean_executed_merges_adjacent_stream_chunks():
    """How prints are split into stream outputs depends on flush timing; the cleaned notebook
    keeps one output per run of the same stream, in order, with nothing lost."""
    from nbformat.v4 import new_output

    cell = new_code_cell("print(1); print(2)", execution_count=1, outputs=[
        new_output("stream", name="stdout", text="a\n"), new_output("stream", name="stdout", text="b\n"),
        new_output("stream", name="stderr", text="warn\n"), new_output("stream", name="stdout", text="c\n"),
        new_output("stream", name="stdout", text="d\n")])
    nb = clean_executed(new_notebook(cells=[cell]))
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [("stdout", "a\nb\n"), ("stderr", "warn\n"),
                                                               ("stdout", "c\nd\n")]


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
        new_code_cell("def f(v):\n    return 1 / v\n\n\ny = 2\nz = f(0)\nprint(z)"),
    ])
    before = bad.read_bytes()
    with pytest.raises(NotebookExecutionError) as info:
        run_notebook(bad, None, {"X": 2}, progress_bar=False, log_output=False)
    # the line that raised (inside f, defined in the failing cell), not the cell's first line
    assert info.value.cell_index == 1 and info.value.line_number == 2 and info.value.line == "return 1 / v"
    assert "02_bad.ipynb" in str(info.value) and "ZeroDivisionError" in str(info.value)
    assert bad.read_bytes() == before  # a failed run never overwrites the notebook

    # a parameter the notebook does not declare is refused before anything runs
    with pytest.raises(UnknownParameterError, match="'XX'.*did you mean X"):
        run_notebook(good, tmp_path / "never.ipynb", {"XX": 4}, progress_bar=False, log_output=False)
    assert not (tmp_path / "never.ipynb").exists()


def test_the_kernel_runs_with_one_thread_unless_told(tmp_path, monkeypatch):
    """Committed outputs must not depend on the core count: the kernel's torch uses one thread
    when OMP_NUM_THREADS is unset, the caller's choice when it is set, and the runner's own
    environment is left as it was."""
    nb = _write(tmp_path / "01_threads.ipynb", [
        new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("import os, torch\nprint(torch.get_num_threads(), os.environ.get('MKL_NUM_THREADS'))"),
    ])
    for value, expected in ((None, "1 1\n"), ("2", "2 None\n")):
        if value is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", value)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        out = tmp_path / "out" / nb.name
        run_notebook(nb, out, progress_bar=False, log_output=False)
        assert nbformat.read(out, as_version=4).cells[1].outputs[0]["text"] == expected
        assert os.environ.get("OMP_NUM_THREADS") == value and "MKL_NUM_THREADS" not in os.environ


def test_failing_line_reads_the_cell_frame_of_the_traceback():
    tb = ["\x1b[0;31m---------\x1b[0m", "Cell \x1b[0;32mIn[7], line 3\x1b[0m\n----> 3 g()",
          "Cell \x1b[0;32mIn[5], line 2\x1b[0m, in g()", "Cell \x1b[0;32mIn[7], line 1\x1b[0m, in h()"]
    source = "def h():\n    raise KeyError\ng()"
    # first frame names the failing cell (In[7]); its deepest frame is line 1; In[5] is another cell
    assert failing_line(source, tb) == (1, "def h():")
    assert failing_line("\n  a = 1\nb", None) == (None, "a = 1")
    assert failing_line("a = 1", ["Cell In[2], line 9"]) == (None, "a = 1")  # out of range


def test_course_run_refuses_an_undeclared_parameter(tmp_path, capsys):
    _write(tmp_path / "01_ok.ipynb", [new_code_cell("FAST = False\nSEED: int = 0", metadata={"tags": ["parameters"]})])
    assert declared_parameters(nbformat.read(tmp_path / "01_ok.ipynb", as_version=4)) == ["FAST", "SEED"]
    code = main(["course", "run", "--notebooks-dir", str(tmp_path), "--param", "FAAST=True",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'FAAST'" in err and "did you mean FAST" in err
    assert not (tmp_path / "out").exists()
    # issue 27: a lower-case name (difflib alone finds nothing for "fast") and an empty --only
    code = main(["course", "run", "--notebooks-dir", str(tmp_path), "--param", "fast=1",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "'fast'" in err and "did you mean FAST" in err
    code = main(["course", "run", "--notebooks-dir", str(tmp_path), "--only", "", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--only ''" in err
    assert not (tmp_path / "out").exists()


def test_redirections_for_tests(monkeypatch):
    monkeypatch.delenv("BIANET_FIGURES_DIR", raising=False)
    monkeypatch.delenv("BIANET_COURSE_RUNS", raising=False)
    assert str(figures_dir("../figures")) == "../figures"
    assert str(course_run_dir("../results/course/bianet-cpu-small")) == "../results/course/bianet-cpu-small"
    monkeypatch.setenv("BIANET_FIGURES_DIR", "/tmp/f")
    monkeypatch.setenv("BIANET_COURSE_RUNS", "/tmp/runs")
    assert str(figures_dir("../figures")) == "/tmp/f"
    assert str(course_run_dir("../results/course/bianet-cpu-small")) == "/tmp/runs/bianet-cpu-small"


def test_compare_printed_numbers_text_and_times():
    a = "BIANet  0.853  0.882 (12.8 min of training)\nFIGURES_DIR=../figures\n"
    assert compare_printed(a, "BIANet  0.853  0.882 (3.1 min of training)\nFIGURES_DIR=/tmp/x\n", 0.0) == []
    assert compare_printed(a, a.replace("0.882", "0.884"), 0.0) == ["0.882 -> 0.884"]
    assert compare_printed(a, a.replace("0.882", "0.884"), 0.005) == []
    diff = compare_printed(a, a.replace("BIANet", "baseline"), 0.0)
    assert len(diff) == 1 and "printed line 1" in diff[0]
    assert compare_printed("n = 3", "n = 3\nextra 4", 0.0)[0].startswith("text differs at printed line 2")


def test_compare_json_skips_times_and_names_each_difference():
    a = {"metrics": {"vf": {"accuracy": 0.853, "n": 1000}}, "timestamp": "t1", "seconds": 3.0, "route": "c"}
    b = {"metrics": {"vf": {"accuracy": 0.854, "n": 1000}}, "timestamp": "t2", "seconds": 9.0, "route": "c"}
    assert compare_json(a, a, 0.0, "r") == []
    assert compare_json(a, b, 0.0, "r") == ["r: metrics.vf.accuracy 0.853 -> 0.854 (diff +1.00e-03)"]
    assert compare_json(a, b, 0.002, "r") == []
    assert compare_json(a, {**b, "route": "x"}, 0.01, "r") == ["r: route 'c' -> 'x'"]
    assert compare_json([{"e": 1}], [{"e": 1}, {"e": 2}], 0.0, "m") == ["m: 1.e only in the fresh run"]


def test_compare_notebooks_cell_by_cell(tmp_path):
    from nbformat.v4 import new_output

    def nb(folder, value):
        folder.mkdir()
        cell = new_code_cell("print(x)", execution_count=1,
                             outputs=[new_output("stream", name="stdout", text=f"acc {value}\n"),
                                      new_output("stream", name="stderr", text="noise 123\n")])
        _write(folder / "06_x.ipynb", [new_code_cell("X = 1", metadata={"tags": ["parameters"]}), cell])

    nb(tmp_path / "a", "0.853")
    nb(tmp_path / "b", "0.861")
    diffs, n = compare_notebooks(tmp_path / "a", tmp_path / "b", 0.0)
    assert diffs == ["06_x.ipynb cell 1: 0.853 -> 0.861"] and n == 1  # stderr is not compared


def test_compare_runs_reports_results_metrics_config_and_weights(tmp_path):
    import json
    import shutil
    import subprocess

    import torch
    import yaml
    from helpers import random_split, tiny_config

    from bianet_lib.course import compare_runs
    from bianet_lib.engine.safeio import read_checkpoint, write_checkpoint
    from bianet_lib.engine.trainer import Trainer

    committed, fresh = tmp_path / "committed", tmp_path / "fresh"
    run = committed / "bianet-cpu-small"
    Trainer(tiny_config(epochs=1), random_split(8, 3), random_split(4, 2, seed=1, name="val"), run, progress=False).fit()
    (run / "results.json").write_text(json.dumps({"metrics": {"vf_1:2": {"accuracy": 0.75}}, "timestamp": "a"}))
    shutil.copytree(run, committed / "baseline-cpu-small")
    shutil.copytree(committed, fresh)
    assert compare_runs(committed, fresh, 0.0) == []

    f = fresh / "bianet-cpu-small"
    (f / "results.json").write_text(json.dumps({"metrics": {"vf_1:2": {"accuracy": 0.76}}, "timestamp": "b"}))
    lines = [json.loads(x) for x in (f / "metrics.jsonl").read_text().splitlines()]
    lines[0]["val_acc"] += 0.5
    lines[0]["seconds"] = 100.0  # a wall time (older runs logged one here) is not a result
    (f / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = yaml.safe_load((f / "config.yaml").read_text())
    config["num_threads"] = 7
    (f / "config.yaml").write_text(yaml.safe_dump(config))
    state = read_checkpoint(f / "best.pt")
    key = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel())
    state["model"][key] = state["model"][key] + torch.full_like(state["model"][key], 1e-3)
    write_checkpoint(f / "best.pt", state)
    diffs = compare_runs(committed, fresh, 0.0)
    assert [d.split(":")[0] for d in diffs] == ["bianet-cpu-small/results.json", "bianet-cpu-small/metrics.jsonl",
                                                "bianet-cpu-small/config.yaml", "bianet-cpu-small/best.pt"]
    assert "metrics.vf_1:2.accuracy 0.75 -> 0.76" in diffs[0] and "0.val_acc" in diffs[1] and key in diffs[3]
    assert len(compare_runs(committed, fresh, 0.6)) == 1  # only config.yaml is beyond any tolerance

    # the Makefile's course runs pin the thread count (1 each), train both at once and print the wall time
    root = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "-n", "course-runs", "COURSE_RUNS=/x"], cwd=root, capture_output=True, text=True)
    trains = [line for line in dry.stdout.splitlines() if "bianet train" in line]
    assert len(trains) == 1 and trains[0].count("bianet train") == 2, dry.stdout
    assert trains[0].count("num_threads=1") == 2 and "wait" in trains[0] and "s wall" in trains[0], dry.stdout
    # `make course` retrains the committed runs in place: without --overwrite the trainer refuses a
    # folder that holds a run (issue 27), and make course stopped there before it trained anything
    assert trains[0].count("--overwrite") == 2, dry.stdout
    # ... and rewrites the diagnose reports notebook 00 and the README read, after training
    diag = [line for line in dry.stdout.splitlines() if "bianet diagnose" in line and not line.startswith("#")]
    assert len(diag) == 1 and dry.stdout.index(diag[0]) > dry.stdout.index(trains[0]), dry.stdout
    assert all(f"diagnose --run-dir /x/{run}" in diag[0] for run in ("bianet-cpu-small", "baseline-cpu-small"))


@pytest.mark.slow
def test_verify_course_end_to_end_on_a_tiny_repository(tmp_path, capsys):
    """verify_course re-executes each notebook with only the parameters it declares, on the
    fresh runs, and reports a printed number that moved; the CLI exits 1 then, 0 when equal."""
    import json
    import shutil

    from helpers import random_split, tiny_config

    from bianet_lib.course import verify_course
    from bianet_lib.engine.trainer import Trainer

    root, fresh = tmp_path / "repo", tmp_path / "fresh"
    run = root / "results" / "course" / "bianet-cpu-small"
    Trainer(tiny_config(epochs=1), random_split(8, 3), random_split(4, 2, seed=1, name="val"), run, progress=False).fit()
    (run / "results.json").write_text(json.dumps({"metrics": {"acc": 0.5}}))
    shutil.copytree(run, root / "results" / "course" / "baseline-cpu-small")
    shutil.copytree(root / "results" / "course", fresh)
    (root / "notebooks").mkdir()
    (root / "figures").mkdir()
    reader = ("import json, pathlib\n"
              "print('acc', json.loads((pathlib.Path(RUN_DIR) / 'results.json').read_text())['metrics']['acc'])")
    _write(root / "notebooks" / "01_reads.ipynb", [
        new_code_cell('FIGURES_DIR = "../figures"\nRUN_DIR = "../results/course/bianet-cpu-small"',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(reader)])
    _write(root / "notebooks" / "00_plain.ipynb", [  # declares no RUN_DIR: must not receive it
        new_code_cell('FIGURES_DIR = "../figures"', metadata={"tags": ["parameters"]}),
        new_code_cell("print('n =', 3)")])
    for nb in ("00_plain", "01_reads"):  # the committed notebooks, executed on the committed runs
        run_notebook(root / "notebooks" / f"{nb}.ipynb", progress_bar=False, log_output=False)

    assert verify_course(fresh, tmp_path / "work", root, echo=lambda *_: None) == 0
    (fresh / "bianet-cpu-small" / "results.json").write_text(json.dumps({"metrics": {"acc": 0.625}}))
    lines = []
    assert verify_course(fresh, tmp_path / "work2", root, echo=lines.append) == 2
    assert "DIFF bianet-cpu-small/results.json: metrics.acc 0.5 -> 0.625 (diff +1.25e-01)" in lines
    assert "DIFF 01_reads.ipynb cell 1: 0.5 -> 0.625" in lines
    assert main(["course", "verify", "--runs", str(fresh), "--work-dir", str(tmp_path / "w3"), "--root", str(root),
                 "--tolerance", "0.2"]) == 0


@pytest.mark.slow
def test_figures_dir_flag_wins_over_the_environment(tmp_path, monkeypatch):
    saver = "import pathlib\nfrom bianet_lib.course import figures_dir\n" \
            "d = figures_dir(FIGURES_DIR)\nd.mkdir(parents=True, exist_ok=True)\n(d / '01_x_a.png').write_text('x')"
    _write(tmp_path / "01_x.ipynb", [new_code_cell('FIGURES_DIR = "../figures"', metadata={"tags": ["parameters"]}),
                                     new_code_cell(saver)])
    monkeypatch.setenv("BIANET_FIGURES_DIR", str(tmp_path / "env"))
    assert main(["course", "run", "--notebooks-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"),
                 "--figures-dir", str(tmp_path / "flag"), "--no-progress"]) == 0
    assert (tmp_path / "flag" / "01_x_a.png").is_file() and not (tmp_path / "env").exists()
