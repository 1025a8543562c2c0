"""save_figure writes a stable, metadata-free PNG where asked; use_course_style sets the theme."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from bianet_lib import viz  # noqa: E402


def _figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["TE", "NDE", "TIE"], [3.0, 1.0, 2.0])
    return fig


def test_save_figure_writes_png_in_new_folder(tmp_path):
    fig = _figure()
    out = viz.save_figure(fig, "99_test_bars", tmp_path / "figs" / "deeper")
    plt.close(fig)
    assert out == tmp_path / "figs" / "deeper" / "99_test_bars.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in data and b"matplotlib" not in data
    # bbox_inches="tight" crops, but the size must follow the fixed dpi (3x2 in at 120 dpi max).
    from PIL import Image

    with Image.open(out) as im:
        w, h = im.size
    assert 100 < w <= 3 * viz.DPI + 2 and 60 < h <= 2 * viz.DPI + 2


def test_save_figure_is_byte_stable(tmp_path):
    a = viz.save_figure(_figure(), "a", tmp_path)
    b = viz.save_figure(_figure(), "b", tmp_path)
    plt.close("all")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("bad", ["", "x.png", "sub/x"])
def test_save_figure_rejects_bad_names(tmp_path, bad):
    with pytest.raises(ValueError):
        viz.save_figure(_figure(), bad, tmp_path)
    plt.close("all")


def test_use_course_style_sets_theme():
    viz.use_course_style()
    assert matplotlib.rcParams["savefig.dpi"] == viz.DPI
    assert matplotlib.rcParams["axes.grid"] is True  # seaborn whitegrid


# --- Training curves, ROC curves and signed effects (notebooks 05 and 06) ------------------------
def _history(n=3, eps=True):
    recs = []
    for e in range(1, n + 1):
        r = {"epoch": e, "loss": 10.0 / e, "match_vf": 0.7 / e, "match_fv": 0.6 / e, "w": e / n,
             "val_acc": 0.5 + 0.1 * e, "val_acc_vf": 0.5 + 0.1 * e, "val_acc_fv": 0.5 + 0.1 * e}
        if eps:
            r.update(epsilon_face=0.1 + 0.01 * e, epsilon_voice=0.1)
        recs.append(r)
    return recs


def test_plot_weighted_loss_curves_one_panel_per_term_and_discriminator():
    terms = {"matching": "matching x 2", "identity": "identity x 1", "adversarial": "adversarial x 1"}
    weighted = {"A": {"matching": [1.0, 0.5], "identity": [4.0, 3.0], "adversarial": [1.5, 1.4]},
                "B": {"matching": [1.1, 0.6], "identity": [4.1, 3.1], "adversarial": [1.39, 1.39]}}
    fig = viz.plot_weighted_loss_curves(weighted, {"A": [1, 2], "B": [1, 2]}, terms,
                                        discriminator={"A": [1.38, 1.2], "B": [1.386, 1.386]},
                                        adversarial_floor=viz.DISCRIMINATOR_CHANCE_LOSS)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5  # 3 terms + discriminator + share
    assert [ax.get_title() for ax in visible[:3]] == list(terms.values())
    # each term on its own scale: the identity panel's limits do not squash the matching panel
    assert visible[0].get_ylim()[1] < 2.0 < visible[1].get_ylim()[1]
    assert abs(viz.DISCRIMINATOR_CHANCE_LOSS - 1.3863) < 1e-4
    plt.close(fig)
    # a ramped adversarial weight: the minimum is drawn per epoch
    fig = viz.plot_weighted_loss_curves(weighted, {"A": [1, 2], "B": [1, 2]}, terms,
                                        adversarial_floor=[0.5 * viz.DISCRIMINATOR_CHANCE_LOSS,
                                                           viz.DISCRIMINATOR_CHANCE_LOSS])
    floor = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "minimum (fooled)"]
    assert len(floor) == 1 and list(floor[0].get_ydata()) == [0.5 * viz.DISCRIMINATOR_CHANCE_LOSS,
                                                              viz.DISCRIMINATOR_CHANCE_LOSS]
    plt.close(fig)


def test_plot_training_overview_marks_best_epoch():
    fig = viz.plot_training_overview({"BIANet": _history(), "baseline": _history(eps=False)},
                                     {"BIANet": "o-", "baseline": "s--"})
    assert len(fig.axes) == 4
    eps_lines = fig.axes[2].get_lines()
    assert len(eps_lines) == 2  # only the model that logs epsilon
    vlines = [ln for ln in fig.axes[3].get_lines() if list(ln.get_xdata()) == [3, 3]]
    assert len(vlines) == 2  # the best epoch of each model
    assert [ln.get_label() for ln in fig.axes[1].get_lines()] == ["BIANet w", "baseline w"]
    plt.close(fig)
    ramped = [{**r, "w_adv": 0.5 * r["epoch"] / 3} for r in _history()]
    fig = viz.plot_training_overview({"BIANet": ramped})
    assert [ln.get_label() for ln in fig.axes[1].get_lines()] == ["BIANet w", "BIANet w_adv"]
    plt.close(fig)


def test_plot_roc_curves_operating_point():
    import numpy as np

    fig, ax = plt.subplots()
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.1])
    same = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
    viz.plot_roc_curves(ax, {"m": (scores, same, 0.5, "m")})
    curve, dot = ax.get_lines()[:2]
    assert curve.get_xdata()[-1] == 1.0 and curve.get_ydata()[-1] == 1.0
    # threshold 0.5 accepts 3 of 4 positives and 2 of 4 negatives
    assert list(dot.get_xdata()) == [0.5] and list(dot.get_ydata()) == [0.75]
    plt.close(fig)


def test_plot_signed_effects_colours_by_sign():
    fig, ax = plt.subplots()
    viz.plot_signed_effects(ax, {"up": 0.02, "down": -0.03, "none": 0.0}, {"up": (0.01, 0.03)})
    colors = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches]
    assert colors[0] != colors[1] and len(set(colors)) == 3
    lo, hi = ax.get_xlim()
    assert lo < -0.03 and hi > 0.03 and abs(lo + hi) < 1e-12  # symmetric around 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["up", "down", "none"]
    plt.close(fig)


# --- Loss terms per panel, annotated heatmaps, paired bars (notebook 05b; for 02-07) ---------------
def test_plot_loss_terms_one_panel_per_term_own_scale_and_chance_lines():
    history = [{"loss": 10.0 - i, "metric": 2.0 - 0.1 * i, "discriminator": 1.2 + 0.01 * i,
                "adversarial": 1.5 - 0.01 * i} for i in range(5)]
    fig = viz.plot_loss_terms(history, ["loss", "metric", "discriminator", "adversarial", "absent"], ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["loss", "metric", "discriminator", "adversarial"]
    assert visible[1].get_ylim()[1] < 3.0 < visible[0].get_ylim()[1]  # metric not squashed by loss
    for ax in visible[2:]:  # dashed 2 ln 2 on the discriminator and adversarial panels only
        assert any(list(ln.get_ydata()) == [viz.TWO_LN2] * 2 for ln in ax.get_lines())
    assert not any(list(ln.get_ydata()) == [viz.TWO_LN2] * 2 for ln in visible[0].get_lines())
    with pytest.raises(ValueError):
        viz.plot_loss_terms(history, ["nothing"])
    plt.close("all")


def test_annotated_heatmap_writes_every_value():
    fig, ax = plt.subplots()
    im = viz.annotated_heatmap(ax, [[0.1, 0.9], [0.5, 0.3]], ["m", "f"], ["a", "b"], vmin=0, vmax=1)
    assert sorted(t.get_text() for t in ax.texts) == ["0.10", "0.30", "0.50", "0.90"]
    colors = {t.get_text(): t.get_color() for t in ax.texts}
    assert colors["0.10"] == "white" and colors["0.90"] == "black"
    assert im.get_clim() == (0, 1) and [t.get_text() for t in ax.get_yticklabels()] == ["m", "f"]
    with pytest.raises(ValueError):
        viz.annotated_heatmap(ax, [[0.1, 0.2]], ["m", "f"], ["a", "b"])
    plt.close(fig)


def test_paired_bars_groups_values_and_reference():
    fig, ax = plt.subplots()
    viz.paired_bars(ax, ["V-F", "F-V"], {"BIANet": [0.8, 0.7], "baseline": [0.75, 0.72]}, reference=0.5)
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.7, 0.72, 0.75, 0.8]
    assert sorted(t.get_text() for t in ax.texts) == ["0.700", "0.720", "0.750", "0.800"]
    assert any(list(ln.get_ydata()) == [0.5, 0.5] for ln in ax.get_lines())
    with pytest.raises(ValueError):
        viz.paired_bars(ax, ["V-F"], {"x": [0.1, 0.2]})
    plt.close(fig)


def _sweep_record(acc: float) -> dict:
    return {"endpoints": {"directions": {"vf": {"accuracy": {"dose1": acc}}}}}


def test_plot_sweep_draws_means_of_finished_arms_at_their_values():
    """Each line passes through the mean over seeds at the knob value of each finished arm; an
    unfinished arm is left out, and every pre-registered value is still on the axis."""
    records = {"bianet": [_sweep_record(0.6), _sweep_record(0.7)], "tau1_20": [_sweep_record(0.55)]}
    fig, ax = plt.subplots()
    viz.plot_sweep(ax, records, {"tau1": {0.5: "tau1_0.5", 5.0: "bianet", 20.0: "tau1_20"}}, "vf", "tau", log_x=True)
    (line,) = ax.get_lines()[:1]
    xs, ys = line.get_data()
    assert list(ys) == pytest.approx([0.65, 0.55]) and list(xs) == pytest.approx([5.0, 20.0])  # one line: no dodge
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "5", "20"]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2"]  # seeds per point
    assert ax.get_ylabel() == "1:2 V-F accuracy"
    plt.close(fig)


# --- the shared figure style (issue 23): readable fonts, legends outside the data, colours named ---
def test_course_style_fonts_are_readable():
    viz.use_course_style()
    for key, size in viz.FONT_SIZES.items():
        assert matplotlib.rcParams[key] == size >= viz.MIN_FONT, key


def test_legend_outside_sits_beside_or_below_the_axes():
    viz.use_course_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a")
    fig.canvas.draw()
    for where in ("right", "below"):
        leg = viz.legend_outside(ax, where)
        fig.canvas.draw()
        box, axbox = leg.get_window_extent(), ax.get_window_extent()
        assert box.x0 >= axbox.x1 if where == "right" else box.y1 <= axbox.y0, where
    with pytest.raises(ValueError, match="right"):
        viz.legend_outside(ax, "inside")
    plt.close(fig)


def test_plot_signed_effects_colours_by_better_direction_and_names_them():
    """With ``better``, a lower drop and a higher accuracy get the same colour (better), and the
    legend names both colours; the values sit right of the axes, clear of every error bar."""
    fig, ax = plt.subplots()
    effects = {"acc up": 0.02, "drop down": -0.03, "acc down": -0.01}
    viz.plot_signed_effects(ax, effects, {"acc up": (0.0, 0.04)}, better={"acc up": 1, "drop down": -1, "acc down": 1},
                            legend=("better for the arm", "worse for the arm"))
    colors = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches[:3]]
    assert colors[0] == colors[1] != colors[2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["better for the arm", "worse for the arm"]
    values = [t for t in ax.texts if t.get_text().startswith(("+", "-"))]
    assert [t.get_text() for t in values] == ["+0.020", "-0.030", "-0.010"]
    assert all(t.get_position()[0] > 1.0 for t in values)  # axes fraction: right of the plot
    plt.close(fig)


def test_plot_attention_mass_names_both_branches():
    fig, ax = plt.subplots()
    rows = [{"arm": "bianet", "modality": "face", "branch": "pia", "ratio": 0.95},
            {"arm": "bianet", "modality": "face", "branch": "nia", "ratio": 1.01}]
    viz.plot_attention_mass(ax, rows)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:2] == ["PIA attention", "NIA attention"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bianet, face, PIA", "bianet, face, NIA"]
    plt.close(fig)
