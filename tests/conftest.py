"""Shared pytest hooks.

* nbval: do not compare stderr (warnings differ between machines) nor HTML/JS outputs. The
  nbval run in tests/test_notebooks.py loads this file as a plugin (``-p tests.conftest``)
  because notebooks/ is not below tests/.
* Notebook wall times recorded by tests/test_notebooks.py are printed at the end of the run.
* The suite leaves the tree as it found it: ``$BIANET_FIGURES_DIR`` points every notebook the
  tests run (papermill and nbval alike, their kernels inherit it) at a temporary folder, and the
  session records ``git status --porcelain`` (with a hash of every listed file) at the start and
  fails the run when it differs at the end, naming the paths. Set ``BIANET_TREE_CHECK=off`` when
  someone else edits the tree while the suite runs (or inside a nested pytest).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_TIMES: dict[str, float] = {}
_TREE: dict[str, object] = {}


def tree_state(root: Path = ROOT) -> dict[str, str] | None:
    """``{path: "XY sha256"}`` for every path ``git status`` lists (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "-uall", "-z"], cwd=root, capture_output=True,
                             check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    state = {}
    for entry in out.split("\0"):
        if len(entry) > 3:
            path = root / entry[3:]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "-"
            state[entry[3:]] = f"{entry[:2]} {digest}"
    return state


def tree_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{p}: {before.get(p, 'clean')} -> {after.get(p, 'clean')}"
            for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]


def pytest_sessionstart(session):
    if os.environ.get("BIANET_TREE_CHECK") == "off":
        return
    figures = tempfile.mkdtemp(prefix="bianet-test-figures-")
    _TREE.update(before=tree_state(), figures=figures, previous=os.environ.get("BIANET_FIGURES_DIR"))
    os.environ["BIANET_FIGURES_DIR"] = figures


def pytest_sessionfinish(session, exitstatus):
    if "figures" not in _TREE:
        return
    shutil.rmtree(_TREE["figures"], ignore_errors=True)
    if _TREE["previous"] is None:
        os.environ.pop("BIANET_FIGURES_DIR", None)
    else:
        os.environ["BIANET_FIGURES_DIR"] = _TREE["previous"]
    before, after = _TREE["before"], tree_state()
    if before is None or after is None:
        return
    changes = tree_changes(before, after)
    if changes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the test suite changed the working tree (git status differs; BIANET_TREE_CHECK=off "
                 "if someone else edited it meanwhile):", *changes]
        if reporter is not None:
            reporter.section("working tree changed", sep="!", red=True)
            for line in lines:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collectstart(collector):
    if hasattr(collector, "skip_compare") and str(getattr(collector, "path", "")).endswith(".ipynb"):
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr", "text/html", "application/javascript")


@pytest.fixture
def notebook_times() -> dict[str, float]:
    return NOTEBOOK_TIMES


def pytest_terminal_summary(terminalreporter):
    if NOTEBOOK_TIMES:
        terminalreporter.section("notebook wall times")
        for name, seconds in NOTEBOOK_TIMES.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
        terminalreporter.write_line(f"{sum(NOTEBOOK_TIMES.values()):7.1f} s  total")
