"""Tests of the evaluation protocol and metrics, on tiny hand-built splits and trial lists."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from bianet_lib.data.types import SplitData
from bianet_lib.engine import metrics
from bianet_lib.engine.evaluate import (
    CosineScorer,
    OracleScorer,
    RandomScorer,
    evaluate_protocols,
    results_record,
    write_results_json,
)


# Stand-ins with the field names of bianet_lib.data.trials: evaluate.py is duck-typed, and
# these keep the tests independent of how trial lists are generated.
@dataclass
class Matching:
    direction: str
    query: np.ndarray
    candidates: np.ndarray
    target: np.ndarray


@dataclass
class Verification:
    voice: np.ndarray
    face: np.ndarray
    same: np.ndarray


def make_split(n_id: int = 12, per_id: int = 3, seed: int = 0, name: str = "test") -> SplitData:
    """A split with tiny 8x8 faces and 16-sample voices, per_id of each per identity."""
    rng = np.random.default_rng(seed)
    ident = np.repeat(np.arange(n_id), per_id)
    n = len(ident)

    def meta() -> pd.DataFrame:
        return pd.DataFrame({"identity": ident, "video": [f"v{i % 2}" for i in range(n)],
                             "interference_strength": rng.random(n),
                             "shortcut_aligned": rng.random(n) < 0.5})

    return SplitData(name=name,
                     faces=torch.zeros(n, 3, 8, 8, dtype=torch.uint8),
                     voices=torch.zeros(n, 16),
                     face_meta=meta(), voice_meta=meta(),
                     identities=pd.DataFrame({"name": [f"id{i}" for i in range(n_id)],
                                              "gender": ["f", "m"] * (n_id // 2)}))


def make_matching(split: SplitData, direction: str, k: int, n: int, seed: int = 0,
                  fixed_slot: int | None = None) -> Matching:
    """n trials: a query, its true match and k-1 distractors of distinct other identities."""
    rng = np.random.default_rng(seed)
    q_ids = (split.voice_identity if direction == "vf" else split.face_identity).numpy()
    c_ids = (split.face_identity if direction == "vf" else split.voice_identity).numpy()
    query = rng.integers(len(q_ids), size=n)
    candidates = np.empty((n, k), dtype=np.int64)
    target = np.full(n, fixed_slot) if fixed_slot is not None else rng.integers(k, size=n)
    for t, q in enumerate(query):
        others = rng.choice(np.setdiff1d(np.arange(split.n_identities), q_ids[q]), k - 1,
                            replace=False)
        ids = np.insert(others, target[t], q_ids[q])
        candidates[t] = [rng.choice(np.flatnonzero(c_ids == i)) for i in ids]
    return Matching(direction, query, candidates, target)


def make_verification(split: SplitData, n: int, seed: int = 0) -> Verification:
    """n voice-face pairs, about half of them the same identity."""
    rng = np.random.default_rng(seed)
    v_ids, f_ids = split.voice_identity.numpy(), split.face_identity.numpy()
    voice = rng.integers(len(v_ids), size=n)
    same = rng.random(n) < 0.5
    face = np.array([rng.choice(np.flatnonzero((f_ids == v_ids[v]) == s))
                     for v, s in zip(voice, same, strict=True)])
    return Verification(voice, face, same)


def protocol_trials(split: SplitData, n: int, seed: int) -> dict:
    """1:K matching for K = 2..10 in both directions, plus verification."""
    trials = {f"{d}_1:{k}": make_matching(split, d, k, n, seed + k)
              for d in ("vf", "fv") for k in range(2, 11)}
    trials["verification"] = make_verification(split, n, seed)
    return trials


# ---------------------------------------------------------------- pure metrics


def test_roc_auc_hand_example_with_ties():
    # Positives 0.4 and 0.8 against negatives 0.1, 0.4, 0.4: pairs won 1 + .5 + .5 + 3 = 5 of 6.
    scores = [0.1, 0.4, 0.4, 0.8, 0.4]
    labels = [0, 1, 0, 1, 0]
    assert metrics.roc_auc(scores, labels) == pytest.approx(5 / 6)


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError):
        metrics.roc_auc([0.1, 0.2], [1, 1])


def test_best_threshold_hand_example():
    # "same iff score >= t": t = 0.15 gets 5/6 right, every other candidate at most 4/6.
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    labels = [0, 1, 1, 0, 1, 1]
    threshold, accuracy = metrics.best_threshold(scores, labels)
    assert threshold == pytest.approx(0.15)
    assert accuracy == pytest.approx(5 / 6)
    assert metrics.verification_accuracy(scores, labels, threshold) == pytest.approx(5 / 6)


def test_best_threshold_may_reject_everything():
    # Scores anti-correlated with labels: calling everything "different" is best (2/3).
    threshold, accuracy = metrics.best_threshold([0.9, 0.1, 0.2], [0, 1, 0])
    assert accuracy == pytest.approx(2 / 3)
    assert threshold > 0.9


def test_equal_error_rate_separable_and_reversed():
    assert metrics.equal_error_rate([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert metrics.equal_error_rate([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 1.0


def test_matching_accuracy_strict_winner():
    logits = np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 4.0]])
    assert metrics.matching_accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("k", [2, 5, 10])
@pytest.mark.parametrize("slot", ["first", "last"])
def test_constant_logits_score_chance_even_with_fixed_target_slot(k, slot):
    target = np.full(4000, 0 if slot == "first" else k - 1)
    acc = metrics.matching_accuracy(np.zeros((4000, k)), target, seed=1)
    assert acc == pytest.approx(1 / k, abs=0.03)


# ---------------------------------------------------------------- protocol


@pytest.fixture(scope="module")
def splits():
    return make_split(12, 3, seed=0, name="test"), make_split(12, 3, seed=1, name="val")


def test_oracle_is_perfect_on_every_protocol(splits):
    test, val = splits
    out = evaluate_protocols(OracleScorer(), test, protocol_trials(test, 200, 0),
                             val, {"verification": make_verification(val, 200, 5)})
    for d in ("vf", "fv"):
        assert list(out["curve"][d]) == [str(k) for k in range(2, 11)]
        assert all(acc == 1.0 for acc in out["curve"][d].values())
    ver = out["verification"]["verification"]
    assert ver["verification_accuracy"] == 1.0
    assert ver["roc_auc"] == 1.0
    assert ver["equal_error_rate"] == 0.0


def test_random_scorer_scores_chance():
    test, val = make_split(40, 3, seed=2), make_split(40, 3, seed=3, name="val")
    trials = {"vf_1:2": make_matching(test, "vf", 2, 3000, 1),
              "fv_1:2": make_matching(test, "fv", 2, 3000, 2),
              "vf_1:5": make_matching(test, "vf", 5, 3000, 3),
              "fv_1:10": make_matching(test, "fv", 10, 3000, 4),
              "verification": make_verification(test, 3000, 5)}
    out = evaluate_protocols(RandomScorer(seed=0), test, trials,
                             val, {"verification": make_verification(val, 500, 6)})
    assert out["curve"]["vf"]["2"] == pytest.approx(0.5, abs=0.03)
    assert out["curve"]["fv"]["2"] == pytest.approx(0.5, abs=0.03)
    assert out["curve"]["vf"]["5"] == pytest.approx(0.2, abs=0.03)
    assert out["curve"]["fv"]["10"] == pytest.approx(0.1, abs=0.03)
    assert out["verification"]["verification"]["roc_auc"] == pytest.approx(0.5, abs=0.04)


class ConstantScorer(OracleScorer):
    """Every candidate and pair scores the same."""

    def match_logits(self, query_emb, cand_emb):
        return torch.zeros(cand_emb.shape[:2])


def test_constant_scorer_scores_chance_with_fixed_target_slot(splits):
    test, _ = splits
    trials = {"vf_1:2": make_matching(test, "vf", 2, 3000, 0, fixed_slot=0),
              "fv_1:4": make_matching(test, "fv", 4, 3000, 0, fixed_slot=3)}
    out = evaluate_protocols(ConstantScorer(), test, trials)
    assert out["curve"]["vf"]["2"] == pytest.approx(0.5, abs=0.03)
    assert out["curve"]["fv"]["4"] == pytest.approx(0.25, abs=0.03)
    assert out["matching"]["vf_1:2"]["target_slot_counts"] == [3000, 0]


class ScoreHintScorer(OracleScorer):
    """A pair's verification score is the voice's ``hint`` metadata value."""

    def embed(self, split, modality, batch_size=256):
        if modality == "voice":
            return torch.tensor(split.voice_meta["hint"].to_numpy(), dtype=torch.float32)  # a copy: pandas arrays are read-only
        return torch.zeros(len(split.faces))

    def verify_scores(self, voice_emb, face_emb):
        return voice_emb + face_emb


def _hinted(split: SplitData, pos: list[float], neg: list[float]) -> tuple[SplitData, object]:
    """Verification trials on split's first identity whose scores are exactly pos / neg."""
    n = len(pos) + len(neg)
    voice = np.arange(n)
    same = np.array([True] * len(pos) + [False] * len(neg))
    face_ids = split.face_identity.numpy()
    v_ids = split.voice_identity.numpy()
    face = np.array([np.flatnonzero((face_ids == v_ids[v]) == s)[0]
                     for v, s in zip(voice, same, strict=True)])
    hint = np.zeros(len(split.voices))
    hint[:n] = pos + neg
    split.voice_meta = split.voice_meta.assign(hint=hint)
    return split, Verification(voice, face, same)


def test_verification_threshold_comes_from_validation():
    # Validation separates at 0.15, test at 0.75: the reported threshold must be 0.15, and
    # test accuracy at it 0.5, although a test-chosen threshold would have scored 1.0.
    val, val_trials = _hinted(make_split(2, 4, seed=1, name="val"), [0.2, 0.3], [0.0, 0.1])
    test, test_trials = _hinted(make_split(2, 4, seed=2), [0.8, 0.9], [0.6, 0.7])
    out = evaluate_protocols(ScoreHintScorer(), test, {"ver": test_trials},
                             val, {"ver": val_trials})["verification"]["ver"]
    assert out["threshold"] == pytest.approx(0.15)
    assert out["threshold_source"] == "val"
    assert out["val_accuracy"] == 1.0
    assert out["verification_accuracy"] == 0.5
    assert out["roc_auc"] == 1.0


def test_verification_without_validation_is_refused(splits):
    test, _ = splits
    with pytest.raises(ValueError, match="validation"):
        evaluate_protocols(OracleScorer(), test, {"ver": make_verification(test, 50)})


def test_breakdown_counts_sum_to_totals(splits):
    test, _ = splits
    out = evaluate_protocols(RandomScorer(seed=1), test,
                             {"vf": make_matching(test, "vf", 3, 500, 0),
                              "fv": make_matching(test, "fv", 2, 500, 1)})
    for res in out["matching"].values():
        breakdowns = res["breakdowns"]
        assert set(breakdowns) == {"interference", "shortcut", "gender"}
        for groups in breakdowns.values():
            counts = [g["n"] for g in groups.values() if isinstance(g, dict)]
            assert len(counts) == 2 and sum(counts) == res["n_trials"]
            assert all(0 < c < res["n_trials"] for c in counts)
        shortcut = breakdowns["shortcut"]
        assert shortcut["gap"] == pytest.approx(
            shortcut["aligned"]["accuracy"] - shortcut["conflicting"]["accuracy"])


def test_gender_matched_means_all_candidates_share_query_gender(splits):
    test, _ = splits
    # Identities 0, 2, 4 are "f": a trial over them is matched; one with identity 1 is mixed.
    faces = {i: int(np.flatnonzero(test.face_identity.numpy() == i)[0]) for i in range(4)}
    voice0 = int(np.flatnonzero(test.voice_identity.numpy() == 0)[0])
    trials = Matching("vf", np.array([voice0, voice0]),
                      np.array([[faces[0], faces[2]], [faces[0], faces[1]]]), np.array([0, 0]))
    gender = evaluate_protocols(OracleScorer(), test, {"t": trials})["matching"]["t"][
        "breakdowns"]["gender"]
    assert gender["matched"] == {"n": 1, "accuracy": 1.0}
    assert gender["mixed"] == {"n": 1, "accuracy": 1.0}


def test_mislabelled_trials_are_refused(splits):
    test, _ = splits
    trials = make_matching(test, "vf", 3, 20, 0)
    trials.target = (trials.target + 1) % 3
    with pytest.raises(ValueError, match="exactly one candidate"):
        evaluate_protocols(OracleScorer(), test, {"bad": trials})


class ModelScorer(CosineScorer):
    """Wraps a module whose output depends on train/eval mode (dropout)."""

    def __init__(self):
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.9))
        self.seen_training = []
        super().__init__(self._embed)

    def _embed(self, split, modality):
        self.seen_training.append(self.model.training)
        n = len(split.voices) if modality == "voice" else len(split.faces)
        return self.model(torch.ones(n, 4))


def test_model_is_evaluated_in_eval_mode_without_grad_and_mode_restored(splits):
    test, _ = splits
    scorer = ModelScorer()
    scorer.model.train()
    evaluate_protocols(scorer, test, {"vf": make_matching(test, "vf", 2, 10, 0)})
    assert scorer.seen_training == [False, False]
    assert scorer.model.training


def test_cosine_scorer_is_perfect_on_identity_one_hots(splits):
    test, _ = splits

    def one_hot(split, modality):
        ids = split.voice_identity if modality == "voice" else split.face_identity
        return torch.nn.functional.one_hot(ids, split.n_identities).float()

    out = evaluate_protocols(CosineScorer(one_hot), test,
                             {"fv": make_matching(test, "fv", 6, 100, 0)})
    assert out["curve"]["fv"]["6"] == 1.0


def test_results_record_round_trips_through_atomic_json(tmp_path, splits):
    test, _ = splits
    out = evaluate_protocols(OracleScorer(), test, {"vf": make_matching(test, "vf", 2, 10, 0)})
    record = results_record(out, {"preset": "tiny"}, seed=3)
    path = write_results_json(record, tmp_path / "sub" / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded["metrics"]["curve"]["vf"]["2"] == 1.0
    assert loaded["seed"] == 3 and loaded["config"] == {"preset": "tiny"}
    assert set(loaded["versions"]) == {"python", "torch", "numpy"}
    assert loaded["code"]["bianet_lib"]
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_nan_results_are_refused_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError):
        write_results_json({"accuracy": float("nan")}, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_oracle_is_perfect_on_generated_trial_lists(splits):
    # importorskip: trials.py is written alongside this module; once it exists, the real
    # generators must produce lists the protocol accepts and the oracle solves.
    trials_mod = pytest.importorskip("bianet_lib.data.trials")
    test, val = splits
    trials = {f"{d}_1:{k}": trials_mod.make_matching_trials(test, d, k, 3, seed=k)
              for d in ("vf", "fv") for k in (2, 10)}
    trials["verification"] = trials_mod.make_verification_trials(test, 100, seed=0)
    val_trials = {"verification": trials_mod.make_verification_trials(val, 100, seed=1)}
    out = evaluate_protocols(OracleScorer(), test, trials, val, val_trials)
    assert all(acc == 1.0 for row in out["curve"].values() for acc in row.values())
    assert out["verification"]["verification"]["roc_auc"] == 1.0
