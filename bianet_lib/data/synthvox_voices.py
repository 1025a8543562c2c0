"""SynthVox voices: source-filter speech-like clips at 16 kHz, then per-clip interference.

A clip is a glottal pulse train at the identity's F0 (with jitter and intonation), shaped by
a spectral tilt, passed through three formant resonators scaled by the identity's vocal-tract
length, cut into consonant+vowel syllables. Interference (noise at an SNR with a 5 dB floor,
a room, an overlapping second speaker) is what a matcher must learn to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from bianet_lib.data.interference import fade

SR = 16_000

# Peterson & Barney (1952) adult-male F1/F2/F3 means for seven vowels, in Hz.
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                   [570, 840, 2410], [660, 1720, 2410], [440, 1020, 2240]], dtype=float)
BANDWIDTHS = np.array([70.0, 100.0, 140.0])
# Consonant noise colours: 's'-like, 'sh'-like, 'f'-like bands (Hz).
_CONSONANT_SOS = [signal.butter(4, band, btype="bandpass", fs=SR, output="sos")
                  for band in ((4000, 7500), (2000, 4000), (1000, 6000))]
NOISE_TYPES = ("white", "hum", "pink", "music")  # first half: the 'm' shortcut, second: 'f'
ROOMS = ("none", "echo", "reverb")
SNR_RANGE = (5.0, 20.0)  # 5 dB floor: below it the synthetic voice is buried (calibration note)


@dataclass(frozen=True)
class VoiceParams:
    """Identity-level voice parameters (clean, before interference)."""

    f0: float            # Hz
    vtl_scale: float     # formant multiplier; a longer vocal tract gives < 1
    jitter: float        # relative cycle-to-cycle period deviation
    breathiness: float   # aspiration noise relative to the voiced source
    tilt: float          # one-pole low-pass coefficient of the source (0..0.95)
    rate: float          # syllables per second
    intonation: float    # relative F0 swing over the clip
    formant_offsets: tuple[float, float, float]  # relative F1/F2/F3 shifts


def _resonator(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    r = np.exp(-np.pi * bw / SR)
    theta = 2 * np.pi * min(freq, 0.45 * SR) / SR
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return signal.lfilter([1 - r], a, x)


def _voiced_source(p: VoiceParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """Glottal pulses placed one period at a time, so jitter is a real per-cycle deviation."""
    t = np.arange(n) / SR
    phase0 = rng.uniform(0, 2 * np.pi)
    contour = p.f0 * (1 + p.intonation * np.sin(2 * np.pi * 0.7 * t + phase0)
                      + 0.01 * np.sin(2 * np.pi * 5.5 * t))  # slow intonation + light vibrato
    src = np.zeros(n)
    pos = rng.uniform(0, SR / p.f0)
    while pos < n:
        i = int(pos)
        src[i] = 1.0 + 0.05 * rng.standard_normal()  # small shimmer
        pos += SR / contour[i] * (1 + p.jitter * rng.standard_normal())
    # two-pole glottal smoothing then lip radiation (difference): roughly -6 dB/octave overall
    src = signal.lfilter([1.0], [1.0, -2 * p.tilt, p.tilt * p.tilt], src)
    src = np.diff(src, prepend=0.0)
    return src / (np.std(src) + 1e-12)


def clean_voice(p: VoiceParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """One clean clip of n samples: consonant+vowel syllables of this identity's voice."""
    voiced = _voiced_source(p, n, rng)
    voiced = voiced + p.breathiness * rng.standard_normal(n)
    out = np.zeros(n)
    syl = int(SR / p.rate)
    start = int(rng.integers(0, max(1, syl // 3)))
    while start < n - SR // 20:
        length = min(int(syl * rng.uniform(0.8, 1.2)), n - start)
        cons = int(length * rng.uniform(0.15, 0.3))
        seg = slice(start + cons, start + length)
        vowel = VOWELS[rng.integers(len(VOWELS))] * p.vtl_scale * (1 + np.array(p.formant_offsets))
        v = voiced[seg]
        for f, bw in zip(vowel, BANDWIDTHS * p.vtl_scale, strict=True):
            v = _resonator(v, f, bw)
        v = v / (np.std(v) + 1e-12) * np.hanning(len(v))
        out[seg] = v
        if cons > 8:
            # fricative kept ~10 dB under the vowel: louder bursts dominate the clip (calibration)
            burst = signal.sosfilt(_CONSONANT_SOS[rng.integers(3)], rng.standard_normal(cons))
            out[start:start + cons] = 0.3 * burst / (np.std(burst) + 1e-12) * np.hanning(cons)
        start += length + int(rng.uniform(0, 0.15) * syl)  # occasional short pause
    return out


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    return np.fft.irfft(spec, n)


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Tone mixture: chords of harmonic notes that change every 250 ms."""
    t = np.arange(n) / SR
    out = np.zeros(n)
    step = SR // 4
    for s in range(0, n, step):
        e = min(n, s + step)
        for midi in rng.integers(48, 84, size=3):
            f = 440.0 * 2 ** ((midi - 69) / 12)
            for h in (1, 2, 3):
                out[s:e] += np.sin(2 * np.pi * f * h * t[s:e]) / h
    return out


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise of one of NOISE_TYPES."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _pink(n, rng)
    elif kind == "hum":
        t = np.arange(n) / SR
        base = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 8))
        x = x + 0.1 * rng.standard_normal(n)
    elif kind == "music":
        x = _music(n, rng)
    else:
        raise ValueError(f"unknown noise type {kind!r}; expected one of {NOISE_TYPES}")
    return x / (np.std(x) + 1e-12)


def _room(x: np.ndarray, room: str, rng: np.random.Generator) -> np.ndarray:
    if room == "echo":
        d = int(rng.uniform(0.08, 0.25) * SR)
        y = x.copy()
        y[d:] += rng.uniform(0.3, 0.6) * x[:-d]
        return y
    if room == "reverb":
        rt = rng.uniform(0.2, 0.6)  # seconds to -60 dB
        m = int(rt * SR)
        ir = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)
        ir[0] = 1.0
        return signal.fftconvolve(x, ir / np.linalg.norm(ir))[: len(x)]
    return x


def random_voice_params(rng: np.random.Generator) -> VoiceParams:
    """A voice of nobody: for the overlapping second speaker."""
    female = rng.random() < 0.5
    return VoiceParams(f0=rng.uniform(180, 250) if female else rng.uniform(95, 150),
                       vtl_scale=rng.uniform(0.85, 1.2), jitter=0.01, breathiness=0.1,
                       tilt=rng.uniform(0.6, 0.9), rate=rng.uniform(3, 6), intonation=0.08,
                       formant_offsets=(0.0, 0.0, 0.0))


@dataclass(frozen=True)
class VoiceConditions:
    """Interference applied to one clip; strength 0 gives the clean clip."""

    noise_type: str
    snr_db: float        # effective SNR; inf when no noise was added
    room: str
    overlap_db: float    # second speaker level relative to the voice; -inf when absent


def draw_voice_conditions(noise_type: str, strength: float,
                          rng: np.random.Generator) -> VoiceConditions:
    """Per-clip conditions; ``strength`` (0..1) scales noise level and room/overlap odds."""
    snr = rng.uniform(*SNR_RANGE) - 20 * np.log10(strength) if strength > 0 else np.inf
    u = rng.random()
    room = "reverb" if u < 0.35 * strength else "echo" if u < 0.55 * strength else "none"
    overlap = rng.uniform(-20, -10) if rng.random() < 0.2 * strength else -np.inf
    return VoiceConditions(noise_type, float(snr), room, float(overlap))


def interference_strength(c: VoiceConditions) -> float:
    """0 (clean) .. 1 (5 dB noise, reverb, a -10 dB second speaker)."""
    noise_term = np.clip((SNR_RANGE[1] + 10 - c.snr_db) / 25, 0, 1) if np.isfinite(c.snr_db) else 0.0
    room_term = {"none": 0.0, "echo": 0.6, "reverb": 1.0}[c.room]
    overlap_term = np.clip((c.overlap_db + 25) / 15, 0, 1) if np.isfinite(c.overlap_db) else 0.0
    return float(0.5 * noise_term + 0.25 * room_term + 0.25 * overlap_term)


def render_voice(p: VoiceParams, c: VoiceConditions, n: int, rng: np.random.Generator,
                 local: tuple[np.ndarray, np.ndarray, float] | None = None) -> np.ndarray:
    """The clip as stored: clean voice + interference, peak-normalised float32.

    ``local`` = (source [n] of unit RMS, intervals [B, 2], level dB): time-local bursts of the
    source, at ``level`` dB relative to the clean voice's RMS, with short fades inside each
    interval, added after the room and the noise. The peak normalisation then uses the peak of
    the clip without the bursts, so the clip differs from its clean twin only inside the
    intervals (its peak may exceed 1 there).
    """
    x = clean_voice(p, n, rng)
    rms = np.sqrt(np.mean(x * x)) + 1e-12
    if np.isfinite(c.overlap_db):
        other = clean_voice(random_voice_params(rng), n, rng)
        x = x + other / (np.sqrt(np.mean(other ** 2)) + 1e-12) * rms * 10 ** (c.overlap_db / 20)
    x = _room(x, c.room, rng)
    if np.isfinite(c.snr_db):
        x = x + noise(c.noise_type, n, rng) * rms * 10 ** (-c.snr_db / 20)
    if local is None:
        return (x / (np.max(np.abs(x)) + 1e-12)).astype(np.float32)
    source, intervals, level_db = local
    bursts = np.zeros(n)
    gain = rms * 10 ** (level_db / 20)
    for a, b in intervals:
        if b > a:
            bursts[a:b] = source[a:b] * gain * fade(b - a)
    return ((x + bursts) / (np.max(np.abs(x)) + 1e-12)).astype(np.float32)
