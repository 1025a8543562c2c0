"""The environment files agree with pyproject.toml, and CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def _pyproject_deps() -> list[str]:
    """The exact environment: the ``pinned`` extra."""
    return _project()["optional-dependencies"]["pinned"]


def _ranges() -> list[str]:
    """What the package declares it needs: ``dependencies`` plus the ``audio`` and ``course`` extras."""
    project = _project()
    extras = project["optional-dependencies"]
    return project["dependencies"] + extras["audio"] + extras["course"]


def test_the_core_install_needs_no_audio_decoder():
    """librosa and soundfile are the ``audio`` extra: a GPU image with torch but without them
    (the shared H200 image) installs the package offline; the pinned environment keeps both."""
    core = {_name(r) for r in _project()["dependencies"]}
    assert not core & {"librosa", "soundfile"}, core
    assert {_name(r) for r in _project()["optional-dependencies"]["audio"]} == {"librosa", "soundfile"}
    assert {"librosa", "soundfile"} <= {_name(p) for p in _pyproject_deps()}


def _environment_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "bianet"
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return pip_sections[0]


def test_environment_yml_pins_equal_pyproject():
    pip = _environment_pip()
    assert pip[-1] == "-e .", "the pip: section must end with '-e .'"
    assert pip[:-1] == _pyproject_deps(), "environment.yml pip: section differs from pyproject.toml"


def test_every_pin_is_exact():
    for dep in _pyproject_deps():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+\-]*", dep), f"not an exact pin: {dep}"


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()


def test_every_declared_range_has_a_pin_that_satisfies_it():
    from packaging.requirements import Requirement

    pins = {_name(p): p.split("==")[1] for p in _pyproject_deps()}
    declared = [Requirement(r) for r in _ranges()]
    assert sorted(pins) == sorted(r.name.lower() for r in declared), "pinned and declared packages differ"
    for req in declared:
        assert not any(s.operator == "==" for s in req.specifier), f"{req}: a range, not a pin, belongs here"
        assert req.specifier.contains(pins[req.name.lower()]), f"pin {pins[req.name.lower()]} outside {req}"


def test_requires_python_admits_310_to_313():
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(_project()["requires-python"])
    assert all(spec.contains(v) for v in ("3.10", "3.11", "3.12", "3.13")), spec


def test_makefile_installs_the_pinned_extra():
    assert '-m pip install --quiet -e ".[pinned]"' in (ROOT / "Makefile").read_text()


def test_torch_and_torchvision_versions():
    pins = dict(d.split("==") for d in _pyproject_deps())
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"


def _ci_test_command() -> str:
    ci = ROOT / ".ci" / "run"
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    assert "set -euo pipefail" in text
    commands = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
        and not line.startswith("set ") and not line.startswith("cd ")
    ]
    assert commands == ["make test"], f".ci/run must run `make test` and nothing else: {commands}"
    return commands[0]


def test_ci_run_is_executable_and_runs_make_test():
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run is not executable"
    _ci_test_command()


def test_ci_command_is_the_readme_test_command():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet: cannot check that .ci/run runs its test command")
    command = _ci_test_command()
    readme_lines = [line.strip() for line in readme.read_text().splitlines()]
    assert command in readme_lines, f"README.md has no line `{command}` (the command .ci/run runs)"
