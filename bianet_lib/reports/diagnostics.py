"""``bianet diagnose``'s report in words: the plain-text table it prints and the markdown health and
results tables of the docs, read from the numbers of ``bianet_lib.engine.diagnostics`` (reports) and
``results.json`` files. Nothing here measures anything.
"""

from __future__ import annotations

from bianet_lib.experiments.grids import flatten_metrics


def format_report(report: dict) -> str:
    """The report as one plain-text table (what ``bianet diagnose`` prints)."""
    lines = [f"mechanism health on the {report['split']} split"]
    keys = sorted({k for h in report["health"].values() for k in h if k not in ("axis",)})
    if keys:
        lines.append(f"  {'':28s} {'face':>9s} {'voice':>9s}")
        for k in keys:
            vals = [report["health"][m].get(k) for m in ("face", "voice")]
            lines.append(f"  {k:28s} " + " ".join(f"{v:9.3f}" if isinstance(v, float) else f"{v!s:>9s}"
                                                    for v in vals))
    d = report["discriminator"]
    lines.append(f"  discriminator accuracy {d['accuracy']:.3f} (linear probe {d['probe_accuracy']:.3f})")
    ab = report["ablations"]
    lines.append(f"  1:2 accuracy V-F / F-V (w = {ab['w']:.2f}):")
    for k, v in ab.items():
        if isinstance(v, dict) and "vf" in v and k != "corr_dz_pos_neg":
            lines.append(f"    {k:16s} {v['vf']:.3f} / {v['fv']:.3f}")
    if "corr_dz_pos_neg" in ab:
        c = ab["corr_dz_pos_neg"]
        lines.append(f"    corr(dz_pos, dz_neg) {c['vf']:.2f} / {c['fv']:.2f}")
    lines.append("  linear probes (accuracy / chance):")
    for name, r in report["probes"].items():
        lines.append(f"    {name:14s} " + ", ".join(f"{k} {v['accuracy']:.2f}/{v['chance']:.2f}" for k, v in r.items()))
    return "\n".join(lines)


def _pair(report: dict, key: str, fmt: str = "{:.3f}") -> str:
    vals = [report["health"].get(m, {}).get(key) for m in ("face", "voice")]
    if all(v is None for v in vals):
        return "-"
    return " / ".join("-" if v is None else fmt.format(v) for v in vals)


def _acc(report: dict, key: str) -> str:
    v = report["ablations"].get(key)
    return "-" if v is None else f"{v['vf']:.3f} / {v['fv']:.3f}"


def _probe(report: dict, name: str, target: str) -> str:
    r = report["probes"].get(name, {}).get(target)
    return "-" if r is None else f"{r['accuracy']:.2f} ({r['chance']:.2f})"


#: The rows of the health table (docs/reproduction.md): (label, how to read it from a report).
HEALTH_ROWS = [
    ("1:2 accuracy V-F / F-V", lambda r: _acc(r, "full")),
    ("PIA contribution to h_hat, face / voice", lambda r: _pair(r, "pia_contribution")),
    ("mask m mean, face / voice", lambda r: _pair(r, "mask_mean")),
    ("epsilon, face / voice", lambda r: _pair(r, "epsilon")),
    ("share A >= 0.01, face / voice", lambda r: _pair(r, "strong_share@0.01")),
    ("share A >= 0.2, face / voice", lambda r: _pair(r, "strong_share@0.2")),
    ("share abs(A) > 0.9, face / voice", lambda r: _pair(r, "saturated_share")),
    ("PIA entropy / uniform, face / voice", lambda r: _pair(r, "pia_entropy")),
    ("NIA entropy / uniform, face / voice", lambda r: _pair(r, "nia_entropy")),
    ("NIA entropy at tau_nia = 10, face / voice", lambda r: _pair(r, "nia_entropy@tau10")),
    ("Eq. 19 rows attended exp(H), face / voice", lambda r: _pair(r, "eq19_pos_effective_rows", "{:.1f}")),
    ("tokens (rows of A), face / voice", lambda r: _pair(r, "tokens", "{:d}")),
    ("discriminator accuracy (linear probe)",
     lambda r: f"{r['discriminator']['accuracy']:.3f} ({r['discriminator']['probe_accuracy']:.3f})"),
    ("1:2 with m = 0", lambda r: _acc(r, "mask_zero")),
    ("1:2 without the attended term", lambda r: _acc(r, "attended_zero")),
    ("1:2 with w = 0", lambda r: _acc(r, "w_zero")),
    ("1:2 from -z_neg alone", lambda r: _acc(r, "neg_only")),
    ("1:2 with shuffled negatives", lambda r: _acc(r, "neg_shuffled")),
    ("corr(dz_pos, dz_neg) V-F / F-V",
     lambda r: "-" if "corr_dz_pos_neg" not in r["ablations"] else
     "{vf:.2f} / {fv:.2f}".format(**r["ablations"]["corr_dz_pos_neg"])),
    ("probe h_tilde: gender (chance)", lambda r: _probe(r, "voice/h_tilde", "gender")),
    ("probe h_tilde: voice noise type (chance)", lambda r: _probe(r, "voice/h_tilde", "noise_type")),
    ("probe h_hat: voice noise type (chance)", lambda r: _probe(r, "voice/h_hat", "noise_type")),
    ("probe h_tilde: face occluded (chance)", lambda r: _probe(r, "face/h_tilde", "occluded")),
    ("probe h_hat: face occluded (chance)", lambda r: _probe(r, "face/h_hat", "occluded")),
]


def health_markdown(reports: dict[str, dict]) -> str:
    """A markdown table of several models' reports side by side (the health table of docs/reproduction.md)."""
    names = list(reports)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, read in HEALTH_ROWS:
        lines.append(f"| {label} | " + " | ".join(read(reports[n]) for n in names) + " |")
    return "\n".join(lines)


def results_markdown(records: dict[str, dict]) -> str:
    """A markdown table of several runs' ``results.json`` (classifier route, cosine in brackets)."""
    cols = [("1:2 V-F", "vf_2"), ("1:2 F-V", "fv_2"), ("1:10 V-F", "vf_10"), ("1:10 F-V", "fv_10"),
            ("verification acc.", "ver_acc"), ("ROC-AUC", "auc")]
    lines = ["| run | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, record in records.items():
        flat = flatten_metrics(record["metrics"])
        lines.append(f"| {label} | " + " | ".join(f"{flat[k]:.3f} ({flat['cos_' + k]:.3f})" for _, k in cols) + " |")
    return "\n".join(lines)


