"""Audio loading and the log-mel front end.

Paper: librosa load, amplitude_to_db, normalise to (0, 1), 160000 values, loop padding.
The authors' code instead flattens a 22.05 kHz dB spectrogram into 160000 values and feeds it
to a network that treats it as a 16 kHz waveform (see shared/notes/paper-facts.md). We follow
the sane reading shared with Wen et al.; each departure in one line:

- Departure: waveforms stay waveforms at 16 kHz; 160000 samples (10 s) is the paper preset,
  our default clip length comes from the config (SynthVox: 1 s).
- Departure: the spectrogram is computed inside the network (LogMelFrontEnd, 40-64 mels,
  n_fft 512, win 400, hop 160), not by librosa before training; paper_spectrogram() keeps
  the paper's described |STFT| -> amplitude_to_db -> [0, 1] for teaching only.
- Departure: our loop padding really repeats the clip (the authors' is a no-op).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import torch
from torch import nn

from bianet_lib.data.errors import BadInputError
from bianet_lib.data.types import SAMPLE_RATE

PAPER_SAMPLES = 160_000   # the paper's feature length: 10 s at 16 kHz
MIN_SECONDS = 0.5         # shorter clips hold too few syllables to say anything of a voice
SILENCE_PEAK = 1e-4       # below this peak amplitude (about -80 dBFS) a clip counts as silent


def loop_pad(wave: np.ndarray, n: int) -> np.ndarray:
    """Repeat ``wave`` end to end until it has n samples, then cut to exactly n."""
    if len(wave) == 0:
        raise ValueError("cannot loop-pad an empty waveform")
    reps = -(-n // len(wave))
    return np.tile(wave, reps)[:n]


def check_wave(wave: np.ndarray, path, sr: int = SAMPLE_RATE,
               min_seconds: float = MIN_SECONDS) -> None:
    """Raise BadInputError if the decoded clip is empty, too short, non-finite or silent."""
    if wave.size == 0:
        raise BadInputError(path, "empty audio")
    if not np.all(np.isfinite(wave)):
        raise BadInputError(path, "NaN or infinite samples")
    if len(wave) < min_seconds * sr:
        raise BadInputError(path, f"too short ({len(wave) / sr:.2f} s < {min_seconds} s)")
    if np.max(np.abs(wave)) < SILENCE_PEAK:
        raise BadInputError(path, "silent")


def load_clip(path: str | Path, seconds: float | None = 1.0, sr: int = SAMPLE_RATE,
              min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Mono float32 waveform at ``sr``: the first ``seconds`` (loop-padded if shorter);
    ``seconds=None`` keeps the whole clip. Unusable files raise BadInputError."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "missing file")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty audio")
    try:
        wave, _ = librosa.load(path, sr=sr, mono=True)
    except librosa.util.exceptions.ParameterError as exc:
        if "finite" in str(exc):  # librosa refuses non-finite audio before we can look at it
            raise BadInputError(path, "NaN or infinite samples") from None
        raise BadInputError(path, f"cannot decode: {exc}") from None
    except Exception as exc:  # soundfile/audioread raise many types for one cause: undecodable
        hint = " (.m4a needs ffmpeg for audioread; or convert to .wav)" if path.suffix == ".m4a" else ""
        raise BadInputError(path, f"cannot decode: {type(exc).__name__}{hint}") from None
    check_wave(wave, path, sr, min_seconds)
    wave = wave.astype(np.float32)
    return wave if seconds is None else loop_pad(wave, int(round(seconds * sr)))


def random_crop(wave: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random n-sample window for training (loop-padded first if the clip is shorter)."""
    if len(wave) <= n:
        return loop_pad(wave, n)
    start = int(rng.integers(0, len(wave) - n + 1))
    return wave[start:start + n]


def paper_spectrogram(wave: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """The paper's described preprocessing: amplitude_to_db(|STFT|), min-max scaled to [0, 1]."""
    db = librosa.amplitude_to_db(np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop)), ref=np.max)
    return (db - db.min()) / max(float(db.max() - db.min()), 1e-8)


class LogMelFrontEnd(nn.Module):
    """Batched waveforms [B, L] -> log-mel [B, 1, n_mels, T], each utterance scaled to [0, 1].

    Power spectrogram (n_fft 512, win 400, hop 160 at 16 kHz) -> librosa mel filterbank ->
    10*log10 with power_to_db's clamp (amin 1e-10, floor top_db below the utterance peak) ->
    per-utterance min-max to [0, 1], as the paper normalises.
    """

    def __init__(self, n_mels: int = 40, sr: int = SAMPLE_RATE, n_fft: int = 512,
                 win_length: int = 400, hop_length: int = 160, top_db: float = 80.0):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length, self.top_db = n_fft, win_length, hop_length, top_db
        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("mel", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim != 2:
            raise ValueError(f"LogMelFrontEnd expects [B, L] waveforms, got {tuple(wave.shape)}")
        spec = torch.stft(wave.float(), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=True, return_complex=True).abs().pow(2)
        db = 10 * torch.log10(torch.clamp(self.mel @ spec, min=1e-10))
        peak = db.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - self.top_db)
        low = db.amin(dim=(1, 2), keepdim=True)
        return ((db - low) / (peak - low).clamp(min=1e-6)).unsqueeze(1)
