"""Prove that the suite sees a training regression: plant one, retrain, run the guards.

    .venv/bin/python tests/planted_regression.py            # BIANet run retrained, ~6 min on 2 cores
    .venv/bin/python tests/planted_regression.py --both     # both course runs (~12 min)
    .venv/bin/python tests/planted_regression.py --control  # same, no plant: nbval must pass

Nothing in the repository is touched. The library is copied to a temporary folder and the
plant is appended there to ``bianet_lib/model/losses.py``: the metric loss (InfoNCE in ``cpu-small``)
is halved, a plausible slip (a wrong weight or a mean instead of a sum) that trains without any
error and only shows in the trained numbers. The course run(s) are retrained with that copy
exactly as ``make course-runs`` does (``--set num_threads=1``) into the temporary folder, and:

1. ``provenance.check_run`` on the fresh run, against the repository's code, must name
   ``bianet_lib/model/losses.py`` (the provenance test's message when such a run is committed);
2. nbval runs notebooks 02-06 with ``$BIANET_COURSE_RUNS`` pointing at the fresh runs (the
   planted library first on ``PYTHONPATH``): the checked cells that print trained results must
   fail. ``--control`` skips the plant: then nbval must pass, which shows that the committed
   outputs are reproducible on this machine and that the failure is the plant's.

Exit 0 when the guards behave as stated (planted: nbval fails and provenance names losses.py;
control: nbval passes), 1 otherwise. Meaningful only once the committed course runs and
notebook outputs were made by the current code (``tests/test_provenance.py`` passing strictly).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANT = '''

# --- PLANTED REGRESSION (tests/planted_regression.py): the metric loss is halved -----------
_unplanted_metric_loss = metric_loss


def metric_loss(*args, **kwargs):
    return 0.5 * _unplanted_metric_loss(*args, **kwargs)
'''
RUNS = {"bianet-cpu-small": [], "baseline-cpu-small": ["--set", "use_pia=false", "--set", "use_nia=false"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--both", action="store_true", help="retrain the baseline too (else the committed one is used)")
    parser.add_argument("--control", action="store_true", help="no plant: nbval must pass")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--threads", type=int, default=1, help="num_threads of the runs (the Makefile's 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for the retrained runs (only to try the plumbing quickly, "
                             "e.g. --set epochs=1: such runs fail nbval with or without a plant)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bianet-planted-"))
    lib = work / "lib"
    shutil.copytree(ROOT / "bianet_lib", lib / "bianet_lib", ignore=shutil.ignore_patterns("__pycache__"))
    if not args.control:
        with open(lib / "bianet_lib" / "losses.py", "a") as fh:
            fh.write(PLANT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lib), str(ROOT)]), "OMP_NUM_THREADS": str(args.threads),
           "BIANET_COURSE_RUNS": str(work / "runs"), "BIANET_FIGURES_DIR": str(work / "figures"),
           "BIANET_TREE_CHECK": "off"}
    print(f"== {'control (no plant)' if args.control else 'planted: metric loss x 0.5'}; work folder {work}")
    for name, extra in RUNS.items():
        if name != "bianet-cpu-small" and not args.both:
            shutil.copytree(ROOT / "results" / "course" / name, work / "runs" / name)
            print(f"== {name}: the committed run")
            continue
        start = time.time()
        cmd = [sys.executable, "-m", "bianet_lib", "train", "--preset", "cpu-small", "--no-progress",
               "--set", f"num_threads={args.threads}", *extra, *[x for kv in args.set for x in ("--set", kv)],
               "--run-dir", str(work / "runs" / name)]
        if subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"== training {name} failed (its error is above); work folder {work}")
            return 2
        print(f"== {name}: retrained in {time.time() - start:.0f} s")

    ok = True
    sys.path.insert(0, str(ROOT))  # the repository's code judges the fresh run
    from bianet_lib.engine.provenance import check_run

    problems = check_run(work / "runs" / "bianet-cpu-small")
    print("== provenance against the repository's code:", problems or "agrees")
    if not args.control and not any("bianet_lib/model/losses.py" in p for p in problems):
        print("FAIL: provenance did not name bianet_lib/model/losses.py")
        ok = False

    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("0[2-6]_*.ipynb"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "--nbval-lax",
           "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", *notebooks]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (.+?)(?: - .*)?$", proc.stdout, flags=re.M)
    print(f"== nbval on 02-06 against the fresh runs ({time.time() - start:.0f} s): exit {proc.returncode}, "
          f"{len(failed)} failed cell(s)")
    for f in failed:
        print("   ", f)
    if args.control and proc.returncode != 0:
        print("FAIL: nbval fails on runs retrained WITHOUT a plant: the committed outputs do not reproduce")
        print(proc.stdout[-3000:])
        ok = False
    if not args.control and proc.returncode == 0:
        print("FAIL: nbval passed on runs retrained with the planted regression")
        ok = False
    print("== PROOF OK" if ok else "== PROOF FAILED")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
