"""One prepared GPU check (``scripts/gpu_check.sh``; ``python3 -m bianet_lib.engine.gpu_check``).

Runs with the interpreter already on a machine (repository on PYTHONPATH, no venv, no network)
and writes one JSON report (``results/gpu/report-<device>.json`` and, when set, ``$OUT``):

1. environment: Python, torch, the GPU, which optional packages are missing (librosa is only
   needed to decode non-PCM audio; the check's tree is PCM WAV);
2. the tests that matter for this path (``--tests``; skipped in the tiny form), and whether
   ``pip install .`` resolves offline against the interpreter's own packages (a dry run);
3. a generated VoxCeleb-shaped tree, its feature stores (first-pass build time), and the
   DataLoader's throughput;
4. the training step of BIANet and of the plain baseline (``bench``: bf16 autocast on CUDA,
   samples/s, peak GPU memory, the ratio);
5. a short training run on the tree (steps/s, the matching loss per epoch and whether it ends
   below ln 2), evaluated on the test split;
6. the same recipe under ``torchrun --nproc_per_node 1`` (nccl on CUDA, gloo on CPU).

``--tiny --device cpu`` is the seconds-long form the test suite runs; the default form is
sized for at most about 8 minutes on one H100.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (bianet_lib/engine/gpu_check.py)


def _tiny_model() -> list[str]:
    return ["face_widths=[8,8,16,16]", "audio_widths=[8,8,16,16]", "attn_channels=8",
            "hidden_dim=32", "embed_dim=16", "n_mels=16"]


def plan(device: str, tiny: bool) -> dict:
    """Sizes of each stage. Full: the paper preset (224 px, 10 s clips) on 400 identities."""
    if tiny:
        return {"preset": "cpu-small", "tree": dict(n_train=12, n_val=4, n_test=4, clips_per_id=3,
                                                    faces_per_id=2, seconds=0.5, face_size=32),
                "clip_seconds": 0.25, "batch_size": 4, "epochs": 2, "bench_steps": 1,
                "model": _tiny_model() + ["face_size=32", "clip_seconds=0.25"],
                "loader_batches": 4, "torchrun_epochs": 1, "reserve_s": 0, "train_sets": []}
    return {"preset": "paper", "tree": dict(n_train=400, n_val=40, n_test=60, clips_per_id=4,
                                            faces_per_id=4, seconds=6.0, face_size=224),
            "clip_seconds": 10.0, "batch_size": 50, "epochs": 8, "bench_steps": 5,
            "model": [], "loader_batches": 40, "torchrun_epochs": 1,
            "reserve_s": 120, "train_sets": ["channels_last=true", "compile=true"],
            # the training stages run paper-fixed: the literal `paper` preset (Adam 5e-2) does not
            # learn on the GPU either (results/gpu/report-cuda.json), so it could not tell a broken
            # GPU path from a diverging preset
            "train_preset": "paper-fixed"}


def environment(device: str) -> dict:
    import numpy
    import torch

    missing = [m for m in ("librosa", "soundfile", "pytest", "yaml", "tqdm", "scipy", "PIL", "pandas")
               if importlib.util.find_spec(m) is None]
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "cpu_count": os.cpu_count(), "device": device, "missing_packages": missing,
           "cuda_available": torch.cuda.is_available()}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["bf16"] = torch.cuda.is_bf16_supported()
    for name in missing:
        note = {"librosa": "only for non-PCM audio (.m4a, .flac, float WAV) and paper_spectrogram",
                "soundfile": "only librosa uses it", "pytest": "the --tests stage is skipped"}.get(name)
        print(f"missing package: {name}" + (f" ({note})" if note else " (REQUIRED)"), flush=True)
    return env


def _sets(p: dict, tree: Path, cache: Path, device: str) -> list[str]:
    return ["data=voxceleb", f"audio_root={tree / 'wav'}", f"face_root={tree / 'faces'}",
            f"cache_dir={cache}", "face_weights=null", f"device={device}",
            f"batch_size={p['batch_size']}", f"clip_seconds={p['clip_seconds']}", *p["model"]]


class _Stages:
    """Runs the check's stages in order; each is timed, a failure is recorded (not raised) and
    the report is written after every stage, so a check killed at its time limit keeps what it
    measured. Stages left once ``budget_s`` is spent are recorded as skipped, never silently."""

    def __init__(self, report: dict, write, budget_s: float | None):
        self.report, self.write, self.budget_s = report, write, budget_s
        self.t0 = time.perf_counter()

    def left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - (time.perf_counter() - self.t0)

    def __call__(self, name: str, fn, min_left_s: float = 0.0) -> bool:
        import traceback

        if self.left() < min_left_s:
            self.report.setdefault("skipped", []).append(name)
            print(f"{name}: SKIPPED ({self.left():.0f} s of the budget left, needs {min_left_s:.0f})",
                  flush=True)
            self.write(self.report)
            return False
        t0 = time.perf_counter()
        try:
            fn()
            ok = True
        except Exception as exc:  # noqa: BLE001 - recorded in the report, the next stage still runs
            self.report.setdefault("errors", {})[name] = traceback.format_exc().strip().splitlines()[-6:]
            print(f"{name}: FAILED: {exc!r}", flush=True)
            ok = False
        self.report.setdefault("stage_seconds", {})[name] = time.perf_counter() - t0
        self.report["total_s"] = time.perf_counter() - self.t0
        self.write(self.report)
        return ok


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _run_curves(run_dir: Path) -> tuple[list[dict], list[dict], dict]:
    """A training run's metrics.jsonl and timing.jsonl records (what it finished so far) and
    the curves the check reports from them: the mean matching loss (V-F and F-V) and the
    validation 1:2 accuracy per epoch, and the first step's seconds (compiling, when compiled)."""
    metrics, timing = _read_jsonl(run_dir / "metrics.jsonl"), _read_jsonl(run_dir / "timing.jsonl")
    curves = {"match_loss_per_epoch": [(m["match_vf"] + m["match_fv"]) / 2 for m in metrics],
              "val_acc_per_epoch": [m.get("val_acc") for m in metrics],
              "first_step_seconds": timing[0].get("first_step_seconds") if timing else None}
    return metrics, timing, curves


def _tree_and_stores(p: dict, tree: Path, cache: Path) -> tuple[dict, dict, object]:
    """The check's generated tree (written once) and its three feature stores: (tree record,
    stores record, the train split's store)."""
    from bianet_lib.data.store import StoreSettings, open_or_build
    from bianet_lib.data.vox_tree import write_vox_tree
    from bianet_lib.data.voxceleb import build_index

    t0 = time.perf_counter()
    if not (tree / "wav").is_dir():
        write_vox_tree(tree, **p["tree"])
    tree_record = {**p["tree"], "generation_s": time.perf_counter() - t0}
    index, _ = build_index(tree / "wav", tree / "faces", "wen")
    settings = StoreSettings(clip_seconds=p["clip_seconds"], face_size=p["tree"]["face_size"])
    stores, train_split = {}, None
    for split in ("train", "val", "test"):
        stored, built = open_or_build(index[index["split"] == split], cache, split, settings)
        stores[split] = {"built": built.built, "seconds": built.seconds, "voices": len(stored.voices),
                         "faces": len(stored.faces), "skipped": len(built.skipped)}
        if split == "train":
            train_split = stored
    return tree_record, stores, train_split


def _train_argv(p: dict, device: str, tree: Path, cache: Path, run_dir: Path, epochs: int, sets: list[str],
                torchrun: bool = False) -> list[str]:
    """``bianet train`` of the check's training preset on its tree (under ``torchrun`` with one
    process when asked), with ``sets`` on top."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                 str(29500 + os.getpid() % 1000)] if torchrun else [sys.executable])
    return [*launcher, "-m", "bianet_lib", "train", "--preset", p.get("train_preset", p["preset"]),
            "--run-dir", str(run_dir), "--no-progress", "--set", *_sets(p, tree, cache, device),
            f"epochs={epochs}", *sets]


def run_check(device: str, tiny: bool, work: Path, tests: bool, write=lambda report: None,
              budget_s: float | None = None) -> dict:
    import torch

    from bianet_lib.data.batches import IdentityBatches
    from bianet_lib.engine.bench import bench_config, time_train_steps

    p = plan(device, tiny)
    report: dict = {"plan": {k: v for k, v in p.items() if k != "model"}, "env": environment(device),
                    "budget_s": budget_s}
    stage = _Stages(report, write, budget_s)
    tree, cache, state = work / "tree", work / "cache", {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run_tests():
        files = ["tests/test_loader.py", "tests/test_documented_commands.py", "tests/test_portability.py"]
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files],
                             cwd=ROOT, capture_output=True, text=True, env=env)
        report["tests"] = {"files": files, "returncode": res.returncode,
                           "tail": res.stdout.strip().splitlines()[-3:] if res.stdout else []}
        print(f"tests: rc={res.returncode} {report['tests']['tail'][-1:]}", flush=True)

    def install():
        # Would `pip install .` work here, offline, with the packages this interpreter already has?
        # (--dry-run: nothing is installed; the shared H200 image first stopped at librosa, now an extra.)
        res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                              "--no-build-isolation", str(ROOT)], capture_output=True, text=True, env=env)
        report["install"] = {"returncode": res.returncode,
                             "tail": (res.stdout + res.stderr).strip().splitlines()[-2:]}
        print(f"install (dry run, offline): rc={res.returncode} {report['install']['tail'][-1:]}", flush=True)

    def build_tree_and_stores():
        report["tree"], report["stores"], state["train_split"] = _tree_and_stores(p, tree, cache)

    def loader():
        batches = IdentityBatches(state["train_split"], p["batch_size"], seed=0, pin_memory=device == "cuda")
        it = iter(batches.epoch())
        next(it)
        t0, n = time.perf_counter(), 0
        while n < p["loader_batches"]:
            try:
                next(it)
                n += 1
            except StopIteration:
                it = iter(batches.epoch())
        dt = time.perf_counter() - t0
        workers = batches._loader.num_workers
        report["loader"] = {"workers": workers, "samples_per_s": n * p["batch_size"] / dt,
                            "samples_per_s_per_worker": n * p["batch_size"] / dt / max(1, workers)}
        print(f"loader: {report['loader']}", flush=True)

    def bench():
        import dataclasses

        cfg = bench_config(p["preset"], device, [f"batch_size={p['batch_size']}", *p["model"]])
        base = time_train_steps(dataclasses.replace(cfg, use_pia=False, use_nia=False), p["bench_steps"])
        full = time_train_steps(cfg, p["bench_steps"])
        report["bench"] = {"step_time_s": {"bianet": full["median_s"], "baseline": base["median_s"]},
                           "ratio_bianet_to_baseline": full["median_s"] / base["median_s"],
                           "samples_per_s": {"bianet": p["batch_size"] / full["median_s"],
                                             "baseline": p["batch_size"] / base["median_s"]},
                           "peak_memory_mb": {k: v.get("peak_memory_mb", v.get("process_peak_rss_mb"))
                                              for k, v in (("bianet", full), ("baseline", base))},
                           "amp_bf16": cfg.amp and device == "cuda", "steps": p["bench_steps"],
                           "params": {"bianet": full["params"], "baseline": base["params"]}}
        print(f"bench: ratio {report['bench']['ratio_bianet_to_baseline']:.3f} "
              f"{report['bench']['samples_per_s']}", flush=True)
        write(report)  # kept if compiling below outlasts the check's time limit
        # the step table of `bianet bench --table` (issue 28): channels_last and compile against
        # the former step and channels_last alone, FLOPs, utilisation of the card's stated peak,
        # ops and syncs per step
        from bianet_lib.engine.bench import format_step_table, step_table

        fast = dataclasses.replace(cfg, channels_last=True, compile=not tiny)
        report["step_table"] = step_table(fast, 1 if tiny else 10, 2, {"channels_last": False, "compile": False},
                                          more={"channels_last_eager": {"compile": False}})
        print(format_step_table(report["step_table"]), flush=True)
        write(report)
        # the same fast step timed alone, one model in the process (train_step, its loss read
        # included): the 2026-12-04 table's compiled step was no faster than eager NHWC while
        # compiled training ran twice as fast
        report["steps_alone"] = {name: time_train_steps(c, 2 * p["bench_steps"], warmup=2)["median_s"]
                                 for name, c in (("channels_last", dataclasses.replace(fast, compile=False)),
                                                 ("channels_last+compile", fast))}
        print(f"steps alone: {report['steps_alone']}", flush=True)

    def train_cmd(run_dir: Path, epochs: int, torchrun: bool) -> list[str]:
        return _train_argv(p, device, tree, cache, run_dir, epochs, [] if torchrun else p["train_sets"], torchrun)

    def train():
        # A subprocess with a deadline: the epochs finished before it are read back from the run's
        # metrics.jsonl, so a slow card still reports the losses it reached (timed_out says so).
        run_dir = work / "run"
        timeout = None if budget_s is None else max(30.0, stage.left() - p["reserve_s"])
        t0, timed_out, rc = time.perf_counter(), False, None
        try:
            rc = subprocess.run(train_cmd(run_dir, p["epochs"], False), cwd=ROOT, env=env,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            timed_out = True
        metrics, timing, curves = _run_curves(run_dir)
        match = curves["match_loss_per_epoch"]
        steps = metrics[-1]["step"] if metrics else 0
        report["train"] = {"returncode": rc, "timed_out": timed_out, "seconds": time.perf_counter() - t0,
                           "epochs_done": len(metrics), "steps": steps,
                           "steps_per_s": steps / sum(t["seconds"] for t in timing) if timing else None,
                           "settings": p["train_sets"], "preset": p.get("train_preset", p["preset"]),
                           "first_step_seconds": curves["first_step_seconds"],
                           "steps_per_s_after_epoch_1": ((steps - metrics[0]["step"]) / sum(t["seconds"] for t in timing[1:])
                                                         if len(timing) > 1 and len(metrics) > 1 else None),
                           "match_loss_per_epoch": match, "ln2": math.log(2),
                           "match_below_ln2_at_end": bool(match and match[-1] < math.log(2)),
                           "match_fell": bool(len(match) > 1 and match[-1] < match[0]),
                           "val_acc_per_epoch": curves["val_acc_per_epoch"]}
        res_file = run_dir / "results.json"
        if res_file.is_file():
            report["train"]["results"] = json.loads(res_file.read_text())
        print(f"train: rc={rc} timed_out={timed_out} steps={steps} match={[round(x, 3) for x in match]}",
              flush=True)

    def torchrun():
        ddp_dir = work / "run-ddp"
        timeout = None if budget_s is None else max(30.0, stage.left())
        t0 = time.perf_counter()
        try:
            res = subprocess.run(train_cmd(ddp_dir, p["torchrun_epochs"], True), cwd=ROOT,
                                 capture_output=True, text=True, env=env, timeout=timeout)
            rc, tail = res.returncode, res.stderr.strip().splitlines()[-3:]
        except subprocess.TimeoutExpired:
            rc, tail = None, ["timed out"]
        report["torchrun"] = {"returncode": rc, "seconds": time.perf_counter() - t0,
                              "backend": "nccl" if device == "cuda" else "gloo",
                              "results": (json.loads((ddp_dir / "results.json").read_text())
                                          if (ddp_dir / "results.json").is_file() else None),
                              "stderr_tail": tail}
        print(f"torchrun: rc={rc}", flush=True)

    if tests and not tiny:
        stage("tests", run_tests)
    if not tiny:
        stage("install", install)
    stage("tree_and_stores", build_tree_and_stores)
    if "train_split" in state:
        stage("loader", loader)
    stage("bench", bench, min_left_s=60)
    stage("train", train, min_left_s=90)
    stage("torchrun", torchrun, min_left_s=45)
    report["ok"] = bool(not report.get("errors") and not report.get("skipped")
                        and report.get("train", {}).get("returncode") == 0
                        and report.get("torchrun", {}).get("returncode") == 0
                        and report.get("tests", {}).get("returncode", 0) == 0
                        and report.get("install", {}).get("returncode", 0) == 0)
    report["total_s"] = time.perf_counter() - stage.t0
    write(report)
    del torch
    return report


#: the training variants ``--train-variants`` compares (config fields set on top of the preset)
TRAIN_VARIANTS = {"eager": [], "channels_last": ["channels_last=true"], "compile": ["compile=true"],
                  "channels_last+compile": ["channels_last=true", "compile=true"]}


def run_train_variants(device: str, tiny: bool, work: Path, epochs: int, write=lambda report: None) -> dict:
    """The check's tree, then one short training run per :data:`TRAIN_VARIANTS` entry (same
    data, seed and epochs): the matching loss and validation accuracy per epoch of each, so a
    layout or compiler that changes what training does shows as diverging curves."""
    p = plan(device, tiny)
    tree, cache = work / "tree", work / "cache"
    report: dict = {"plan": {k: v for k, v in p.items() if k != "model"}, "env": environment(device),
                    "epochs": epochs, "preset": p.get("train_preset", p["preset"]), "variants": {}}
    report["tree"], report["stores"], _ = _tree_and_stores(p, tree, cache)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, sets in TRAIN_VARIANTS.items():
        run_dir = work / f"run-{name.replace('+', '-')}"
        t0 = time.perf_counter()
        res = subprocess.run(_train_argv(p, device, tree, cache, run_dir, epochs, sets),
                             cwd=ROOT, env=env, capture_output=True, text=True)
        metrics, timing, curves = _run_curves(run_dir)
        report["variants"][name] = {
            "settings": sets, "returncode": res.returncode, "seconds": time.perf_counter() - t0,
            "match_loss_per_epoch": curves["match_loss_per_epoch"],
            "loss_per_epoch": [m.get("loss") for m in metrics],
            "val_acc_per_epoch": curves["val_acc_per_epoch"],
            "epoch_seconds": [t["seconds"] for t in timing],
            "first_step_seconds": curves["first_step_seconds"],
            "stderr_tail": res.stderr.strip().splitlines()[-3:]}
        v = report["variants"][name]
        print(f"{name}: rc={res.returncode} match={[round(x, 3) for x in v['match_loss_per_epoch']]} "
              f"val={[round(x, 3) for x in v['val_acc_per_epoch'] if x is not None]} "
              f"epoch s={[round(x, 1) for x in v['epoch_seconds']]}", flush=True)
        write(report)
    report["ok"] = all(v["returncode"] == 0 for v in report["variants"].values())
    report["total_s"] = sum(v["seconds"] for v in report["variants"].values())
    write(report)
    return report


def report_markdown(report: dict) -> str:
    """The docs' account of one GPU report (``<!-- gpu-report: PATH -->``): every number is read
    from the report, so the text cannot drift from what the check measured."""
    env, plan_, tree = report["env"], report["plan"], report["tree"]
    b, t, ld, st = report["bench"], report["train"], report["loader"], report["stores"]
    n_ids = tree["n_train"] + tree["n_val"] + tree["n_test"]
    res = t.get("results") or {}
    ck = res.get("checkpoint", {})
    acc = {route: (m["matching"]["vf_1:2"]["accuracy"], m["matching"]["fv_1:2"]["accuracy"])
           for route, m in res.get("metrics", {}).items() if isinstance(m, dict) and "matching" in m}
    match, val = t["match_loss_per_epoch"], t["val_acc_per_epoch"]
    first_below = next((i + 1 for i, x in enumerate(match) if x < t["ln2"]), None)
    best = max(range(len(val)), key=lambda i: val[i]) if val else None
    tests = report.get("tests")
    rows = [
        ("card, software", f"{env.get('gpu', env['device'])}; Python {env['python']}, torch {env['torch']}, "
                           f"numpy {env['numpy']}; {env['cpu_count']} CPU cores; missing: "
                           f"{', '.join(env['missing_packages']) or 'none'}"),
        ("tests (loader, documented commands, portability)",
         f"{tests['tail'][-1] if tests and tests['tail'] else 'not run'}"),
        *([("`pip install .` offline with the machine's packages (dry run)",
            f"exit code {report['install']['returncode']}: {report['install']['tail'][-1]}")]
          if report.get("install") else []),
        (f"tree: {n_ids} identities ({tree['n_train']}/{tree['n_val']}/{tree['n_test']}), "
         f"{tree['clips_per_id']} clips of {tree['seconds']:g} s and {tree['faces_per_id']} faces of "
         f"{tree['face_size']}x{tree['face_size']} each", f"generated in {tree['generation_s']:.1f} s"),
        ("feature stores, first pass", ", ".join(
            f"{k} {v['seconds']:.2f} s ({v['voices']:,} clips, {v['faces']:,} faces)" for k, v in st.items())),
        (f"DataLoader, {ld['workers']} workers, pinned memory, batch {plan_['batch_size']} of "
         f"{plan_['clip_seconds']:g} s clips", f"{ld['samples_per_s']:,.0f} samples/s "
                                              f"({ld['samples_per_s_per_worker']:,.0f} per worker)"),
        (f"`{plan_['preset']}` training step, batch {plan_['batch_size']}, bf16 autocast "
         f"(median of {b['steps']})",
         f"BIANet {b['step_time_s']['bianet']:.3f} s ({b['samples_per_s']['bianet']:,.0f} samples/s), "
         f"baseline {b['step_time_s']['baseline']:.3f} s ({b['samples_per_s']['baseline']:,.0f} samples/s), "
         f"ratio {b['ratio_bianet_to_baseline']:.2f}"),
        *([(f"`{plan_['preset']}` step timed alone, one model in the process (median of {2 * b['steps']})",
             "; ".join(f"{k} {v:.3f} s ({plan_['batch_size'] / v:,.0f} samples/s)"
                       for k, v in report["steps_alone"].items()))] if report.get("steps_alone") else []),
        ("peak GPU memory / parameters", f"BIANet {b['peak_memory_mb']['bianet']:,.0f} MB / "
                                         f"{b['params']['bianet'] / 1e6:.1f} M, baseline "
                                         f"{b['peak_memory_mb']['baseline']:,.0f} MB / "
                                         f"{b['params']['baseline'] / 1e6:.1f} M"),
        (f"`{t.get('preset', plan_['preset'])}` training, {t['epochs_done']} epochs = {t['steps']} steps"
         + (f" ({', '.join(t['settings'])})" if t.get("settings") else ""),
         f"{t['steps_per_s']:.2f} steps/s"
         + (f" ({t['steps_per_s_after_epoch_1']:.2f} after epoch 1)" if t.get("steps_per_s_after_epoch_1") else "")
         + (f", first (compiling) step {t['first_step_seconds']:.0f} s" if t.get("first_step_seconds") else "")
         + "; matching loss per epoch "
         + ", ".join(f"{x:.3f}" for x in match) + f" (ln 2 = {t['ln2']:.3f})"),
        ("validation 1:2 per epoch", ", ".join(f"{x:.3f}" for x in val)),
        (f"test 1:2 V-F / F-V (checkpoint of epoch {ck.get('epoch')}, selected on validation)",
         "; ".join(f"{route} {a:.3f} / {f:.3f}" for route, (a, f) in acc.items())),
        ("`torchrun --nproc_per_node 1`, " + f"{report['torchrun']['backend']}, "
         f"{plan_['torchrun_epochs']} epoch and evaluation",
         f"exit code {report['torchrun']['returncode']}, {report['torchrun']['seconds']:.0f} s"),
    ]
    lines = [f"GPU check on one {env.get('gpu', env['device'])}: "
             f"{'OK' if report['ok'] else 'FAILED'} in {report['total_s']:.0f} s.", "",
             "| what | measured |", "|---|---|", *[f"| {a} | {b_} |" for a, b_ in rows], ""]
    feed = ld["samples_per_s"] / b["samples_per_s"]["bianet"]
    learns = bool(t["match_below_ln2_at_end"])
    cfg = res.get("config", {})
    rates = (f" (Adam {cfg['lr_encoders']:g} / {cfg['lr_heads']:g})" if "lr_encoders" in cfg else "")
    where = (f"from epoch {first_below} on" if first_below and all(x < t["ln2"] for x in match[first_below - 1:])
             else ("at the end" if learns else "at no epoch"))
    preset = t.get("preset", plan_["preset"])
    verdict = (f"so the `{preset}` preset learns at batch {plan_['batch_size']} with its own rates{rates}. "
               if learns else
               f"so the `{preset}` preset does not learn at batch {plan_['batch_size']} with its own "
               f"rates{rates}: the loss ends at {match[-1]:.3f}, {match[-1] / t['ln2']:.1f} times ln 2. ")
    falling_after_best = best is not None and match[-1] < match[best]
    lines.append(
        f"The loader feeds {feed:.1f} times what a BIANet step consumes, so data does not limit the GPU "
        f"at this size. The matching loss is below ln 2 {where}, " + verdict
        + (f"Validation peaks at epoch {best + 1} ({val[best]:.3f}) and ends at {val[-1]:.3f} while the "
           f"matching loss keeps falling: the model overfits {tree['n_train']} generated identities within "
           f"{t['steps']} steps, so these accuracies say the GPU path trains and evaluates, not what "
           f"BIANet reaches on VoxCeleb."
           if learns and best is not None and best < len(val) - 1 and falling_after_best else
           (f"Validation ends at {val[-1]:.3f} (epoch {len(val)})"
            + (f", after {val[best]:.3f} at epoch {best + 1}" if best < len(val) - 1 else "") + "."
            if val else "")))
    return "\n".join(lines)


def variants_markdown(report: dict) -> str:
    """The ``--train-variants`` report as a table: per layout/compile variant, the seconds of the
    first epoch (compiling included) and of the later ones, samples/s after epoch 1, and the
    matching loss per epoch; a variant the report lacks (the check stopped first) is named."""
    env, p = report["env"], report["plan"]
    lines = [f"`{report.get('preset', p['preset'])}` preset, batch {p['batch_size']}, {report['epochs']} epochs of "
             f"{p['tree']['n_train']} identities on one {env.get('gpu', env['device'])} (torch {env['torch']}):", "",
             "| variant | epoch 1 s | later epochs s (mean) | samples/s after epoch 1 | x eager | "
             "matching loss per epoch | validation 1:2 per epoch |", "|---|---|---|---|---|---|---|"]
    runs = report["variants"]

    def later(v):
        return sum(v["epoch_seconds"][1:]) / len(v["epoch_seconds"][1:])

    steps = p["tree"]["n_train"] * p["tree"]["clips_per_id"] // p["batch_size"]  # batches per epoch
    for name, v in runs.items():
        ratio = later(runs["eager"]) / later(v) if "eager" in runs else None
        lines.append(f"| {name} | {v['epoch_seconds'][0]:.1f} | {later(v):.2f} | "
                     f"{steps * p['batch_size'] / later(v):,.0f} | "
                     + ("-" if ratio is None else f"{ratio:.2f}") + " | "
                     + ", ".join(f"{x:.2f}" for x in v["match_loss_per_epoch"]) + " | "
                     + ", ".join(f"{x:.2f}" for x in v["val_acc_per_epoch"]) + " |")
    missing = [n for n in TRAIN_VARIANTS if n not in runs]
    if missing:
        lines += ["", f"Not in this report (the check ended before): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="seconds-long form (the test suite's)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--report-dir", default=str(ROOT / "results" / "gpu"))
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest stage")
    ap.add_argument("--train-variants", type=int, default=None, metavar="EPOCHS",
                    help="instead of the check: train each layout/compile variant for EPOCHS epochs "
                         "on the check's tree and compare their curves (report-<device>-variants.json)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-clock seconds for the whole check (default 420 on the full form, none "
                         "on --tiny); training stops at the deadline and reports the epochs it finished")


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda but torch sees no GPU (use --device cpu --tiny)",
              file=sys.stderr)
        return 2
    name = (f"report-{args.device}{'-tiny' if args.tiny else ''}"
            f"{'-variants' if args.train_variants is not None else ''}.json")
    folders = [Path(f) for f in filter(None, (args.report_dir, os.environ.get("OUT")))]

    def write(report: dict) -> None:
        text = json.dumps(report, indent=1, default=str) + "\n"
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            tmp_file = folder / (name + ".tmp")
            tmp_file.write_text(text)
            os.replace(tmp_file, folder / name)  # a kill mid-write leaves the previous report

    budget = args.budget_s if args.budget_s is not None else (None if args.tiny else 420.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.train_variants is not None:
            report = run_train_variants(args.device, args.tiny, work, args.train_variants, write)
        else:
            report = run_check(args.device, args.tiny, work, tests=not args.no_tests, write=write,
                               budget_s=budget)
    for folder in folders:
        print(f"report written to {folder / name}")
    print(f"gpu_check: {'OK' if report['ok'] else 'FAILED'} in {report['total_s']:.0f} s"
          + (f" (skipped: {', '.join(report['skipped'])})" if report.get("skipped") else "")
          + (f" (failed: {', '.join(report['errors'])})" if report.get("errors") else ""))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
