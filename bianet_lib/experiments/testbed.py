"""The local-interference test-bed (issue 11): its world, the baseline-only calibration of the
interference strength, and the mechanism endpoints every run of its grid records.

The world (``TESTBED_WORLD``): SynthVox's ``local`` preset (global nuisance at a low fixed
level; on half the faces a patch of another identity's face or a textured occluder, on half the
clips time-local bursts of another identity's voice or of noise, every one with its mask) with
300 training and 300 test identities, drawn at the CPU grid's scale (32 px faces, 0.5 s clips,
8 epochs); the issue's 1,500 training identities did not learn at that scale
(``TESTBED_WORLD``'s comment) and are the GPU setting. One knob sets the strength:
``world_local_scale`` multiplies the preset's shares (faces 0.3 of the image, voices 0.4 of the
clip, at +6 dB).

Pre-registration. The calibration grid (``experiments.calibration_runs``) trains the *baseline alone* at each of ``CALIBRATION_SCALES``
and measures its clean-twin drop at 1:2 (accuracy on the clean twins of the test split minus
accuracy on the split itself, same trials). ``choose_scale`` applies the rule fixed here before
any run: the smallest scale whose drop is at least ``CALIBRATION_TARGET`` in both directions.
The chosen value is written into ``CALIBRATED_SCALE`` and committed with the calibration's
results before any BIANet, PIA, NIA or control run on this world; it is never tuned on them
(``tests/test_testbed.py`` checks it equals the rule applied to the committed calibration).

Endpoints (``run_endpoints``), per run, on one fixed list of 1:2 trials per direction (the same
trials for every arm and seed, so arms are compared per trial):

1. attention mass of PIA and NIA on the ground-truth interference tokens against their share;
2. correctness per trial on the test split and on its clean twin (dose 0): the clean-twin drop;
3. dose-response: the same trials at test-time doses 0, 0.5, 1, 1.5 (no retraining);
4. linear probes of h_hat and h_tilde for the interference's kind and position;
5. the zero-training ceiling: the same trials with every interference region replaced by a
   neutral fill (faces: the image's mean colour; voices: silence).

Correctness is stored per trial (bit-packed) so that any analysis can pair arms afterwards
(``trial_matrix``).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import torch

#: The test-bed's world on top of the CPU grid's scale (experiments.REDUCED_BASE): 300 test
#: identities (6,000 1:2 trials per direction), 300 training identities. 1,500 training
#: identities did not learn at this scale: the baseline stayed at chance (validation 1:2 0.51)
#: after 552 steps with 24 samples per identity, and after 552 steps with 8 (0.51, also without
#: the identity loss), while 300 identities left chance after about 130 steps (measured on the
#: 2-core CPU machine, 2026-11-26); the 1,500-identity world is the GPU setting (``TESTBED_GPU_WORLD``).
#: 8 epochs, not the CPU grid's 4: a first, baseline-only calibration at 4 epochs left the
#: baseline at 0.65 (1:2 V-F) at scale 1 (undertrained; results/experiments/testbed-calibration-4epochs).
TESTBED_WORLD = ["world_preset=local", "world_n_train=300", "world_n_val=100", "world_n_test=300",
                 "world_per_id_train=24", "world_per_id_eval=6", "epochs=8"]
TESTBED_GPU_WORLD = ["world_preset=local", "world_n_train=1500", "world_n_val=100", "world_n_test=300",
                     "world_per_id_train=24", "world_per_id_eval=6"]
#: Strengths tried on the baseline (multiplying faces 0.3, voices 0.4 of the sample; half the
#: samples carry interference). The p = 1 world's attempts (0.5-2 at 8 epochs, 0.5-1 at 4) are
#: kept in results/testbed-history/.
CALIBRATION_SCALES = (1.0, 1.5, 2.0, 2.5)
CALIBRATION_SEEDS = (0,)
#: The baseline's clean-twin drop at 1:2 the world must reach in both directions (issue 11).
CALIBRATION_TARGET = 0.10
#: The strength every model is trained and tested at: set from the committed calibration
#: (None until it exists; the test-bed grid refuses to run before). The rule chose 2 (baseline
#: drop 0.104 V-F / 0.135 F-V; 1.5 gave 0.069 / 0.077), committed before any other arm ran.
CALIBRATED_SCALE: float | None = 2.0
#: The strength of the converged grid (experiments "testbed-16": every arm at
#: experiments.TESTBED_LONG_EPOCHS, since the 8-epoch curves were still rising): the same rule on its
#: own baseline-only calibration at that budget ("testbed-calibration-16": drops V-F / F-V
#: 0.049 / 0.052 at 1, 0.076 / 0.099 at 1.5, 0.081 / 0.106 at 2, 0.105 / 0.141 at 2.5; the
#: baseline learns the interference away with more training), set and committed before any run of
#: that grid (tested from the commit history).
CALIBRATED_SCALE_LONG: float | None = 2.5

DOSES = (0.0, 0.5, 1.0, 1.5)
TRIAL_SEED, TRIALS_PER_ID = 7, 20  # 6,000 trials per direction on 300 test identities
DIRECTIONS = ("vf", "fv")
LABELS = {"vf": "V-F", "fv": "F-V"}
N_ATTENTION = 512  # samples per modality for the attention-mass endpoint


# --- per-trial bits ---------------------------------------------------------------------------
def pack_bits(correct) -> str:
    """bool [T] -> base64 of np.packbits (the length is stored beside it)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` for a vector of length n."""
    raw = np.frombuffer(base64.b64decode(text.encode("ascii")), dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"packed bits hold {len(raw) * 8} bits, expected {n}")
    return np.unpackbits(raw)[:n].astype(bool)


# --- the test split at other doses ------------------------------------------------------------
def test_split_at(cfg, dose: float, base=None):
    """The config's test split regenerated at ``dose`` x its local scale (cached beside the world;
    dose 1 is ``base`` when given)."""
    from bianet_lib.data.sources import world_cache_path, world_config
    from bianet_lib.data.synthvox import regenerate_split
    from bianet_lib.engine.safeio import atomic_write_bytes

    if dose == 1.0 and base is not None:
        return base
    path = world_cache_path(cfg)
    path = path.with_name(f"{path.stem}-test-dose{dose:g}.pt")
    if path.is_file():
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - a damaged cache is regenerated
            pass
    split = regenerate_split(world_config(cfg), cfg.world_seed, "test", dose)
    buf = io.BytesIO()
    torch.save(split, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return split


def endpoint_trials(test) -> dict:
    """The fixed 1:2 trials of the endpoints, per direction."""
    from bianet_lib.data.trials import make_matching_trials

    return {d: make_matching_trials(test, d, 2, TRIALS_PER_ID, TRIAL_SEED) for d in DIRECTIONS}


# --- 1. attention mass ------------------------------------------------------------------------
@torch.no_grad()
def attention_masses(model, test, device="cpu", n: int = N_ATTENTION) -> dict:
    """Mean attention mass of PIA's and NIA's rows on the interference tokens, against the mean
    share of those tokens (uniform attention), over the first ``n`` interfered samples of each
    modality. {} for a model without BIANet's intervention."""
    from bianet_lib.data.interference import (
        split_face_masks,
        split_voice_masks,
        token_share_1d,
        token_share_2d,
    )
    from bianet_lib.engine.diagnostics import _inputs
    from bianet_lib.experiments.endpoints import attention_mass_on_mask

    model.eval()
    out: dict = {}
    for modality in ("face", "voice"):
        mod = model.face_intervention if modality == "face" else model.voice_intervention
        if mod is None or mod.axis != "tokens":
            continue
        if modality == "face":
            masks = split_face_masks(test)
            has = masks.flatten(1).any(1)
        else:
            masks = split_voice_masks(test)
            has = masks.any(1)
        idx = torch.nonzero(has).flatten()[:n]
        if len(idx) == 0:
            continue
        sums: dict = {}
        for start in range(0, len(idx), 128):
            chunk = idx[start:start + 128]
            encoder = model.face_encoder if modality == "face" else model.voice_encoder
            x = encoder(_inputs(test, modality, chunk).to(device))
            if modality == "face":
                share = token_share_2d(masks[chunk], tuple(x.shape[-2:]))
            else:
                # row-major (H, W) tokens; W is time: every row of the map shares a column's share
                share = token_share_1d(masks[chunk], x.shape[-1]).repeat(1, x.shape[-2])
            res = mod(x)
            for name, attn in (("pia", res.positive_attention), ("nia", res.negative_attention)):
                if attn is None:
                    continue
                mass, base = attention_mass_on_mask(attn.cpu(), share)
                s = sums.setdefault(name, [0.0, 0.0, 0])
                s[0] += float(mass.sum())
                s[1] += float(base.sum())
                s[2] += len(chunk)
        out[modality] = {name: {"mass": m / k, "share": b / k, "ratio": m / b if b > 0 else float("nan"),
                                "n": k} for name, (m, b, k) in sums.items()}
    return out


# --- 4. probes ----------------------------------------------------------------------------------
def local_labels(split, modality: str) -> dict[str, np.ndarray]:
    """Per sample: ``kind`` of local interference (none / face / texture, none / speaker / noise)
    and, for samples that carry it, its ``position``: faces the box centre's image quadrant
    (0-3), voices the first burst's place in the room its segment leaves it, in thirds (0-2); -1
    without (or, for a burst that fills its segment, without a position)."""
    meta = split.face_meta if modality == "face" else split.voice_meta
    kind = meta["local_kind"].astype(str).to_numpy() if "local_kind" in meta else np.full(len(meta), "none")
    pos = np.full(len(meta), -1)
    if modality == "face" and split.face_boxes is not None:
        b = np.asarray(split.face_boxes, dtype=float)
        size = split.faces.shape[-1]
        has = b[:, 2] > b[:, 0]
        cy, cx = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        pos = np.where(has, 2 * (cy >= size / 2) + (cx >= size / 2), -1)
    elif modality == "voice" and split.voice_intervals is not None:
        # where the first burst sits in the room its segment leaves it (the generator's u);
        # a burst that fills its segment has no position
        iv = np.asarray(split.voice_intervals, dtype=float)
        seg_end = np.floor(split.voices.shape[1] / iv.shape[1])
        room = seg_end - (iv[:, 0, 1] - iv[:, 0, 0])
        has = (iv[:, 0, 1] > iv[:, 0, 0]) & (room >= 3)
        u = np.where(has, iv[:, 0, 0] / np.maximum(room, 1), 0.0)
        pos = np.where(has, np.minimum((3 * u).astype(int), 2), -1)
    return {"kind": kind, "position": pos}


@torch.no_grad()
def local_probes(model, test, device="cpu", scorer=None) -> dict:
    """Linear probes (folds grouped by identity) of h_hat and, with NIA, h_tilde for the local
    interference's kind (all samples) and position (samples that carry it). ``scorer``: a
    ``BIANetScorer`` of ``model`` whose embeddings of ``test`` may already be cached."""
    from bianet_lib.engine.diagnostics import linear_probe
    from bianet_lib.engine.scoring import BIANetScorer

    scorer = scorer if scorer is not None else BIANetScorer(model, device)
    out = {}
    for modality in ("face", "voice"):
        emb = scorer.embed(test, modality)
        ids = (test.face_meta if modality == "face" else test.voice_meta)["identity"].to_numpy()
        labels = local_labels(test, modality)
        has = labels["position"] >= 0
        for part, name in ((0, "h_hat"), (1, "h_tilde")):
            if part >= emb.shape[1]:
                continue
            x = emb[:, part].double()
            out[f"{modality}/{name}"] = {
                "kind": _finite(linear_probe(x, labels["kind"], ids)),
                "position": _finite(linear_probe(x[torch.as_tensor(has)], labels["position"][has], ids[has]))}
    return out


def _finite(probe: dict) -> dict:
    """A probe result with NaN (one class only: nothing to probe) stored as None."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in probe.items()}


# --- 2, 3, 5: per-trial correctness under each condition --------------------------------------
def run_endpoints(model, cfg, world: dict, device="cpu") -> dict:
    """Every endpoint of one trained model on the test-bed (see the module docstring)."""
    from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer
    from bianet_lib.experiments.endpoints import neutral_fill, trial_correct

    test = world["test"]
    if test.face_boxes is None and test.voice_intervals is None:
        raise ValueError("run_endpoints needs a world with local interference (world_preset=local)")
    trials = endpoint_trials(test)
    conditions = {f"dose{d:g}": test_split_at(cfg, d, base=test) for d in DOSES}
    conditions["filled"] = neutral_fill(test)
    # the route the run was selected on: the peer's classifier is never trained (select_route=cosine)
    scorer = (EmbeddingCosineScorer if cfg.select_route == "cosine" else BIANetScorer)(model, device)
    record: dict = {"route": cfg.select_route, "trial_seed": TRIAL_SEED, "trials_per_id": TRIALS_PER_ID,
                    "doses": list(DOSES), "local_scale": cfg.world_local_scale, "directions": {}}
    for d, tr in trials.items():
        rec = {"n_trials": len(tr.query), "accuracy": {}, "bits": {}}
        for name, split in conditions.items():
            correct = trial_correct(scorer, split, tr, seed=TRIAL_SEED)
            rec["accuracy"][name] = float(correct.mean())
            rec["bits"][name] = pack_bits(correct)
        rec["clean_twin_drop"] = rec["accuracy"]["dose0"] - rec["accuracy"]["dose1"]
        rec["ceiling_gain"] = rec["accuracy"]["filled"] - rec["accuracy"]["dose1"]
        record["directions"][d] = rec
    record["attention"] = attention_masses(model, test, device)
    record["probes"] = local_probes(model, test, device, scorer)  # the same scorer: test embedded once
    return record


def trial_matrix(record: dict, direction: str, condition: str) -> np.ndarray:
    """bool [T]: per-trial correctness of one run's endpoints under one condition."""
    rec = record["endpoints"]["directions"][direction]
    return unpack_bits(rec["bits"][condition], rec["n_trials"])


# --- calibration ------------------------------------------------------------------------------
def calibration_rows(results_dir: str | Path) -> list[dict]:
    """One row per finished calibration run: scale, seed, accuracies and drops per direction."""
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        rec = json.loads(path.read_text())
        ep = rec.get("endpoints")
        if not ep:
            continue
        row = {"run": path.stem, "scale": float(ep["local_scale"]), "seed": int(rec["seed"])}
        for d in DIRECTIONS:
            acc = ep["directions"][d]["accuracy"]
            row[f"{d}_acc"] = acc["dose1"]
            row[f"{d}_clean"] = acc["dose0"]
            row[f"{d}_drop"] = ep["directions"][d]["clean_twin_drop"]
            row[f"{d}_filled"] = acc["filled"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["scale"], r["seed"]))


def choose_scale(rows: list[dict], target: float = CALIBRATION_TARGET) -> float | None:
    """The pre-registered rule: the smallest scale whose mean (over seeds) baseline clean-twin
    drop at 1:2 is >= ``target`` in both directions; None if no scale tried reaches it."""
    by_scale: dict[float, list[dict]] = {}
    for r in rows:
        by_scale.setdefault(r["scale"], []).append(r)
    for scale in sorted(by_scale):
        rs = by_scale[scale]
        if all(np.mean([r[f"{d}_drop"] for r in rs]) >= target for d in DIRECTIONS):
            return scale
    return None


def calibration_markdown(rows: list[dict], target: float = CALIBRATION_TARGET) -> str:
    """The calibration as a markdown table, with the rule's choice under it."""
    from bianet_lib.data.synthvox import PRESETS

    face, voice = PRESETS["local"]["face_local"], PRESETS["local"]["voice_local"]
    lines = ["| scale | face share | voice share | seed | V-F 1:2 | V-F clean twin | V-F drop | "
             "F-V 1:2 | F-V clean twin | F-V drop | V-F / F-V, interference filled |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scale']:g} | {min(face * r['scale'], 1):.2f} | {min(voice * r['scale'], 1):.2f} | "
                     f"{r['seed']} | {r['vf_acc']:.3f} | {r['vf_clean']:.3f} | {r['vf_drop']:+.3f} | "
                     f"{r['fv_acc']:.3f} | {r['fv_clean']:.3f} | {r['fv_drop']:+.3f} | "
                     f"{r['vf_filled']:.3f} / {r['fv_filled']:.3f} |")
    chosen = choose_scale(rows, target)
    rule = (f"Rule (fixed before the runs): the smallest scale whose baseline clean-twin drop at 1:2 is "
            f">= {target:g} in both directions.")
    verdict = (f"Chosen: **scale {chosen:g}**." if chosen is not None
               else "No scale tried reaches it: the world needs stronger interference.")
    return "\n".join(lines) + f"\n\n{rule} {verdict}"


# --- the grid's analysis ------------------------------------------------------------------------
#: The pre-registered comparisons (arm, reference) and endpoints, tested together under Holm.
COMPARISONS = (("pia", "baseline"), ("nia", "baseline"), ("bianet", "baseline"), ("control", "baseline"),
               ("bianet", "control"))
ENDPOINTS = ("accuracy", "clean_twin_drop")
#: The second family, pre-registered with its grid (experiments.TESTBED_SECONDARY) before any of its
#: runs: the peer against the baseline (Table 1) and BIANet against BIANet without the curriculum
#: (Table 7), Holm-corrected on their own (8 tests): they ask other questions than the first family.
SECONDARY_COMPARISONS = (("peer", "baseline"), ("bianet", "curriculum_constant"))
#: The third family, pre-registered with the converged grid's second part (experiments.TABLE6_VARIANTS)
#: before any of its runs: Table 6, BIANet with the threshold epsilon fixed at the paper's values
#: against the learned one, Holm-corrected on its own (12 tests).
TABLE6_COMPARISONS = (("epsilon_0.01", "bianet"), ("epsilon_0.1", "bianet"), ("epsilon_0.2", "bianet"))
#: The fourth family, pre-registered with the converged grid's third part (experiments.FIG7_VARIANTS,
#: grid ``testbed-16-rest``) before any of its runs: Fig. 7, BIANet at each other temperature tau_1
#: (PIA, Eq. 12, default 5) and tau_2 (Eq. 19, default 10) against the default BIANet, Holm-corrected on
#: its own (8 comparisons x 2 endpoints x 2 directions = 32 tests).
FIG7_COMPARISONS = tuple((f"{which}_{tau:g}", "bianet") for which, default in (("tau1", 5.0), ("tau2", 10.0))
                         for tau in (0.5, 1.0, 5.0, 10.0, 20.0) if tau != default)
#: The fifth family, pre-registered with the same grid: the train-only shortcut rho (the course's
#: bias study; the test split is the same at every rho, so runs pair trial by trial): does the
#: shortcut cost the baseline, does BIANet (or one of its parts, or its curriculum) lose less to it
#: than the baseline trained on the same shortcut (6 comparisons x 2 x 2 = 24 tests).
BIAS_COMPARISONS = (("baseline_rho0.9", "baseline"), ("bianet_rho0.5", "baseline_rho0.5"),
                    ("bianet_rho0.9", "baseline_rho0.9"), ("pia_rho0.9", "baseline_rho0.9"),
                    ("nia_rho0.9", "baseline_rho0.9"), ("bianet_rho0.9", "curriculum_constant_rho0.9"))
#: Every family after the first, as the README's tables title them.
LATER_FAMILIES = (("Second pre-registered family (the peer, Table 1; the curriculum, Table 7)", SECONDARY_COMPARISONS),
                  ("Third pre-registered family (Table 6: the threshold epsilon fixed at the paper's values "
                   "against the learned one)", TABLE6_COMPARISONS),
                  ("Fourth pre-registered family (Fig. 7: the temperatures tau_1 and tau_2 against the defaults)",
                   FIG7_COMPARISONS),
                  ("Fifth pre-registered family (the bias study: a train-only shortcut at rho 0.5 and 0.9)",
                   BIAS_COMPARISONS))


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


def endpoint_markdown(records: dict[str, list[dict]]) -> list[str]:
    """The markdown lines of ``endpoint_table``: every arm's dose-response, ceiling and probes."""
    rows = endpoint_table(records)
    if not rows:
        return []

    def chance(key):
        vals = [r[key + "/chance"] for r in rows if r[key + "/chance"] is not None]
        return f" (chance {np.mean(vals):.2f})" if vals else ""

    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    probe_cols = [f"{m} {t}: {e}{chance(f'{m}/{e}/{t}')}" for m, e, t in PROBE_KEYS]
    lines = ["", "Every arm's dose-response (1:2 accuracy at test-time strengths "
             + ", ".join(f"{d:g}" for d in DOSES) + " without retraining), the neutral-fill ceiling "
             "(filled minus interfered) and the linear probes of its embeddings for the interference's "
             "kind and position; means over seeds and both directions:", "",
             "| arm | seeds | " + " | ".join(f"dose {d:g}" for d in DOSES) + " | ceiling | "
             + " | ".join(probe_cols) + " |",
             "|---|---:|" + "---:|" * (len(DOSES) + 1 + len(PROBE_KEYS))]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seeds']} | " + " | ".join(f"{r[f'dose{d:g}']:.3f}" for d in DOSES)
                     + f" | {r['ceiling']:+.3f} | "
                     + " | ".join(cell(r[f"{m}/{e}/{t}"]) for m, e, t in PROBE_KEYS) + " |")
    return lines


def expected_runs(store: str) -> set[tuple[str, int]]:
    """(run name, seed) of every run that the grids writing to the store ``store`` define."""
    from bianet_lib.experiments.grids import GRIDS

    return {(r.name, r.seed) for g in GRIDS.values() if g.store == store for r in g.runs}


def testbed_markdown(results_dir: str | Path, n_boot: int = 2000) -> str:
    """The grid's three tables (arms, pre-registered comparisons under Holm, attention mass), in
    markdown, from the run JSONs in ``results_dir`` (deterministic: fixed bootstrap seed)."""
    records = load_records(results_dir)
    if not records:
        return "No test-bed run has finished yet."
    first = next(iter(records.values()))[0]
    rows = arm_table(records)
    lines = ["| arm | seeds | V-F 1:2 | F-V 1:2 | V-F clean twin | F-V clean twin | V-F drop | F-V drop | "
             "V-F / F-V interference filled |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seeds']} | {r['vf_dose1']:.3f} | {r['fv_dose1']:.3f} | {r['vf_dose0']:.3f} | "
                     f"{r['fv_dose0']:.3f} | {r['vf_drop']:+.3f} | {r['fv_drop']:+.3f} | "
                     f"{r['vf_filled']:.3f} / {r['fv_filled']:.3f} |")
    clusters = clusters_for(first)
    comps = compare_arms(records, clusters, n_boot)
    lines += _comparison_lines(comps)
    verdict = [_verdict(comps, "pre-registered comparisons")]
    runs = learned(records, clusters, n_boot)
    stuck = sorted({(r["arm"], r["seed"]) for r in runs if not r["above_chance"]})
    if stuck:
        verdict.append("Runs not above chance (their drop of about 0 is nothing to lose, not robustness): "
                       + ", ".join(f"{a} seed {s}" for a, s in stuck) + ".")
    att = attention_table(records)
    if att:
        ratios = [a["ratio"] for a in att]
        verdict.append(f"PIA's and NIA's attention mass on the interference tokens, relative to uniform attention "
                       f"(1 = blind to it): {min(ratios):.2f} to {max(ratios):.2f}.")
        full = sorted({a["modality"] for a in att if a["share"] >= 0.99})
        if full:
            verdict.append(f"On {' and '.join(full)}, the interference covers (nearly) every token of the samples "
                           "that carry it at this strength, so attention there can neither seek nor avoid it: "
                           "that endpoint is uninformative by construction, and the test-bed is local on the "
                           "other modality only.")
    expected = expected_runs(Path(results_dir).name)
    done, total = _family_progress(records, expected, COMPARISONS)
    if done < total:
        verdict.insert(0, f"INTERIM: {done} of the {total} pre-registered runs of this family "
                          "have finished (seed-major); the comparisons are a progress report, the pre-registered "
                          "analysis is the one over all of them.")
    lines += ["", " ".join(verdict)]
    if att:
        lines += ["", "| arm | modality | branch | attention mass on interference | uniform (its share) | ratio |",
                  "|---|---|---|---:|---:|---:|"]
        for a in att:
            lines.append(f"| {a['arm']} | {a['modality']} | {a['branch'].upper()} | {a['mass']:.3f} | "
                         f"{a['share']:.3f} | {a['ratio']:.2f} |")
    lines += endpoint_markdown(records)
    for title, family in LATER_FAMILIES:
        comps_f = compare_arms(records, clusters, n_boot, comparisons=family)
        if not comps_f:
            continue
        lines += ["", f"{title}, Holm-corrected on its own:", *_comparison_lines(comps_f), "",
                  family_verdict(records, comps_f, family, expected)]
    return "\n".join(lines)


def _family_progress(records: dict[str, list[dict]], expected: set[tuple[str, int]], family) -> tuple[int, int]:
    """(finished, pre-registered) runs (arm, seed) of a family's arms in a store."""
    arms = {a for pair in family for a in pair}
    want = {(a, s) for a, s in expected if a in arms}
    have = {(a, int(r["seed"])) for a, recs in records.items() for r in recs}
    return len(want & have), len(want)


def family_verdict(records: dict[str, list[dict]], comps: list[dict], family, expected: set[tuple[str, int]]) -> str:
    """One later family's sentence: how many of its comparisons are significant after its own Holm
    correction, prefixed INTERIM while some of its pre-registered runs (``expected``) are missing."""
    done, total = _family_progress(records, expected, family)
    status = f"INTERIM: {done} of its {total} pre-registered runs have finished; " if done < total else ""
    return status + _verdict(comps, "comparisons of this family")


def _comparison_lines(comps: list[dict]) -> list[str]:
    if not comps:
        return []
    lines = ["", "| comparison | endpoint | direction | difference | 95% interval | p | p (Holm) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for c in comps:
        lines.append(f"| {c['comparison']} | {c['endpoint'].replace('_', ' ')} | {c['direction'].upper()} | "
                     f"{c['diff']:+.3f} | [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {c['p']:.3f} | "
                     f"{c['p_holm']:.3f}{' *' if c['significant'] else ''} |")
    return lines


def _verdict(comps: list[dict], what: str) -> str:
    sig = [c for c in comps if c["significant"]]
    return (f"{len(sig)} of {len(comps)} {what} are significant after Holm"
            + (": " + "; ".join(f"{c['comparison']}, {c['endpoint'].replace('_', ' ')}, {c['direction'].upper()} "
                                f"{c['diff']:+.3f}" for c in sig) if sig else "") + ".")


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


def long_markdown(long_dir: str | Path) -> str:
    """The convergence check's table (``long_rows``) in markdown, with one sentence from it. The
    long run's epoch 8 is not the 8-epoch run: the learning-rate milestones and the curriculum
    and adversarial ramps are spread over all its epochs."""
    rows = [r for r in long_rows(long_dir) if "short_vf" in r and "long_val" in r]
    if not rows:
        return "No convergence-check run has finished yet."
    n = rows[0]["long_epochs"]
    lines = [f"| arm | seed | validation 1:2 at epoch 8 | at epoch {n} | best epoch of {n} | V-F / F-V 1:2, 8 epochs | "
             f"V-F / F-V 1:2, {n} epochs | V-F / F-V drop, 8 epochs | V-F / F-V drop, {n} epochs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['long_val'][7]:.3f} | {r['long_val'][-1]:.3f} | "
                     f"{r['long_best_epoch']} | {r['short_vf']:.3f} / {r['short_fv']:.3f} | "
                     f"{r['long_vf']:.3f} / {r['long_fv']:.3f} | {r['short_vf_drop']:+.3f} / {r['short_fv_drop']:+.3f} | "
                     f"{r['long_vf_drop']:+.3f} / {r['long_fv_drop']:+.3f} |")
    gain = np.mean([(r["long_vf"] - r["short_vf"] + r["long_fv"] - r["short_fv"]) / 2 for r in rows])
    late = np.mean([r["long_val"][-1] - r["long_val"][7] for r in rows])
    lines += ["", f"Over these {len(rows)} runs, doubling the epochs changed the endpoints' 1:2 accuracy by "
                  f"{gain:+.3f} on average and validation accuracy moved {late:+.3f} from epoch 8 to epoch {n}."]
    return "\n".join(lines)


def verdict_lines(records: dict[str, list[dict]], n_boot: int = 2000, comps: list[dict] | None = None) -> list[str]:
    """What a grid's numbers say, as sentences assembled from them (notebook 07 prints these, so a
    re-run cannot leave its text and its tables disagreeing): which runs left chance; every
    pre-registered comparison with its interval and Holm p; the neutral-fill ceiling; where PIA's
    and NIA's attention goes against the paper's prediction; whether the embeddings encode the
    interference's kind; the dose-response beyond the trained strength. ``comps``: the first family's
    ``compare_arms`` rows when the caller has them already (computed here otherwise)."""
    if not records:
        return ["No run of this grid has finished yet."]
    clusters = clusters_for(next(iter(records.values()))[0])
    out = []
    runs = learned(records, clusters, n_boot)
    ok = {}
    for r in runs:
        ok[(r["arm"], r["seed"])] = ok.get((r["arm"], r["seed"]), True) and r["above_chance"]
        if not r["above_chance"]:
            out.append(f"{r['arm']} seed {r['seed']} {r['direction'].upper()}: 1:2 accuracy {r['accuracy']:.3f} "
                       f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]: NOT above chance; its drop of about 0 is nothing to "
                       "lose, not robustness")
    out.append(f"{sum(ok.values())} of {len(ok)} runs are above chance in both directions.")
    chance_arms = {arm for (arm, _), good in ok.items() if not good}
    comps = compare_arms(records, clusters, n_boot) if comps is None else comps
    for arm, ref in COMPARISONS:
        for endpoint in ENDPOINTS:
            sub = [c for c in comps if c["comparison"] == f"{arm} - {ref}" and c["endpoint"] == endpoint]
            if not sub:
                out.append(f"{arm} - {ref}, {endpoint.replace('_', ' ')}: not run yet.")
                continue
            parts = [f"{c['direction'].upper()} {c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] "
                     f"(Holm p {c['p_holm']:.3f})" for c in sub]
            caveat = (" (an arm here has a run at chance, which lowers its mean drop without any robustness)"
                      if endpoint == "clean_twin_drop" and {arm, ref} & chance_arms else "")
            out.append(f"{arm} - {ref}, {endpoint.replace('_', ' ')}: " + "; ".join(parts)
                       + f" -> {sum(c['significant'] for c in sub)} of {len(sub)} significant after Holm{caveat}.")
    rows = {r["arm"]: r for r in arm_table(records)}
    for arm, recs in records.items():  # exploratory (not pre-registered, no test): runs that learned only
        kept = [r for r in recs if ok[(arm, int(r["seed"]))]]
        if kept and len(kept) < len(recs):
            drops = [float(per_trial(kept, d, "clean_twin_drop").mean()) for d in DIRECTIONS]
            out.append(f"Exploratory: {arm} over its {len(kept)} run(s) above chance: drop {drops[0]:+.3f} V-F / "
                       f"{drops[1]:+.3f} F-V (all {len(recs)} runs: {rows[arm]['vf_drop']:+.3f} / "
                       f"{rows[arm]['fv_drop']:+.3f}).")
    if "baseline" in rows:
        b = rows["baseline"]
        gain = (b["vf_ceiling"] + b["fv_ceiling"]) / 2
        out.append(f"The neutral fill takes the baseline from {b['vf_dose1']:.3f} / {b['fv_dose1']:.3f} to "
                   f"{b['vf_filled']:.3f} / {b['fv_filled']:.3f} (V-F / F-V; the clean twins give {b['vf_dose0']:.3f} / "
                   f"{b['fv_dose0']:.3f}): a mean change of {gain:+.3f}, so removing the interference by hand, "
                   + ("without retraining, would help this model." if gain > 0 else
                      "without retraining, does not help this model: the fill is as foreign to it as the interference."))
    att = {(a["arm"], a["modality"], a["branch"]): a for a in attention_table(records)}
    for modality in ("face", "voice"):
        p, n = att.get(("bianet", modality, "pia")), att.get(("bianet", modality, "nia"))
        if p and n:
            if min(p["share"], n["share"]) >= 0.99:
                out.append(f"BIANet {modality}: the interference covers every token of the samples that carry it, so "
                           "the attention-mass endpoint cannot tell seeking from avoiding here.")
                continue
            seeds = [(r["endpoints"]["attention"][modality]["pia"]["ratio"], r["endpoints"]["attention"][modality]["nia"]["ratio"])
                     for r in records["bianet"] if r["endpoints"]["attention"].get(modality, {}).get("nia")]
            below = sum(pr < 1 for pr, _ in seeds)
            above = sum(nr > pr for pr, nr in seeds)
            out.append(f"BIANet {modality}: PIA puts {p['ratio']:.2f}x, NIA {n['ratio']:.2f}x the uniform mass on the "
                       f"interference (mean over seeds); PIA is below 1 in {below} of {len(seeds)} seeds and NIA above "
                       f"PIA in {above} of {len(seeds)} (the paper's story predicts both in every seed); "
                       + ("the attention does steer away from the interference, if weakly."
                          if below == len(seeds) and p["ratio"] < 0.95 else
                          "within a few percent of uniform, the attention is close to blind to the interference."))
    for arm in ("bianet", "nia"):
        recs = records.get(arm, [])
        for modality in ("face", "voice"):
            accs = {key: [r["endpoints"]["probes"][f"{modality}/{key}"]["kind"] for r in recs
                          if f"{modality}/{key}" in r["endpoints"]["probes"]] for key in ("h_hat", "h_tilde")}
            if all(accs.values()):
                m = {k: (float(np.mean([v["accuracy"] for v in vs])), float(np.mean([v["chance"] for v in vs])))
                     for k, vs in accs.items()}
                out.append(f"{arm} {modality}: a linear probe reads the interference's kind from h_hat at "
                           f"{m['h_hat'][0]:.3f} and from h_tilde at {m['h_tilde'][0]:.3f} (chance {m['h_hat'][1]:.3f}); "
                           + ("h_tilde encodes it more than h_hat, as the paper's story wants."
                              if m["h_tilde"][0] > m["h_hat"][0] else
                              "h_hat encodes it at least as well as h_tilde: the positive embedding has not shed it."))
    if "baseline" in rows:
        for arm in ("bianet", "control"):
            if arm in rows:
                beyond = {a: (rows[a]["vf_dose1"] - rows[a]["vf_dose1.5"] + rows[a]["fv_dose1"] - rows[a]["fv_dose1.5"]) / 2
                          for a in (arm, "baseline")}
                out.append(f"From the trained strength to 1.5 times it, {arm} loses {beyond[arm]:+.3f} and the baseline "
                           f"{beyond['baseline']:+.3f} of 1:2 accuracy (mean of the directions, no retraining).")
    return out


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


def reproduction_lines(rows: list[dict], committed: dict[str, list[dict]], total_wall_min: float | None = None) -> list[str]:
    """Sentences from ``reproduction_rows``: per run, identical or the largest difference against
    the arm's seed-to-seed spread in the committed grid, and the wall time."""
    if not rows:
        return ["No run has been reproduced yet."]
    out = []
    for r in rows:
        accs = ", ".join(f"{LABELS[d]} {r[f'{d}_fresh']:.3f} (committed {r[f'{d}_committed']:.3f})" for d in DIRECTIONS)
        if r["identical"]:
            what = "bit-identical to the committed run (every validation accuracy and every trial's outcome)"
        else:
            worst = max(abs(r[f"{d}_fresh"] - r[f"{d}_committed"]) for d in DIRECTIONS)
            spread = min(seed_spread(committed, r["arm"], d) for d in DIRECTIONS)
            agree = min(r[f"{d}_agree"] for d in DIRECTIONS)
            what = (f"not bit-identical: 1:2 accuracy differs by up to {worst:.3f} "
                    f"({'within' if worst <= spread else 'beyond'} the arm's seed-to-seed standard deviation "
                    f"{spread:.3f}), and the two runs agree on {agree:.1%} of the trials")
        out.append(f"{r['arm']} seed {r['seed']}: 1:2 {accs}; {what}; trained in {r['wall_min']:.1f} min.")
    if total_wall_min is not None:
        out.append(f"The whole reproduction took {total_wall_min:.1f} minutes of wall time from an empty results "
                   "folder and an empty world cache.")
    return out


# --- the swept knobs of the third part (Fig. 7, the bias study) --------------------------------
def sweep_lines() -> dict[str, dict[str, dict[float, str]]]:
    """{figure: {line label: {knob value: arm}}} for viz.plot_sweep, from the grid definitions:
    Fig. 7's two temperatures (the default value is the ``bianet`` arm) and the bias study's rho
    (rho 0 is the arm trained without the shortcut)."""
    from bianet_lib.config import BIANetConfig
    from bianet_lib.experiments.grids import BIAS_VARIANTS, FIG7_VARIANTS

    default = BIANetConfig()
    fig7: dict[str, dict[float, str]] = {}
    for which, other in (("tau1", "tau2"), ("tau2", "tau1")):
        line = {float(n.split("_")[1]): n for n in FIG7_VARIANTS if n.startswith(which + "_")}
        line[float(getattr(default, which))] = "bianet"
        fig7[f"{which} ({other} = {getattr(default, other):g})"] = dict(sorted(line.items()))
    bias: dict[str, dict[float, str]] = {}
    for name in BIAS_VARIANTS:
        arm, rho = name.rsplit("_rho", 1)
        bias.setdefault(arm, {0.0: arm})[float(rho)] = name
    return {"fig7": fig7, "bias": bias}


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


def shared_seeds(records: dict[str, list[dict]], arms) -> set[int]:
    """The seeds that every one of ``arms`` (those with runs) has finished."""
    sets = [{int(r["seed"]) for r in records[a]} for a in arms if records.get(a)]
    return set.intersection(*sets) if sets else set()


def _interim_prefix(records: dict[str, list[dict]], expected: set[tuple[str, int]] | None, family) -> str:
    """'INTERIM (done of total runs): ' while some of a family's pre-registered runs are missing;
    '' when they are all in, or when no pre-registration (``expected``) is given."""
    if expected is None:
        return ""
    done, total = _family_progress(records, expected, family)
    return f"INTERIM ({done} of {total} runs): " if done < total else ""


def fig7_lines(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000,
               expected: set[tuple[str, int]] | None = None) -> list[str]:
    """The fourth family read against the paper's two sentences on Fig. 7 ("only minor
    fluctuations, the optimal tau_1 is 5"; "performance gradually improves with increasing tau_2"),
    every word chosen by the numbers: the family's Holm count and ranges of differences, then per
    temperature where the 1:2 accuracy peaks, where the default ranks and whether accuracy rises
    with the value, on the seeds that every value has (the default arm has more). INTERIM while some
    of the family's pre-registered runs are missing."""
    comps = compare_arms(records, clusters, n_boot, comparisons=FIG7_COMPARISONS)
    if not comps:
        return ["Fig. 7: no comparison has both arms finished yet."]
    status = _interim_prefix(records, expected, FIG7_COMPARISONS)

    def span(endpoint, direction=None):
        d = [c["diff"] for c in comps if c["endpoint"] == endpoint and direction in (None, c["direction"])]
        return f"{min(d):+.3f} to {max(d):+.3f}"

    sig = [c for c in comps if c["significant"]]
    out = [f"{status}Fig. 7 (the fourth family): {len(sig)} of {len(comps)} comparisons are significant after "
           f"Holm; against the default temperatures, 1:2 accuracy differs by {span('accuracy', 'vf')} (V-F) and "
           f"{span('accuracy', 'fv')} (F-V), the clean-twin drop by {span('clean_twin_drop')}."]
    for label, line in sweep_lines()["fig7"].items():
        which = label.split()[0]
        name = which.replace("tau", "tau_")
        base = next(x for x, arm in line.items() if arm == "bianet")  # sweep_lines places the default there
        seeds = shared_seeds(records, line.values())  # the default has more seeds: rank on the shared ones
        means = {d: sweep_means(records, line, d, seeds) for d in DIRECTIONS}
        parts = []
        for d in DIRECTIONS:
            m = means[d]
            best = max(m, key=m.get)
            rank = sorted(m.values(), reverse=True).index(m[base]) + 1 if base in m else None
            vals = list(m.values())
            rises = all(b >= a for a, b in zip(vals, vals[1:], strict=False))
            parts.append(f"{LABELS[d]} peaks at {name} = {best:g} ({m[best]:.3f}, range "
                         f"{min(vals):.3f}-{max(vals):.3f})"
                         + (f", the default {base:g} ranks {rank} of {len(m)}" if rank else "")
                         + (", rising with the value" if rises else ", not rising with the value"))
        sig_t = [c for c in sig if c["comparison"].startswith(which + "_")]
        out.append(f"{status}{name} (others at their defaults; means over the {len(seeds)} seeds that every value "
                   f"has): " + "; ".join(parts) + "; "
                   + (f"{len(sig_t)} of its comparisons are significant." if sig_t else
                      "no difference to the default is significant, so no optimum or trend is resolved."))
    return out


def bias_lines(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000,
               expected: set[tuple[str, int]] | None = None) -> list[str]:
    """The fifth family (the course's bias study, a train-only shortcut taken with probability rho)
    in sentences chosen by the numbers: its Holm count; whether the shortcut costs the baseline at
    all (without a cost there is no bias for BIANet to remove, whatever the other comparisons say);
    which runs at the largest rho are not above chance (they compress differences to chance); each
    arm's 1:2 accuracy lost from rho 0 to its largest rho, on the seeds both share (descriptive, not
    a pre-registered test); and BIANet against the baseline trained on the same shortcut. INTERIM
    while some of the family's pre-registered runs are missing."""
    comps = compare_arms(records, clusters, n_boot, comparisons=BIAS_COMPARISONS)
    if not comps:
        return ["Bias study: no comparison has both arms finished yet."]
    status = _interim_prefix(records, expected, BIAS_COMPARISONS)
    get = {(c["comparison"], c["endpoint"], c["direction"]): c for c in comps}

    def acc(comparison):
        cs = [get.get((comparison, "accuracy", d)) for d in DIRECTIONS]
        if not all(cs):
            return None, "not finished"
        return cs, " and ".join(f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] ({LABELS[c['direction']]}, "
                                f"Holm p {c['p_holm']:.3f})" for c in cs)

    sig = [c for c in comps if c["significant"]]
    out = [f"{status}The bias study (the fifth family): {len(sig)} of {len(comps)} comparisons are significant after Holm."]
    sweeps = sweep_lines()["bias"]
    top = max(x for line in sweeps.values() for x in line)
    cost, text = acc(f"baseline_rho{top:g} - baseline")
    if cost is not None:
        hurt = [c for c in cost if c["significant"] and c["diff"] < 0]
        out.append(f"{status}Training on the shortcut at rho {top:g} changes the baseline's 1:2 accuracy by {text}: "
                   + ("the shortcut costs the baseline, so there is a bias to remove." if hurt else
                      "no significant cost, so at this strength there is no measurable bias for BIANet to remove, "
                      "and the comparisons below cannot show debiasing."))
    tops = {line[max(line)] for line in sweeps.values()}
    runs = learned({a: records[a] for a in sorted(tops) if records.get(a)}, clusters, n_boot)
    if runs:
        n = len({(r["arm"], r["seed"]) for r in runs})
        below = sorted({(r["arm"], r["seed"]) for r in runs if not r["above_chance"]})
        out.append(f"{status}At rho {top:g}, " + (
            f"every one of the {n} runs is above chance in both directions." if not below else
            f"{len(below)} of the {n} runs are not above chance in at least one direction ("
            + ", ".join(f"{a} seed {s}" for a, s in below) + "): on the unbiased test they match no better than a coin, "
            "so differences between arms at this rho are compressed towards chance."))
    losses = []
    for arm, line in sweeps.items():
        lo, hi = min(line), max(line)
        ends = {lo: line[lo], hi: line[hi]}
        seeds = shared_seeds(records, ends.values())
        if not all(records.get(a) for a in ends.values()) or not seeds:
            continue
        means = [sweep_means(records, ends, d, seeds) for d in DIRECTIONS]
        lost = [m[lo] - m[hi] for m in means]
        losses.append(f"{arm} {lost[0]:+.3f} / {lost[1]:+.3f} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
    if losses:
        out.append(f"{status}1:2 accuracy lost from rho 0 to rho {top:g} (V-F / F-V, each arm on the seeds both ends "
                   "share; descriptive): " + ", ".join(losses) + ".")
    parts = []
    for rho in sorted(x for x in sweeps["bianet"] if x > 0):
        cs, text = acc(f"bianet_rho{rho:g} - baseline_rho{rho:g}")
        if cs is not None:
            parts.append(f"at rho {rho:g} {text}")
    if parts:
        better = [c for c in sig if c["comparison"].startswith("bianet_rho") and "baseline_rho" in c["comparison"]
                  and c["endpoint"] == "accuracy"]
        out.append(f"{status}BIANet against the baseline trained on the same shortcut, 1:2 accuracy: " + "; ".join(parts)
                   + (": " + ", ".join(f"{c['comparison']} {LABELS[c['direction']]} {c['diff']:+.3f}" for c in better)
                      + " significant after Holm." if better else ": no difference is significant after Holm."))
    return out
