"""The prepared GPU check in its tiny CPU form: every stage runs and the report says what it saw."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_cpu_form(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny",
                          "--report-dir", str(tmp_path / "gpu"), "--work", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads((tmp_path / "gpu" / "report-cpu-tiny.json").read_text())
    assert (tmp_path / "out" / "report-cpu-tiny.json").read_text() == (
        tmp_path / "gpu" / "report-cpu-tiny.json").read_text()
    assert report["ok"] and report["env"]["device"] == "cpu"
    assert report["stores"]["train"]["built"] and report["stores"]["train"]["voices"] == 36
    assert report["loader"]["samples_per_s"] > 0
    assert report["bench"]["ratio_bianet_to_baseline"] > 0
    t = report["train"]
    assert t["returncode"] == 0 and t["steps"] == 2 * 3 * 3  # epochs x rounds x batches per round
    assert len(t["match_loss_per_epoch"]) == 2 and t["ln2"] == math.log(2)
    assert t["results"]  # the test split evaluated (results.json of the run)
    assert report["torchrun"]["returncode"] == 0 and report["torchrun"]["backend"] == "gloo"
    assert report["torchrun"]["results"] is not None
    assert "gpu_check: OK" in res.stdout
