"""``bianet index``: index a VoxCeleb-style tree under an identity split and report skips."""

from __future__ import annotations

import argparse

from bianet_lib.cli import UsageError

HELP = "index VoxCeleb audio + face folders under a split (wen, pins, vox2-test) and report skips"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio-root", required=True, help="folder holding <VoxCeleb ID>/<video>/<utt>.wav")
    p.add_argument("--face-root", required=True, help="folder holding <VGGFace1 name or ID>/.../<img>")
    p.add_argument("--split", required=True, help="wen, pins or vox2-test")
    p.add_argument("--split-file", help="identity list for --split vox2-test")
    p.add_argument("--out", help="write the index as CSV here")
    p.add_argument("--validate", action="store_true",
                   help="also decode every file (slow) and report unusable ones")
    p.add_argument("--clip-seconds", type=float, default=1.0)
    p.add_argument("--face-size", type=int, default=64)


def run(args: argparse.Namespace) -> int:
    from bianet_lib.data.voxceleb import SPLIT_NAMES, build_index, load_split

    if args.split not in SPLIT_NAMES:
        raise UsageError(f"--split must be one of {', '.join(SPLIT_NAMES)}, got {args.split!r}")
    try:
        index, report = build_index(args.audio_root, args.face_root, args.split, args.split_file)
        if index.empty:
            raise UsageError("no file of the split's identities found under the given roots")
        counts = index.groupby(["split", "modality"]).size().unstack(fill_value=0)
        ids = index.groupby("split")["identity"].nunique()
        for split in counts.index:
            print(f"{split}: {ids[split]} identities, {counts.loc[split].get('voice', 0)} voice "
                  f"files, {counts.loc[split].get('face', 0)} face files")
        if args.validate:
            for split in counts.index:
                load_split(index, split, args.clip_seconds, args.face_size, report=report)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(report.summary())
    if args.out:
        index.to_csv(args.out, index=False)
        print(f"index written to {args.out}")
    return 0
