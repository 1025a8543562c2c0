"""The test-bed's result records: per-trial correctness bit-packed in each run's record, the records
of a grid's store, their trial clusters, and which runs a store's grids define.

Correctness is stored per trial (bit-packed) so that any analysis can pair arms afterwards
(``trial_matrix``); the statistics are in ``bianet_lib.experiments.stats``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bianet_lib.experiments.bits import unpack_bits
from bianet_lib.experiments.world import endpoint_trials, test_split_at


def trial_matrix(record: dict, direction: str, condition: str) -> np.ndarray:
    """bool [T]: per-trial correctness of one run's endpoints under one condition."""
    rec = record["endpoints"]["directions"][direction]
    return unpack_bits(rec["bits"][condition], rec["n_trials"])


def load_records(results_dir: str | Path) -> dict[str, list[dict]]:
    """{arm: [record per seed, by seed]} of the finished test-bed runs in ``results_dir``."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        rec = json.loads(path.read_text())
        if "endpoints" in rec and "experiment" in rec:
            out.setdefault(rec["experiment"]["name"], []).append(rec)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def clusters_for(record: dict) -> dict[str, np.ndarray]:
    """The query identity of every endpoint trial per direction, for a run's config (reads the
    cached clean-twin test split; the identities are the same at every dose)."""
    from bianet_lib.config import BIANetConfig
    from bianet_lib.experiments.endpoints import query_identities

    test = test_split_at(BIANetConfig.from_dict(record["config"]), 0.0)
    return {d: query_identities(test, tr) for d, tr in endpoint_trials(test).items()}


def per_trial(records: list[dict], direction: str, endpoint: str) -> np.ndarray:
    """[seeds, T] per-trial values of one arm: correctness at dose 1 (``accuracy``) or clean
    twin minus dose 1 (``clean_twin_drop``, in {-1, 0, 1})."""
    rows = []
    for rec in records:
        hit = trial_matrix(rec, direction, "dose1").astype(float)
        rows.append(hit if endpoint == "accuracy" else trial_matrix(rec, direction, "dose0") - hit)
    return np.stack(rows)


def _family_progress(records: dict[str, list[dict]], expected: set[tuple[str, int]], family) -> tuple[int, int]:
    """(finished, pre-registered) runs (arm, seed) of a family's arms in a store."""
    arms = {a for pair in family for a in pair}
    want = {(a, s) for a, s in expected if a in arms}
    have = {(a, int(r["seed"])) for a, recs in records.items() for r in recs}
    return len(want & have), len(want)


# --- the swept knobs of the third part (Fig. 7, the bias study) --------------------------------


def shared_seeds(records: dict[str, list[dict]], arms) -> set[int]:
    """The seeds that every one of ``arms`` (those with runs) has finished."""
    sets = [{int(r["seed"]) for r in records[a]} for a in arms if records.get(a)]
    return set.intersection(*sets) if sets else set()
