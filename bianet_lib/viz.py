"""One plot style for the whole course, and one way to save figures.

Every notebook calls :func:`use_course_style` once and saves each figure with
:func:`save_figure`, which writes ``FIGURES_DIR/<name>.png``. Names follow the
notebook: ``NN_slug_<what>`` (e.g. ``01_causal_effects_decomposition``).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

DPI = 120
# PNG text chunks matplotlib would otherwise write (its version string): dropped so that
# re-running a notebook with the same data gives the same bytes.
_PNG_METADATA = {"Software": None}


#: Font sizes of the course's figures (points): a figure shown at notebook width stays readable.
FONT_SIZES = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
              "ytick.labelsize": 10, "legend.fontsize": 9, "legend.title_fontsize": 10, "figure.titlesize": 13}
#: The smallest font a course figure may use (tick labels of dense panels, value labels).
MIN_FONT = 9


def use_course_style() -> None:
    """Apply the course's one figure style: seaborn's white grid and colour-blind palette, readable
    font sizes (:data:`FONT_SIZES`), a fixed DPI. Axes are labelled by each plotting function;
    legends go outside the data with :func:`legend_outside`."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "figure.figsize": (6.4, 4.0),
            "axes.titleweight": "bold",
            "legend.frameon": False,
            "svg.hashsalt": "bianet",  # stable ids if anyone saves SVG
            **FONT_SIZES,
        }
    )


def legend_outside(ax, where: str = "right", **kwargs):
    """A legend beside the axes (``where="right"``) or below them (``"below"``), never over the
    data; ``kwargs`` go to ``ax.legend`` (``handles``, ``labels``, ``title``, ``ncol``)."""
    if where == "right":
        kwargs.setdefault("loc", "upper left")
        kwargs.setdefault("bbox_to_anchor", (1.02, 1.0))
    elif where == "below":
        kwargs.setdefault("loc", "upper center")
        kwargs.setdefault("bbox_to_anchor", (0.5, -0.18))
        kwargs.setdefault("ncol", 3)
    else:
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    kwargs.setdefault("borderaxespad", 0.0)
    return ax.legend(**kwargs)


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


#: The loss of a modality discriminator that cannot tell voices from faces (two CE terms at ln 2).
TWO_LN2 = 2 * math.log(2)


def plot_loss_terms(history: list[dict], keys: list[str], title_prefix: str = "", x_key: str | None = None,
                    ncols: int = 4, panel_size: tuple[float, float] = (2.6, 2.0)):
    """One small panel per loss term, each on its own y scale (a shared axis flattens the small
    terms under the largest one). ``history`` is a list of records (a training loop's per-step
    dicts or ``metrics.jsonl``'s per-epoch ones); ``x_key`` names the x column (default: the
    record's position, 1-based). The ``discriminator`` and ``adversarial`` panels get a dashed line
    at 2 ln 2: the loss of a discriminator that cannot tell the modalities apart, and the minimum
    of the generator's confusion target. Returns the figure.
    """
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in r for r in history)]
    if not keys:
        raise ValueError("none of the keys is in the history")
    nrows = math.ceil(len(keys) / ncols)
    ncols = min(ncols, len(keys))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    xs = [r.get(x_key, i + 1) if x_key else i + 1 for i, r in enumerate(history)]
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(x, r[key]) for x, r in zip(xs, history, strict=True) if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        if key in ("discriminator", "adversarial"):
            ax.axhline(TWO_LN2, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{title_prefix}{key}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(x_key or "step", fontsize=8)
    fig.tight_layout()
    return fig


def annotated_heatmap(ax, values, row_labels, col_labels, fmt: str = "{:.2f}", vmin=None, vmax=None,
                      cmap: str = "viridis", fontsize: int = 8):
    """``imshow`` of a 2-D array with each cell's value written in it (white on dark cells, black
    on light ones), tick labels on both axes and no grid. Returns the image (for a colorbar)."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    if a.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values {a.shape} do not match {len(row_labels)} x {len(col_labels)} labels")
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    lo, hi = im.get_clim()
    for (i, j), v in np.ndenumerate(a):
        dark = (v - lo) / (hi - lo or 1.0) < 0.5
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black")
    ax.set_xticks(range(a.shape[1]), [str(c) for c in col_labels])
    ax.set_yticks(range(a.shape[0]), [str(r) for r in row_labels])
    ax.grid(False)
    return im


def paired_bars(ax, labels, series: dict[str, list[float]], errors: dict[str, list[float]] | None = None,
                ylabel: str = "", reference: float | None = None, reference_label: str = "chance",
                fmt: str | None = "{:.3f}"):
    """Grouped bars: one group per label, one bar per series (e.g. BIANet vs baseline), optional
    error bars, an optional dashed reference line (chance), and each bar's value over it when
    ``fmt`` is set (so the figure can be checked against the printed numbers)."""
    import numpy as np

    n = len(series)
    width = 0.8 / max(n, 1)
    x = np.arange(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        if len(vals) != len(labels):
            raise ValueError(f"series {name!r} has {len(vals)} values for {len(labels)} labels")
        err = None if errors is None else errors.get(name)
        bars = ax.bar(x + (i - (n - 1) / 2) * width, vals, width, yerr=err, label=name, capsize=3 if err else 0)
        if fmt:
            for bar, v in zip(bars, vals, strict=True):
                ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label)
    ax.set_xticks(x, labels)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


# --- Training curves, ROC curves and signed effects (notebooks 05 and 06) ------------------------
# Helpers that keep long plotting cells out of notebooks 05 and 06; each returns the figure or the
# axes, and the notebook saves it with save_figure.

#: The loss of a modality discriminator at chance: two cross-entropies at ln 2 (= 2 ln 2).
DISCRIMINATOR_CHANCE_LOSS = 1.3862943611198906  # 2 ln 2


def _series(history: list[dict], key: str) -> list[float]:
    return [r.get(key, float("nan")) for r in history]


def plot_weighted_loss_curves(weighted: dict[str, dict[str, list[float]]], epochs: dict[str, list[int]],
                              labels: dict[str, str], discriminator: dict[str, list[float]] | None = None,
                              adversarial_floor: float | list[float] | None = None,
                              styles: dict[str, str] | None = None):
    """One panel per weighted loss term (weight x term, per epoch), each on its own y scale, one
    line per model; a last panel for the discriminator's own loss with a dashed line at 2 ln 2
    (a discriminator that cannot tell the modalities apart), and a stacked share of the total for
    the first model, so that the dominant term is visible at a glance.

    ``weighted[model][term]`` are the weighted values, ``epochs[model]`` their x values,
    ``labels[term]`` the panel titles (e.g. ``"identity x 1.0"``); ``adversarial_floor`` draws the
    minimum of the adversarial term (2 ln 2 x w_adv for the confusion target; a list, one value per
    epoch of the first model, when the weight ramps). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    models = list(weighted)
    terms = list(labels)
    styles = styles or {}
    n_panels = len(terms) + (discriminator is not None) + 1
    ncols = 3
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(11, 3.1 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, term in zip(flat, terms, strict=False):
        for m in models:
            if term in weighted[m]:
                ax.plot(epochs[m], weighted[m][term], styles.get(m, "o-"), label=m)
        if term.startswith("adversarial") and adversarial_floor is not None:
            if isinstance(adversarial_floor, (int, float)):
                ax.axhline(adversarial_floor, color="grey", linestyle="--", linewidth=1, label="minimum (fooled)")
            else:  # a ramped weight: the minimum moves with it (x values of the first model)
                ax.plot(epochs[models[0]], adversarial_floor, color="grey", linestyle="--", linewidth=1,
                        label="minimum (fooled)")
        ax.set_title(labels[term], fontsize=10)
        ax.legend(fontsize=7)
    i = len(terms)
    if discriminator is not None:
        ax = flat[i]
        for m, values in discriminator.items():
            ax.plot(epochs[m], values, styles.get(m, "o-"), label=m)
        ax.axhline(DISCRIMINATOR_CHANCE_LOSS, color="grey", linestyle="--", linewidth=1, label="2 ln 2 (blind)")
        ax.set_title("discriminator (own optimiser)", fontsize=10)
        ax.legend(fontsize=7)
        i += 1
    ax = flat[i]
    first = models[0]
    names = [t for t in terms if t in weighted[first]]
    values = np.array([weighted[first][t] for t in names], dtype=float)
    shares = values / values.sum(0, keepdims=True)
    bottom = np.zeros(shares.shape[1])
    for name, share in zip(names, shares, strict=True):  # stacked bars: readable with one epoch too
        ax.bar(epochs[first], share, 0.8, bottom=bottom, label=name)
        bottom += share
    ax.set_ylim(0, 1)
    ax.set_title(f"{first}: share of the total loss", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in flat[i + 1:]:
        ax.set_visible(False)
    for ax in flat[:i + 1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def plot_training_overview(histories: dict[str, list[dict]], styles: dict[str, str] | None = None):
    """Four panels from ``metrics.jsonl`` records, one line per model: the total and matching
    losses, the curriculum weight w, the learned thresholds epsilon (models that log them) and
    the validation 1:2 accuracies, with a dotted vertical line at the epoch ``best.pt`` holds; the
    adversarial weight ``w_adv`` beside w when the records log it (a ramped weight).
    Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    styles = styles or {}
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    for i, (name, hist) in enumerate(histories.items()):
        ep, fmt, color = _series(hist, "epoch"), styles.get(name, "o-"), f"C{i}"
        axes[0, 0].plot(ep, _series(hist, "loss"), fmt, color=color, label=f"{name} total")
        match = np.add(_series(hist, "match_vf"), _series(hist, "match_fv")) / 2
        axes[0, 0].plot(ep, match, fmt, color=color, alpha=0.5, label=f"{name} matching (Eq. 22)")
        axes[0, 1].plot(ep, _series(hist, "w"), fmt, color=color, label=f"{name} w")
        if any("w_adv" in r for r in hist):  # a ramped adversarial weight (epoch mean)
            axes[0, 1].plot(ep, _series(hist, "w_adv"), fmt, color=color, alpha=0.5, label=f"{name} w_adv")
        for key in ("epsilon_face", "epsilon_voice"):
            if any(key in r for r in hist):
                axes[1, 0].plot(ep, _series(hist, key), fmt, color=color,
                                alpha=1.0 if key == "epsilon_face" else 0.5, label=f"{name} {key.split('_')[1]}")
        axes[1, 1].plot(ep, _series(hist, "val_acc_vf"), fmt, color=color, label=f"{name} V-F")
        axes[1, 1].plot(ep, _series(hist, "val_acc_fv"), fmt, color=color, alpha=0.5,
                        label=f"{name} F-V")
        best = max(hist, key=lambda r: r["val_acc"])["epoch"]
        axes[1, 1].axvline(best, linestyle=":", color=color, linewidth=1)
    axes[0, 0].set_title("training losses (log scale)")
    axes[0, 0].set_yscale("log")
    axes[0, 1].set_title("weights $w$ (curriculum), $w_{adv}$ (epoch means)")
    axes[0, 1].set_ylim(-0.05, 1.05)
    axes[1, 0].set_title("learned threshold $\\epsilon$")
    axes[1, 1].axhline(0.5, color="black", linewidth=0.6)
    axes[1, 1].set_title("validation 1:2 accuracy (selects best.pt)")
    for ax in axes.ravel():
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_roc_curves(ax, curves: dict[str, tuple], styles: dict[str, str] | None = None):
    """ROC curves on ``ax``: ``curves[name] = (scores, same, threshold, label)``; each curve gets a
    dot at the operating point of ``threshold`` (chosen elsewhere, e.g. on validation)."""
    import numpy as np

    styles = styles or {}
    for name, (scores, same, threshold, label) in curves.items():
        scores, same = np.asarray(scores, dtype=float), np.asarray(same, dtype=bool)
        order = np.argsort(-scores, kind="mergesort")
        hits = np.concatenate([[0], np.cumsum(same[order])]) / same.sum()
        false_alarms = np.concatenate([[0], np.cumsum(~same[order])]) / (~same).sum()
        (line,) = ax.plot(false_alarms, hits, styles.get(name, "-"), label=label)
        ax.plot((scores[~same] >= threshold).mean(), (scores[same] >= threshold).mean(), "o",
                color=line.get_color())
    ax.plot([0, 1], [0, 1], "k-", linewidth=0.6)
    ax.set_xlabel("false acceptance rate")
    ax.set_ylabel("true acceptance rate")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_signed_effects(ax, effects: dict[str, float], intervals: dict[str, tuple[float, float]] | None = None,
                        xlabel: str = "effect on test accuracy", fmt: str = "{:+.3f}",
                        better: dict[str, int] | None = None, legend: tuple[str, str] | None = None):
    """Horizontal bars of signed effects around 0 (one per label, top to bottom) with optional
    intervals (low, high); each value is written in a column right of the axes, clear of the bars
    and the error bars.

    Colours: by sign (red above 0, blue below) unless ``better`` gives, per label, which sign is
    an improvement (+1: a positive difference is better, -1: a negative one is); then green marks
    a difference in the better direction and orange one in the worse direction, whatever the
    endpoint. ``legend`` names the two colours (red/green first); it is drawn below the axes.
    """
    import numpy as np
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    intervals = intervals or {}
    labels = list(effects)
    vals = np.array([effects[k] for k in labels], dtype=float)
    y = np.arange(len(labels))
    if better is None:
        up, down = "tab:red", "tab:blue"
        colors = [up if v > 0 else down if v < 0 else "grey" for v in vals]
    else:
        up, down = "tab:green", "tab:orange"
        colors = [("grey" if v == 0 else up if v * better.get(k, 1) > 0 else down)
                  for k, v in zip(labels, vals, strict=True)]
    ax.barh(y, vals, 0.6, color=colors)
    with_ci = [i for i, k in enumerate(labels) if k in intervals]
    if with_ci:
        lo = np.array([intervals[labels[i]][0] for i in with_ci])
        hi = np.array([intervals[labels[i]][1] for i in with_ci])
        ax.errorbar(vals[with_ci], y[with_ci], xerr=np.vstack([vals[with_ci] - lo, hi - vals[with_ci]]), fmt="none",
                    ecolor="black", capsize=3, linewidth=1)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ends = [max([abs(v), *(abs(b) for b in intervals.get(k, ()))]) for k, v in zip(labels, vals, strict=True)]
    span = max(ends + [1e-3])
    column = blended_transform_factory(ax.transAxes, ax.transData)
    for i, v in enumerate(vals):
        ax.text(1.02, i, fmt.format(v), transform=column, ha="left", va="center", fontsize=MIN_FONT)
    ax.set_xlim(-1.15 * span, 1.15 * span)
    ax.set_yticks(y, labels, fontsize=MIN_FONT)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    if legend is not None:
        legend_outside(ax, "below", handles=[Patch(color=up, label=legend[0]), Patch(color=down, label=legend[1])],
                       ncol=2)
    return ax


# --- the local-interference test-bed (notebook 07) ---------------------------------------------
def _by_kind(kinds, n: int) -> list[int]:
    """n sample indices cycling over the interference kinds (interfered kinds first, "none" last),
    each kind's samples taken in order."""
    order = sorted(set(kinds), key=lambda k: (k == "none", k))
    pools = {k: [i for i, x in enumerate(kinds) if x == k] for k in order}
    out: list[int] = []
    while len(out) < min(n, len(kinds)):
        for k in order:
            if pools[k] and len(out) < n:
                out.append(pools[k].pop(0))
    return out


def show_local_faces(split, twin, n: int = 6):
    """Top row: ``n`` faces of ``split`` with their interference box outlined; bottom row: the
    same faces' clean twins (``twin``: the split regenerated at dose 0)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    kinds = split.face_meta["local_kind"].astype(str).to_numpy() if "local_kind" in split.face_meta else None
    idx = _by_kind(kinds, n) if kinds is not None else list(range(n))
    fig, axes = plt.subplots(2, n, figsize=(1.7 * n, 3.7))
    for col, i in enumerate(idx):
        for row, s in enumerate((split, twin)):
            ax = axes[row, col]
            ax.imshow(s.faces[i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        if split.face_boxes is not None:
            y0, x0, y1, x1 = (int(v) for v in split.face_boxes[i])
            if y1 > y0:
                axes[0, col].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                                 edgecolor="red", linewidth=1.5))
        axes[0, col].set_title(kinds[i] if kinds is not None else "", fontsize=9)
    axes[0, 0].set_ylabel("interfered")
    axes[1, 0].set_ylabel("clean twin")
    fig.tight_layout()
    return fig


def show_local_voices(split, n: int = 2, sample_rate: int = 16000):
    """Waveforms of ``n`` clips with their interference bursts shaded."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n), sharex=True, squeeze=False)
    kinds = split.voice_meta["local_kind"].astype(str).to_numpy() if "local_kind" in split.voice_meta else None
    idx = _by_kind(kinds, n) if kinds is not None else list(range(n))
    for r, i in enumerate(idx):
        ax = axes[r, 0]
        x = split.voices[i].numpy()
        t = np.arange(len(x)) / sample_rate
        ax.plot(t, x, linewidth=0.4, color="0.3")
        if split.voice_intervals is not None:
            for start, end in split.voice_intervals[i].tolist():
                if end > start:
                    ax.axvspan(start / sample_rate, end / sample_rate, color="red", alpha=0.2)
        ax.set_ylabel(kinds[i] if kinds is not None else "")
    axes[-1, 0].set_xlabel("seconds (red: the burst's ground-truth interval)")
    fig.tight_layout()
    return fig


def plot_dose_response(ax, arm_rows: list[dict], direction: str, doses, styles: dict | None = None):
    """1:2 accuracy against the test-time interference dose, one line per arm (means over seeds,
    ``testbed.arm_table`` rows)."""
    for row in arm_rows:
        ys = [row[f"{direction}_dose{d:g}"] for d in doses]
        ax.plot(doses, ys, marker="o", label=f"{row['arm']} ({row['seeds']} seeds)",
                **((styles or {}).get(row["arm"], {})))
    ax.set_xlabel("test-time dose (1 = trained strength)")
    ax.set_ylabel(f"1:2 {direction.upper()} accuracy")
    ax.set_xticks(list(doses))


def plot_attention_mass(ax, att_rows: list[dict]):
    """Horizontal bars of attention mass on the interference tokens over their share (1 = blind),
    one per arm, modality and branch (``testbed.attention_table`` rows); PIA and NIA coloured and
    named in a legend beside the axes."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    labels = [f"{a['arm']}, {a['modality']}, {a['branch'].upper()}" for a in att_rows]
    ratios = [a["ratio"] for a in att_rows]
    colors = {"pia": "C0", "nia": "C3"}
    ax.barh(range(len(ratios)), ratios, 0.7, color=[colors[a["branch"]] for a in att_rows])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(ratios)), labels, fontsize=MIN_FONT)
    ax.invert_yaxis()
    lo = min([*ratios, 1.0])
    hi = max([*ratios, 1.0])
    ax.set_xlim(max(0.0, lo - 0.1), hi + 0.1)
    ax.set_xlabel("mass on interference / its token share (1 = blind)")
    ax.grid(axis="y", visible=False)
    branches = [b for b in ("pia", "nia") if any(a["branch"] == b for a in att_rows)]
    legend_outside(ax, handles=[Patch(color=colors[b], label=f"{b.upper()} attention") for b in branches]
                   + [Line2D([], [], color="black", linestyle="--", label="uniform (1)")])


def pia_maps(model, faces, device="cpu"):
    """Where PIA puts weight on each face of ``faces`` (uint8 [N, 3, S, S]): (maps upsampled to
    S x S and scaled to [0, 1] per image, for display; the raw [N, h, w] maps). Token axis: the
    attention each position receives, averaged over query rows; channel axis: the
    channel-weighted magnitude of the values V (its rows are channels, not positions)."""
    import torch
    import torch.nn.functional as F

    fi = model.face_intervention
    with torch.no_grad():
        f = faces.to(device)
        xm = model.face_encoder(f.float() / 127.5 - 1.0)
        received = fi(xm).positive_attention.mean(dim=1)  # [N, rows]
        if fi.axis == "tokens":
            cam = received.view(len(f), 1, *xm.shape[-2:])
        else:
            cam = (received[:, :, None, None] * fi.value(xm).abs()).sum(1, keepdim=True)
        lo = cam.flatten(1).amin(1)[:, None, None, None]
        hi = cam.flatten(1).amax(1)[:, None, None, None]
        shown = (cam - lo) / (hi - lo).clamp_min(1e-8)
        up = F.interpolate(shown, size=f.shape[-2:], mode="bilinear", align_corners=False)
    return up[:, 0].cpu(), cam[:, 0].cpu()


def show_overlays(faces, groups, maps, titles):
    """Two rows per column: a face, and the face under its map (``maps`` [n, S, S] in [0, 1], one
    per face of ``groups``' index lists, in order); ``titles`` one per column."""
    import matplotlib.pyplot as plt

    n_cols = max(sum(len(ids) for _, ids in groups), 1)
    fig, axes = plt.subplots(2, n_cols, figsize=(2.0 * n_cols, 4.4), squeeze=False)
    col = 0
    for _, ids in groups:
        for i in ids:
            img = faces[i].permute(1, 2, 0).numpy()
            axes[0, col].imshow(img)
            axes[0, col].set_title(titles[col], fontsize=8)
            axes[1, col].imshow(img)
            axes[1, col].imshow(maps[col], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            col += 1
    for ax in axes.flat:
        ax.axis("off")
    return fig


def attention_matrices(affinity, positive, negative):
    """One sample's A (Eq. 9), PIA's softmax(tau_1 A_hat) and NIA's softmax(A_tilde) side by side
    (each [rows, rows]), rows and columns sorted by mean affinity so strong and weak blocks show."""
    import matplotlib.pyplot as plt
    import torch

    order = torch.argsort(torch.as_tensor(affinity).mean(0))
    panels = [("A (Eq. 9)", affinity, "RdBu_r"), ("PIA: softmax($\\tau_1\\hat A$)", positive, "viridis"),
              ("NIA: softmax($\\tilde A$)", negative, "viridis")]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, (title, mat, cmap) in zip(axes, panels, strict=True):
        im = ax.imshow(torch.as_tensor(mat)[order][:, order], cmap=cmap, vmin=-1 if cmap == "RdBu_r" else 0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def probe_bars(probe: dict, show: dict[str, list[str]]):
    """Linear-probe accuracy of h_hat (PIA) and h_tilde (NIA) per target, one panel per modality,
    chance marked (``diagnostics.probes`` output; ``show`` maps modality -> targets)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(show), figsize=(6 * len(show), 3.8), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (modality, targets) in zip(axes, show.items(), strict=True):
        xs = np.arange(len(targets))
        for j, part in enumerate(("h_hat", "h_tilde")):
            r = probe[f"{modality}/{part}"]
            ax.bar(xs + (j - 0.5) * 0.38, [r[t]["accuracy"] for t in targets], 0.38,
                   label=f"{part} ({'PIA' if j == 0 else 'NIA'})")
        r = probe[f"{modality}/h_hat"]
        ax.scatter(xs, [r[t]["chance"] for t in targets], marker="_", s=600, color="black", zorder=3, label="chance")
        ax.set_xticks(xs, targets, fontsize=9)
        ax.set_title(modality)
    axes[0].set_ylabel("linear probe accuracy")
    axes[-1].legend(fontsize=8)
    return fig


def plot_validation_curves(ax, records: dict[str, list[dict]], styles: dict | None = None):
    """Validation 1:2 accuracy per epoch from grid records (``experiment.history``): one thin line
    per seed and a thick mean per arm (``records``: {arm: [record, ...]}, e.g. testbed.load_records)."""
    for i, (arm, recs) in enumerate(records.items()):
        style = {"color": f"C{i}", **((styles or {}).get(arm, {}))}
        # runs recorded before the grid kept every epoch have no history: left out, counted in the label
        curves = [[h["val_acc"] for h in r["experiment"]["history"]] for r in recs if r["experiment"].get("history")]
        if not curves:
            continue
        for c in curves:
            ax.plot(range(1, len(c) + 1), c, linewidth=0.8, alpha=0.35, color=style["color"])
        n = min(len(c) for c in curves)
        ax.plot(range(1, n + 1), np.mean([c[:n] for c in curves], axis=0), linewidth=2.2,
                label=f"{arm} ({len(curves)} of {len(recs)} seeds)", **style)
    ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation 1:2 accuracy")


def plot_one_to_k(ax, records: dict[str, list[dict]], direction: str, styles: dict | None = None):
    """Fig. 4's curve: 1:K matching accuracy (K = 2..10) per arm, means over seeds, each run read on
    the route it was selected on (``select_route``), chance 1/K dotted."""
    ks = None
    for i, (arm, recs) in enumerate(records.items()):
        curves = [r["metrics"][r["config"].get("select_route", "classifier")]["curve"][direction] for r in recs]
        ks = sorted(int(k) for k in curves[0])
        ax.plot(ks, [np.mean([c[str(k)] for c in curves]) for k in ks], marker="o", markersize=3,
                label=f"{arm} ({len(recs)} seeds)", **({"color": f"C{i}", **((styles or {}).get(arm, {}))}))
    if ks:
        ax.plot(ks, [1 / k for k in ks], color="black", linestyle=":", linewidth=1, label="chance 1/K")
        ax.set_xticks(ks)
    ax.set_xlabel("K (candidates)")
    ax.set_ylabel(f"1:K {direction.upper()} accuracy")


def plot_sweep(ax, records: dict[str, list[dict]], lines: dict[str, dict[float, str]], direction: str,
               xlabel: str, log_x: bool = False):
    """A knob swept at training time (Fig. 7's temperatures, the bias study's rho): per line, the
    1:2 accuracy (test-bed endpoints, dose 1) of each finished seed as a dot and the mean over
    seeds as a line; ``lines`` = {label: {knob value: arm name}}; arms not finished are left out
    and the seeds per point are written beside it, so a partly finished grid reads as such. The
    x axis always shows every pre-registered value; lines are dodged sideways so they do not hide
    each other."""
    values = sorted({x for arms in lines.values() for x in arms})
    span = (np.log(values[-1]) - np.log(values[0])) if log_x else (values[-1] - values[0])
    for i, (label, arms) in enumerate(lines.items()):
        shift = (i - (len(lines) - 1) / 2) * 0.012 * (span or 1.0)
        xs, means = [], []
        for x, arm in sorted(arms.items()):
            accs = [r["endpoints"]["directions"][direction]["accuracy"]["dose1"] for r in records.get(arm, [])]
            if not accs:
                continue
            xp = float(np.exp(np.log(x) + shift)) if log_x else x + shift
            ax.scatter([xp] * len(accs), accs, s=12, alpha=0.45, color=f"C{i}")
            ax.annotate(f"{len(accs)}", (xp, float(np.mean(accs))), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=f"C{i}")
            xs.append(xp)
            means.append(float(np.mean(accs)))
        ax.plot(xs, means, marker="o", color=f"C{i}", label=label)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(values, [f"{v:g}" for v in values])
    pad = 0.06 * (span or 1.0)
    ax.set_xlim(*((np.exp(np.log(values[0]) - pad), np.exp(np.log(values[-1]) + pad)) if log_x
                  else (values[0] - pad, values[-1] + pad)))
    ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"1:2 {'V-F' if direction == 'vf' else 'F-V'} accuracy")
