"""Which code made a run: a hash of the relevant library source, recorded in every run folder.

``Trainer.fit`` writes ``provenance.json`` beside ``config.yaml`` (:func:`write_provenance`).
It holds:

* ``code_hash``: one SHA-256 over ``modules``, the hashes of every ``bianet_lib`` module that can
  change a run's numbers. "Relevant" is decided by imports, not by a hand list: the modules
  reachable from :data:`ROOTS` (the trainer, the evaluation that writes ``results.json``) by
  ``import`` statements anywhere in their source, so a new module the model starts to import
  counts at once, while notebooks, the README, the command-line parsers, the experiment grid
  driver and the benchmark do not. Each module is hashed on its syntax tree with docstrings
  removed (comments and formatting are not in the tree), so rewording a docstring, a comment or
  re-wrapping lines does not invalidate a result; any change of code does, even one that
  happens not to change the numbers: the maintainer then regenerates, or certifies the change
  with ``bianet provenance certify`` (:mod:`bianet_lib.engine.equivalence`), which reruns a
  battery of the committed configurations with the old and the new code and records the two
  hashes as equivalent only when every number agrees.
* ``config_schema``: a hash of the config fields (name, type, default) and the field list, so
  a committed ``config.yaml`` can be checked against what the current code would write.
* ``determinism``: what pins the numbers on a machine: the seed, the torch thread count
  actually used (``num_threads: 0`` in the config means "torch's default", which is the number
  of physical cores and so varies between machines; the course pins 2 in the Makefile),
  whether deterministic algorithms were on, the device type.
* ``versions``: python, torch, numpy (recorded, not compared: different builds legitimately
  change the last bits of float results, which ``make verify-course`` measures).

:func:`check_run` compares a committed run folder, :func:`check_provenance` a results record
carrying a ``provenance`` key, with what the current code would write and return the
differences in words (an empty list when they agree). Python's ``ast.dump`` format is stable
within a minor version; the project pins Python 3.11.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import platform
from pathlib import Path

import bianet_lib

PROVENANCE = "provenance.json"
#: Modules whose import closure decides a run's numbers: the data (SynthVox worlds, VoxCeleb
#: loading), training and the evaluation protocols.
ROOTS = ("bianet_lib.data.sources", "bianet_lib.engine.trainer", "bianet_lib.engine.protocols", "bianet_lib.engine.evaluate")
#: Imported by the trainer but never changes a number: this module records, it does not compute.
EXCLUDED = ("bianet_lib.engine.provenance",)
PACKAGE_DIR = Path(bianet_lib.__file__).resolve().parent


def _module_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    parts = name.split(".")[1:]
    base = package_dir.joinpath(*parts) if parts else package_dir
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.AST, module: str) -> set[str]:
    """``bianet_lib`` modules imported anywhere in ``tree`` (top level or inside functions)."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bianet_lib"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = package.split(".")[: max(1, len(package.split(".")) - node.level + 1)]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != "bianet_lib":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # "from bianet_lib import metrics"
    return found


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
    return tree


_NEW_FIELDS = frozenset({"type_params"})  # added by Python 3.12 (PEP 695); empty unless used


def canonical_dump(node) -> str:
    """The syntax tree as Python 3.11's ``ast.dump(node, annotate_fields=False)`` writes it, on any
    Python: 3.12 adds an empty ``type_params`` to every function and class and 3.13 drops empty
    fields from ``ast.dump``, either of which would change every hash (and fail every committed run)
    on a newer interpreter though the code is the same."""
    if isinstance(node, ast.AST):
        cls, args, keywords = type(node), [], False
        for name in node._fields:
            try:
                value = getattr(node, name)
            except AttributeError:
                keywords = True
                continue
            if name in _NEW_FIELDS and not value:
                continue
            if value is None and getattr(cls, name, ...) is None:  # an optional field left out
                keywords = True
                continue
            text = canonical_dump(value)
            args.append(f"{name}={text}" if keywords else text)
        return f"{cls.__name__}({', '.join(args)})"
    if isinstance(node, list):
        return "[" + ", ".join(canonical_dump(x) for x in node) + "]"
    return repr(node)


def source_hash(source: str) -> str:
    """SHA-256 of the docstring-free syntax tree of ``source`` (comments and layout ignored; the
    same on Python 3.10-3.13, see ``canonical_dump``)."""
    tree = _strip_docstrings(ast.parse(source))
    return hashlib.sha256(canonical_dump(tree).encode()).hexdigest()


def relevant_modules(roots: tuple[str, ...] = ROOTS, package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every ``bianet_lib`` module reachable from ``roots`` by imports, with its file."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in EXCLUDED:
            continue
        path = _module_file(name, package_dir)
        if path is None:  # "from bianet_lib.x import some_function": not a module
            continue
        seen[name] = path
        # a submodule import runs its packages' __init__ first
        parents = [".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))]
        todo += parents + sorted(_imported(ast.parse(path.read_text()), name if path.name != "__init__.py"
                                           else name + ".__init__"))
    return dict(sorted(seen.items()))


def code_hashes(roots: tuple[str, ...] = ROOTS, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``{path relative to the package's parent: source_hash}`` of the relevant modules."""
    out = {}
    for path in relevant_modules(roots, package_dir).values():
        out[path.relative_to(package_dir.parent).as_posix()] = source_hash(path.read_text())
    return out


def combined_hash(modules: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(modules, sort_keys=True).encode()).hexdigest()


def config_schema() -> dict:
    """The config's fields as the current code defines them, and their hash."""
    from bianet_lib.config import BIANetConfig

    fields = []
    for f in dataclasses.fields(BIANetConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        fields.append([f.name, str(f.type), repr(default)])
    digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()
    return {"hash": digest, "fields": [f[0] for f in fields]}


def provenance_record(cfg) -> dict:
    """What :func:`write_provenance` stores for a run of ``cfg`` (a config or its ``to_dict()``)
    trained by this process."""
    import numpy as np
    import torch

    values = cfg if isinstance(cfg, dict) else cfg.to_dict()
    modules = code_hashes()
    return {
        "code_hash": combined_hash(modules),
        "modules": modules,
        "config_schema": config_schema()["hash"],
        "determinism": {
            "seed": values.get("seed"),
            "num_threads_config": values.get("num_threads"),
            "num_threads_used": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "device": str(values.get("device")),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }


def write_provenance(run_dir: str | Path, cfg) -> Path:
    """Write ``run_dir/provenance.json`` for a run of ``cfg`` (call after the thread count is set)."""
    from bianet_lib.engine.safeio import atomic_write_text

    path = Path(run_dir) / PROVENANCE
    atomic_write_text(path, json.dumps(provenance_record(cfg), indent=2) + "\n")
    return path


def check_provenance(stored: dict, config: dict | None = None, certificates: list[dict] | None = None) -> list[str]:
    """Differences between a stored provenance record (and the run's config, when given) and
    what the current code would write; an empty list when they agree.

    ``certificates`` (:mod:`bianet_lib.engine.equivalence`) make a record of certified-equal code
    agree: its code hash and config schema may be any hash connected to the current one. With a
    certified older schema, fields the record's config does not have are not differences (the
    certificate's battery ran exactly such configs under the current code)."""
    from bianet_lib.config import BIANetConfig
    from bianet_lib.engine.equivalence import equivalent_hashes

    certificates = certificates or []
    problems = []
    current = code_hashes()
    if stored.get("code_hash") not in equivalent_hashes(combined_hash(current), certificates):
        old = stored.get("modules", {})
        changed = sorted(m for m in set(old) | set(current) if old.get(m) != current.get(m))
        problems.append(f"code differs from the code that made it in {', '.join(changed) or 'the combined hash'}"
                        " (and no certificate makes them equivalent)")
    schema = config_schema()["hash"]
    if stored.get("config_schema") not in equivalent_hashes(schema, certificates, "config_schema"):
        problems.append("config schema (fields, types or defaults) changed since it was made")
    if config is not None:
        try:
            rewritten = BIANetConfig.from_dict(dict(config)).to_dict()
        except (TypeError, ValueError) as exc:
            problems.append(f"its config no longer loads: {exc}")
        else:
            keys = set(config) | set(rewritten)
            if stored.get("config_schema") != schema:  # certified older schema: its own fields only
                keys = set(config)
            diff = sorted(k for k in keys if config.get(k, "<absent>") != rewritten.get(k, "<absent>"))
            if diff:
                problems.append(f"its config differs from what the current code writes in {', '.join(diff)}")
    return problems


def check_run(run_dir: str | Path, certificates: list[dict] | None = None) -> list[str]:
    """:func:`check_provenance` for a run folder (``provenance.json`` + ``config.yaml``).

    Raises ``FileNotFoundError`` when the run has no ``provenance.json``.
    """
    import yaml

    run_dir = Path(run_dir)
    stored = json.loads((run_dir / PROVENANCE).read_text())
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    return check_provenance(stored, config, certificates)
