"""What the shared GPU boxes need: the library's syntax stays within Python 3.10-3.13 grammar,
and training on SynthVox imports nothing that such a box lacks (librosa, soundfile)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_source_parses_with_python_310_grammar():
    for path in sorted((ROOT / "bianet_lib").rglob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_training_imports_without_librosa_or_soundfile():
    code = ("import sys\n"
            "for name in ('librosa', 'soundfile', 'audioread', 'seaborn', 'papermill'):\n"
            "    sys.modules[name] = None  # importing any of them now raises ImportError\n"
            "import bianet_lib.engine.trainer, bianet_lib.cli, bianet_lib.data.loader, bianet_lib.data.store\n"
            "from bianet_lib.cli import build_parser\n"
            "build_parser()\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
