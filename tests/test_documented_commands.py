"""Every `bianet ...` / `torchrun ... -m bianet_lib ...` command the README, the pages of docs/ and
the notebooks show (fenced code blocks in markdown, code cells, `!bianet` cell magics) parses with
the real argparse parser, and its config (preset + --set) validates; every `make TARGET` shown in a
fenced block of the README or docs/ is a target of the Makefile. Nothing is trained."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from bianet_lib.cli import build_parser
from bianet_lib.config import load_config

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)


def _commands_in(text: str) -> list[str]:
    """Shell lines starting with bianet / torchrun / python -m bianet_lib (a leading `!` or `$`
    dropped), continuation backslashes joined, trailing comments cut."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        line = line.lstrip("!$ ").strip()
        if re.match(r"^(bianet|torchrun|python3? -m bianet_lib)\s", line):
            out.append(line.split(" #")[0].strip())
    return out


def documents() -> list[Path]:
    """The README and every page of docs/: the markdown a reader copies commands from."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for the fenced blocks of the README and docs/, and every notebook's markdown
    fences and code cells."""
    found = [(doc.relative_to(ROOT).as_posix(), c) for doc in documents()
             for block in _FENCE.findall(doc.read_text()) for c in _commands_in(block)]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            src = "".join(cell["source"])
            blocks = _FENCE.findall(src) if cell["cell_type"] == "markdown" else [src]
            found += [(f"{nb.name} cell {i}", c) for block in blocks for c in _commands_in(block)]
    return found


def _bianet_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "bianet":
        return argv[1:]
    if "bianet_lib" in argv:  # torchrun [opts] -m bianet_lib ... / python -m bianet_lib ...
        return argv[argv.index("bianet_lib") + 1:]
    raise AssertionError(f"not a bianet command: {command}")


def check_command(command: str) -> None:
    """Raise (SystemExit from argparse, ValueError from the config) if the command is wrong."""
    args = build_parser().parse_args(_bianet_argv(command))
    if hasattr(args, "overrides") and not getattr(args, "resume", False) and not args.config:
        load_config(getattr(args, "preset", None), None, args.overrides)


COMMANDS = documented_commands()


def documented_make_targets() -> list[tuple[str, str]]:
    """(where, target) for every `make TARGET ...` line in a fenced block of the README or docs/."""
    return [(doc.relative_to(ROOT).as_posix(), m.group(1)) for doc in documents()
            for block in _FENCE.findall(doc.read_text())
            for m in re.finditer(r"^\s*\$?\s*make\s+([A-Za-z][\w-]*)", block, re.M)]


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_every_documented_make_target_exists():
    found = documented_make_targets()
    targets = makefile_targets()
    assert {t for _, t in found} >= {"lab", "course", "test"}  # the README's "Start here"
    for where, target in found:
        assert target in targets, f"{where}: `make {target}` is not a target of the Makefile"


def test_make_lab_opens_notebook_00_after_the_venv():
    """The README's one command to the course: `make lab` builds the venv first, then opens
    notebook 00 in JupyterLab, which the pinned environment installs."""
    make = (ROOT / "Makefile").read_text()
    rule = re.search(r"^lab: *(.*)\n((?:\t.*\n)+)", make, re.M)
    assert rule and rule.group(1).split() == ["venv"], "make lab must depend on venv"
    assert rule.group(2).split() == ["$(VENV)/bin/jupyter", "lab", "$(LAB_ARGS)", "notebooks/00_course_map_and_data.ipynb"]
    assert (ROOT / "notebooks" / "00_course_map_and_data.ipynb").exists()
    import tomllib

    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pinned"]
    assert any(re.match(r"jupyterlab==\S+$", p) for p in pinned), "jupyterlab is not pinned"


def test_the_extraction_finds_the_known_commands():
    text = "\n".join(c for _, c in COMMANDS)
    # notebook 05's and 08's multi-field --set commands, and the torchrun recipe
    assert "--set audio_root=/data/vox1/wav face_root=/data/vox1/faces" in text
    assert "--set split=wen cache_dir=/data/bianet-cache" in text
    assert any(c.startswith("torchrun --nproc_per_node 4 -m bianet_lib train") for _, c in COMMANDS)
    # the docs' recipes (docs/gpu-and-real-data.md) are read too
    assert any(w == "docs/gpu-and-real-data.md" and c.startswith("bianet index") for w, c in COMMANDS)
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_documented_command_parses(where, command):
    try:
        check_command(command)
    except SystemExit as exc:  # argparse's error (already printed on stderr)
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")


def test_several_fields_after_one_set_and_repeated_set():
    args = build_parser().parse_args(["train", "--run-dir", "r", "--set", "epochs=3", "k=4",
                                      "--set", "tau1=7", "--no-progress"])
    assert args.overrides == ["epochs=3", "k=4", "tau1=7"] and args.no_progress
    cfg = load_config("cpu-small", None, args.overrides)
    assert (cfg.epochs, cfg.k, cfg.tau1) == (3, 4, 7.0)


def test_a_wrong_command_is_caught():
    with pytest.raises(SystemExit):
        check_command("bianet train --preset paper --run-dir r --sett epochs=2")
    with pytest.raises(ValueError, match="unknown config field"):
        check_command("bianet train --run-dir r --set audio_rot=/x")
