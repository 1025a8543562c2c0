"""Shared pytest hooks.

* nbval: do not compare stderr (warnings differ between machines) nor HTML/JS outputs. The
  nbval run in tests/test_notebooks.py loads this file as a plugin (``-p tests.conftest``)
  because notebooks/ is not below tests/.
* Notebook wall times recorded by tests/test_notebooks.py are printed at the end of the run.
"""

from __future__ import annotations

import pytest

NOTEBOOK_TIMES: dict[str, float] = {}


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
