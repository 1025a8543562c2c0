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


REPORT = ROOT / "results" / "gpu" / "report-cuda.json"


def test_readme_sentences_about_the_gpu_report_match_it():
    """The GPU numbers typed into prose (docs/gpu-and-real-data.md, outside the generated table) are
    the report's."""
    r = json.loads(REPORT.read_text())
    readme = " ".join((ROOT / "docs" / "gpu-and-real-data.md").read_text().split())
    b, match = r["bench"], r["train"]["match_loss_per_epoch"]
    assert r["ok"] and r["env"]["gpu"] == "NVIDIA H200"
    assert (f"a BIANet step takes {b['step_time_s']['bianet']:.3f} s against {b['step_time_s']['baseline']:.3f} s "
            f"for the baseline, a ratio of {b['ratio_bianet_to_baseline']:.2f}, at "
            f"{b['peak_memory_mb']['bianet'] / 1000:.1f} GB peak GPU memory") in readme
    assert f"from {match[0]:.3f} in the first epoch to {match[-1]:.3f} in the eighth" in readme
    assert len(match) == 8 and match[-1] < math.log(2)


def test_gpu_report_text_follows_its_numbers():
    """report_markdown writes its verdicts from the numbers: a loss that never falls below ln 2,
    or validation still rising at the end, changes the sentence."""
    from bianet_lib.engine.gpu_check import report_markdown

    r = json.loads(REPORT.read_text())
    text = report_markdown(r)
    assert "OK in" in text and "is below ln 2 from epoch 1 on" in text and "overfits 400" in text
    flat = json.loads(json.dumps(r))
    flat["train"]["match_loss_per_epoch"] = [0.75] * 8
    flat["train"]["match_below_ln2_at_end"] = False
    flat["train"]["val_acc_per_epoch"] = [0.5 + 0.01 * i for i in range(8)]
    flat["ok"] = False
    other = report_markdown(flat)
    assert "FAILED in" in other and "is below ln 2 at no epoch" in other
    assert "overfits" not in other and "Validation ends at 0.570 (epoch 8)" in other
