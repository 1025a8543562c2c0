"""SynthVox faces: parametric RGB faces drawn with PIL, then per-image interference.

The face is drawn on a transparent layer at twice the output size (anti-aliasing by a 2x box
downsample), posed by one affine warp, composited on a textured background, then degraded
(blur, lighting, occluder, pixel noise). Only the face layer carries identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Six background colour classes: the first three are the 'm' shortcut, the last three 'f'.
BG_COLOURS = np.array([(190, 70, 60), (70, 150, 80), (60, 90, 190),
                       (220, 200, 90), (150, 90, 180), (90, 190, 190)], dtype=float)
TEXTURES = ("flat", "stripes", "blotches")
GREY_HAIR = np.array([205.0, 205.0, 205.0])


@dataclass(frozen=True)
class FaceParams:
    """Identity-level face parameters (clean, before interference); lengths are relative."""

    jaw: float            # 0 pointed .. 1 square chin
    width: float          # head width multiplier
    brow: float           # brow thickness 0..1
    hair_length: float    # 0 cropped .. 1 shoulder length
    greyness: float       # 0 natural hair colour .. 1 grey
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    eye: tuple[float, float, float]
    eye_size: float
    eye_spacing: float
    nose_length: float
    mouth_width: float
    face_length: float


@dataclass(frozen=True)
class FaceConditions:
    """Interference applied to one image; all zero/identity values give the clean face."""

    background: int       # index into BG_COLOURS
    texture: str
    rotation: float       # degrees
    shift_x: float        # fraction of the image side
    shift_y: float
    scale: float
    blur: float           # Gaussian radius at output resolution, pixels
    gain: float
    gradient: float       # lighting gradient amplitude
    occluded: float       # occluded area fraction (0 = none)
    pixel_noise: float    # std of additive noise, grey levels


def draw_face_conditions(background: int, texture: str, strength: float,
                         rng: np.random.Generator) -> FaceConditions:
    """Per-image nuisance; ``strength`` (0..1) scales every magnitude and the occluder odds."""
    s = strength
    occluded = rng.uniform(0.03, 0.12) if rng.random() < 0.4 * s else 0.0
    return FaceConditions(
        background=background, texture=texture,
        rotation=rng.uniform(-15, 15) * s, shift_x=rng.uniform(-0.08, 0.08) * s,
        shift_y=rng.uniform(-0.08, 0.08) * s, scale=1 + rng.uniform(-0.12, 0.12) * s,
        blur=(rng.uniform(0.3, 1.5) if rng.random() < 0.5 else 0.0) * s,
        gain=1 + rng.uniform(-0.35, 0.35) * s, gradient=rng.uniform(0, 0.4) * s,
        occluded=occluded, pixel_noise=rng.uniform(0, 12) * s)


def interference_strength(c: FaceConditions) -> float:
    """0 (clean) .. 1 (every nuisance at its maximum)."""
    terms = [abs(c.rotation) / 15, max(abs(c.shift_x), abs(c.shift_y)) / 0.08,
             abs(c.scale - 1) / 0.12, c.blur / 1.5, abs(c.gain - 1) / 0.35, c.gradient / 0.4,
             min(c.occluded / 0.08, 1.0) * 2, c.pixel_noise / 12]  # an occluder counts double
    return float(np.clip(np.sum(terms) / 9, 0, 1))


def _rgb(c) -> tuple[int, int, int]:
    return tuple(int(np.clip(v, 0, 255)) for v in c)


def _face_layer(p: FaceParams, size: int) -> Image.Image:
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    C = size
    cx = C / 2
    hw = 0.22 * C * p.width
    top, chin = 0.2 * C, 0.2 * C + 0.58 * C * p.face_length
    hair = _rgb((1 - p.greyness) * np.array(p.hair) + p.greyness * GREY_HAIR)
    skin = _rgb(p.skin)
    if p.hair_length > 0.3:  # long hair falls behind the head
        d.rectangle([cx - 1.2 * hw, top + 0.1 * C, cx + 1.2 * hw,
                     top + 0.1 * C + p.hair_length * 0.65 * C], fill=hair)
    d.rectangle([cx - 0.35 * hw, chin - 0.05 * C, cx + 0.35 * hw, C], fill=skin)  # neck
    mid = (top + chin) / 2
    d.ellipse([cx - hw, top, cx + hw, mid + (mid - top) * 0.6], fill=skin)
    jw = hw * (0.35 + 0.6 * p.jaw)
    d.polygon([(cx - hw, mid), (cx + hw, mid), (cx + jw, chin), (cx - jw, chin)], fill=skin)
    d.chord([cx - 1.05 * hw, top - 0.04 * C, cx + 1.05 * hw, top + 0.3 * C], 180, 360, fill=hair)
    eye_y = top + 0.4 * (chin - top)
    r = 0.04 * C * p.eye_size
    bw = max(1, int(round(0.035 * C * p.brow)))
    for side in (-1, 1):
        ex = cx + side * hw * 0.45 * p.eye_spacing
        d.ellipse([ex - 1.4 * r, eye_y - r, ex + 1.4 * r, eye_y + r], fill=(245, 245, 245))
        d.ellipse([ex - 0.7 * r, eye_y - 0.7 * r, ex + 0.7 * r, eye_y + 0.7 * r], fill=_rgb(p.eye))
        d.ellipse([ex - 0.3 * r, eye_y - 0.3 * r, ex + 0.3 * r, eye_y + 0.3 * r], fill=(20, 20, 20))
        d.line([ex - 1.6 * r, eye_y - 1.9 * r, ex + 1.6 * r, eye_y - 1.9 * r], fill=hair, width=bw)
    nose_y = eye_y + 0.12 * C * p.nose_length
    shade = _rgb(np.array(p.skin) * 0.75)
    d.polygon([(cx, eye_y + r), (cx - 0.05 * C, nose_y), (cx + 0.05 * C, nose_y)], fill=shade)
    mouth_y = (nose_y + chin) / 2
    mw = hw * 0.45 * p.mouth_width
    d.ellipse([cx - mw, mouth_y - 0.018 * C, cx + mw, mouth_y + 0.018 * C], fill=(150, 50, 60))
    return layer


def _background(c: FaceConditions, size: int, rng: np.random.Generator) -> np.ndarray:
    base = BG_COLOURS[c.background] * rng.uniform(0.85, 1.15)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    if c.texture == "stripes":
        yy, xx = np.mgrid[0:size, 0:size] / size
        ang = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * rng.uniform(3, 8) * (np.cos(ang) * xx + np.sin(ang) * yy))
        img *= (1 + 0.25 * wave)[..., None]
    elif c.texture == "blotches":
        low = rng.uniform(0.7, 1.3, size=(6, 6)).astype(np.float32)
        up = Image.fromarray(low, mode="F").resize((size, size), Image.BICUBIC)
        img *= np.asarray(up)[..., None]
    return img


def base_image(p: FaceParams, c: FaceConditions, out_size: int,
               rng: np.random.Generator) -> np.ndarray:
    """The posed face on its background, blurred, at output size: float32 [S, S, 3] before the
    per-pixel processing (lighting, occluder, pixel noise) of ``render_face``."""
    C = 2 * out_size
    layer = _face_layer(p, C)
    # inverse affine (output -> input) of scale s, rotation a and shift t about the centre
    a = np.deg2rad(c.rotation)
    ca, sa = np.cos(a) / c.scale, np.sin(a) / c.scale
    tx, ty = c.shift_x * C, c.shift_y * C
    h = C / 2
    coeffs = (ca, sa, h - ca * (h + tx) - sa * (h + ty), -sa, ca, h + sa * (h + tx) - ca * (h + ty))
    layer = layer.transform((C, C), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    bg = Image.fromarray(np.clip(_background(c, C, rng), 0, 255).astype(np.uint8)).convert("RGBA")
    img = Image.alpha_composite(bg, layer).convert("RGB")
    if c.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(2 * c.blur))
    return np.asarray(img.reduce(2), dtype=np.float32)


def texture_patch(size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured occluder image, float32 [S, S, 3]: stripes or a checkerboard of two random
    colours, or coloured blotches (each a third of the time)."""
    c1, c2 = rng.uniform(0, 255, size=(2, 3))
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 0:
        ang = rng.uniform(0, np.pi)
        t = np.sin(2 * np.pi * rng.uniform(4, 10) * (np.cos(ang) * xx + np.sin(ang) * yy)) > 0
    elif kind == 1:
        f = rng.uniform(3, 8)
        t = (np.floor(f * xx) + np.floor(f * yy)) % 2 > 0
    else:
        low = rng.uniform(0, 1, size=(5, 5)).astype(np.float32)
        t = np.asarray(Image.fromarray(low, mode="F").resize((size, size), Image.BICUBIC))
    t = np.clip(np.asarray(t, dtype=np.float32), 0, 1)[..., None]
    return (t * c1 + (1 - t) * c2).astype(np.float32)


def fit_into_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A copy of ``image`` (float [S, S, 3]) whose ``box`` (y0, x0, y1, x1) holds the whole image
    downscaled to the box (bilinear, on the rounded 8-bit image): pasted by ``render_face``, it
    puts a second, smaller face in the frame."""
    y0, x0, y1, x1 = box
    small = Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8)).resize((x1 - x0, y1 - y0), Image.BILINEAR)
    out = np.array(image, dtype=np.float32)
    out[y0:y1, x0:x1] = np.asarray(small, dtype=np.float32)
    return out


def box_contrast(image: np.ndarray, box: tuple[int, int, int, int], gain: float) -> np.ndarray:
    """A copy of ``image`` whose ``box`` content is stretched about its mean by ``gain`` and
    clipped to 0..255: the same content, more salient (larger local contrast)."""
    y0, x0, y1, x1 = box
    out = np.array(image, dtype=np.float32)
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.clip(region.mean() + gain * (region - region.mean()), 0, 255)
    return out


def render_face(p: FaceParams, c: FaceConditions, out_size: int, rng: np.random.Generator,
                patch: np.ndarray | None = None,
                box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The image as stored: uint8 [3, S, S].

    ``patch`` (float [S, S, 3]) and ``box`` (y0, x0, y1, x1): local interference, pasted from
    the same place of ``patch`` before the per-pixel processing (lighting, pixel noise,
    clipping), which is therefore applied identically with and without it: the image differs
    from its clean twin only inside the box.
    """
    x = base_image(p, c, out_size, rng)
    if patch is not None and box is not None:
        y0, x0, y1, x1 = box
        x[y0:y1, x0:x1] = patch[y0:y1, x0:x1]
    S = out_size
    yy, xx = np.mgrid[0:S, 0:S] / S - 0.5
    ang = rng.uniform(0, 2 * np.pi)
    light = c.gain * (1 + c.gradient * (np.cos(ang) * xx + np.sin(ang) * yy) * 2)
    x *= light[..., None]
    if c.occluded > 0:
        side = int(round(np.sqrt(c.occluded) * S))
        ox, oy = rng.integers(0, S - side + 1, size=2)
        x[oy:oy + side, ox:ox + side] = rng.uniform(0, 255, size=3)
    if c.pixel_noise > 0:
        x += rng.normal(0, c.pixel_noise, size=x.shape)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)
