"""The one error type for unusable input files, shared by the audio and face loaders."""

from __future__ import annotations


class BadInputError(Exception):
    """A file that cannot be used (corrupt, empty, silent, too short, ...).

    Callers skip the file and count ``reason`` in their skip report.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def broken_link_reason(path) -> str | None:
    """"dangling symlink" / "symlink loop" when ``path`` is a symlink that leads to no file."""
    import errno
    import os

    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        return "symlink loop" if exc.errno == errno.ELOOP else f"dangling symlink (to {os.readlink(path)})"
    return None


def ignore_sigint() -> None:
    """Pool initializer: a worker ignores Ctrl-C (which reaches the whole process group) and dies
    quietly on SIGTERM (the parent's SIGTERM handler, inherited by fork, would print a traceback
    when the pool is terminated), so the parent alone stops, in one line, and closes the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interruptible(results, poll_s: float = 0.2):
    """The results of a pool's ``imap``/``imap_unordered``, in order, waking every ``poll_s``
    so that Ctrl-C stops the parent at once. The kernel may deliver a process-wide SIGINT to one
    of the pool's helper threads; Python then raises KeyboardInterrupt in the main thread only
    when it next wakes, and a wait for the next result with no timeout sleeps through a whole
    job (measured: a Ctrl-C during world generation ignored for as long as a job ran). Any
    other iterable (the one-process path's ``map``) is passed through."""
    import multiprocessing

    if not hasattr(results, "next"):  # a plain iterator: no helper threads, nothing to wake
        yield from results
        return
    while True:
        try:
            yield results.next(timeout=poll_s)
        except multiprocessing.TimeoutError:
            continue
        except StopIteration:
            return
