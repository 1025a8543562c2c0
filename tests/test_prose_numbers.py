"""Every number a notebook's prose states is printed by an output of the same notebook, or is a
quoted constant with its source.

What is checked: **decimals** (``0.499``, ``12.8``, ``1.3869``) and **percentages** (``89%``) in the
markdown cells of every course notebook (``notebooks/NN_*.ipynb``), math included. Left out:

* code (fenced blocks and inline ``code``): commands, identifiers and config keys, not claims;
* integers without ``%``: equation, section, table, figure and exercise numbers and counts fixed by
  a setting (16 epochs, 300 identities) are far too often structural to check mechanically;
* the paper's section numbers written ``Sec. 4.2`` / ``section 5.1`` and dotted versions (``2.14.1``).

A number passes when an output of the same notebook prints it (stdout, ``text/plain``,
``text/markdown``, ``text/html``; not images, not stderr): the same digits, or a printed decimal
with more digits that rounds to it (prose ``0.84`` for a printed ``0.842``), the sign ignored (prose
says "loses 0.10", the output prints ``-0.104``); a percentage also passes when a printed decimal
is that share (``0.89`` for ``89%``). Otherwise it must be in :data:`QUOTED`, one line per constant
with its source: the paper's tables and equations, the library's defaults (those of ``config.py``
are checked against the library below). A sentence about a measured result is then generated in a
code cell from the computed value, or it states no number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bianet_lib.course import discover_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")

#: Constants prose may quote without printing them: value -> source. Keep it small; a measured
#: number never belongs here.
QUOTED: dict[str, str] = {
    # the paper (Wang et al., Pattern Recognition 2025)
    "97.3": "paper Table 1: BIANet, V-F 1:2 accuracy (%) on VoxCeleb",
    "96.9": "paper Table 1: BIANet, F-V 1:2 accuracy (%) on VoxCeleb",
    "50.2": "paper Table 1: BIANet, V-F 1:10 ('multi-way') accuracy (%)",
    "47.3": "paper Table 1: BIANet, F-V 1:10 ('multi-way') accuracy (%)",
    "89.5": "paper Table 1: BIANet, V-F verification (%)",
    "92.8": "paper Table 1: BIANet, F-V verification (%)",
    "87.2": "paper Table 1: the row the paper compares with at 1:2, V-F (%)",
    "86.5": "paper Table 1: the row the paper compares with at 1:2, F-V (%)",
    "0.01": "paper Table 6: the fixed thresholds epsilon (0.01, 0.1, 0.2)",
    "0.2": "paper Table 6: the fixed thresholds epsilon (0.01, 0.1, 0.2)",
    # the library's defaults (config.py: checked against load_config below)
    "0.1": "config.py: epsilon's initial value, nia_drop_p (and Table 6's middle threshold)",
    "0.05": "config.py: gate_sharpness",
    # the library's constants
    "0.10": "bianet_lib.experiments.testbed.CALIBRATION_TARGET (the pre-registered calibration rule)",
}

#: QUOTED values that are config defaults: value -> (preset, attribute).
CONFIG_DEFAULTS = {"0.1": [("cpu-small", "epsilon"), ("cpu-small", "nia_drop_p")],
                   "0.05": [("cpu-small", "gate_sharpness")]}

_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_SECTION = re.compile(r"\b(?:Sec\.|Secs\.|[Ss]ections?)\s*\d+\.\d+(?:\s*[-\u2013]\s*\d+\.\d+)?")
_VERSION = re.compile(r"\b\d+\.\d+\.\d+(?:\.\d+)*\b")
#: a decimal or a percentage, not part of a longer token (an identifier, a dotted version)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?\s?%|\d+\.\d+|\.\d+)(?![\w]|\.\d)")
_PRINTED = re.compile(r"(?<![\w.])\d*\.?\d+(?:[eE][-+]?\d+)?%?")


def prose_numbers(markdown: str) -> list[str]:
    """The decimals and percentages of a markdown text that the test checks, in order."""
    text = _VERSION.sub(" ", _SECTION.sub(" ", _CODE.sub(" ", markdown)))
    return [m.group(1).replace(" ", "") for m in _NUMBER.finditer(text)]


def printed_numbers(cells: list[dict]) -> set[str]:
    """Every number an output of the notebook prints (stdout, text and markdown/HTML results)."""
    texts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                texts.append(out.get("text", ""))
            for kind, value in out.get("data", {}).items():
                if kind in ("text/plain", "text/markdown", "text/html"):
                    texts.append(value)
    found = set()
    for text in texts:
        text = "".join(text) if isinstance(text, list) else str(text)
        found.update(m.group(0) for m in _PRINTED.finditer(text))
    return found


def backed(number: str, printed: set[str]) -> bool:
    """Whether ``number`` (prose) is printed at its precision or rounds a more precise output."""
    if number in printed:
        return True
    if number.endswith("%"):
        share = float(number[:-1]) / 100
        return any(not p.endswith("%") and "." in p and "e" not in p.lower() and abs(float(p) - share) < 5e-3 + 1e-12
                   and round(float(p) * 100) == round(float(number[:-1])) for p in printed)
    decimals = len(number.split(".")[1])
    value = float(number)
    for p in printed:
        if p.endswith("%") or "." not in p or "e" in p.lower():
            continue
        if len(p.split(".")[1]) > decimals and abs(round(float(p), decimals) - value) < 10 ** -(decimals + 3):
            return True
    return False


def unbacked(notebook: Path) -> list[str]:
    """``"cell i: 0.499"`` for each prose number neither printed by the notebook nor quoted."""
    cells = json.loads(notebook.read_text())["cells"]
    printed = printed_numbers(cells)
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for number in prose_numbers("".join(cell["source"])):
            if number.rstrip("%") not in QUOTED and not backed(number, printed):
                found.append(f"cell {i}: {number}")
    return found


def test_prose_number_parser():
    text = ("Accuracy 0.842 and 12.8 min; 89% saturated, a share of 5 %. Eq. 12 and 16 epochs are not "
            "checked, nor `lr=0.002` nor Sec. 4.2 nor section 5.2-5.4 nor torch 2.14.1; $e^{0.1} \\approx 1.105$.\n"
            "```bash\nbianet train --set epsilon=0.3\n```")
    assert prose_numbers(text) == ["0.842", "12.8", "89%", "5%", "0.1", "1.105"]


def test_backed_reads_the_printed_precision():
    printed = printed_numbers([{"outputs": [{"output_type": "stream", "name": "stdout",
                                             "text": "accuracy 0.842, drop -0.104, share 0.89; 59% of 3"}]}])
    assert printed == {"0.842", "0.104", "0.89", "59%", "3"}
    assert backed("0.842", printed) and backed("0.84", printed) and backed("0.8", printed)
    assert backed("0.104", printed) and backed("0.10", printed)  # sign ignored, rounded
    assert not backed("0.843", printed) and not backed("0.8420", printed)  # more digits than printed
    assert backed("89%", printed) and backed("59%", printed) and not backed("60%", printed)
    assert not backed("3.0", printed)  # an integer output does not back a decimal


def _plant(notebook: Path, tmp_path: Path, sentence: str) -> Path:
    nb = json.loads(notebook.read_text())
    md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    md["source"] = "".join(md["source"]) + "\n\n" + sentence
    out = tmp_path / notebook.name
    out.write_text(json.dumps(nb))
    return out


@pytest.mark.parametrize("notebook", NOTEBOOKS[:1] + NOTEBOOKS[-1:], ids=lambda p: p.stem)
def test_a_planted_number_fails(notebook, tmp_path):
    """A planted edit: a copy of a passing notebook with one unprinted number in its prose fails,
    naming the number; the same sentence with a number the notebook prints passes."""
    assert unbacked(notebook) == []
    bad = _plant(notebook, tmp_path, "The model reaches 0.4321 at 1:2.")
    assert [f.split(": ")[1] for f in unbacked(bad)] == ["0.4321"]
    printed = sorted(p for p in printed_numbers(json.loads(notebook.read_text())["cells"])
                     if "." in p and not p.endswith("%") and "e" not in p)
    assert printed, f"{notebook.name} prints no decimal"
    good = _plant(notebook, tmp_path, f"The model reaches {printed[0]} at 1:2.")
    assert unbacked(good) == []


def test_quoted_config_defaults_match_the_library():
    from bianet_lib.config import load_config

    for value, places in CONFIG_DEFAULTS.items():
        assert value in QUOTED
        for preset, attr in places:
            assert float(getattr(load_config(preset), attr)) == float(value), (preset, attr, value)
    from bianet_lib.experiments import testbed

    assert "0.10" in QUOTED and testbed.CALIBRATION_TARGET == 0.10


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_prose_number_is_printed_or_quoted(notebook):
    found = unbacked(notebook)
    assert not found, (f"{notebook.name}: numbers in markdown that no output of the notebook prints and that "
                       f"QUOTED does not list (generate the sentence from the value, or drop the number): "
                       + ", ".join(found))
