"""Provenance: which code made a run, and whether the committed runs were made by today's code.

``test_committed_runs_match_current_code`` is the guard: every committed run (a course run
folder under results/course/, a results JSON under results/experiments/) must carry provenance
that agrees with what the current code would write, or be listed in ALLOWED_WITHOUT_PROVENANCE
with the reason. A listed pattern whose runs all carry provenance fails too, so the list only
shrinks.
"""

from __future__ import annotations

import json
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
import yaml
from helpers import random_split, tiny_config

from bianet_lib.engine import provenance as pv
from bianet_lib.engine.equivalence import CERTIFICATES as CERTIFICATES_FILE
from bianet_lib.engine.equivalence import load_certificates
from bianet_lib.engine.safeio import read_checkpoint
from bianet_lib.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
#: Number-equivalence certificates (bianet_lib.engine.equivalence): code changes certified not to
#: change the committed runs' numbers.
CERTIFICATES = load_certificates(ROOT / CERTIFICATES_FILE)

#: Committed runs that predate provenance: pattern -> (reason, the commits that made them, as
#: their results record names them). A run made later without provenance is not excused, so
#: regenerating results with a writer that does not record provenance fails here. Remove an
#: entry once its runs are regenerated (the test then insists on it).
ALLOWED_WITHOUT_PROVENANCE: dict[str, tuple[str, set[str]]] = {}
# (The first version's grid, results/experiments/cpu/*.json, was the last entry: made on the inert
# model before records carried provenance, it was removed; its README says where it is in history.)


def test_hash_ignores_docstrings_comments_and_layout_not_code():
    base = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    same = 'def f(x):\n    """Reworded doc, longer."""\n\n    # a new comment\n    return (x +\n            1)\n'
    other = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert pv.source_hash(base) == pv.source_hash(same)
    assert pv.source_hash(base) != pv.source_hash(other)
    assert pv.source_hash('"""Module doc."""\nA = 1\n') == pv.source_hash("A = 1\n")


def test_relevant_modules_are_what_can_change_a_runs_numbers():
    names = set(pv.relevant_modules())
    for needed in ("bianet_lib.engine.trainer", "bianet_lib.model.network", "bianet_lib.model.losses", "bianet_lib.model.attention",
                   "bianet_lib.model.affinity", "bianet_lib.model.encoders", "bianet_lib.config", "bianet_lib.model.counterfactual",
                   "bianet_lib.data.sources", "bianet_lib.data.synthvox", "bianet_lib.engine.evaluate",
                   "bianet_lib.engine.protocols", "bianet_lib.engine.metrics", "bianet_lib.engine.scoring"):
        assert needed in names, needed
    for unrelated in ("bianet_lib.engine.provenance", "bianet_lib.course", "bianet_lib.viz", "bianet_lib.experiments.grids",
                      "bianet_lib.engine.bench", "bianet_lib.cli", "bianet_lib.commands.train"):
        assert unrelated not in names, unrelated


def test_import_closure_follows_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "bianet_lib"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "root.py": "from bianet_lib.a import x\n\ndef g():\n    from bianet_lib.sub import b\n",
        "a.py": "x = 1\n",
        "sub/__init__.py": "",
        "sub/b.py": "from . import c\n",
        "sub/c.py": "",
        "unused.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    found = set(pv.relevant_modules(("bianet_lib.root",), pkg))
    assert found == {"bianet_lib", "bianet_lib.root", "bianet_lib.a", "bianet_lib.sub", "bianet_lib.sub.b",
                     "bianet_lib.sub.c"}
    before = pv.combined_hash(pv.code_hashes(("bianet_lib.root",), pkg))
    (pkg / "unused.py").write_text("y = 2\n")
    (pkg / "sub" / "c.py").write_text('"""Only a docstring."""\n')
    assert pv.combined_hash(pv.code_hashes(("bianet_lib.root",), pkg)) == before
    (pkg / "sub" / "c.py").write_text("z = 3\n")
    assert pv.combined_hash(pv.code_hashes(("bianet_lib.root",), pkg)) != before


def _tiny_run(run_dir: Path) -> Path:
    train, val = random_split(8, 3), random_split(4, 2, seed=1, name="val")
    Trainer(tiny_config(epochs=2), train, val, run_dir, progress=False).fit()
    return run_dir


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of the same tiny command (shared by the tests below: training is the cost)."""
    root = tmp_path_factory.mktemp("runs")
    return _tiny_run(root / "a"), _tiny_run(root / "b")


def test_trainer_records_provenance_and_repeats_bit_for_bit(tiny_runs):
    a, b = tiny_runs
    record = json.loads((a / pv.PROVENANCE).read_text())
    assert record["code_hash"] == pv.combined_hash(pv.code_hashes())
    assert record["determinism"]["num_threads_used"] == 1 == record["determinism"]["num_threads_config"]
    assert (a / pv.PROVENANCE).read_bytes() == (b / pv.PROVENANCE).read_bytes()
    assert pv.check_run(a) == []
    # same command, same machine: identical weights and metrics (wall times aside)
    wa, wb = (read_checkpoint(d / "best.pt")["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "best.pt").read_bytes() == (b / "best.pt").read_bytes()
    # the whole metrics.jsonl: wall times live apart, in timing.jsonl (ignored by git)
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert len((a / "metrics.jsonl").read_text().splitlines()) == 2
    timing = [json.loads(line) for line in (a / "timing.jsonl").read_text().splitlines()]
    assert [t["epoch"] for t in timing] == [1, 2] and all(t["seconds"] > 0 for t in timing)
    # a results record names its code by content, not by time or commit: two writes, same bytes
    from bianet_lib.engine.evaluate import results_record

    r1, r2 = (json.dumps(results_record({"acc": 0.5}, {"seed": 0}, 0)) for _ in range(2))
    assert r1 == r2 and json.loads(r1)["code"]["code_hash"] == pv.combined_hash(pv.code_hashes())


def test_check_run_names_changed_modules_and_config_drift(tmp_path, tiny_runs):
    run = shutil.copytree(tiny_runs[0], tmp_path / "run")
    record = json.loads((run / pv.PROVENANCE).read_text())
    record["modules"]["bianet_lib/model/losses.py"] = "0" * 64
    record["code_hash"] = pv.combined_hash(record["modules"])
    (run / pv.PROVENANCE).write_text(json.dumps(record))
    problems = pv.check_run(run)
    assert len(problems) == 1 and "bianet_lib/model/losses.py" in problems[0] and "train.py" not in problems[0]

    shutil.copy(run / pv.PROVENANCE, tmp_path / "keep.json")
    (run / pv.PROVENANCE).write_text(json.dumps(pv.provenance_record(tiny_config())))
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["select_route"]  # what an older code version wrote
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert pv.check_run(run) == ["its config differs from what the current code writes in select_route"]


def _commit(record: dict | None) -> str | None:
    return ((record or {}).get("code") or {}).get("git_commit")


def committed_runs() -> dict[str, tuple[dict | None, dict | None, str | None]]:
    """``{relative path: (provenance, config, git commit of its results record)}`` of every
    committed run: run folders under results/course, results records under results/experiments."""
    runs = {}
    for d in sorted((ROOT / "results" / "course").glob("*")):
        if (d / "config.yaml").is_file() or (d / "results.json").is_file():  # a run folder
            prov = d / pv.PROVENANCE
            config = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else None
            results = json.loads((d / "results.json").read_text()) if (d / "results.json").is_file() else None
            runs[d.relative_to(ROOT).as_posix()] = (json.loads(prov.read_text()) if prov.is_file() else None,
                                                    config, _commit(results))
    for f in sorted((ROOT / "results" / "experiments").rglob("*.json")):
        record = json.loads(f.read_text())
        if isinstance(record, dict) and "metrics" in record:  # a run's results record
            runs[f.relative_to(ROOT).as_posix()] = (record.get("provenance"), record.get("config"), _commit(record))
    return runs


def excused(path: str, commit: str | None) -> bool:
    return any(fnmatch(path, pattern) and commit in commits
               for pattern, (_, commits) in ALLOWED_WITHOUT_PROVENANCE.items())


def test_committed_runs_match_current_code():
    runs = committed_runs()
    problems, missing = [], []
    for path, (prov, config, commit) in runs.items():
        if prov is None:
            if not excused(path, commit):
                missing.append(f"{path} (made at {commit})")
            continue
        problems += [f"{path}: {p}" for p in pv.check_provenance(prov, config, CERTIFICATES)]
    stale = [pattern for pattern in ALLOWED_WITHOUT_PROVENANCE
             if not any(fnmatch(p, pattern) and prov is None and excused(p, commit)
                        for p, (prov, _, commit) in runs.items())]
    regenerate = ("regenerate them with the current code: `make course` for results/course (then "
                  "`make verify-course`), `make experiments` for results/experiments, and commit the results; "
                  "or, if the change cannot alter a number, certify it: `bianet provenance certify <the commit "
                  "that made them> --record`")
    assert not problems, "committed results were made by other code than the current one; " + regenerate + \
        ":\n" + "\n".join(problems)
    assert not missing, "committed runs without provenance (results records must carry it; not excused by " \
        "ALLOWED_WITHOUT_PROVENANCE): " + ", ".join(missing)
    assert not stale, f"no run matching {stale} is excused any more: remove these ALLOWED_WITHOUT_PROVENANCE entries"


def test_committed_run_check_fails_for_a_run_made_by_other_code(tmp_path, monkeypatch, tiny_runs):
    """The guard itself: a committed-looking run whose recorded code differs is reported."""
    run = shutil.copytree(tiny_runs[0], tmp_path / "results" / "course" / "r")
    record = json.loads((run / pv.PROVENANCE).read_text())
    record["modules"]["bianet_lib/model/network.py"] = "f" * 64
    record["code_hash"] = pv.combined_hash(record["modules"])
    (run / pv.PROVENANCE).write_text(json.dumps(record))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    runs = committed_runs()
    assert list(runs) == ["results/course/r"]
    prov, config, _ = runs["results/course/r"]
    assert "bianet_lib/model/network.py" in pv.check_provenance(prov, config)[0]
    assert not excused("results/course/r", None) and not excused("results/course/r", "0" * 40)
    # the course runs carry provenance now: a course run of an old commit is no longer excused,
    # while a grid record of one of the grid's listed commits still is
    assert not excused("results/course/r", "7caac970d2b5a7cc270d8182670329629d8bf137")
    monkeypatch.setitem(ALLOWED_WITHOUT_PROVENANCE, "results/experiments/old/*.json",
                        ("an old grid", {"0297c75699b9a83e9feafd186fcab0d43033cad3"}))
    assert excused("results/experiments/old/x.json", "0297c75699b9a83e9feafd186fcab0d43033cad3")
    assert not excused("results/experiments/old/x.json", "0" * 40)



def test_code_hash_is_the_same_on_every_python():
    """Python 3.12 adds an empty ``type_params`` field to functions and classes (and 3.13 drops
    empty fields from ``ast.dump``): the canonical dump leaves them out, so committed runs still
    match their code on a newer interpreter. On 3.11 it equals ``ast.dump`` exactly."""
    import ast
    import sys

    from bianet_lib.engine.provenance import PACKAGE_DIR, canonical_dump

    src = "def f(a, *, b=None) -> int:\n    return a if b is None else b\nclass C(object):\n    x: int = 1\n"
    tree = ast.parse(src)
    if sys.version_info[:2] == (3, 11):
        for path in sorted(PACKAGE_DIR.rglob("*.py")):
            t = ast.parse(path.read_text())
            assert canonical_dump(t) == ast.dump(t, annotate_fields=False), path
    fn = tree.body[0]
    # a 3.12-shaped FunctionDef: the same fields plus an empty type_params at the end
    fields = tuple(f for f in type(fn)._fields if f != "type_params") + ("type_params",)
    newer = type("FunctionDef", (ast.AST,), {"_fields": fields, "returns": None, "type_comment": None})()
    for name in fields:
        setattr(newer, name, getattr(fn, name, []))
    newer.type_params = []
    assert canonical_dump(newer) == canonical_dump(fn)
    newer.type_params = [ast.Name("T")]  # a function that does use type parameters is different code
    assert canonical_dump(newer) != canonical_dump(fn)
    assert "kind" not in canonical_dump(ast.parse("x = 1"))  # optional None fields left out as 3.11 does
