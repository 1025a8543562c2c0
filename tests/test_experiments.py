"""Experiment grids: resumable, never repeating a finished run; mean/std tables; spread labels."""

import json

import numpy as np
import pandas as pd
import pytest

from bianet_lib import cli
from bianet_lib.experiments import grids as ex
from bianet_lib.experiments import runner

TINY_GRID = ex.Grid("tiny", [ex.Run("baseline", tuple(ex.VARIANTS["baseline"]), 0),
                             ex.Run("bianet", tuple(ex.VARIANTS["bianet"]), 0)],
                    "cpu-small", ex.SMOKE_BASE)


@pytest.fixture
def tiny_grid(monkeypatch, tmp_path):
    monkeypatch.setenv("BIANET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(ex.GRIDS, "tiny", TINY_GRID)
    calls = []
    real = runner.execute_run

    def counting(grid, run, results_dir, progress=False):
        calls.append(run.run_id)
        return real(grid, run, results_dir, progress)

    monkeypatch.setattr(runner, "execute_run", counting)
    return calls


def test_grid_resumes_and_never_repeats(tiny_grid, tmp_path):
    calls, out = tiny_grid, tmp_path / "results"
    written = runner.run_grid("tiny", out, progress=False)
    assert sorted(calls) == ["baseline__s0", "bianet__s0"]
    assert sorted(p.name for p in written) == ["baseline__s0.json", "bianet__s0.json"]
    rec = json.loads((out / "tiny" / "bianet__s0.json").read_text())
    assert rec["seed"] == 0 and rec["config"]["use_pia"] is True and rec["experiment"]["wall_s"] > 0
    assert "versions" in rec and rec["metrics"]["classifier"]["curve"]["vf"]["2"] >= 0
    assert not (out / "tiny" / "runs" / "bianet__s0").exists(), "checkpoints must be deleted"

    # a finished grid: nothing runs again
    calls.clear()
    assert runner.run_grid("tiny", out, progress=False) == [] and calls == []

    # one result lost (a crash before it was written): only that run executes
    (out / "tiny" / "baseline__s0.json").unlink()
    before = (out / "tiny" / "bianet__s0.json").read_bytes()
    runner.run_grid("tiny", out, progress=False)
    assert calls == ["baseline__s0"]
    assert (out / "tiny" / "bianet__s0.json").read_bytes() == before

    df = ex.load_results(out)
    assert sorted(df["name"]) == ["baseline", "bianet"] and set(df["grid"]) == {"tiny"}
    assert list(ex.load_results(out, "tiny")["run_id"]) == ["baseline__s0", "bianet__s0"]  # grid order
    for col in ("vf_2", "fv_2", "cos_vf_2", "auc", "ver_acc", "gap_vf", "clean_vf", "interfered_vf"):
        assert col in df.columns


def test_a_failing_run_is_reported_and_the_others_finish(tiny_grid, tmp_path, monkeypatch):
    counting = runner.execute_run

    def broken_baseline(grid, run, results_dir, progress=False):
        if run.name == "baseline":
            raise ValueError("corrupt world")
        return counting(grid, run, results_dir, progress)

    monkeypatch.setattr(runner, "execute_run", broken_baseline)
    out = tmp_path / "results"
    with pytest.raises(runner.GridRunError) as err:
        runner.run_grid("tiny", out, progress=False, workers=1)
    assert err.value.failed == {"baseline__s0": "ValueError: corrupt world"}
    assert [p.name for p in err.value.written] == ["bianet__s0.json"]
    assert "baseline__s0: ValueError: corrupt world" in str(err.value)
    assert [r.run_id for r in runner.pending_runs("tiny", out)] == ["baseline__s0"]  # retried next time


def test_only_filters_and_unknown_name(tiny_grid, tmp_path):
    runner.run_grid("tiny", tmp_path / "r", only="bianet", progress=False)
    assert tiny_grid == ["bianet__s0"]
    with pytest.raises(KeyError):
        runner.pending_runs("tiny", tmp_path / "r", only="nope")


def test_cli_bad_grid_exits_2(capsys):
    assert cli.main(["experiments", "nope"]) == 2
    assert "unknown grid" in capsys.readouterr().err


def test_cli_list(capsys, tmp_path):
    assert cli.main(["experiments", "reduced", "--list", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "todo  bianet__s2" in out and "done" not in out


def test_grids_are_well_formed():
    for name, grid in ex.GRIDS.items():
        ids = [r.run_id for r in grid.runs]
        assert len(ids) == len(set(ids)), name
        for run in grid.runs[:3]:
            grid.config(run)  # every override is a valid config field
    full = {r.name for r in ex.GRIDS["full"].runs}
    assert {"baseline", "pia", "nia", "bianet", "peer", "bianet_rho0.5", "baseline_rho0.9",
            "curriculum_constant", "curriculum_paper", "epsilon_0.01", "tau1_20", "tau2_0.5"} <= full
    seeds = pd.Series([r.name for r in ex.GRIDS["full"].runs]).value_counts()
    assert (seeds >= 3).all()
    assert {r.name for r in ex.GRIDS["reduced"].runs} == set(ex.REDUCED_NAMES)
    assert {n: seeds[n] for n in ex.HEADLINE_NAMES} == dict.fromkeys(ex.HEADLINE_NAMES, 5)
    assert seeds.drop(list(ex.HEADLINE_NAMES)).eq(3).all()
    assert sorted(r.seed for r in ex.GRIDS["reduced"].runs if r.name == "bianet") == [0, 1, 2]  # stays small
    full_ids = [r.run_id for r in ex.GRIDS["full"].runs]
    assert full_ids.index("bianet__s3") > full_ids.index("tau2_20__s2")  # extra seeds come last
    assert {"pia_rho0.9", "nia_rho0.9", "curriculum_constant_rho0.9"} <= full
    assert not {"tau1_5", "tau2_10"} & full, "the default taus are the 'bianet' row"


def test_reduced_runs_are_full_runs_in_one_store():
    reduced, full = ex.GRIDS["reduced"], ex.GRIDS["full"]
    assert reduced.store == full.store != "reduced"
    by_id = {r.run_id: r for r in full.runs}
    for run in reduced.runs:  # same id must mean the same training run, or sharing would lie
        assert reduced.config(run).to_dict() == full.config(by_id[run.run_id]).to_dict()
    assert [r.run_id for r in ex.store_runs("reduced")] == [r.run_id for r in full.runs]


def test_a_run_finished_by_one_grid_is_not_repeated_by_another(monkeypatch, tmp_path):
    runs = [ex.Run("baseline", tuple(ex.VARIANTS["baseline"]), s) for s in (0, 1)]
    monkeypatch.setitem(ex.GRIDS, "small", ex.Grid("small", runs[:1], "cpu-small", ex.SMOKE_BASE, store="shared"))
    monkeypatch.setitem(ex.GRIDS, "big", ex.Grid("big", runs, "cpu-small", ex.SMOKE_BASE, store="shared"))
    path = ex.result_path(tmp_path, "small", runs[0])
    assert path == tmp_path / "shared" / "baseline__s0.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    assert runner.pending_runs("big", tmp_path) == [runs[1]]
    assert runner.pending_runs("small", tmp_path) == []


def _frame():
    return pd.DataFrame({"name": ["a", "a", "a", "b", "b", "b"],
                         "seed": [0, 1, 2, 0, 1, 2],
                         "acc": [0.6, 0.7, 0.8, 0.70, 0.72, 0.74]})


def test_summary_table_mean_std():
    t = ex.summary_table(_frame(), ["acc"])
    assert t.loc["a", ("acc", "mean")] == pytest.approx(0.7)
    assert t.loc["a", ("acc", "std")] == pytest.approx(0.1)  # sample std, ddof=1
    assert t.loc["b", ("acc", "std")] == pytest.approx(0.02)
    assert t.loc["b", ("n", "")] == 3
    assert ex.format_table(t).loc["a", "acc"] == "0.700 ± 0.100"


def test_spread_labels():
    t = ex.summary_table(_frame(), ["acc"])
    c = ex.compare(t, "acc", "b", "a")
    assert c["diff"] == pytest.approx(0.02) and c["spread"] == pytest.approx(0.1)
    assert c["label"] == "within spread"
    assert ex.spread_label(0.05, [0.01, 0.02]) == "higher"
    assert ex.spread_label(-0.05, [0.01, 0.02]) == "lower"
    assert ex.spread_label(0.015, [0.01, 0.02]) == "within spread"
    assert ex.spread_label(0.0, [0.0, 0.0]) == "within spread"
    assert np.isnan(np.nan) and ex.spread_label(0.3, [np.nan, 0.1]) == "higher"


def test_welch_p_from_the_table_equals_the_test_on_raw_seeds():
    from scipy.stats import ttest_ind

    t = ex.summary_table(_frame(), ["acc"])
    raw = ttest_ind([0.70, 0.72, 0.74], [0.6, 0.7, 0.8], equal_var=False).pvalue
    assert ex.compare(t, "acc", "b", "a")["p"] == pytest.approx(raw, rel=1e-9)
    assert ex.describe_comparison(ex.compare(t, "acc", "b", "a")) == f"+0.020 (within spread, p={raw:.2f})"
    assert 0.7 < raw < 0.8  # t = 0.02 / sqrt(0.01/3 + 0.0004/3) = 0.34 on ~2.2 degrees of freedom
    far = ex.welch_p(0.9, 0.01, 3, 0.5, 0.01, 3)  # t = 49 on 4 df
    assert far < 1e-5
    assert np.isnan(ex.welch_p(0.9, 0.0, 1, 0.5, 0.01, 3))  # one seed: no test
    assert np.isnan(ex.welch_p(0.9, 0.0, 3, 0.9, 0.0, 3))  # no spread anywhere: undefined


def test_grid_workers_die_with_a_killed_grid(tmp_path):
    """A killed grid process must not leave its workers training on (and writing results later)."""
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from bianet_lib.experiments.runner import die_with_parent\n"
        "def work():\n    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=die_with_parent,\n"
        "                              initargs=(os.getpid(),))\n"
        "    pool.submit(work)\n"
        "    time.sleep(3)\n"
        "    print(*[p.pid for p in pool._processes.values()], flush=True)\n"
        "    os.kill(os.getpid(), 9)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(ex.__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 1, out.stderr

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.time() + 10
    while alive(pids[0]) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(pids[0]), "the worker outlived its killed parent"
