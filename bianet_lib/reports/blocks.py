"""Generated blocks in markdown files: a table between ``<!-- KIND: ARGS -->`` and ``<!-- /KIND -->``
is regenerated from committed results (``python -m bianet_lib.reports.blocks --docs .`` rewrites the
README and every page of docs/), and the tests check that every block equals what its renderer makes now.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bianet_lib.reports.diagnostics import health_markdown, results_markdown

#: A generated table in the README or a page of docs/: ``<!-- health-table: label=path, ... -->``
#: (diagnose JSON files) or ``<!-- results-table: label=path, ... -->`` (results.json files), closed
#: by ``<!-- /KIND -->``. ``<!-- calibration-table: FOLDER -->`` / ``<!-- testbed-table: FOLDER -->`` /
#: ``<!-- testbed-long-table: FOLDER -->``: the test-bed's calibration, grid and convergence-check
#: tables from a folder of run JSONs (bianet_lib.experiments.testbed). ``<!-- gpu-report: FILE -->``: the GPU
#: check's report (bianet_lib.engine.gpu_check.report_markdown); ``<!-- gpu-variants: FILE -->`` its
#: ``--train-variants`` report (variants_markdown). ``<!-- paper-vs-fixed-epochs: FOLDER -->``:
#: the epochs of the runs of bianet_lib.reports.paper_vs_fixed.RUNS under FOLDER. ``<!-- step-table: FILE -->``:
#: a ``bianet bench --table --out FILE`` result (:func:`step_table_markdown`). ``<!-- fair-calibration-table:
#: FOLDER -->`` / ``<!-- fair-table: FOLDER -->``: the fair test-bed's calibration and grid (bianet_lib.reports.fair). Paths are relative to the repository
#: root (:func:`doc_root`), wherever the block sits.
README_BLOCK = re.compile(r"<!-- (health-table|results-table|calibration-table|testbed-table|testbed-long-table"
                          r"|gpu-report|gpu-variants|paper-vs-fixed-epochs|step-table|fair-calibration-table|fair-table): (.*?) -->\n(.*?)"
                          r"<!-- /\1 -->", re.S)
RENDERERS = {"health-table": health_markdown, "results-table": results_markdown}
#: The documents whose generated blocks are kept up to date: the README and every page of docs/.
DOC_FILES = ("README.md", "docs/*.md")


def _folder_renderers() -> dict:
    from bianet_lib.engine import gpu_check
    from bianet_lib.experiments.world import calibration_rows
    from bianet_lib.reports import fair, paper_vs_fixed, testbed

    return {"calibration-table": lambda d: testbed.calibration_markdown(calibration_rows(d)),
            "paper-vs-fixed-epochs": lambda d: paper_vs_fixed.epochs_markdown({n: d / n for n in paper_vs_fixed.RUNS}),
            "testbed-table": testbed.testbed_markdown, "testbed-long-table": testbed.long_markdown,
            "gpu-report": lambda f: gpu_check.report_markdown(json.loads(f.read_text())),
            "gpu-variants": lambda f: gpu_check.variants_markdown(json.loads(f.read_text())),
            "step-table": lambda f: step_table_markdown(json.loads(f.read_text())),
            "fair-calibration-table": fair.calibration_markdown, "fair-table": fair.fair_markdown}


def step_table_markdown(result: dict) -> str:
    """A ``bianet bench --table`` result as a markdown table ("this": the config benchmarked,
    every other variant named with its field changes); a GPU check's report holds one under
    ``step_table``."""
    result = result.get("step_table", result)
    def changes(variant: str) -> str:
        return ", ".join(f"{k}={v}" for k, v in (result["variants"].get(variant) or {}).items())

    util = any(r.get("utilisation") is not None for r in result["rows"])  # a GPU of known peak
    lines = ["| variant | arm | step s | samples/s | x this BIANet | x bare encoders | GFLOP/step | GFLOP/s | "
             + ("utilisation | " if util else "") + "ops/step | host syncs/step |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if util else "") + "---|---|"]
    for r in result["rows"]:
        name = "this" if r["variant"] == "this" else f"{r['variant']} ({changes(r['variant'])})"
        ops = "-" if r["ops_per_step"] is None else str(r["ops_per_step"])
        syncs = "-" if r["host_syncs_per_step"] is None else f"{r['host_syncs_per_step']:.2f}"
        lines.append(f"| {name} | {r['arm']} | {r['step_s']:.3f} | {r['samples_per_s']:.0f} | "
                     f"{r['ratio_to_this_bianet']:.2f} | {r['ratio_to_bare_encoders']:.2f} | "
                     f"{r['flops_per_step'] / 1e9:.1f} | {r['achieved_flop_per_s'] / 1e9:.1f} | "
                     + (f"{100 * r['utilisation']:.1f}% | " if util else "") + f"{ops} | {syncs} |")
    return "\n".join(lines) + "\n"


def readme_blocks(text: str) -> list[tuple[str, str, str]]:
    """The (kind, header, body) of every generated table in a README text."""
    return [(m.group(1), m.group(2), m.group(3)) for m in README_BLOCK.finditer(text)]


def doc_files(root) -> list[Path]:
    """The README and the pages of ``root/docs`` (sorted): every document that may hold generated blocks."""
    root = Path(root)
    return [p for pattern in DOC_FILES for p in sorted(root.glob(pattern)) if p.is_file()]


def doc_root(path) -> Path:
    """The folder a document's block paths resolve against: the repository root, i.e. the
    document's folder, or the folder above it for a page of ``docs/``."""
    folder = Path(path).resolve().parent
    return folder.parent if folder.name == "docs" else folder


def render_readme_block(kind: str, header: str, root) -> str:
    """The table a block names: ``label=path`` pairs of JSON files under ``root`` (or, for the
    test-bed's kinds, one folder under ``root``)."""
    folder = _folder_renderers().get(kind)
    if folder is not None:
        return folder(Path(root) / header.strip()) + "\n"
    reports = {}
    for item in header.split(","):
        label, _, path = item.strip().partition("=")
        reports[label.strip()] = json.loads((Path(root) / path.strip()).read_text())
    return RENDERERS[kind](reports) + "\n"


def rewrite_readme(path, root=None) -> int:
    """Regenerate every generated block of a document (the README or a page of docs/) in place;
    paths resolve against ``root`` (default :func:`doc_root`). Returns how many blocks changed."""
    path = Path(path)
    root = doc_root(path) if root is None else Path(root)
    text, changed = path.read_text(), 0

    def sub(m):
        nonlocal changed
        kind, header = m.group(1), m.group(2)
        body = render_readme_block(kind, header, root)
        changed += body != m.group(3)
        return f"<!-- {kind}: {header} -->\n{body}<!-- /{kind} -->"

    new = README_BLOCK.sub(sub, text)
    if new != text:
        path.write_text(new)
    return changed


def rewrite_docs(root) -> dict[Path, int]:
    """Regenerate the blocks of the README and of every page of ``root/docs``: {file: blocks changed}."""
    return {path: rewrite_readme(path, root) for path in doc_files(root)}


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 3 and sys.argv[1] == "--readme":
        for name in sys.argv[2:]:
            print(f"{rewrite_readme(name)} table(s) rewritten in {name}")
    elif len(sys.argv) == 3 and sys.argv[1] == "--docs":
        for name, n in rewrite_docs(sys.argv[2]).items():
            print(f"{n} table(s) rewritten in {name}")
    else:
        sys.exit("usage: python -m bianet_lib.reports.blocks --docs ROOT  (README.md and docs/*.md)\n"
                 "       python -m bianet_lib.reports.blocks --readme FILE [FILE ...]")
