"""The standard trial sets and the two-route evaluation of a trained BIANet.

``standard_trials(split, seed)`` is the fixed, seeded protocol every run is evaluated on:
1:K matching for K = 2..10 (1:2 is the paper's headline number; K > 2 is the curve of its
Fig. 4) in both directions, and one verification set. Trial lists depend only on the split
and the seed (:data:`PROTOCOL_SEED` by default), never on the model or the training seed, so
runs are compared on identical trials. Model selection during training uses the Trainer's own
validation trials; these lists are for evaluation.
"""

from __future__ import annotations

import torch

from bianet_lib.data.trials import make_matching_trials, make_verification_trials
from bianet_lib.data.types import SplitData
from bianet_lib.engine.evaluate import evaluate_protocols

PROTOCOL_SEED = 2025
K_VALUES = tuple(range(2, 11))
#: matching trials per identity and direction; verification pairs per identity
TRIALS_PER_IDENTITY = 10
PAIRS_PER_IDENTITY = 20


def matching_name(direction: str, k: int) -> str:
    return f"{direction}_1:{k}"


def standard_trials(split: SplitData, seed: int = PROTOCOL_SEED, matching: bool = True,
                    n_per_identity: int = TRIALS_PER_IDENTITY) -> dict:
    """{"vf_1:2", ..., "fv_1:10", "verification"} on ``split``. K stops at the number of
    identities (1:K needs K distinct identities); ``matching=False`` gives only the
    verification set (what the validation split contributes: the threshold)."""
    out = {}
    if matching:
        for k in K_VALUES:
            if k > split.n_identities:
                break
            for j, direction in enumerate(("vf", "fv")):
                out[matching_name(direction, k)] = make_matching_trials(
                    split, direction, k, n_per_identity, seed + 100 * k + j)
    n_pairs = 2 * max(1, PAIRS_PER_IDENTITY * split.n_identities // 2)
    out["verification"] = make_verification_trials(split, n_pairs, seed + 7)
    return out


def evaluate_model(model: torch.nn.Module, test: SplitData, val: SplitData,
                   device: str | torch.device = "cpu", seed: int = PROTOCOL_SEED) -> dict:
    """Both routes on the standard test trials; the verification threshold comes from val.

    Returns {"classifier": ..., "cosine": ..., "trial_seed": seed}, each route the output of
    :func:`bianet_lib.engine.evaluate.evaluate_protocols`.
    """
    from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer

    trials = standard_trials(test, seed)
    val_trials = standard_trials(val, seed, matching=False)
    out = {}
    embeddings: dict = {}  # both routes read the same embeddings of the same model
    for route, cls in (("classifier", BIANetScorer), ("cosine", EmbeddingCosineScorer)):
        out[route] = evaluate_protocols(cls(model, device, embeddings=embeddings), test, trials,
                                        val, val_trials, seed=seed)
    out["trial_seed"] = seed
    return out


def summary_rows(results: dict) -> list[tuple[str, dict[str, float | None]]]:
    """(route, {column: value}) rows for a short table of an ``evaluate_model`` result."""
    rows = []
    for route in ("classifier", "cosine"):
        res = results[route]
        curve, ver = res["curve"], res["verification"].get("verification", {})
        kmax = max((int(k) for k in curve["vf"]), default=2)
        rows.append((route, {"V-F 1:2": curve["vf"].get("2"), "F-V 1:2": curve["fv"].get("2"),
                             f"V-F 1:{kmax}": curve["vf"].get(str(kmax)),
                             f"F-V 1:{kmax}": curve["fv"].get(str(kmax)),
                             "verif acc": ver.get("verification_accuracy"), "AUC": ver.get("roc_auc")}))
    return rows


def format_summary(results: dict) -> str:
    rows = summary_rows(results)
    cols = list(rows[0][1])
    lines = ["route       " + "  ".join(f"{c:>9}" for c in cols)]
    for route, vals in rows:
        lines.append(f"{route:<12}" + "  ".join("      n/a" if vals[c] is None else f"{vals[c]:9.3f}"
                                               for c in cols))
    return "\n".join(lines)
