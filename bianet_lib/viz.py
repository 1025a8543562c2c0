"""One plot style for the whole course, and one way to save figures.

Every notebook calls :func:`use_course_style` once and saves each figure with
:func:`save_figure`, which writes ``FIGURES_DIR/<name>.png``. Names follow the
notebook: ``NN_slug_<what>`` (e.g. ``01_causal_effects_decomposition``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

DPI = 120
# PNG text chunks matplotlib would otherwise write (its version string): dropped so that
# re-running a notebook with the same data gives the same bytes.
_PNG_METADATA = {"Software": None}


def use_course_style() -> None:
    """Apply the course's seaborn theme (white grid, notebook context, colour-blind palette)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "figure.figsize": (6.4, 4.0),
            "axes.titleweight": "bold",
            "svg.hashsalt": "bianet",  # stable ids if anyone saves SVG
        }
    )


def save_figure(fig, name: str, figures_dir: str | Path) -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` at :data:`DPI` with metadata stripped.

    ``name`` is the file stem without extension (``"01_causal_effects_bars"``); the folder is
    created if missing. Returns the path written.
    """
    if not name or "/" in name or "\\" in name or name.endswith(".png"):
        raise ValueError(f"figure name must be a bare stem like '01_slug_what', got {name!r}")
    out_dir = Path(figures_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.savefig(path, format="png", dpi=DPI, metadata=_PNG_METADATA, bbox_inches="tight")
    return path
