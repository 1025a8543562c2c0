"""The evaluation protocol: scorers, 1:K matching, verification, breakdowns, result records.

The protocol avoids the leaks of the paper's code (see shared notes, "Data and protocols"):
models are evaluated in eval mode, trial lists are fixed and seeded, and the verification
threshold is chosen on validation trials only, never on test.

Trial objects are duck-typed so this module does not depend on how they are generated:
a matching trial set has ``direction`` ("vf" or "fv"), ``query`` [T], ``candidates`` [T,K]
and ``target`` [T]; a verification trial set has ``voice`` [T], ``face`` [T] and ``same`` [T]
(see ``bianet_lib.data.trials``).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import bianet_lib
from bianet_lib.data.types import SplitData
from bianet_lib.engine import metrics

#: Query samples with interference_strength at or above this count as "interfered". A fixed
#: cut (not a per-split median) keeps the clean/interfered groups comparable across splits.
INTERFERENCE_CUT = 0.5

#: Trials scored per call to the scorer, bounding the [T, K, ...] candidate tensor in memory.
TRIAL_CHUNK = 4096


class Scorer(Protocol):
    """What a model must offer to be evaluated.

    ``embed`` returns one embedding per sample of the split's voices or faces (first dim =
    sample; extra dims allowed, e.g. [N, 2, D] for positive and negative embeddings).
    ``match_logits`` scores queries [T, ...] against candidates [T, K, ...] into [T, K].
    ``verify_scores`` scores voice/face pairs [T, ...] into [T], higher = same identity.
    """

    def embed(self, split: SplitData, modality: str, batch_size: int) -> torch.Tensor: ...

    def match_logits(self, query_emb: torch.Tensor, cand_emb: torch.Tensor) -> torch.Tensor: ...

    def verify_scores(self, voice_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor: ...


def _identities(split: SplitData, modality: str) -> torch.Tensor:
    return split.voice_identity if modality == "voice" else split.face_identity


class OracleScorer:
    """Knows every sample's identity: must score 100% on every protocol (a protocol check)."""

    def embed(self, split: SplitData, modality: str, batch_size: int = 256) -> torch.Tensor:
        return _identities(split, modality).to(torch.float32)

    def match_logits(self, query_emb: torch.Tensor, cand_emb: torch.Tensor) -> torch.Tensor:
        return (cand_emb == query_emb[:, None]).to(torch.float32)

    def verify_scores(self, voice_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
        return (voice_emb == face_emb).to(torch.float32)


class CosineScorer:
    """The "cosine route": any embedding function, scored by cosine similarity.

    ``embed_fn(split, modality)`` returns [N, D]; it batches as it likes, so ``batch_size``
    is not passed on.
    """

    def __init__(self, embed_fn: Callable[[SplitData, str], torch.Tensor]):
        self.embed_fn = embed_fn

    def embed(self, split: SplitData, modality: str, batch_size: int = 256) -> torch.Tensor:
        return self.embed_fn(split, modality)

    def match_logits(self, query_emb: torch.Tensor, cand_emb: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(query_emb[:, None, :], cand_emb, dim=-1)

    def verify_scores(self, voice_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(voice_emb, face_emb, dim=-1)


class RandomScorer(CosineScorer):
    """Random Gaussian embeddings, seeded per modality: must score chance on every protocol."""

    def __init__(self, seed: int = 0, dim: int = 32):
        self.seed = seed
        self.dim = dim
        super().__init__(self._random_embeddings)

    def _random_embeddings(self, split: SplitData, modality: str) -> torch.Tensor:
        n = len(split.voices) if modality == "voice" else len(split.faces)
        # Distinct streams per modality, else voice i and face i would share a vector.
        gen = torch.Generator().manual_seed(2 * self.seed + (modality == "face"))
        return torch.randn(n, self.dim, generator=gen)


def _is_matching(trials) -> bool:
    return hasattr(trials, "candidates")


def _modalities(direction: str) -> tuple[str, str]:
    """(query modality, candidate modality) of a matching direction."""
    if direction == "vf":
        return "voice", "face"
    if direction == "fv":
        return "face", "voice"
    raise ValueError(f"direction must be 'vf' or 'fv', got {direction!r}")


def _meta(split: SplitData, modality: str) -> pd.DataFrame:
    return split.voice_meta if modality == "voice" else split.face_meta


def _check_matching(split: SplitData, trials) -> None:
    """Refuse trial lists whose labels are wrong: every metric would silently mean nothing."""
    q_mod, c_mod = _modalities(trials.direction)
    q_id = _identities(split, q_mod).numpy()[np.asarray(trials.query)]
    c_id = _identities(split, c_mod).numpy()[np.asarray(trials.candidates)]
    is_match = c_id == q_id[:, None]
    target = np.asarray(trials.target)
    if not is_match[np.arange(len(target)), target].all() or (is_match.sum(axis=1) != 1).any():
        raise ValueError(f"split {split.name!r}: matching trials need exactly one candidate of "
                         "the query's identity, at the target column")


def _check_verification(split: SplitData, trials) -> None:
    same = split.voice_identity.numpy()[np.asarray(trials.voice)] == \
        split.face_identity.numpy()[np.asarray(trials.face)]
    if not (same == np.asarray(trials.same, dtype=bool)).all():
        raise ValueError(f"split {split.name!r}: verification labels disagree with identities")


def _embed_all(scorer: Scorer, split: SplitData, batch_size: int) -> dict[str, torch.Tensor]:
    return {m: scorer.embed(split, m, batch_size) for m in ("voice", "face")}


def _matching_logits(scorer: Scorer, emb: dict, trials) -> torch.Tensor:
    q_mod, c_mod = _modalities(trials.direction)
    query = torch.as_tensor(np.asarray(trials.query), dtype=torch.long)
    cands = torch.as_tensor(np.asarray(trials.candidates), dtype=torch.long)
    chunks = [scorer.match_logits(emb[q_mod][query[i:i + TRIAL_CHUNK]],
                                  emb[c_mod][cands[i:i + TRIAL_CHUNK]])
              for i in range(0, len(query), TRIAL_CHUNK)]
    return torch.cat(chunks).float().cpu()


def _verification_scores(scorer: Scorer, emb: dict, trials) -> np.ndarray:
    voice = torch.as_tensor(np.asarray(trials.voice), dtype=torch.long)
    face = torch.as_tensor(np.asarray(trials.face), dtype=torch.long)
    chunks = [scorer.verify_scores(emb["voice"][voice[i:i + TRIAL_CHUNK]],
                                   emb["face"][face[i:i + TRIAL_CHUNK]])
              for i in range(0, len(voice), TRIAL_CHUNK)]
    return torch.cat(chunks).float().cpu().numpy()


def _group(correct: np.ndarray, mask: np.ndarray) -> dict:
    """Accuracy and count of one subgroup; accuracy None when empty (JSON has no NaN)."""
    n = int(mask.sum())
    return {"n": n, "accuracy": float(correct[mask].mean()) if n else None}


def _two_groups(correct: np.ndarray, mask: np.ndarray, names: tuple[str, str]) -> dict:
    return {names[0]: _group(correct, mask), names[1]: _group(correct, ~mask)}


def _gender_matched(split: SplitData, trials) -> np.ndarray:
    """True where the query and all candidates have the same, known gender."""
    q_mod, c_mod = _modalities(trials.direction)
    gender = split.identities["gender"].to_numpy(dtype=object)
    q_gender = gender[_identities(split, q_mod).numpy()[np.asarray(trials.query)]]
    c_gender = gender[_identities(split, c_mod).numpy()[np.asarray(trials.candidates)]]
    known = ~pd.isna(q_gender) & ~pd.isna(c_gender).any(axis=1)
    return known & (c_gender == q_gender[:, None]).all(axis=1)


def matching_breakdowns(split: SplitData, trials, correct: np.ndarray) -> dict:
    """Accuracy per subgroup, for the groupings the split's metadata allows.

    - ``interference``: the query sample's ``interference_strength`` below INTERFERENCE_CUT is
      "clean", at or above it "interfered".
    - ``shortcut``: a trial is "aligned" when the query sample's ``shortcut_aligned`` is True,
      else "conflicting"; ``gap`` = aligned - conflicting accuracy (None if a group is empty).
    - ``gender``: "matched" when the query and every candidate share a known gender (the
      trial cannot be solved from gender alone), else "mixed".
    Each grouping's counts sum to the number of trials.
    """
    q_meta = _meta(split, _modalities(trials.direction)[0]).iloc[np.asarray(trials.query)]
    out = {}
    if "interference_strength" in q_meta:
        mask = q_meta["interference_strength"].to_numpy(dtype=float) < INTERFERENCE_CUT
        out["interference"] = {"cut": INTERFERENCE_CUT,
                               **_two_groups(correct, mask, ("clean", "interfered"))}
    if "shortcut_aligned" in q_meta:
        groups = _two_groups(correct, q_meta["shortcut_aligned"].to_numpy(dtype=bool),
                             ("aligned", "conflicting"))
        accs = [groups[k]["accuracy"] for k in ("aligned", "conflicting")]
        gap = None if None in accs else accs[0] - accs[1]
        out["shortcut"] = {**groups, "gap": gap}
    if "gender" in split.identities:
        out["gender"] = _two_groups(correct, _gender_matched(split, trials), ("matched", "mixed"))
    return out


def _evaluate_matching(scorer: Scorer, split: SplitData, emb: dict, trials, seed: int) -> dict:
    _check_matching(split, trials)
    logits = _matching_logits(scorer, emb, trials)
    correct = metrics.matching_correct(logits, trials.target, seed)
    k = int(np.asarray(trials.candidates).shape[1])
    return {"direction": trials.direction, "k": k, "n_trials": len(correct),
            "accuracy": float(correct.mean()), "chance": 1.0 / k,
            # A fixed target column would let a slot-only head look perfect or useless.
            "target_slot_counts": np.bincount(np.asarray(trials.target), minlength=k).tolist(),
            "breakdowns": matching_breakdowns(split, trials, correct)}


def _evaluate_verification(scorer: Scorer, split: SplitData, emb: dict, trials,
                           val_split: SplitData, val_emb: dict, val_trials) -> dict:
    _check_verification(split, trials)
    _check_verification(val_split, val_trials)
    val_scores = _verification_scores(scorer, val_emb, val_trials)
    threshold, val_accuracy = metrics.best_threshold(val_scores, val_trials.same)
    scores = _verification_scores(scorer, emb, trials)
    same = np.asarray(trials.same, dtype=bool)
    return {"n_trials": len(same), "n_same": int(same.sum()),
            "threshold": threshold, "threshold_source": val_split.name,
            "val_accuracy": val_accuracy,
            "verification_accuracy": metrics.verification_accuracy(scores, same, threshold),
            "roc_auc": metrics.roc_auc(scores, same),
            "equal_error_rate": metrics.equal_error_rate(scores, same)}


def _curve(matching: dict) -> dict:
    """Accuracy by direction and K; two trial sets with the same (direction, K) are ambiguous."""
    curve: dict[str, dict[str, float]] = {"vf": {}, "fv": {}}
    for name, res in matching.items():
        row = curve[res["direction"]]
        if str(res["k"]) in row:
            raise ValueError(f"two matching trial sets for {res['direction']} 1:{res['k']} "
                             f"(second: {name!r}); evaluate variants in separate calls")
        row[str(res["k"])] = res["accuracy"]
    return {d: dict(sorted(row.items(), key=lambda kv: int(kv[0]))) for d, row in curve.items()}


def _set_eval(scorer) -> bool | None:
    """Put a wrapped torch model in eval mode; return its previous training flag."""
    model = getattr(scorer, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    was_training = model.training
    model.eval()
    return was_training


def evaluate_protocols(scorer: Scorer, test_split: SplitData, trials: Mapping[str, object],
                       val_split: SplitData | None = None,
                       val_trials: Mapping[str, object] | None = None,
                       batch_size: int = 256, seed: int = 0) -> dict:
    """Score every trial set in ``trials`` on ``test_split`` and return plain-JSON results.

    ``trials`` maps a name to a matching or verification trial set. Each verification set
    needs a validation set of the same name in ``val_trials`` (on ``val_split``): its
    threshold is chosen there and only applied to test. Each split is embedded once per
    modality, without gradients, with ``scorer.model`` (if any) in eval mode and its mode
    restored afterwards. ``seed`` drives the tie breaking of matching decisions.
    """
    verification = {n: t for n, t in trials.items() if not _is_matching(t)}
    if verification and (val_split is None or val_trials is None
                         or not set(verification) <= set(val_trials)):
        raise ValueError("verification thresholds are chosen on validation: pass val_split and "
                         f"val_trials with the sets {sorted(verification)}")
    was_training = _set_eval(scorer)
    try:
        with torch.no_grad():
            emb = _embed_all(scorer, test_split, batch_size)
            val_emb = _embed_all(scorer, val_split, batch_size) if verification else None
            matching = {n: _evaluate_matching(scorer, test_split, emb, t, seed)
                        for n, t in trials.items() if _is_matching(t)}
            verified = {n: _evaluate_verification(scorer, test_split, emb, t,
                                                  val_split, val_emb, val_trials[n])
                        for n, t in verification.items()}
    finally:
        if was_training is not None:
            scorer.model.train(was_training)
    return {"test_split": test_split.name,
            "val_split": val_split.name if val_split is not None else None,
            "matching": matching, "curve": _curve(matching), "verification": verified}


def results_record(metrics: dict, config: dict, seed: int) -> dict:
    """Wrap results with what is needed to reproduce them: code, versions, seed.

    The code is named by its content hash (``provenance``), not by a git commit or a time: the
    same code on the same machine writes the same bytes, so regenerated results leave the tree
    clean (a commit could not name itself anyway)."""
    from bianet_lib.engine.provenance import code_hashes, combined_hash

    return {"metrics": metrics, "config": config, "seed": seed,
            "code": {"bianet_lib": bianet_lib.__version__, "code_hash": combined_hash(code_hashes())},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__}}


def write_results_json(record: dict, path: str | os.PathLike) -> Path:
    """Write ``record`` as JSON atomically and durably (``safeio.atomic_write_text``: unique
    temporary file, fsync, rename, normal permissions): a crash never leaves a half-written
    results file."""
    from bianet_lib.engine.safeio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN metric is a bug to surface, not a value to store.
    text = json.dumps(record, indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")
