"""The library's layout (issue 26): no import cycles, no oversized module, checkpoints that survive moves
(docs/library.md maps every module; tests/test_docs.py keeps that map equal to the files).

The import graph counts every ``import`` of a ``bianet_lib`` module anywhere in a module's source,
including imports inside functions: a lazy import hides a cycle from Python's import machinery,
not from a reader, who still has to understand both modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bianet_lib

PACKAGE_DIR = Path(bianet_lib.__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
#: Modules allowed above MAX_LINES, each with its reason.
LONG_MODULES: dict[str, str] = {
    "bianet_lib/viz.py": "one independent plotting function per figure kind of the course, plus the shared style",
}
MAX_LINES = 600


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package at ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Edges ``module -> modules of the same package it imports`` (top level or in functions)."""
    files = module_files(package_dir)
    top = package_dir.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # "import bianet_lib.x.y.f": the deepest module named
                    t = t.rpartition(".")[0]
                if t and t.split(".")[0] == top and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_library_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles in bianet_lib (each line one cycle):\n" + "\n".join(map(" <-> ".join, found))


def test_a_planted_cycle_is_found(tmp_path):
    pkg = tmp_path / "bianet_lib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""pkg"""\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from bianet_lib.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import g\n    return g\n")
    (pkg / "sub" / "c.py").write_text("import bianet_lib.a\n\ndef g():\n    pass\n")
    (pkg / "d.py").write_text("from bianet_lib.a import nothing_cyclic\n")
    assert cycles(import_graph(pkg)) == [["bianet_lib.a", "bianet_lib.sub.b", "bianet_lib.sub.c"]]
    (pkg / "sub" / "c.py").write_text("def g():\n    pass\n")
    assert cycles(import_graph(pkg)) == []


def test_no_module_is_too_long_without_a_reason():
    long = {p.relative_to(ROOT).as_posix(): n for p in PACKAGE_DIR.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = sorted(set(long) - set(LONG_MODULES))
    assert not unexplained, f"modules over {MAX_LINES} lines without a reason in LONG_MODULES: " + \
        ", ".join(f"{m} ({long[m]} lines)" for m in unexplained)
    stale = sorted(set(LONG_MODULES) - set(long))
    assert not stale, f"LONG_MODULES lists modules that are no longer long: {stale}"


def _pickled_globals(path: Path) -> set[str]:
    """``module.name`` of every global a committed torch checkpoint's pickle refers to."""
    import io
    import pickletools
    import zipfile

    from bianet_lib.engine import safeio

    data = path.read_bytes()
    if data.startswith(safeio.MAGIC):
        data = data[len(safeio.MAGIC) + safeio._HEADER.size:]
    archive = zipfile.ZipFile(io.BytesIO(data))
    found, strings = set(), []
    for name in archive.namelist():
        if not name.endswith("data.pkl"):
            continue
        for op, arg, _ in pickletools.genops(archive.read(name)):
            if op.name == "GLOBAL":
                found.add(arg.replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
    return found


def test_committed_checkpoints_name_only_modules_that_exist():
    """Old checkpoints keep loading after a move: a pickle that names a ``bianet_lib`` class must
    find it where it names it (today none does: checkpoints hold tensors and plain dicts)."""
    import importlib

    checked = 0
    for path in sorted((ROOT / "results").rglob("*.pt")):
        refs = _pickled_globals(path)
        assert "torch._utils._rebuild_tensor_v2" in refs  # the scanner reads the pickle's globals
        for ref in refs:
            module, _, name = ref.rpartition(".")
            if module.split(".")[0] == "bianet_lib":
                assert hasattr(importlib.import_module(module), name), f"{path}: pickles {ref}, which is gone"
        checked += 1
    assert checked >= 2  # the two course runs at least
