"""Crash-safe files: atomic writes, checksummed checkpoints, run locks, output-path checks.

* :func:`atomic_write_bytes` writes a unique temporary file in the target's folder, fsyncs it,
  renames it over the target (``os.replace``, atomic on POSIX) and fsyncs the folder: a kill at
  any instant leaves the old file or the new one, never a mix. Files get the usual permissions
  (0666 minus the umask), not ``mkstemp``'s 0600.
* Checkpoints (:func:`write_checkpoint` / :func:`read_checkpoint`) are ``torch.save`` bytes behind
  a header with their length and SHA-256; reading verifies both, so a truncated, empty, random,
  foreign or bit-flipped file is refused with one line (:class:`CheckpointError`).
* :class:`FileLock` is an ``fcntl.flock`` lock on a lock file: the kernel drops it when its holder
  dies, so a crashed holder never leaves a stale lock behind.

Tests inject kills through :data:`crash_hook` (called at every stage of every atomic write).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Callable

MAGIC = b"BIANET-CHECKPOINT\x00v2\n"
_HEADER = struct.Struct("<32sQ")  # sha256 digest, payload length

#: Called as ``crash_hook(stage, path)`` at each stage of an atomic write ("write" after half
#: the bytes, "replace" before the rename, "dir" after it); tests raise a simulated kill here.
crash_hook: Callable[[str, Path], None] | None = None


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted (truncated, corrupt, not a checkpoint)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hook(stage: str, path: Path) -> None:
    if crash_hook is not None:
        crash_hook(stage, path)


def normal_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give a new file (0666 minus umask)."""
    return 0o666 & ~_umask()


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` by ``data`` atomically and durably; the folder must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            _hook("write", path)
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, normal_mode())
        _hook("replace", path)
        os.replace(tmp, path)
    except BaseException as exc:
        if not getattr(exc, "leave_files", False):  # a simulated kill leaves what a real one would
            Path(tmp).unlink(missing_ok=True)
        raise
    _hook("dir", path)
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temporary files a killed writer left in ``folder`` (``.NAME.XXXX.tmp``)."""
    n = 0
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


# --- checkpoints ----------------------------------------------------------------------------------
def checkpoint_bytes(state: dict) -> bytes:
    """The bytes :func:`write_checkpoint` writes: header, length, SHA-256, ``torch.save`` payload."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return MAGIC + _HEADER.pack(hashlib.sha256(payload).digest(), len(payload)) + payload


def write_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    return atomic_write_bytes(path, checkpoint_bytes(state))


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint's state dict, verified; :class:`CheckpointError` (one line) when it is not.

    Checkpoints written before the checksum (plain ``torch.save`` zip files) still load, with a
    warning that their integrity cannot be verified: refusing them would strand finished runs
    that are intact, and such a file is still checked for being a readable BIANet checkpoint.
    """
    import torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if data.startswith(MAGIC):
        head = len(MAGIC) + _HEADER.size
        if len(data) < head:
            raise CheckpointError(f"{path}: damaged checkpoint (truncated header, {len(data)} bytes)")
        digest, length = _HEADER.unpack(data[len(MAGIC):head])
        payload = data[head:]
        if len(payload) != length:
            raise CheckpointError(f"{path}: damaged checkpoint (truncated: {len(payload)} of {length} "
                                  "payload bytes)")
        if hashlib.sha256(payload).digest() != digest:
            raise CheckpointError(f"{path}: damaged checkpoint (SHA-256 checksum mismatch)")
    elif data.startswith(b"PK\x03\x04"):
        warnings.warn(f"{path}: checkpoint written before checksums (no integrity check); "
                      "retrain or re-save it to get one", stacklevel=2)
        payload = data
    elif not data:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    else:
        raise CheckpointError(f"{path}: not a BIANet checkpoint (unknown file format)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable payload is one clear error
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not {"config", "model", "epoch"} <= set(state):
        raise CheckpointError(f"{path}: not a BIANet checkpoint (no config/model/epoch entries)")
    return state


# --- locks ----------------------------------------------------------------------------------------
class LockBusy(RuntimeError):
    """Another live process holds the lock."""


class FileLock:
    """An exclusive ``flock`` on ``path``, released on exit (and by the kernel if the holder dies).

    The lock file is removed on release; a waiter that locked a file removed meanwhile sees
    that its inode is no longer the path's and retries, so two holders are never possible.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return True
            os.close(fd)  # the holder we waited for removed the file: lock the new one

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def __enter__(self) -> FileLock:
        if not self.acquire(blocking=False):
            raise LockBusy(f"{self.path.parent} is in use by another process (pid {self.holder()})")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- command-line output paths --------------------------------------------------------------------
class NotWritableError(ValueError):
    """An output folder this process may not write (the environment's fault, not the path's)."""


def check_out_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse, before any work, an output file whose folder is missing or that is a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise NotWritableError(f"{flag} {path}: folder {path.parent} is not writable")
    return path


def repo_root() -> Path | None:
    """The repository holding this package (a source checkout), or None for an installed copy."""
    root = Path(__file__).resolve().parents[2]  # bianet_lib/engine/safeio.py -> the checkout
    return root if (root / "pyproject.toml").is_file() and (root / "bianet_lib").is_dir() else None


def repo_relative(rel: str) -> Path:
    """A default path under the repository (not the current folder); under the current folder
    only when the package is installed outside a checkout."""
    root = repo_root()
    return (root / rel) if root is not None else Path(rel).resolve()
