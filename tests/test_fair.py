"""Issue 25: the fair test-bed -- a world whose interference covers at most a quarter of an
affected sample's tokens, masks in the batches of the arms that use them, the oracle and
supervised-attention arms, their grids and their endpoints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bianet_lib.config import load_config
from bianet_lib.data import synthvox as S
from bianet_lib.data.interference import TokenMasks, token_share_1d, token_share_2d
from bianet_lib.data.sources import world_cache_path, world_config
from bianet_lib.experiments import grids, stats
from bianet_lib.experiments import world as W
from bianet_lib.model.encoders import map_grids
from bianet_lib.model.losses import attention_supervision_loss
from bianet_lib.model.network import BIANet, masked_mean_pool

SMALL = ["world_n_train=12", "world_n_val=4", "world_n_test=12", "world_per_id_train=2", "world_per_id_eval=6",
         "cache_dir=/nonexistent-cache"]
TINY = [*grids.SMOKE_BASE, "world_preset=fair", "cache_dir=/nonexistent-cache"]


def fair_cfg(*extra):
    return load_config("cpu-small", overrides=[*grids._fair_base(), *SMALL, *extra])


def tiny_cfg(arm: str, *extra):
    return load_config("cpu-small", overrides=[*TINY, *grids.FAIR_VARIANTS[arm], *extra])


# --- 1. the world ---------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", W.FAIR_CALIBRATION_SETTINGS)
def test_token_coverage_at_most_a_quarter_at_every_setting(setting):
    """Measured on the token grid the model's encoders really produce (run on the split's own
    samples), every affected sample has <= 25% of its tokens interfered, whole tokens only, and
    the setting changes how many samples carry it, never how much of one. Fails on the old
    world's rule (local_scale multiplying the covered share: 2 x 0.25 = 50% at setting 2) and
    on boxes not snapped to the tokens (shares strictly between 0 and 1)."""
    cfg = fair_cfg(f"world_local_scale={setting}")
    test = S.generate_split(world_config(cfg), 0, "test")
    model = BIANet(cfg).eval()
    with torch.no_grad():
        fmap = model.face_encoder(test.faces[:8].float() / 127.5 - 1)
        vmap = model.voice_encoder(test.voices[:8])
    assert (tuple(fmap.shape[-2:]), tuple(vmap.shape[-2:])) == map_grids(cfg) == ((4, 4), (1, 8))
    from bianet_lib.data.interference import split_face_masks, split_voice_masks

    face = token_share_2d(split_face_masks(test), tuple(fmap.shape[-2:]))
    voice = token_share_1d(split_voice_masks(test), vmap.shape[-1])
    for share in (face, voice):
        assert set(torch.unique(share).tolist()) <= {0.0, 1.0}  # whole tokens
        cov = (share > 0).float().mean(1)
        affected = cov[cov > 0]
        assert len(affected) > 0 and float(affected.max()) <= W.FAIR_WORLD_CONSTRAINTS["max_token_coverage"]
        assert float(affected.min()) == 0.25  # the same coverage at every setting: 4 of 16, 2 of 8
    cov = W.token_coverage(test, cfg)
    p = min(1.0, 0.5 * setting)
    for m in ("face", "voice"):
        assert abs((cov[m] > 0).mean() - p) <= 0.2  # the knob moves the probability (p = 0.5 x setting)


def test_fair_world_content_and_clean_twin():
    """Another identity's face region / voice, and dose 0 is the clean twin (no boxes, no bursts)."""
    wc = world_config(fair_cfg("world_local_scale=1.5"))
    test = S.generate_split(wc, 0, "test")
    hit = test.face_meta["local_kind"] != "none"
    assert set(test.face_meta.loc[hit, "local_kind"]) == {"face"}
    assert (test.face_meta.loc[hit, "local_source"] != test.face_meta.loc[hit, "identity"]).all()
    assert set(test.voice_meta.loc[test.voice_meta["local_kind"] != "none", "local_kind"]) == {"speaker"}
    twin = S.regenerate_split(wc, 0, "test", 0.0)
    assert int(twin.face_boxes[:, 2].sub(twin.face_boxes[:, 0]).abs().sum()) == 0
    same = ~torch.tensor(hit.to_numpy())
    assert torch.equal(twin.faces[same], test.faces[same])  # unaffected samples are their own twins


def test_fair_preset_needs_the_models_grid():
    with pytest.raises(ValueError, match="face_token_grid"):
        S.WorldConfig.preset("fair").validate()


def test_existing_worlds_keep_their_cache_files():
    """The new WorldConfig fields stay out of the cache key at their defaults: the file names are
    main's before issue 25 (computed there). Fails when the fields enter every key."""
    assert world_cache_path(load_config("cpu-small", overrides=["cache_dir=/x"])).name == "world-df489b3e801774b7.pt"
    testbed = load_config("cpu-small", overrides=[*grids.REDUCED_BASE, *W.TESTBED_WORLD, "world_local_scale=2.5",
                                                  "cache_dir=/x"])
    assert world_cache_path(testbed).name == "world-0b04e0c0c3bd80e4.pt"


# --- 2. masks in batches, only for the arms that use them -----------------------------------------
@pytest.fixture(scope="module")
def tiny_world():
    cfg = tiny_cfg("baseline", "world_local_scale=2.0")
    wc = world_config(cfg)
    return {s: S.generate_split(wc, 0, s) for s in S.SPLITS}


@pytest.mark.parametrize("arm", grids.FAIR_ARMS)
def test_masks_reach_the_model_only_for_oracle_and_supervised(arm, tiny_world, tmp_path):
    """One epoch of each arm: train_step gets masks only for oracle / supervised, the model's
    forward (and, at validation, embed_*) only for the oracle. Fails if the batches carry masks
    for every arm, or the model gets them in the supervised arm."""
    from bianet_lib.engine.trainer import Trainer

    cfg = tiny_cfg(arm, "world_local_scale=2.0")
    tr = Trainer(cfg, tiny_world["train"], tiny_world["val"], tmp_path, progress=False)
    seen = {"step": [], "forward": [], "embed": []}
    step, forward, embed = tr._step, tr.model.forward, tr.model.embed_faces  # _step: the epoch's hot path

    def spy_step(v, f, i, masks=None):
        seen["step"].append(masks)
        return step(v, f, i, masks)

    def spy_forward(v, f, masks=None):
        seen["forward"].append(masks)
        return forward(v, f, masks)

    def spy_embed(faces, mask=None):
        seen["embed"].append(mask)
        return embed(faces, mask)

    tr._step, tr.model.forward, tr.model.embed_faces = spy_step, spy_forward, spy_embed
    tr._run_epoch()
    uses = arm in ("oracle", "supervised")
    assert seen["step"] and all((m is not None) == uses for m in seen["step"])
    assert seen["forward"] and all((m is not None) == (arm == "oracle") for m in seen["forward"])
    assert seen["embed"] and all((m is not None) == (arm == "oracle") for m in seen["embed"])
    if uses:
        vm, fm = seen["step"][0]
        assert vm.dtype == fm.dtype == torch.bool and fm.shape == (cfg.batch_size, 4) and vm.shape[0] == cfg.batch_size


def test_a_flipped_faces_mask_is_flipped(tiny_world):
    """Training flips faces horizontally: the batch's mask must follow. Fails if the mask of
    the unflipped face is used."""
    split = tiny_world["train"]
    tm = TokenMasks(split, (2, 2), (1, 4))
    b = split.face_boxes
    one_side = torch.nonzero((b[:, 2] > b[:, 0]) & ((b[:, 1] == 0) | (b[:, 3] == split.faces.shape[-1]))).flatten()
    i = int(one_side[0])
    plain, flipped = tm.faces([i]), tm.faces([i], [True])
    assert not torch.equal(plain, flipped)
    assert torch.equal(flipped.view(2, 2), plain.view(2, 2).flip(-1))
    from bianet_lib.data.batches import read_in_memory
    from bianet_lib.data.sampler import BatchPlan

    v = int(torch.nonzero(split.voice_intervals[:, 0, 1] > split.voice_intervals[:, 0, 0]).flatten()[0])
    batch = read_in_memory(split, BatchPlan([v, v], [i, i], [0, 1], [False, True]), tm)
    assert torch.equal(batch.face_mask, torch.cat([plain, flipped])) and torch.equal(batch.voice_mask, tm.voices([v, v]))
    assert read_in_memory(split, BatchPlan([v], [i], [0], [True])).face_mask is None


# --- 3. the oracle arm ------------------------------------------------------------------------------
def test_masked_pooling_is_the_mean_over_clean_tokens():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    mask = torch.tensor([[True, False, False, True], [True, True, True, True]])
    out = masked_mean_pool(x, mask)
    rows = x.flatten(2)
    assert torch.allclose(out[0], rows[0][:, [1, 2]].mean(1))
    assert torch.allclose(out[1], rows[1].mean(1))  # every token masked: all kept


def test_oracle_embedding_ignores_interfered_tokens():
    """Changing an interfered token's features leaves the oracle's embedding unchanged, and an
    unmasked one changes it. Fails if the mask is dropped or inverted."""
    model = BIANet(tiny_cfg("oracle")).eval()
    x = torch.randn(2, model.face_encoder.out_channels, 2, 2)
    mask = torch.tensor([[False, True, False, False], [False, False, False, True]])
    ref = model._embed(x, None, None, mask).positive
    y = x.clone()
    y[0, :, 0, 1] += 5.0
    y[1, :, 1, 1] -= 5.0
    assert torch.allclose(model._embed(y, None, None, mask).positive, ref)
    y[0, :, 0, 0] += 5.0
    assert not torch.allclose(model._embed(y, None, None, mask).positive[0], ref[0])


def test_scorer_feeds_the_oracle_its_test_masks(tiny_world):
    """The evaluator's scorer gives the oracle arm the split's own masks (a sample with
    interference embeds as with the mask, not without), and no other arm any mask."""
    from bianet_lib.engine.scoring import BIANetScorer

    test = tiny_world["test"]
    torch.manual_seed(0)
    model = BIANet(tiny_cfg("oracle")).eval()
    emb = BIANetScorer(model).embed(test, "face")[:, 0]
    masks = TokenMasks(test, *map_grids(model.cfg)).faces(range(len(test.faces)))
    with torch.no_grad():
        want = model.embed_faces(test.faces, masks).positive
        plain = model.embed_faces(test.faces).positive
    assert torch.allclose(emb, want, atol=1e-6)
    hit = masks.any(1)
    assert hit.any() and not torch.allclose(emb[hit], plain[hit], atol=1e-4)
    base = BIANet(tiny_cfg("baseline")).eval()
    calls = []
    orig = base.embed_faces
    base.embed_faces = lambda f, *a: calls.append(a) or orig(f, *a)
    BIANetScorer(base).embed(test, "face")
    assert calls and all(a == () for a in calls)


# --- 4. the supervised-attention arm ------------------------------------------------------------------
def test_attention_supervision_reaches_pia_and_nia():
    from bianet_lib.model.attention import BidirectionalIntervention

    torch.manual_seed(0)
    mod = BidirectionalIntervention(16, 8, axis="tokens", center=True, pia_norm="layer")
    out = mod(torch.randn(4, 16, 2, 2))
    mask = torch.tensor([[True, False, False, False]] * 4)
    loss = attention_supervision_loss((out, None), (mask, None))
    loss.backward()
    for p in (mod.query.weight, mod.key.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.threshold.parameters())


def test_attention_supervision_prefers_pia_off_and_nia_on_the_mask():
    """Constructed: the loss is lower when PIA's mass is off the mask and NIA's on it."""
    from types import SimpleNamespace

    mask = torch.tensor([[True, False, False, False]])
    on = torch.tensor([[[0.85, 0.05, 0.05, 0.05]] * 4])
    off = torch.tensor([[[0.01, 0.33, 0.33, 0.33]] * 4])

    def loss(pia, nia):
        return float(attention_supervision_loss((SimpleNamespace(positive_attention=pia, negative_attention=nia,
                                                                 affinity=pia),), (mask,)))
    assert loss(off, on) < loss(on, on) < loss(on, off)
    assert loss(off, on) < loss(off, off) < loss(on, off)
    # no sample with interference: 0
    none = attention_supervision_loss((SimpleNamespace(positive_attention=on, negative_attention=on, affinity=on),),
                                      (torch.zeros(1, 4, dtype=torch.bool),))
    assert float(none) == 0.0


def test_supervised_step_adds_the_weighted_term(tiny_world, tmp_path):
    from bianet_lib.engine.trainer import Trainer

    cfg = tiny_cfg("supervised", "world_local_scale=2.0")
    tr = Trainer(cfg, tiny_world["train"], tiny_world["val"], tmp_path, progress=False)
    batch = next(iter(tr.batches.epoch()))
    out = tr.train_step(batch.voices, batch.faces, batch.identity, masks=(batch.voice_mask, batch.face_mask))
    assert out["attn_supervision"] > 0
    rest = (cfg.w_match * (out["match_vf"] + out["match_fv"]) / 2 + cfg.w_metric * out["metric"]
            + out["w_adv"] * out["adversarial"] + cfg.w_identity * out["identity"])
    assert out["loss"] == pytest.approx(rest + cfg.w_attn_supervision * out["attn_supervision"], rel=1e-5)


@pytest.mark.parametrize("bad, field", [(["use_pia=false", "use_nia=false", "token_masks=supervised"], "token_masks"),
                                        (["token_masks=oracle"], "token_masks"),
                                        (["w_attn_supervision=1.0"], "w_attn_supervision")])
def test_mask_arms_validate(bad, field):
    with pytest.raises(ValueError, match=field):
        load_config("cpu-small", overrides=["world_preset=fair", *bad])
    with pytest.raises(ValueError, match="token_masks"):
        load_config("cpu-small", overrides=["use_pia=false", "use_nia=false", "token_masks=oracle"])  # no masks


# --- 5. grids ---------------------------------------------------------------------------------------
def test_fair_grids(monkeypatch):
    from bianet_lib.experiments.runner import run_grid

    cal = grids.get_grid("fair-calibration")
    assert [r.overrides[-1] for r in cal.runs] == [f"world_local_scale={s}" for s in W.FAIR_CALIBRATION_SETTINGS]
    assert {r.seed for r in cal.runs} == {0} and all(r.name.startswith("baseline") for r in cal.runs)
    assert W.FAIR_CALIBRATED is None and grids.fair_runs() == []
    with pytest.raises(ValueError, match="FAIR_CALIBRATED"):
        run_grid("fair", "/nonexistent-results")
    if W.FAIR_HEADROOM_WORLD is None:
        assert grids.fair_headroom_runs() == []
        with pytest.raises(ValueError, match="FAIR_HEADROOM_WORLD"):
            run_grid("fair-headroom", "/nonexistent-results")
    monkeypatch.setattr(W, "FAIR_HEADROOM_WORLD", ("fair", 2.0))
    check = grids.fair_headroom_runs()
    assert [(r.name, r.seed) for r in check] == [(a, s) for s in range(5) for a in ("baseline", "oracle")]
    assert grids.get_grid("fair-headroom").store == "fair"
    monkeypatch.setattr(W, "FAIR_CALIBRATED", 1.5)
    assert grids.fair_runs() == []  # the world is part of the calibration
    monkeypatch.setattr(W, "FAIR_CALIBRATED_WORLD", "fair-centre")
    runs = grids.fair_runs()
    assert len(runs) == 25 and {r.name for r in runs} == set(grids.FAIR_ARMS)
    assert {r.seed for r in runs} == set(range(5))
    fair = grids.get_grid("fair")
    for r in runs[:5]:
        cfg = fair.config(r)
        assert cfg.world_preset == "fair-centre" and cfg.world_local_scale == 1.5 and cfg.epochs == W.FAIR_EPOCHS
        assert cfg.channels_last
        assert cfg.token_masks == {"oracle": "oracle", "supervised": "supervised"}.get(r.name, "none")
    monkeypatch.setattr(W, "FAIR_CALIBRATED_WORLD", "fair")
    monkeypatch.setattr(W, "FAIR_CALIBRATED", 2.0)  # the check's world kept: the grid reuses its runs
    assert {r.run_id for r in check} <= {r.run_id for r in grids.fair_runs()}
    assert {(r.run_id, r.overrides) for r in check} <= {(r.run_id, r.overrides) for r in grids.fair_runs()}
    monkeypatch.setattr(W, "FAIR_EXPLORATORY_WORLD", None)
    assert grids.fair_exploratory_runs() == []
    with pytest.raises(ValueError, match="FAIR_EXPLORATORY_WORLD"):
        run_grid("fair-exploratory", "/nonexistent-results")
    monkeypatch.setattr(W, "FAIR_EXPLORATORY_WORLD", ("fair", 2.0))
    explore = grids.fair_exploratory_runs()  # the method arms, seed-major, in the check's store and world
    assert [(r.name, r.seed) for r in explore] == [(a, s) for s in range(5) for a in ("bianet", "supervised", "control")]
    assert grids.get_grid("fair-exploratory").store == "fair"
    assert {(r.run_id, r.overrides) for r in explore} <= {(r.run_id, r.overrides) for r in grids.fair_runs()}


def test_stage2_grid_and_worlds():
    """Stage 2 runs the baseline alone, seed 0, in each world of FAIR_STAGE2 at its setting; every
    such world keeps the coverage (checked on real samples) and differs from the stage-1 world only
    in the face box's content or place (the identities, the clean twins, the voices stay)."""
    cal = grids.get_grid("fair-calibration-2")
    assert [(r.name, r.seed) for r in cal.runs] == [(f"baseline_{w}", 0) for w, _ in W.FAIR_STAGE2]
    wc1 = world_config(fair_cfg("world_local_scale=2.0"))
    t1 = S.generate_split(wc1, 0, "test")
    for r, (w, setting) in zip(cal.runs, W.FAIR_STAGE2, strict=True):
        cfg = cal.config(r)
        assert (cfg.world_preset, cfg.world_local_scale, cfg.token_masks) == (w, setting, "none")
        wc = world_config(fair_cfg(f"world_preset={w}", f"world_local_scale={setting}"))
        test = S.generate_split(wc, 0, "test")
        cov = W.token_coverage(test, cfg)
        for m in ("face", "voice"):
            assert cov[m].min() == cov[m].max() == 0.25  # p = 1: every sample, a quarter of its tokens
        assert torch.equal(test.voices, t1.voices)
        assert torch.equal(S.regenerate_split(wc, 0, "test", 0.0).faces, S.regenerate_split(wc1, 0, "test", 0.0).faces)
        boxes = test.face_boxes.numpy()
        if wc.face_local_place == "centre":
            assert (boxes == [8, 8, 24, 24]).all()
        else:
            assert len({tuple(b) for b in boxes}) > 1
        inside = torch.zeros_like(test.faces, dtype=torch.bool)
        for k, (y0, x0, y1, x1) in enumerate(boxes):
            inside[k, :, y0:y1, x0:x1] = True
        assert not torch.equal(test.faces[inside], t1.faces[inside])
        if wc.face_local_place == "anywhere":  # same place as stage 1's box: only its content changed
            assert torch.equal(test.faces[~inside], t1.faces[~inside])


def test_salient_box_content():
    """fit_into_box puts the whole image, downscaled, into the box and leaves the rest; box_contrast
    stretches about the box's mean and clips."""
    from bianet_lib.data import synthvox_faces as F

    img = np.zeros((32, 32, 3), np.float32)
    img[:16] = 200.0  # top half bright
    out = F.fit_into_box(img, (8, 8, 24, 24))
    assert (out[:8] == 200).all() and (out[24:] == 0).all()
    assert out[8:12, 8:24].mean() > 190 and out[20:24, 8:24].mean() < 10  # the image, at half size
    flat = np.full((32, 32, 3), 100.0, np.float32)
    flat[0, 0] = 140.0
    c = F.box_contrast(flat, (0, 0, 2, 2), 3.0)
    m = (140 + 3 * 100) / 4
    assert np.allclose(c[0, 0], m + 3 * (140 - m)) and np.allclose(c[0, 1], m + 3 * (100 - m))
    assert (c[2:] == 100).all() and (c[:, 2:] == 100).all()
    assert F.box_contrast(np.full((4, 4, 3), 250.0, np.float32) + np.eye(4)[..., None] * 5, (0, 0, 4, 4), 8.0).max() == 255


def test_choose_fair_world():
    rows = [{"world": w, "scale": 2.0, "vf_drop": a, "fv_drop": b} for w, a, b in
            (("fair-whole-c3", 0.09, 0.2), ("fair-centre", 0.12, 0.11), ("fair-centre-c3", 0.3, 0.3))]
    cov = {c: 0.25 for c in W.FAIR_STAGE2}
    assert W.choose_fair_world(rows, cov) == ("fair-centre", 2.0)  # the first in order that reaches it
    rows[0]["vf_drop"] = 0.10
    assert W.choose_fair_world(rows, cov) == ("fair-whole-c3", 2.0)
    assert W.choose_fair_world(rows, {**cov, ("fair-whole-c3", 2.0): 0.5}) == ("fair-centre", 2.0)
    assert W.choose_fair_world(rows[1:], cov) is None  # an untried earlier world blocks the later ones
    rows[1]["fv_drop"] = 0.05
    rows[2]["vf_drop"] = 0.0
    assert W.choose_fair_world(rows[1:], cov, candidates=W.FAIR_STAGE2[1:]) is None


def test_choose_fair_setting():
    rows = [{"scale": s, "vf_drop": d1, "fv_drop": d2} for s, d1, d2 in
            ((1.0, 0.12, 0.13), (1.5, 0.11, 0.2), (2.0, 0.3, 0.3))]
    assert W.choose_fair_setting(rows, {1.0: 0.25, 1.5: 0.25, 2.0: 0.25}) == 1.0
    assert W.choose_fair_setting(rows, {1.0: 0.5, 1.5: 0.25, 2.0: 0.25}) == 1.5  # coverage broken at 1
    rows[1]["vf_drop"] = 0.09
    assert W.choose_fair_setting(rows, {1.0: 0.5, 1.5: 0.25, 2.0: 0.25}) == 2.0
    assert W.choose_fair_setting(rows[:2], {1.0: 0.5, 1.5: 0.25}) is None


# --- 6. endpoints -------------------------------------------------------------------------------------
def test_headroom_recovered_known_answer():
    """Baseline drop 0.2, oracle 0, arm 0.1 on every seed: half the headroom, on every seed and
    in every draw. Fails if the ratio is inverted or unpaired."""
    t = 200
    clusters = np.repeat(np.arange(40), 5)
    rng = np.random.default_rng(0)

    def drops(rate):  # exactly `rate` of the trials dropped, per seed
        return np.stack([rng.permutation((np.arange(t) < rate * t).astype(float)) for _ in range(3)])
    base, arm, oracle = drops(0.2), drops(0.1), drops(0.0)
    r = stats.headroom_recovered(base, arm, oracle, clusters, n_boot=500)
    assert r["recovered"] == pytest.approx(0.5) and r["per_seed"] == pytest.approx([0.5] * 3)
    assert r["headroom"] == pytest.approx(0.2) and r["ci"][0] < 0.5 < r["ci"][1] and r["no_headroom_share"] == 0
    assert stats.headroom_recovered(base, oracle, oracle, clusters, n_boot=200)["recovered"] == pytest.approx(1.0)
    none = stats.headroom_recovered(base, arm, base, clusters, n_boot=200)
    assert none["recovered"] is None and none["no_headroom_share"] == 1.0


def test_attention_shift_known_answer_and_zero_on_identical_twins(tiny_world):
    from bianet_lib.experiments.endpoints import attention_shift, paired_attention_shifts

    r = attention_shift([0.5, 0.4, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25], [0, 0, 1, 1], n_boot=200)
    assert r["mean"] == pytest.approx(0.1) and r["n"] == 4 and r["ci"][0] <= 0.1 <= r["ci"][1]
    torch.manual_seed(0)
    model = BIANet(tiny_cfg("bianet")).eval()
    test = tiny_world["test"]
    same = paired_attention_shifts(model, test, test, n_boot=100)
    assert set(same) == {"face", "voice"} and set(same["face"]) == {"pia", "nia"}
    assert all(v["mean"] == 0 and v["n"] > 0 for m in same.values() for v in m.values())
    assert paired_attention_shifts(BIANet(tiny_cfg("baseline")), test, test) == {}


def test_fair_outcome():
    def rows(improving):
        return [{"comparison": f"{a} - {b}", "endpoint": "clean_twin_drop", "direction": d,
                 "diff": -0.05 if (a, b) in improving else 0.0, "significant": (a, b) in improving}
                for a, b in (("oracle", "baseline"), ("bianet", "baseline"), ("supervised", "baseline"),
                             ("supervised", "bianet"), ("bianet", "control")) for d in W.DIRECTIONS]
    assert stats.fair_outcome(rows(set())) == "no_headroom"
    assert stats.fair_outcome(rows({("oracle", "baseline"), ("supervised", "baseline")})) == "only_supervised_takes_headroom"
    assert stats.fair_outcome(rows({("oracle", "baseline"), ("bianet", "baseline"), ("bianet", "control")})) \
        == "bianet_takes_headroom"
    assert stats.fair_outcome(rows({("oracle", "baseline")})) == "other"


def test_fair_exploratory_reading_is_decided_in_fv_alone():
    def rows(improving_fv, improving_vf=frozenset()):
        return [{"comparison": f"{a} - {b}", "endpoint": "clean_twin_drop", "direction": d,
                 "diff": -0.05 if (a, b) in (improving_fv if d == "fv" else improving_vf) else 0.0,
                 "significant": (a, b) in (improving_fv if d == "fv" else improving_vf)}
                for a, b in (("bianet", "baseline"), ("supervised", "baseline"), ("supervised", "bianet"),
                             ("bianet", "control")) for d in W.DIRECTIONS]
    assert stats.fair_exploratory_reading(rows(set())) == "none_takes_headroom"
    assert stats.fair_exploratory_reading(rows(set(), {("bianet", "baseline")})) == "none_takes_headroom"  # V-F not read
    assert stats.fair_exploratory_reading(rows({("bianet", "baseline"), ("bianet", "control")})) == "bianet_takes_headroom"
    assert stats.fair_exploratory_reading(rows({("supervised", "baseline")})) == "only_supervised_takes_headroom"
    assert stats.fair_exploratory_reading(rows({("bianet", "baseline")})) == "other"  # not against the control
    up = rows({("bianet", "baseline"), ("bianet", "control")})
    for r in up:
        r["diff"] = -r["diff"]  # significant in the wrong direction: a larger drop takes nothing
    assert stats.fair_exploratory_reading(up) == "none_takes_headroom"


def test_shift_sentence_counts_pairs_whose_seeds_agree():
    from bianet_lib.reports.fair import shift_sentence

    rows = [{"arm": "bianet", "modality": "face", "branch": "pia", "mean": -0.04, "lo": -0.08, "hi": -0.01},
            {"arm": "bianet", "modality": "voice", "branch": "pia", "mean": -0.02, "lo": -0.05, "hi": +0.01},
            {"arm": "bianet", "modality": "face", "branch": "nia", "mean": +0.01, "lo": -0.01, "hi": +0.02},
            {"arm": "supervised", "modality": "voice", "branch": "nia", "mean": +0.43, "lo": +0.41, "hi": +0.46}]
    text = shift_sentence(rows)
    assert "leaves the interfered tokens in 1 of 2 arm-modality pairs and NIA's reaches them in 1 of 2" in text
    assert "largest NIA shift +0.430, supervised, voice" in text
    assert shift_sentence([r for r in rows if r["branch"] == "pia"]) == ""


def test_branch_comparison_known_answer():
    """Constructed per-trial bits: supervised's -z_neg alone is right on every trial, BIANet's on
    none, on 2 seeds of 40 trials over 10 identities: the difference is +1 with a degenerate
    interval, significant after Holm; equal bits give 0 and "unchanged"."""
    from bianet_lib.experiments.bits import pack_bits

    def rec(seed, value):
        hit = np.full(40, value, dtype=bool)
        b = {"n_trials": 40, "bits": {"minus_z_neg": pack_bits(hit)}, "z": 0.5, "z_pos": 0.5,
             "minus_z_neg": float(value), "corr_dz_pos_neg": -0.5}
        return {"seed": seed, "endpoints": {"branches": {d: b for d in W.DIRECTIONS}}}

    clusters = {d: np.repeat(np.arange(10), 4) for d in W.DIRECTIONS}
    records = {"supervised": [rec(0, True), rec(1, True)], "bianet": [rec(0, False), rec(1, False), rec(2, False)]}
    rows = stats.branch_comparison(records, clusters, n_boot=200)
    assert [r["diff"] for r in rows] == [1.0, 1.0] and all(r["ci"] == [1.0, 1.0] for r in rows)
    assert all(r["seeds"] == [2, 2] for r in rows)  # seed 2 has no supervised twin: left out
    assert stats.branch_reading(rows) == "changes"
    records["supervised"] = [rec(0, False), rec(1, False)]
    rows = stats.branch_comparison(records, clusters, n_boot=200)
    assert [r["diff"] for r in rows] == [0.0, 0.0] and stats.branch_reading(rows) == "unchanged"
    assert stats.branch_comparison({"bianet": records["bianet"]}, clusters) == [] and stats.branch_reading([]) is None
    table = stats.branch_table(records)
    assert {(r["arm"], r["seeds"]) for r in table} == {("supervised", 2), ("bianet", 3)}


def test_a_fair_grid_records_the_new_endpoints_and_the_family_analyses(monkeypatch, tmp_path):
    """End to end on a tiny fair world: every arm's record holds the endpoints (the oracle's
    computed with its test masks), the paired attention shift for the arms with PIA/NIA only, and
    the family-level analyses (headroom recovered, Holm over FAIR_COMPARISONS, the outcome) run."""
    import json

    from bianet_lib.experiments import runner
    from bianet_lib.experiments.bits import unpack_bits
    from bianet_lib.experiments.preregistration import (
        FAIR_COMPARISONS,
        FAIR_EXPLORATORY_COMPARISONS,
        FAIR_OUTCOMES,
    )
    from bianet_lib.experiments.records import clusters_for, load_records

    monkeypatch.setenv("BIANET_CACHE", str(tmp_path / "cache"))
    base = [*grids.SMOKE_BASE, "world_preset=fair", "world_n_test=8", "world_per_id_eval=4", "world_local_scale=2.0"]
    arms = ("baseline", "oracle", "bianet", "supervised", "control")
    grid = grids.Grid("tiny-fair", [grids.Run(a, tuple(grids.FAIR_VARIANTS[a]), s) for s in (0,) for a in arms],
                      "cpu-small", base)
    monkeypatch.setitem(grids.GRIDS, "tiny-fair", grid)
    runner.run_grid("tiny-fair", tmp_path / "results", progress=False)
    out = tmp_path / "results" / "tiny-fair"
    recs = {a: json.loads((out / f"{a}__s0.json").read_text()) for a in arms}
    for a, rec in recs.items():
        assert set(rec["endpoints"]["directions"]) == {"vf", "fv"}, a
        has_shift = a in ("bianet", "supervised")
        assert bool(rec["endpoints"]["attention_shift"]) == has_shift, a
    assert set(recs["supervised"]["endpoints"]["attention_shift"]["face"]) == {"pia", "nia"}
    for a, rec in recs.items():  # the counterfactual prediction's parts, for the arms with NIA
        ep = rec["endpoints"]
        assert bool(ep["branches"]) == bool(rec["config"]["use_nia"]), a
        for d, b in ep["branches"].items():
            assert b["z"] == ep["directions"][d]["accuracy"]["dose1"]  # z is the route the run is scored on
            assert set(b) == {"z", "z_pos", "minus_z_neg", "corr_dz_pos_neg", "w", "n_trials", "bits"}
            for part in ("z", "z_pos", "minus_z_neg"):  # the stored trials are the accuracy's
                assert unpack_bits(b["bits"][part], b["n_trials"]).mean() == b[part]
            assert b["bits"]["z"] == ep["directions"][d]["bits"]["dose1"]
    records = load_records(out)
    clusters = clusters_for(records["baseline"][0])
    rows = stats.fair_headroom(records, clusters, n_boot=100)
    assert {(r["arm"], r["direction"]) for r in rows} == {(a, d) for a in ("bianet", "supervised", "control")
                                                          for d in W.DIRECTIONS}
    assert all(r["seeds"] == 1 for r in rows)
    family = stats.compare_arms(records, clusters, n_boot=100, comparisons=FAIR_COMPARISONS)
    assert len(family) == len(FAIR_COMPARISONS) * 2 * 2
    assert stats.fair_outcome(family) in (*FAIR_OUTCOMES, "other")
    from bianet_lib.reports import fair as report

    monkeypatch.setattr(W, "FAIR_CALIBRATED", 2.0)  # a calibrated world: the confirmatory family
    md = report.fair_markdown(out, n_boot=100)
    for a in arms:
        assert f"| {a} | 1 |" in md  # the arms table
    assert "| bianet | VF |" in md and "| supervised | FV |" in md  # headroom recovered, per direction
    assert "| bianet | face | PIA |" in md and "| baseline | face |" not in md  # shifts: arms with attention
    assert "INTERIM" not in md and f"Outcome: **{stats.fair_outcome(family)}**" in md
    assert "exploratory" not in md and "Headroom check" not in md
    branches = stats.branch_comparison(records, clusters, n_boot=100)
    assert [r["direction"] for r in branches] == list(W.DIRECTIONS) and all(r["seeds"] == [1, 1] for r in branches)
    assert f"NIA's anti-identity (-z_neg alone above 0.5 at 1:2): **{stats.branch_reading(branches)}**" in md
    assert {(r["arm"], r["direction"]) for r in stats.branch_table(records)} == {
        (a, d) for a in ("bianet", "supervised") for d in W.DIRECTIONS}  # the arms with a negative branch
    monkeypatch.setattr(W, "FAIR_CALIBRATED", None)  # no calibrated world: the check, then the exploratory family
    md = report.fair_markdown(out, n_boot=100)
    explore = stats.compare_arms(records, clusters, n_boot=100, comparisons=FAIR_EXPLORATORY_COMPARISONS)
    assert len(explore) == 16 and "Outcome:" not in md
    assert md.index("Headroom check: ") < md.index("The exploratory family") < md.index("Exploratory reading (F-V)")
    assert f"Exploratory reading (F-V): **{stats.fair_exploratory_reading(explore)}**" in md
    assert md.count("| oracle - baseline |") == 4  # the check's own 4 tests, never in the exploratory family
    check = tmp_path / "check"  # the headroom check alone: its own verdict, never a family outcome
    check.mkdir()
    for a in ("baseline", "oracle"):
        (check / f"{a}__s0.json").write_text((out / f"{a}__s0.json").read_text())
    md = report.fair_markdown(check, n_boot=100)
    assert "Headroom check: " in md and "Outcome:" not in md and "| bianet |" not in md


def test_the_cli_refuses_the_fair_grid_before_its_calibration(tmp_path, capsys):
    """One line naming FAIR_CALIBRATED, exit 2, nothing trained; --list still lists (nothing)."""
    from bianet_lib import cli

    assert cli.main(["experiments", "fair", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "FAIR_CALIBRATED" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
    assert cli.main(["experiments", "fair", "--list", "--results-dir", str(tmp_path)]) == 0


def test_reading_the_map_grids_leaves_the_random_stream_alone():
    """map_grids builds encoders (random initialisation): it must not move torch's generator,
    or an arm's training would depend on whether the grids were cached. Fails without fork_rng."""
    from bianet_lib.model import encoders

    encoders._map_grids.cache_clear()
    torch.manual_seed(3)
    map_grids(tiny_cfg("oracle"))
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(3))


# --- 6. pre-registration: the order of commits and the committed calibration ---------------------
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "experiments"
WORLD_HOME = "bianet_lib/experiments/world.py"
PREREG_HOME = "bianet_lib/experiments/preregistration.py"


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _first_commit_setting(pattern: str, *homes: str) -> str | None:
    found = _git("log", "--reverse", "--format=%H", "-G", pattern, "--", *homes).splitlines()
    return found[0] if found else None


def _is_ancestor(a: str, b: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=ROOT).returncode == 0


METHOD_ARMS = ("bianet", "supervised", "control")


def _first_commit_adding_runs(store: str, arms=None) -> str | None:
    """The first commit adding a run file under results/experiments/STORE (of ``arms`` only)."""
    folder = RESULTS / store
    paths = ([str((folder / f"{a}__s{s}.json").relative_to(ROOT)) for a in arms for s in grids.FAIR_SEEDS]
             if arms else [str(folder.relative_to(ROOT))])
    found = _git("log", "--reverse", "--diff-filter=A", "--format=%H", "--", *paths).splitlines()
    return found[0] if found else None


@pytest.mark.parametrize("pattern, homes, store, arms", [
    (r"^FAIR_CALIBRATED: float \| None = [0-9]", (WORLD_HOME,), "fair", METHOD_ARMS),
    (r'^FAIR_CALIBRATED_WORLD: str \| None = "', (WORLD_HOME,), "fair", METHOD_ARMS),
    (r"^FAIR_HEADROOM_WORLD: .*= \(", (WORLD_HOME,), "fair", W.FAIR_HEADROOM_ARMS),
    (r"^FAIR_HEADROOM_ARMS = ", (WORLD_HOME,), "fair", None),
    (r"^FAIR_COMPARISONS = ", (PREREG_HOME,), "fair", None),
    (r"^FAIR_OUTCOMES = ", (PREREG_HOME,), "fair", None),
    (r"^W_ATTN_SUPERVISION = ", ("bianet_lib/experiments/grids.py",), "fair", None),
    (r"^FAIR_WORLD_CONSTRAINTS = ", (WORLD_HOME,), "fair-calibration", None),
    (r"^FAIR_CALIBRATION_SETTINGS = ", (WORLD_HOME,), "fair-calibration", None),
    (r"^FAIR_STAGE2: ", (WORLD_HOME,), "fair-calibration-2", None),
    (r"^FAIR_EXPLORATORY_WORLD: .*= \(", (WORLD_HOME,), "fair", W.FAIR_EXPLORATORY_ARMS),
    (r"^FAIR_EXPLORATORY_COMPARISONS = ", (PREREG_HOME,), "fair", W.FAIR_EXPLORATORY_ARMS),
    (r"^FAIR_EXPLORATORY_READINGS = ", (PREREG_HOME,), "fair", W.FAIR_EXPLORATORY_ARMS),
    (r"^FAIR_BRANCH_COMPARISON = ", (PREREG_HOME,), "fair", W.FAIR_EXPLORATORY_ARMS),
], ids=["setting", "world", "headroom-world", "headroom-check", "comparisons", "outcomes", "supervision-weight",
        "constraints", "stage1", "stage2", "exploratory-world", "exploratory-comparisons", "exploratory-readings",
        "branch-comparison"])
def test_fair_preregistration_precedes_the_runs_it_governs(pattern, homes, store, arms):
    """The commit that first wrote each pre-registered item is an ancestor of the first commit that
    added a run it governs: calibration constants before calibration runs; the headroom check and
    its world before its baseline and oracle runs; the calibrated world before any method arm
    (BIANet, supervised attention, the control); the comparisons, outcomes and the supervised arm's
    weight before the first run of the grid. Skipped on a shallow clone, which lacks the history."""
    if _git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: the commit order cannot be read")
    if pattern.startswith("^FAIR_CALIBRATED") and W.FAIR_CALIBRATED is None:
        # no confirmatory grid: method arms in the store are the exploratory family's, governed
        # by its own declaration (the exploratory-* cases)
        assert _first_commit_adding_runs(store, arms) is None or W.FAIR_EXPLORATORY_WORLD is not None
        return
    first_run = _first_commit_adding_runs(store, arms)
    if first_run is None:
        return  # nothing governed is committed yet
    set_at = _first_commit_setting(pattern, *homes)
    assert set_at, f"runs under results/experiments/{store} are committed but {pattern!r} never was"
    assert _is_ancestor(set_at, first_run), f"{pattern!r} was committed after the first run it governs"


def test_only_the_baseline_ran_during_calibration():
    for store in ("fair-calibration", "fair-calibration-2"):
        for path in (RESULTS / store).glob("*.json"):
            rec = json.loads(path.read_text())
            assert path.stem.startswith("baseline_") and rec["config"]["token_masks"] == "none"
            assert rec["config"]["use_pia"] is False and rec["config"]["use_nia"] is False, path


def _measured_coverage(world: str, setting: float) -> float:
    cfg = fair_cfg(f"world_preset={world}", f"world_local_scale={setting}")
    cov = W.token_coverage(S.generate_split(world_config(cfg), 0, "test"), cfg)
    return float(max(cov["face"].max(), cov["voice"].max()))


def test_the_committed_world_is_the_rule_on_the_committed_calibration():
    """FAIR_CALIBRATED(_WORLD) and FAIR_HEADROOM_WORLD are what the rules give on the committed
    baseline-only runs: stage 1 (the fair world's settings) first, stage 2 only when stage 1 gives
    None, the headroom check's world only when stage 2 gives None too (then FAIR_CALIBRATED stays
    None unless the check found headroom, and then it is the check's world); every committed run of
    the grid is in the world its arm was allowed to run in."""
    rows1 = W.calibration_rows(RESULTS / "fair-calibration")
    rows2 = W.calibration_rows(RESULTS / "fair-calibration-2")
    stage1_done = {r["scale"] for r in rows1} >= set(W.FAIR_CALIBRATION_SETTINGS)
    stage2_done = {(r["world"], r["scale"]) for r in rows2} >= set(W.FAIR_STAGE2)
    cov = {("fair", s): _measured_coverage("fair", s) for s in W.FAIR_CALIBRATION_SETTINGS}
    picked = W.choose_fair_setting(rows1, {s: c for (_, s), c in cov.items()}) if stage1_done else None
    expected, check = (("fair", picked) if picked is not None else None), None
    if stage1_done and picked is None:
        assert rows1 and max(max(r["vf_drop"], r["fv_drop"]) for r in rows1) < W.FAIR_WORLD_CONSTRAINTS["min_baseline_drop"]
        cov |= {c: _measured_coverage(*c) for c in W.FAIR_STAGE2}
        expected = W.choose_fair_world(rows2, cov)
        if expected is None and stage2_done:
            check = W.headroom_world(rows1 + rows2, cov)
    got = None if W.FAIR_CALIBRATED is None else (W.FAIR_CALIBRATED_WORLD, W.FAIR_CALIBRATED)
    assert W.FAIR_HEADROOM_WORLD == check
    if check is None:
        assert got == expected
    else:
        assert got in (None, check)  # None until the check finds headroom
    for path in (RESULTS / "fair").glob("*.json"):
        cfg = json.loads(path.read_text())["config"]
        arm = path.stem.split("__")[0]
        allowed = check if (check is not None and arm in W.FAIR_HEADROOM_ARMS) else (got or W.FAIR_EXPLORATORY_WORLD)
        assert (cfg["world_preset"], cfg["world_local_scale"]) == allowed, path


def test_the_exploratory_family_follows_a_finished_no_headroom_check():
    """The exploratory family may only be declared in the headroom check's world, after all of the
    check's runs were committed and their pre-registered reading was no_headroom (with headroom the
    method arms are the confirmatory grid's, FAIR_CALIBRATED)."""
    if W.FAIR_EXPLORATORY_WORLD is None:
        return
    assert W.FAIR_CALIBRATED is None and W.FAIR_EXPLORATORY_WORLD == W.FAIR_HEADROOM_WORLD
    from bianet_lib.experiments.preregistration import FAIR_COMPARISONS
    from bianet_lib.experiments.records import clusters_for, load_records

    records = load_records(RESULTS / "fair")
    check = {a: records[a] for a in W.FAIR_HEADROOM_ARMS}
    assert all(len(check[a]) == len(grids.FAIR_SEEDS) for a in W.FAIR_HEADROOM_ARMS)
    rows = stats.compare_arms(check, clusters_for(check["baseline"][0]), comparisons=FAIR_COMPARISONS)
    assert stats.fair_outcome(rows) == "no_headroom"
    if _git("rev-parse", "--is-shallow-repository") == "true":
        return
    declared = _first_commit_setting(r"^FAIR_EXPLORATORY_WORLD: .*= \(", WORLD_HOME)
    check_runs = [str((RESULTS / "fair" / f"{a}__s{s}.json").relative_to(ROOT))
                  for a in W.FAIR_HEADROOM_ARMS for s in grids.FAIR_SEEDS]
    for path in check_runs:  # every run of the check was committed before the declaration
        added = _git("log", "--diff-filter=A", "--format=%H", "--", path).splitlines()
        if declared is None:  # declared in the working tree, not yet committed
            assert added, path
        else:
            assert added and _is_ancestor(added[-1], declared), path


def test_headroom_world():
    rows = [{"world": w, "scale": s, "vf_drop": a, "fv_drop": b} for w, s, a, b in
            (("fair", 1.0, 0.012, 0.020), ("fair", 2.0, 0.023, 0.030), ("fair-centre", 2.0, -0.04, -0.06),
             ("fair-whole-c3", 2.0, 0.020, 0.014))]
    cov = {(r["world"], r["scale"]): 0.25 for r in rows}
    assert W.headroom_world(rows, cov) == ("fair", 2.0)  # largest smaller-of-two drop
    assert W.headroom_world(rows, {**cov, ("fair", 2.0): 0.5}) == ("fair-whole-c3", 2.0)  # 0.014 > 0.012
    assert W.headroom_world([rows[2]], cov) is None


def test_the_negative_branch_is_trained_to_score_the_true_pair_low():
    """Why NIA learns anti-identity (issue 25), from Eq. 22's default form z = z_pos - w z_neg:
    the negative branch's logits receive the positive branch's gradient reversed and scaled by the
    curriculum weight w, so gradient descent LOWERS z_neg at the true candidate and raises it at the
    distractors: -z_neg becomes a matcher. Checked with autograd, and one descent step on z_neg
    alone makes -z_neg more accurate; at w = 0 it receives nothing."""
    from bianet_lib.model.counterfactual import counterfactual_loss

    g = torch.Generator().manual_seed(0)
    z_pos, z_neg = torch.randn(64, 2, generator=g, requires_grad=True), torch.randn(64, 2, generator=g, requires_grad=True)
    target = torch.randint(0, 2, (64,), generator=g)
    w = 0.7
    counterfactual_loss(z_pos, z_neg, target, w).backward()
    assert torch.allclose(z_neg.grad, -w * z_pos.grad)
    assert (z_neg.grad.gather(1, target[:, None]) > 0).all()  # descent lowers the true pair's z_neg
    stepped = z_neg.detach() - 50.0 * z_neg.grad
    acc = lambda z: float(((-z).argmax(1) == target).float().mean())  # noqa: E731
    assert acc(stepped) > acc(z_neg.detach())
    z_neg.grad = None
    counterfactual_loss(z_pos, z_neg, target, 0.0).backward()
    assert z_neg.grad is None or not z_neg.grad.any()
