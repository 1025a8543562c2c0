"""Index a VoxCeleb-style tree, apply an identity split, load a split into SplitData.

Layout: audio ``<audio_root>/<VoxCeleb ID>/<video>/<utt>.wav`` (.m4a for VoxCeleb2, decoded
through audioread, which needs ffmpeg); faces ``<face_root>/<VGGFace1 name or ID>/[...]/<img>``
(.jpg/.png; the image's parent folder is its video when it is not the identity folder).

Splits:
- "wen": Wen et al.'s alphabetical split from ``splits/`` (924/112/189 usable identities).
- "pins": 901/100/250. OUR RECONSTRUCTION, not a published list: the 1,251 VoxCeleb1
  identities sorted by ID, shuffled by numpy default_rng(0), cut in that order.
- "vox2-test": every identity of a file the user passes (one ID per line, optionally a name
  after a comma or whitespace; a header line starting with a non-ID is skipped), all "test".
Every file is decoded and checked before any training (``load_split`` in memory, or the feature
store of ``store.py``); bad files are skipped and reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bianet_lib.data.audio import MIN_SECONDS, load_clip
from bianet_lib.data.errors import BadInputError
from bianet_lib.data.faces import load_face
from bianet_lib.data.types import SAMPLE_RATE, SplitData

SPLIT_NAMES = ("wen", "pins", "vox2-test")
AUDIO_EXT = {".wav", ".m4a", ".flac"}
FACE_EXT = {".jpg", ".jpeg", ".png"}
PINS_SIZES = (901, 100, 250)
_SPLITS_DIR = Path(__file__).parent / "splits"
_ID_RE = re.compile(r"^id\d+$")


@dataclass
class SkipReport:
    """What was left out and why: files, identities and unknown folders."""

    files: list[tuple[str, str]] = field(default_factory=list)          # (path, reason)
    identities: list[tuple[str, str]] = field(default_factory=list)     # (id, reason)
    unknown_folders: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        """Skipped files per reason category (the reason up to any parenthesis)."""
        return Counter(reason.split(" (")[0] for _, reason in self.files)

    def headline(self) -> str:
        """One line: how many files and identities were left out, by reason."""
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.counts().items()))
        return (f"skipped files: {len(self.files)}" + (f" ({reasons})" if reasons else "")
                + f"; dropped identities: {len(self.identities)}"
                + f"; unknown folders: {len(self.unknown_folders)}")

    def summary(self) -> str:
        lines = [f"skipped files: {len(self.files)}"]
        lines += [f"  {reason}: {n}" for reason, n in sorted(self.counts().items())]
        lines += [f"  {p}: {r}" for p, r in self.files]
        lines.append(f"dropped identities: {len(self.identities)}")
        lines += [f"  {i}: {r}" for i, r in self.identities]
        lines.append(f"unknown folders (not in split): {len(self.unknown_folders)}")
        lines += [f"  {f}" for f in self.unknown_folders]
        return "\n".join(lines)


def split_table(name: str, split_file: str | Path | None = None) -> pd.DataFrame:
    """Identities of a split: columns id, name, gender, split (train/val/test)."""
    if name in ("wen", "pins"):
        parts = [pd.read_csv(_SPLITS_DIR / f"wen_split_vox1_{s}.csv").assign(split=s)
                 for s in ("train", "val", "test")]
        t = pd.concat(parts, ignore_index=True)
        if name == "wen":
            t = t[t["Set"] != "none"]
        else:
            t = t.sort_values("VoxCeleb1_ID").reset_index(drop=True)
            t = t.iloc[np.random.default_rng(0).permutation(len(t))].reset_index(drop=True)
            t["split"] = np.repeat(["train", "val", "test"], PINS_SIZES)
        return pd.DataFrame({"id": t["VoxCeleb1_ID"], "name": t["VGGFace1_ID"],
                             "gender": t["Gender"], "split": t["split"]}).reset_index(drop=True)
    if name == "vox2-test":
        if split_file is None:
            raise ValueError("split 'vox2-test' needs an identity list file (--split-file)")
        path = Path(split_file)
        if not path.is_file():
            raise ValueError(f"{path}: identity list not found")
        rows = []
        for line in path.read_text().splitlines():
            fields = [x for x in re.split(r"[\s,]+", line.strip()) if x]
            if fields and _ID_RE.match(fields[0]):
                rows.append({"id": fields[0], "name": fields[1] if len(fields) > 1 else fields[0],
                             "gender": "", "split": "test"})
        if not rows:
            raise ValueError(f"{path}: no identity IDs (idNNNNN) found")
        return pd.DataFrame(rows)
    raise ValueError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")


#: Image and audio formats people keep next to VoxCeleb files that this loader does not read:
#: listed as skipped (with the reason) in the split's folders, never silently ignored.
MEDIA_EXT = {".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".avif", ".jpe", ".jp2", ".ppm",
             ".mp3", ".ogg", ".oga", ".opus", ".aac", ".wma", ".aif", ".aiff", ".mp4", ".webm",
             ".mkv", ".avi", ".mov"} | AUDIO_EXT | FACE_EXT


def _scan(root: Path, exts: set[str], modality: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable candidates, files left out while listing with their reason): dangling symlinks,
    symlink loops and media files of a format this modality does not read."""
    from bianet_lib.data.errors import broken_link_reason

    if not root.is_dir():
        raise ValueError(f"{root}: {modality} root is not a directory")
    rows, skipped = [], []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        suffix = p.suffix.lower()
        entry = {"folder": rel[0], "modality": modality, "path": str(p), "video": rel[-2] if len(rel) > 2 else ""}
        if suffix in exts and p.is_file():
            rows.append(entry)
        elif suffix in exts and (why := broken_link_reason(p)) is not None:
            skipped.append({**entry, "reason": why})
        elif suffix in MEDIA_EXT - exts and (p.is_file() or os.path.islink(p)):
            skipped.append({**entry, "reason": f"unsupported format {suffix} (a {modality} file must be "
                                              f"{'/'.join(sorted(exts))})"})
    return (pd.DataFrame(rows, columns=["folder", "modality", "path", "video"]),
            pd.DataFrame(skipped, columns=["folder", "modality", "path", "video", "reason"]))


def build_index(audio_root: str | Path, face_root: str | Path, split: str,
                split_file: str | Path | None = None) -> tuple[pd.DataFrame, SkipReport]:
    """Files of the split's identities: columns identity (VoxCeleb ID), name, gender, split,
    modality ("voice"/"face"), path, video. Folders outside the split and identities with
    only one modality are skipped and reported."""
    table = split_table(split, split_file)
    (audio, audio_skips), (face, face_skips) = (_scan(Path(audio_root), AUDIO_EXT, "voice"),
                                                _scan(Path(face_root), FACE_EXT, "face"))
    files = pd.concat([audio, face], ignore_index=True)
    by_id = table.set_index("id")
    name_to_id = dict(zip(table["name"], table["id"], strict=True))
    report = SkipReport()

    def identity(folder, modality):  # audio folders are IDs; face folders VGGFace names or IDs
        return (folder if folder in by_id.index else
                name_to_id.get(folder) if modality == "face" else None)

    files["identity"] = [identity(f, m) for f, m in zip(files["folder"], files["modality"], strict=True)]
    for skips in (audio_skips, face_skips):  # in the split's folders: reported, not ignored
        for rec in skips.to_dict("records"):
            if identity(rec["folder"], rec["modality"]) is not None:
                report.files.append((rec["path"], rec["reason"]))
    unknown = files[files["identity"].isna()]
    report.unknown_folders = sorted({f"{m}:{f}" for f, m in zip(unknown["folder"], unknown["modality"], strict=True)})
    files = files.dropna(subset=["identity"])
    index = _drop_one_modality(files, report)
    index = index.join(by_id[["name", "gender", "split"]], on="identity")
    cols = ["identity", "name", "gender", "split", "modality", "path", "video"]
    return index[cols].reset_index(drop=True), report


def _drop_one_modality(files: pd.DataFrame, report: SkipReport) -> pd.DataFrame:
    have = files.groupby("identity")["modality"].agg(set)
    keep = set()
    for i, mods in have.items():
        if mods == {"voice", "face"}:
            keep.add(i)
        else:
            missing = ({"voice", "face"} - mods).pop()
            report.identities.append((i, f"no usable {missing} files"))
    return files[files["identity"].isin(keep)]


def _cache_path(cache_dir: Path, path: str, tag: str) -> Path:
    st = Path(path).stat()
    key = f"{Path(path).resolve()}|{st.st_mtime_ns}|{st.st_size}|{tag}"
    return cache_dir / (hashlib.sha1(key.encode()).hexdigest() + ".npz")


def _load_cached(path: str, modality: str, clip_seconds: float, face_size: int,
                 cache_dir: Path | None, min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Decode one file, through the per-file cache when ``cache_dir`` is set. Cache writes are
    atomic (temporary file, then rename); an unreadable entry is reported in one line on stderr
    and rebuilt."""
    tag = f"{modality}|{clip_seconds}|{face_size}|{min_seconds}"
    cached = _cache_path(cache_dir, path, tag) if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached) as npz:
                return npz["x"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            print(f"cache entry {cached} (for {path}) is corrupt ({type(exc).__name__}); rebuilt",
                  file=sys.stderr)
    x = (load_clip(path, seconds=clip_seconds, min_seconds=min_seconds) if modality == "voice"
         else load_face(path, face_size).numpy())
    if cached is not None:
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, x=x)
        os.replace(tmp, cached)
    return x


def load_split(index: pd.DataFrame, split_name: str, clip_seconds: float, face_size: int,
               cache_dir: str | Path | None = None,
               report: SkipReport | None = None,
               min_seconds: float = MIN_SECONDS) -> tuple[SplitData, SkipReport]:
    """Decode and check every file of one split (train/val/test) into memory; return SplitData
    and the skip report (files skipped with their reason, identities dropped for a missing
    modality). ``cache_dir`` keeps preprocessed arrays keyed by path, mtime, size and settings.
    For small trees (notebooks, tests); training on real data uses ``store`` (read per item)."""
    report = report or SkipReport()
    rows = index[index["split"] == split_name]
    if rows.empty:
        raise ValueError(f"split {split_name!r} has no files in the index")
    cache = Path(cache_dir) if cache_dir else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    good, arrays = [], []
    for rec in rows.to_dict("records"):
        try:
            arrays.append(_load_cached(rec["path"], rec["modality"], clip_seconds, face_size, cache,
                                       min_seconds))
            good.append(rec)
        except BadInputError as exc:
            report.files.append((exc.path, exc.reason))
    m4a = [p for p, r in report.files if p.endswith(".m4a") and r.startswith("cannot decode")]
    if m4a and not any(r["path"].endswith(".m4a") for r in good):
        raise ValueError(f"{m4a[0]}: no .m4a file could be decoded; install ffmpeg (audioread "
                         "uses it) or convert VoxCeleb2 audio to .wav")
    ok = pd.DataFrame(good)
    if ok.empty:
        raise ValueError(f"split {split_name!r}: no usable file ({len(report.files)} skipped)")
    ok["array"] = arrays
    ok = _drop_one_modality(ok, report)
    if ok.empty:
        raise ValueError(f"split {split_name!r}: no identity has both a usable voice and face")
    ids = sorted(ok["identity"].unique())
    pos = {i: n for n, i in enumerate(ids)}
    ok["identity_id"] = ok["identity"]
    ok["identity"] = ok["identity"].map(pos)
    v, f = ok[ok["modality"] == "voice"], ok[ok["modality"] == "face"]
    meta_cols = ["identity", "video", "path"]
    identities = (ok.drop_duplicates("identity_id").sort_values("identity")
                  [["name", "identity_id", "gender"]].rename(columns={"identity_id": "voxceleb_id"}))
    data = SplitData(
        name=split_name,
        faces=torch.from_numpy(np.stack(f["array"].to_list())),
        voices=torch.from_numpy(np.stack(v["array"].to_list()).astype(np.float32)),
        face_meta=f[meta_cols].reset_index(drop=True),
        voice_meta=v[meta_cols].reset_index(drop=True),
        identities=identities.reset_index(drop=True))
    assert data.voices.shape[1] == int(round(clip_seconds * SAMPLE_RATE))
    return data, report
