"""Number-equivalence certificates: code that changed but computes the same numbers.

Every committed run records the hash of the code that made it (:mod:`bianet_lib.engine.provenance`),
and the test suite refuses a committed run whose hash is not the current code's. A change that
moves code, breaks an import cycle or adds a check changes that hash without changing a number;
retraining every committed run for it (the test-bed grid alone is 85 runs, 1,207 worker-minutes)
is out of proportion. Instead the change is *certified*:

``bianet provenance certify REV`` runs one battery of short training runs twice, once with the
library of git revision ``REV`` and once with the working tree, and compares them bit for bit. The
battery has one case per distinct configuration among the committed runs (:func:`battery_cases`),
shrunk to a tiny world and two epochs (:data:`SHRINK`), each trained and evaluated by the
``bianet train`` command of that version in a fresh world cache, so world generation, training,
checkpoint selection and the test protocols all run. A case's digest covers every number of its
``metrics.jsonl``, the test metrics of ``results.json`` and every tensor of ``best.pt`` and
``latest.pt`` (weights and optimiser state). Only when every digest agrees is a certificate
appended to ``results/code-equivalence.json``: the two code hashes (and config schemas) are
equivalent. :func:`equivalent_hashes` follows the certificates, so a run made by certified-equal
code still matches.

What a certificate cannot see: code paths that no committed configuration reaches in two epochs
on a tiny world (for example a branch taken only after epoch 10), and float differences that a
tiny world happens not to expose. It is a regression test of the committed configurations, not a
proof; a change meant to alter numbers must retrain instead (the certificate would fail anyway).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Where the certificates live, relative to the repository root.
CERTIFICATES = Path("results") / "code-equivalence.json"

#: Applied to every committed configuration to make a battery case (same code paths, tiny sizes).
SHRINK = {
    "epochs": 2, "seed": 0, "world_seed": 0,
    "world_n_train": 8, "world_n_val": 4, "world_n_test": 4,
    "world_per_id_train": 2, "world_per_id_eval": 2,
    "batch_size": 4, "num_threads": 1, "device": "cpu", "loader_workers": 0,
}
#: Narrower layers for the small encoders (the paper's ResNet-18 / SE-ResNet keep their widths).
SHRINK_SMALL = {"face_widths": [8, 8, 16, 16], "audio_widths": [8, 8, 16, 16], "attn_channels": 8,
                "embed_dim": 16, "hidden_dim": 32}
#: The generated VoxCeleb-shaped tree the data=voxceleb cases read (made once, read by both versions).
VOX_TREE = dict(n_train=4, n_val=4, n_test=4, clips_per_id=2, faces_per_id=2, seconds=1.0, face_size=96,
                workers=1)
#: Keys of a run's files that record time or place, not numbers.
NOT_NUMBERS = {"wall", "seconds", "time", "elapsed", "provenance", "code", "versions", "config"}


def shrink(config: dict) -> dict:
    """The battery case of one committed configuration (sizes, not switches, are changed)."""
    case = dict(config)
    case.update(SHRINK)
    if case.get("face_encoder", "small") == "small" and case.get("audio_encoder", "small") == "small":
        case.update(SHRINK_SMALL)
        case["face_strides"] = list(case.get("face_strides", [1, 2, 2, 2]))
    case["batch_size"] = max(case["batch_size"], int(case.get("k", 2)))
    for key in ("cache_dir", "audio_root", "face_root", "face_weights"):
        case.pop(key, None)
    return case


def committed_configs(root: Path) -> dict[str, dict]:
    """``{path: config}`` of every committed run under ``root/results`` (run folders' config.yaml
    and results records carrying a config)."""
    import yaml

    found = {}
    results = Path(root) / "results"
    def scratch(path: Path) -> bool:  # a grid's unfinished run folder (git-ignored), not a committed run
        parts = path.relative_to(results).parts
        return len(parts) > 3 and parts[0] == "experiments" and parts[2] == "runs"

    for path in sorted(results.rglob("config.yaml")):
        if not scratch(path):
            found[path.relative_to(root).as_posix()] = yaml.safe_load(path.read_text())
    for path in sorted(results.rglob("*.json")):
        if scratch(path):
            continue
        try:
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and "metrics" in record and isinstance(record.get("config"), dict):
            found[path.relative_to(root).as_posix()] = record["config"]
    return found


def battery_cases(root: Path) -> dict[str, dict]:
    """``{case name: shrunk config}``: one case per distinct shrunk configuration, named by the
    first committed run (in path order) that has it."""
    cases, seen = {}, set()
    for path, config in committed_configs(root).items():
        case = shrink(config)
        key = json.dumps(case, sort_keys=True)
        if key not in seen:
            seen.add(key)
            cases[path] = case
    return cases


def battery_id(cases: dict[str, dict]) -> str:
    """A hash of the battery's definition (cases and shrink rules)."""
    return hashlib.sha256(json.dumps(cases, sort_keys=True).encode()).hexdigest()


# --- running a battery (the driver runs inside the version under test) ---------------------------
_DRIVER = r'''
import contextlib, hashlib, io, json, sys
from pathlib import Path
import torch
ROOT = Path(sys.argv[5]).resolve()
import bianet_lib
if Path(bianet_lib.__file__).resolve().parent != ROOT / "bianet_lib":
    sys.exit(f"imported {bianet_lib.__file__}, not the library under {ROOT}")
from bianet_lib.cli import main
if (ROOT / "bianet_lib" / "engine" / "safeio.py").exists():
    from bianet_lib.engine.safeio import read_checkpoint
else:  # the flat layout before 2026-12
    from bianet_lib.safeio import read_checkpoint

NOT_NUMBERS = set(json.loads(sys.argv[3]))

def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in sorted(x.items()) if k not in NOT_NUMBERS}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x

def tensors(h, x, name=""):
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(x, dict):
        for k in sorted(x, key=str):
            if k != "config":
                tensors(h, x[k], f"{name}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            tensors(h, v, f"{name}/{i}")
    else:
        h.update(f"{name}={x!r}".encode())

cases = json.loads(Path(sys.argv[1]).read_text())
out = {}
work = Path(sys.argv[2])
for name, config in cases.items():
    d = work / hashlib.sha256(name.encode()).hexdigest()[:12]
    d.mkdir(parents=True)
    config = dict(config, cache_dir=str(d / "cache"))
    (d / "config.yaml").write_text(json.dumps(config))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["train", "--config", str(d / "config.yaml"), "--run-dir", str(d / "run"), "--no-progress"])
    except ValueError as e:  # bad input an older CLI did not turn into exit code 2 (a world preset it lacks)
        print(f"case {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        rc = 2
    run = d / "run"
    if rc:
        out[name] = f"exit code {rc}"
        continue
    h = hashlib.sha256()
    for line in (run / "metrics.jsonl").read_text().splitlines():
        h.update(json.dumps(clean(json.loads(line)), sort_keys=True).encode())
    h.update(json.dumps(clean(json.loads((run / "results.json").read_text())), sort_keys=True).encode())
    for ckpt in ("best.pt", "latest.pt"):
        if (run / ckpt).exists():
            tensors(h, read_checkpoint(run / ckpt), ckpt)
    out[name] = h.hexdigest()
    print(json.dumps({"case": name, "digest": out[name]}), file=sys.stderr, flush=True)
strays = sorted(m.__file__ for name, m in list(sys.modules.items())
                if name.split(".")[0] == "bianet_lib" and getattr(m, "__file__", None)
                and not Path(m.__file__).resolve().is_relative_to(ROOT))
if strays:  # e.g. an editable install filling in modules the tree under test lacks
    sys.exit(f"modules imported from outside {ROOT}: {strays[:3]}")
Path(sys.argv[4]).write_text(json.dumps(out, indent=1, sort_keys=True))
'''


def run_battery(library_root: Path, cases: dict[str, dict], work: Path, progress: bool = False) -> dict[str, str]:
    """Digest of every case, trained by the ``bianet_lib`` found at ``library_root`` (a folder that
    holds ``bianet_lib/``), in a subprocess with one thread."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cases_file, out_file = work / "cases.json", work / "digests.json"
    cases_file.write_text(json.dumps(cases))
    env = dict(os.environ, PYTHONPATH=str(Path(library_root).resolve()), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    from tqdm import tqdm

    # -P and a neutral working folder: ``python -c`` would otherwise put the current folder (often
    # the repository, i.e. the *other* version) first on sys.path; the driver also refuses any
    # bianet_lib module imported from outside library_root (an editable install's finder)
    proc = subprocess.Popen([sys.executable, "-P", "-c", _DRIVER, str(cases_file), str(work / "runs"),
                             json.dumps(sorted(NOT_NUMBERS)), str(out_file), str(Path(library_root).resolve())],
                            env=env, text=True, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = []
    with tqdm(total=len(cases), desc=f"battery ({library_root})", disable=not progress, unit="case") as bar:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith('{"case"'):
                bar.update(1)
    if proc.wait():
        tail = "".join(lines[-5:]).strip()
        raise RuntimeError(f"battery with the library at {library_root} failed: {tail}")
    return json.loads(out_file.read_text())


def with_vox_tree(cases: dict[str, dict], tree: Path) -> dict[str, dict]:
    """Point the data=voxceleb cases at a generated tree (written once, read by both versions)."""
    vox = {n: c for n, c in cases.items() if c.get("data") == "voxceleb"}
    if not vox:
        return cases
    from bianet_lib.data.vox_tree import write_vox_tree

    if not (tree / "wav").exists():
        write_vox_tree(tree, **VOX_TREE)
    return {n: (dict(c, audio_root=str(tree / "wav"), face_root=str(tree / "faces"))
                if n in vox else c) for n, c in cases.items()}


# --- certificates ---------------------------------------------------------------------------------
def load_certificates(path: Path) -> list[dict]:
    """The certificates in ``path`` (an empty list when the file does not exist)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else []


def equivalent_hashes(current: str, certificates: list[dict], key: str = "code_hash") -> set[str]:
    """Every hash connected to ``current`` by certificates (``key``: "code_hash" or "config_schema"),
    ``current`` included."""
    edges: dict[str, set[str]] = {}
    for cert in certificates:
        a, b = cert["from"][key], cert["to"][key]
        edges.setdefault(a, set()).add(b)
        edges.setdefault(b, set()).add(a)
    seen, todo = {current}, [current]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def code_identity(library_root: Path) -> dict:
    """The code hash and config schema of the library at ``library_root`` (in a subprocess, so the
    old version's own provenance rules are used)."""
    root = Path(library_root).resolve()
    module = ("bianet_lib.engine.provenance" if (root / "bianet_lib" / "engine" / "provenance.py").exists()
              else "bianet_lib.provenance")  # the flat layout before 2026-12
    script = (f"import importlib, json\npv = importlib.import_module({module!r})\n"
              f"assert str(pv.PACKAGE_DIR) == {str(root / 'bianet_lib')!r}, pv.PACKAGE_DIR\n"
              "print(json.dumps({'code_hash': pv.combined_hash(pv.code_hashes()), "
              "'config_schema': pv.config_schema()['hash']}))")
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True, check=True,
                         cwd=root)
    return json.loads(out.stdout)


def export_revision(repo: Path, revision: str, dest: Path) -> str:
    """Write ``bianet_lib/`` as of ``revision`` into ``dest``; return the full commit id."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "bianet_lib"], cwd=repo, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return commit


#: What the driver records for a case whose config a version refuses as bad input (exit code 2):
#: an older revision that predates a config field cannot run a configuration that uses it.
REFUSED = "exit code 2"


def compare(old: dict[str, str], new: dict[str, str]) -> tuple[list[str], list[str]]:
    """(differing, not runnable): the cases whose digests differ or that failed in either version,
    and those the old version refused as bad input (a field it does not know) while the new one ran
    them. A case the new version cannot run always differs."""
    refused = sorted(n for n in new if old.get(n) == REFUSED and len(new[n]) == 64)
    differing = sorted(n for n in set(old) | set(new) if n not in refused and
                       (old.get(n) != new.get(n) or len(old.get(n, "")) != 64))
    return differing, refused


def certify(repo: Path, revisions: list[str], work: Path | None = None, limit: int | None = None,
            progress: bool = False) -> list[dict]:
    """Run the battery with the working tree's library once and with each revision's; return one
    certificate per revision (``"equal": False`` and the differing cases when they disagree; the
    cases a revision refuses as bad input are listed as ``"not_runnable"``, and a certificate with
    no comparable case is not equal). Writes nothing."""
    repo = Path(repo).resolve()
    cases = battery_cases(repo)
    if limit is not None:
        cases = dict(list(cases.items())[:limit])
    with tempfile.TemporaryDirectory(prefix="bianet-certify-") as tmp:
        tmp = Path(work) if work else Path(tmp)
        cases = with_vox_tree(cases, tmp / "vox")
        new = run_battery(repo, cases, tmp / "battery-new", progress)
        to = code_identity(repo)
        certs = []
        for i, revision in enumerate(revisions):
            commit = export_revision(repo, revision, tmp / f"old-{i}")
            old = run_battery(tmp / f"old-{i}", cases, tmp / f"battery-old-{i}", progress)
            differing, refused = compare(old, new)
            compared = len(cases) - len(refused)
            certs.append({
                "from": dict(code_identity(tmp / f"old-{i}"), revision=commit),
                "to": to,
                "equal": not differing and compared > 0,
                "differing": differing,
                "not_runnable": refused,
                "battery": battery_id(cases),
                "cases": {n: d for n, d in new.items() if n not in refused},
                "machine": machine_fingerprint(),
                "date": _dt.date.today().isoformat(),
            })
        return certs


def machine_fingerprint() -> dict:
    """What decides the last bits of a digest besides the code: the CPU's vector extensions as
    numpy detects them (numpy's AVX-512 and AVX2 kernels of sin, exp, ... differ in the last ulp,
    so a SynthVox world differs), the architecture and the numpy / torch builds."""
    import platform

    import numpy as np
    import torch

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return {"machine": platform.machine(), "simd": sorted(k for k, v in features.items() if v),
            "torch_cpu": torch.backends.cpu.get_cpu_capability(), "numpy": np.__version__,
            "torch": torch.__version__}


def append_certificate(path: Path, certificate: dict) -> None:
    """Add an *equal* certificate to the file at ``path`` (atomically)."""
    from bianet_lib.engine.safeio import atomic_write_text

    if not certificate.get("equal"):
        raise ValueError("only a certificate whose battery agreed can be recorded")
    certs = load_certificates(path)
    certs.append(certificate)
    atomic_write_text(Path(path), json.dumps(certs, indent=1) + "\n")
