"""Local-interference geometry: boxes, bursts, exact masks and the token-grid mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bianet_lib.data.interference import (
    burst_intervals,
    face_box,
    face_masks,
    fade,
    overlap_matrix,
    token_share_1d,
    token_share_2d,
    voice_masks,
)


def test_face_mask_is_the_box():
    m = face_masks(torch.tensor([[1, 2, 3, 5], [0, 0, 0, 0]]), 6)
    assert m.shape == (2, 6, 6) and not m[1].any()
    expect = torch.zeros(6, 6, dtype=torch.bool)
    expect[1:3, 2:5] = True
    assert torch.equal(m[0], expect)


def test_voice_mask_is_the_union_of_intervals():
    m = voice_masks(torch.tensor([[[1, 3], [6, 8]], [[4, 4], [0, 0]]]), 10)
    assert m[0].nonzero().flatten().tolist() == [1, 2, 6, 7] and not m[1].any()


def test_face_token_share_by_hand():
    # 4 px image, 2x2 tokens of 2x2 px; the box covers row 0, columns 0..2
    s = token_share_2d(face_masks(torch.tensor([0, 0, 1, 3]), 4), (2, 2))
    assert s.tolist() == pytest.approx([2 / 4, 1 / 4, 0, 0])
    # 6 px, 4x4 tokens of 1.5 px: pixel 1 lies half in token 0, half in token 1
    m = torch.zeros(6, 6, dtype=torch.bool)
    m[1, 1] = True
    s = token_share_2d(m, (4, 4)).reshape(4, 4)
    cell = 1.5 * 1.5
    assert s[0, 0].item() == pytest.approx(0.25 / cell)   # [1, 1.5)^2 of pixel (1, 1)
    assert s[0, 1].item() == pytest.approx(0.25 / cell) and s[1, 1].item() == pytest.approx(0.25 / cell)
    assert s[2:].sum() == 0 and s[:, 2:].sum() == 0
    # a full mask covers every token fully; shares times cell area sum to the mask's area
    assert torch.allclose(token_share_2d(torch.ones(6, 6, dtype=torch.bool), (4, 4)), torch.ones(16))
    rnd = torch.rand(3, 64, 64) > 0.7
    share = token_share_2d(rnd, (8, 8))
    assert torch.allclose(share.sum(-1) * 64, rnd.flatten(1).sum(-1).float(), atol=1e-3)
    # 64 px at stride 8: a token's share is the mean of its 8x8 block
    assert torch.allclose(share, rnd.float().reshape(3, 8, 8, 8, 8).mean((2, 4)).flatten(1))


def test_voice_token_share_by_hand():
    # 10 samples, 4 tokens of 2.5 samples; mask = samples 0..3 and 5
    m = voice_masks(torch.tensor([[0, 4], [5, 6]]), 10)
    assert token_share_1d(m, 4).tolist() == pytest.approx([1.0, 0.6, 0.4, 0.0])
    a = overlap_matrix(4, 10)
    assert torch.allclose(a.sum(1), torch.ones(4, dtype=torch.float64))
    assert a[1, 2].item() == pytest.approx(0.5 / 2.5)  # sample 2 = [2, 3): half in token 0
    with pytest.raises(ValueError, match="n_tokens"):
        overlap_matrix(0, 10)


def test_face_box_share_and_position():
    for share in (0.05, 0.15, 0.3, 0.6):
        for u in np.linspace(0, 1, 5):
            y0, x0, y1, x1 = face_box(share, u, u, 1 - u, 64)
            assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
            assert abs((y1 - y0) * (x1 - x0) / 64 ** 2 - share) < 0.02
    assert face_box(0.0, 0.5, 0.5, 0.5, 64) == (0, 0, 0, 0)
    assert face_box(0.3, 0.5, 0.0, 0.0, 64)[:2] == (0, 0)         # u = 0: top-left corner
    assert face_box(0.3, 0.5, 1.0, 1.0, 64)[2:] == (64, 64)       # u = 1: bottom-right


def test_burst_intervals_share_segments_and_nesting():
    u = np.array([0.0, 0.3, 1.0])
    iv = burst_intervals(0.3, u, 16000)
    lengths = iv[:, 1] - iv[:, 0]
    assert lengths.sum() / 16000 == pytest.approx(0.3, abs=1e-3)
    bounds = np.floor(np.arange(4) * 16000 / 3)
    assert (iv[:, 0] >= bounds[:-1]).all() and (iv[:, 1] <= bounds[1:]).all()  # one per segment
    assert iv[0, 0] == 0 and iv[2, 1] == bounds[3]
    small, big = burst_intervals(0.15, u, 16000), burst_intervals(0.45, u, 16000)
    assert (big[:, 0] <= small[:, 0]).all() and (big[:, 1] >= small[:, 1]).all()  # doses nest
    assert (np.diff(burst_intervals(0.0, u, 16000), axis=1) == 0).all()
    assert (np.diff(burst_intervals(5.0, u, 16000), axis=1)[:, 0] == np.diff(bounds)).all()


def test_fade_is_positive_and_flat_inside():
    w = fade(1000)
    assert (w > 0).all() and (w[80:-80] == 1).all() and w[0] < 0.01 and w[-1] < 0.01
    assert (fade(8) > 0).all() and len(fade(3)) == 3
