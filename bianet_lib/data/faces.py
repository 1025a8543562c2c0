"""Face image loading, normalisation (mean 0.5 / std 0.5, as the authors) and training
augmentation. Departure: SynthVox faces are 64x64; 224x224 is the paper preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bianet_lib.data.errors import BadInputError, broken_link_reason


def load_face(path: str | Path, size: int) -> torch.Tensor:
    """uint8 [3, size, size] RGB. Grayscale, CMYK, RGBA (composited on white) and palette
    images convert to RGB; missing, truncated or corrupt files raise BadInputError."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, broken_link_reason(path) or "missing file")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later in training
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image") from None
    except Image.DecompressionBombError as exc:  # a header claiming a gigantic image
        raise BadInputError(path, f"decompression bomb ({' '.join(str(exc).split())[:160]})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying truncated/corrupt
        raise BadInputError(path, f"corrupt or truncated image ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any other decoder failure is this file's, not the run's
        raise BadInputError(path, f"cannot decode ({type(exc).__name__}: {str(exc)[:160]})") from None
    if min(arr.shape[:2]) == 0:
        raise BadInputError(path, "empty image")
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float in [-1, 1] (mean 0.5, std 0.5 per channel)."""
    if batch.dtype != torch.uint8:
        raise TypeError(f"normalise expects uint8 images, got {batch.dtype}")
    return batch.float().div(255.0).sub(0.5).div(0.5)


def augment(batch: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Training-only augmentation of a uint8 batch [B, 3, S, S]: horizontal flip with p 0.5 and
    a random shift up to ``max_shift`` pixels (edge-replicated). Never use at evaluation."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if max_shift > 0:
        s = out.shape[-1]
        padded = torch.nn.functional.pad(out.float(), [max_shift] * 4, mode="replicate")
        dx, dy = torch.randint(0, 2 * max_shift + 1, (2, len(batch)), generator=generator)
        out = torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s]
                           for i in range(len(batch))]).to(torch.uint8)
    return out
