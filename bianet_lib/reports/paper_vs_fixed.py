"""`paper` against `paper-fixed` on the same data (issue 24): the per-epoch table of both runs.

The runs live in results/paper-vs-fixed/{paper,paper-fixed}/ (metrics.jsonl, results.json,
diagnose-best.json). docs/paper-vs-fixed.md holds three generated blocks of
:mod:`bianet_lib.reports.blocks`: this module's epochs table (``<!-- paper-vs-fixed-epochs: FOLDER
-->``) and the results and health tables; ``python -m bianet_lib.reports.blocks --docs .``
regenerates them and the tests compare them.
"""

from __future__ import annotations

import json
from pathlib import Path

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
