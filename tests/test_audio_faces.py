"""Audio and face loading on known signals and broken files."""

from __future__ import annotations

import subprocess
import sys
import warnings

import librosa
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from bianet_lib.data.audio import (
    MIN_SECONDS,
    LogMelFrontEnd,
    load_clip,
    loop_pad,
    mel_filterbank,
    paper_spectrogram,
    random_crop,
)
from bianet_lib.data.errors import BadInputError
from bianet_lib.data.faces import augment, load_face, normalise

SR = 16000


def _sine(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav(tmp_path, name, wave, subtype="FLOAT"):
    p = tmp_path / name
    soundfile.write(p, wave, SR, subtype=subtype)
    return p


def test_loop_padding_is_exact(tmp_path):
    wave = _sine(0.6, 330.0)
    out = load_clip(_wav(tmp_path, "a.wav", wave), seconds=1.5)
    n = len(wave)
    assert len(out) == 24000 and out.dtype == np.float32
    np.testing.assert_array_equal(out[:n], wave)
    np.testing.assert_array_equal(out[n:2 * n], wave)
    np.testing.assert_array_equal(out[2 * n:], wave[:24000 - 2 * n])


def test_short_clip_pads_to_exact_length_and_long_clip_is_cut(tmp_path):
    assert len(load_clip(_wav(tmp_path, "s.wav", _sine(0.7)), seconds=1.0)) == SR
    assert len(load_clip(_wav(tmp_path, "l.wav", _sine(2.3)), seconds=1.0)) == SR
    assert len(load_clip(_wav(tmp_path, "w.wav", _sine(2.3)), seconds=None)) == int(2.3 * SR)
    assert len(loop_pad(np.arange(3.0), 160000)) == 160000


@pytest.mark.parametrize("name, wave, reason", [
    ("silent.wav", np.zeros(SR, np.float32), "silent"),
    ("short.wav", _sine(0.05), "too short"),
    ("nan.wav", np.full(SR, np.nan, np.float32), "NaN"),
])
def test_bad_audio_is_rejected_with_reason(tmp_path, name, wave, reason):
    p = _wav(tmp_path, name, wave)
    with pytest.raises(BadInputError, match=reason) as exc:
        load_clip(p)
    assert exc.value.path == str(p) and name in str(exc.value)


def test_empty_and_corrupt_audio(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    (tmp_path / "c.wav").write_bytes(b"RIFF" + bytes(range(200)))
    with pytest.raises(BadInputError, match="empty audio"):
        load_clip(tmp_path / "e.wav")
    with pytest.raises(BadInputError, match="cannot decode"):
        load_clip(tmp_path / "c.wav")
    with pytest.raises(BadInputError, match="missing file"):
        load_clip(tmp_path / "nope.wav")


def test_short_clip_loop_padded_down_to_the_minimum_option(tmp_path):
    # a valid 0.2 s clip is loop-padded (it used to be refused by a fixed 0.5 s minimum)
    short = _wav(tmp_path, "short.wav", _sine(0.2), subtype="PCM_16")
    out = load_clip(short, seconds=1.0)
    assert len(out) == SR and np.array_equal(out[:3200], out[3200:6400])
    assert MIN_SECONDS == 0.1
    with pytest.raises(BadInputError, match=r"too short \(0.20 s < 0.5 s\)"):
        load_clip(short, seconds=1.0, min_seconds=0.5)
    with pytest.raises(ValueError, match="min_seconds"):
        load_clip(short, min_seconds=0)


def test_text_file_and_truncated_header_say_so(tmp_path):
    (tmp_path / "t.wav").write_text("hello, this is not audio\n")
    with pytest.raises(BadInputError, match=r"cannot decode \(not a WAV file: starts with b'hello, t'\)"):
        load_clip(tmp_path / "t.wav")
    full = _wav(tmp_path, "f.wav", _sine(0.5), subtype="PCM_16").read_bytes()
    (tmp_path / "h.wav").write_bytes(full[:30])  # RIFF/WAVE, then the fmt chunk cut short
    with pytest.raises(BadInputError, match="cannot decode") as exc:
        load_clip(tmp_path / "h.wav")
    assert "NoBackendError" not in str(exc.value) and "header" in str(exc.value)
    (tmp_path / "x.flac").write_text("not flac either")  # librosa's path: no warning leaks
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadInputError, match="no decoder could read it"):
            load_clip(tmp_path / "x.flac")


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8"])
def test_stdlib_wav_reader_equals_librosa(tmp_path, subtype):
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((4000, 2))).clip(-1, 1).astype(np.float32)
    p = tmp_path / "s.wav"
    soundfile.write(p, stereo, SR, subtype=subtype)
    ours = load_clip(p, seconds=None)
    ref, _ = librosa.load(p, sr=SR, mono=True)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_pcm_wav_and_the_front_end_need_no_librosa(tmp_path):
    p = _wav(tmp_path, "a.wav", _sine(0.5), subtype="PCM_16")
    code = ("import sys; sys.modules['librosa'] = None\n"  # any import of librosa now fails
            "from bianet_lib.data.audio import load_clip, LogMelFrontEnd\n"
            "import torch\n"
            f"x = load_clip({str(p)!r}, seconds=1.0)\n"
            "print(x.shape[0], tuple(LogMelFrontEnd()(torch.from_numpy(x)[None]).shape))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["16000", "(1,", "1,", "40,", "101)"]


def test_synth_without_soundfile_says_so_in_one_line(tmp_path):
    """soundfile is the ``audio`` extra: without it ``bianet synth`` refuses at once (exit 2, one
    line naming the package), before generating anything."""
    code = ("import sys; sys.modules['soundfile'] = None\n"
            "from bianet_lib.cli import main\n"
            f"sys.exit(main(['synth', '--out', {str(tmp_path / 'w')!r}, '--n-train', '2', '--n-val', '1', "
            "'--n-test', '1']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "soundfile" in lines[0] and "bianet_lib[audio]" in lines[0], lines
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


@pytest.mark.parametrize("sr, n_fft, n_mels", [(16000, 512, 40), (16000, 512, 64), (22050, 2048, 128)])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels):
    ours = mel_filterbank(sr, n_fft, n_mels)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)  # bit-identical: trained SynthVox runs are unchanged


def test_random_crop_is_a_window():
    wave = np.arange(1000, dtype=np.float32)
    crop = random_crop(wave, 100, np.random.default_rng(0))
    assert len(crop) == 100 and np.all(np.diff(crop) == 1)
    assert len(random_crop(wave[:50], 100, np.random.default_rng(0))) == 100


def test_paper_spectrogram_range():
    spec = paper_spectrogram(_sine(1.0) + 0.01 * np.random.default_rng(0).standard_normal(SR).astype(np.float32))
    assert spec.min() == 0.0 and spec.max() == 1.0 and spec.shape[0] == 257


def test_logmel_puts_1khz_in_the_right_band():
    fe = LogMelFrontEnd(n_mels=40)
    x = torch.from_numpy(np.stack([_sine(1.0, 1000.0), _sine(1.0, 3000.0)]))
    out = fe(x)
    assert out.shape == (2, 1, 40, 101)
    assert float(out.min()) == 0.0 and abs(float(out.max()) - 1.0) < 1e-6
    fb = librosa.filters.mel(sr=SR, n_fft=512, n_mels=40)
    freqs = np.fft.rfftfreq(512, 1 / SR)
    for row, f in ((0, 1000.0), (1, 3000.0)):
        band = int(out[row, 0, :, 50].argmax())
        assert band == int(fb[:, np.argmin(abs(freqs - f))].argmax())
    assert int(out[0, 0, :, 50].argmax()) < int(out[1, 0, :, 50].argmax())
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        fe(x[0])


def _save(tmp_path, name, img, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


def test_face_modes_convert_to_rgb(tmp_path):
    grey = load_face(_save(tmp_path, "g.png", Image.new("L", (20, 20), 100)), 16)
    assert grey.shape == (3, 16, 16) and grey.dtype == torch.uint8 and (grey == 100).all()
    cmyk = load_face(_save(tmp_path, "c.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0))), 16)
    assert abs(int(cmyk[0].float().mean()) - 255) < 4 and int(cmyk[1].float().mean()) < 4   # red
    rgba = Image.new("RGBA", (16, 16), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent -> white background
    out = load_face(_save(tmp_path, "a.png", rgba), 16)
    assert out[:, 0, 0].tolist() == [255, 255, 255] and out[:, 5, 5].tolist() == [0, 0, 255]
    pal = Image.new("RGB", (16, 16), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert load_face(_save(tmp_path, "p.png", pal), 16)[:, 3, 3].tolist() == [10, 200, 30]


def test_truncated_and_bogus_images_rejected(tmp_path):
    p = _save(tmp_path, "full.jpg", Image.effect_noise((64, 64), 50).convert("RGB"), quality=90)
    data = p.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="truncated") as exc:
        load_face(tmp_path / "cut.jpg", 32)
    assert "cut.jpg" in str(exc.value)
    (tmp_path / "txt.jpg").write_text("hello")
    with pytest.raises(BadInputError, match="not an image"):
        load_face(tmp_path / "txt.jpg", 32)


def test_normalise_and_augment():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 2, 2).contiguous()
    n = normalise(x)
    assert n.min() == -1.0 and n.max() == 1.0
    with pytest.raises(TypeError):
        normalise(n)
    batch = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    a = augment(batch, torch.Generator().manual_seed(0), max_shift=0)
    flipped = [bool(torch.equal(a[i], batch[i].flip(-1))) for i in range(64)]
    kept = [bool(torch.equal(a[i], batch[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 16 < sum(flipped) < 48
    b = augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(b, augment(batch, torch.Generator().manual_seed(0))) and b.dtype == torch.uint8
