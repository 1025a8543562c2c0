"""``bianet bench``: step time of BIANet vs. the two-tower baseline, memory, throughput (JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bianet_lib.cli import UsageError
from bianet_lib.config import PRESETS

HELP = "benchmark a training step of BIANet against the plain two-tower baseline; prints JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=tuple(PRESETS), default="cpu-small",
                   help="shapes and model: cpu-small, or paper (224x224 faces, 10 s audio, batch 50, K=2)")
    p.add_argument("--config", metavar="FILE", default=None, help="YAML file of config fields")
    # extend + nargs: `--set a=1 b=2` (several after one flag, as people write it) and repeated
    # `--set a=1 --set b=2` both give ["a=1", "b=2"]
    p.add_argument("--set", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
                   dest="overrides",
                   help="override config fields (values parsed as YAML): --set a=1 b=2; repeatable")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10 cpu-small, 3 paper)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--audio-root", default=None, help="a VoxCeleb-layout audio tree: also time decoding")
    p.add_argument("--face-root", default=None, help="its face tree (with --audio-root)")
    p.add_argument("--loader", metavar="N,N", default=None,
                   help="instead: benchmark the streaming loader on generated VoxCeleb-shaped trees "
                        "of these identity counts (e.g. 200,1251): peak RSS, samples/s per worker, "
                        "feature-store build time")
    p.add_argument("--table", action="store_true",
                   help="instead: the step table (BIANet, baseline, bare encoders; step time, samples/s, "
                        "FLOPs, FLOP/s, utilisation on a known GPU, ops and host syncs per step) of the "
                        "config against --compare's field changes, steps interleaved")
    p.add_argument("--compare", metavar="KEY=VALUE", action="extend", nargs="+", default=None,
                   help="with --table: the variant to compare with (default: channels_last=false "
                        "compile=false, the step before issue 28)")
    p.add_argument("--against", metavar="REV", default=None,
                   help="instead: this code's training step side by side with revision REV's of this "
                        "repository (git), each arm in its own process, alternating: e.g. "
                        "--against 731df27 (the step before issue 28)")
    p.add_argument("--rounds", type=int, default=None, help="with --against: processes per arm (default 4)")
    p.add_argument("--this-set", metavar="KEY=VALUE", action="extend", nargs="+", default=[],
                   help="with --against: config fields for this code's arms only (e.g. compile=true, "
                        "which older revisions do not know); --set goes to every arm")
    p.add_argument("--threads", type=int, default=None,
                   help="with --against: torch threads per process (default 1; a config's num_threads wins)")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from bianet_lib.engine.bench import run_bench

    if args.out:
        from bianet_lib.engine.safeio import check_out_file

        try:  # refused before the work, not after it
            check_out_file(args.out, "--out")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.loader is not None:
        return _loader(args)
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if bool(args.audio_root) != bool(args.face_root):
        raise UsageError("--audio-root and --face-root go together")
    for root in (args.audio_root, args.face_root):
        if root and not Path(root).is_dir():
            raise UsageError(f"{root}: not a directory")
    overrides = list(args.overrides)
    if args.config:
        try:
            values = yaml.safe_load(Path(args.config).read_text()) or {}
        except OSError as exc:
            raise UsageError(f"--config {args.config}: cannot read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:  # one line: the problem and where, not the 5-line excerpt
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise UsageError(f"--config {args.config}: not valid YAML ({problem}{where})") from None
        if not isinstance(values, dict):
            raise UsageError(f"--config {args.config}: must hold a mapping of field: value")
        values.pop("preset", None)
        overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()] + overrides
    if args.compare is not None and not args.table:
        raise UsageError("--compare goes with --table")
    if args.against is not None and (args.table or args.audio_root):
        raise UsageError("--against goes without --table and --audio-root")
    if args.against is None and (args.rounds is not None or args.threads is not None or args.this_set):
        raise UsageError("--rounds, --threads and --this-set go with --against")
    try:
        if args.against is not None:
            from bianet_lib.engine.bench_against import against_revision, format_against
            from bianet_lib.engine.trainer import resolve_device

            result = against_revision(args.against, args.preset, resolve_device(args.device).type, overrides,
                                      4 if args.rounds is None else args.rounds,
                                      args.steps or (8 if args.preset == "cpu-small" else 3), max(args.warmup, 1),
                                      1 if args.threads is None else args.threads, this_overrides=args.this_set)
            print(format_against(result))
        elif args.table:
            from bianet_lib.engine.bench import bench_config, format_step_table, step_table

            compare = _compare_fields(args.compare or ["channels_last=false", "compile=false"])
            cfg = bench_config(args.preset, args.device, overrides)
            cfg.__class__.from_dict({**cfg.to_dict(), **compare})  # a bad value: one line, before any work
            result = step_table(cfg, args.steps or (10 if args.preset == "cpu-small" else 3),
                                max(args.warmup, 1), compare)
            result.update(preset=args.preset, threads=torch.get_num_threads(),
                          config={k: getattr(cfg, k) for k in ("batch_size", "channels_last", "compile", "amp")})
            print(format_step_table(result))
        else:
            result = run_bench(args.preset, args.device, args.steps, overrides, args.warmup,
                               args.audio_root, args.face_root)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    text = json.dumps(result, indent=2)
    if not args.table and args.against is None:
        print(text)
    if args.out:
        from bianet_lib.engine.safeio import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


def _loader(args: argparse.Namespace) -> int:
    from bianet_lib.engine.bench import run_loader_bench

    try:
        sizes = [int(x) for x in args.loader.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--loader {args.loader!r}: expected identity counts such as 200,1251") from None
    if not sizes or any(not 8 <= n <= 1251 for n in sizes):
        raise UsageError(f"--loader {args.loader!r}: each size must lie in 8..1251 (VoxCeleb1's identities)")
    result = run_loader_bench(sizes=sizes, batch_size=min(64, min(sizes) // 2))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from bianet_lib.engine.safeio import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


def _compare_fields(items: list[str]) -> dict:
    """--compare KEY=VALUE ... as config field values (YAML-parsed); unknown fields refused."""
    import yaml

    from bianet_lib.config import BIANetConfig

    known = BIANetConfig.__dataclass_fields__
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise UsageError(f"--compare {item!r}: expected KEY=VALUE with a config field as KEY")
        out[key] = yaml.safe_load(value)
    return out
