"""The engine's benchmark: training step time of BIANet against the plain two-tower baseline,
peak memory, and data throughput against training throughput.

Step timing uses one fixed batch of synthetic random tensors of the preset's shapes (random
voices, random uint8 faces, distinct identities) and the Trainer's real ``train_step`` (both
towers, PIA/NIA, matching + metric + identity + adversarial losses, the discriminator's step).
The baseline is the same config with ``use_pia=False, use_nia=False``: same encoders, same
shared embedding and heads, same batch. Data throughput is measured on a generated SynthVox
world of the same shapes (IdentityBatches, as the Trainer draws them), and optionally as the
decode rate of a VoxCeleb-layout tree.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bianet_lib.config import BIANetConfig, load_config
from bianet_lib.data.types import SAMPLE_RATE, SplitData


def bench_config(preset: str = "cpu-small", device: str = "auto",
                 overrides: list[str] | None = None) -> BIANetConfig:
    """The preset's model and shapes; no pretrained weights (timing does not need them)."""
    cfg = load_config(preset, overrides=["face_weights=null", "data=synthvox", f"device={device}",
                                         *(overrides or [])])
    return cfg


def synthetic_split(cfg: BIANetConfig, n: int, seed: int = 0, name: str = "bench") -> SplitData:
    """n identities, one random voice and face each, of the config's shapes."""
    g = torch.Generator().manual_seed(seed)
    length = int(round(cfg.clip_seconds * SAMPLE_RATE))
    faces = torch.randint(0, 256, (n, 3, cfg.face_size, cfg.face_size), generator=g, dtype=torch.uint8)
    voices = 0.1 * torch.randn(n, length, generator=g)
    meta = pd.DataFrame({"identity": range(n), "video": ["v0"] * n})
    return SplitData(name, faces, voices, meta, meta.copy(), pd.DataFrame({"name": [f"b{i}" for i in range(n)]}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    """Wall seconds of one call of ``fn``, the device's queue drained before and after."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _bench_trainer(cfg: BIANetConfig, split: SplitData):
    """A Trainer on ``split`` (its run folder thrown away) and one batch of ``split`` on its
    device: (trainer, (voices, faces, identity))."""
    from bianet_lib.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, split, split, tmp, progress=False)
    device = trainer.device
    return trainer, (split.voices.to(device), split.faces.to(device), torch.arange(cfg.batch_size, device=device))


def time_train_steps(cfg: BIANetConfig, steps: int, warmup: int = 1) -> dict:
    """Median/mean seconds of ``Trainer.train_step`` (the step and the read of its losses) on one
    fixed synthetic batch."""
    trainer, batch = _bench_trainer(cfg, synthetic_split(cfg, cfg.batch_size))
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = functools.partial(trainer.train_step, *batch)
    times = [_timed(step, device) for _ in range(warmup + steps)][warmup:]
    out = {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
           "min_s": min(times), "steps": steps, "warmup": warmup,
           "params": sum(p.numel() for p in trainer.model.parameters())}
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["process_peak_rss_mb"] = _max_rss_mb()
    del trainer, step
    return out


#: Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by a substring of
#: ``torch.cuda.get_device_name()``; utilisation is left out for any other device.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(device_name: str | None) -> float | None:
    for key, peak in GPU_PEAK_BF16.items():
        if device_name and key in device_name:
            return peak
    return None


class _OpCount:
    """Counts, while active, every ATen op dispatched (forward and backward) and the host reads
    of a tensor's value (``aten::_local_scalar_dense``: .item(), float(), bool()), leaving out
    the reads of ``host`` tensors (the optimizers' step counters, which torch keeps on the host
    even for GPU parameters: reading them never waits for the device)."""

    def __init__(self, host=()):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.ops += 1
                if func is torch.ops.aten._local_scalar_dense.default and id(args[0]) not in counter.host:
                    counter.syncs += 1
                return func(*args, **(kwargs or {}))

        self.ops, self.syncs, self.host, self.mode = 0, 0, {id(t) for t in host}, Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def _encoders_step(cfg: BIANetConfig, split: SplitData, compiled: bool = False):
    """(step, device): the two bare encoders' forward and backward on ``split``'s batch (a
    mean-square loss on their maps), what any model of these shapes pays; ``compiled``: the
    forward through ``torch.compile`` (the step table times it eager)."""
    from bianet_lib.engine.trainer import resolve_device
    from bianet_lib.model.network import BIANet

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = BIANet(cfg).to(device).train()
    voices, faces = split.voices.to(device), split.faces.to(device)
    amp = cfg.amp and device.type == "cuda"

    def forward(voices, faces):
        f = faces.float() / 127.5 - 1.0
        if cfg.channels_last:
            f = f.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model.face_encoder(f).float().square().mean() + \
                model.voice_encoder(voices.float()).float().square().mean()

    fwd = torch.compile(forward) if compiled else forward

    def step():
        loss = fwd(voices, faces)
        model.zero_grad(set_to_none=True)
        loss.backward()

    return step, device


def _step_variants(cfg: BIANetConfig, arms=("bianet", "baseline", "encoders")) -> dict:
    """{arm: (step function, trainer or None, device)} on one fixed synthetic batch of
    cfg's shapes. "bianet"/"baseline": the Trainer's step without the read of its losses (the
    epoch reads them once per ``READ_EVERY`` steps); "encoders": the two bare encoders'
    forward and backward (a mean-square loss on their maps), what any model of these shapes pays."""
    split = synthetic_split(cfg, cfg.batch_size)
    out = {}
    for arm in arms:
        if arm == "encoders":
            step, device = _encoders_step(cfg, split)
            out[arm] = (step, None, device)
            continue
        arm_cfg = cfg if arm == "bianet" else dataclasses.replace(cfg, use_pia=False, use_nia=False)
        trainer, batch = _bench_trainer(arm_cfg, split)
        out[arm] = (lambda t=trainer, b=batch: t._step(*b), trainer, trainer.device)
    return out


def step_table(cfg: BIANetConfig, steps: int = 10, warmup: int = 2, compare: dict | None = None,
               more: dict[str, dict] | None = None) -> dict:
    """Per arm (BIANet, the baseline, the bare encoders) and per variant (``cfg`` itself,
    ``compare``'s field changes, e.g. the code's former layout, and each of ``more``'s named
    field changes, e.g. channels_last without compile): median step seconds,
    samples/s, FLOPs per step (``torch.utils.flop_counter``: forward and backward of
    matmuls/convolutions), achieved FLOP/s and, on a GPU of known peak, utilisation, ATen ops
    and host syncs per step. The variants' steps are interleaved (one of each per cycle) and
    every ratio is the median of per-cycle ratios, so a machine that slows down mid-run moves
    numerator and denominator together."""
    from torch.utils.flop_counter import FlopCounterMode

    from bianet_lib.engine.trainer import READ_EVERY

    variants = {"this": cfg}
    if compare:
        variants["compare"] = dataclasses.replace(cfg, **compare)
    for name, changes in (more or {}).items():
        if name in variants:
            raise ValueError(f"step_table: variant name {name!r} is taken")
        variants[name] = dataclasses.replace(cfg, **changes)
    built = {(v, arm): fn for v, c in variants.items() for arm, fn in _step_variants(c).items()}
    rows = {}
    for key, (fn, trainer, device) in built.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        host = ([s["step"] for opt in (trainer.optimizer, trainer.disc_optimizer) for s in opt.state.values()]
                if trainer is not None else ())
        with FlopCounterMode(display=False) as flops:
            fn()
        counted = _OpCount(host)
        if trainer is None or trainer.net is trainer.eager_net:  # ops of compiled code are not dispatched one by one
            with counted:
                fn()
        rows[key] = {"flops": flops.get_total_flops(), "ops": counted.ops if counted.ops else None,
                     "syncs": (counted.syncs + (1 / READ_EVERY if trainer is not None else 0))
                     if counted.ops else None,
                     "times": [], "compiled": trainer is not None and trainer.net is not trainer.eager_net}
    reference = ("this", "bianet")
    ratios: dict = {key: [] for key in built}
    for _ in range(steps):
        cycle = {key: _timed(fn, device) for key, (fn, _, device) in built.items()}
        for key in built:
            rows[key]["times"].append(cycle[key])
            ratios[key].append(cycle[key] / cycle[reference])
    device_name = torch.cuda.get_device_name() if any(d.type == "cuda" for *_, d in built.values()) else None
    peak = peak_flops(device_name)
    table = []
    for (variant, arm), row in rows.items():
        t = statistics.median(row["times"])
        enc = statistics.median(a / b for a, b in zip(row["times"], rows[(variant, "encoders")]["times"], strict=True))
        table.append({"variant": variant, "arm": arm, "step_s": t, "samples_per_s": cfg.batch_size / t,
                      "ratio_to_this_bianet": statistics.median(ratios[(variant, arm)]),
                      "ratio_to_bare_encoders": enc, "flops_per_step": row["flops"],
                      "achieved_flop_per_s": row["flops"] / t,
                      "utilisation": row["flops"] / t / peak if peak else None,
                      "ops_per_step": row["ops"], "host_syncs_per_step": row["syncs"],
                      "compiled": row["compiled"]})
    return {"rows": table, "steps": steps, "warmup": warmup, "device_name": device_name,
            "peak_flop_per_s": peak, "variants": {"this": "the config as given",
                                                  **({"compare": compare} if compare else {}),
                                                  **(more or {})},
            "statistic": f"medians over {steps} interleaved cycles after {warmup} warm-up steps each"}


def format_step_table(result: dict) -> str:
    """The step table as aligned text (what ``bianet bench --table`` prints)."""
    head = ("variant", "arm", "step s", "samples/s", "x this BIANet", "x encoders", "GFLOP/step",
            "GFLOP/s", "util", "ops/step", "syncs/step")
    lines = [head]
    for r in result["rows"]:
        lines.append((r["variant"], r["arm"], f"{r['step_s']:.3f}", f"{r['samples_per_s']:.0f}",
                      f"{r['ratio_to_this_bianet']:.2f}", f"{r['ratio_to_bare_encoders']:.2f}",
                      f"{r['flops_per_step'] / 1e9:.1f}", f"{r['achieved_flop_per_s'] / 1e9:.1f}",
                      "-" if r["utilisation"] is None else f"{100 * r['utilisation']:.1f}%",
                      "-" if r["ops_per_step"] is None else str(r["ops_per_step"]),
                      "-" if r["host_syncs_per_step"] is None else f"{r['host_syncs_per_step']:.2f}"))
    return aligned(lines)


def aligned(lines: list[tuple[str, ...]]) -> str:
    """Rows of strings (the first the header) as right-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines)


def time_bare_encoders(cfg: BIANetConfig, steps: int, warmup: int = 1) -> dict:
    """Median/min seconds of the bare encoders' forward and backward (compiled when
    ``cfg.compile``) on one fixed synthetic batch of cfg's shapes."""
    step, device = _encoders_step(cfg, synthetic_split(cfg, cfg.batch_size), compiled=cfg.compile)
    times = [_timed(step, device) for _ in range(warmup + steps)][warmup:]
    return {"median_s": statistics.median(times), "min_s": min(times), "steps": steps, "warmup": warmup}


def _max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def identity_batch_rate(cfg: BIANetConfig, seconds: float = 2.0, workers: int = 2) -> dict:
    """Batches/s that IdentityBatches draws from a generated SynthVox world of cfg's shapes."""
    from bianet_lib.data.batches import IdentityBatches
    from bianet_lib.data.synthvox import WorldConfig, generate_world, per_core_rates

    wc = WorldConfig(n_train=max(2 * cfg.batch_size, 10), n_val=2, n_test=2, faces_per_id_train=2,
                     voices_per_id_train=2, faces_per_id_eval=1, voices_per_id_eval=1,
                     face_size=cfg.face_size, clip_seconds=cfg.clip_seconds)
    t0 = time.perf_counter()
    train = generate_world(wc, 0, workers)["train"]
    gen_s = time.perf_counter() - t0
    batches = IdentityBatches(train, cfg.batch_size, 0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in batches.epoch():
            n += 1
    rate = n / (time.perf_counter() - t0)
    render = per_core_rates(wc, 0, n=8)
    return {"identity_batches_per_s": rate, "world_identities": wc.n_train,
            "world_generation_s": gen_s,
            "synthvox_render_batches_per_s_per_core": min(render["faces_per_s"], render["clips_per_s"]) / cfg.batch_size}


def decode_rate(audio_root: str | Path, face_root: str | Path, cfg: BIANetConfig, n: int = 40) -> dict:
    """Files/s of decoding (load_clip / load_face at cfg's shapes) the first n of each modality."""
    from bianet_lib.data.audio import load_clip
    from bianet_lib.data.faces import load_face
    from bianet_lib.data.voxceleb import AUDIO_EXT, FACE_EXT

    def files(root, exts):
        return [p for p in sorted(Path(root).rglob("*")) if p.suffix.lower() in exts][:n]

    out = {}
    for name, paths, fn in (("clips", files(audio_root, AUDIO_EXT), lambda p: load_clip(p, seconds=cfg.clip_seconds)),
                            ("faces", files(face_root, FACE_EXT), lambda p: load_face(p, cfg.face_size))):
        if not paths:
            raise ValueError(f"no {name} found under {audio_root if name == 'clips' else face_root}")
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        out[f"{name}_per_s"] = len(paths) / (time.perf_counter() - t0)
    out["decode_batches_per_s"] = min(out.values()) / cfg.batch_size
    out["note"] = "one process, no cache; the loader's cache_dir turns this into an array read"
    return out


def run_bench(preset: str = "cpu-small", device: str = "auto", steps: int | None = None,
              overrides: list[str] | None = None, warmup: int = 1,
              audio_root: str | None = None, face_root: str | None = None,
              data_seconds: float = 2.0) -> dict:
    cfg = bench_config(preset, device, overrides)
    steps = steps or (10 if preset == "cpu-small" else 3)
    threads_before = torch.get_num_threads()
    # baseline first: on CPU the process peak RSS after it is the baseline's own peak
    base_cfg = dataclasses.replace(cfg, use_pia=False, use_nia=False)
    baseline = time_train_steps(base_cfg, steps, warmup)
    bianet = time_train_steps(cfg, steps, warmup)
    dev = "cuda" if (device == "auto" and torch.cuda.is_available()) or device.startswith("cuda") else "cpu"
    data = identity_batch_rate(cfg, data_seconds)
    train_rate = 1.0 / bianet["median_s"]
    result = {
        "preset": preset, "device": dev,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if dev == "cuda" else None},
        "shapes": {"batch_size": cfg.batch_size, "k": cfg.k, "face_size": cfg.face_size,
                   "clip_seconds": cfg.clip_seconds, "face_encoder": cfg.face_encoder,
                   "audio_encoder": cfg.audio_encoder, "amp": cfg.amp and dev == "cuda"},
        "inputs": "synthetic random tensors of these shapes for step timing (one fixed batch); "
                  "a generated SynthVox world for data throughput",
        "step_time_s": {"bianet": bianet["median_s"], "baseline": baseline["median_s"],
                        "statistic": f"median over {steps} steps after {warmup} warm-up"},
        "ratio_bianet_to_baseline": bianet["median_s"] / baseline["median_s"],
        "target_ratio": 1.15,
        "params": {"bianet": bianet["params"], "baseline": baseline["params"]},
        "peak_memory_mb": ({"bianet": bianet["peak_memory_mb"], "baseline": baseline["peak_memory_mb"],
                            "measure": "torch.cuda.max_memory_allocated"} if dev == "cuda" else
                           {"after_baseline": baseline["process_peak_rss_mb"],
                            "after_bianet": bianet["process_peak_rss_mb"],
                            "measure": "process peak RSS (ru_maxrss), cumulative: baseline ran first"}),
        "throughput_batches_per_s": {"training": train_rate, **data,
                                     "data_keeps_up": data["identity_batches_per_s"] >= train_rate},
        "detail": {"bianet": bianet, "baseline": baseline},
    }
    if audio_root and face_root:
        vox = decode_rate(audio_root, face_root, cfg)
        result["throughput_batches_per_s"]["voxceleb_decode"] = vox
    torch.set_num_threads(threads_before)
    return result


# --- the streaming loader on generated VoxCeleb-shaped trees -----------------------------------
def _children_max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def loader_child(spec: dict) -> dict:
    """One tree size, in its own process (so peak RSS is this size's alone): generate the tree,
    build the train split's feature store (timed), then read ``batches`` batches through the
    DataLoader with each worker count (samples/s)."""
    from bianet_lib.data.batches import IdentityBatches
    from bianet_lib.data.store import StoreSettings, open_or_build
    from bianet_lib.data.vox_tree import write_vox_tree
    from bianet_lib.data.voxceleb import build_index

    torch.set_num_threads(1)
    root = Path(spec["root"])
    n = spec["identities"]
    split = "pins" if n > 924 else "wen"  # wen has 924 train identities, pins 901 + 100 + 250
    parts = (901, 100, 250) if n > 924 else (n, 4, 4)
    t0 = time.perf_counter()
    write_vox_tree(root, *parts, clips_per_id=spec["clips_per_id"], faces_per_id=spec["faces_per_id"],
                   seconds=spec["seconds"], face_size=spec["face_size"], split=split)
    gen_s = time.perf_counter() - t0
    index, _ = build_index(root / "wav", root / "faces", split)
    rows = index[index["split"] == "train"]
    settings = StoreSettings(clip_seconds=spec["clip_seconds"], face_size=spec["face_size"])
    stored, built = open_or_build(rows, root / "cache", "train", settings, spec["build_workers"])
    disk = sum(p.stat().st_size for p in stored.store.folder.iterdir())
    rss_after_build = _max_rss_mb()
    rates = {}
    for w in spec["workers"]:
        batches = IdentityBatches(stored, spec["batch_size"], seed=0, workers=w)
        it, got = iter(batches.epoch()), 0
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        while got < spec["batches"]:
            try:
                next(it)
            except StopIteration:
                it = iter(batches.epoch())
                continue
            got += 1
        rate = got * spec["batch_size"] / (time.perf_counter() - t0)
        rates[str(w)] = {"samples_per_s": rate, "samples_per_s_per_worker": rate / max(w, 1)}
        del it, batches
    return {"identities_in_tree": sum(parts), "train_identities": stored.n_identities,
            "train_voices": len(stored.voices), "train_faces": len(stored.faces),
            "tree_generation_s": gen_s, "store_build_s": built.seconds,
            "store_build_workers": spec["build_workers"] or os.cpu_count(), "store_mb": disk / 2**20,
            "loader": rates, "peak_rss_mb_main": _max_rss_mb(),
            "peak_rss_mb_main_after_build": rss_after_build,
            "peak_rss_mb_largest_child": _children_max_rss_mb()}


def run_loader_bench(sizes=(200, 1251), clips_per_id: int = 4, faces_per_id: int = 4,
                     seconds: float = 2.0, clip_seconds: float = 1.0, face_size: int = 64,
                     batch_size: int = 64, workers=(0, 1, 2), batches: int = 40,
                     build_workers: int = 0, root: str | Path | None = None) -> dict:
    """The streaming loader at two dataset sizes: peak RSS (should be flat), loader samples/s
    per worker count, first-pass store build time. Each size runs in a fresh process."""
    import json
    import subprocess

    out = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
           "shapes": {"clip_seconds": clip_seconds, "stored_seconds_max": 2 * clip_seconds,
                      "source_clip_seconds": f"{0.5 * seconds}-{1.5 * seconds}",
                      "face_size": face_size, "batch_size": batch_size,
                      "clips_per_id": clips_per_id, "faces_per_id": faces_per_id},
           "sizes": {}}
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for n in sizes:
            spec = {"root": str(Path(tmp) / f"tree{n}"), "identities": n, "clips_per_id": clips_per_id,
                    "faces_per_id": faces_per_id, "seconds": seconds, "clip_seconds": clip_seconds,
                    "face_size": face_size, "batch_size": batch_size, "workers": list(workers),
                    "batches": batches, "build_workers": build_workers}
            code = ("import json, sys; from bianet_lib.engine.bench import loader_child; "
                    "print(json.dumps(loader_child(json.loads(sys.argv[1]))))")
            res = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                                 text=True, cwd=Path(__file__).resolve().parents[2])
            if res.returncode:
                raise RuntimeError(f"loader bench at {n} identities failed: {res.stderr.strip()[-500:]}")
            out["sizes"][str(n)] = json.loads(res.stdout.strip().splitlines()[-1])
    return out
