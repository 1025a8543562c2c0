"""The ``bianet`` command: one sub-command per module in ``bianet_lib.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Bad input raises :class:`UsageError` (or argparse rejects it): one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


class UsageError(Exception):
    """A wrong flag, value or file given on the command line."""


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
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"bianet {args.command}: error: {exc}", file=sys.stderr)
        return 2
