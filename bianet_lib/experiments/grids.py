"""The paper's experiments as named, resumable grids of runs on SynthVox.

A grid is a list of :class:`Run` s; a run is ``(name, overrides, seed)`` on top of the grid's
preset and base overrides (world size, epochs, threads). ``run_grid`` trains and evaluates
each run that has no result yet and writes ``<results_dir>/<grid>/<run-id>.json`` atomically
(``results_record``: metrics of both scoring routes, config, seed, versions, wall time). A
finished run is never repeated; a crashed grid continues where it stopped: each run trains in
``<results_dir>/<grid>/runs/<run-id>/`` with ``Trainer.fit(resume=True)``, and that scratch
folder (checkpoints) is deleted once the JSON is written, so ``results/`` stays small. Each run
is claimed under a lock (``runs/.<run-id>.lock``, an ``flock`` the kernel drops if its holder
dies) and re-checked before it starts, so several processes may run one grid on one folder and
every run is trained exactly once (:func:`claim_and_execute`).

Grids (``GRIDS``):

* ``"reduced"``: the CPU default, what fits in about 15 minutes on 2 cores: Table 5's rows (a)
  and (d) at rho = 0 and rho = 0.9 (see ``REDUCED_NAMES``).
* ``"full"``: every experiment of the paper (Tables 5, 6, 7, Fig. 7's tau_1 and tau_2 over
  {0.5, 1, 5, 10, 20}, the Fig. 4 curve, the peer comparison) plus the bias sweep rho in
  {0, 0.5, 0.9} and each component at rho = 0.9, at the same CPU scale as ``reduced``, 3 seeds
  (5 for ``HEADLINE_NAMES``).
  ``reduced`` and ``full`` share one results folder (``store``), so ``full`` reuses the
  reduced runs and is "one parameter away".
* ``"full-paper"``: the same runs with the ``paper`` preset on SynthVox (a GPU job).
* ``"smoke"``: two tiny runs, for tests and the notebook's FAST mode.

Model variants are config overrides only. Every run of a grid shares the world seed; the
world differs only by rho (``bias``), and worlds are cached by ``load_world``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

SEEDS = (0, 1, 2)
#: The rows the README's answers rest on (Table 5, the bias sweep, NIA's gap, tau_1 = 10) get two
#: more seeds: with 3 a side, only differences of about 2.4 standard deviations reach p < 0.05.
HEADLINE_SEEDS = (3, 4)
HEADLINE_NAMES = ("baseline", "pia", "nia", "bianet", "baseline_rho0.5", "bianet_rho0.5",
                  "baseline_rho0.9", "bianet_rho0.9", "nia_rho0.9", "tau1_10")
TAUS = (0.5, 1.0, 5.0, 10.0, 20.0)
BIAS_LEVELS = (0.0, 0.5, 0.9)

#: Model variants as config overrides. "peer" is a contrastive cosine two-tower (the family of
#: Wen et al.): no PIA/NIA, no matching head loss, InfoNCE only; it is selected on validation
#: and read on the cosine route (its untrained classifier would pick epochs by noise).
VARIANTS: dict[str, list[str]] = {
    "baseline": ["use_pia=false", "use_nia=false"],
    "pia": ["use_pia=true", "use_nia=false"],
    "nia": ["use_pia=false", "use_nia=true"],
    "bianet": ["use_pia=true", "use_nia=true"],
    "peer": ["use_pia=false", "use_nia=false", "w_match=0", "metric_loss=infonce", "select_route=cosine"],
    # the control arm: token self-attention with BIANet's parameter count in the same place
    "control": ["use_pia=false", "use_nia=false", "control_attention=true"],
}

#: The paper's numbers (VoxCeleb1, 1:2 V-F / F-V, %) for the tables' side column.
PAPER_TABLE5 = {"baseline": (94.8, 89.8), "pia": (96.8, 96.6), "nia": (96.6, 93.0), "bianet": (97.3, 96.9)}
PAPER_TABLE7 = {"constant": (94.9, 96.8), "bianet": (97.3, 96.9)}
PAPER_TABLE1 = {"peer": (87.2, 86.5, 48.2, 44.8), "baseline": (94.8, 89.8, 48.5, 45.6),
                "bianet": (97.3, 96.9, 50.2, 47.3)}  # 1:2 V-F, F-V, 1:10 V-F, F-V


@dataclass(frozen=True)
class Run:
    name: str
    overrides: tuple[str, ...]
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.name}__s{self.seed}"


@dataclass
class Grid:
    name: str
    runs: list[Run]
    preset: str = "cpu-small"
    base: list[str] = field(default_factory=list)
    description: str = ""
    workers: int = 1  # runs trained at once by default (processes; give each num_threads=1)
    store: str = ""  # results sub-folder; grids with the same base share it (default: the name)
    # raises ValueError (one line) when the grid may not run yet (e.g. before its calibration)
    check: Callable[[], None] | None = None

    def __post_init__(self):
        self.store = self.store or self.name

    def config(self, run: Run, extra: list[str] | None = None):
        from bianet_lib.config import load_config

        return load_config(self.preset, overrides=[*self.base, *run.overrides, f"seed={run.seed}",
                                                   *(extra or [])])


def _runs(name: str, overrides: list[str], seeds=SEEDS) -> list[Run]:
    return [Run(name, tuple(overrides), s) for s in seeds]


def _bias_name(variant: str, rho: float) -> str:
    return variant if rho == 0 else f"{variant}_rho{rho:g}"


#: Table 6: BIANet with epsilon fixed at the paper's values (the learned threshold is the "bianet"
#: arm); run by the paper grid and, on the converged test-bed, under its own Holm correction
#: (testbed.TABLE6_COMPARISONS).
TABLE6_VARIANTS = {f"epsilon_{e:g}": [*VARIANTS["bianet"], "epsilon_mode=fixed", f"epsilon={e}"] for e in (0.01, 0.1, 0.2)}


#: Fig. 7: BIANet at each temperature other than the default (tau1 = 5 and tau2 = 10 are the "bianet" arm).
FIG7_VARIANTS = {f"{which}_{tau:g}": [*VARIANTS["bianet"], f"{which}={tau}"]
                 for which, default in (("tau1", 5.0), ("tau2", 10.0)) for tau in TAUS if tau != default}
#: The bias study: the train-only shortcut rho for the baseline and BIANet, and at the strongest
#: rho each part alone and BIANet without the curriculum (which part shrinks the gap, if any).
BIAS_VARIANTS = {**{_bias_name(v, rho): [*VARIANTS[v], f"bias={rho}"] for rho in BIAS_LEVELS[1:] for v in ("baseline", "bianet")},
                 **{_bias_name(v, BIAS_LEVELS[-1]): [*VARIANTS[v], f"bias={BIAS_LEVELS[-1]}"] for v in ("pia", "nia")},
                 _bias_name("curriculum_constant", BIAS_LEVELS[-1]):
                     [*VARIANTS["bianet"], "curriculum=constant", f"bias={BIAS_LEVELS[-1]}"]}


def paper_runs(seeds=SEEDS) -> list[Run]:
    """Every experiment of the paper plus the bias study (names are the table rows), in the
    order a partly finished grid is most useful: Table 5 and the peer, Table 7, the bias sweep,
    Table 6, then Fig. 7."""
    runs: list[Run] = []
    for v in ("baseline", "pia", "nia", "bianet", "peer"):  # Table 5, Table 1 peer, Fig. 4 (from all)
        runs += _runs(v, VARIANTS[v], seeds)
    for cur in ("constant", "paper"):  # Table 7: without the curriculum, and the literal Eq. 22
        runs += _runs(f"curriculum_{cur}", VARIANTS["bianet"] + [f"curriculum={cur}"], seeds)
    for name, over in BIAS_VARIANTS.items():  # the bias sweep (rho = 0 is the Table 5 rows), then at the
        runs += _runs(name, over, seeds)         # strongest rho which part shrinks the gap, if any
    for name, over in TABLE6_VARIANTS.items():  # Table 6 (self-learned = "bianet")
        runs += _runs(name, over, seeds)
    for name, over in FIG7_VARIANTS.items():  # Fig. 7 (the default values' runs are "bianet")
        runs += _runs(name, over, seeds)
    first = {r.name: r for r in runs if r.seed == seeds[0]}
    return runs + [Run(n, first[n].overrides, s) for s in HEADLINE_SEEDS for n in HEADLINE_NAMES if n in first]


#: The CPU scale of ``reduced`` and ``full``: the default world (300/50/100 identities, 24 train
#: samples each) drawn at 32x32 faces and 0.5 s clips, 4 epochs (384 steps of batch 64) per run.
#: A first version with 72 steps per run left every variant at chance, so this budget is the
#: smallest that learns.
# 32 px faces at stride 8: a 4 x 4 map, as the 64 px course faces; NCHW, the step every grid but the
# fair test-bed's was run with (the fair world sets channels_last=true after this)
REDUCED_BASE = ["face_size=32", "face_strides=[1, 2, 2, 1]", "clip_seconds=0.5", "epochs=4", "num_threads=1",
                "device=cpu", "channels_last=false"]
REDUCED_NAMES = ("baseline", "bianet", "baseline_rho0.9", "bianet_rho0.9")


def reduced_runs() -> list[Run]:
    return [r for r in paper_runs() if r.name in REDUCED_NAMES and r.seed in SEEDS]


SMOKE_BASE = ["world_n_train=12", "world_n_val=4", "world_n_test=6", "world_per_id_train=2",
              "world_per_id_eval=2", "epochs=1", "batch_size=8", "face_size=32", "clip_seconds=0.25",
              "face_widths=[8, 8, 16, 16]", "audio_widths=[8, 8, 16, 16]", "attn_channels=8",
              "hidden_dim=32", "embed_dim=16", "n_mels=16", "num_threads=1", "device=cpu"]

# --- the fair test-bed (issue 25; experiments.world FAIR_*) -----------------------------------------------
FAIR_ARMS = ("baseline", "bianet", "oracle", "supervised", "control")
FAIR_SEEDS = (0, 1, 2, 3, 4)
#: Weight of the supervised arm's attention loss (fixed before any run).
W_ATTN_SUPERVISION = 1.0
FAIR_VARIANTS = {**{a: VARIANTS[a] for a in ("baseline", "bianet", "control")},
                 "oracle": [*VARIANTS["baseline"], "token_masks=oracle"],
                 "supervised": [*VARIANTS["bianet"], "token_masks=supervised",
                                f"w_attn_supervision={W_ATTN_SUPERVISION}"]}


def _fair_base() -> list[str]:
    from bianet_lib.experiments.world import FAIR_WORLD

    return [*REDUCED_BASE, *FAIR_WORLD]


def fair_calibration_runs() -> list[Run]:
    """The baseline alone at every setting of FAIR_CALIBRATION_SETTINGS, seed 0."""
    from bianet_lib.experiments.world import FAIR_CALIBRATION_SETTINGS

    return [Run(f"baseline_s{s:g}", (*VARIANTS["baseline"], f"world_local_scale={s}"), 0)
            for s in FAIR_CALIBRATION_SETTINGS]


def fair_calibration2_runs() -> list[Run]:
    """Stage 2: the baseline alone in every world of FAIR_STAGE2 at its setting, seed 0."""
    from bianet_lib.experiments.world import FAIR_STAGE2

    return [Run(f"baseline_{w}", (*VARIANTS["baseline"], f"world_preset={w}", f"world_local_scale={s}"), 0)
            for w, s in FAIR_STAGE2]


def _fair_world_runs(world_setting: tuple[str | None, float | None] | None, arms, seeds) -> list[Run]:
    """``arms`` x ``seeds`` (seed-major) in one fair (world, setting); empty while it is not committed."""
    if world_setting is None or None in world_setting:
        return []
    world, setting = world_setting
    return [Run(a, (*FAIR_VARIANTS[a], f"world_preset={world}", f"world_local_scale={setting}"), s)
            for s in seeds for a in arms]


def _require_world(grid: str, *attrs: str, then: str):
    """A grid's guard: refuses (ValueError) while any of experiments.world's ``attrs`` is None."""
    def check() -> None:
        from bianet_lib.experiments import world as W

        for attr in attrs:
            if getattr(W, attr) is None:
                raise ValueError(f"grid {grid!r}: experiments.world.{attr} is None; {then}")
    return check


def fair_headroom_runs(seeds=FAIR_SEEDS) -> list[Run]:
    """The headroom check (experiments.world.FAIR_HEADROOM_WORLD): the baseline and the oracle in
    the check's world; the fair grid's own runs of these arms when the world is kept (same store,
    same configs)."""
    from bianet_lib.experiments import world as W

    return _fair_world_runs(W.FAIR_HEADROOM_WORLD, W.FAIR_HEADROOM_ARMS, seeds)


def fair_exploratory_runs(seeds=FAIR_SEEDS) -> list[Run]:
    """The exploratory family (experiments.world.FAIR_EXPLORATORY_WORLD): the method arms in the
    headroom check's world."""
    from bianet_lib.experiments import world as W

    return _fair_world_runs(W.FAIR_EXPLORATORY_WORLD, W.FAIR_EXPLORATORY_ARMS, seeds)


def fair_runs(arms=FAIR_ARMS, seeds=FAIR_SEEDS) -> list[Run]:
    """Every arm at the calibrated world and setting (FAIR_CALIBRATED_WORLD, FAIR_CALIBRATED)."""
    from bianet_lib.experiments import world as W

    return _fair_world_runs((W.FAIR_CALIBRATED_WORLD, W.FAIR_CALIBRATED), arms, seeds)


require_fair_headroom_world = _require_world("fair-headroom", "FAIR_HEADROOM_WORLD",
                                             then="commit the world headroom_world picks on the committed calibration first")
require_fair_exploratory_world = _require_world("fair-exploratory", "FAIR_EXPLORATORY_WORLD",
                                                then="declare the exploratory family first")
#: The ``fair`` grid's guard: no arm runs before the calibrated world and setting are committed.
require_fair_calibrated = _require_world("fair", "FAIR_CALIBRATED", "FAIR_CALIBRATED_WORLD",
                                         then="run the fair-calibration grids and commit the world and setting "
                                              "choose_fair_setting / choose_fair_world pick first")


# --- the local-interference test-bed (issue 11; bianet_lib.experiments.testbed) ---------------------------
TESTBED_ARMS = ("baseline", "pia", "nia", "bianet", "control")
TESTBED_SEEDS = (0, 1, 2, 3, 4)
#: The CPU default of notebook 07: the arms the README's answer rests on, 3 seeds.
TESTBED_REDUCED_ARMS = ("baseline", "bianet", "control")
#: Notebook 07's reproduction from nothing: the converged grid's baseline and BIANet, seed 0
#: (two runs, one per core; ``testbed-16-reduced``).
TESTBED_REPRODUCE_ARMS = ("baseline", "bianet")


#: The second pre-registered family (written and committed before any of its runs): the peer
#: (Table 1: a contrastive two-tower without PIA/NIA) and BIANet without the curriculum (Table 7,
#: w = 1 throughout), 3 seeds, in the test-bed's store; compared under their own Holm correction
#: (testbed.SECONDARY_COMPARISONS).
TESTBED_SECONDARY = {"peer": VARIANTS["peer"], "curriculum_constant": [*VARIANTS["bianet"], "curriculum=constant"]}
#: The convergence check: the baseline and BIANet at twice the test-bed's epochs, 2 seeds, in their
#: own store (the 8-epoch validation curves were still rising).
TESTBED_LONG_EPOCHS = 16


def _testbed_base() -> list[str]:
    from bianet_lib.experiments.world import TESTBED_WORLD

    return [*REDUCED_BASE, *TESTBED_WORLD]


def calibration_runs() -> list[Run]:
    """The baseline alone at every calibration strength (bianet_lib.experiments.testbed)."""
    from bianet_lib.experiments.world import CALIBRATION_SCALES, CALIBRATION_SEEDS

    return [Run(f"baseline_scale{s:g}", (*VARIANTS["baseline"], f"world_local_scale={s}"), seed)
            for s in CALIBRATION_SCALES for seed in CALIBRATION_SEEDS]


def testbed_runs(arms=TESTBED_ARMS, seeds=TESTBED_SEEDS) -> list[Run]:
    """Every arm at the calibrated strength, seed-major (a partly finished grid is balanced).
    Empty until the calibration is committed (testbed.CALIBRATED_SCALE)."""
    from bianet_lib.experiments.world import CALIBRATED_SCALE

    if CALIBRATED_SCALE is None:
        return []
    return [Run(a, (*VARIANTS[a], f"world_local_scale={CALIBRATED_SCALE}"), s) for s in seeds for a in arms]


def testbed_secondary_runs(seeds=TESTBED_SEEDS[:3]) -> list[Run]:
    """The peer and BIANet without the curriculum at the calibrated strength, seed-major."""
    from bianet_lib.experiments.world import CALIBRATED_SCALE

    return [Run(name, (*over, f"world_local_scale={CALIBRATED_SCALE}"), s)
            for s in seeds for name, over in TESTBED_SECONDARY.items()]


def calibration_long_runs() -> list[Run]:
    """The calibration again, baseline only, at ``TESTBED_LONG_EPOCHS``: the 8-epoch budget did not
    converge (testbed-long), so a longer grid must first re-apply the rule at its own budget."""
    return [Run(r.name, (*r.overrides, f"epochs={TESTBED_LONG_EPOCHS}"), r.seed) for r in calibration_runs()]


def testbed_long_runs(seeds=TESTBED_SEEDS[:2]) -> list[Run]:
    """The baseline and BIANet trained for ``TESTBED_LONG_EPOCHS`` (named ``<arm>_long``)."""
    from bianet_lib.experiments.world import CALIBRATED_SCALE

    return [Run(f"{a}_long", (*VARIANTS[a], f"world_local_scale={CALIBRATED_SCALE}", f"epochs={TESTBED_LONG_EPOCHS}"), s)
            for s in seeds for a in ("baseline", "bianet")]


def testbed_converged_runs(arms=TESTBED_ARMS, seeds=TESTBED_SEEDS) -> list[Run]:
    """Every arm at ``TESTBED_LONG_EPOCHS`` and the strength its own calibration chose
    (testbed.CALIBRATED_SCALE_LONG), seed-major; empty until that setting is committed."""
    from bianet_lib.experiments.world import CALIBRATED_SCALE_LONG

    if CALIBRATED_SCALE_LONG is None:
        return []
    return [Run(a, (*VARIANTS[a], f"world_local_scale={CALIBRATED_SCALE_LONG}", f"epochs={TESTBED_LONG_EPOCHS}"), s)
            for s in seeds for a in arms]


def testbed_converged_rest_runs(seeds=TESTBED_SEEDS[:3]) -> list[Run]:
    """The fourth and fifth families at the converged setting, 3 seeds: Fig. 7's temperatures first
    (seed-major), then the bias study (seed-major): resumable, run in chunks across sessions."""
    from bianet_lib.experiments.world import CALIBRATED_SCALE_LONG

    if CALIBRATED_SCALE_LONG is None:
        return []
    tail = (f"world_local_scale={CALIBRATED_SCALE_LONG}", f"epochs={TESTBED_LONG_EPOCHS}")
    return [Run(name, (*over, *tail), s) for family in (FIG7_VARIANTS, BIAS_VARIANTS)
            for s in seeds for name, over in family.items()]


def testbed_converged_more_runs(seeds=TESTBED_SEEDS[:3]) -> list[Run]:
    """The second and third families at the converged setting, 3 seeds: the peer and BIANet without
    the curriculum first (seed-major), then Table 6's fixed thresholds (seed-major)."""
    from bianet_lib.experiments.world import CALIBRATED_SCALE_LONG

    if CALIBRATED_SCALE_LONG is None:
        return []
    tail = (f"world_local_scale={CALIBRATED_SCALE_LONG}", f"epochs={TESTBED_LONG_EPOCHS}")
    return [Run(name, (*over, *tail), s) for family in (TESTBED_SECONDARY, TABLE6_VARIANTS)
            for s in seeds for name, over in family.items()]


GRIDS: dict[str, Grid] = {
    "reduced": Grid("reduced", reduced_runs(), "cpu-small", REDUCED_BASE,
                    "CPU default: baseline and BIANet at rho = 0 and rho = 0.9, 3 seeds, "
                    "the full-size world drawn at 32x32 faces and 0.5 s clips, 4 epochs", workers=2, store="cpu"),
    "full": Grid("full", paper_runs(), "cpu-small", REDUCED_BASE,
                 "every experiment of the paper plus the bias study, 3 seeds (5 for the headline rows), "
                 "at the reduced grid's CPU scale (its runs are shared)", workers=2, store="cpu"),
    "full-paper": Grid("full-paper", paper_runs(), "paper", ["data=synthvox"],
                       "every experiment with the paper preset on SynthVox (GPU)"),
    "testbed-calibration": Grid("testbed-calibration", calibration_runs(), "cpu-small", _testbed_base(),
                                "the baseline alone on the local-interference world at each strength tried "
                                "(issue 11's pre-registered calibration)", workers=2),
    "testbed": Grid("testbed", testbed_runs(), "cpu-small", _testbed_base(),
                    "baseline, PIA, NIA, BIANet and the control on the calibrated local-interference world, "
                    "5 seeds", workers=2),
    "testbed-reduced": Grid("testbed-reduced", testbed_runs(TESTBED_REDUCED_ARMS, TESTBED_SEEDS[:3]), "cpu-small",
                            _testbed_base(), "baseline, BIANet and the control on the test-bed, 3 seeds "
                            "(its runs are the full test-bed grid's)", workers=2, store="testbed"),
    "testbed-secondary": Grid("testbed-secondary", testbed_secondary_runs(), "cpu-small", _testbed_base(),
                              "the peer (Table 1) and BIANet without the curriculum (Table 7) on the test-bed, "
                              "3 seeds (a second pre-registered family)", workers=2, store="testbed"),
    "testbed-long": Grid("testbed-long", testbed_long_runs(), "cpu-small", _testbed_base(),
                         f"the baseline and BIANet at {TESTBED_LONG_EPOCHS} epochs on the test-bed, 2 seeds "
                         "(does the 8-epoch budget converge?)", workers=2),
    "testbed-calibration-16": Grid("testbed-calibration-16", calibration_long_runs(), "cpu-small", _testbed_base(),
                                   f"the baseline-only calibration at {TESTBED_LONG_EPOCHS} epochs (for a "
                                   "converged test-bed grid; the rule is re-applied before any other arm runs)",
                                   workers=2),
    "testbed-16": Grid("testbed-16", testbed_converged_runs(), "cpu-small", _testbed_base(),
                       f"baseline, PIA, NIA, BIANet and the control at {TESTBED_LONG_EPOCHS} epochs on the "
                       "test-bed at the strength its own baseline calibration chose, 5 seeds (the converged "
                       "headline grid; resumable, run in chunks)", workers=2),
    "testbed-16-more": Grid("testbed-16-more", testbed_converged_more_runs(), "cpu-small", _testbed_base(),
                            f"the peer and BIANet without the curriculum (second family), then Table 6's fixed "
                            f"thresholds (third family), at {TESTBED_LONG_EPOCHS} epochs on the converged test-bed, "
                            "3 seeds, in the converged grid's store", workers=2, store="testbed-16"),
    "testbed-16-rest": Grid("testbed-16-rest", testbed_converged_rest_runs(), "cpu-small", _testbed_base(),
                            f"Fig. 7's temperatures (fourth family), then the bias study at rho 0.5 and 0.9 (fifth "
                            f"family), at {TESTBED_LONG_EPOCHS} epochs on the converged test-bed, 3 seeds, in the "
                            "converged grid's store", workers=2, store="testbed-16"),
    "testbed-16-reduced": Grid("testbed-16-reduced", testbed_converged_runs(TESTBED_REPRODUCE_ARMS, TESTBED_SEEDS[:1]),
                               "cpu-small", _testbed_base(),
                               f"the baseline and BIANet, seed 0, at {TESTBED_LONG_EPOCHS} epochs: two rows of the "
                               "converged grid, trained at once on 2 cores (notebook 07's CPU reproduction; its runs "
                               "are the converged grid's)", workers=2, store="testbed-16"),
    "fair-calibration": Grid("fair-calibration", fair_calibration_runs(), "cpu-small", _fair_base(),
                             "the fair world (issue 25): the baseline alone at every calibration setting, seed 0",
                             workers=2),
    "fair-calibration-2": Grid("fair-calibration-2", fair_calibration2_runs(), "cpu-small", _fair_base(),
                               "the fair world's calibration stage 2 (salient faces, p = 1): the baseline alone, seed 0",
                               workers=2),
    "fair-headroom": Grid("fair-headroom", fair_headroom_runs(), "cpu-small", _fair_base(),
                          "the fair test-bed's headroom check: the baseline and the oracle, 5 seeds, in the "
                          "calibrated world where the baseline lost most", workers=2, store="fair",
                          check=require_fair_headroom_world),
    "fair-exploratory": Grid("fair-exploratory", fair_exploratory_runs(), "cpu-small", _fair_base(),
                             "the fair test-bed's exploratory family: BIANet, supervised attention and the control, "
                             "5 seeds, in the headroom check's world", workers=2, store="fair",
                             check=require_fair_exploratory_world),
    "fair": Grid("fair", fair_runs(), "cpu-small", _fair_base(),
                 "the fair world: baseline, BIANet, the oracle, supervised attention and the control, 5 seeds",
                 workers=2, check=require_fair_calibrated),
    "testbed-smoke": Grid("testbed-smoke", [Run(a, (*VARIANTS[a], "world_local_scale=1.0"), 0)
                                            for a in ("baseline", "bianet", "control")],
                          "cpu-small", [*SMOKE_BASE, "world_preset=local"],
                          "three tiny runs on a tiny local-interference world (tests, notebook 07's FAST mode)"),
    "smoke": Grid("smoke", [Run("baseline", tuple(VARIANTS["baseline"]), 0),
                            Run("bianet", tuple(VARIANTS["bianet"]), 0)], "cpu-small", SMOKE_BASE,
                  "two tiny runs (tests, FAST notebooks)"),
}


def get_grid(name: str) -> Grid:
    if name not in GRIDS:
        raise KeyError(f"unknown grid {name!r}: expected one of {sorted(GRIDS)}")
    return GRIDS[name]


# --- running ------------------------------------------------------------------------------------
def result_path(results_dir: str | Path, grid: Grid | str, run: Run) -> Path:
    store = (grid if isinstance(grid, Grid) else get_grid(grid)).store
    return Path(results_dir) / store / f"{run.run_id}.json"


# --- what the grids define, per results folder ----------------------------------------------------
def expected_runs(store: str) -> set[tuple[str, int]]:
    """(run name, seed) of every run that the grids writing to the store ``store`` define."""
    return {(r.name, r.seed) for g in GRIDS.values() if g.store == store for r in g.runs}


def sweep_lines() -> dict[str, dict[str, dict[float, str]]]:
    """{figure: {line label: {knob value: arm}}} for viz.plot_sweep, from the grid definitions:
    Fig. 7's two temperatures (the default value is the ``bianet`` arm) and the bias study's rho
    (rho 0 is the arm trained without the shortcut)."""
    from bianet_lib.config import BIANetConfig

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


# --- reading results ----------------------------------------------------------------------------
def _acc(group: dict | None) -> float:
    return np.nan if not group or group.get("accuracy") is None else float(group["accuracy"])


def flatten_metrics(metrics: dict) -> dict[str, float]:
    """One flat dict of a results record's metrics. Classifier route: bare names; cosine route:
    ``cos_`` prefix. Names: ``vf_2``..``vf_10``, ``fv_*`` (1:K accuracy), ``ver_acc``, ``auc``,
    ``aligned_vf``/``conflicting_vf``/``gap_vf`` (shortcut breakdown of 1:2), ``clean_vf``/
    ``interfered_vf`` (interference breakdown of 1:2), likewise for fv."""
    out: dict[str, float] = {}
    for route, prefix in (("classifier", ""), ("cosine", "cos_")):
        res = metrics[route]
        for d in ("vf", "fv"):
            for k, acc in res["curve"][d].items():
                out[f"{prefix}{d}_{k}"] = float(acc)
            b = res["matching"].get(f"{d}_1:2", {}).get("breakdowns", {})
            sc, it = b.get("shortcut", {}), b.get("interference", {})
            out[f"{prefix}aligned_{d}"] = _acc(sc.get("aligned"))
            out[f"{prefix}conflicting_{d}"] = _acc(sc.get("conflicting"))
            out[f"{prefix}gap_{d}"] = np.nan if sc.get("gap") is None else float(sc["gap"])
            out[f"{prefix}clean_{d}"] = _acc(it.get("clean"))
            out[f"{prefix}interfered_{d}"] = _acc(it.get("interfered"))
        ver = res["verification"].get("verification", {})
        out[f"{prefix}ver_acc"] = float(ver.get("verification_accuracy", np.nan))
        out[f"{prefix}auc"] = float(ver.get("roc_auc", np.nan))
    return out


def store_runs(grid: str) -> list[Run]:
    """Every run of every grid that shares ``grid``'s results folder, once each, in grid order
    (the largest grid first): what ``load_results(..., grid)`` can find there."""
    store = get_grid(grid).store
    grids = sorted((g for g in GRIDS.values() if g.store == store), key=lambda g: -len(g.runs))
    return list({r.run_id: r for g in grids for r in g.runs}.values())


def load_results(results_dir: str | Path, grid: str | None = None) -> pd.DataFrame:
    """One row per finished run under ``results_dir``: grid (the one that ran it), name, seed,
    run_id, bias, variant switches, wall time and every metric of :func:`flatten_metrics`.
    With ``grid``, the finished runs of its results folder (``store_runs``, so a reduced grid
    also shows the full grid's finished runs), in grid order."""
    rows = []
    paths = sorted(Path(results_dir).glob("*/*.json"))
    if grid is not None:
        paths = [p for p in (result_path(results_dir, grid, r) for r in store_runs(grid)) if p.is_file()]
    for path in paths:
        rec = json.loads(path.read_text())
        exp, cfg = rec.get("experiment", {}), rec.get("config", {})
        row = {"grid": exp.get("grid", path.parent.name), "name": exp.get("name", path.stem.split("__")[0]),
               "seed": rec.get("seed"), "run_id": exp.get("run_id", path.stem),
               "bias": cfg.get("bias"), "use_pia": cfg.get("use_pia"), "use_nia": cfg.get("use_nia"),
               "curriculum": cfg.get("curriculum"), "epsilon_mode": cfg.get("epsilon_mode"),
               "epsilon": cfg.get("epsilon"), "tau1": cfg.get("tau1"), "tau2": cfg.get("tau2"),
               "epochs": cfg.get("epochs"), "wall_s": exp.get("wall_s"), "best_val_acc": exp.get("best_val_acc")}
        row.update(flatten_metrics(rec["metrics"]))
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame, metrics: list[str], by: str = "name",
                  order: list[str] | None = None) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of each metric per ``by``
    group, with the number of seeds. Columns: (metric, "mean"|"std") and ("n", "")."""
    g = df.groupby(by, sort=False)[metrics]
    mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
    out = pd.concat({"mean": mean, "std": std}, axis=1).swaplevel(axis=1)
    out = out[[(m, s) for m in metrics for s in ("mean", "std")]]
    out[("n", "")] = df.groupby(by, sort=False).size()
    if order is not None:
        out = out.loc[[o for o in order if o in out.index]]
    return out


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary_table`` as strings "mean ± std"."""
    metrics = [m for m in table.columns.get_level_values(0).unique() if m != "n"]
    out = pd.DataFrame({m: [f"{a:.{digits}f} ± {s:.{digits}f}" for a, s in
                            zip(table[(m, "mean")], table[(m, "std")], strict=True)] for m in metrics}, index=table.index)
    out["n"] = table[("n", "")].astype(int)
    return out


def spread_label(diff: float, stds) -> str:
    """"within spread" when |diff| < max(std) of the groups compared, else "higher"/"lower"."""
    spread = float(np.nanmax(np.asarray(stds, dtype=float)))
    if abs(diff) < spread or diff == 0:
        return "within spread"
    return "higher" if diff > 0 else "lower"


def welch_p(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's t-test from summary statistics (NaN below 2 seeds a side
    or with no spread at all, where the test is undefined)."""
    from scipy.stats import ttest_ind_from_stats

    if min(n_a, n_b) < 2 or std_a == std_b == 0:
        return float("nan")
    return float(ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue)


def compare(table: pd.DataFrame, metric: str, a: str, b: str) -> dict:
    """Row ``a`` against row ``b`` of a ``summary_table``: diff = a - b, its spread label, and
    Welch's two-sided p over the seeds (with 3 seeds a side only large effects reach p < 0.05)."""
    ma, mb = (float(table.loc[r, (metric, "mean")]) for r in (a, b))
    sa, sb = (float(table.loc[r, (metric, "std")]) for r in (a, b))
    na, nb = (int(table.loc[r, ("n", "")]) for r in (a, b))
    diff = ma - mb
    return {"metric": metric, "a": a, "b": b, "diff": diff, "spread": max(sa, sb),
            "label": spread_label(diff, [sa, sb]), "p": welch_p(ma, sa, na, mb, sb, nb)}


def describe_comparison(c: dict) -> str:
    """One :func:`compare` result as a table cell: "-0.023 (lower, p=0.01)"."""
    return f"{c['diff']:+.3f} ({c['label']}, p={c['p']:.2f})"
