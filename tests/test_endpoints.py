"""Mechanism endpoints, each on a constructed model whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_config

from bianet_lib.data import synthvox as S
from bianet_lib.data.interference import split_face_masks, split_voice_masks, token_share_2d
from bianet_lib.data.trials import make_matching_trials
from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer
from bianet_lib.experiments import endpoints as E
from bianet_lib.model.network import BIANet

CFG = S.WorldConfig.preset("local", n_train=2, n_val=1, n_test=8, faces_per_id_eval=3,
                           voices_per_id_eval=3, face_size=32, clip_seconds=0.25,
                           face_local_p=0.5, voice_local_p=0.5)


@pytest.fixture(scope="module")
def doses():
    out = S.dose_splits(CFG, 1, "test", E.DOSES)
    assert list(out) == list(E.DOSES)
    base = out[1.0]
    assert S.dose_splits(CFG, 1, "test", (1.0,), base=base)[1.0] is base
    return out


@pytest.fixture(scope="module")
def trials(doses):
    return make_matching_trials(doses[1.0], "vf", 2, 6, seed=0)


class IdentityScorer:
    """Ignores the input: one-hot of the sample's identity, scored by dot product."""

    def __init__(self, n_id: int):
        self.n_id = n_id

    def embed(self, split, modality, batch_size=256):
        meta = split.voice_meta if modality == "voice" else split.face_meta
        return torch.eye(self.n_id)[torch.tensor(meta["identity"].to_numpy())]

    def match_logits(self, query, cands):
        return (cands * query[:, None]).sum(-1)


class FooledScorer(IdentityScorer):
    """Reads its input: the identity one-hot, negated when the sample differs from its clean
    twin. A trial is right iff the query and the true candidate are both clean or both not."""

    def __init__(self, n_id: int, twin):
        super().__init__(n_id)
        self.twin = twin

    def embed(self, split, modality, batch_size=256):
        data, clean = ((split.voices, self.twin.voices) if modality == "voice"
                       else (split.faces, self.twin.faces))
        same = (data == clean).flatten(1).all(1)
        return super().embed(split, modality) * torch.where(same, 1.0, -1.0)[:, None]


def _interfered(split, modality):
    meta = split.voice_meta if modality == "voice" else split.face_meta
    return (meta.local_kind != "none").to_numpy()


def test_attention_mass_known_answers():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True                 # sample 0: the top-left quarter
    share = token_share_2d(masks, (4, 4))   # 2x2-pixel tokens: 4 fully covered tokens
    n = 16
    on = share / share.sum(-1, keepdim=True).clamp(min=1e-9)
    all_on_mask = on[:, None, :].expand(2, n, n).clone()
    mass, base = E.attention_mass_on_mask(all_on_mask, share)
    assert mass[0].item() == pytest.approx(1.0) and base[0].item() == pytest.approx(0.25)
    assert mass[1].item() == 0 and base[1].item() == 0     # no interference, nothing to find
    uniform = torch.full((2, n, n), 1.0 / n)
    mass, base = E.attention_mass_on_mask(uniform, share)
    assert torch.allclose(mass, base)
    off = (1 - (share > 0).float())[:, None, :].expand(2, n, n) * 3.0  # unnormalised, all off
    assert E.attention_mass_on_mask(off, share)[0][0].item() == 0
    # partly covered tokens: soft weighting vs threshold
    part = torch.zeros(1, 4)
    part[0, 0] = 0.5
    a = torch.zeros(1, 4, 4)
    a[0, :, 0] = 1
    assert E.attention_mass_on_mask(a, part)[0].item() == pytest.approx(0.5)
    assert E.attention_mass_on_mask(a, part, threshold=0.5)[0].item() == pytest.approx(1.0)
    assert E.attention_mass_on_mask(a, part, threshold=0.6)[0].item() == 0
    with pytest.raises(ValueError, match="token_share"):
        E.attention_mass_on_mask(uniform, share[:, :4])


def test_bootstrap_resamples_identities():
    values = np.repeat([0.0, 1.0] * 5, 50)   # 10 identities of 50 trials, all spread between them
    clusters = np.repeat(np.arange(10), 50)
    mean, lo, hi = E.bootstrap_mean_ci(values, clusters, n_boot=2000, seed=0)
    assert mean == 0.5 and hi - lo > 0.4     # about 10 independent draws, not 500
    _, lo_iid, hi_iid = E.bootstrap_mean_ci(values, np.arange(500), n_boot=2000, seed=0)
    assert hi_iid - lo_iid < 0.12
    assert E.bootstrap_mean_ci(np.ones(20), np.arange(20) % 4) == (1.0, 1.0, 1.0)


def test_clean_twin_drop_known_answers(doses, trials):
    split, twin = doses[1.0], doses[0.0]
    n_id = split.n_identities
    res = E.clean_twin_drop({"fooled": FooledScorer(n_id, twin), "blind": IdentityScorer(n_id)},
                            split, twin, trials, n_boot=500)
    q_bad = _interfered(split, "voice")[trials.query]
    pos = trials.candidates[np.arange(len(trials)), trials.target]
    p_bad = _interfered(split, "face")[pos]
    expect = (q_bad != p_bad).astype(float)   # exactly one of query / true face interfered
    assert 0 < expect.mean() < 1
    assert np.array_equal(res["per_trial"]["fooled"], expect)
    fooled = res["models"]["fooled"]
    assert fooled["clean_accuracy"] == 1.0 and fooled["accuracy"] == pytest.approx(1 - expect.mean())
    assert fooled["drop"]["mean"] == pytest.approx(expect.mean())
    assert fooled["drop"]["ci"][0] < expect.mean() < fooled["drop"]["ci"][1]
    blind = res["models"]["blind"]
    assert blind["accuracy"] == blind["clean_accuracy"] == 1.0
    assert blind["drop"] == {"mean": 0.0, "ci": [0.0, 0.0]}
    assert res["paired"]["fooled - blind"]["mean"] == pytest.approx(expect.mean())
    assert res["n_identities"] == n_id
    with pytest.raises(ValueError, match="same"):
        other = S.generate_split(S.replace(CFG, n_test=7), 1, "test")
        E.clean_twin_drop({"blind": IdentityScorer(n_id)}, split, other, trials)


def test_dose_response_flat_for_a_blind_model(doses, trials):
    n_id = doses[1.0].n_identities
    blind = E.dose_response(IdentityScorer(n_id), doses, trials, n_boot=200)
    assert blind["doses"] == list(E.DOSES) and blind["accuracy"] == [1.0] * 4
    assert all(x == {"mean": 0.0, "ci": [0.0, 0.0]} for x in blind["loss"])
    # the fooled model loses accuracy as soon as there is interference, the same at any dose
    fooled = E.dose_response(FooledScorer(n_id, doses[0.0]), lambda d: doses[d], trials, n_boot=200)
    acc = fooled["accuracy"]
    assert acc[0] == 1.0 and acc[1] == acc[2] == acc[3] < 0.95
    assert fooled["loss"][3]["mean"] == pytest.approx(1 - acc[3])


def test_neutral_fill(doses):
    s = doses[1.0]
    filled = E.neutral_fill(s)
    fm, vm = split_face_masks(s), split_voice_masks(s)
    assert torch.equal(filled.faces[:, :, ~fm.any(0)], s.faces[:, :, ~fm.any(0)])
    assert torch.equal(torch.where(fm[:, None], 0, filled.faces), torch.where(fm[:, None], 0, s.faces))
    j = int(np.flatnonzero(_interfered(s, "face"))[0])
    inside = filled.faces[j][:, fm[j]]
    keep = s.faces[j][:, ~fm[j]].float().mean(1).round().to(torch.uint8)
    assert torch.equal(inside, keep[:, None].expand_as(inside))   # per-channel mean of the rest
    assert (E.fill_faces(s.faces, fm, "grey").permute(1, 0, 2, 3)[:, fm] == 128).all()
    assert (filled.voices[vm] == 0).all() and torch.equal(filled.voices[~vm], s.voices[~vm])
    assert filled.face_meta is s.face_meta and torch.equal(filled.voice_intervals, s.voice_intervals)
    # filling the same regions of the clean twin gives the same input: the fill erases the
    # interference and nothing else (outside the masks the twin is identical)
    twin = doses[0.0]
    assert fm.any() and vm.any()
    assert torch.equal(E.fill_faces(twin.faces, fm), filled.faces)
    assert torch.equal(E.fill_voices(twin.voices, vm), filled.voices)
    with pytest.raises(ValueError, match="fill mode"):
        E.fill_faces(s.faces, fm, "black")


def test_endpoints_take_the_library_scorers(doses, trials):
    """Integration: an (untrained) BIANet through BIANetScorer and the cosine route; each
    dose split is embedded separately (the scorer caches by split object)."""
    torch.manual_seed(0)
    model = BIANet(tiny_config(clip_seconds=0.25))
    shared: dict = {}
    scorers = {"classifier": BIANetScorer(model, embeddings=shared),
               "cosine": EmbeddingCosineScorer(model, embeddings=shared)}
    res = E.clean_twin_drop(scorers, doses[1.0], doses[0.0], trials, n_boot=100)
    for name in scorers:
        drop = res["per_trial"][name]
        assert drop.shape == (len(trials),) and set(np.unique(drop)) <= {-1.0, 0.0, 1.0}
        m = res["models"][name]
        assert m["accuracy"] - m["clean_accuracy"] == pytest.approx(-drop.mean())
    # the interfered and clean splits really were embedded apart
    assert not torch.equal(scorers["cosine"].embed(doses[1.0], "face"), scorers["cosine"].embed(doses[0.0], "face"))
    dr = E.dose_response(scorers["cosine"], doses, trials, n_boot=100)
    assert len(dr["accuracy"]) == 4 and dr["loss"][0] == {"mean": 0.0, "ci": [0.0, 0.0]}
