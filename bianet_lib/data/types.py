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
    """

    name: str
    faces: torch.Tensor
    voices: torch.Tensor
    face_meta: pd.DataFrame
    voice_meta: pd.DataFrame
    identities: pd.DataFrame

    def __post_init__(self) -> None:
        if self.faces.dtype != torch.uint8 or self.faces.ndim != 4 or self.faces.shape[1] != 3:
            raise ValueError(f"split {self.name!r}: faces must be uint8 [N,3,S,S], got "
                             f"{self.faces.dtype} {tuple(self.faces.shape)}")
        if self.voices.ndim != 2:
            raise ValueError(f"split {self.name!r}: voices must be [N, L], got {tuple(self.voices.shape)}")
        if len(self.face_meta) != len(self.faces) or len(self.voice_meta) != len(self.voices):
            raise ValueError(f"split {self.name!r}: metadata rows do not match sample counts")

    @property
    def face_identity(self) -> torch.Tensor:
        return torch.tensor(self.face_meta["identity"].to_numpy(), dtype=torch.long)

    @property
    def voice_identity(self) -> torch.Tensor:
        return torch.tensor(self.voice_meta["identity"].to_numpy(), dtype=torch.long)

    @property
    def n_identities(self) -> int:
        return len(self.identities)
