"""The ``bianet`` command: one sub-command per module in ``bianet_lib.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Every failure the user can act on is one line on stderr (no traceback), with an exit code that
says whose it is (docs/reliability.md, "Exit codes"):

* 2 (:data:`EXIT_USAGE`): the command line is wrong: a flag, a value, a config field, a path of
  the wrong kind, a run folder that already holds a run (:class:`UsageError`, or argparse).
* 3 (:data:`EXIT_ENVIRONMENT`): the machine failed the command: no space left, a read-only or
  forbidden folder, a broken symlink, a damaged file (:class:`EnvironmentFault`, or any
  ``OSError``), named with its path and cause.
* 130 / 143 (128 + signal number): stopped by SIGINT / SIGTERM at a safe point; the line says
  how to continue (``bianet train ... --resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import signal
import sys
import threading

COMMANDS = {
    "synth": "bianet_lib.commands.synth",
    "index": "bianet_lib.commands.index",
    "train": "bianet_lib.commands.train",
    "evaluate": "bianet_lib.commands.evaluate",
    "diagnose": "bianet_lib.commands.diagnose",
    "bench": "bianet_lib.commands.bench",
    "experiments": "bianet_lib.commands.experiments",
    "course": "bianet_lib.commands.course",
    "gpu-check": "bianet_lib.commands.gpu_check",
    "provenance": "bianet_lib.commands.provenance",
}


EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


class UsageError(Exception):
    """A wrong flag, value or file given on the command line."""


class EnvironmentFault(Exception):
    """The machine, not the command line: no space, read-only, a broken link, a damaged file."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (like SIGINT's KeyboardInterrupt): ``finally``
    blocks run, so locks are released and half-written temporary files removed."""


_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.ENOTDIR: "not a directory (a file is in the way)",
           errno.EISDIR: "is a folder", errno.ELOOP: "symlink loop", errno.ENOENT: "no such file or folder",
           errno.EIO: "input/output error", errno.EEXIST: "already exists"}


def describe_os_error(exc: OSError, path=None) -> str:
    """``PATH: cause`` of an OSError in plain words (the path from the error when not given)."""
    where = path if path is not None else exc.filename
    cause = _CAUSES.get(exc.errno) or exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is None and not exc.strerror and str(exc):
        return str(exc)  # an OSError raised with a whole message
    return f"{where}: {cause}" if where is not None else cause


def _torch_write_failure(exc: RuntimeError) -> str | None:
    """torch.save to a path reports a failed write (a full disk) as ``[enforce fail at
    inline_container.cc...]``; the one line to print instead, or None for other errors."""
    text = str(exc)
    if "inline_container" in text or "PytorchStreamWriter failed" in text:
        return f"writing a torch file failed ({text.strip().splitlines()[0][:160]}): no space left on device?"
    return None


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`Terminated` while a command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we want one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="bianet", description="BIANet course library command line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"bianet {args.command}"
    try:
        with _sigterm_raises():
            return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EnvironmentFault as exc:
        print(f"{name}: environment error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except OSError as exc:
        print(f"{name}: environment error: {' '.join(describe_os_error(exc).split())}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except RuntimeError as exc:
        line = _torch_write_failure(exc)
        if line is None:
            raise
        print(f"{name}: environment error: {line}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM (Terminated)
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        hint = getattr(args, "interrupt_hint", None)
        hint = hint() if callable(hint) else hint
        print(f"{name}: stopped by {signal.Signals(signum).name}" + (f"; {hint}" if hint else ""),
              file=sys.stderr)
        return 128 + int(signum)
