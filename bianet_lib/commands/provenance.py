"""``bianet provenance``: certify that a code change computes the same numbers as a revision.

``bianet provenance certify REV`` runs the battery of :mod:`bianet_lib.engine.equivalence` with
``REV``'s library and with the working tree's, prints each differing case, and with ``--record``
appends the certificate to ``results/code-equivalence.json`` when every number agrees. Exit code
0 when they agree, 1 when they differ, 2 for a bad revision or folder.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from bianet_lib.cli import UsageError

HELP = "certify that the working tree computes the committed runs' numbers exactly as a git revision"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("certify", help="run the battery with REV and the working tree, compare bit for bit")
    c.add_argument("revision", help="git revision whose code made the committed runs (e.g. a commit id)")
    c.add_argument("--repo", default=".", help="the repository root (default: the current folder)")
    c.add_argument("--record", action="store_true",
                   help="append the certificate to results/code-equivalence.json when every case agrees")
    c.add_argument("--limit", type=int, default=None, help="only the first N cases (a quick look; not recordable)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bianet_lib.engine import equivalence as eq

    repo = Path(args.repo)
    if not (repo / "results").is_dir() or not (repo / "bianet_lib").is_dir():
        raise UsageError(f"--repo {args.repo}: not the repository root (no results/ and bianet_lib/)")
    if args.record and args.limit is not None:
        raise UsageError("--record needs the whole battery: drop --limit")
    try:
        cert = eq.certify(repo, args.revision, limit=args.limit, progress=not args.no_progress)
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"revision {args.revision!r}: {(exc.stderr or b'').strip()[:200]!r}") from None
    n = len(cert["cases"])
    if not cert["equal"]:
        print(f"{len(cert['differing'])} of {n} cases differ between {args.revision} and the working tree:")
        for name in cert["differing"]:
            print(f"  {name}")
        return 1
    print(f"all {n} cases agree bit for bit: code {cert['from']['code_hash'][:12]} ({args.revision}) == "
          f"{cert['to']['code_hash'][:12]} (working tree)")
    if args.record:
        eq.append_certificate(repo / eq.CERTIFICATES, cert)
        print(f"certificate appended to {eq.CERTIFICATES}")
    return 0
