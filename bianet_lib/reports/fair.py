"""The fair test-bed's tables (issue 25) for docs/reproduction.md, generated from the committed runs:
the two-stage baseline-only calibration (``<!-- fair-calibration-table: results/experiments -->``)
and the grid (``<!-- fair-table: results/experiments/fair -->``). Numbers come from
:mod:`bianet_lib.experiments` (world, stats, records); these functions only lay them out."""

from __future__ import annotations

from pathlib import Path

#: What each pre-declared outcome (preregistration.FAIR_OUTCOMES) means, as the issue wrote it down
#: before the first run.
OUTCOME_MEANING = {
    "no_headroom": "no headroom: removing the interfered tokens does not help the baseline, so this world "
                   "still cannot test the claim",
    "bianet_takes_headroom": "BIANet takes the headroom: the claim holds for local interference",
    "only_supervised_takes_headroom": "only the supervised arm takes the headroom: the architecture can use "
                                      "the right signal, but the paper's training signal does not teach its "
                                      "attention where the interference is",
    "other": "none of the pre-declared outcomes",
}


def face_box_content(world: str) -> str:
    """A few words on what a face box shows in a fair world (from its SynthVox preset)."""
    from bianet_lib.data.synthvox import PRESETS, WorldConfig

    wc = WorldConfig(**PRESETS[world])
    what = "another face, whole, downscaled" if wc.face_local_source == "whole" else "another face's region"
    if wc.face_local_contrast != 1.0:
        what += f", contrast x{wc.face_local_contrast:g}"
    return what + (", at the centre" if wc.face_local_place == "centre" else ", anywhere")


def calibration_table(results_dir: str | Path) -> list[dict]:
    """Both stages' rows (``world.calibration_rows``) with the stage, the share of samples affected
    and the share of an affected sample's tokens (the world's design; tests measure it)."""
    from bianet_lib.data.synthvox import PRESETS
    from bianet_lib.experiments.world import calibration_rows

    out = []
    for stage, store in ((1, "fair-calibration"), (2, "fair-calibration-2")):
        for r in calibration_rows(Path(results_dir) / store):
            p = PRESETS[r["world"]]
            out.append({**r, "stage": stage, "p": min(1.0, p["face_local_p"] * r["scale"]),
                        "face_tokens": p["face_local"], "voice_tokens": p["voice_local"]})
    return out


def calibration_markdown(results_dir: str | Path) -> str:
    """The calibration of both stages as a markdown table, each stage's rule and the committed choice."""
    from bianet_lib.experiments import world as W

    rows = calibration_table(results_dir)
    if not rows:
        return "No calibration run has finished yet."
    lines = ["| stage | world | face box | samples affected | tokens covered (face / voice) | V-F clean twin | "
             "V-F interfered | V-F drop | F-V clean twin | F-V interfered | F-V drop |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['world']} | {face_box_content(r['world'])} | {r['p']:.2f} | "
                     f"{r['face_tokens']:.2f} / {r['voice_tokens']:.2f} | {r['vf_clean']:.3f} | {r['vf_acc']:.3f} | "
                     f"{r['vf_drop']:+.3f} | {r['fv_clean']:.3f} | {r['fv_acc']:.3f} | {r['fv_drop']:+.3f} |")
    c = W.FAIR_WORLD_CONSTRAINTS
    lines += ["", f"Constraint and target (fixed before any run): at most {c['max_token_coverage']:.0%} of an affected "
              f"sample's tokens, and a baseline clean-twin drop at 1:2 of at least {c['min_baseline_drop']:g} in both "
              "directions. Stage 1: the smallest share of affected samples that reaches it; stage 2 (written down "
              "after stage 1 reached none): the first salient world, in the order listed, that reaches it."]
    if W.FAIR_CALIBRATED is None and W.FAIR_HEADROOM_WORLD is not None:
        world, setting = W.FAIR_HEADROOM_WORLD
        lines.append(f"No world reached the target. The headroom check's world, committed before its runs "
                     f"(the largest smaller-of-two drop): **{world}, setting {setting:g}**.")
    elif W.FAIR_CALIBRATED is None:
        lines.append("Chosen: none yet (the fair grid does not run before a world is chosen and committed).")
    else:
        lines.append(f"Chosen and committed before any other arm ran: **{W.FAIR_CALIBRATED_WORLD}, setting "
                     f"{W.FAIR_CALIBRATED:g}**.")
    return "\n".join(lines)


def shift_rows(records: dict[str, list[dict]]) -> list[dict]:
    """Per arm, modality and branch: the paired attention shift (interfered minus clean twin, mass
    on the interfered tokens) averaged over seeds, with the seeds' smallest and largest interval ends."""
    out = []
    for arm, recs in records.items():
        shifts = [r["endpoints"].get("attention_shift") or {} for r in recs]
        for modality in ("face", "voice"):
            for branch in ("pia", "nia"):
                have = [s[modality][branch] for s in shifts if branch in s.get(modality, {})]
                if have:
                    out.append({"arm": arm, "modality": modality, "branch": branch, "seeds": len(have),
                                "mean": sum(h["mean"] for h in have) / len(have),
                                "lo": min(h["ci"][0] for h in have), "hi": max(h["ci"][1] for h in have)})
    return out


READING_MEANING = {
    "none_takes_headroom": "neither BIANet nor supervised attention takes the F-V headroom the oracle shows",
    "bianet_takes_headroom": "BIANet takes F-V headroom, against the baseline and the control",
    "only_supervised_takes_headroom": "only the supervised arm takes F-V headroom: the architecture can use the "
                                      "right signal, the paper's training signal does not teach it",
    "other": "none of the pre-declared readings",
}
BRANCH_MEANING = {"changes": "attention supervision changes what NIA's negative branch scores",
                  "unchanged": "no difference is significant after Holm: attention supervision does not "
                               "measurably change it",
                  "mixed": "attention supervision changes it in one direction only"}


def _check_verdict(comps: list[dict]) -> str:
    """The headroom check's sentence (oracle - baseline, Holm over its own 4 tests)."""
    from bianet_lib.experiments.stats import fair_outcome

    better = [c["direction"].upper() for c in comps if c["comparison"] == "oracle - baseline"
              and c["endpoint"] == "clean_twin_drop" and c["significant"] and c["diff"] < 0]
    return "Headroom check: " + (
        f"**no_headroom** by the pre-registered rule (the oracle's clean-twin drop must be significantly below "
        f"the baseline's in both directions; it is in {len(better)} of 2{': ' + ', '.join(better) if better else ''}): "
        "this world cannot test the claim, and BIANet, supervised attention and the control are not trained "
        "as a confirmatory family." if fair_outcome(comps) == "no_headroom" else
        "the oracle's clean-twin drop is significantly below the baseline's in both directions: there is "
        "headroom, so this world becomes the calibrated one and the method arms run next.")


def branch_markdown(records: dict[str, list[dict]], clusters: dict, n_boot: int = 2000) -> list[str]:
    """The counterfactual prediction's parts per arm (``stats.branch_table``) and the pre-declared
    supervised - BIANet comparison of -z_neg alone with its reading."""
    from bianet_lib.experiments.stats import branch_comparison, branch_reading, branch_table
    from bianet_lib.reports.testbed import _comparison_lines

    table = branch_table(records)
    if not table:
        return []
    lines = ["", "| arm | direction | z (Eq. 22) | z_pos alone | -z_neg alone | corr(dz_pos, dz_neg) | seeds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['arm']} | {r['direction'].upper()} | {r['z']:.3f} | {r['z_pos']:.3f} | "
                     f"{r['minus_z_neg']:.3f} | {r['corr_dz_pos_neg']:+.2f} | {r['seeds']} |")
    rows = branch_comparison(records, clusters, n_boot)
    if rows:  # Holm over its 2 directions
        lines += _comparison_lines([{**r, "endpoint": "negative branch alone, 1:2 accuracy"} for r in rows])
        reading = branch_reading(rows)
        lines += ["", f"NIA's anti-identity (-z_neg alone above 0.5 at 1:2): **{reading}** ({BRANCH_MEANING[reading]})."]
    return lines


def fair_markdown(results_dir: str | Path, n_boot: int = 2000) -> str:
    """The fair grid's tables (arms; headroom recovered; paired attention shift; the families under
    Holm) and the verdict, from the run JSONs in ``results_dir`` (fixed bootstrap seeds): the
    confirmatory family when a world was calibrated; otherwise the headroom check and, when
    declared, the exploratory family, each under its own Holm correction."""
    from bianet_lib.experiments import world as W
    from bianet_lib.experiments.grids import expected_runs
    from bianet_lib.experiments.preregistration import (
        FAIR_COMPARISONS,
        FAIR_EXPLORATORY_COMPARISONS,
    )
    from bianet_lib.experiments.records import _family_progress, clusters_for, load_records
    from bianet_lib.experiments.stats import (
        arm_table,
        compare_arms,
        fair_exploratory_reading,
        fair_headroom,
        fair_outcome,
    )
    from bianet_lib.reports.testbed import _comparison_lines, _verdict

    records = load_records(results_dir)
    if not records:
        return "No run of the fair grid has finished yet."
    lines = ["| arm | seeds | V-F 1:2 | F-V 1:2 | V-F clean twin | F-V clean twin | V-F drop | F-V drop |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in arm_table(records):
        lines.append(f"| {r['arm']} | {r['seeds']} | {r['vf_dose1']:.3f} | {r['fv_dose1']:.3f} | {r['vf_dose0']:.3f} | "
                     f"{r['fv_dose0']:.3f} | {r['vf_drop']:+.3f} | {r['fv_drop']:+.3f} |")
    clusters = clusters_for(next(iter(records.values()))[0])
    head = fair_headroom(records, clusters, n_boot=n_boot)
    if head:
        lines += ["", "| arm | direction | headroom (baseline - oracle drop) | recovered | 95% interval | "
                      "bootstrap draws without headroom | seeds |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for h in head:
            rec = "-" if h["recovered"] is None else f"{h['recovered']:+.2f}"
            ci = "-" if h["ci"][0] is None else f"[{h['ci'][0]:+.2f}, {h['ci'][1]:+.2f}]"
            lines.append(f"| {h['arm']} | {h['direction'].upper()} | {h['headroom']:+.3f} | {rec} | {ci} | "
                         f"{h['no_headroom_share']:.0%} | {h['seeds']} |")
        lines += ["", "Recovered is a ratio: where the headroom's interval reaches 0 (many draws without "
                      "headroom), it is unstable and not read."]
    shifts = shift_rows(records)
    if shifts:
        lines += ["", "| arm | modality | branch | paired attention shift on the interfered tokens | seeds' interval ends |",
                  "|---|---|---|---:|---:|"]
        for s in shifts:
            lines.append(f"| {s['arm']} | {s['modality']} | {s['branch'].upper()} | {s['mean']:+.3f} | "
                         f"[{s['lo']:+.3f}, {s['hi']:+.3f}] |")
    expected = expected_runs(Path(results_dir).name)
    interim = ("INTERIM: {done} of the {total} runs of the {what} have finished (seed-major); the comparisons "
               "are a progress report, the verdict is the analysis over all of them.")
    if W.FAIR_CALIBRATED is not None:  # the confirmatory family
        comps = compare_arms(records, clusters, n_boot, comparisons=FAIR_COMPARISONS)
        lines += _comparison_lines(comps) + branch_markdown(records, clusters, n_boot)
        done, total = _family_progress(records, expected, FAIR_COMPARISONS)
        outcome = fair_outcome(comps)
        verdict = (interim.format(done=done, total=total, what="pre-registered family") if done < total else
                   f"Outcome: **{outcome}** ({OUTCOME_MEANING[outcome]}).")
        return "\n".join(lines + ["", f"{_verdict(comps, 'pre-registered comparisons')} {verdict}"])
    check = {a: records[a] for a in W.FAIR_HEADROOM_ARMS if a in records}
    comps = compare_arms(check, clusters, n_boot, comparisons=FAIR_COMPARISONS)
    lines += ["", "The headroom check (confirmatory; Holm over its own tests):"] + _comparison_lines(comps)
    done, total = _family_progress(check, expected, (W.FAIR_HEADROOM_ARMS,))
    lines += ["", interim.format(done=done, total=total, what="headroom check") if done < total else
              f"{_verdict(comps, 'comparisons of the check')} {_check_verdict(comps)}"]
    if not set(records) - set(W.FAIR_HEADROOM_ARMS):
        return "\n".join(lines)
    comps = compare_arms(records, clusters, n_boot, comparisons=FAIR_EXPLORATORY_COMPARISONS)
    lines += ["", "The exploratory family (declared after the check, before its runs; Holm over its own tests; "
              "it cannot confirm the claim):"] + _comparison_lines(comps) + branch_markdown(records, clusters, n_boot)
    done, total = _family_progress(records, expected, FAIR_EXPLORATORY_COMPARISONS)
    reading = fair_exploratory_reading(comps)
    verdict = (interim.format(done=done, total=total, what="exploratory family") if done < total else
               f"Exploratory reading (F-V): **{reading}** ({READING_MEANING[reading]}).")
    moved = shift_sentence(shift_rows(records))
    return "\n".join(lines + ["", f"{moved}{_verdict(comps, 'exploratory comparisons')} {verdict}"])


def shift_sentence(shifts: list[dict]) -> str:
    """Where the attention moved (``shift_rows``): how many arm-modality pairs have every seed's
    paired shift interval below 0 (PIA) or above 0 (NIA), and the largest NIA shift; "" without rows."""
    pia = [r for r in shifts if r["branch"] == "pia"]
    nia = [r for r in shifts if r["branch"] == "nia"]
    if not pia or not nia:
        return ""
    top = max(nia, key=lambda r: r["mean"])
    return (f"PIA's attention mass leaves the interfered tokens in {sum(r['hi'] < 0 for r in pia)} of {len(pia)} "
            f"arm-modality pairs and NIA's reaches them in {sum(r['lo'] > 0 for r in nia)} of {len(nia)} (every "
            f"seed's interval on that side of 0; largest NIA shift {top['mean']:+.3f}, {top['arm']}, {top['modality']}). ")
