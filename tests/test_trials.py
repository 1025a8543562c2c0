"""Trial lists: right positives, distinct negatives, uniform target slot, balance, round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bianet_lib.data.trials import (
    MatchingTrials,
    load_trials,
    make_matching_trials,
    make_verification_trials,
    read_wen_list,
    save_trials,
)
from bianet_lib.data.types import SplitData


def _split(n_id=12, per=4, name="test", offset=0) -> SplitData:
    """A split with per faces and voices per identity, two videos each, alternating gender."""
    ids = np.repeat(np.arange(n_id), per)
    videos = [f"{name}{i}_v{j % 2}" for i, j in zip(ids, np.tile(np.arange(per), n_id), strict=True)]
    meta = pd.DataFrame({"identity": ids, "video": videos})
    return SplitData(name, torch.zeros(len(ids), 3, 4, 4, dtype=torch.uint8),
                     torch.zeros(len(ids), 10), meta.copy(), meta.copy(),
                     pd.DataFrame({"name": [f"{name}_{i + offset}" for i in range(n_id)],
                                   "gender": ["m", "f"] * (n_id // 2)}))


@pytest.mark.parametrize("direction", ["vf", "fv"])
def test_matching_trials_are_correct(direction):
    s = _split()
    t = make_matching_trials(s, direction, k=5, n_per_identity=20, seed=0)
    qm, cm = (s.voice_meta, s.face_meta) if direction == "vf" else (s.face_meta, s.voice_meta)
    q_id = qm.identity.to_numpy()[t.query]
    c_id = cm.identity.to_numpy()[t.candidates]
    assert len(t) == 240 and t.k == 5 and t.direction == direction
    assert (c_id[np.arange(len(t)), t.target] == q_id).all()          # positive is the identity
    assert ((c_id == q_id[:, None]).sum(1) == 1).all()                 # negatives are not
    assert all(len(set(row)) == 5 for row in c_id)                     # distinct identities


def test_target_slot_is_uniform():
    t = make_matching_trials(_split(), "vf", k=4, n_per_identity=200, seed=1)
    counts = np.bincount(t.target, minlength=4)
    expected = len(t) / 4
    assert ((counts - expected) ** 2 / expected).sum() < 16.3  # chi-square, 3 dof, p = 0.001


def test_gender_matched_and_other_video():
    s = _split()
    t = make_matching_trials(s, "vf", k=3, n_per_identity=10, seed=0, gender_matched=True,
                             positive_other_video=True)
    g = s.identities.gender.to_numpy()
    assert (g[s.face_meta.identity.to_numpy()[t.candidates]] ==
            g[s.voice_meta.identity.to_numpy()[t.query]][:, None]).all()
    pos = t.candidates[np.arange(len(t)), t.target]
    assert (s.face_meta.video.to_numpy()[pos] != s.voice_meta.video.to_numpy()[t.query]).all()
    with pytest.raises(ValueError, match="negative identities"):
        make_matching_trials(s, "vf", k=8, n_per_identity=1, seed=0, gender_matched=True)


def test_trials_stay_inside_their_split():
    train, test = _split(20, 3, "train"), _split(6, 3, "test", offset=100)
    t = make_matching_trials(test, "vf", k=5, n_per_identity=5, seed=0)
    assert t.query.max() < len(test.voices) and t.candidates.max() < len(test.faces)
    names = set(test.identities.name.to_numpy()[test.face_meta.identity.to_numpy()[t.candidates.ravel()]])
    assert names <= set(test.identities.name) and not names & set(train.identities.name)


def test_reproducible_from_seed():
    s = _split()
    a, b = (make_matching_trials(s, "vf", 3, 5, seed=4) for _ in range(2))
    c = make_matching_trials(s, "vf", 3, 5, seed=5)
    assert np.array_equal(a.candidates, b.candidates) and np.array_equal(a.target, b.target)
    assert not np.array_equal(a.candidates, c.candidates)


def test_verification_balanced_and_correct():
    s = _split()
    v = make_verification_trials(s, 400, seed=0)
    vi, fi = s.voice_meta.identity.to_numpy()[v.voice], s.face_meta.identity.to_numpy()[v.face]
    assert v.same.sum() == 200 and len(v) == 400
    assert (vi[v.same] == fi[v.same]).all() and (vi[~v.same] != fi[~v.same]).all()
    assert not v.same[:200].all()  # shuffled, not all positives first
    w = make_verification_trials(s, 400, seed=0)
    assert np.array_equal(v.voice, w.voice) and np.array_equal(v.same, w.same)
    with pytest.raises(ValueError, match="even"):
        make_verification_trials(s, 7, seed=0)


def test_text_round_trip(tmp_path):
    s = _split()
    t = make_matching_trials(s, "fv", 3, 4, seed=0)
    save_trials(t, tmp_path / "m.txt")
    assert (tmp_path / "m.txt").read_text().startswith("# matching direction=fv k=3")
    u = load_trials(tmp_path / "m.txt")
    assert isinstance(u, MatchingTrials) and u.direction == "fv"
    assert np.array_equal(u.query, t.query) and np.array_equal(u.candidates, t.candidates)
    assert np.array_equal(u.target, t.target)
    v = make_verification_trials(s, 10, seed=0)
    save_trials(v, tmp_path / "v.txt")
    w = load_trials(tmp_path / "v.txt")
    assert np.array_equal(w.same, v.same) and np.array_equal(w.face, v.face)
    (tmp_path / "bad.txt").write_text("hello\n1 2 3\n")
    with pytest.raises(ValueError, match="bad.txt"):
        load_trials(tmp_path / "bad.txt")


def test_read_wen_list(tmp_path):
    voices = {f"v{i}.wav": i for i in range(50)}
    faces = {f"f{i}.jpg": i for i in range(50)}
    lines = [f"v{i}.wav f{i}.jpg,f{(i + 1) % 50}.jpg f{(i + 2) % 50}.jpg" for i in range(50)]
    (tmp_path / "wen.txt").write_text("\n".join(lines) + "\n\n")
    t = read_wen_list(tmp_path / "wen.txt", voices, faces, "vf", seed=0)
    assert len(t) == 50 and t.k == 3
    assert (t.candidates[np.arange(50), t.target] == t.query).all()     # positive tracked
    assert len(set(t.target.tolist())) == 3                             # not always one slot
    (tmp_path / "bad.txt").write_text("v1.wav f1.jpg f999.jpg\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: path 'f999.jpg'"):
        read_wen_list(tmp_path / "bad.txt", voices, faces, "vf", seed=0)
