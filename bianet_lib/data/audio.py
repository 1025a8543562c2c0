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
- Departure: our loop padding really repeats the clip (the authors' is a no-op), down to a
  minimum length ``min_seconds`` (an option, default MIN_SECONDS) below which a clip is refused.

librosa is imported lazily, only to decode what the standard library cannot (compressed
formats, float WAV, other sample rates when scipy is missing) and for ``paper_spectrogram``:
16-bit PCM WAV at 16 kHz (VoxCeleb1's format) is read with ``wave`` + numpy, and the mel
filterbank is computed here, so training runs on machines without librosa.
"""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bianet_lib.data.errors import BadInputError, broken_link_reason
from bianet_lib.data.types import SAMPLE_RATE

PAPER_SAMPLES = 160_000   # the paper's feature length: 10 s at 16 kHz
# Shorter clips are refused: 0.1 s is 10 spectrogram frames, about half a syllable; anything
# from here up is loop-padded to the clip length (issue: a valid 0.2 s clip used to be refused).
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4       # below this peak amplitude (about -80 dBFS) a clip counts as silent


class MissingDependencyError(ValueError):
    """An optional package (librosa) is needed for this file and is not installed."""


def _librosa(purpose: str):
    try:
        import librosa
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs librosa (pip install librosa==0.11.0, or bring its wheels: README, "
            "'GPU'); integer-PCM WAV is read without it") from None
    return librosa


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


def _read_pcm_wav(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 in [-1, 1], rate) of an integer-PCM WAV with the standard library; raises
    wave.Error for formats it does not read (float, compressed) and EOFError when truncated."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        dt = np.dtype(f"<i{width}")
        x = np.frombuffer(raw[: len(raw) // width * width], dt).astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    else:
        raise wave.Error(f"unsupported sample width {width}")
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32), rate


def _resample(wave_: np.ndarray, rate: int, sr: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, sr)
    return resample_poly(wave_, sr // g, rate // g).astype(np.float32)


def decode(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The whole clip as mono float32 at ``sr``. PCM WAV goes through the standard library
    (resampled with scipy's polyphase filter if its rate differs); other formats through librosa
    with its warnings silenced (the reason of a failure is in the BadInputError instead)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, broken_link_reason(path) or "missing file")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty audio")
    if path.suffix.lower() == ".wav":
        with open(path, "rb") as fh:
            head = fh.read(12)
        if head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            raise BadInputError(path, f"cannot decode (not a WAV file: starts with {head[:8]!r})")
        try:
            wave_, rate = _read_pcm_wav(path)
            return wave_ if rate == sr else _resample(wave_, rate, sr)
        except EOFError:
            raise BadInputError(path, "cannot decode (truncated WAV header)") from None
        except wave.Error as exc:
            if "unknown format" not in str(exc):  # float/extensible WAV: librosa below
                raise BadInputError(path, f"cannot decode (broken WAV header: {exc})") from None
        except ImportError:  # scipy missing: the machine's, not the file's
            raise
        except MemoryError:
            raise BadInputError(path, "cannot decode (its header claims more samples than fit in memory)") from None
        except Exception as exc:  # noqa: BLE001 - struct.error, ValueError, ...: this file's fault
            raise BadInputError(path, f"cannot decode ({type(exc).__name__}: {str(exc)[:160]})") from None
    librosa = _librosa(f"decoding {path.name}")
    try:
        with warnings.catch_warnings():  # "PySoundFile failed. Trying audioread", FutureWarnings
            warnings.simplefilter("ignore")
            wave_, _ = librosa.load(path, sr=sr, mono=True)
    except librosa.util.exceptions.ParameterError as exc:
        if "finite" in str(exc):  # librosa refuses non-finite audio before we can look at it
            raise BadInputError(path, "NaN or infinite samples") from None
        raise BadInputError(path, f"cannot decode ({exc})") from None
    except Exception as exc:  # soundfile/audioread raise many types for one cause: undecodable
        hint = ("; .m4a needs ffmpeg for audioread, or convert to .wav" if path.suffix.lower() == ".m4a"
                else "")
        what = ("no decoder could read it: not an audio file, or truncated"
                if type(exc).__name__ == "NoBackendError" else type(exc).__name__)
        raise BadInputError(path, f"cannot decode ({what}{hint})") from None
    return wave_.astype(np.float32)


def load_clip(path: str | Path, seconds: float | None = 1.0, sr: int = SAMPLE_RATE,
              min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Mono float32 waveform at ``sr``: the first ``seconds`` (loop-padded if shorter);
    ``seconds=None`` keeps the whole clip. Unusable files raise BadInputError."""
    if min_seconds <= 0:
        raise ValueError(f"min_seconds={min_seconds}: must be > 0")
    wave_ = decode(path, sr)
    check_wave(wave_, path, sr, min_seconds)
    return wave_ if seconds is None else loop_pad(wave_, int(round(seconds * sr)))


def random_crop(wave: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random n-sample window for training (loop-padded first if the clip is shorter)."""
    if len(wave) <= n:
        return loop_pad(wave, n)
    start = int(rng.integers(0, len(wave) - n + 1))
    return wave[start:start + n]


def paper_spectrogram(wave: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """The paper's described preprocessing: amplitude_to_db(|STFT|), min-max scaled to [0, 1]."""
    librosa = _librosa("paper_spectrogram")
    db = librosa.amplitude_to_db(np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop)), ref=np.max)
    return (db - db.min()) / max(float(db.max() - db.min()), 1e-8)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] triangular filters on the Slaney mel scale with Slaney area
    normalisation: librosa.filters.mel's defaults, computed here so librosa is not needed."""
    fmax = sr / 2 if fmax is None else fmax
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                        f / f_sp)

    def to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), np.subtract.outer(mel_f, freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    # float32 before the area normalisation, as librosa rounds: the filters are bit-identical
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights


class LogMelFrontEnd(nn.Module):
    """Batched waveforms [B, L] -> log-mel [B, 1, n_mels, T], each utterance scaled to [0, 1].

    Power spectrogram (n_fft 512, win 400, hop 160 at 16 kHz) -> mel filterbank (librosa's) ->
    10*log10 with power_to_db's clamp (amin 1e-10, floor top_db below the utterance peak) ->
    per-utterance min-max to [0, 1], as the paper normalises.
    """

    def __init__(self, n_mels: int = 40, sr: int = SAMPLE_RATE, n_fft: int = 512,
                 win_length: int = 400, hop_length: int = 160, top_db: float = 80.0):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length, self.top_db = n_fft, win_length, hop_length, top_db
        fb = mel_filterbank(sr, n_fft, n_mels)
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
