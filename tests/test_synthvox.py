"""SynthVox: causal structure, shortcut knob, determinism, disjoint splits, oracle ceiling."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from bianet_lib.cli import main
from bianet_lib.data import synthvox as S
from bianet_lib.data.interference import fade, split_face_masks, split_voice_masks
from bianet_lib.data.oracle import VOICE_OBS, OracleMatcher, matching_accuracy, oracle_ceilings
from bianet_lib.data.trials import make_matching_trials

TINY = dict(n_train=4, n_val=2, n_test=3, faces_per_id_train=3, voices_per_id_train=3,
            faces_per_id_eval=2, voices_per_id_eval=2, face_size=32, clip_seconds=0.5)


@pytest.fixture(scope="module")
def tiny_world():
    return S.generate_world(S.WorldConfig(**TINY, rho=0.5), seed=7)


@pytest.fixture(scope="module")
def identities():
    """Many identity parameter rows without rendering (the cheap part of the world)."""
    rows = [S.identity_row(S.make_identity(f"x{i}", np.random.default_rng([3, 0, i])))
            for i in range(2000)]
    return pd.DataFrame(rows)


def _corr(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_shared_factors_link_modalities(identities):
    d = identities
    assert _corr(np.log(d.voice_f0), d.face_hair_length) > 0.7      # sex factor
    assert _corr(np.log(d.voice_f0), d.face_jaw) < -0.7
    assert _corr(d.voice_jitter, d.face_greyness) > 0.8              # age
    assert _corr(d.voice_breathiness, d.face_greyness) > 0.8
    male = d.gender == "m"                                           # size, within one sex
    assert _corr(np.log(d.voice_vtl_scale[male]), d.face_width[male]) < -0.6
    # F0 is bimodal: about 120 Hz vs 215 Hz
    assert 105 < d.voice_f0[male].median() < 135 < 190 < d.voice_f0[~male].median() < 235
    assert 0.45 < (~male).mean() < 0.55


def test_private_factors_do_not_link_modalities(identities):
    d = identities
    voice_private = [c for c in d if c.startswith("voice_") and c.split("_")[1] in
                     ("tilt", "rate", "intonation", "formant")]
    face_all = [c for c in d if c.startswith("face_")]
    face_private = [c for c in face_all if c.split("_")[1] in
                    ("skin", "hair", "eye", "nose", "mouth", "face") and c != "face_hair_length"]
    voice_all = [c for c in d if c.startswith("voice_")]
    assert len(voice_private) == 6 and len(face_private) >= 12
    worst = max(abs(_corr(d[v], d[f])) for v in voice_private for f in face_all)
    worst = max(worst, max(abs(_corr(d[v], d[f])) for v in voice_all for f in face_private))
    assert worst < 0.1


def _f0_autocorr(x: np.ndarray) -> float:
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    lo, hi = 16000 // 400, 16000 // 80
    return 16000 / (lo + np.argmax(ac[lo:hi]))


def test_rendered_clean_voice_carries_its_f0():
    cfg = S.WorldConfig(**TINY | {"n_train": 12}, voice_interference=0.0)
    train = S.generate_split(cfg, 1, "train")
    est = [_f0_autocorr(train.voices[j].double().numpy()) for j in range(0, len(train.voices), 3)]
    true = train.identities.voice_f0.to_numpy()
    rel = np.abs(np.array(est) - true) / true
    assert np.median(rel) < 0.1


def test_bias_follows_sex_in_train_only():
    cfg = S.WorldConfig(rho=0.8)
    for split, lo, hi in (("train", 0.7, 0.9), ("test", -0.1, 0.1)):
        f_half, n_half, female = [], [], []
        for i in range(600):
            g = "f" if i % 2 else "m"
            for _, bg, _, nt in S.video_conditions(cfg, 5, split, i, g):
                f_half.append(bg in S.FACE_BG_HALF["f"])
                n_half.append(nt in S.VOICE_NOISE_HALF["f"])
                female.append(g == "f")
        assert lo < _corr(f_half, female) < hi, split
        assert lo < _corr(n_half, female) < hi, split


def test_metadata_columns_are_consistent(tiny_world):
    train = tiny_world["train"]
    g = train.identities.gender.to_numpy()[train.face_meta.identity]
    expect = [bg in S.FACE_BG_HALF[x] for bg, x in zip(train.face_meta.background, g, strict=True)]
    assert train.face_meta.shortcut_aligned.tolist() == expect
    g = train.identities.gender.to_numpy()[train.voice_meta.identity]
    expect = [nt in S.VOICE_NOISE_HALF[x] for nt, x in zip(train.voice_meta.noise_type, g, strict=True)]
    assert train.voice_meta.shortcut_aligned.tolist() == expect
    for s in tiny_world.values():
        for meta in (s.face_meta, s.voice_meta):
            assert meta.interference_strength.between(0, 1).all()
        assert (s.voice_meta.snr_db >= 5.0).all()  # the 5 dB floor
        assert s.voices.dtype == torch.float32
        assert torch.allclose(s.voices.abs().amax(1), torch.ones(len(s.voices)), atol=1e-6)
        assert set(s.identities.gender) <= {"m", "f"}


def test_zero_interference_gives_zero_strength():
    cfg = S.WorldConfig(**TINY, face_interference=0.0, voice_interference=0.0)
    s = S.generate_split(cfg, 0, "val")
    assert (s.face_meta.interference_strength == 0).all()
    assert (s.voice_meta.interference_strength == 0).all()
    assert np.isinf(s.voice_meta.snr_db).all() and (s.voice_meta.room == "none").all()


def test_same_seed_byte_identical_any_workers(tiny_world):
    again = S.generate_world(S.WorldConfig(**TINY, rho=0.5), seed=7, workers=2)
    for k in S.SPLITS:
        assert torch.equal(tiny_world[k].faces, again[k].faces)
        assert torch.equal(tiny_world[k].voices, again[k].voices)
        pd.testing.assert_frame_equal(tiny_world[k].voice_meta, again[k].voice_meta)
        pd.testing.assert_frame_equal(tiny_world[k].identities, again[k].identities)
    other = S.generate_split(S.WorldConfig(**TINY, rho=0.5), 8, "train")
    assert not torch.equal(other.faces, tiny_world["train"].faces)
    assert not torch.equal(other.voices, tiny_world["train"].voices)


def test_splits_disjoint_and_sized(tiny_world):
    names = [set(tiny_world[k].identities.name) for k in S.SPLITS]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert [len(n) for n in names] == [4, 2, 3]
    assert len(tiny_world["train"].faces) == 12 and len(tiny_world["test"].voices) == 6
    assert tiny_world["train"].faces.shape[1:] == (3, 32, 32)
    assert tiny_world["train"].voices.shape[1] == 8000


def test_config_rejects_bad_values():
    for bad in ({"rho": 1.5}, {"n_train": 0}, {"face_size": 8}, {"clip_seconds": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            S.WorldConfig(**bad).validate()


def test_oracle_ceiling_and_chance_when_identities_shuffled():
    cfg = S.WorldConfig(n_train=300, n_val=1, n_test=100, faces_per_id_train=1,
                        voices_per_id_train=1, faces_per_id_eval=1, voices_per_id_eval=1,
                        face_size=16, clip_seconds=0.25)
    train, test = (S.generate_split(cfg, 0, s) for s in ("train", "test"))
    acc = oracle_ceilings(train, test, ks=(2, 10))
    assert acc[2] >= 0.95 and 0.6 < acc[10] < acc[2]
    # negative control: give every test identity another identity's voice parameters
    scrambled = test.identities.copy()
    perm = np.random.default_rng(0).permutation(len(scrambled))
    scrambled[list(VOICE_OBS)] = scrambled[list(VOICE_OBS)].to_numpy()[perm]
    fake = type(test)(test.name, test.faces, test.voices, test.face_meta, test.voice_meta, scrambled)
    trials = make_matching_trials(fake, "vf", 2, 50, 0)
    assert 0.4 < matching_accuracy(OracleMatcher.fit(train), fake, trials) < 0.6


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "w"
    rc = main(["synth", "--out", str(out), "--n-train", "2", "--n-val", "1", "--n-test", "1",
               "--per-id-train", "1", "--per-id-eval", "1", "--workers", "1", "--face-size", "32"])
    assert rc == 0
    assert "faces/s" in capsys.readouterr().out
    assert len(list((out / "wav").rglob("*.wav"))) == 4 and len(list((out / "faces").rglob("*.jpg"))) == 4
    meta = pd.read_csv(out / "vox1_meta.csv")
    assert {"VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set", "split", "age"} <= set(meta)
    assert main(["synth", "--out", str(out)]) == 2                       # not empty
    assert main(["synth", "--out", str(tmp_path / "x"), "--bias", "1.5"]) == 2
    assert "rho" in capsys.readouterr().err


def test_oracle_is_an_evaluator_scorer(tiny_world):
    from bianet_lib.engine.evaluate import evaluate_protocols

    cfg = S.WorldConfig(n_train=40, n_val=1, n_test=1, faces_per_id_train=1, voices_per_id_train=1,
                        face_size=16, clip_seconds=0.25)
    oracle = OracleMatcher.fit(S.generate_split(cfg, 0, "train"))
    test = tiny_world["test"]
    trials = {d: make_matching_trials(test, d, 2, 20, 0) for d in ("vf", "fv")}
    res = evaluate_protocols(oracle, test, trials)
    for d, t in trials.items():  # same decisions through both interfaces
        assert res["matching"][d]["accuracy"] == pytest.approx(matching_accuracy(oracle, test, t))


def world_digest(world) -> str:
    """sha256 over every split's sample bytes and metadata (CSV text, full float precision)."""
    h = hashlib.sha256()
    for name in sorted(world):
        s = world[name]
        for part in (s.faces.numpy().tobytes(), s.voices.numpy().tobytes(),
                     s.face_meta.to_csv().encode(), s.voice_meta.to_csv().encode(),
                     s.identities.to_csv().encode()):
            h.update(part)
    return h.hexdigest()


# Computed BEFORE the local-interference knobs were added (commit "reference hashes"): the
# default world must stay byte-identical while those knobs are off. The default WorldConfig's
# full test split (seed 0, 1,200 samples) hashed to 178ff860...c35ba7 at the same commit.
DEFAULT_DIGESTS = {
    "tiny": "3ab00580e362596b8f48c87bc1031fed2d01389ff295a62c59bad5d4ae3335f1",
    "small64": "7d1644d7bb87c4403a4f6842b8b79e2341d6d01d67adf69bf3c2efb6cb4b29cf",
}


# The same worlds on a machine whose numpy finds AVX2 but not AVX-512 (an AMD EPYC, 2026-12-03),
# generated by the code of 9ccc1a5, whose worlds gave DEFAULT_DIGESTS on the earlier machines: the
# identity parameters' last bits follow numpy's SIMD kernels (NPY_DISABLE_CPU_FEATURES=AVX2,FMA3,AVX,F16C
# changes the identities' CSV on this machine too), so the reference is per kind of machine.
DEFAULT_DIGESTS_AVX2 = {
    "tiny": "ad64f7fc06b86700c3937985ce2b02b80cd899474926b2972f25cf2fb55ee9e0",
    "small64": "7d1644d7bb87c4403a4f6842b8b79e2341d6d01d67adf69bf3c2efb6cb4b29cf",
}


def test_default_world_bytes_unchanged(tiny_world):
    from bianet_lib.engine.equivalence import machine_fingerprint

    simd = machine_fingerprint()["simd"]
    expected = DEFAULT_DIGESTS if "AVX512F" in simd or "AVX2" not in simd else DEFAULT_DIGESTS_AVX2
    assert world_digest(tiny_world) == expected["tiny"]
    small = S.WorldConfig(n_train=3, n_val=2, n_test=2, faces_per_id_train=2, voices_per_id_train=2,
                          faces_per_id_eval=2, voices_per_id_eval=2, rho=0.5)  # 64 px, 1 s
    assert world_digest(S.generate_world(small, seed=3)) == expected["small64"]


# --- local interference with ground truth ----------------------------------------------------

LOCAL = S.WorldConfig.preset("local", **TINY | {"n_test": 5, "faces_per_id_eval": 4,
                                                "voices_per_id_eval": 4},
                             face_local_p=0.75, voice_local_p=0.75)


@pytest.fixture(scope="module")
def local_test():
    return S.generate_split(LOCAL, 3, "test")


@pytest.fixture(scope="module")
def local_twin():
    return S.regenerate_split(LOCAL, 3, "test", 0.0)


def test_local_world_stores_masks_and_kinds(local_test):
    s = local_test
    assert s.face_boxes.shape == (20, 4) and s.voice_intervals.shape == (20, 2, 2)
    assert set(s.face_meta.local_kind) == {"none", "face", "texture"}
    assert set(s.voice_meta.local_kind) == {"none", "speaker", "noise"}
    for meta, masks in ((s.face_meta, split_face_masks(s)), (s.voice_meta, split_voice_masks(s))):
        share = masks.flatten(1).float().mean(1).numpy()
        assert np.allclose(share, meta.local_share)
        assert (share[meta.local_kind == "none"] == 0).all()
    on = s.face_meta.local_kind != "none"
    assert np.allclose(s.face_meta.local_share[on], 0.3, atol=0.02)
    assert np.allclose(s.voice_meta.local_share[s.voice_meta.local_kind != "none"], 0.4, atol=1e-3)
    # distractors: another identity of the split for faces/speakers, none for texture/noise
    for meta, kind in ((s.face_meta, "face"), (s.voice_meta, "speaker")):
        rows = meta[meta.local_kind == kind]
        assert len(rows) and (rows.local_source != rows.identity).all() and rows.local_source.between(0, 4).all()
        assert (meta[meta.local_kind != kind].local_source == -1).all()
    # the local world has no unmasked local nuisance: no old occluder, no whole-clip speaker
    assert (s.face_meta.occluded == 0).all() and np.isneginf(s.voice_meta.overlap_db).all()


def test_clean_twin_differs_only_inside_the_mask(local_test, local_twin):
    s, t = local_test, local_twin
    assert torch.equal(t.face_boxes[:, 2:] - t.face_boxes[:, :2], torch.zeros(20, 2, dtype=torch.int32))
    fm, vm = split_face_masks(s), split_voice_masks(s)
    face_diff = (s.faces != t.faces).any(1)
    voice_diff = s.voices != t.voices
    assert not (face_diff & ~fm).any() and not (voice_diff & ~vm).any()
    # ... and inside it the interference is really there
    assert (face_diff & fm).sum() > 0.9 * fm.sum() > 0
    assert (voice_diff & vm).sum() > 0.8 * vm.sum() > 0
    # the global nuisance is the same: metadata other than the local columns is unchanged
    for a, b in ((s.face_meta, t.face_meta), (s.voice_meta, t.voice_meta)):
        cols = [c for c in a if not c.startswith("local_share")]
        pd.testing.assert_frame_equal(a[cols], b[cols])
    pd.testing.assert_frame_equal(s.identities, t.identities)


def test_clean_samples_byte_identical_to_their_twins(local_test, local_twin):
    for data, twin, meta in ((local_test.faces, local_twin.faces, local_test.face_meta),
                             (local_test.voices, local_twin.voices, local_test.voice_meta)):
        clean = torch.tensor((meta.local_kind == "none").to_numpy())
        assert 0 < clean.sum() < len(clean)
        assert data[clean].numpy().tobytes() == twin[clean].numpy().tobytes()
    # a clean twin of a clean twin is itself; dose 1 reproduces the world
    again = S.regenerate_split(S.replace(LOCAL, local_scale=0.0), 3, "test", 1.0)
    assert torch.equal(again.faces, local_twin.faces) and torch.equal(again.voices, local_twin.voices)
    same = S.regenerate_split(LOCAL, 3, "test", 1.0)
    assert torch.equal(same.faces, local_test.faces) and torch.equal(same.voices, local_test.voices)


def test_patch_lies_where_its_box_says():
    """Without global nuisance the face inside the box is the distractor's pixels, and the
    clip minus its twin is the distractor's burst, exactly where the interval says."""
    cfg = S.replace(LOCAL, face_interference=0.0, voice_interference=0.0, face_local_p=1.0,
                    voice_local_p=1.0, face_local_kinds="face", voice_local_kinds="speaker")
    s = S.generate_split(cfg, 4, "test")
    twin = S.regenerate_split(cfg, 4, "test", 0.0)
    for j in (0, 5, 11):
        i = int(s.face_meta.identity[j])
        patch, box, kind, src = S._local_face(cfg, 4, "test", i, j % 4)
        assert kind == "face" and src == s.face_meta.local_source[j] and tuple(s.face_boxes[j].tolist()) == box
        y0, x0, y1, x1 = box
        expect = np.clip(patch[y0:y1, x0:x1] + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)
        assert np.array_equal(s.faces[j, :, y0:y1, x0:x1].numpy(), expect)
        assert not np.array_equal(twin.faces[j, :, y0:y1, x0:x1].numpy(), expect)
        # outside the box the face is the clean rendering, identical to the twin's
        outside = ~split_face_masks(s, [j])[0]
        assert torch.equal(s.faces[j][:, outside], twin.faces[j][:, outside])
    diff = (s.voices - twin.voices).numpy()
    for j in (0, 7):
        iv = s.voice_intervals[j].numpy()
        source, _, _, _ = S._local_voice(cfg, 4, "test", int(s.voice_meta.identity[j]), j % 4, 8000)
        burst = np.zeros(8000)
        mask = np.zeros(8000, dtype=bool)
        for a, b in iv:
            burst[a:b] = source[a:b] * fade(b - a)
            mask[a:b] = True
        scale = diff[j][mask] @ burst[mask] / (burst[mask] @ burst[mask])  # = gain / peak
        assert np.allclose(diff[j], scale * burst, atol=1e-5) and scale > 0


def test_local_knobs_deterministic_by_seed_and_dose_scales_shares(local_test):
    again = S.generate_world(S.replace(LOCAL, n_train=2, n_val=1), seed=3, workers=2)["test"]
    assert torch.equal(again.faces, local_test.faces) and torch.equal(again.voices, local_test.voices)
    assert torch.equal(again.face_boxes, local_test.face_boxes)
    assert torch.equal(again.voice_intervals, local_test.voice_intervals)
    other = S.generate_split(LOCAL, 4, "test")
    assert not torch.equal(other.face_boxes, local_test.face_boxes)
    assert not torch.equal(other.voice_intervals, local_test.voice_intervals)
    on = (local_test.voice_meta.local_kind != "none").to_numpy()
    for dose in (0.5, 1.5):
        d = S.regenerate_split(LOCAL, 3, "test", dose)
        assert np.allclose(d.voice_meta.local_share[on], 0.4 * dose, atol=1e-3)
        f_on = (local_test.face_meta.local_kind != "none").to_numpy()
        assert np.allclose(d.face_meta.local_share[f_on], 0.3 * dose, atol=0.02)
        assert (d.face_meta.local_kind == local_test.face_meta.local_kind).all()
        assert (d.voice_meta.local_source == local_test.voice_meta.local_source).all()
        fm = split_face_masks(d)
        assert not ((d.faces != local_test.faces).any(1) & ~(fm | split_face_masks(local_test))).any()
    with pytest.raises(ValueError, match="dose"):
        S.regenerate_split(LOCAL, 3, "test", -1.0)


def test_local_config_validation_names_the_field():
    for bad in ({"face_local": 1.5}, {"voice_local_p": -0.1}, {"voice_local_db": 40.0},
                {"voice_local_bursts": 0}, {"local_scale": 9.0}, {"face_local_kinds": "face,blob"},
                {"voice_local_kinds": ""}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            S.WorldConfig(**bad).validate()
    with pytest.raises(ValueError, match="preset"):
        S.WorldConfig.preset("nope")
    assert S.WorldConfig.preset("default") == S.WorldConfig()


def test_synth_command_local_writes_masks(tmp_path, capsys):
    out = tmp_path / "w"
    rc = main(["synth", "--out", str(out), "--preset", "local", "--n-train", "2", "--n-val", "1",
               "--n-test", "2", "--per-id-train", "2", "--per-id-eval", "2", "--workers", "1",
               "--face-size", "32", "--clip-seconds", "0.5", "--voice-local-bursts", "3",
               "--face-local", "0.2"])
    assert rc == 0
    printed = capsys.readouterr().out
    world = S.generate_world(S.WorldConfig.preset(
        "local", n_train=2, n_val=1, n_test=2, faces_per_id_train=2, voices_per_id_train=2,
        faces_per_id_eval=2, voices_per_id_eval=2, face_size=32, clip_seconds=0.5,
        voice_local_bursts=3, face_local=0.2), seed=0)
    faces, voices = pd.read_csv(out / "face_meta.csv"), pd.read_csv(out / "voice_meta.csv")
    for split in S.SPLITS:
        f, v = faces[faces.split == split], voices[voices.split == split]
        boxes = f[["local_y0", "local_x0", "local_y1", "local_x1"]].to_numpy()
        assert np.array_equal(boxes, world[split].face_boxes.numpy())
        iv = v[[f"local_{k}_{b}" for b in range(3) for k in ("start", "end")]].to_numpy()
        assert np.array_equal(iv.reshape(-1, 3, 2), world[split].voice_intervals.numpy())
    on = faces.local_kind.astype(str) != "none"  # the preset puts interference on half the samples
    assert np.allclose(faces.local_share[on], 0.2, atol=0.02) and (faces.local_share[~on] == 0).all()
    train_on = on[faces.split == "train"].mean()
    assert f"local interference on {train_on:.2f} of faces" in printed.split("\nval:")[0]
    import soundfile

    test = voices[voices.split == "test"].reset_index(drop=True)
    j = int(world["test"].voices.abs().amax(1).argmax())
    loud, _ = soundfile.read(out / test.path[j], dtype="float32")
    assert np.abs(loud).max() > 1 and np.array_equal(loud, world["test"].voices[j].numpy())
    bad = ["synth", "--out", str(tmp_path / "x"), "--preset", "local"]
    assert main(bad + ["--voice-local-db", "99"]) == 2
    assert "voice_local_db" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "y"), "--preset", "loud"]) == 2
    assert "preset" in capsys.readouterr().err


def test_config_fields_select_the_world():
    from bianet_lib.config import BIANetConfig
    from bianet_lib.data.sources import world_cache_path, world_config

    base = BIANetConfig()
    assert world_config(base) == S.WorldConfig()           # the default world, unchanged
    local = BIANetConfig(world_preset="local", world_local_scale=0.5)
    wc = world_config(local)
    assert wc.face_local == S.PRESETS["local"]["face_local"] and wc.local_scale == 0.5
    assert world_cache_path(local) != world_cache_path(base)
    with pytest.raises(ValueError, match="world_preset"):
        world_config(BIANetConfig(world_preset="loud"))
    with pytest.raises(ValueError, match="local_scale"):
        world_config(BIANetConfig(world_local_scale=-1.0))


def test_token_share_of_split_samples(local_test):
    from bianet_lib.data.interference import face_token_share, voice_token_share

    f = face_token_share(local_test, [0, 1, 2], (4, 4))          # 32 px -> 4x4 tokens of 8 px
    boxes = local_test.face_boxes[:3]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).float()
    assert torch.allclose(f.sum(1) * 64, area)                  # 16 tokens of 64 px each
    v = voice_token_share(local_test, None, 5)
    assert v.shape == (20, 5)
    assert torch.allclose(v.mean(1), torch.tensor(local_test.voice_meta.local_share.to_numpy(),
                                                  dtype=torch.float32), atol=1e-6)
    empty = S.generate_split(S.WorldConfig(**TINY), 0, "val")   # no boxes: all shares 0
    assert face_token_share(empty, None, (4, 4)).abs().sum() == 0
