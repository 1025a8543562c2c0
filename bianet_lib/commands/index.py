"""``bianet index``: index a VoxCeleb-style tree under an identity split and report skips.

Without ``--validate`` only folders are checked (files are listed, not decoded), and the report
says so. With it every file is decoded (in worker processes, nothing kept in memory, or into the
feature stores with ``--cache-dir``); ``--out`` then lists only usable files, and the rejected
ones go, with their reason, to ``<out stem>.rejected.csv``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bianet_lib.cli import UsageError

HELP = "index VoxCeleb audio + face folders under a split (wen, pins, vox2-test) and report skips"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio-root", required=True, help="folder holding <VoxCeleb ID>/<video>/<utt>.wav")
    p.add_argument("--face-root", required=True, help="folder holding <VGGFace1 name or ID>/.../<img>")
    p.add_argument("--split", required=True, help="wen, pins or vox2-test")
    p.add_argument("--split-file", help="identity list for --split vox2-test")
    p.add_argument("--out", help="write the index (usable files only, with --validate) as CSV here")
    p.add_argument("--validate", action="store_true",
                   help="also decode every file and report unusable ones (with their reason)")
    p.add_argument("--cache-dir", default=None,
                   help="with --validate: build the feature stores here (training reuses them)")
    p.add_argument("--clip-seconds", type=float, default=1.0)
    p.add_argument("--face-size", type=int, default=64)
    p.add_argument("--min-seconds", type=float, default=None,
                   help="shortest usable clip; shorter are refused, longer loop-padded (default 0.1)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per CPU)")


def _check_args(args) -> None:
    if args.clip_seconds <= 0:
        raise UsageError(f"--clip-seconds must be > 0, got {args.clip_seconds}")
    if args.face_size < 8:
        raise UsageError(f"--face-size must be >= 8, got {args.face_size}")
    if args.min_seconds is not None and args.min_seconds <= 0:
        raise UsageError(f"--min-seconds must be > 0, got {args.min_seconds}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if args.cache_dir and not args.validate:
        raise UsageError("--cache-dir builds feature stores while validating: add --validate")
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'index.csv'}")
        if not out.parent.is_dir():
            raise UsageError(f"--out {out}: folder {out.parent} does not exist")


def _write_csv(frame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from bianet_lib.data.audio import MIN_SECONDS
    from bianet_lib.data.store import StoreSettings, open_or_build, validate_rows
    from bianet_lib.data.voxceleb import SPLIT_NAMES, build_index

    if args.split not in SPLIT_NAMES:
        raise UsageError(f"--split must be one of {', '.join(SPLIT_NAMES)}, got {args.split!r}")
    _check_args(args)
    settings = StoreSettings(args.clip_seconds, args.face_size,
                             min_seconds=args.min_seconds or MIN_SECONDS)
    try:
        index, report = build_index(args.audio_root, args.face_root, args.split, args.split_file)
        index["path"] = index["path"].map(os.path.abspath)  # as the feature store names them
        if index.empty:
            raise UsageError("no file of the split's identities found under the given roots")
        counts = index.groupby(["split", "modality"]).size().unstack(fill_value=0)
        ids = index.groupby("split")["identity"].nunique()
        for split in counts.index:
            print(f"{split}: {ids[split]} identities, {counts.loc[split].get('voice', 0)} voice "
                  f"files, {counts.loc[split].get('face', 0)} face files")
        if args.validate:
            for split in counts.index:
                rows = index[index["split"] == split]
                if args.cache_dir:
                    stored, built = open_or_build(rows, args.cache_dir, split, settings, args.workers)
                    skipped, dropped = built.skipped, built.dropped_identities
                    print(f"{split}: feature store {stored.store.folder}"
                          + (f" built in {built.seconds:.1f} s" if built.built else " reused"))
                else:
                    skipped, dropped = validate_rows(rows, settings, args.workers)
                report.files += skipped
                report.identities += dropped
    except ValueError as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    if args.validate:
        print(report.summary())
    else:  # nothing was decoded: say so rather than "skipped files: 0"
        print("files not decoded (add --validate to find unusable ones)")
        lines = report.summary().splitlines()
        if report.files:  # found while listing: broken links, unsupported formats
            lines[0] = f"skipped while listing: {len(report.files)}"
        print("\n".join(lines if report.files else lines[1:]))  # + dropped identities, unknown folders
    if args.out:
        out = Path(args.out)
        rejected = {p for p, _ in report.files}
        dropped_ids = {i for i, _ in report.identities}
        usable = index[~index["path"].isin(rejected) & ~index["identity"].isin(dropped_ids)]
        _write_csv(usable, out)
        rej_path = out.with_name(f"{out.stem}.rejected.csv")
        dropped_files = index[~index["path"].isin(rejected) & index["identity"].isin(dropped_ids)]
        rows = ([{"path": p, "reason": r} for p, r in report.files]
                + [{"path": p, "reason": f"identity {i} dropped: {dict(report.identities)[i]}"}
                   for p, i in zip(dropped_files["path"], dropped_files["identity"], strict=True)])
        _write_csv(pd.DataFrame(rows, columns=["path", "reason"]), rej_path)
        print(f"index of {len(usable)} usable files written to {out}"
              + ("" if args.validate else " (not decoded: --validate checks them)"))
        print(f"{len(rows)} rejected files with their reason written to {rej_path}")
    return 0
