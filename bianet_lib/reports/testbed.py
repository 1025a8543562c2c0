"""The test-bed in words: the markdown tables and the sentences that the README, docs and notebook 07
print, each generated from the numbers of ``bianet_lib.experiments.stats`` (so a re-run cannot leave
a sentence and its number disagreeing). Nothing here computes a statistic of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bianet_lib.experiments.grids import expected_runs, sweep_lines
from bianet_lib.experiments.preregistration import (
    BIAS_COMPARISONS,
    COMPARISONS,
    ENDPOINTS,
    FIG7_COMPARISONS,
    LATER_FAMILIES,
)
from bianet_lib.experiments.records import (
    _family_progress,
    clusters_for,
    load_records,
    per_trial,
    shared_seeds,
)
from bianet_lib.experiments.stats import (
    PROBE_KEYS,
    arm_table,
    attention_table,
    compare_arms,
    endpoint_table,
    learned,
    long_rows,
    seed_spread,
    sweep_means,
)
from bianet_lib.experiments.world import CALIBRATION_TARGET, DIRECTIONS, DOSES, LABELS, choose_scale


def calibration_markdown(rows: list[dict], target: float = CALIBRATION_TARGET) -> str:
    """The calibration as a markdown table, with the rule's choice under it."""
    from bianet_lib.data.synthvox import PRESETS

    face, voice = PRESETS["local"]["face_local"], PRESETS["local"]["voice_local"]
    lines = ["| scale | face share | voice share | seed | V-F 1:2 | V-F clean twin | V-F drop | "
             "F-V 1:2 | F-V clean twin | F-V drop | V-F / F-V, interference filled |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scale']:g} | {min(face * r['scale'], 1):.2f} | {min(voice * r['scale'], 1):.2f} | "
                     f"{r['seed']} | {r['vf_acc']:.3f} | {r['vf_clean']:.3f} | {r['vf_drop']:+.3f} | "
                     f"{r['fv_acc']:.3f} | {r['fv_clean']:.3f} | {r['fv_drop']:+.3f} | "
                     f"{r['vf_filled']:.3f} / {r['fv_filled']:.3f} |")
    chosen = choose_scale(rows, target)
    rule = (f"Rule (fixed before the runs): the smallest scale whose baseline clean-twin drop at 1:2 is "
            f">= {target:g} in both directions.")
    verdict = (f"Chosen: **scale {chosen:g}**." if chosen is not None
               else "No scale tried reaches it: the world needs stronger interference.")
    return "\n".join(lines) + f"\n\n{rule} {verdict}"


def endpoint_markdown(records: dict[str, list[dict]]) -> list[str]:
    """The markdown lines of ``endpoint_table``: every arm's dose-response, ceiling and probes."""
    rows = endpoint_table(records)
    if not rows:
        return []

    def chance(key):
        vals = [r[key + "/chance"] for r in rows if r[key + "/chance"] is not None]
        return f" (chance {np.mean(vals):.2f})" if vals else ""

    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    probe_cols = [f"{m} {t}: {e}{chance(f'{m}/{e}/{t}')}" for m, e, t in PROBE_KEYS]
    lines = ["", "Every arm's dose-response (1:2 accuracy at test-time strengths "
             + ", ".join(f"{d:g}" for d in DOSES) + " without retraining), the neutral-fill ceiling "
             "(filled minus interfered) and the linear probes of its embeddings for the interference's "
             "kind and position; means over seeds and both directions:", "",
             "| arm | seeds | " + " | ".join(f"dose {d:g}" for d in DOSES) + " | ceiling | "
             + " | ".join(probe_cols) + " |",
             "|---|---:|" + "---:|" * (len(DOSES) + 1 + len(PROBE_KEYS))]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seeds']} | " + " | ".join(f"{r[f'dose{d:g}']:.3f}" for d in DOSES)
                     + f" | {r['ceiling']:+.3f} | "
                     + " | ".join(cell(r[f"{m}/{e}/{t}"]) for m, e, t in PROBE_KEYS) + " |")
    return lines


def testbed_markdown(results_dir: str | Path, n_boot: int = 2000) -> str:
    """The grid's three tables (arms, pre-registered comparisons under Holm, attention mass), in
    markdown, from the run JSONs in ``results_dir`` (deterministic: fixed bootstrap seed)."""
    records = load_records(results_dir)
    if not records:
        return "No test-bed run has finished yet."
    first = next(iter(records.values()))[0]
    rows = arm_table(records)
    lines = ["| arm | seeds | V-F 1:2 | F-V 1:2 | V-F clean twin | F-V clean twin | V-F drop | F-V drop | "
             "V-F / F-V interference filled |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seeds']} | {r['vf_dose1']:.3f} | {r['fv_dose1']:.3f} | {r['vf_dose0']:.3f} | "
                     f"{r['fv_dose0']:.3f} | {r['vf_drop']:+.3f} | {r['fv_drop']:+.3f} | "
                     f"{r['vf_filled']:.3f} / {r['fv_filled']:.3f} |")
    clusters = clusters_for(first)
    comps = compare_arms(records, clusters, n_boot)
    lines += _comparison_lines(comps)
    verdict = [_verdict(comps, "pre-registered comparisons")]
    runs = learned(records, clusters, n_boot)
    stuck = sorted({(r["arm"], r["seed"]) for r in runs if not r["above_chance"]})
    if stuck:
        verdict.append("Runs not above chance (their drop of about 0 is nothing to lose, not robustness): "
                       + ", ".join(f"{a} seed {s}" for a, s in stuck) + ".")
    att = attention_table(records)
    if att:
        ratios = [a["ratio"] for a in att]
        verdict.append(f"PIA's and NIA's attention mass on the interference tokens, relative to uniform attention "
                       f"(1 = blind to it): {min(ratios):.2f} to {max(ratios):.2f}.")
        full = sorted({a["modality"] for a in att if a["share"] >= 0.99})
        if full:
            verdict.append(f"On {' and '.join(full)}, the interference covers (nearly) every token of the samples "
                           "that carry it at this strength, so attention there can neither seek nor avoid it: "
                           "that endpoint is uninformative by construction, and the test-bed is local on the "
                           "other modality only.")
    expected = expected_runs(Path(results_dir).name)
    done, total = _family_progress(records, expected, COMPARISONS)
    if done < total:
        verdict.insert(0, f"INTERIM: {done} of the {total} pre-registered runs of this family "
                          "have finished (seed-major); the comparisons are a progress report, the pre-registered "
                          "analysis is the one over all of them.")
    lines += ["", " ".join(verdict)]
    if att:
        lines += ["", "| arm | modality | branch | attention mass on interference | uniform (its share) | ratio |",
                  "|---|---|---|---:|---:|---:|"]
        for a in att:
            lines.append(f"| {a['arm']} | {a['modality']} | {a['branch'].upper()} | {a['mass']:.3f} | "
                         f"{a['share']:.3f} | {a['ratio']:.2f} |")
    lines += endpoint_markdown(records)
    for title, family in LATER_FAMILIES:
        comps_f = compare_arms(records, clusters, n_boot, comparisons=family)
        if not comps_f:
            continue
        lines += ["", f"{title}, Holm-corrected on its own:", *_comparison_lines(comps_f), "",
                  family_verdict(records, comps_f, family, expected)]
    return "\n".join(lines)


def family_verdict(records: dict[str, list[dict]], comps: list[dict], family, expected: set[tuple[str, int]]) -> str:
    """One later family's sentence: how many of its comparisons are significant after its own Holm
    correction, prefixed INTERIM while some of its pre-registered runs (``expected``) are missing."""
    done, total = _family_progress(records, expected, family)
    status = f"INTERIM: {done} of its {total} pre-registered runs have finished; " if done < total else ""
    return status + _verdict(comps, "comparisons of this family")


def _comparison_lines(comps: list[dict]) -> list[str]:
    if not comps:
        return []
    lines = ["", "| comparison | endpoint | direction | difference | 95% interval | p | p (Holm) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for c in comps:
        lines.append(f"| {c['comparison']} | {c['endpoint'].replace('_', ' ')} | {c['direction'].upper()} | "
                     f"{c['diff']:+.3f} | [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {c['p']:.3f} | "
                     f"{c['p_holm']:.3f}{' *' if c['significant'] else ''} |")
    return lines


def _verdict(comps: list[dict], what: str) -> str:
    sig = [c for c in comps if c["significant"]]
    return (f"{len(sig)} of {len(comps)} {what} are significant after Holm"
            + (": " + "; ".join(f"{c['comparison']}, {c['endpoint'].replace('_', ' ')}, {c['direction'].upper()} "
                                f"{c['diff']:+.3f}" for c in sig) if sig else "") + ".")


def long_markdown(long_dir: str | Path) -> str:
    """The convergence check's table (``long_rows``) in markdown, with one sentence from it. The
    long run's epoch 8 is not the 8-epoch run: the learning-rate milestones and the curriculum
    and adversarial ramps are spread over all its epochs."""
    rows = [r for r in long_rows(long_dir) if "short_vf" in r and "long_val" in r]
    if not rows:
        return "No convergence-check run has finished yet."
    n = rows[0]["long_epochs"]
    lines = [f"| arm | seed | validation 1:2 at epoch 8 | at epoch {n} | best epoch of {n} | V-F / F-V 1:2, 8 epochs | "
             f"V-F / F-V 1:2, {n} epochs | V-F / F-V drop, 8 epochs | V-F / F-V drop, {n} epochs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['long_val'][7]:.3f} | {r['long_val'][-1]:.3f} | "
                     f"{r['long_best_epoch']} | {r['short_vf']:.3f} / {r['short_fv']:.3f} | "
                     f"{r['long_vf']:.3f} / {r['long_fv']:.3f} | {r['short_vf_drop']:+.3f} / {r['short_fv_drop']:+.3f} | "
                     f"{r['long_vf_drop']:+.3f} / {r['long_fv_drop']:+.3f} |")
    gain = np.mean([(r["long_vf"] - r["short_vf"] + r["long_fv"] - r["short_fv"]) / 2 for r in rows])
    late = np.mean([r["long_val"][-1] - r["long_val"][7] for r in rows])
    lines += ["", f"Over these {len(rows)} runs, doubling the epochs changed the endpoints' 1:2 accuracy by "
                  f"{gain:+.3f} on average and validation accuracy moved {late:+.3f} from epoch 8 to epoch {n}."]
    return "\n".join(lines)


def verdict_lines(records: dict[str, list[dict]], n_boot: int = 2000, comps: list[dict] | None = None) -> list[str]:
    """What a grid's numbers say, as sentences assembled from them (notebook 07 prints these, so a
    re-run cannot leave its text and its tables disagreeing): which runs left chance; every
    pre-registered comparison with its interval and Holm p; the neutral-fill ceiling; where PIA's
    and NIA's attention goes against the paper's prediction; whether the embeddings encode the
    interference's kind; the dose-response beyond the trained strength. ``comps``: the first family's
    ``compare_arms`` rows when the caller has them already (computed here otherwise)."""
    if not records:
        return ["No run of this grid has finished yet."]
    clusters = clusters_for(next(iter(records.values()))[0])
    out = []
    runs = learned(records, clusters, n_boot)
    ok = {}
    for r in runs:
        ok[(r["arm"], r["seed"])] = ok.get((r["arm"], r["seed"]), True) and r["above_chance"]
        if not r["above_chance"]:
            out.append(f"{r['arm']} seed {r['seed']} {r['direction'].upper()}: 1:2 accuracy {r['accuracy']:.3f} "
                       f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]: NOT above chance; its drop of about 0 is nothing to "
                       "lose, not robustness")
    out.append(f"{sum(ok.values())} of {len(ok)} runs are above chance in both directions.")
    chance_arms = {arm for (arm, _), good in ok.items() if not good}
    comps = compare_arms(records, clusters, n_boot) if comps is None else comps
    for arm, ref in COMPARISONS:
        for endpoint in ENDPOINTS:
            sub = [c for c in comps if c["comparison"] == f"{arm} - {ref}" and c["endpoint"] == endpoint]
            if not sub:
                out.append(f"{arm} - {ref}, {endpoint.replace('_', ' ')}: not run yet.")
                continue
            parts = [f"{c['direction'].upper()} {c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] "
                     f"(Holm p {c['p_holm']:.3f})" for c in sub]
            caveat = (" (an arm here has a run at chance, which lowers its mean drop without any robustness)"
                      if endpoint == "clean_twin_drop" and {arm, ref} & chance_arms else "")
            out.append(f"{arm} - {ref}, {endpoint.replace('_', ' ')}: " + "; ".join(parts)
                       + f" -> {sum(c['significant'] for c in sub)} of {len(sub)} significant after Holm{caveat}.")
    rows = {r["arm"]: r for r in arm_table(records)}
    for arm, recs in records.items():  # exploratory (not pre-registered, no test): runs that learned only
        kept = [r for r in recs if ok[(arm, int(r["seed"]))]]
        if kept and len(kept) < len(recs):
            drops = [float(per_trial(kept, d, "clean_twin_drop").mean()) for d in DIRECTIONS]
            out.append(f"Exploratory: {arm} over its {len(kept)} run(s) above chance: drop {drops[0]:+.3f} V-F / "
                       f"{drops[1]:+.3f} F-V (all {len(recs)} runs: {rows[arm]['vf_drop']:+.3f} / "
                       f"{rows[arm]['fv_drop']:+.3f}).")
    if "baseline" in rows:
        b = rows["baseline"]
        gain = (b["vf_ceiling"] + b["fv_ceiling"]) / 2
        out.append(f"The neutral fill takes the baseline from {b['vf_dose1']:.3f} / {b['fv_dose1']:.3f} to "
                   f"{b['vf_filled']:.3f} / {b['fv_filled']:.3f} (V-F / F-V; the clean twins give {b['vf_dose0']:.3f} / "
                   f"{b['fv_dose0']:.3f}): a mean change of {gain:+.3f}, so removing the interference by hand, "
                   + ("without retraining, would help this model." if gain > 0 else
                      "without retraining, does not help this model: the fill is as foreign to it as the interference."))
    att = {(a["arm"], a["modality"], a["branch"]): a for a in attention_table(records)}
    for modality in ("face", "voice"):
        p, n = att.get(("bianet", modality, "pia")), att.get(("bianet", modality, "nia"))
        if p and n:
            if min(p["share"], n["share"]) >= 0.99:
                out.append(f"BIANet {modality}: the interference covers every token of the samples that carry it, so "
                           "the attention-mass endpoint cannot tell seeking from avoiding here.")
                continue
            seeds = [(r["endpoints"]["attention"][modality]["pia"]["ratio"], r["endpoints"]["attention"][modality]["nia"]["ratio"])
                     for r in records["bianet"] if r["endpoints"]["attention"].get(modality, {}).get("nia")]
            below = sum(pr < 1 for pr, _ in seeds)
            above = sum(nr > pr for pr, nr in seeds)
            out.append(f"BIANet {modality}: PIA puts {p['ratio']:.2f}x, NIA {n['ratio']:.2f}x the uniform mass on the "
                       f"interference (mean over seeds); PIA is below 1 in {below} of {len(seeds)} seeds and NIA above "
                       f"PIA in {above} of {len(seeds)} (the paper's story predicts both in every seed); "
                       + ("the attention does steer away from the interference, if weakly."
                          if below == len(seeds) and p["ratio"] < 0.95 else
                          "within a few percent of uniform, the attention is close to blind to the interference."))
    for arm in ("bianet", "nia"):
        recs = records.get(arm, [])
        for modality in ("face", "voice"):
            accs = {key: [r["endpoints"]["probes"][f"{modality}/{key}"]["kind"] for r in recs
                          if f"{modality}/{key}" in r["endpoints"]["probes"]] for key in ("h_hat", "h_tilde")}
            if all(accs.values()):
                m = {k: (float(np.mean([v["accuracy"] for v in vs])), float(np.mean([v["chance"] for v in vs])))
                     for k, vs in accs.items()}
                out.append(f"{arm} {modality}: a linear probe reads the interference's kind from h_hat at "
                           f"{m['h_hat'][0]:.3f} and from h_tilde at {m['h_tilde'][0]:.3f} (chance {m['h_hat'][1]:.3f}); "
                           + ("h_tilde encodes it more than h_hat, as the paper's story wants."
                              if m["h_tilde"][0] > m["h_hat"][0] else
                              "h_hat encodes it at least as well as h_tilde: the positive embedding has not shed it."))
    if "baseline" in rows:
        for arm in ("bianet", "control"):
            if arm in rows:
                beyond = {a: (rows[a]["vf_dose1"] - rows[a]["vf_dose1.5"] + rows[a]["fv_dose1"] - rows[a]["fv_dose1.5"]) / 2
                          for a in (arm, "baseline")}
                out.append(f"From the trained strength to 1.5 times it, {arm} loses {beyond[arm]:+.3f} and the baseline "
                           f"{beyond['baseline']:+.3f} of 1:2 accuracy (mean of the directions, no retraining).")
    return out


def reproduction_lines(rows: list[dict], committed: dict[str, list[dict]], total_wall_min: float | None = None) -> list[str]:
    """Sentences from ``reproduction_rows``: per run, identical or the largest difference against
    the arm's seed-to-seed spread in the committed grid, and the wall time."""
    if not rows:
        return ["No run has been reproduced yet."]
    out = []
    for r in rows:
        accs = ", ".join(f"{LABELS[d]} {r[f'{d}_fresh']:.3f} (committed {r[f'{d}_committed']:.3f})" for d in DIRECTIONS)
        if r["identical"]:
            what = "bit-identical to the committed run (every validation accuracy and every trial's outcome)"
        else:
            worst = max(abs(r[f"{d}_fresh"] - r[f"{d}_committed"]) for d in DIRECTIONS)
            spread = min(seed_spread(committed, r["arm"], d) for d in DIRECTIONS)
            agree = min(r[f"{d}_agree"] for d in DIRECTIONS)
            what = (f"not bit-identical: 1:2 accuracy differs by up to {worst:.3f} "
                    f"({'within' if worst <= spread else 'beyond'} the arm's seed-to-seed standard deviation "
                    f"{spread:.3f}), and the two runs agree on {agree:.1%} of the trials")
        out.append(f"{r['arm']} seed {r['seed']}: 1:2 {accs}; {what}; trained in {r['wall_min']:.1f} min.")
    if total_wall_min is not None:
        out.append(f"The whole reproduction took {total_wall_min:.1f} minutes of wall time from an empty results "
                   "folder and an empty world cache.")
    return out


def _interim_prefix(records: dict[str, list[dict]], expected: set[tuple[str, int]] | None, family) -> str:
    """'INTERIM (done of total runs): ' while some of a family's pre-registered runs are missing;
    '' when they are all in, or when no pre-registration (``expected``) is given."""
    if expected is None:
        return ""
    done, total = _family_progress(records, expected, family)
    return f"INTERIM ({done} of {total} runs): " if done < total else ""


def fig7_lines(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000,
               expected: set[tuple[str, int]] | None = None) -> list[str]:
    """The fourth family read against the paper's two sentences on Fig. 7 ("only minor
    fluctuations, the optimal tau_1 is 5"; "performance gradually improves with increasing tau_2"),
    every word chosen by the numbers: the family's Holm count and ranges of differences, then per
    temperature where the 1:2 accuracy peaks, where the default ranks and whether accuracy rises
    with the value, on the seeds that every value has (the default arm has more). INTERIM while some
    of the family's pre-registered runs are missing."""
    comps = compare_arms(records, clusters, n_boot, comparisons=FIG7_COMPARISONS)
    if not comps:
        return ["Fig. 7: no comparison has both arms finished yet."]
    status = _interim_prefix(records, expected, FIG7_COMPARISONS)

    def span(endpoint, direction=None):
        d = [c["diff"] for c in comps if c["endpoint"] == endpoint and direction in (None, c["direction"])]
        return f"{min(d):+.3f} to {max(d):+.3f}"

    sig = [c for c in comps if c["significant"]]
    out = [f"{status}Fig. 7 (the fourth family): {len(sig)} of {len(comps)} comparisons are significant after "
           f"Holm; against the default temperatures, 1:2 accuracy differs by {span('accuracy', 'vf')} (V-F) and "
           f"{span('accuracy', 'fv')} (F-V), the clean-twin drop by {span('clean_twin_drop')}."]
    for label, line in sweep_lines()["fig7"].items():
        which = label.split()[0]
        name = which.replace("tau", "tau_")
        base = next(x for x, arm in line.items() if arm == "bianet")  # sweep_lines places the default there
        seeds = shared_seeds(records, line.values())  # the default has more seeds: rank on the shared ones
        means = {d: sweep_means(records, line, d, seeds) for d in DIRECTIONS}
        parts = []
        for d in DIRECTIONS:
            m = means[d]
            best = max(m, key=m.get)
            rank = sorted(m.values(), reverse=True).index(m[base]) + 1 if base in m else None
            vals = list(m.values())
            rises = all(b >= a for a, b in zip(vals, vals[1:], strict=False))
            parts.append(f"{LABELS[d]} peaks at {name} = {best:g} ({m[best]:.3f}, range "
                         f"{min(vals):.3f}-{max(vals):.3f})"
                         + (f", the default {base:g} ranks {rank} of {len(m)}" if rank else "")
                         + (", rising with the value" if rises else ", not rising with the value"))
        sig_t = [c for c in sig if c["comparison"].startswith(which + "_")]
        out.append(f"{status}{name} (others at their defaults; means over the {len(seeds)} seeds that every value "
                   f"has): " + "; ".join(parts) + "; "
                   + (f"{len(sig_t)} of its comparisons are significant." if sig_t else
                      "no difference to the default is significant, so no optimum or trend is resolved."))
    return out


def bias_lines(records: dict[str, list[dict]], clusters: dict[str, np.ndarray], n_boot: int = 2000,
               expected: set[tuple[str, int]] | None = None) -> list[str]:
    """The fifth family (the course's bias study, a train-only shortcut taken with probability rho)
    in sentences chosen by the numbers: its Holm count; whether the shortcut costs the baseline at
    all (without a cost there is no bias for BIANet to remove, whatever the other comparisons say);
    which runs at the largest rho are not above chance (they compress differences to chance); each
    arm's 1:2 accuracy lost from rho 0 to its largest rho, on the seeds both share (descriptive, not
    a pre-registered test); and BIANet against the baseline trained on the same shortcut. INTERIM
    while some of the family's pre-registered runs are missing."""
    comps = compare_arms(records, clusters, n_boot, comparisons=BIAS_COMPARISONS)
    if not comps:
        return ["Bias study: no comparison has both arms finished yet."]
    status = _interim_prefix(records, expected, BIAS_COMPARISONS)
    get = {(c["comparison"], c["endpoint"], c["direction"]): c for c in comps}

    def acc(comparison):
        cs = [get.get((comparison, "accuracy", d)) for d in DIRECTIONS]
        if not all(cs):
            return None, "not finished"
        return cs, " and ".join(f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] ({LABELS[c['direction']]}, "
                                f"Holm p {c['p_holm']:.3f})" for c in cs)

    sig = [c for c in comps if c["significant"]]
    out = [f"{status}The bias study (the fifth family): {len(sig)} of {len(comps)} comparisons are significant after Holm."]
    sweeps = sweep_lines()["bias"]
    top = max(x for line in sweeps.values() for x in line)
    cost, text = acc(f"baseline_rho{top:g} - baseline")
    if cost is not None:
        hurt = [c for c in cost if c["significant"] and c["diff"] < 0]
        out.append(f"{status}Training on the shortcut at rho {top:g} changes the baseline's 1:2 accuracy by {text}: "
                   + ("the shortcut costs the baseline, so there is a bias to remove." if hurt else
                      "no significant cost, so at this strength there is no measurable bias for BIANet to remove, "
                      "and the comparisons below cannot show debiasing."))
    tops = {line[max(line)] for line in sweeps.values()}
    runs = learned({a: records[a] for a in sorted(tops) if records.get(a)}, clusters, n_boot)
    if runs:
        n = len({(r["arm"], r["seed"]) for r in runs})
        below = sorted({(r["arm"], r["seed"]) for r in runs if not r["above_chance"]})
        out.append(f"{status}At rho {top:g}, " + (
            f"every one of the {n} runs is above chance in both directions." if not below else
            f"{len(below)} of the {n} runs are not above chance in at least one direction ("
            + ", ".join(f"{a} seed {s}" for a, s in below) + "): on the unbiased test they match no better than a coin, "
            "so differences between arms at this rho are compressed towards chance."))
    losses = []
    for arm, line in sweeps.items():
        lo, hi = min(line), max(line)
        ends = {lo: line[lo], hi: line[hi]}
        seeds = shared_seeds(records, ends.values())
        if not all(records.get(a) for a in ends.values()) or not seeds:
            continue
        means = [sweep_means(records, ends, d, seeds) for d in DIRECTIONS]
        lost = [m[lo] - m[hi] for m in means]
        losses.append(f"{arm} {lost[0]:+.3f} / {lost[1]:+.3f} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
    if losses:
        out.append(f"{status}1:2 accuracy lost from rho 0 to rho {top:g} (V-F / F-V, each arm on the seeds both ends "
                   "share; descriptive): " + ", ".join(losses) + ".")
    parts = []
    for rho in sorted(x for x in sweeps["bianet"] if x > 0):
        cs, text = acc(f"bianet_rho{rho:g} - baseline_rho{rho:g}")
        if cs is not None:
            parts.append(f"at rho {rho:g} {text}")
    if parts:
        better = [c for c in sig if c["comparison"].startswith("bianet_rho") and "baseline_rho" in c["comparison"]
                  and c["endpoint"] == "accuracy"]
        out.append(f"{status}BIANet against the baseline trained on the same shortcut, 1:2 accuracy: " + "; ".join(parts)
                   + (": " + ", ".join(f"{c['comparison']} {LABELS[c['direction']]} {c['diff']:+.3f}" for c in better)
                      + " significant after Holm." if better else ": no difference is significant after Holm."))
    return out
