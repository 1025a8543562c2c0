"""The streaming data path: the batch sampler (unchanged SynthVox batches), the feature store
(build, reuse, corrupt entries, interrupted builds) and the DataLoader (crops, flips, exact
resume), on a generated VoxCeleb-shaped tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import random_split

from bianet_lib.data.audio import load_clip
from bianet_lib.data.batches import IdentityBatches
from bianet_lib.data.faces import load_face
from bianet_lib.data.store import StoreSettings, check_store, open_or_build
from bianet_lib.data.vox_tree import write_vox_tree
from bianet_lib.data.voxceleb import build_index


def _old_identity_batches(split, batch_size, seed, rank, world, epochs):
    """The in-memory IdentityBatches as it was before the sampler/loader split (reference),
    ``epochs`` epochs drawn from one generator."""
    g = torch.Generator().manual_seed(seed)
    vp = [torch.nonzero(split.voice_identity == i).flatten() for i in range(split.n_identities)]
    fp = [torch.nonzero(split.face_identity == i).flatten() for i in range(split.n_identities)]
    rounds = max(1, len(split.voices) // split.n_identities)
    out = []
    for _ in range(epochs * rounds):
        order = torch.randperm(split.n_identities, generator=g)
        for b in range(split.n_identities // batch_size):
            ids = order[b * batch_size:(b + 1) * batch_size]
            v = torch.stack([vp[i][torch.randint(len(vp[i]), (1,), generator=g)[0]] for i in ids.tolist()])
            f = torch.stack([fp[i][torch.randint(len(fp[i]), (1,), generator=g)[0]] for i in ids.tolist()])
            flip = torch.rand(len(ids), generator=g) < 0.5
            share = slice(rank * len(ids) // world, (rank + 1) * len(ids) // world)
            faces = split.faces[f]
            faces = torch.where(flip[:, None, None, None], faces.flip(-1), faces)
            out.append((split.voices[v][share], faces[share], ids[share]))
    return out


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_in_memory_batches_are_those_of_the_old_code(rank, world):
    split = random_split(12, per_id=3, face_size=8, samples=50, seed=4)
    new = IdentityBatches(split, 4, seed=7, rank=rank, world=world)
    got = list(new.epoch()) + list(new.epoch())
    old = _old_identity_batches(split, 4, 7, rank, world, epochs=2)
    assert len(got) == len(old) == 18
    for b, (v, f, i) in zip(got, old, strict=True):
        assert torch.equal(b.voices, v) and torch.equal(b.faces, f) and torch.equal(b.identity, i)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("vt")
    write_vox_tree(root, 12, 3, 3, clips_per_id=3, faces_per_id=2, seconds=0.5, face_size=16, seed=1)
    index, _ = build_index(root / "wav", root / "faces", "wen")
    bad = index[(index.split == "train") & (index.modality == "voice")].path.iloc[0]
    with open(bad, "w") as fh:
        fh.write("not audio")  # one unusable file, reported with its reason
    return root, index, bad


def _store(tree, cache):
    root, index, _ = tree
    return open_or_build(index[index.split == "train"], cache, "train",
                         StoreSettings(clip_seconds=0.5, face_size=16), workers=2)


def test_store_holds_what_the_decoders_give(tree, tmp_path):
    root, index, bad = tree
    split, report = _store(tree, tmp_path)
    assert report.built and report.skipped == [(bad, "cannot decode (not a WAV file: starts with b'not audi')")]
    assert split.n_identities == 12 and len(split.voices) == 35 and len(split.faces) == 24
    for i in (0, 7, 34):  # evaluation view: the first 0.5 s, loop-padded, as load_clip gives it
        ref = load_clip(split.voice_meta.path[i], seconds=0.5)
        np.testing.assert_allclose(split.voices[i].numpy(), ref, atol=1 / 32768 + 1e-7)
    np.testing.assert_array_equal(split.faces[3].numpy(), load_face(split.face_meta.path[3], 16).numpy())
    assert split.voices[2:5].shape == (3, 8000) and split.faces[torch.tensor([1, 0])].shape == (2, 3, 16, 16)
    again, rep2 = _store(tree, tmp_path)  # reused, with the same skip report
    assert not rep2.built and rep2.skipped == report.skipped
    assert again.store.folder == split.store.folder


def test_loader_batches_crops_flips_and_exact_resume(tree, tmp_path):
    split, _ = _store(tree, tmp_path)
    a = IdentityBatches(split, 4, seed=3, workers=2)
    first = list(a.epoch())
    assert len(first) == len(a) == 6  # 2 rounds (35 clips // 12 ids) x 3 batches
    state = a.generator.get_state()
    second = list(a.epoch())
    for b in first:
        assert len(set(b.identity.tolist())) == 4 and b.voices.shape == (4, 8000)
        assert b.faces.dtype == torch.uint8 and b.voices.dtype == torch.float32
    # a crop is a window of the stored clip (or the loop-padded clip when shorter)
    st = split.store
    plan = next(IdentityBatches(split, 4, seed=3, workers=0).sampler.plans())
    for i, seed in zip(plan.voice, plan.crop_seed, strict=True):
        full = st._voice_raw(i).astype(np.float32) / 32768
        crop = st.voice(i, seed)
        if len(full) > 8000:
            start = seed % (len(full) - 8000 + 1)
            np.testing.assert_array_equal(crop, full[start:start + 8000])
    crops_differ = any(not torch.equal(x.voices, y.voices) for x, y in zip(first, second, strict=True))
    assert crops_differ
    # resume: a new loader whose sampler generator is restored draws epoch two exactly
    b = IdentityBatches(split, 4, seed=3, workers=0)
    b.generator.set_state(state)
    for x, y in zip(second, b.epoch(), strict=True):
        assert torch.equal(x.voices, y.voices) and torch.equal(x.faces, y.faces)
        assert torch.equal(x.identity, y.identity)


def test_flip_is_applied_to_the_chosen_faces(tree, tmp_path):
    split, _ = _store(tree, tmp_path)
    plan = next(IdentityBatches(split, 4, seed=5, workers=0).sampler.plans())
    batch = next(IdentityBatches(split, 4, seed=5, workers=0).epoch())
    assert 0 < sum(plan.flip) < 4
    for k, (j, flip) in enumerate(zip(plan.face, plan.flip, strict=True)):
        ref = split.faces[j]
        assert torch.equal(batch.faces[k], ref.flip(-1) if flip else ref)


def test_corrupt_entry_is_reported_and_rebuilt(tree, tmp_path, capfd):
    split, _ = _store(tree, tmp_path)
    folder = split.store.folder
    good = split.voices[5].clone()
    off = int(split.store._offset[5])
    with open(folder / "voices.i16", "r+b") as fh:
        fh.seek(2 * off + 100)
        fh.write(b"\x7f" * 64)
    fresh, _ = _store(tree, tmp_path)  # sizes still add up: the entry check finds it on read
    assert torch.equal(fresh.voices[5], good)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "corrupt entry" in err and "CRC mismatch" in err
    assert torch.equal(_store(tree, tmp_path)[0].voices[5], good)  # rewritten on disk
    assert capfd.readouterr().err == ""


def test_truncated_store_and_interrupted_build_are_rebuilt(tree, tmp_path, capfd):
    split, _ = _store(tree, tmp_path)
    folder = split.store.folder
    ref = split.voices[0:35].clone()
    with open(folder / "faces.u8", "r+b") as fh:
        fh.truncate(100)
    assert "faces.u8 holds 100 bytes" in check_store(folder)
    again, report = _store(tree, tmp_path)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "rebuilding it" in err and report.built
    assert torch.equal(again.voices[0:35], ref)
    (folder / "manifest.json").unlink()  # a kill before the manifest: no manifest
    assert "interrupted build" in check_store(folder)
    third, report = _store(tree, tmp_path)
    assert report.built and json.loads((folder / "manifest.json").read_text())["n_voices"] == 35


def test_train_on_a_voxceleb_tree_streams_and_saves_the_skip_report(tmp_path, capsys):
    from bianet_lib.cli import main

    root = tmp_path / "tree"
    write_vox_tree(root, 8, 4, 4, clips_per_id=2, faces_per_id=2, seconds=0.25, face_size=32)
    bad = sorted((root / "wav" / "id10311").rglob("*.wav"))[0]  # a train identity (wen: F..)
    bad.write_bytes(b"")
    run = tmp_path / "run"
    sets = ["data=voxceleb", f"audio_root={root / 'wav'}", f"face_root={root / 'faces'}",
            f"cache_dir={tmp_path / 'cache'}", "face_size=32", "clip_seconds=0.25",
            "face_widths=[8,8,16,16]", "audio_widths=[8,8,16,16]", "attn_channels=8",
            "hidden_dim=32", "embed_dim=16", "n_mels=16", "batch_size=4", "epochs=1",
            "num_threads=1", "device=cpu"]
    assert main(["train", "--run-dir", str(run), "--no-progress", "--set", *sets]) == 0
    saved = (run / "skipped.txt").read_text()
    assert f"{bad}: empty audio" in saved and "skipped files: 1" in saved
    assert "skip report written to" in capsys.readouterr().out
    assert (run / "results.json").is_file()


def test_generated_tree_is_the_same_whatever_the_worker_count(tmp_path):
    counts = [write_vox_tree(tmp_path / f"w{w}", 3, 2, 2, clips_per_id=2, faces_per_id=2, seconds=0.2,
                             face_size=16, seed=9, workers=w) for w in (1, 2)]
    assert counts[0] == counts[1] == {"identities": 7, "files": 28}
    files = [sorted(p.relative_to(tmp_path / f"w{w}") for p in (tmp_path / f"w{w}").rglob("*.*"))
             for w in (1, 2)]
    assert files[0] == files[1] and len(files[0]) == 28
    assert all((tmp_path / "w1" / f).read_bytes() == (tmp_path / "w2" / f).read_bytes() for f in files[0])
    index, _ = build_index(tmp_path / "w1" / "wav", tmp_path / "w1" / "faces", "wen")
    assert index.groupby("split").identity.nunique().to_dict() == {"test": 2, "train": 3, "val": 2}


def test_trainer_on_stored_splits_resumes_exactly(tmp_path):
    """A run over feature stores (DataLoader with a worker, random crops) interrupted after
    epoch 1 and resumed ends with the same weights as the uninterrupted run."""
    from helpers import tiny_config

    from bianet_lib.engine.trainer import Trainer

    root = tmp_path / "tree"
    write_vox_tree(root, 8, 4, 4, clips_per_id=2, faces_per_id=2, seconds=0.5, face_size=32, workers=1)
    index, _ = build_index(root / "wav", root / "faces", "wen")
    settings = StoreSettings(clip_seconds=0.25, face_size=32)
    train, _ = open_or_build(index[index.split == "train"], tmp_path / "c", "train", settings, 1)
    val, _ = open_or_build(index[index.split == "val"], tmp_path / "c", "val", settings, 1)
    # one worker named, not the default (half the CPUs): the same test on a 16-core box
    cfg = tiny_config(epochs=2, batch_size=4, clip_seconds=0.25, loader_workers=1)
    a = Trainer(cfg, train, val, tmp_path / "a", progress=False)
    assert a.batches.stored and a.batches._loader.num_workers == 1
    a.fit()
    b = Trainer(cfg, train, val, tmp_path / "b", progress=False)
    real_epoch, calls = b._run_epoch, []

    def interrupted():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch()

    b._run_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    torch.manual_seed(123)
    c = Trainer(cfg, train, val, tmp_path / "b", progress=False)
    c.fit(resume=True)
    assert c.step == a.step == 2 * 2 * 2  # epochs x rounds x batches per round
    for name, ref in a.model.state_dict().items():
        assert torch.equal(ref, c.model.state_dict()[name]), name


def test_relative_and_absolute_roots_find_the_same_store(tree, tmp_path, monkeypatch):
    root, _, _ = tree
    first, rep = _store(tree, tmp_path)
    monkeypatch.chdir(root)
    index, _ = build_index("wav", "faces", "wen")  # relative roots, relative paths
    again, rep2 = open_or_build(index[index.split == "train"], tmp_path, "train",
                                StoreSettings(clip_seconds=0.5, face_size=16), workers=1)
    assert rep.built and not rep2.built and again.store.folder == first.store.folder
