"""The in-memory form every data source produces, so training never knows where data came from."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

SAMPLE_RATE = 16_000


@dataclass
class SplitData:
    """One split (train, val or test) of faces and voices held in memory.

    faces: uint8 [Nf, 3, S, S] RGB images.
    voices: float32 [Nv, L] waveforms at 16 kHz, all of one length L.
    face_meta / voice_meta: one row per sample; column ``identity`` is an int index into
    ``identities`` (0..n_id-1 within the split), column ``video`` a video/session name;
    SynthVox adds its factor and interference columns (``shortcut_aligned``, ...).
    identities: one row per identity, column ``name`` plus whatever metadata the source has
    (``gender`` when known; SynthVox adds its latent factors).
    face_boxes: optional int32 [Nf, 4], the box (y0, x0, y1, x1) of each face's local
    interference (half-open pixel ranges; an empty box = none); None when the source has none.
    voice_intervals: optional int32 [Nv, B, 2], the (start, end) sample ranges of each clip's
    local interference bursts (end == start: unused); None when the source has none.
    Masks are rebuilt exactly from them by ``bianet_lib.data.interference``.
    """

    name: str
    faces: torch.Tensor
    voices: torch.Tensor
    face_meta: pd.DataFrame
    voice_meta: pd.DataFrame
    identities: pd.DataFrame
    face_boxes: torch.Tensor | None = None
    voice_intervals: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.faces.dtype != torch.uint8 or self.faces.ndim != 4 or self.faces.shape[1] != 3:
            raise ValueError(f"split {self.name!r}: faces must be uint8 [N,3,S,S], got "
                             f"{self.faces.dtype} {tuple(self.faces.shape)}")
        if self.voices.ndim != 2:
            raise ValueError(f"split {self.name!r}: voices must be [N, L], got {tuple(self.voices.shape)}")
        if len(self.face_meta) != len(self.faces) or len(self.voice_meta) != len(self.voices):
            raise ValueError(f"split {self.name!r}: metadata rows do not match sample counts")
        if self.face_boxes is not None and tuple(self.face_boxes.shape) != (len(self.faces), 4):
            raise ValueError(f"split {self.name!r}: face_boxes must be [{len(self.faces)}, 4], got "
                             f"{tuple(self.face_boxes.shape)}")
        if self.voice_intervals is not None and (
                self.voice_intervals.ndim != 3 or len(self.voice_intervals) != len(self.voices)
                or self.voice_intervals.shape[2] != 2):
            raise ValueError(f"split {self.name!r}: voice_intervals must be [{len(self.voices)}, B, 2], "
                             f"got {tuple(self.voice_intervals.shape)}")

    @property
    def face_identity(self) -> torch.Tensor:
        return torch.tensor(self.face_meta["identity"].to_numpy(), dtype=torch.long)

    @property
    def voice_identity(self) -> torch.Tensor:
        return torch.tensor(self.voice_meta["identity"].to_numpy(), dtype=torch.long)

    @property
    def n_identities(self) -> int:
        return len(self.identities)
