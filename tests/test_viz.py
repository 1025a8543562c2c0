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
