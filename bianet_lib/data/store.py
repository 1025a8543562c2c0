"""An on-disk feature store: each file of a split decoded once, then read per item.

Layout of one split's store (a folder under ``<cache_dir>/store/``):

- ``voices.i16``: every usable clip's first ``store_seconds`` at 16 kHz as int16 (VoxCeleb's own
  16-bit precision), end to end; ``voice_meta.csv`` gives each clip's offset and length.
- ``faces.u8``: uint8 [N, 3, S, S] RGB at the face size, one row per usable image.
- ``voice_meta.csv`` / ``face_meta.csv``: identity (int), video, path, row/offset/length and a
  CRC-32 of the stored bytes; ``identities.csv``; ``skipped.csv`` (path, reason); and
  ``manifest.json`` (settings, counts, build time), written last.

Both arrays are flat fixed-layout files (``numpy.memmap`` opens them as they are); items are read
with ``os.pread`` of exactly their bytes rather than through a memory map, because mapped pages
stay counted in the reader's RSS until evicted (measured: +166 MB of RSS at 1,251 identities vs
200 with mmap, flat with pread). A worker holds only its batch, so memory is bounded by batch
size and workers, not by the dataset. Building streams too: files are decoded by a process pool
and appended one by one.

Crash safety: the store is built in a temporary sibling folder and renamed into place once
complete (a kill leaves either no store or a whole one). A store whose manifest or array sizes do
not add up is reported in one line and rebuilt; an entry whose bytes no longer match their CRC
is reported in one line and re-decoded from its source file in place.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bianet_lib.data.audio import MIN_SECONDS, check_wave, decode, loop_pad
from bianet_lib.data.errors import BadInputError, ignore_sigint, interruptible
from bianet_lib.data.faces import load_face
from bianet_lib.data.types import SAMPLE_RATE, SplitData

STORE_VERSION = 1
_SCALE = 32768.0  # int16 <-> float in [-1, 1), as 16-bit WAV


def default_store_seconds(clip_seconds: float) -> float:
    """Stored audio per clip: twice the training clip, so random crops vary (VoxCeleb1 clips
    average about 8 s), while the store stays at most twice the size of a fixed-clip one."""
    return 2.0 * clip_seconds


@dataclass
class StoreSettings:
    clip_seconds: float
    face_size: int
    store_seconds: float | None = None  # None: default_store_seconds(clip_seconds)
    min_seconds: float = MIN_SECONDS

    def __post_init__(self):
        if self.store_seconds is None:
            self.store_seconds = default_store_seconds(self.clip_seconds)
        if self.clip_seconds <= 0 or self.min_seconds <= 0 or self.face_size < 8:
            raise ValueError(f"store settings {self}: clip_seconds and min_seconds must be > 0, "
                             "face_size >= 8")
        if self.store_seconds < self.clip_seconds:
            raise ValueError(f"store_seconds={self.store_seconds} < clip_seconds={self.clip_seconds}")


@dataclass
class BuildReport:
    built: bool = False  # False: an existing store was reused
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    dropped_identities: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # corrupt/rebuilt messages


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def store_key(rows: pd.DataFrame, split_name: str, settings: StoreSettings) -> str:
    """Hash of the settings and every source file's path, size and mtime: any change -> new store."""
    h = hashlib.sha1(json.dumps([STORE_VERSION, split_name, settings.__dict__], sort_keys=True).encode())
    for path in sorted(rows["path"]):
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# --- decoding (runs in pool workers) --------------------------------------------------------
def _decode_voice(args):
    path, settings = args
    try:
        wave = decode(path)
        check_wave(wave, path, SAMPLE_RATE, settings.min_seconds)
        keep = wave[: int(round(settings.store_seconds * SAMPLE_RATE))]
        return np.clip(np.round(keep * _SCALE), -32768, 32767).astype(np.int16), None
    except BadInputError as exc:
        return None, exc.reason


def _decode_face(args):
    path, settings = args
    try:
        return load_face(path, settings.face_size).numpy(), None
    except BadInputError as exc:
        return None, exc.reason


def _check_file(args) -> str | None:
    """None if the file decodes and passes the checks, else the reason (nothing is kept)."""
    modality = args[2]
    arr, reason = (_decode_voice if modality == "voice" else _decode_face)(args[:2])
    return reason


def validate_rows(rows: pd.DataFrame, settings: StoreSettings, workers: int = 0
                  ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Decode every row's file (in a process pool) without keeping it: (skipped files with their
    reason, identities left without a usable voice or face)."""
    workers = workers or os.cpu_count() or 1
    jobs = [(p, settings, m) for p, m in zip(rows["path"], rows["modality"], strict=True)]
    if workers > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers, initializer=ignore_sigint) as pool:
            reasons = list(interruptible(pool.imap(_check_file, jobs, chunksize=8)))
    else:
        reasons = [_check_file(j) for j in jobs]
    skipped = [(p, r) for (p, _, _), r in zip(jobs, reasons, strict=True) if r is not None]
    ok = rows[[r is None for r in reasons]]
    have = ok.groupby("identity")["modality"].agg(set)
    dropped = []
    for ident in sorted(set(rows["identity"])):
        mods = have.get(ident, set())
        if mods != {"voice", "face"}:
            dropped.append((ident, f"no usable {'voice' if 'voice' not in mods else 'face'} files"))
    return skipped, dropped


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8))


# --- building --------------------------------------------------------------------------------
def build_store(rows: pd.DataFrame, folder: str | Path, settings: StoreSettings, split_name: str,
                workers: int = 0, progress: bool = False) -> BuildReport:
    """Decode the rows (columns identity, name, gender, modality, path, video) of one split into
    ``folder``; atomic (temporary folder, then rename). workers=0: one per CPU."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        return _build_into(tmp, rows, folder, settings, split_name, workers)
    except BaseException:  # any failure (a full disk, a decoder, Ctrl-C): no half-built store left
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build_into(tmp: Path, rows: pd.DataFrame, folder: Path, settings: StoreSettings, split_name: str,
                workers: int) -> BuildReport:
    t0 = time.perf_counter()
    report = BuildReport(built=True)
    voices = rows[rows["modality"] == "voice"].reset_index(drop=True)
    faces = rows[rows["modality"] == "face"].reset_index(drop=True)
    workers = workers or os.cpu_count() or 1
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers, initializer=ignore_sigint) if workers > 1 else None
    imap = (lambda fn, jobs, **kw: interruptible(pool.imap(fn, jobs, **kw))) if pool else map
    try:
        v_ok, offset = [], 0
        with open(tmp / "voices.i16", "wb") as fh:
            jobs = ((p, settings) for p in voices["path"])
            for rec, (arr, reason) in zip(voices.to_dict("records"),
                                          imap(_decode_voice, jobs, **({"chunksize": 8} if pool else {})),
                                          strict=True):
                if arr is None:
                    report.skipped.append((rec["path"], reason))
                    continue
                fh.write(arr.tobytes())
                v_ok.append({**rec, "offset": offset, "length": len(arr), "crc": _crc(arr)})
                offset += len(arr)
        f_ok = []
        with open(tmp / "faces.u8", "wb") as fh:
            jobs = ((p, settings) for p in faces["path"])
            for rec, (arr, reason) in zip(faces.to_dict("records"),
                                          imap(_decode_face, jobs, **({"chunksize": 8} if pool else {})),
                                          strict=True):
                if arr is None:
                    report.skipped.append((rec["path"], reason))
                    continue
                fh.write(arr.tobytes())
                f_ok.append({**rec, "row": len(f_ok), "crc": _crc(arr)})
    finally:
        if pool:
            pool.close()
            pool.join()
    v_meta, f_meta = pd.DataFrame(v_ok), pd.DataFrame(f_ok)
    have_v = set(v_meta["identity"]) if len(v_meta) else set()
    have_f = set(f_meta["identity"]) if len(f_meta) else set()
    for ident in sorted(set(rows["identity"]) - (have_v & have_f)):
        missing = "voice" if ident not in have_v else "face"
        report.dropped_identities.append((ident, f"no usable {missing} files"))
    keep = sorted(have_v & have_f)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"split {split_name!r}: no identity has both a usable voice and face "
                         f"({len(report.skipped)} files skipped)")
    pos = {ident: n for n, ident in enumerate(keep)}
    idents = (rows[rows["identity"].isin(pos)].drop_duplicates("identity")
              .assign(index=lambda t: t["identity"].map(pos)).sort_values("index"))
    identities = pd.DataFrame({"name": idents["name"].to_numpy(), "voxceleb_id": idents["identity"].to_numpy(),
                               "gender": idents["gender"].to_numpy()})
    cols = ["identity", "voxceleb_id", "video", "path"]
    for meta, extra, name in ((v_meta, ["offset", "length", "crc"], "voice_meta.csv"),
                              (f_meta, ["row", "crc"], "face_meta.csv")):
        meta = meta[meta["identity"].isin(pos)].rename(columns={"identity": "voxceleb_id"})
        meta.insert(0, "identity", meta["voxceleb_id"].map(pos))
        meta[cols + extra].to_csv(tmp / name, index=False)
    identities.to_csv(tmp / "identities.csv", index=False)
    pd.DataFrame(report.skipped, columns=["path", "reason"]).to_csv(tmp / "skipped.csv", index=False)
    pd.DataFrame(report.dropped_identities, columns=["identity", "reason"]).to_csv(
        tmp / "dropped_identities.csv", index=False)
    report.seconds = time.perf_counter() - t0
    manifest = {"version": STORE_VERSION, "split": split_name, "settings": settings.__dict__,
                "voice_samples": offset, "n_faces": len(f_ok), "n_voices": len(v_ok),
                "build_seconds": report.seconds, "workers": workers}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))  # last: marks completeness
    if folder.exists():  # a stale or corrupt store: move it aside, then replace
        trash = folder.with_name(f"{folder.name}.old-{os.getpid()}")
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process (a torchrun rank) finished the same store first
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def check_store(folder: Path) -> str | None:
    """None if the store looks whole, else why not (one phrase)."""
    mf = folder / "manifest.json"
    if not mf.is_file():
        return "no manifest.json (an interrupted build)"
    try:
        m = json.loads(mf.read_text())
        s = m["settings"]
        sizes = {"voices.i16": 2 * m["voice_samples"],
                 "faces.u8": m["n_faces"] * 3 * s["face_size"] ** 2}
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest.json ({type(exc).__name__})"
    if m.get("version") != STORE_VERSION:
        return f"store version {m.get('version')}, expected {STORE_VERSION}"
    for name, size in sizes.items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != size:
            return f"{name} holds {p.stat().st_size if p.is_file() else 0} bytes, manifest says {size}"
    for name in ("voice_meta.csv", "face_meta.csv", "identities.csv"):
        if not (folder / name).is_file():
            return f"{name} missing"
    return None


def open_or_build(rows: pd.DataFrame, cache_dir: str | Path, split_name: str,
                  settings: StoreSettings, workers: int = 0) -> tuple[StoredSplit, BuildReport]:
    """The split's store under ``cache_dir/store``: reused when whole, else (re)built."""
    # absolute paths: `index --cache-dir` and `train` find the same store from any folder, and a
    # corrupt entry can be re-decoded whatever the current folder
    rows = rows.assign(path=rows["path"].map(os.path.abspath)).reset_index(drop=True)
    folder = Path(cache_dir) / "store" / f"{split_name}-{store_key(rows, split_name, settings)}"
    report = BuildReport()
    problem = check_store(folder) if folder.exists() else "absent"
    if problem is not None:
        if problem != "absent":
            note = f"feature store {folder}: {problem}; rebuilding it"
            _say(note)
            report.notes.append(note)
        built = build_store(rows, folder, settings, split_name, workers)
        built.notes = report.notes + built.notes
        report = built
    else:
        skipped = pd.read_csv(folder / "skipped.csv", keep_default_na=False)
        dropped = pd.read_csv(folder / "dropped_identities.csv", keep_default_na=False)
        report.skipped = list(zip(skipped["path"], skipped["reason"], strict=True))
        report.dropped_identities = list(zip(dropped["identity"], dropped["reason"], strict=True))
    return open_store(folder), report


# --- reading ---------------------------------------------------------------------------------
class FeatureStore:
    """Read access to one built store; memory maps open lazily in each process (picklable)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        m = json.loads((self.folder / "manifest.json").read_text())
        self.manifest = m
        self.settings = StoreSettings(**m["settings"])
        self.voice_meta = pd.read_csv(self.folder / "voice_meta.csv", keep_default_na=False,
                                      dtype={"video": str, "path": str})
        self.face_meta = pd.read_csv(self.folder / "face_meta.csv", keep_default_na=False,
                                     dtype={"video": str, "path": str})
        self.identities = pd.read_csv(self.folder / "identities.csv", keep_default_na=False)
        self._offset = self.voice_meta["offset"].to_numpy(np.int64)
        self._length = self.voice_meta["length"].to_numpy(np.int64)
        self._vcrc = self.voice_meta["crc"].to_numpy(np.int64)
        self._row = self.face_meta["row"].to_numpy(np.int64)
        self._fcrc = self.face_meta["crc"].to_numpy(np.int64)
        self._voices = self._faces = self._pid = None  # file descriptors, opened per process
        self.clip_samples = int(round(self.settings.clip_seconds * SAMPLE_RATE))
        self.verify = True  # CRC-check every entry read (about 0.1 ms per 10 s clip)

    def __del__(self):
        if getattr(self, "_pid", None) == os.getpid():
            for fd in (self._voices, self._faces):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_voices"] = state["_faces"] = state["_pid"] = None  # each worker opens its own
        return state

    def _fds(self) -> tuple[int, int]:
        if self._voices is None or self._pid != os.getpid():  # one descriptor pair per process
            self._voices = os.open(self.folder / "voices.i16", os.O_RDONLY)
            self._faces = os.open(self.folder / "faces.u8", os.O_RDONLY)
            self._pid = os.getpid()
        return self._voices, self._faces

    def _voice_raw(self, i: int) -> np.ndarray:
        fd, _ = self._fds()
        off, n = int(self._offset[i]), int(self._length[i])
        raw = np.frombuffer(os.pread(fd, 2 * n, 2 * off), np.int16)
        if self.verify and _crc(raw) != self._vcrc[i]:
            raw = self._repair_voice(i)
        return raw

    def _repair_voice(self, i: int) -> np.ndarray:
        path = self.voice_meta["path"].iat[i]
        arr, reason = _decode_voice((path, self.settings))
        if arr is None or len(arr) != self._length[i] or _crc(arr) != self._vcrc[i]:
            raise ValueError(f"feature store {self.folder}: entry of {path} is corrupt and its source "
                             f"changed or is unusable ({reason or 'different content'}); delete the "
                             "store folder to rebuild it")
        with open(self.folder / "voices.i16", "r+b") as fh:
            fh.seek(2 * int(self._offset[i]))
            fh.write(arr.tobytes())
        _say(f"feature store {self.folder}: corrupt entry of {path} (CRC mismatch); re-decoded and rewritten")
        return arr

    def voice(self, i: int, crop_seed: int | None = None) -> np.ndarray:
        """float32 clip of clip_seconds: the first window (evaluation), or with ``crop_seed`` a
        random window of the stored audio (training); shorter clips are loop-padded."""
        raw = self._voice_raw(i).astype(np.float32) / _SCALE
        n = self.clip_samples
        if crop_seed is not None and len(raw) > n:
            start = int(crop_seed) % (len(raw) - n + 1)
            return raw[start:start + n]
        return loop_pad(raw, n) if len(raw) < n else raw[:n]

    def face(self, j: int) -> np.ndarray:
        _, fd = self._fds()
        s = self.settings.face_size
        size = 3 * s * s
        arr = np.frombuffer(os.pread(fd, size, int(self._row[j]) * size), np.uint8).reshape(3, s, s)
        if self.verify and _crc(arr) != self._fcrc[j]:
            path = self.face_meta["path"].iat[j]
            arr = load_face(path, self.settings.face_size).numpy()
            if _crc(arr) != self._fcrc[j]:
                raise ValueError(f"feature store {self.folder}: entry of {path} is corrupt and its "
                                 "source changed; delete the store folder to rebuild it")
            with open(self.folder / "faces.u8", "r+b") as fh:
                fh.seek(int(self._row[j]) * arr.nbytes)
                fh.write(arr.tobytes())
            _say(f"feature store {self.folder}: corrupt entry of {path} (CRC mismatch); re-decoded and rewritten")
        return arr


class _LazyRows:
    """A read-only tensor-like view (len, shape, dtype, slicing) that reads rows on demand."""

    def __init__(self, n: int, shape: tuple[int, ...], dtype: torch.dtype, read):
        self._n, self.shape, self.dtype, self._read = n, (n, *shape), dtype, read
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            rows = range(*key.indices(self._n))
        elif isinstance(key, int):
            return torch.from_numpy(np.array(self._read(key)))
        else:
            rows = torch.as_tensor(key).reshape(-1).tolist()
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        return torch.from_numpy(np.stack([self._read(i) for i in rows]))


@dataclass
class StoredSplit(SplitData):
    """A SplitData whose voices and faces live in a FeatureStore: ``voices[i:j]`` and
    ``faces[i:j]`` read those rows (first window of each clip, no augmentation: evaluation);
    training reads through ``bianet_lib.data.loader`` (random crops, flips)."""

    store: FeatureStore | None = None
    skip_summary: str = ""  # the data's skip report (data_sources fills it; runs save it)


def open_store(folder: str | Path) -> StoredSplit:
    st = FeatureStore(folder)
    s = st.settings.face_size
    voices = _LazyRows(len(st.voice_meta), (st.clip_samples,), torch.float32, st.voice)
    faces = _LazyRows(len(st.face_meta), (3, s, s), torch.uint8, st.face)
    meta_cols = ["identity", "video", "path"]
    return StoredSplit(name=st.manifest["split"], faces=faces, voices=voices,
                       face_meta=st.face_meta[meta_cols].copy(), voice_meta=st.voice_meta[meta_cols].copy(),
                       identities=st.identities, store=st)
