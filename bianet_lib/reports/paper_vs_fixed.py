"""`paper` against `paper-fixed` on the same data (issue 24): the per-epoch table of both runs.

The runs live in results/paper-vs-fixed/{paper,paper-fixed}/ (metrics.jsonl, results.json,
diagnose-best.json). docs/paper-vs-fixed.md holds three generated tables: this module's epochs
table (between :data:`BEGIN` and :data:`END`) and the results and health tables of
:mod:`bianet_lib.reports.blocks` (``<!-- results-table: ... -->``, ``<!-- health-table: ...
-->``, paths relative to the repository root). :func:`rewrite_doc` regenerates all three; tests/test_paper_preset.py compares them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BEGIN, END = "<!-- paper-vs-fixed-epochs -->", "<!-- /paper-vs-fixed-epochs -->"
RUNS = ("paper", "paper-fixed", "paper-lr1e-3")  # the third: `paper` at lr 1e-3 (attribution)

#: (column, how to read it from one metrics.jsonl record)
COLUMNS = [
    ("epoch", lambda r: f"{r['epoch']}"),
    ("step", lambda r: f"{r['step']}"),
    ("matching loss", lambda r: f"{(r['match_vf'] + r['match_fv']) / 2:.3f}"),
    ("metric", lambda r: f"{r['metric']:.3f}"),
    ("adversarial (G)", lambda r: f"{r['adversarial']:.3f}"),
    ("discriminator", lambda r: f"{r['discriminator']:.3f}"),
    ("w (Eq. 22)", lambda r: f"{r['w']:.3f}"),
    ("w_adv", lambda r: f"{r['w_adv']:.3f}"),
    ("epsilon face / voice", lambda r: f"{r['epsilon_face']:.3f} / {r['epsilon_voice']:.3f}"),
    ("val 1:2 V-F / F-V", lambda r: f"{r['val_acc_vf']:.3f} / {r['val_acc_fv']:.3f}"),
]


def epoch_records(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epochs_markdown(runs: dict[str, str | Path]) -> str:
    """One row per epoch of each run (label: run folder)."""
    head = ["run"] + [c for c, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, folder in runs.items():
        for record in epoch_records(folder):
            lines.append(f"| {label} | " + " | ".join(read(record) for _, read in COLUMNS) + " |")
    return "\n".join(lines)


def _runs(root: Path) -> dict[str, Path]:
    return {name: root / "results" / "paper-vs-fixed" / name for name in RUNS}


def epochs_block(root: str | Path) -> str:
    return f"{BEGIN}\n{epochs_markdown(_runs(Path(root)))}\n{END}"


def doc_epochs_block(path: str | Path) -> str:
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), Path(path).read_text(), re.S)
    if m is None:
        raise ValueError(f"{path}: no {BEGIN} ... {END} block")
    return m.group(0)


def rewrite_doc(path: str | Path, root: str | Path) -> None:
    """Regenerate the epochs table and the results and health tables of ``path``."""
    from bianet_lib.reports.blocks import rewrite_readme

    path = Path(path)
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    path.write_text(pattern.sub(lambda _m: epochs_block(root), text))
    rewrite_readme(path, root)
