"""Local interference with ground truth: where it lies, its exact masks, and the token grid.

A SynthVox world with local interference stores, per face, one box ``(y0, x0, y1, x1)``
(half-open pixel ranges) and, per clip, ``B`` intervals ``(start, end)`` (half-open sample
ranges). The masks are reconstructed from them exactly (``face_masks``, ``voice_masks``); an
empty box or interval (``y1 == y0`` or ``end == start``) means no interference there.

``token_share_2d`` / ``token_share_1d`` map a pixel/sample mask to the token grid of an
encoder map: each token owns an equal span of the image side (or of the clip), and its value is
the exact fraction of that span covered by the mask (a pixel or sample straddling two tokens
counts for each by the length it overlaps).
"""

from __future__ import annotations

import numpy as np
import torch

from bianet_lib.data.types import SplitData

#: Height/width aspect ratios of a face box are drawn log-uniformly in this range.
ASPECT_RANGE = (0.6, 1 / 0.6)
#: Fade-in/out length (samples, at most a quarter of the burst) inside each burst interval.
FADE = 80


def face_box(share: float, aspect_u: float, uy: float, ux: float, size: int) -> tuple[int, int, int, int]:
    """A box covering about ``share`` of a size x size image, of aspect drawn from ``aspect_u``
    (0..1) and position ``uy``, ``ux`` (0..1 of the free range). ``share`` <= 0: empty box."""
    area = min(float(share), 1.0) * size * size
    if area <= 0:
        return (0, 0, 0, 0)
    lo, hi = np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1])
    aspect = np.exp(lo + aspect_u * (hi - lo))  # height / width
    w = int(np.clip(round(np.sqrt(area / aspect)), 1, size))
    h = int(np.clip(round(area / w), 1, size))
    y0, x0 = int(round(uy * (size - h))), int(round(ux * (size - w)))
    return (y0, x0, y0 + h, x0 + w)


def burst_intervals(share: float, u: np.ndarray, length: int) -> np.ndarray:
    """len(u) disjoint bursts covering about ``share`` of the clip: burst b lies in the b-th
    of len(u) equal segments at relative position u[b] (0..1) of its free range. [B, 2] int."""
    u = np.asarray(u, dtype=float)
    n = len(u)
    bounds = np.floor(np.arange(n + 1) * length / n).astype(np.int64)
    seg = np.diff(bounds)
    ell = np.minimum(np.round(max(float(share), 0.0) * length / n).astype(np.int64), seg)
    start = bounds[:-1] + np.round(u * (seg - ell)).astype(np.int64)
    return np.stack([start, start + ell], 1)


def fade(n: int) -> np.ndarray:
    """A window of n samples that is 1 except raised-cosine ramps at both ends, all > 0."""
    w = np.ones(n)
    f = min(FADE, n // 4)
    if f > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(f) + 0.5) / f)
        w[:f], w[n - f:] = ramp, ramp[::-1]
    return w


def face_masks(boxes, size: int) -> torch.Tensor:
    """bool [..., S, S] from boxes [..., 4] = (y0, x0, y1, x1)."""
    b = torch.as_tensor(boxes, dtype=torch.long)
    r = torch.arange(size)
    rows = (r >= b[..., 0, None]) & (r < b[..., 2, None])
    cols = (r >= b[..., 1, None]) & (r < b[..., 3, None])
    return rows[..., :, None] & cols[..., None, :]


def voice_masks(intervals, length: int) -> torch.Tensor:
    """bool [..., L] from intervals [..., B, 2] = (start, end): the union of the intervals."""
    iv = torch.as_tensor(intervals, dtype=torch.long)
    r = torch.arange(length)
    return ((r >= iv[..., 0, None]) & (r < iv[..., 1, None])).any(-2)


def split_face_masks(split: SplitData, idx=None) -> torch.Tensor:
    """Masks of the split's faces (all, or rows ``idx``); all False for a world without boxes."""
    n, size = len(split.faces), split.faces.shape[-1]
    idx = torch.arange(n) if idx is None else torch.as_tensor(idx, dtype=torch.long)
    if split.face_boxes is None:
        return torch.zeros(len(idx), size, size, dtype=torch.bool)
    return face_masks(split.face_boxes[idx], size)


def split_voice_masks(split: SplitData, idx=None) -> torch.Tensor:
    """Masks of the split's clips (all, or rows ``idx``); all False for a world without bursts."""
    n, length = split.voices.shape
    idx = torch.arange(n) if idx is None else torch.as_tensor(idx, dtype=torch.long)
    if split.voice_intervals is None:
        return torch.zeros(len(idx), length, dtype=torch.bool)
    return voice_masks(split.voice_intervals[idx], length)


def face_token_share(split: SplitData, idx, grid: tuple[int, int]) -> torch.Tensor:
    """float32 [n, h * w]: interference share of each face token (``token_share_2d``) of the
    split's faces ``idx`` (None: all)."""
    return token_share_2d(split_face_masks(split, idx), grid)


def voice_token_share(split: SplitData, idx, n_tokens: int) -> torch.Tensor:
    """float32 [n, T']: interference share of each time token (``token_share_1d``) of the
    split's clips ``idx`` (None: all)."""
    return token_share_1d(split_voice_masks(split, idx), n_tokens)


def overlap_matrix(n_tokens: int, length: int) -> torch.Tensor:
    """[n_tokens, length] float64: entry (t, p) is the length of [p, p+1) inside token t's span
    [t L / T, (t+1) L / T), divided by the span; each row sums to 1."""
    if n_tokens < 1 or length < 1:
        raise ValueError(f"n_tokens and length must be >= 1, got {n_tokens}, {length}")
    edges = torch.arange(n_tokens + 1, dtype=torch.float64) * length / n_tokens
    p = torch.arange(length, dtype=torch.float64)
    lo = torch.maximum(p[None, :], edges[:-1, None])
    hi = torch.minimum(p[None, :] + 1, edges[1:, None])
    return (hi - lo).clamp(min=0) / (length / n_tokens)


def token_share_1d(masks, n_tokens: int) -> torch.Tensor:
    """float32 [..., T']: share of each time token's span of the clip covered by masks [..., L]."""
    m = torch.as_tensor(masks)
    a = overlap_matrix(n_tokens, m.shape[-1])
    return (m.to(torch.float64) @ a.T).float()


def token_share_2d(masks, grid: tuple[int, int]) -> torch.Tensor:
    """float32 [..., h * w] (row-major, like a flattened [h, w] encoder map): share of each
    token's cell of the image covered by masks [..., S, S]."""
    m = torch.as_tensor(masks).to(torch.float64)
    h, w = grid
    ay, ax = overlap_matrix(h, m.shape[-2]), overlap_matrix(w, m.shape[-1])
    return (ay @ m @ ax.T).flatten(-2).float()


# --- token-snapped interference (the "fair" world, issue 25) ----------------------------------
def _edges(n_tokens: int, size: int) -> np.ndarray:
    """Integer boundaries of ``n_tokens`` equal spans of ``size`` (token t owns [e[t], e[t+1]))."""
    return np.floor(np.arange(n_tokens + 1) * size / n_tokens).astype(np.int64)


def block_shape(n_cells: int, grid: int) -> tuple[int, int]:
    """(rows, cols) of the squarest block of at most ``n_cells`` whole cells that fits a grid x grid
    map, rows >= cols (0, 0 when n_cells < 1)."""
    best = (0, 0)
    for cols in range(1, grid + 1):
        rows = min(grid, n_cells // cols)
        if rows < cols:
            break
        if rows * cols > best[0] * best[1] or (rows * cols == best[0] * best[1] and rows - cols < best[0] - best[1]):
            best = (rows, cols)
    return best


def token_face_box(coverage: float, grid: int, u_shape: float, uy: float, ux: float,
                   size: int) -> tuple[int, int, int, int]:
    """A box of whole tokens of a grid x grid face map covering at most ``coverage`` of its
    tokens (the squarest such block, transposed when ``u_shape`` >= 0.5), at the token-aligned
    position ``uy``, ``ux`` (0..1 of the free range); its pixel edges are the tokens' edges."""
    rows, cols = block_shape(int(np.floor(coverage * grid * grid + 1e-9)), grid)
    if rows == 0:
        return (0, 0, 0, 0)
    if u_shape >= 0.5:
        rows, cols = cols, rows
    ty, tx = int(uy * (grid - rows + 1) * 0.999999), int(ux * (grid - cols + 1) * 0.999999)
    e = _edges(grid, size)
    return (int(e[ty]), int(e[tx]), int(e[ty + rows]), int(e[tx + cols]))


def token_burst(coverage: float, n_tokens: int, u: float, length: int) -> np.ndarray:
    """One burst of whole time tokens (at most ``coverage`` of the ``n_tokens``), starting at the
    token-aligned position ``u`` (0..1 of the free range): [1, 2] int, empty when none fits."""
    k = int(np.floor(coverage * n_tokens + 1e-9))
    if k < 1:
        return np.zeros((1, 2), dtype=np.int64)
    t = int(u * (n_tokens - k + 1) * 0.999999)
    e = _edges(n_tokens, length)
    return np.array([[e[t], e[t + k]]], dtype=np.int64)


#: A token counts as interfered when at least this share of it is covered (the fair world's
#: tokens are covered wholly or not at all).
MASK_THRESHOLD = 0.5


def token_masks_2d(masks, grid: tuple[int, int]) -> torch.Tensor:
    """bool [..., h * w]: the tokens of an [h, w] map at least ``MASK_THRESHOLD`` covered."""
    return token_share_2d(masks, grid) >= MASK_THRESHOLD


def token_masks_1d(masks, n_tokens: int) -> torch.Tensor:
    """bool [..., T']: the time tokens at least ``MASK_THRESHOLD`` covered."""
    return token_share_1d(masks, n_tokens) >= MASK_THRESHOLD


class TokenMasks:
    """A split's interfered-token masks at the model's map grids, computed once: faces bool
    [n, fh * fw] as stored and horizontally flipped (the training flip), voices bool [n, vh * vw]
    (every row of a voice map shares its time column's mask)."""

    def __init__(self, split: SplitData, face_grid: tuple[int, int], voice_grid: tuple[int, int]):
        pix = split_face_masks(split)
        self._faces = token_masks_2d(pix, face_grid)
        self._flipped = token_masks_2d(pix.flip(-1), face_grid)
        vh, vw = voice_grid
        self._voices = token_masks_1d(split_voice_masks(split), vw).repeat(1, vh)

    def faces(self, idx, flip=None) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long)
        if flip is None:
            return self._faces[idx]
        return torch.where(torch.as_tensor(flip, dtype=torch.bool)[:, None], self._flipped[idx], self._faces[idx])

    def voices(self, idx) -> torch.Tensor:
        return self._voices[torch.as_tensor(idx, dtype=torch.long)]
