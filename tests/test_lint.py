"""The library, the tests and the notebooks pass ruff (the project's lint settings)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                          "bianet_lib", "tests", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
