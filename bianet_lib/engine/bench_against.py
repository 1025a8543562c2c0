"""The training step of another revision of this repository side by side with this code's
(``bianet bench --against REV``): each arm timed in a process of its own, the revision's library
extracted with ``git archive`` (no worktree left behind), rounds alternating the arms.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bianet_lib.engine.bench import aligned, bench_config

#: The commit whose training step issue 28's speed targets are ratios against: the code just
#: before its faster step (tests/fixtures/step_fingerprint.py wrote the step references there).
BEFORE_ISSUE_28 = "731df27"

#: What one timing process runs: the arm's code (``sys.argv[1]``, put first on the path) times
#: ``time_train_steps`` (every revision since the benchmark had it), or, for the bare encoders,
#: this revision's ``time_bare_encoders``; it prints the median and where the module came from.
_ARM_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
spec = json.loads(sys.argv[2])
import torch
torch.set_num_threads(spec["threads"])
from bianet_lib.engine import bench
cfg = bench.bench_config(spec["preset"], spec["device"], spec["overrides"])
if spec["kind"] == "encoders":
    out = bench.time_bare_encoders(cfg, spec["steps"], spec["warmup"])  # this code's only
else:
    out = bench.time_train_steps(cfg, spec["steps"], spec["warmup"])
print(json.dumps({"median_s": out["median_s"], "module": bench.__file__}))
"""


def _git(root: Path, *args: str, text: bool = True):
    import subprocess

    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=text)


def resolve_revision(rev: str, root: Path | None = None) -> str:
    """The full commit hash of ``rev`` in this repository; ValueError (one line) when git or the
    revision is missing."""
    import shutil

    root = root or Path(__file__).resolve().parents[2]
    if shutil.which("git") is None:
        raise ValueError("--against needs git (not found on PATH)")
    res = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if res.returncode:
        why = "no such commit" if _git(root, "rev-parse", "--git-dir").returncode == 0 else \
            f"{root} is not a git checkout (the comparison needs the repository's history)"
        raise ValueError(f"--against {rev}: {why}")
    return res.stdout.strip()


def _extract_library(commit: str, dest: Path, root: Path) -> None:
    """``bianet_lib`` as it was at ``commit``, written under ``dest`` (git archive, no worktree)."""
    import io
    import tarfile

    res = _git(root, "archive", "--format=tar", commit, "bianet_lib", text=False)
    if res.returncode:
        raise ValueError(f"--against {commit[:12]}: git archive failed: "
                         f"{res.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
        tar.extractall(dest, filter="data")


def against_revision(rev: str, preset: str = "cpu-small", device: str = "cpu",
                     overrides: list[str] | None = None, rounds: int = 4, steps: int = 8,
                     warmup: int = 2, threads: int = 1, progress: bool = True,
                     this_overrides: list[str] | None = None) -> dict:
    """The training step of revision ``rev`` of this repository side by side with this code's.

    Arms, each timed in its own process (``steps`` steps after ``warmup``, ``threads`` torch
    threads, one fixed synthetic batch of the preset's shapes): "revision" (``rev``'s
    ``Trainer.train_step``, its library extracted with git archive), "this" (this code's, the
    config as given), "nchw_eager" (this code's with ``channels_last`` and ``compile`` off) and
    "encoders" (this code's bare encoders, compiled when the config compiles). ``overrides`` go
    to every arm (the revision must know their fields), ``this_overrides`` after them to this
    code's arms only (e.g. ``compile=true``, a field older revisions lack). One process per arm
    per round, the arms' order rotated each round; each ratio (revision / arm) is the median of
    per-round ratios, so a machine that slows down between rounds moves both sides together."""
    import json
    import subprocess

    from tqdm import tqdm

    if rounds < 1 or steps < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"--against: rounds {rounds} and steps {steps} must be >= 1, warmup {warmup} >= 0, "
                         f"threads {threads} >= 1")
    root = Path(__file__).resolve().parents[2]
    commit = resolve_revision(rev, root)
    overrides, mine = list(overrides or []), [*(overrides or []), *(this_overrides or [])]
    cfg = bench_config(preset, device, mine)  # a bad override: one line, before any work
    threads = cfg.num_threads or threads  # the Trainer sets the config's own count
    with tempfile.TemporaryDirectory(prefix="bianet-against-") as tmp:
        _extract_library(commit, Path(tmp), root)
        arms = {"revision": (tmp, "train_step", overrides),
                "this": (str(root), "train_step", mine),
                "nchw_eager": (str(root), "train_step", [*mine, "channels_last=false", "compile=false"]),
                "encoders": (str(root), "encoders", mine)}
        times: dict[str, list[float]] = {a: [] for a in arms}
        modules = {}
        names = list(arms)
        with tqdm(total=rounds * len(arms), desc=f"against {commit[:7]}", disable=not progress,
                  unit="process") as bar:
            for r in range(rounds):
                for arm in names[r % len(names):] + names[:r % len(names)]:
                    where, kind, over = arms[arm]
                    spec = {"preset": preset, "device": device, "overrides": over, "kind": kind,
                            "steps": steps, "warmup": warmup, "threads": threads}
                    res = subprocess.run([sys.executable, "-c", _ARM_CHILD, where, json.dumps(spec)],
                                         capture_output=True, text=True, cwd=where)
                    if res.returncode:
                        last = (res.stderr.strip().splitlines() or ["no message"])[-1]
                        raise ValueError(f"--against {commit[:12]}: the {arm!r} arm failed: {last}")
                    out = json.loads(res.stdout.strip().splitlines()[-1])
                    times[arm].append(out["median_s"])
                    modules[arm] = out["module"]
                    bar.update()
    for arm, (where, *_rest) in arms.items():
        if not Path(modules[arm]).resolve().is_relative_to(Path(where).resolve()):
            raise RuntimeError(f"the {arm!r} arm imported {modules[arm]}, not the code under {where}")
    ratio = {a: statistics.median(x / y for x, y in zip(times["revision"], times[a], strict=True)) for a in arms}
    head = _git(root, "rev-parse", "HEAD")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "bianet_lib")
    from bianet_lib.engine.equivalence import machine_fingerprint

    fp = machine_fingerprint()
    return {"revision": rev, "revision_commit": commit,
            "this_commit": head.stdout.strip() if head.returncode == 0 else None,
            "this_has_uncommitted_library_changes": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
            "preset": preset, "device": device, "overrides": overrides,
            "this_overrides": list(this_overrides or []), "threads": threads,
            "config": {k: getattr(cfg, k) for k in ("batch_size", "channels_last", "compile", "amp")},
            "rounds": rounds, "steps": steps, "warmup": warmup,
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "cpu_capability": fp["torch_cpu"], "torch": fp["torch"],
                        "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
            "step_s": {a: statistics.median(t) for a, t in times.items()},
            "per_round_s": times,
            "revision_over": ratio,
            "statistic": f"per arm the median over {rounds} processes of each process's median of {steps} "
                         f"steps after {warmup} warm-up; ratios: medians of per-round ratios"}


def format_against(result: dict) -> str:
    """The side-by-side result as aligned text (what ``bianet bench --against`` prints)."""
    batch = result["config"]["batch_size"]
    lines = [("arm", "code", "step s", "samples/s", "revision / arm")]
    for arm, t in result["step_s"].items():
        code = result["revision_commit"][:7] if arm == "revision" else "this"
        lines.append((arm, code, f"{t:.3f}", f"{batch / t:.0f}", f"{result['revision_over'][arm]:.2f}"))
    return aligned(lines)
