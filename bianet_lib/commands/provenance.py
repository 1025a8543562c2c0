"""``bianet provenance``: certify that a code change computes the same numbers as a revision.

``bianet provenance certify REV [REV ...]`` runs the battery of :mod:`bianet_lib.engine.equivalence`
with the working tree's library once and with each revision's, prints each differing case, and with
``--record`` appends a certificate per revision to ``results/code-equivalence.json`` when every
number agrees. Exit code 0 when all agree, 1 when one differs, 2 for a bad revision or folder.
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
    c.add_argument("revisions", nargs="+", metavar="REV",
                   help="git revision(s) whose code made committed runs (e.g. commit ids)")
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
        certs = eq.certify(repo, args.revisions, limit=args.limit, progress=not args.no_progress)
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"revision: {(exc.stderr or b'').strip()[:200]!r}") from None
    rc = 0
    for revision, cert in zip(args.revisions, certs, strict=True):
        n = len(cert["cases"])
        skipped = f" ({len(cert['not_runnable'])} configurations it cannot run left out)" if cert["not_runnable"] else ""
        if not cert["equal"]:
            print(f"{revision}: {len(cert['differing'])} case(s) differ from the working tree{skipped}:")
            for name in cert["differing"]:
                print(f"  {name}")
            rc = 1
            continue
        print(f"{revision}: all {n} cases agree bit for bit{skipped}: code {cert['from']['code_hash'][:12]} == "
              f"{cert['to']['code_hash'][:12]} (working tree)")
        if args.record:
            eq.append_certificate(repo / eq.CERTIFICATES, cert)
            print(f"  certificate appended to {eq.CERTIFICATES}")
    return rc
