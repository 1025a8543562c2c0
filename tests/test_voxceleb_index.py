"""The VoxCeleb indexer on a mini tree written from a tiny SynthVox world, with broken files."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from bianet_lib.cli import main
from bianet_lib.data.synthvox import WorldConfig, generate_world, write_voxceleb_tree
from bianet_lib.data.voxceleb import build_index, load_split, split_table


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Train identities id10310 (f), id10312 and id10319 (m; names are borrowed by sex), 2 voices
    + 2 faces each, then deliberately broken: id10312 loses its faces, both voices of id10310
    break (empty, NaN), one face of id10319 is truncated, and an unknown identity folder appears."""
    root = tmp_path_factory.mktemp("vox")
    world = generate_world(WorldConfig(n_train=3, n_val=2, n_test=2, faces_per_id_train=2,
                                       voices_per_id_train=2, faces_per_id_eval=2,
                                       voices_per_id_eval=2, face_size=32), seed=3)
    table = write_voxceleb_tree(world, root)
    shutil.rmtree(root / "faces" / "Fawad_Khan")
    empty, nan = sorted((root / "wav" / "id10310").rglob("*.wav"))
    empty.write_bytes(b"")
    soundfile.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    jpg = sorted((root / "faces" / "Forest_Whitaker").rglob("*.jpg"))[0]
    jpg.write_bytes(jpg.read_bytes()[:300])
    (root / "wav" / "id99999" / "vid").mkdir(parents=True)
    shutil.copy(sorted((root / "wav" / "id10003").rglob("*.wav"))[0], root / "wav" / "id99999" / "vid")
    return root, world, table, (str(empty), str(nan), str(jpg))


def test_borrowed_names_agree_with_the_identities_sex(tree):
    _, world, table, _ = tree
    wen = split_table("wen").set_index("id")
    assert (table["Gender"] == table["VoxCeleb1 ID"].map(wen["gender"])).all()
    assert table.groupby("split")["VoxCeleb1 ID"].nunique().to_dict() == {"train": 3, "val": 2, "test": 2}


def test_split_tables():
    for name, sizes in (("wen", (924, 112, 189)), ("pins", (901, 100, 250))):
        counts = split_table(name).split.value_counts()
        assert (counts["train"], counts["val"], counts["test"]) == sizes
    pins, again = split_table("pins"), split_table("pins")
    assert pins.equals(again) and pins.id.is_unique
    with pytest.raises(ValueError, match="unknown split"):
        split_table("celeb")


def test_vox2_identity_file(tmp_path):
    (tmp_path / "ids.txt").write_text("VoxCeleb2 ID,name\nid00017 Alice\nid00061\n")
    t = split_table("vox2-test", tmp_path / "ids.txt")
    assert t.id.tolist() == ["id00017", "id00061"] and t.name.tolist() == ["Alice", "id00061"]
    assert (t.split == "test").all()
    with pytest.raises(ValueError, match="needs an identity list"):
        split_table("vox2-test")


def test_index_reports_unknown_and_missing_modality(tree):
    root, _, _, _ = tree
    index, report = build_index(root / "wav", root / "faces", "wen")
    assert report.unknown_folders == ["voice:id99999"]
    assert report.identities == [("id10312", "no usable face files")]
    assert sorted(index.identity.unique()) == ["id10003", "id10007", "id10117", "id10120",
                                               "id10310", "id10319"]
    faces = index[index.modality == "face"]
    assert faces.video.str.startswith("synth_").all()  # video folder recovered for faces
    assert set(index[index.identity == "id10003"].name) == {"Aamir_Khan"}


def test_load_split_skips_exactly_the_broken_files(tree, tmp_path):
    root, world, _, broken = tree
    index, report = build_index(root / "wav", root / "faces", "wen")
    data, report = load_split(index, "train", 1.0, 32, cache_dir=tmp_path / "cache", report=report)
    assert sorted(p for p, _ in report.files) == sorted(broken)
    assert report.counts() == Counter({"empty audio": 1, "NaN or infinite samples": 1,
                                       "corrupt or truncated image": 1})
    assert ("id10310", "no usable voice files") in report.identities
    assert data.identities.voxceleb_id.tolist() == ["id10319"]
    assert len(data.voices) == 2 and len(data.faces) == 1
    # synthetic identity 2 of train is id10319: its audio survives the 16-bit round trip
    orig = world["train"].voices[world["train"].voice_meta.identity.to_numpy() == 2].numpy()
    np.testing.assert_allclose(data.voices.numpy(), orig, atol=1 / 16000)
    # every decodable file is cached, also those of the identity dropped afterwards
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 5
    cached, _ = load_split(index, "train", 1.0, 32, cache_dir=tmp_path / "cache")
    assert np.array_equal(cached.voices.numpy(), data.voices.numpy())
    assert "empty audio: 1" in report.summary()


def test_clean_split_matches_world(tree):
    root, world, table, _ = tree
    index, _ = build_index(root / "wav", root / "faces", "wen")
    data, report = load_split(index, "val", 1.0, 32)
    assert report.files == [] and data.n_identities == 2
    # the loader orders identities by ID; names are borrowed by sex, so map back to the world's
    synthetic = {v: i for i, v in enumerate(table[table.split == "val"]["VoxCeleb1 ID"])}
    ident = world["val"].face_meta.identity.to_numpy()
    order = np.concatenate([np.flatnonzero(ident == synthetic[v]) for v in data.identities.voxceleb_id])
    diff = np.abs(data.faces.numpy().astype(int) - world["val"].faces.numpy()[order].astype(int))
    assert diff.mean() < 4  # JPEG quality 95, no chroma subsampling; another face would be ~50
    with pytest.raises(ValueError, match="no files"):
        load_split(index[index.split != "val"], "val", 1.0, 32)


def test_index_command(tree, tmp_path, capsys):
    root, _, _, _ = tree
    out = tmp_path / "index.csv"
    assert main(["index", "--audio-root", str(root / "wav"), "--face-root", str(root / "faces"),
                 "--split", "wen", "--out", str(out), "--validate"]) == 0
    text = capsys.readouterr().out
    assert "train: 2 identities" in text and "NaN or infinite samples: 1" in text
    assert out.is_file()
    assert main(["index", "--audio-root", str(root), "--face-root", str(root), "--split", "x"]) == 2
    assert main(["index", "--audio-root", str(root / "nope"), "--face-root", str(root),
                 "--split", "wen"]) == 2
    assert "nope" in capsys.readouterr().err


def test_index_out_lists_only_usable_files_and_the_rejected_with_reasons(tree, tmp_path, capsys):
    root, _, _, broken = tree
    out = tmp_path / "index.csv"
    argv = ["index", "--audio-root", str(root / "wav"), "--face-root", str(root / "faces"),
            "--split", "wen", "--out", str(out), "--workers", "1"]
    assert main(argv) == 0  # without --validate: nothing decoded, and it says so
    text = capsys.readouterr().out
    assert "skipped files: 0" not in text and "files not decoded" in text
    assert "dropped identities: 1" in text
    assert main(argv + ["--validate", "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    assert "skipped files: 3" in text and "feature store" in text
    usable = pd.read_csv(out)
    rejected = pd.read_csv(tmp_path / "index.rejected.csv")
    assert not set(broken) & set(usable.path)
    assert set(broken) <= set(rejected.path)
    # id10310 lost both voices: its face files are rejected too, with the identity's reason
    assert "id10310" not in set(usable.identity)
    assert rejected.reason.str.contains("identity id10310 dropped: no usable voice files").any()
    assert len(usable) + len(rejected) == len(build_index(root / "wav", root / "faces", "wen")[0])
    assert "NaN or infinite samples" in set(rejected.reason)


@pytest.mark.parametrize("extra, message", [
    (["--clip-seconds", "-1", "--validate"], "--clip-seconds must be > 0"),
    (["--out", "/nonexistent/folder/i.csv"], "folder /nonexistent/folder does not exist"),
    (["--min-seconds", "0"], "--min-seconds must be > 0"),
])
def test_index_bad_values_exit_2_before_work(tree, capsys, extra, message):
    root, _, _, _ = tree
    assert main(["index", "--audio-root", str(root / "wav"), "--face-root", str(root / "faces"),
                 "--split", "wen", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_corrupt_cache_entry_is_reported_and_rebuilt(tree, tmp_path, capfd):
    root, _, _, _ = tree
    index, _ = build_index(root / "wav", root / "faces", "wen")
    first, _ = load_split(index, "val", 1.0, 32, cache_dir=tmp_path / "c")
    entry = sorted((tmp_path / "c").glob("*.npz"))[0]
    entry.write_bytes(entry.read_bytes()[:40])  # a kill during the old non-atomic np.savez
    again, _ = load_split(index, "val", 1.0, 32, cache_dir=tmp_path / "c")
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "is corrupt (BadZipFile); rebuilt" in err
    assert torch.equal(again.voices, first.voices) and torch.equal(again.faces, first.faces)
    load_split(index, "val", 1.0, 32, cache_dir=tmp_path / "c")
    assert capfd.readouterr().err == ""
    assert not list((tmp_path / "c").glob(".*.tmp"))


def test_index_with_relative_roots_still_excludes_the_rejected(tree, tmp_path, monkeypatch, capsys):
    root, _, _, broken = tree
    monkeypatch.chdir(root)
    out = tmp_path / "rel.csv"
    assert main(["index", "--audio-root", "wav", "--face-root", "faces", "--split", "wen", "--out",
                 str(out), "--validate", "--cache-dir", str(tmp_path / "c"), "--workers", "1"]) == 0
    usable = pd.read_csv(out)
    assert not set(broken) & {os.path.abspath(p) for p in usable.path}
    assert usable.path.str.startswith("/").all()
