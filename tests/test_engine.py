"""The engine: exact resume, atomic checkpoints, NaN guard, validation-only model selection,
the standard protocols and the world cache."""

import json

import numpy as np
import pytest
import torch

import bianet_lib.engine.trainer as train_mod
from bianet_lib.config import BIANetConfig
from bianet_lib.data.sources import load_world, world_cache_path
from bianet_lib.engine import safeio
from bianet_lib.engine.evaluate import OracleScorer, evaluate_protocols
from bianet_lib.engine.protocols import standard_trials
from bianet_lib.engine.safeio import read_checkpoint
from bianet_lib.engine.trainer import BEST, LATEST, NonFiniteLossError, Trainer, load_model
from tests.helpers import (  # noqa: F401 (autouse fixture)
    one_thread,
    poison_nth_call,
    random_split,
    tiny_config,
)


def splits():
    # 16 identities x 2 samples, batch 8: 4 steps per epoch
    return (random_split(16, 2, face_size=32, seed=0, name="train"),
            random_split(6, 2, face_size=32, seed=1, name="val"))


def _losses(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_resumed_run_equals_uninterrupted(tmp_path):
    train, val = splits()
    cfg = tiny_config(epochs=3)
    a = Trainer(cfg, train, val, tmp_path / "a", progress=False)
    a.fit()

    b = Trainer(cfg, train, val, tmp_path / "b", progress=False)
    real_epoch, calls = b._run_epoch, []

    def interrupted():  # dies in the middle of epoch 2, after epoch 1's checkpoint
        calls.append(1)
        if len(calls) == 2:
            b.train_step(*[t for t in (train.voices[:8], train.faces[:8], torch.arange(8))])
            raise KeyboardInterrupt
        return real_epoch()

    b._run_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text())["epoch"] == 1
    torch.manual_seed(999)  # a fresh process has other random states; resume must restore them
    c = Trainer(cfg, train, val, tmp_path / "b", progress=False)
    c.fit(resume=True)

    assert c.step == a.step == 12
    for name, ref in a.model.state_dict().items():
        assert torch.equal(ref, c.model.state_dict()[name]), name
    for name, ref in a.identity_head.state_dict().items():
        assert torch.equal(ref, c.identity_head.state_dict()[name]), name
    assert _losses(tmp_path / "a" / "metrics.jsonl") == _losses(tmp_path / "b" / "metrics.jsonl")


def test_crash_while_saving_keeps_the_old_latest(tmp_path, monkeypatch):
    train, val = splits()
    trainer = Trainer(tiny_config(epochs=1), train, val, tmp_path, progress=False)
    trainer.fit()
    before = read_checkpoint(tmp_path / LATEST)

    def disk_full(stage, path):
        if stage == "write":  # half the new bytes are in the temporary file
            raise OSError("disk full")

    monkeypatch.setattr(safeio, "crash_hook", disk_full)
    trainer.epoch += 1
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(tmp_path / LATEST)
    monkeypatch.undo()
    after = read_checkpoint(tmp_path / LATEST)
    assert after["epoch"] == before["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "the failed write's temporary file is removed"
    load_model(tmp_path / LATEST)  # still a usable checkpoint


def test_non_finite_loss_names_step_and_term(tmp_path, monkeypatch):
    train, val = splits()
    trainer = Trainer(tiny_config(epochs=1), train, val, tmp_path, progress=False)
    monkeypatch.setattr(train_mod, "metric_loss", poison_nth_call(train_mod.metric_loss, 3, float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*'metric'"):
        trainer.fit()
    assert not (tmp_path / LATEST).exists()


def test_model_selection_reads_validation_only(tmp_path, monkeypatch):
    train, val = splits()
    test = random_split(6, 2, face_size=32, seed=2, name="test")
    embedded = []
    real_embed = train_mod.BIANetScorer.embed

    def spy(self, split, modality, batch_size=None):
        embedded.append(split)
        return real_embed(self, split, modality, batch_size)

    monkeypatch.setattr(train_mod.BIANetScorer, "embed", spy)
    trainer = Trainer(tiny_config(epochs=3, lr_encoders=1e-2, lr_heads=1e-2), train, val, tmp_path,
                      progress=False)
    trainer.fit()
    assert embedded and all(s is val for s in embedded)
    assert not any(s is test for s in embedded)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    accs = [r["val_acc"] for r in rows]
    best = read_checkpoint(tmp_path / BEST)
    assert best["epoch"] == rows[int(np.argmax(accs))]["epoch"]  # first maximum, strict improvement
    assert best["best_val"] == max(accs)


def test_standard_trials_fixed_and_complete():
    split = random_split(12, 3, face_size=16, samples=100, seed=3, name="test")
    a, b = standard_trials(split, 5), standard_trials(split, 5)
    names = {f"{d}_1:{k}" for d in ("vf", "fv") for k in range(2, 11)} | {"verification"}
    assert set(a) == names
    for name in names:
        for field in ("query", "candidates", "target", "voice", "face", "same"):
            if hasattr(a[name], field):
                assert np.array_equal(getattr(a[name], field), getattr(b[name], field))
    assert not np.array_equal(standard_trials(split, 6)["vf_1:2"].candidates, a["vf_1:2"].candidates)
    val = random_split(6, 3, face_size=16, samples=100, seed=4, name="val")
    small = standard_trials(val, 5)
    assert max(t.k for n, t in small.items() if n != "verification") == 6
    res = evaluate_protocols(OracleScorer(), split, a, val, standard_trials(val, 5, matching=False))
    assert all(r["accuracy"] == 1.0 for r in res["matching"].values())
    assert res["verification"]["verification"]["verification_accuracy"] == 1.0
    assert res["verification"]["verification"]["threshold_source"] == "val"


def test_load_world_caches_by_world_config(tmp_path, monkeypatch):
    import bianet_lib.data.synthvox as synthvox

    cfg = BIANetConfig(face_size=16, clip_seconds=0.25, world_n_train=3, world_n_val=2, world_n_test=2,
                       world_per_id_train=2, world_per_id_eval=1, cache_dir=str(tmp_path))
    world = load_world(cfg, workers=1)
    assert world_cache_path(cfg).is_file()
    assert [world[s].n_identities for s in ("train", "val", "test")] == [3, 2, 2]

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated a cached world")

    monkeypatch.setattr(synthvox, "generate_world", no_generation)
    again = load_world(cfg, workers=1)
    assert torch.equal(again["test"].faces, world["test"].faces)
    other = BIANetConfig(**{**cfg.to_dict(), "world_seed": 1})
    assert world_cache_path(other) != world_cache_path(cfg)
    with pytest.raises(AssertionError, match="regenerated"):
        load_world(other, workers=1)


def test_select_route_cosine_validates_on_the_cosine_of_the_embeddings(tmp_path):
    from bianet_lib.engine.metrics import matching_accuracy
    from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer

    train, val = splits()
    accs = {}
    for route, scorer_cls in (("classifier", BIANetScorer), ("cosine", EmbeddingCosineScorer)):
        trainer = Trainer(tiny_config(select_route=route), train, val, tmp_path / route, progress=False)
        scorer = scorer_cls(trainer.model, trainer.device)
        emb = {m: scorer.embed(val, m) for m in ("voice", "face")}
        by_hand = {}
        for d, trials in trainer.val_trials.items():
            q, c = ("voice", "face") if d == "vf" else ("face", "voice")
            by_hand[d] = matching_accuracy(scorer.match_logits(emb[q][trials.query], emb[c][trials.candidates]),
                                           trials.target)
        got = trainer.validate()
        assert got["val_acc_vf"] == by_hand["vf"] and got["val_acc_fv"] == by_hand["fv"], route
        accs[route] = got
    assert accs["classifier"] != accs["cosine"]  # same seed and weights, two different routes
    with pytest.raises(ValueError, match="select_route"):
        tiny_config(select_route="test-set")


def test_resume_under_another_config_is_refused(tmp_path):
    """A run resumed with epochs changed would keep the old cosine schedule (its T_max) while
    config.yaml says otherwise: refused, naming the field and both values."""
    from bianet_lib.engine.trainer import ConfigMismatchError

    train, val = splits()
    Trainer(tiny_config(epochs=1), train, val, tmp_path, progress=False).fit()
    before = (tmp_path / LATEST).read_bytes()
    with pytest.raises(ConfigMismatchError, match=r"epochs=3 \(run: 1\)"):
        Trainer(tiny_config(epochs=3), train, val, tmp_path, progress=False).fit(resume=True)
    assert (tmp_path / LATEST).read_bytes() == before  # nothing trained, nothing written


def test_resume_of_a_checkpoint_from_other_code_is_one_clear_error(tmp_path):
    """A latest.pt whose config has a field this code does not know (written by newer code)."""
    from bianet_lib.engine.safeio import write_checkpoint
    from bianet_lib.engine.trainer import ConfigMismatchError

    train, val = splits()
    Trainer(tiny_config(epochs=1), train, val, tmp_path, progress=False).fit()
    state = read_checkpoint(tmp_path / LATEST)
    state["config"]["a_future_field"] = 1
    write_checkpoint(tmp_path / LATEST, state)
    with pytest.raises(ConfigMismatchError, match="cannot be read by this code.*a_future_field"):
        Trainer(tiny_config(epochs=1), train, val, tmp_path, progress=False).fit(resume=True)
