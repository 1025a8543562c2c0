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


def fair_markdown(results_dir: str | Path, n_boot: int = 2000) -> str:
    """The fair grid's tables (arms; headroom recovered; paired attention shift; the family under
    Holm) and the outcome line, from the run JSONs in ``results_dir`` (fixed bootstrap seeds)."""
    from bianet_lib.experiments.grids import expected_runs
    from bianet_lib.experiments.preregistration import FAIR_COMPARISONS
    from bianet_lib.experiments.records import _family_progress, clusters_for, load_records
    from bianet_lib.experiments.stats import arm_table, compare_arms, fair_headroom, fair_outcome
    from bianet_lib.experiments.world import FAIR_HEADROOM_ARMS
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
        lines += ["", "| arm | direction | headroom (baseline - oracle drop) | recovered | 95% interval | seeds |",
                  "|---|---|---:|---:|---:|---:|"]
        for h in head:
            rec = "-" if h["recovered"] is None else f"{h['recovered']:+.2f}"
            ci = "-" if h["ci"][0] is None else f"[{h['ci'][0]:+.2f}, {h['ci'][1]:+.2f}]"
            lines.append(f"| {h['arm']} | {h['direction'].upper()} | {h['headroom']:+.3f} | {rec} | {ci} | {h['seeds']} |")
    shifts = shift_rows(records)
    if shifts:
        lines += ["", "| arm | modality | branch | paired attention shift on the interfered tokens | seeds' interval ends |",
                  "|---|---|---|---:|---:|"]
        for s in shifts:
            lines.append(f"| {s['arm']} | {s['modality']} | {s['branch'].upper()} | {s['mean']:+.3f} | "
                         f"[{s['lo']:+.3f}, {s['hi']:+.3f}] |")
    comps = compare_arms(records, clusters, n_boot, comparisons=FAIR_COMPARISONS)
    lines += _comparison_lines(comps)
    done, total = _family_progress(records, expected_runs(Path(results_dir).name), FAIR_COMPARISONS)
    verdict = [_verdict(comps, "pre-registered comparisons")]
    outcome = fair_outcome(comps)
    if done < total:
        verdict.insert(0, f"INTERIM: {done} of the {total} pre-registered runs have finished (seed-major); "
                          "the comparisons are a progress report, the verdict is the analysis over all of them.")
    elif set(records) <= set(FAIR_HEADROOM_ARMS):  # the headroom check alone (world.FAIR_HEADROOM_WORLD)
        better = [c["direction"].upper() for c in comps if c["comparison"] == "oracle - baseline"
                  and c["endpoint"] == "clean_twin_drop" and c["significant"] and c["diff"] < 0]
        verdict.append("Headroom check: " + (
            f"**no_headroom** by the pre-registered rule (the oracle's clean-twin drop must be significantly below "
            f"the baseline's in both directions; it is in {len(better)} of 2{': ' + ', '.join(better) if better else ''}): "
            "this world cannot test the claim, and BIANet, supervised attention and the control are not trained."
            if outcome == "no_headroom" else
            "the oracle's clean-twin drop is significantly below the baseline's in both directions: there is "
            "headroom, so this world becomes the calibrated one and the method arms run next."))
    else:
        verdict.append(f"Outcome: **{outcome}** ({OUTCOME_MEANING[outcome]}).")
    return "\n".join(lines + ["", " ".join(verdict)])
