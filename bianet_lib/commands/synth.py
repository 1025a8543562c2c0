"""``bianet synth``: generate a SynthVox world and write it in VoxCeleb layout."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from bianet_lib.cli import UsageError

HELP = "generate a SynthVox world (faces + voices) and write it as a VoxCeleb-style tree"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (created; must be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bias", type=float, default=0.0, help="train-only shortcut probability rho in [0, 1]")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--per-id-train", type=int, default=24, help="faces and voices per train identity")
    p.add_argument("--per-id-eval", type=int, default=6, help="faces and voices per val/test identity")
    p.add_argument("--videos-per-id", type=int, default=3)
    p.add_argument("--preset", default="default", help="named world: 'default' or 'local' (local "
                   "interference with masks); the options below override it")
    p.add_argument("--face-interference", type=float, default=None,
                   help="global face nuisance, 0 clean .. 1 calibrated (default: the preset's)")
    p.add_argument("--voice-interference", type=float, default=None,
                   help="global voice nuisance, 0 clean .. 1 calibrated (default: the preset's)")
    p.add_argument("--face-local", type=float, default=None,
                   help="share of each face covered by local interference, 0 = off")
    p.add_argument("--face-local-p", type=float, default=None, help="probability that a face carries it")
    p.add_argument("--face-local-kinds", default=None, help="comma list of: face (a patch of another "
                   "identity's face), texture (a textured occluder)")
    p.add_argument("--voice-local", type=float, default=None,
                   help="share of each clip covered by local bursts, 0 = off")
    p.add_argument("--voice-local-p", type=float, default=None, help="probability that a clip carries them")
    p.add_argument("--voice-local-db", type=float, default=None, help="burst level relative to the voice, dB")
    p.add_argument("--voice-local-kinds", default=None, help="comma list of: speaker (another "
                   "identity's voice), noise")
    p.add_argument("--voice-local-bursts", type=int, default=None, help="bursts per clip")
    p.add_argument("--local-scale", type=float, default=None,
                   help="multiplies both local shares (0 = clean twins of the same world)")
    p.add_argument("--face-size", type=int, default=64)
    p.add_argument("--clip-seconds", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    from bianet_lib.data.synthvox import WorldConfig, timed_world, write_voxceleb_tree

    knobs = ("face_interference", "voice_interference", "face_local", "face_local_p",
             "face_local_kinds", "voice_local", "voice_local_p", "voice_local_db",
             "voice_local_kinds", "voice_local_bursts", "local_scale")
    try:
        cfg = WorldConfig.preset(
            args.preset, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
            faces_per_id_train=args.per_id_train, voices_per_id_train=args.per_id_train,
            faces_per_id_eval=args.per_id_eval, voices_per_id_eval=args.per_id_eval,
            videos_per_id=args.videos_per_id, face_size=args.face_size,
            clip_seconds=args.clip_seconds, rho=args.bias,
            **{k: getattr(args, k) for k in knobs if getattr(args, k) is not None})
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers must be in 1..64, got {args.workers}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory")
    if importlib.util.find_spec("soundfile") is None:  # checked before minutes of generation
        raise UsageError("writing the WAV files needs soundfile, which is not installed "
                         "(pip install 'bianet_lib[audio]', or its wheel: docs/gpu-and-real-data.md)")
    try:
        world, summary = timed_world(cfg, args.seed, args.workers)
        write_voxceleb_tree(world, out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    n_faces = sum(len(s.faces) for s in world.values())
    n_clips = sum(len(s.voices) for s in world.values())
    for split in ("train", "val", "test"):
        s = summary[split]
        print(f"{split}: {s['identities']} identities, {s['faces']} faces, {s['voices']} voices, "
              f"female {s['female_share']:.2f}, shortcut-aligned faces {s['face_aligned']:.2f} "
              f"voices {s['voice_aligned']:.2f}")
        for modality, meta, csv in (("faces", world[split].face_meta, "face_meta.csv"),
                                    ("clips", world[split].voice_meta, "voice_meta.csv")):
            if "local_kind" in meta:
                on = meta["local_kind"] != "none"
                print(f"  local interference on {on.mean():.2f} of {modality}, mean share "
                      f"{meta['local_share'][on].mean() if on.any() else 0.0:.3f} "
                      f"(masks in {csv})")
    print(f"generated {n_faces} faces + {n_clips} clips in {summary['seconds']:.1f} s on "
          f"{args.workers} process(es); one core renders {summary['faces_per_s']:.0f} faces/s, "
          f"{summary['clips_per_s']:.0f} clips/s")
    print(f"written to {out}")
    return 0
