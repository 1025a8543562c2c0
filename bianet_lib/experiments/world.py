"""The local-interference test-bed's world (issue 11) and the baseline-only calibration of its
interference strength.

The world (``TESTBED_WORLD``): SynthVox's ``local`` preset (global nuisance at a low fixed
level; on half the faces a patch of another identity's face or a textured occluder, on half the
clips time-local bursts of another identity's voice or of noise, every one with its mask) with
300 training and 300 test identities, drawn at the CPU grid's scale (32 px faces, 0.5 s clips,
8 epochs); the issue's 1,500 training identities did not learn at that scale
(``TESTBED_WORLD``'s comment) and are the GPU setting. One knob sets the strength:
``world_local_scale`` multiplies the preset's shares (faces 0.3 of the image, voices 0.4 of the
clip, at +6 dB).

Pre-registration. The calibration grid (``experiments.grids.calibration_runs``) trains the *baseline
alone* at each of ``CALIBRATION_SCALES`` and measures its clean-twin drop at 1:2 (accuracy on the
clean twins of the test split minus accuracy on the split itself, same trials). ``choose_scale``
applies the rule fixed here before any run: the smallest scale whose drop is at least
``CALIBRATION_TARGET`` in both directions. The chosen value is written into ``CALIBRATED_SCALE``
and committed with the calibration's results before any BIANet, PIA, NIA or control run on this
world; it is never tuned on them (``tests/test_testbed.py`` checks it equals the rule applied to the
committed calibration). The report of a calibration is ``bianet_lib.reports.testbed.calibration_markdown``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

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


# --- calibration ------------------------------------------------------------------------------
def calibration_rows(results_dir: str | Path) -> list[dict]:
    """One row per finished calibration run: scale, seed, accuracies and drops per direction."""
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        rec = json.loads(path.read_text())
        ep = rec.get("endpoints")
        if not ep:
            continue
        row = {"run": path.stem, "scale": float(ep["local_scale"]), "seed": int(rec["seed"]),
               "world": rec.get("config", {}).get("world_preset")}
        for d in DIRECTIONS:
            acc = ep["directions"][d]["accuracy"]
            row[f"{d}_acc"] = acc["dose1"]
            row[f"{d}_clean"] = acc["dose0"]
            row[f"{d}_drop"] = ep["directions"][d]["clean_twin_drop"]
            row[f"{d}_filled"] = acc["filled"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["scale"], r["seed"]))


def mean_drops(rows: list[dict], key: Callable[[dict], object]) -> dict[object, dict[str, float]]:
    """Per ``key(row)`` (in first-seen order), the mean over its calibration rows (seeds) of the
    clean-twin drop at 1:2 per direction."""
    groups: dict[object, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return {k: {d: float(np.mean([r[f"{d}_drop"] for r in rs])) for d in DIRECTIONS} for k, rs in groups.items()}


def choose_scale(rows: list[dict], target: float = CALIBRATION_TARGET) -> float | None:
    """The pre-registered rule: the smallest scale whose mean (over seeds) baseline clean-twin
    drop at 1:2 is >= ``target`` in both directions; None if no scale tried reaches it."""
    drops = mean_drops(rows, lambda r: r["scale"])
    return next((scale for scale in sorted(drops) if min(drops[scale].values()) >= target), None)


# --- the fair test-bed (issue 25) ---------------------------------------------------------------
#: SynthVox's ``fair`` preset at the CPU grid's scale: interference on an affected sample is whole
#: tokens of the model's own maps (32 px faces: a 4 x 4 map, 2 x 2 tokens; 0.6 s clips: 8 time
#: tokens, 2 of them), at most 25% of them, another identity's face region or voice (+10 dB).
#: 0.6 s, not the test-bed's 0.5 s: 0.5 s gives 7 time tokens, where a quarter is 1 token (14%).
#: Epochs: the converged test-bed's 16. Measured on the 2-core CPU machine (2026-12-03, 2 epochs,
#: num_threads=1, the machine shared by other jobs, two rounds): 96 steps an epoch; seconds an
#: epoch, baseline 37-59, oracle 51-55, control 54-55, BIANet 50-60, supervised 45-63; endpoints
#: 42-93 s a run. At the slower round, 3 calibration + 25 grid runs at 16 epochs take about 470
#: worker-minutes (the longest run about 18), 20 epochs about 580.
FAIR_EPOCHS = 16
FAIR_WORLD = ["world_preset=fair", "clip_seconds=0.6", "world_n_train=300", "world_n_val=100",
              "world_n_test=300", "world_per_id_train=24", "world_per_id_eval=6", f"epochs={FAIR_EPOCHS}",
              # issue 28's faster step (NHWC convolutions), on for every run of this world from the first
              "channels_last=true"]

#: The world constraint (fixed: no calibration setting may change it) beside the target.
FAIR_WORLD_CONSTRAINTS = {"max_token_coverage": 0.25, "min_baseline_drop": 0.10}

#: The one calibration knob, ``world_local_scale``, in the fair world: it multiplies the
#: probability that a face / clip carries interference (0.5 each; capped at 1), never the share
#: it covers. Fixed before any run: p = 0.5, 0.75, 1.
FAIR_CALIBRATION_SETTINGS = (1.0, 1.5, 2.0)

#: The setting every arm of the ``fair`` grid is trained and tested at: the rule
#: (``choose_fair_setting``) on the committed baseline-only calibration; None until it exists
#: (the grid refuses to run before).
FAIR_CALIBRATED: float | None = None
#: The world (SynthVox preset) the ``fair`` grid runs on: stage 1's "fair" unless stage 2 picks another.
FAIR_CALIBRATED_WORLD: str | None = None

#: Calibration stage 2, written down after stage 1 (the ``fair`` world at p = 0.5, 0.75, 1) gave
#: the baseline a clean-twin drop of only 0.012-0.030 (results/experiments/fair-calibration/), and
#: before any other arm ran on any fair world. Same coverage (4 of 16 face tokens, 2 of 8 time
#: tokens), same voices, every sample affected (setting 2: p = 1, stage 1's strongest); salience
#: of the face box's content, in this order of preference (the first to reach the target in both
#: directions is the world): another identity's whole face downscaled into the box (a second face
#: in the frame) with its contrast stretched 3x, anywhere on the map; that face at the map's
#: centre (over the eyes, nose and mouth); both. A test-time probe of stage 1's p = 1 baseline
#: (not retrained; scratch, this machine) gave drops V-F / F-V of 0.096 / 0.097, 0.102 / 0.144 and
#: 0.229 / 0.239 for them, and 0.006 / -0.003 for the voice bursts alone: a model trained under the
#: interference adapts, so the probe cannot stand in for the calibration runs. The centred worlds
#: fix where the block is, so there an attention only has to find whether it is there.
FAIR_STAGE2: tuple[tuple[str, float], ...] = (("fair-whole-c3", 2.0), ("fair-centre", 2.0),
                                              ("fair-centre-c3", 2.0))

#: When neither stage reaches the target (written down after stage 2's three worlds had all missed
#: it, before any other arm ran on any fair world): the headroom check. The claim cannot be tested
#: in a world where even removing the interfered tokens does not help, so the oracle (the ceiling of
#: any token-selecting mechanism) and the baseline train first, 5 seeds each, in the calibrated world
#: where the baseline lost most (``headroom_world``: the largest of the two directions' smaller mean
#: drop, coverage within the constraint). Decision (stats.fair_outcome over the family's first
#: comparison, oracle - baseline, Holm over its 2 endpoints x 2 directions): "no_headroom" ends the
#: test-bed there, and BIANet, supervised attention and the control are not trained; otherwise that
#: world becomes FAIR_CALIBRATED(_WORLD) and the remaining arms run as pre-registered.
FAIR_HEADROOM_ARMS = ("baseline", "oracle")
#: The check's world and setting: ``headroom_world`` on the committed calibration; None before it.
#: On the six committed runs (stage 1 drops 0.012-0.030, stage 2 0.014-0.020 or negative): the fair
#: world at setting 1.5 (p = 0.75, drops 0.023 / 0.024), a hair above setting 2 (0.023 / 0.030).
FAIR_HEADROOM_WORLD: tuple[str, float] | None = ("fair", 1.5)

#: The exploratory family, declared after the headroom check ended the confirmatory test-bed
#: (no_headroom: the oracle beats the baseline's clean-twin drop in F-V only, -0.018, not in V-F)
#: and before any method arm ran on any fair world: BIANet, supervised attention and the control,
#: 5 seeds, in the check's world beside its baseline and oracle runs (store "fair"). It cannot
#: confirm the claim (by the confirmatory rule this world cannot test it); it asks, under its own
#: Holm correction (preregistration.FAIR_EXPLORATORY_*), whether any arm takes the F-V headroom,
#: where PIA's and NIA's attention moves, and whether attention supervision changes NIA's
#: anti-identity. Must be the check's world, and only after a no_headroom check (a test).
FAIR_EXPLORATORY_ARMS = ("bianet", "supervised", "control")
FAIR_EXPLORATORY_WORLD: tuple[str, float] | None = ("fair", 1.5)


def token_coverage(split, cfg) -> dict[str, np.ndarray]:
    """Per sample and modality, the share of the model's map tokens that carry interference
    (any part of them), at the grids ``model.encoders.map_grids`` reads from the encoders."""
    from bianet_lib.data.interference import (
        split_face_masks,
        split_voice_masks,
        token_share_1d,
        token_share_2d,
    )
    from bianet_lib.model.encoders import map_grids

    face_grid, (_, n_time) = map_grids(cfg)
    face = (token_share_2d(split_face_masks(split), face_grid) > 0).float().mean(1)
    voice = (token_share_1d(split_voice_masks(split), n_time) > 0).float().mean(1)
    return {"face": face.numpy(), "voice": voice.numpy()}


def choose_fair_setting(rows: list[dict], coverage: dict[float, float],
                        constraints: dict = FAIR_WORLD_CONSTRAINTS) -> float | None:
    """The pre-registered rule: the smallest setting whose largest measured token coverage
    (``coverage``: setting -> max over affected samples and modalities) is within the
    constraint and whose mean baseline clean-twin drop at 1:2 (``calibration_rows``, scale =
    setting) reaches the target in both directions; None if none does."""
    ok = [r for r in rows if coverage.get(r["scale"], np.inf) <= constraints["max_token_coverage"]]
    return choose_scale(ok, constraints["min_baseline_drop"])


def headroom_world(rows: list[dict], coverage: dict[tuple[str, float], float],
                   constraints: dict = FAIR_WORLD_CONSTRAINTS) -> tuple[str, float] | None:
    """The headroom check's world: among the calibration rows (keys "world", "scale") whose
    coverage is within the constraint, the (world, setting) whose smaller mean drop over the two
    directions is largest; None when none has a positive drop in both directions."""
    best, best_drop = None, 0.0
    for key, drops in mean_drops(rows, lambda r: (r["world"], r["scale"])).items():
        if coverage.get(key, np.inf) <= constraints["max_token_coverage"] and min(drops.values()) > best_drop:
            best, best_drop = key, min(drops.values())
    return best


def choose_fair_world(rows: list[dict], coverage: dict[tuple[str, float], float],
                      candidates=FAIR_STAGE2, constraints: dict = FAIR_WORLD_CONSTRAINTS) -> tuple[str, float] | None:
    """Stage 2's pre-registered rule: the first (world, setting) of ``candidates`` whose largest
    measured token coverage (``coverage``) is within the constraint and whose mean baseline
    clean-twin drop at 1:2 (``calibration_rows``: keys "world" and "scale") reaches the target in
    both directions; None if none does (a candidate without a row has not been tried: None too
    when it comes first, so a later candidate cannot win over an untried earlier one)."""
    drops = mean_drops(rows, lambda r: (r.get("world"), r["scale"]))
    for cand in candidates:
        if cand not in drops:
            return None
        if (coverage.get(cand, np.inf) <= constraints["max_token_coverage"]
                and min(drops[cand].values()) >= constraints["min_baseline_drop"]):
            return cand
    return None
