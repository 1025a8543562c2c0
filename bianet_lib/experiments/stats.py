"""Statistics of the test-bed's grids: hierarchical bootstrap intervals over seeds and test
identities, Holm's correction per family, per-arm tables, the reproduction comparison.

Every function returns numbers (dicts, lists); the sentences and markdown made from them are in
``bianet_lib.reports.testbed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bianet_lib.experiments.preregistration import COMPARISONS, ENDPOINTS
from bianet_lib.experiments.records import (
    load_records,
    per_trial,
    trial_matrix,
)
from bianet_lib.experiments.world import DIRECTIONS, DOSES


def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, clusters: np.ndarray, n_boot: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict:
    """Difference of means (arm a - arm b) of per-trial values a [S_a, T], b [S_b, T] on the same
    trials, with an interval and a two-sided p from resampling both test identities (shared by
    the arms: a paired design) and training seeds (within each arm). The p is the bootstrap's
    (twice the smaller tail share of differences on either side of 0, at least 1 / n_boot)."""
    _, inv = np.unique(clusters, return_inverse=True)
    n_id = inv.max() + 1
    counts = np.bincount(inv, minlength=n_id).astype(float)
    sums = {k: np.stack([np.bincount(inv, weights=row, minlength=n_id) for row in m]) for k, m in (("a", a), ("b", b))}
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_id, np.full(n_id, 1.0 / n_id), size=n_boot).astype(float)  # [B, n_id]
    stats = {}
    for k, s in sums.items():
        per_seed = (w @ s.T) / (w @ counts)[:, None]  # [B, S]
        pick = rng.integers(0, s.shape[0], size=(n_boot, s.shape[0]))
        stats[k] = np.take_along_axis(per_seed, pick, 1).mean(1)
    diff = stats["a"] - stats["b"]
    alpha = (1 - level) / 2
    p = max(2 * min((diff <= 0).mean(), (diff >= 0).mean()), 1.0 / n_boot)
    return {"diff": float(a.mean() - b.mean()), "ci": [float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))],
            "p": float(min(p, 1.0)), "seeds": [int(a.shape[0]), int(b.shape[0])]}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adj[i] = min(running, 1.0)
    return adj.tolist()


def compare_arms(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000,
                 alpha: float = 0.05, comparisons=COMPARISONS) -> list[dict]:
    """Every pre-registered comparison of one family (``comparisons`` x ``ENDPOINTS`` x
    directions) whose arms have runs, with its hierarchical-bootstrap interval and p, and Holm's
    adjustment over the family."""
    rows = []
    for arm, ref in comparisons:
        if arm not in records or ref not in records:
            continue
        for endpoint in ENDPOINTS:
            for d in DIRECTIONS:
                r = hierarchical_bootstrap(per_trial(records[arm], d, endpoint), per_trial(records[ref], d, endpoint),
                                           clusters[d], n_boot)
                rows.append({"comparison": f"{arm} - {ref}", "endpoint": endpoint, "direction": d, **r})
    for row, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = p
        row["significant"] = p < alpha
    return rows


def arm_table(records: dict[str, list[dict]]) -> list[dict]:
    """Per arm, means over seeds: 1:2 accuracy, clean-twin accuracy and drop, the neutral-fill
    ceiling and the accuracy at every dose, per direction."""
    out = []
    for arm, recs in records.items():
        row: dict = {"arm": arm, "seeds": len(recs)}
        for d in DIRECTIONS:
            accs = [r["endpoints"]["directions"][d]["accuracy"] for r in recs]
            for cond in accs[0]:
                row[f"{d}_{cond}"] = float(np.mean([a[cond] for a in accs]))
            row[f"{d}_drop"] = row[f"{d}_dose0"] - row[f"{d}_dose1"]
            row[f"{d}_ceiling"] = row[f"{d}_filled"] - row[f"{d}_dose1"]
        out.append(row)
    return out


def attention_table(records: dict[str, list[dict]]) -> list[dict]:
    """Per arm with attention, modality and branch: mean mass on the interference tokens, their
    share (uniform attention) and the ratio, over seeds."""
    out = []
    for arm, recs in records.items():
        for modality in ("face", "voice"):
            for branch in ("pia", "nia"):
                vals = [r["endpoints"]["attention"].get(modality, {}).get(branch) for r in recs]
                vals = [v for v in vals if v]
                if vals:
                    out.append({"arm": arm, "modality": modality, "branch": branch, "seeds": len(vals),
                                "mass": float(np.mean([v["mass"] for v in vals])),
                                "share": float(np.mean([v["share"] for v in vals])),
                                "ratio": float(np.mean([v["ratio"] for v in vals]))})
    return out


PROBE_KEYS = (("face", "h_hat", "kind"), ("face", "h_tilde", "kind"), ("voice", "h_hat", "kind"),
              ("voice", "h_tilde", "kind"), ("face", "h_hat", "position"), ("face", "h_tilde", "position"))


def endpoint_table(records: dict[str, list[dict]]) -> list[dict]:
    """Per arm, means over seeds and both directions: 1:2 accuracy at every test-time dose
    (endpoint 3), the neutral-fill ceiling gain (endpoint 5) and the linear probes' accuracy
    (endpoint 4; None where the arm has no such embedding), with the probes' chance. Endpoints 1
    and 2 are the attention and arm tables."""
    out = []
    for row in arm_table(records):
        recs = records[row["arm"]]
        r: dict = {"arm": row["arm"], "seeds": row["seeds"],
                   "ceiling": float(np.mean([row[f"{d}_ceiling"] for d in DIRECTIONS]))}
        for dose in DOSES:
            r[f"dose{dose:g}"] = float(np.mean([row[f"{d}_dose{dose:g}"] for d in DIRECTIONS]))
        for modality, emb, target in PROBE_KEYS:
            vals = [rec["endpoints"]["probes"].get(f"{modality}/{emb}", {}).get(target) for rec in recs]
            vals = [v for v in vals if v and v.get("accuracy") is not None]
            key = f"{modality}/{emb}/{target}"
            r[key] = float(np.mean([v["accuracy"] for v in vals])) if len(vals) == len(recs) else None
            r[key + "/chance"] = float(np.mean([v["chance"] for v in vals])) if vals else None
        out.append(r)
    return out


def learned(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000) -> list[dict]:
    """Per run (arm, seed) and direction: 1:2 accuracy on the interfered split with a bootstrap
    interval over test identities, and whether it is above chance (the interval's lower end above
    0.5). A clean-twin drop only measures robustness for a run that learned: a model at chance has
    nothing to lose, so its drop is 0 whatever it attends to, and one such seed pulls its arm's
    mean drop towards 0."""
    from bianet_lib.experiments.endpoints import bootstrap_mean_ci

    out = []
    for arm, recs in records.items():
        for rec in recs:
            for d in DIRECTIONS:
                hit = trial_matrix(rec, d, "dose1").astype(float)
                mean, lo, hi = bootstrap_mean_ci(hit, clusters[d], n_boot)
                out.append({"arm": arm, "seed": int(rec["seed"]), "direction": d, "accuracy": mean,
                            "ci": [lo, hi], "above_chance": lo > 0.5})
    return out


def long_rows(long_dir: str | Path, base_dir: str | Path | None = None) -> list[dict]:
    """The convergence check, run by run: the same arm and seed trained 8 epochs (``base_dir``,
    default the sibling ``testbed`` folder) and ``TESTBED_LONG_EPOCHS`` (``long_dir``): validation
    accuracy by epoch, best epoch, and the endpoints' 1:2 accuracy and clean-twin drop of each."""
    long_dir = Path(long_dir)
    base = load_records(base_dir if base_dir is not None else long_dir.parent / "testbed")
    out = []
    for name, recs in load_records(long_dir).items():
        arm = name.removesuffix("_long")
        short = {int(r["seed"]): r for r in base.get(arm, [])}
        for rec in recs:
            row: dict = {"arm": arm, "seed": int(rec["seed"])}
            for tag, r in (("long", rec), ("short", short.get(int(rec["seed"])))):
                if r is None:
                    continue
                val = [h["val_acc"] for h in r["experiment"].get("history", [])]  # the first runs kept none
                if val:
                    row[f"{tag}_epochs"] = len(val)
                    row[f"{tag}_val"] = val
                    row[f"{tag}_best_epoch"] = int(np.argmax(val)) + 1
                for d in DIRECTIONS:
                    acc = r["endpoints"]["directions"][d]["accuracy"]
                    row[f"{tag}_{d}"] = acc["dose1"]
                    row[f"{tag}_{d}_drop"] = acc["dose0"] - acc["dose1"]
            out.append(row)
    return sorted(out, key=lambda r: (r["arm"], r["seed"]))


def still_rising(records: dict[str, list[dict]], last: int = 2, tol: float = 0.01) -> tuple[int, int]:
    """(runs whose validation 1:2 accuracy rose by more than ``tol`` over their last ``last``
    epochs, runs with at least ``last + 1`` recorded epochs): has a grid's budget converged?"""
    hists = [[h["val_acc"] for h in r["experiment"]["history"]] for recs in records.values() for r in recs
             if len(r["experiment"].get("history", [])) > last]
    return sum(1 for h in hists if h[-1] - h[-1 - last] > tol), len(hists)


# --- reproduction from nothing (notebook 07's CPU default) --------------------------------------
def reproduction_rows(fresh_dir: str | Path, committed_dir: str | Path) -> list[dict]:
    """Each run of ``fresh_dir`` (trained again from an empty results folder and an empty world
    cache) beside the committed run of the same name and seed in ``committed_dir``: validation
    accuracy per epoch, the endpoints' 1:2 accuracy and clean-twin drop per direction, the share
    of the 6,000 trials per direction on which both runs are right or wrong together, and the
    fresh run's wall time. A run missing from ``committed_dir`` is an error, not a skipped row."""
    committed = {(r["experiment"]["name"], int(r["seed"])): r
                 for recs in load_records(committed_dir).values() for r in recs}
    rows = []
    for recs in load_records(fresh_dir).values():
        for fresh in recs:
            key = (fresh["experiment"]["name"], int(fresh["seed"]))
            if key not in committed:
                raise KeyError(f"{fresh_dir}: run {key[0]} seed {key[1]} has no committed counterpart in {committed_dir}")
            old = committed[key]
            val_f = [h["val_acc"] for h in fresh["experiment"].get("history", [])]
            val_c = [h["val_acc"] for h in old["experiment"].get("history", [])]
            row: dict = {"arm": key[0], "seed": key[1], "wall_min": fresh["experiment"]["wall_s"] / 60,
                         "epochs": len(val_f), "val_max_abs_diff": float(np.max(np.abs(np.subtract(val_f, val_c))))
                         if val_f and len(val_f) == len(val_c) else float("nan")}
            for d in DIRECTIONS:
                ef, ec = fresh["endpoints"]["directions"][d], old["endpoints"]["directions"][d]
                row[f"{d}_fresh"], row[f"{d}_committed"] = ef["accuracy"]["dose1"], ec["accuracy"]["dose1"]
                row[f"{d}_drop_fresh"], row[f"{d}_drop_committed"] = ef["clean_twin_drop"], ec["clean_twin_drop"]
                row[f"{d}_agree"] = float(np.mean(trial_matrix(fresh, d, "dose1") == trial_matrix(old, d, "dose1")))
            row["identical"] = bool(row["val_max_abs_diff"] == 0 and all(row[f"{d}_agree"] == 1.0 for d in DIRECTIONS)
                                    and all(fresh["endpoints"]["directions"][d]["bits"] == old["endpoints"]["directions"][d]["bits"]
                                            for d in DIRECTIONS))
            rows.append(row)
    return sorted(rows, key=lambda r: (r["arm"], r["seed"]))


def seed_spread(records: dict[str, list[dict]], arm: str, direction: str) -> float:
    """Standard deviation over seeds of one arm's 1:2 accuracy (the yardstick a reproduction's
    difference is read against: a rerun need not be closer than two seeds are to each other)."""
    return float(np.std([r["endpoints"]["directions"][direction]["accuracy"]["dose1"] for r in records[arm]], ddof=1))


def sweep_means(records: dict[str, list[dict]], line: dict[float, str], direction: str,
                seeds: set[int] | None = None) -> dict[float, float]:
    """{knob value: mean over seeds of 1:2 accuracy (dose 1)} for one line of ``sweep_lines``,
    the values whose arm has finished runs only; ``seeds`` restricts every value to those seeds
    (without it, all of each arm's seeds: the numbers viz.plot_sweep draws)."""
    out = {}
    for x, arm in sorted(line.items()):
        accs = [r["endpoints"]["directions"][direction]["accuracy"]["dose1"] for r in records.get(arm, [])
                if seeds is None or int(r["seed"]) in seeds]
        if accs:
            out[x] = float(np.mean(accs))
    return out


# --- the fair test-bed (issue 25) ---------------------------------------------------------------
def headroom_recovered(base: np.ndarray, arm: np.ndarray, oracle: np.ndarray, clusters: np.ndarray,
                       n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """(baseline drop - arm drop) / (baseline drop - oracle drop) from per-trial clean-twin drops
    [S, T] of three arms whose row s is the same training seed (paired per seed) on the same
    trials. ``recovered``: the ratio of the seed-averaged differences; ``per_seed``: each seed's
    ratio (None where that seed's headroom is 0); ``ci``: percentile interval of the ratio over
    draws resampling test identities and seeds (one seed draw shared by the three arms), among
    the draws with positive headroom; ``no_headroom_share``: the share of draws without (1 when
    the oracle never beats the baseline: nothing to recover)."""
    base, arm, oracle = (np.atleast_2d(np.asarray(x, dtype=float)) for x in (base, arm, oracle))
    if not base.shape == arm.shape == oracle.shape or base.shape[1] != len(clusters):
        raise ValueError(f"drops must be [S, T] of one shape with T = len(clusters), got {base.shape}, "
                         f"{arm.shape}, {oracle.shape}, {len(clusters)}")
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    n_id, n_seed = inv.max() + 1, base.shape[0]
    counts = np.bincount(inv, minlength=n_id).astype(float)
    gain = np.stack([np.bincount(inv, weights=r, minlength=n_id) for r in base - arm])    # [S, n_id]
    room = np.stack([np.bincount(inv, weights=r, minlength=n_id) for r in base - oracle])
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_id, np.full(n_id, 1.0 / n_id), size=n_boot).astype(float)      # [B, n_id]
    pick = rng.integers(0, n_seed, size=(n_boot, n_seed))
    num = np.take_along_axis((w @ gain.T) / (w @ counts)[:, None], pick, 1).mean(1)
    den = np.take_along_axis((w @ room.T) / (w @ counts)[:, None], pick, 1).mean(1)
    ok = den > 0
    alpha = (1 - level) / 2
    ci = ([float(np.quantile(num[ok] / den[ok], alpha)), float(np.quantile(num[ok] / den[ok], 1 - alpha))]
          if ok.any() else [None, None])
    g, r = (base - arm).mean(1), (base - oracle).mean(1)
    return {"recovered": float(g.mean() / r.mean()) if r.mean() > 0 else None,
            "per_seed": [float(a / b) if b != 0 else None for a, b in zip(g, r, strict=True)],
            "headroom": float(r.mean()), "ci": ci, "no_headroom_share": float(1 - ok.mean()),
            "seeds": int(n_seed)}


def fair_headroom(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], arms=("bianet", "supervised", "control"),
                  n_boot: int = 2000) -> list[dict]:
    """``headroom_recovered`` of each arm per direction, on the seeds the baseline, the oracle and
    the arm all finished (paired per seed)."""
    from bianet_lib.experiments.records import shared_seeds

    rows = []
    for a in arms:
        if not all(records.get(k) for k in ("baseline", "oracle", a)):
            continue
        seeds = shared_seeds(records, ("baseline", "oracle", a))
        if not seeds:
            continue
        pick = {k: [r for r in records[k] if int(r["seed"]) in seeds] for k in ("baseline", "oracle", a)}
        for d in DIRECTIONS:
            drops = {k: per_trial(v, d, "clean_twin_drop") for k, v in pick.items()}
            rows.append({"arm": a, "direction": d,
                         **headroom_recovered(drops["baseline"], drops[a], drops["oracle"], clusters[d], n_boot)})
    return rows


def _read_rules(rows: list[dict], rules: dict, directions) -> str:
    """The first rule (``{"improves": pairs, "not": pairs}``) the ``compare_arms`` rows satisfy,
    where a pair (a, b) improves when a - b in the decision endpoint is below 0 and significant
    after Holm in every one of ``directions``; "other" if none."""
    from bianet_lib.experiments.preregistration import FAIR_DECISION_ENDPOINT

    def improves(a: str, b: str) -> bool:
        hits = [r for r in rows if r["comparison"] == f"{a} - {b}" and r["endpoint"] == FAIR_DECISION_ENDPOINT
                and r["direction"] in directions]
        return len(hits) == len(directions) and all(r["significant"] and r["diff"] < 0 for r in hits)

    for name, rule in rules.items():
        if all(improves(*c) for c in rule["improves"]) and not any(improves(*c) for c in rule["not"]):
            return name
    return "other"


def fair_outcome(rows: list[dict]) -> str:
    """Which pre-declared outcome (preregistration.FAIR_OUTCOMES) the fair family's
    ``compare_arms`` rows show (both directions), else "other"."""
    from bianet_lib.experiments.preregistration import FAIR_OUTCOMES

    return _read_rules(rows, FAIR_OUTCOMES, DIRECTIONS)


def fair_exploratory_reading(rows: list[dict]) -> str:
    """Which pre-declared reading (preregistration.FAIR_EXPLORATORY_READINGS) the exploratory
    family's ``compare_arms`` rows show in FAIR_EXPLORATORY_DIRECTION alone, else "other"."""
    from bianet_lib.experiments.preregistration import (
        FAIR_EXPLORATORY_DIRECTION,
        FAIR_EXPLORATORY_READINGS,
    )

    return _read_rules(rows, FAIR_EXPLORATORY_READINGS, (FAIR_EXPLORATORY_DIRECTION,))


def branch_trials(records: list[dict], direction: str, part: str) -> np.ndarray:
    """[seeds, T] per-trial correctness of one part of the counterfactual prediction
    (endpoints.branch_accuracies: "z", "z_pos" or "minus_z_neg") of one arm's runs."""
    from bianet_lib.experiments.bits import unpack_bits

    rows = []
    for rec in records:
        b = rec["endpoints"]["branches"][direction]
        rows.append(unpack_bits(b["bits"][part], b["n_trials"]).astype(float))
    return np.stack(rows)


def branch_table(records: dict[str, list[dict]]) -> list[dict]:
    """Per arm with a negative branch and direction, means over seeds of the 1:2 accuracy of z,
    z_pos alone and -z_neg alone, and of corr(dz_pos, dz_neg)."""
    out = []
    for arm, recs in records.items():
        recs = [r for r in recs if r["endpoints"].get("branches")]
        for d in DIRECTIONS if recs else ():
            bs = [r["endpoints"]["branches"][d] for r in recs]
            out.append({"arm": arm, "direction": d, "seeds": len(bs),
                        **{k: float(np.mean([b[k] for b in bs])) for k in ("z", "z_pos", "minus_z_neg", "corr_dz_pos_neg")}})
    return out


def branch_comparison(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000,
                      alpha: float = 0.05) -> list[dict]:
    """preregistration.FAIR_BRANCH_COMPARISON (supervised - BIANet in -z_neg alone's 1:2 accuracy)
    per direction on the seeds both arms finished: hierarchical bootstrap, Holm over the
    directions; [] until both arms have runs with branch endpoints."""
    from bianet_lib.experiments.preregistration import FAIR_BRANCH_COMPARISON
    from bianet_lib.experiments.records import shared_seeds

    a, b, part = FAIR_BRANCH_COMPARISON
    seeds = shared_seeds(records, (a, b)) if records.get(a) and records.get(b) else set()
    if not seeds:
        return []
    pick = {k: [r for r in records[k] if int(r["seed"]) in seeds] for k in (a, b)}
    rows = [{"comparison": f"{a} - {b}", "part": part, "direction": d,
             **hierarchical_bootstrap(branch_trials(pick[a], d, part), branch_trials(pick[b], d, part),
                                      clusters[d], n_boot)} for d in DIRECTIONS]
    for row, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"], row["significant"] = p, p < alpha
    return rows


def branch_reading(rows: list[dict]) -> str | None:
    """FAIR_BRANCH_COMPARISON's pre-declared reading: "changes" (significant in both directions),
    "unchanged" (in neither), "mixed"; None without rows."""
    if not rows:
        return None
    n = sum(r["significant"] for r in rows)
    return "changes" if n == len(rows) else "unchanged" if n == 0 else "mixed"
