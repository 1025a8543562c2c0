"""``bianet gpu-check``: the prepared GPU check (``bianet_lib/engine/gpu_check.py``); one JSON report."""

from __future__ import annotations

from bianet_lib.engine.gpu_check import add_arguments, run  # noqa: F401 - the command's interface

HELP = "the prepared GPU check: tree, feature store, loader, step timing, short training, torchrun"
