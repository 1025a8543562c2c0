"""The local-interference test-bed: per-trial bits, the pre-registered calibration rule, the
endpoints every run records, and that the committed setting came from the baseline alone."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bianet_lib.config import load_config
from bianet_lib.data.sources import load_world
from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer
from bianet_lib.experiments import grids as ex
from bianet_lib.experiments import runner, world
from bianet_lib.experiments import testbed as tb
from bianet_lib.experiments.endpoints import trial_correct
from bianet_lib.model.network import BIANet

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_DIR = ROOT / "results" / "experiments" / "testbed-calibration"
TESTBED_DIR = ROOT / "results" / "experiments" / "testbed"
#: The reproduction report (the experiment log the README carried before issue 23).
REPORT = ROOT / "docs" / "reproduction.md"


def _report_text() -> str:
    """The reproduction report with its line breaks folded into spaces."""
    return " ".join(REPORT.read_text().split())


@pytest.mark.parametrize("n", [1, 7, 8, 9, 6000])
def test_bits_round_trip(n):
    x = np.random.default_rng(n).random(n) < 0.3
    assert np.array_equal(tb.unpack_bits(tb.pack_bits(x), n), x)
    with pytest.raises(ValueError, match="expected"):
        tb.unpack_bits(tb.pack_bits(x), n + 8)


def _row(scale, seed, vf, fv):
    return {"scale": scale, "seed": seed, "vf_drop": vf, "fv_drop": fv, "vf_acc": 0.8, "fv_acc": 0.8,
            "vf_clean": 0.8 + vf, "fv_clean": 0.8 + fv, "vf_filled": 0.8, "fv_filled": 0.8, "run": "r"}


def test_choose_scale_known_answers():
    # both directions must reach the target; the smallest such scale wins
    rows = [_row(0.5, 0, 0.05, 0.02), _row(1.0, 0, 0.12, 0.08), _row(1.5, 0, 0.11, 0.10), _row(2.0, 0, 0.2, 0.2)]
    assert tb.choose_scale(rows, 0.10) == 1.5
    assert tb.choose_scale(rows, 0.25) is None
    assert tb.choose_scale(rows, 0.0) == 0.5
    # seeds are averaged: 0.14 and 0.04 -> 0.09 < 0.10
    rows = [_row(1.0, 0, 0.14, 0.2), _row(1.0, 1, 0.04, 0.2), _row(2.0, 0, 0.1, 0.1)]
    assert tb.choose_scale(rows, 0.10) == 2.0
    text = tb.calibration_markdown(rows, 0.10)
    assert "Chosen: **scale 2**" in text and text.count("\n| 1 |") == 2


@pytest.fixture(scope="module")
def local_world(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfgs = {arm: load_config("cpu-small", overrides=[*ex.SMOKE_BASE, "world_preset=local", "world_n_test=6",
                                                     f"cache_dir={cache}", *ex.VARIANTS[arm]])
            for arm in ("bianet", "baseline")}
    return cfgs, load_world(cfgs["bianet"])


def test_endpoints_of_a_model(local_world):
    cfgs, world = local_world
    torch.manual_seed(0)
    model = BIANet(cfgs["bianet"])
    rec = tb.run_endpoints(model, cfgs["bianet"], world)
    trials = tb.endpoint_trials(world["test"])
    for d in tb.DIRECTIONS:
        r = rec["directions"][d]
        assert r["n_trials"] == len(trials[d].query) == 6 * tb.TRIALS_PER_ID
        assert set(r["accuracy"]) == {"dose0", "dose0.5", "dose1", "dose1.5", "filled"}
        for cond, acc in r["accuracy"].items():  # the stored bits are the accuracies
            bits = tb.trial_matrix({"endpoints": rec}, d, cond)
            assert bits.mean() == pytest.approx(acc)
        # dose 1 is the test split itself, scored trial by trial
        direct = trial_correct(BIANetScorer(model), world["test"], trials[d], seed=tb.TRIAL_SEED)
        assert np.array_equal(tb.trial_matrix({"endpoints": rec}, d, "dose1"), direct)
        assert r["clean_twin_drop"] == pytest.approx(r["accuracy"]["dose0"] - r["accuracy"]["dose1"])
    # PIA and NIA attention on both modalities; the uniform-attention share is the mask's share
    for modality in ("face", "voice"):
        for branch in ("pia", "nia"):
            a = rec["attention"][modality][branch]
            assert 0 < a["share"] < 1 and 0 <= a["mass"] <= 1 and a["n"] > 0
    # probes: kind on every sample, position on those that carry interference; h_tilde with NIA
    assert set(rec["probes"]) == {"face/h_hat", "face/h_tilde", "voice/h_hat", "voice/h_tilde"}
    assert 0 <= rec["probes"]["face/h_hat"]["kind"]["accuracy"] <= 1
    # the baseline has no attention to measure
    base = BIANet(cfgs["baseline"])
    assert tb.run_endpoints(base, cfgs["baseline"], world)["attention"] == {}
    assert rec["route"] == "classifier"


def test_endpoints_score_on_the_route_the_run_was_selected_on(local_world):
    """The peer's classifier is never trained (select_route=cosine): its endpoints must use the
    cosine route, or every peer trial would be scored by an untrained head."""
    _, world = local_world
    cfg = load_config("cpu-small", overrides=[*ex.SMOKE_BASE, "world_preset=local", *ex.VARIANTS["peer"]])
    torch.manual_seed(0)
    model = BIANet(cfg)
    rec = tb.run_endpoints(model, cfg, world)
    assert rec["route"] == "cosine"
    trials = tb.endpoint_trials(world["test"])
    for d in tb.DIRECTIONS:
        cosine = trial_correct(EmbeddingCosineScorer(model), world["test"], trials[d], seed=tb.TRIAL_SEED)
        assert np.array_equal(tb.trial_matrix({"endpoints": rec}, d, "dose1"), cosine)


def test_local_labels_known_answers(local_world):
    _, world = local_world
    test = world["test"]
    lab = tb.local_labels(test, "face")
    size = test.faces.shape[-1]
    for i in range(len(test.faces)):
        y0, x0, y1, x1 = (int(v) for v in test.face_boxes[i])
        if y1 == y0:
            assert lab["position"][i] == -1 and lab["kind"][i] == "none"
        else:  # the quadrant of the box centre, read off the mask itself
            ys, xs = np.nonzero(tb_mask(test, i))
            assert lab["position"][i] == 2 * (ys.mean() + 0.5 >= size / 2) + (xs.mean() + 0.5 >= size / 2)
    lab = tb.local_labels(test, "voice")
    assert set(np.unique(lab["position"])) <= {-1, 0, 1, 2} and len(lab["kind"]) == len(test.voices)
    assert ((lab["position"] == -1) == (lab["kind"] == "none")).all()


def tb_mask(split, i):
    from bianet_lib.data.interference import split_face_masks

    return split_face_masks(split, [i])[0].numpy()


def test_dose_splits_are_cached_and_exact(local_world):
    cfgs, world = local_world
    cfg = cfgs["bianet"]
    a = tb.test_split_at(cfg, 0.0)
    b = tb.test_split_at(cfg, 0.0)  # from the cache file
    assert torch.equal(a.faces, b.faces) and torch.equal(a.voices, b.voices)
    assert (a.face_boxes[:, 2] == a.face_boxes[:, 0]).all()  # dose 0: no interference left
    one = tb.test_split_at(cfg, 1.0)  # regenerated at dose 1 = the world's test split
    assert torch.equal(one.faces, world["test"].faces) and torch.equal(one.voices, world["test"].voices)


def test_endpoints_refuse_a_world_without_masks(tmp_path):
    cfg = load_config("cpu-small", overrides=[*ex.SMOKE_BASE, f"cache_dir={tmp_path}"])
    with pytest.raises(ValueError, match="world_preset=local"):
        tb.run_endpoints(BIANet(cfg), cfg, load_world(cfg))


def test_a_testbed_run_records_endpoints_and_provenance(monkeypatch, tmp_path):
    monkeypatch.setenv("BIANET_CACHE", str(tmp_path / "cache"))
    grid = ex.Grid("tiny-local", [ex.Run("baseline", tuple(ex.VARIANTS["baseline"]), 0)], "cpu-small",
                   [*ex.SMOKE_BASE, "world_preset=local"])
    monkeypatch.setitem(ex.GRIDS, "tiny-local", grid)
    runner.run_grid("tiny-local", tmp_path / "results", progress=False)
    rec = json.loads((tmp_path / "results" / "tiny-local" / "baseline__s0.json").read_text())
    assert set(rec["endpoints"]["directions"]) == {"vf", "fv"}
    assert rec["provenance"]["code_hash"] and rec["provenance"]["determinism"]["seed"] == 0
    assert [h["epoch"] for h in rec["experiment"]["history"]] == [1] and "val_acc" in rec["experiment"]["history"][0]
    assert tb.calibration_rows(tmp_path / "results" / "tiny-local")[0]["scale"] == 1.0


def test_the_testbed_grid_waits_for_the_calibration(monkeypatch):
    monkeypatch.setattr(world, "CALIBRATED_SCALE", None)
    assert ex.testbed_runs() == []
    monkeypatch.setattr(world, "CALIBRATED_SCALE", 1.5)
    runs = ex.testbed_runs()
    assert len(runs) == len(ex.TESTBED_ARMS) * len(ex.TESTBED_SEEDS)
    assert all("world_local_scale=1.5" in r.overrides for r in runs)
    assert [r.seed for r in runs[:len(ex.TESTBED_ARMS)]] == [0] * len(ex.TESTBED_ARMS)  # seed-major
    # the calibration trains the baseline only
    assert {r.overrides[:2] for r in ex.calibration_runs()} == {tuple(ex.VARIANTS["baseline"])}


def test_the_secondary_and_convergence_grids():
    sec = ex.get_grid("testbed-secondary")
    assert sec.store == "testbed" and [r.seed for r in sec.runs] == [0, 0, 1, 1, 2, 2]
    by = {r.name: r.overrides for r in sec.runs}
    assert by["peer"][:-1] == tuple(ex.VARIANTS["peer"])
    assert by["curriculum_constant"][:-1] == (*ex.VARIANTS["bianet"], "curriculum=constant")
    assert all(r.overrides[-1] == f"world_local_scale={tb.CALIBRATED_SCALE}" for r in sec.runs)
    # the family compares arms that exist in the store's grids
    arms = {r.name for g in ("testbed", "testbed-secondary") for r in ex.get_grid(g).runs}
    assert {a for pair in tb.SECONDARY_COMPARISONS for a in pair} <= arms
    long = ex.get_grid("testbed-long")
    assert long.store == "testbed-long" and {r.name for r in long.runs} == {"baseline_long", "bianet_long"}
    cfg = long.config(long.runs[0])
    assert cfg.epochs == ex.TESTBED_LONG_EPOCHS == 16 and cfg.world_local_scale == tb.CALIBRATED_SCALE
    # everything else as the 8-epoch run of the same arm and seed
    short = ex.get_grid("testbed").config(ex.Run("baseline", (*ex.VARIANTS["baseline"],
                                                              f"world_local_scale={tb.CALIBRATED_SCALE}"), 0))
    assert {**cfg.to_dict(), "epochs": 8} == short.to_dict()
    # the calibration at the longer budget: the baseline alone, the same scales, 16 epochs
    cal16 = ex.get_grid("testbed-calibration-16")
    cfgs = [cal16.config(r) for r in cal16.runs]
    assert sorted(c.world_local_scale for c in cfgs) == sorted(tb.CALIBRATION_SCALES)
    assert all(c.epochs == 16 and not c.use_pia and not c.use_nia and not c.control_attention for c in cfgs)


def _epoch_record(name, seed, vals, acc1, acc0):
    dirs = {d: {"accuracy": {"dose1": acc1, "dose0": acc0}} for d in tb.DIRECTIONS}
    return {"seed": seed, "endpoints": {"directions": dirs},
            "experiment": {"name": name, "history": [{"val_acc": v} for v in vals]}}


def test_the_convergence_table_known_answers(tmp_path):
    (tmp_path / "testbed").mkdir()
    (tmp_path / "testbed-long").mkdir()
    short = _epoch_record("baseline", 0, [0.5, 0.6, 0.62, 0.64, 0.66, 0.68, 0.69, 0.70], 0.60, 0.70)
    long = _epoch_record("baseline_long", 0, [0.5, 0.6, 0.62, 0.64, 0.66, 0.68, 0.69, 0.70] + [0.72, 0.71] + [0.73] * 6,
                        0.65, 0.73)
    (tmp_path / "testbed" / "baseline__s0.json").write_text(json.dumps(short))
    (tmp_path / "testbed-long" / "baseline_long__s0.json").write_text(json.dumps(long))
    rows = tb.long_rows(tmp_path / "testbed-long")
    assert len(rows) == 1 and rows[0]["arm"] == "baseline" and rows[0]["long_best_epoch"] == 11
    assert rows[0]["short_vf_drop"] == pytest.approx(0.10) and rows[0]["long_fv_drop"] == pytest.approx(0.08)
    text = tb.long_markdown(tmp_path / "testbed-long")
    assert "| baseline | 0 | 0.700 | 0.730 | 11 | 0.600 / 0.600 | 0.650 / 0.650 | +0.100 / +0.100 | +0.080 / +0.080 |" in text
    assert "by +0.050 on average" in text and "moved +0.030 from epoch 8 to epoch 16" in text


GRID16_DIR = ROOT / "results" / "experiments" / "testbed-16"
#: Every file that has held the pre-registered definitions (the 2026-12 layout move split them), so
#: the commit history finds the first commit that wrote each one wherever it then lived.
FAMILY_HOMES = ("bianet_lib/testbed.py", "bianet_lib/experiments/testbed.py", "bianet_lib/experiments/preregistration.py")
GRID_HOMES = ("bianet_lib/experiments.py", "bianet_lib/experiments/grids.py")
CONSTANT_HOMES = ("bianet_lib/testbed.py", "bianet_lib/experiments/testbed.py", "bianet_lib/experiments/world.py")


@pytest.mark.parametrize("pattern, path, store, arms", [
    (r"^SECONDARY_COMPARISONS = ", FAMILY_HOMES, TESTBED_DIR, ex.TESTBED_SECONDARY),
    (r"^TABLE6_COMPARISONS = ", FAMILY_HOMES, GRID16_DIR, ex.TABLE6_VARIANTS),
    (r'"testbed-16-more": Grid\(', GRID_HOMES, GRID16_DIR, {**ex.TESTBED_SECONDARY, **ex.TABLE6_VARIANTS}),
    (r"^FIG7_COMPARISONS = ", FAMILY_HOMES, GRID16_DIR, ex.FIG7_VARIANTS),
    (r"^BIAS_COMPARISONS = ", FAMILY_HOMES, GRID16_DIR, ex.BIAS_VARIANTS),
    (r'"testbed-16-rest": Grid\(', GRID_HOMES, GRID16_DIR, {**ex.FIG7_VARIANTS, **ex.BIAS_VARIANTS}),
], ids=["secondary", "table6", "converged-more-grid", "fig7", "bias", "converged-rest-grid"])
def test_later_families_were_committed_before_their_runs(pattern, path, store, arms):
    """Pre-registration of the later families: the commit that wrote the family (or the grid that
    runs it at the converged setting) is an ancestor of the first commit holding one of its runs."""
    if _git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: the commit order cannot be read")
    set_at = _git("log", "--reverse", "--format=%H", "-G", pattern, "--", *path).splitlines()
    paths = [str(store / f"{arm}__s{s}.json") for arm in arms for s in ex.TESTBED_SEEDS]
    first_run = _git("log", "--reverse", "--diff-filter=A", "--format=%H", "--", *paths).splitlines()
    if first_run:
        assert set_at, f"runs of {sorted(arms)} are committed but {pattern!r} never was"
        subprocess.run(["git", "merge-base", "--is-ancestor", set_at[0], first_run[0]], cwd=ROOT, check=True)


def test_the_converged_grids_second_part():
    more = ex.get_grid("testbed-16-more")
    assert more.store == "testbed-16" and len(more.runs) == 15
    assert [r.name for r in more.runs[:6]] == ["peer", "curriculum_constant"] * 3  # the second family first
    assert [r.seed for r in more.runs] == [0, 0, 1, 1, 2, 2] + [0] * 3 + [1] * 3 + [2] * 3
    for r in more.runs:
        cfg = more.config(r)
        assert (cfg.world_local_scale, cfg.epochs) == (tb.CALIBRATED_SCALE_LONG, ex.TESTBED_LONG_EPOCHS)
        if r.name.startswith("epsilon_"):
            assert cfg.epsilon_mode == "fixed" and f"epsilon_{cfg.epsilon:g}" == r.name and cfg.use_pia and cfg.use_nia
    assert {a for pair in tb.TABLE6_COMPARISONS for a in pair} <= {r.name for r in more.runs} | {"bianet"}


def test_the_converged_grids_third_part():
    """Fig. 7 then the bias study, seed-major, at the converged setting; each run differs from the
    default BIANet (or the baseline) by exactly the knob its name says."""
    from bianet_lib.config import BIANetConfig

    rest = ex.get_grid("testbed-16-rest")
    default = BIANetConfig()
    assert rest.store == "testbed-16" and len(rest.runs) == 3 * (8 + 7)
    assert [r.seed for r in rest.runs] == [0] * 8 + [1] * 8 + [2] * 8 + [0] * 7 + [1] * 7 + [2] * 7
    assert {f"tau1_{default.tau1:g}", f"tau2_{default.tau2:g}"}.isdisjoint(ex.FIG7_VARIANTS)  # the defaults are "bianet"
    conv = ex.get_grid("testbed-16")
    bianet = conv.config(next(r for r in conv.runs if r.name == "bianet" and r.seed == 0))
    for r in rest.runs:
        cfg = rest.config(r)
        assert (cfg.world_local_scale, cfg.epochs) == (tb.CALIBRATED_SCALE_LONG, ex.TESTBED_LONG_EPOCHS)
        if r.name.startswith("tau"):
            which, tau = r.name.split("_")
            changed = {k for k, v in cfg.to_dict().items() if v != bianet.to_dict()[k]} - {"seed"}
            assert changed == {which} and getattr(cfg, which) == float(tau)
        else:
            arm, rho = r.name.rsplit("_rho", 1)
            assert cfg.bias == float(rho) and cfg.use_pia == (arm in ("bianet", "pia", "curriculum_constant"))
            assert cfg.use_nia == (arm in ("bianet", "nia", "curriculum_constant"))
            assert (cfg.curriculum == "constant") == (arm == "curriculum_constant")
    names = {r.name for r in rest.runs} | {"bianet", "baseline"}
    assert {a for pair in (*tb.FIG7_COMPARISONS, *tb.BIAS_COMPARISONS) for a in pair} <= names
    assert len(tb.FIG7_COMPARISONS) == 8 and len(tb.BIAS_COMPARISONS) == 6


def test_interim_is_said_per_family(tmp_path):
    """A store whose first family is complete but whose later family is not: the first family's
    text carries no INTERIM line, the later family's does."""
    import shutil

    store = tmp_path / "testbed-16"
    store.mkdir()
    for p in GRID16_DIR.glob("*.json"):
        if p.stem.split("__")[0] in ex.TESTBED_ARMS:
            shutil.copy(p, store / p.name)
    fake = json.loads((store / "bianet__s0.json").read_text())
    fake["experiment"]["name"] = "epsilon_0.1"
    (store / "epsilon_0.1__s0.json").write_text(json.dumps(fake))
    text = tb.testbed_markdown(store, n_boot=100)
    first, _, later = text.partition("Third pre-registered family")
    assert "INTERIM" not in first
    assert "INTERIM: 6 of its 14 pre-registered runs have finished" in later  # 5 bianet + 1 of 9 fixed


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _assert_set_before_first_run(constant: str, runs_dir: Path) -> None:
    """The commit that first gave ``testbed.<constant>`` a value is an ancestor of the first commit
    that added a run file under ``runs_dir`` (skipped on a shallow clone, which lacks the history)."""
    if _git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: the commit order of calibration and runs cannot be read")
    set_at = _git("log", "--reverse", "--format=%H", "-G", rf"^{constant}: float \| None = [0-9]",
                  "--", *CONSTANT_HOMES).splitlines()
    first_run = _git("log", "--reverse", "--diff-filter=A", "--format=%H", "--", str(runs_dir)).splitlines()
    if first_run:
        assert set_at, f"{constant} was never set in a commit"
        subprocess.run(["git", "merge-base", "--is-ancestor", set_at[0], first_run[0]], cwd=ROOT, check=True)


def test_the_committed_setting_is_the_baseline_calibration():
    """Pre-registration: CALIBRATED_SCALE is the rule applied to the committed baseline-only
    calibration; every committed test-bed run uses it; and none of them was committed before it."""
    rows = tb.calibration_rows(CALIBRATION_DIR)
    if tb.CALIBRATED_SCALE is None:
        assert not list(TESTBED_DIR.glob("*.json")), "test-bed runs exist but no calibrated scale"
        return
    assert rows, f"CALIBRATED_SCALE is set but {CALIBRATION_DIR} holds no calibration"
    assert {json.loads(p.read_text())["config"]["use_pia"] for p in CALIBRATION_DIR.glob("*.json")} == {False}
    assert tb.choose_scale(rows) == tb.CALIBRATED_SCALE
    for path in TESTBED_DIR.glob("*.json"):
        assert json.loads(path.read_text())["config"]["world_local_scale"] == tb.CALIBRATED_SCALE, path.name
    _assert_set_before_first_run("CALIBRATED_SCALE", TESTBED_DIR)


def test_the_converged_setting_is_its_own_baseline_calibration():
    """Pre-registration of the 16-epoch grid: CALIBRATED_SCALE_LONG is the rule applied to the
    committed 16-epoch baseline-only calibration; every run of the grid uses it and 16 epochs; the
    commit that set it precedes the first commit holding one of the grid's runs."""
    from bianet_lib.experiments.grids import GRIDS, TESTBED_LONG_EPOCHS

    cal16, grid16 = ROOT / "results" / "experiments" / "testbed-calibration-16", ROOT / "results" / "experiments" / "testbed-16"
    rows = tb.calibration_rows(cal16)
    assert {json.loads(p.read_text())["config"]["use_pia"] for p in cal16.glob("*.json")} == {False}
    assert tb.CALIBRATED_SCALE_LONG is not None and tb.choose_scale(rows) == tb.CALIBRATED_SCALE_LONG
    # the report's prose about this calibration is its numbers
    readme = _report_text()
    at1 = next(r for r in rows if r["scale"] == 1.0)
    assert f"drop {at1['vf_drop']:.3f} / {at1['fv_drop']:.3f} at scale 1" in readme
    runs = GRIDS["testbed-16"].runs
    assert len(runs) == 25 and {r.seed for r in runs} == {0, 1, 2, 3, 4}
    assert all(f"world_local_scale={tb.CALIBRATED_SCALE_LONG}" in r.overrides
               and f"epochs={TESTBED_LONG_EPOCHS}" in r.overrides for r in runs)
    for path in grid16.glob("*.json"):
        cfg = json.loads(path.read_text())["config"]
        assert (cfg["world_local_scale"], cfg["epochs"]) == (tb.CALIBRATED_SCALE_LONG, TESTBED_LONG_EPOCHS), path.name
    _assert_set_before_first_run("CALIBRATED_SCALE_LONG", grid16)


def test_holm_known_answers():
    # sorted p: 0.01 * 4 = 0.04, 0.02 * 3 = 0.06, 0.03 * 2 = 0.06 (monotone), 0.5 * 1
    assert tb.holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert tb.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert tb.holm([0.01]) == [0.01]


def test_hierarchical_bootstrap_detects_a_real_gap_and_not_a_null():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(100), 20)  # 100 identities x 20 trials
    ease = rng.random(100)[clusters]  # identities differ in difficulty (shared by both arms)
    a = (rng.random((3, 2000)) < 0.6 + 0.3 * ease).astype(float)
    same = (rng.random((3, 2000)) < 0.6 + 0.3 * ease).astype(float)
    better = (rng.random((3, 2000)) < 0.65 + 0.3 * ease).astype(float)
    null = tb.hierarchical_bootstrap(same, a, clusters, n_boot=1000)
    assert null["p"] > 0.05 and null["ci"][0] < 0 < null["ci"][1]
    gap = tb.hierarchical_bootstrap(better, a, clusters, n_boot=1000)
    assert gap["diff"] == pytest.approx(better.mean() - a.mean())
    assert gap["p"] < 0.01 and gap["ci"][0] < 0.05 < gap["ci"][1] and gap["ci"][0] > 0
    assert gap["seeds"] == [3, 3]
    # one run per arm, the same bits: no seed to resample, the same identities: exactly 0
    zero = tb.hierarchical_bootstrap(a[:1], a[:1].copy(), clusters, n_boot=200)
    assert zero["diff"] == 0 and zero["ci"] == [0.0, 0.0] and zero["p"] == 1.0
    # the same three runs on each side: seeds are resampled within each arm, so the interval
    # has the seed spread's width around 0
    same3 = tb.hierarchical_bootstrap(a, a.copy(), clusters, n_boot=500)
    assert same3["diff"] == 0 and same3["ci"][0] < 0 < same3["ci"][1] and same3["p"] > 0.5


def _fake_record(p_correct: dict[str, float], n: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    dirs = {}
    for d in tb.DIRECTIONS:
        hit = rng.random(n) < p_correct[d]
        dirs[d] = {"n_trials": n, "bits": {"dose1": tb.pack_bits(hit), "dose0": tb.pack_bits(hit)}}
    return {"seed": seed, "endpoints": {"directions": dirs}}


def test_learned_tells_chance_from_learning_run_by_run():
    clusters = {d: np.repeat(np.arange(100), 20) for d in tb.DIRECTIONS}
    records = {"mixed": [_fake_record({"vf": 0.5, "fv": 0.5}, seed=0), _fake_record({"vf": 0.6, "fv": 0.7}, seed=1)]}
    rows = {(r["seed"], r["direction"]): r for r in tb.learned(records, clusters, n_boot=500)}
    assert not rows[0, "vf"]["above_chance"] and not rows[0, "fv"]["above_chance"]
    assert rows[1, "vf"]["above_chance"] and rows[1, "fv"]["above_chance"]
    assert rows[1, "fv"]["ci"][0] < rows[1, "fv"]["accuracy"] < rows[1, "fv"]["ci"][1]
    # a model at chance and its own clean twins: drop exactly 0 (nothing to lose)
    assert tb.per_trial(records["mixed"][:1], "vf", "clean_twin_drop").sum() == 0


def test_verdict_sentences_follow_the_numbers():
    """tb.verdict_lines (notebook 07's sentences) on the committed converged grid states the
    comparisons' own numbers, and its verdicts flip when constructed numbers say the opposite."""
    import copy

    full = tb.load_records(GRID16_DIR)
    records = {a: v for a, v in full.items() if a in ex.TESTBED_ARMS}
    lines = tb.verdict_lines(records, n_boot=300)
    comps = tb.compare_arms(records, tb.clusters_for(records["baseline"][0]), n_boot=300)
    for c in comps:
        quoted = f"{c['direction'].upper()} {c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] (Holm p {c['p_holm']:.3f})"
        assert any(line.startswith(f"{c['comparison']}, {c['endpoint'].replace('_', ' ')}:") and quoted in line
                   for line in lines), quoted
    n_runs = sum(len(v) for v in records.values())
    assert f"{n_runs} of {n_runs} runs are above chance in both directions." in lines  # no run at chance here
    assert any("BIANet voice: the interference covers every token" in line for line in lines)  # share 1.0 at 2.5
    # constructed: PIA looks away from the face patch and NIA at it, in every seed; h_tilde holds the kind
    steered = copy.deepcopy(records)
    for rec in steered["bianet"]:
        rec["endpoints"]["attention"]["face"]["pia"]["ratio"] = 0.5
        rec["endpoints"]["attention"]["face"]["nia"]["ratio"] = 1.5
        rec["endpoints"]["probes"]["face/h_tilde"]["kind"]["accuracy"] = 0.99
    out = tb.verdict_lines(steered, n_boot=100)
    face = next(line for line in out if line.startswith("BIANet face"))
    assert "PIA is below 1 in 5 of 5 seeds and NIA above PIA in 5 of 5" in face and "does steer away" in face
    assert "h_tilde encodes it more than h_hat" in next(line for line in out if line.startswith("bianet face: a linear"))
    before = next(line for line in lines if line.startswith("BIANet face"))
    assert "close to blind" in before


def test_the_readme_verdict_on_the_converged_grid_is_its_numbers():
    """The report's "What the converged grid says" paragraph, number by number, from the runs."""
    full = tb.load_records(GRID16_DIR)
    records = {a: v for a, v in full.items() if a in ex.TESTBED_ARMS}
    readme = _report_text()
    para = readme[readme.index("**What the converged grid says**"):]
    para = para[:para.index("GPU scale")]
    comps = tb.compare_arms(records, tb.clusters_for(records["baseline"][0]))
    get = {(c["comparison"], c["endpoint"], c["direction"]): c for c in comps}
    assert not any(c["significant"] for c in comps) and "**a null result.**" in para
    assert f"None of the {len(comps)} pre-registered comparisons" in para
    assert f"smallest Holm p {min(c['p_holm'] for c in comps):.3f}" in para
    ba = [get["bianet - baseline", "accuracy", d] for d in tb.DIRECTIONS]
    assert f"by {ba[0]['diff']:+.3f} (V-F) and {ba[1]['diff']:+.3f} (F-V)" in para
    assert f"reach at most {max(c['ci'][1] for c in ba):+.3f}" in para and max(c["ci"][1] for c in ba) < 0.015
    bc = [get["bianet - control", "accuracy", d] for d in tb.DIRECTIONS]
    assert f"control of the same capacity ({bc[0]['diff']:+.3f} / {bc[1]['diff']:+.3f})" in para
    att = {(a["arm"], a["modality"], a["branch"]): a for a in tb.attention_table(records)}
    assert (f"PIA puts {att['bianet', 'face', 'pia']['ratio']:.2f}x and NIA {att['bianet', 'face', 'nia']['ratio']:.2f}x"
            in para)
    probes = {k: np.mean([r["endpoints"]["probes"][f"face/{k}"]["kind"]["accuracy"] for r in records["bianet"]])
              for k in ("h_hat", "h_tilde")}
    chance = np.mean([r["endpoints"]["probes"]["face/h_hat"]["kind"]["chance"] for r in records["bianet"]])
    assert probes["h_hat"] > probes["h_tilde"]  # "better than from its negative h_tilde"
    assert f"h_hat ({probes['h_hat']:.3f}, chance {chance:.3f})" in para and f"h_tilde ({probes['h_tilde']:.3f})" in para
    rows = {r["arm"]: r for r in tb.arm_table(records)}
    loss = {a: (rows[a]["vf_dose1"] - rows[a]["vf_dose1.5"] + rows[a]["fv_dose1"] - rows[a]["fv_dose1.5"]) / 2
            for a in ("bianet", "baseline")}
    assert f"BIANet loses {loss['bianet']:.3f} of 1:2 accuracy and the baseline {loss['baseline']:.3f}" in para
    full = tb.load_records(GRID16_DIR)
    second = tb.compare_arms(full, tb.clusters_for(full["baseline"][0]), comparisons=tb.SECONDARY_COMPARISONS)
    sec = {(c["comparison"], c["endpoint"], c["direction"]): c for c in second}
    assert len(second) == 8 and not any(c["significant"] for c in second)
    assert f"null as well (0 of {len(second)} significant after Holm)" in para
    pb = [sec["peer - baseline", "accuracy", d]["diff"] for d in tb.DIRECTIONS]
    bc = [sec["bianet - curriculum_constant", "accuracy", d]["diff"] for d in tb.DIRECTIONS]
    assert f"baseline's by {pb[0]:+.3f} / {pb[1]:+.3f}" in para and f"without it by {bc[0]:+.3f} / {bc[1]:+.3f}" in para
    third = tb.compare_arms(full, tb.clusters_for(full["baseline"][0]), comparisons=tb.TABLE6_COMPARISONS)
    thr = {(c["comparison"], c["endpoint"], c["direction"]): c for c in third}
    assert len(third) == 12 and not any(c["significant"] for c in third)
    assert f"null too (0 of {len(third)} significant after Holm)" in para
    acc = {d: [thr[f"{arm} - bianet", "accuracy", d]["diff"] for arm, _ in tb.TABLE6_COMPARISONS] for d in tb.DIRECTIONS}
    assert "accuracy by {:+.3f}, {:+.3f} and {:+.3f} (F-V {:+.3f}, {:+.3f}, {:+.3f})".format(*acc["vf"], *acc["fv"]) in para
    stuck = [(r["arm"], r["seed"]) for r in tb.learned({a: full[a] for a in ex.TABLE6_VARIANTS}, tb.clusters_for(full["baseline"][0]),
                                                        n_boot=300) if not r["above_chance"]]
    assert sorted(set(stuck)) == [("epsilon_0.1", 0)] and "one run that stayed at chance (epsilon 0.1, seed 0)" in para


def test_the_readme_states_the_converged_grids_convergence_and_cost():
    full = tb.load_records(GRID16_DIR)
    records = {a: v for a, v in full.items() if a in ex.TESTBED_ARMS}
    short = tb.load_records(ROOT / "results" / "experiments" / "testbed")
    readme = _report_text()
    n = sum(len(v) for v in records.values())
    rising, n_hist = tb.still_rising(records)
    rising8, n_hist8 = tb.still_rising(short)
    assert f"all {n} runs finished, every one above chance in both directions" in readme
    assert all(r["above_chance"] for r in tb.learned(records, tb.clusters_for(records["baseline"][0]), n_boot=300))
    assert (f"{n_hist - rising} of {n_hist} gaining less than 0.01 validation accuracy over their last two epochs "
            f"(at 8 epochs {rising8} of {n_hist8} runs were still rising") in readme
    walls = [r["experiment"]["wall_s"] / 60 for recs in records.values() for r in recs]
    assert f"{sum(walls):.0f} worker-minutes measured" in readme
    assert f"25 runs of about {sum(walls) / len(walls):.0f} worker-minutes each" in readme
    by_run = {(arm, int(r["seed"])): r for arm, recs in full.items() for r in recs}
    parts = [[by_run[r.name, r.seed]["experiment"]["wall_s"] / 60 for r in ex.GRIDS[g].runs]  # KeyError: missing
             for g in ("testbed-16", "testbed-16-more", "testbed-16-rest")]
    total = [m for part in parts for m in part]
    assert (f"The converged grid in all took {len(total)} runs, {sum(total):.0f} worker-minutes on the 2-core "
            f"machine (one thread per run): {len(parts[0])} runs, {sum(parts[0]):.0f} for Table 5 and the control; "
            f"{len(parts[1])} runs, {sum(parts[1]):.0f} for its second part; {len(parts[2])} runs, "
            f"{sum(parts[2]):.0f} for its third.") in readme


def _copy_runs(names, dst):
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(GRID16_DIR / f"{name}.json", dst / f"{name}.json")
    return dst


def test_reproduction_of_an_identical_run_is_identical(tmp_path):
    fresh = _copy_runs(["baseline__s0", "bianet__s0"], tmp_path / "fresh")
    rows = tb.reproduction_rows(fresh, GRID16_DIR)
    assert [(r["arm"], r["seed"]) for r in rows] == [("baseline", 0), ("bianet", 0)]
    assert all(r["identical"] and r["vf_agree"] == 1.0 and r["val_max_abs_diff"] == 0 for r in rows)
    lines = tb.reproduction_lines(rows, tb.load_records(GRID16_DIR), total_wall_min=12.34)
    assert all("bit-identical" in line for line in lines[:2]) and "12.3 minutes" in lines[2]


def test_reproduction_reports_a_difference_against_the_seed_spread(tmp_path):
    """A rerun whose trials differ: not identical, the agreement is the share of equal trials, the
    accuracy difference is what was planted, and the sentence says whether it is within the
    arm's seed-to-seed spread."""
    fresh = _copy_runs(["baseline__s0"], tmp_path / "fresh")
    rec = json.loads((fresh / "baseline__s0.json").read_text())
    ep = rec["endpoints"]["directions"]["vf"]
    bits = tb.trial_matrix(rec, "vf", "dose1")
    flip = np.flatnonzero(bits)[:60]  # 60 right trials turned wrong: accuracy -0.010
    bits[flip] = False
    ep["bits"]["dose1"] = tb.pack_bits(bits)
    ep["accuracy"]["dose1"] -= 60 / ep["n_trials"]
    rec["experiment"]["history"][-1]["val_acc"] += 0.003
    (fresh / "baseline__s0.json").write_text(json.dumps(rec))
    (row,) = tb.reproduction_rows(fresh, GRID16_DIR)
    assert not row["identical"] and row["fv_agree"] == 1.0
    assert row["vf_agree"] == pytest.approx(1 - 60 / ep["n_trials"])
    assert row["vf_committed"] - row["vf_fresh"] == pytest.approx(60 / ep["n_trials"])
    assert row["val_max_abs_diff"] == pytest.approx(0.003)
    committed = tb.load_records(GRID16_DIR)
    spread = min(tb.seed_spread(committed, "baseline", d) for d in tb.DIRECTIONS)
    (line,) = tb.reproduction_lines([row], committed)
    assert f"differs by up to {60 / ep['n_trials']:.3f}" in line
    assert ("within" if 60 / ep["n_trials"] <= spread else "beyond") in line
    assert f"agree on {1 - 60 / ep['n_trials']:.1%}" in line


def test_reproduction_without_a_committed_counterpart_is_an_error(tmp_path):
    fresh = _copy_runs(["baseline__s0"], tmp_path / "fresh")
    rec = json.loads((fresh / "baseline__s0.json").read_text())
    rec["seed"] = 7
    (fresh / "baseline__s0.json").write_text(json.dumps(rec))
    with pytest.raises(KeyError, match="baseline seed 7 has no committed counterpart"):
        tb.reproduction_rows(fresh, GRID16_DIR)


def test_the_committed_reproduction_is_bit_identical_and_timed():
    """Notebook 07's reproduction (two converged-grid rows retrained from an empty results folder
    and world cache on the 2-core machine) matched the committed runs trial for trial, and its
    measured wall time is the one the notebook and the report state."""
    repro = ROOT / "results" / "experiments" / "testbed-16-reproduced"
    rows = tb.reproduction_rows(repro, GRID16_DIR)
    assert {(r["arm"], r["seed"]) for r in rows} == {(r.name, r.seed) for r in ex.get_grid("testbed-16-reduced").runs}
    assert all(r["identical"] for r in rows)
    timing = json.loads((repro / "timing.json").read_text())
    assert timing["rc"] == 0 and "testbed-16-reduced" in timing["command"]
    assert max(r["wall_min"] for r in rows) < timing["wall_s"] / 60 < 30


def test_the_readme_states_the_reproduction_from_its_record():
    repro = ROOT / "results" / "experiments" / "testbed-16-reproduced"
    rows = {r["arm"]: r for r in tb.reproduction_rows(repro, GRID16_DIR)}
    wall = json.loads((repro / "timing.json").read_text())["wall_s"] / 60
    readme = _report_text()
    assert (f"took {wall:.1f} minutes of wall time, the two runs side by side ({rows['baseline']['wall_min']:.1f} and "
            f"{rows['bianet']['wall_min']:.1f} minutes each), and came out bit-identical") in readme
    assert all(r["identical"] for r in rows.values())


def test_endpoint_table_known_answers():
    """Every arm's dose-response, ceiling and probes, on two constructed seeds with planted values:
    means over seeds and directions, a missing embedding shown as '-', not as 0."""
    import copy

    rec = json.loads((GRID16_DIR / "bianet__s0.json").read_text())
    recs = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        r = copy.deepcopy(rec)
        r["seed"] = seed
        for i, d in enumerate(tb.DIRECTIONS):
            acc = r["endpoints"]["directions"][d]["accuracy"]
            for j, dose in enumerate(tb.DOSES):
                acc[f"dose{dose:g}"] = 0.9 - 0.1 * j + shift + 0.02 * i  # a constructed dose-response
            acc["filled"] = acc["dose1"] + 0.05
        r["endpoints"]["probes"]["face/h_tilde"]["kind"] = {"accuracy": 0.6 + shift, "chance": 0.5, "classes": 3}
        recs.append(r)
    base = copy.deepcopy(recs)
    for r in base:
        r["endpoints"]["probes"] = {k: v for k, v in r["endpoints"]["probes"].items() if "h_tilde" not in k}
    rows = {r["arm"]: r for r in tb.endpoint_table({"bianet": recs, "baseline": base})}
    b = rows["bianet"]
    assert b["seeds"] == 2
    assert [round(b[f"dose{d:g}"], 6) for d in tb.DOSES] == [0.96, 0.86, 0.76, 0.66]  # 0.9 - 0.1j + 0.05 + 0.01
    assert b["ceiling"] == pytest.approx(0.05)
    assert b["face/h_tilde/kind"] == pytest.approx(0.65) and b["face/h_tilde/kind/chance"] == pytest.approx(0.5)
    assert rows["baseline"]["face/h_tilde/kind"] is None and rows["baseline"]["face/h_hat/kind"] is not None
    md = tb.endpoint_markdown({"bianet": recs, "baseline": base})
    line = next(x for x in md if x.startswith("| baseline |"))
    assert line.count(" - ") == 3  # the three h_tilde probes of an arm without NIA
    assert "| 0.960 | 0.860 | 0.760 | 0.660 | +0.050 |" in next(x for x in md if x.startswith("| bianet |"))


def _fig7_world(values: dict[str, float], seeds=(0, 1)):
    """Constructed Fig. 7 records: every arm a copy of one committed run (so identical trial bits)
    with its 1:2 accuracy (dose 1) planted per direction."""
    import copy

    rec = json.loads((GRID16_DIR / "bianet__s0.json").read_text())
    out = {}
    for arm, acc in values.items():
        out[arm] = []
        for seed in seeds:
            r = copy.deepcopy(rec)
            r["seed"], r["experiment"]["name"] = seed, arm
            for d in tb.DIRECTIONS:
                r["endpoints"]["directions"][d]["accuracy"]["dose1"] = acc
            out[arm].append(r)
    return out


def test_fig7_lines_known_answers():
    """The paper's two Fig. 7 sentences, planted: tau_1 peaking at its default 5, accuracy rising
    with tau_2; identical trial bits give 0 significant comparisons, all-correct bits give one."""
    planted = {"tau1_0.5": 0.60, "tau1_1": 0.61, "bianet": 0.63, "tau1_10": 0.62, "tau1_20": 0.605,
               "tau2_0.5": 0.60, "tau2_1": 0.61, "tau2_5": 0.62, "tau2_20": 0.64}
    records = _fig7_world(planted)
    extra = _fig7_world({"bianet": 0.99}, seeds=(2,))["bianet"]  # a third seed only the default has
    records["bianet"] = records["bianet"] + extra
    clusters = tb.clusters_for(records["bianet"][0])
    lines = tb.fig7_lines(records, clusters, n_boot=200)
    assert len(lines) == 3 and not any("INTERIM" in line for line in lines)
    assert "0 of 32 comparisons are significant after Holm" in lines[0]
    assert "1:2 accuracy differs by +0.000 to +0.000 (V-F)" in lines[0]  # the same bits in every arm
    t1 = next(line for line in lines if line.startswith("tau_1"))
    assert "the 2 seeds that every value has" in t1  # the default's third seed (0.99) is left out
    assert "V-F peaks at tau_1 = 5 (0.630, range 0.600-0.630), the default 5 ranks 1 of 5, not rising" in t1
    t2 = next(line for line in lines if line.startswith("tau_2"))
    assert "F-V peaks at tau_2 = 20 (0.640, range 0.600-0.640), the default 10 ranks 2 of 5, rising with the value" in t2
    assert "no difference to the default is significant" in t2
    # a planted effect: tau_2 = 20 answers every V-F trial correctly
    n = records["tau2_20"][0]["endpoints"]["directions"]["vf"]["n_trials"]
    for r in records["tau2_20"]:
        r["endpoints"]["directions"]["vf"]["bits"]["dose1"] = tb.pack_bits(np.ones(n, bool))
    lines = tb.fig7_lines(records, clusters, n_boot=1000, expected=tb.expected_runs("testbed-16"))  # p >= 1/1000
    assert all(line.startswith("INTERIM (") for line in lines)  # 2 seeds of the 3 pre-registered
    assert "of its comparisons are significant." in lines[2] and "no difference" in lines[1]
    assert "0 of 32" not in lines[0] and "comparisons are significant after Holm" in lines[0]


def _family_paragraph(read, start: str, end: str):
    """The converged store, its clusters and the report's paragraph from ``start`` to ``end``,
    after checking that the family is complete (no INTERIM) and that every line ``read`` prints
    from the runs is in that paragraph verbatim."""
    full = tb.load_records(GRID16_DIR)
    clusters = tb.clusters_for(full["baseline"][0])
    lines = read(full, clusters, expected=tb.expected_runs("testbed-16"))
    readme = _report_text()
    para = readme[readme.index(start):]
    para = para[:para.index(end)]
    assert not any("INTERIM" in line for line in lines)  # every pre-registered run is in
    for line in lines:
        assert line in para
    return full, clusters, para


def test_the_readme_reads_fig7_from_its_numbers():
    """The report's Fig. 7 sentences: the family is complete, each line fig7_lines prints is in the
    report verbatim, and the hand-written summary around them holds on the same numbers."""
    full, clusters, para = _family_paragraph(tb.fig7_lines, "The fourth family, Fig. 7",
                                             "The fifth family, the bias study")
    arms = {a for pair in tb.FIG7_COMPARISONS for a in pair}
    runs = [r for a in arms - {"bianet"} for r in full[a]]
    assert f"{len(runs)} runs, {sum(r['experiment']['wall_s'] for r in runs) / 60:.0f} worker-minutes" in para
    assert all(r["above_chance"] for r in tb.learned({a: full[a] for a in arms}, clusters, n_boot=300))
    comps = tb.compare_arms(full, clusters, comparisons=tb.FIG7_COMPARISONS)
    assert not any(c["significant"] for c in comps) and "is null as well" in para
    assert all(c["diff"] > 0 for c in comps if c["endpoint"] == "accuracy")  # "every other temperature scores above"
    assert f"smallest Holm p {min(c['p_holm'] for c in comps):.3f}" in para
    b = full["bianet"]
    mean = {n: [np.mean([r["endpoints"]["directions"][d]["accuracy"]["dose1"] for r in b[:n]]) for d in tb.DIRECTIONS]
            for n in (3, 5)}
    assert (f"{mean[3][0]:.3f} / {mean[3][1]:.3f} over seeds 0-2 against {mean[5][0]:.3f} / {mean[5][1]:.3f} over all five"
            in para) and mean[3][0] > mean[5][0] and mean[3][1] > mean[5][1]
    spreads, ranks, peaks = [], [], {}
    for label, line in tb.sweep_lines()["fig7"].items():
        seeds = tb.shared_seeds(full, line.values())
        assert seeds == {0, 1, 2}
        for d in tb.DIRECTIONS:
            m = tb.sweep_means(full, line, d, seeds)
            spreads.append(max(m.values()) - min(m.values()))
            default = next(x for x, a in line.items() if a == "bianet")
            ranks.append(sorted(m.values(), reverse=True).index(m[default]) + 1)
            peaks[label.split()[0], d] = max(m, key=m.get)
    assert set(ranks) == {3, 5} and "the default still ranks third or last" in para
    assert f"lie within {max(spreads):.3f} of each other" in para
    assert peaks["tau1", "vf"] != 5 and peaks["tau1", "fv"] != 5 and "its optimum at tau_1 = 5 is not seen" in para
    assert (f"it peaks at tau_2 = {peaks['tau2', 'vf']:g} for V-F and at {peaks['tau2', 'fv']:g} for F-V" in para)


def test_the_readme_reads_the_bias_study_from_its_numbers():
    """The report's bias-study sentences: the family is complete, each line bias_lines prints is in
    the report verbatim, and the summary after them (cost, runs at chance, every arm's loss, the
    widest interval, the cost of the grid's third part) holds on the same numbers."""
    full, clusters, para = _family_paragraph(tb.bias_lines, "The fifth family, the bias study",
                                             "What this does not show")
    minutes = lambda runs: sum(r["experiment"]["wall_s"] for r in runs) / 60  # noqa: E731
    shifted = {a for line in tb.sweep_lines()["bias"].values() for x, a in line.items() if x > 0}
    bias_runs = [r for a in shifted for r in full[a]]
    fig7 = {a for pair in tb.FIG7_COMPARISONS for a in pair} - {"bianet"}
    rest = bias_runs + [r for a in fig7 for r in full[a]]
    assert f"{len(bias_runs)} runs, {minutes(bias_runs):.0f} worker-minutes" in para and len(bias_runs) == 21
    assert f"third part took {len(rest)} runs, {minutes(rest):.0f} worker-minutes" in para and len(rest) == 45
    comps = tb.compare_arms(full, clusters, comparisons=tb.BIAS_COMPARISONS)
    get = {(c["comparison"], c["endpoint"], c["direction"]): c for c in comps}
    cost = [get["baseline_rho0.9 - baseline", "accuracy", d] for d in tb.DIRECTIONS]
    drop = [get["baseline_rho0.9 - baseline", "clean_twin_drop", d] for d in tb.DIRECTIONS]
    assert all(c["significant"] and c["diff"] < 0 for c in cost + drop)
    assert f"costs the baseline {-cost[0]['diff']:.3f} / {-cost[1]['diff']:.3f} of 1:2 accuracy at rho 0.9" in para
    assert f"shrinks the baseline's clean-twin drop (by {-drop[0]['diff']:.3f} / {-drop[1]['diff']:.3f})" in para
    runs = tb.learned({a: full[a] for a in shifted if a.endswith("rho0.9")}, clusters, n_boot=2000)
    n = len({(r["arm"], r["seed"]) for r in runs})
    below = {(r["arm"], r["seed"]) for r in runs if not r["above_chance"]}
    assert f"{len(below)} of the {n} runs at that rho are not above chance" in para
    assert not any(c["significant"] for c in comps if not c["comparison"].startswith("baseline_rho0.9 - baseline"))
    assert "no arm differs significantly after Holm" in para
    losses = {d: [] for d in tb.DIRECTIONS}
    for line in tb.sweep_lines()["bias"].values():
        lo, hi = min(line), max(line)
        ends = {lo: line[lo], hi: line[hi]}
        seeds = tb.shared_seeds(full, ends.values())
        assert seeds == {0, 1, 2}
        for d in tb.DIRECTIONS:
            m = tb.sweep_means(full, ends, d, seeds)
            losses[d].append(m[lo] - m[hi])
    assert len(losses["vf"]) == 5 and all(x > 0 for d in losses for x in losses[d])
    assert (f"every arm loses between {min(losses['vf']):.3f} and {max(losses['vf']):.3f} (V-F) and between "
            f"{min(losses['fv']):.3f} and {max(losses['fv']):.3f} (F-V)") in para
    top = max(c["ci"][1] for c in comps if c["comparison"].startswith("bianet_rho") and "- baseline_rho" in c["comparison"]
              and c["endpoint"] == "accuracy")
    assert f"BIANet's 95% intervals reach at most {top:+.3f}" in para


def test_bias_lines_known_answers():
    """The bias study's sentences on planted runs: identical trial bits give no cost and no
    significant comparison; a planted loss at rho 0.9 (every V-F trial wrong) is named as a cost
    to the baseline; each arm's descriptive loss is its planted accuracy drop."""
    planted = {"baseline": 0.70, "baseline_rho0.5": 0.68, "baseline_rho0.9": 0.60, "bianet": 0.70,
               "bianet_rho0.5": 0.69, "bianet_rho0.9": 0.65, "pia": 0.70, "pia_rho0.9": 0.66, "nia": 0.70,
               "nia_rho0.9": 0.67, "curriculum_constant": 0.70, "curriculum_constant_rho0.9": 0.64}
    records = _fig7_world(planted)
    clusters = tb.clusters_for(records["baseline"][0])
    assert tb.bias_lines({"baseline": records["baseline"]}, clusters, n_boot=50) == [
        "Bias study: no comparison has both arms finished yet."]
    lines = tb.bias_lines(records, clusters, n_boot=200)
    assert lines[0] == "The bias study (the fifth family): 0 of 24 comparisons are significant after Holm."
    assert "no significant cost" in lines[1] and "+0.000 [+0.000, +0.000] (V-F, Holm p 1.000)" in lines[1]
    assert lines[2] == "At rho 0.9, every one of the 10 runs is above chance in both directions."
    assert ("baseline +0.100 / +0.100 (2 seeds), bianet +0.050 / +0.050 (2 seeds), pia +0.040 / +0.040 (2 seeds), "
            "nia +0.030 / +0.030 (2 seeds), curriculum_constant +0.060 / +0.060 (2 seeds)") in lines[3]
    assert lines[4].startswith("BIANet against the baseline") and "at rho 0.5" in lines[4] and "at rho 0.9" in lines[4]
    assert lines[4].endswith("no difference is significant after Holm.")
    n = records["baseline_rho0.9"][0]["endpoints"]["directions"]["vf"]["n_trials"]
    for r in records["baseline_rho0.9"]:
        r["endpoints"]["directions"]["vf"]["bits"]["dose1"] = tb.pack_bits(np.zeros(n, bool))
    lines = tb.bias_lines(records, clusters, n_boot=1000, expected=tb.expected_runs("testbed-16"))
    assert all(line.startswith("INTERIM (") for line in lines)  # 2 of the 3 pre-registered seeds
    assert "the shortcut costs the baseline, so there is a bias to remove." in lines[1]
    assert lines[2].endswith("2 of the 10 runs are not above chance in at least one direction (baseline_rho0.9 "
                             "seed 0, baseline_rho0.9 seed 1): on the unbiased test they match no better than a coin, so "
                             "differences between arms at this rho are compressed towards chance.")
    assert "bianet_rho0.9 - baseline_rho0.9 V-F" in lines[4] and "significant after Holm." in lines[4]
