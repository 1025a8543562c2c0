"""Issue 24: `paper` is the literal reading, `paper-fixed` the measured fixes, and the departures
table is generated from the config classes and checked against docs/paper-ambiguities.md."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml

from bianet_lib import config as config_mod
from bianet_lib import presets_table as pt
from bianet_lib.config import PRESETS, BIANetConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [f.name for f in dataclasses.fields(BIANetConfig)]


# --- the presets --------------------------------------------------------------------------

def test_paper_sets_every_field_explicitly():
    """No field of `paper` may come silently from the dataclass defaults (cpu-small's choices)."""
    tree = ast.parse(inspect.getsource(config_mod.paper))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "BIANetConfig"]
    assert len(calls) == 1
    assert sorted(kw.arg for kw in calls[0].keywords) == sorted(FIELDS)


def test_paper_departs_from_the_literal_reading_only_where_the_literal_form_cannot_run():
    paper = load_config("paper").to_dict()
    departs = {name for name, lit in pt.LITERAL.items()
               if lit.value is not pt.FREE and paper[name] != pt._norm(lit.value)}
    assert departs == {"matching_head", "curriculum"}  # K*D -> K head; Eq. 22's undefined log
    # the literal values the issue named, one by one
    cfg = load_config("paper")
    assert (cfg.affinity_center, cfg.adversarial_target, cfg.adversarial_schedule, cfg.w_identity) == \
        (False, "flipped", "constant", 0.0)
    assert (cfg.truncation, cfg.gate_sharpness, cfg.se_mask, cfg.curriculum) == ("zero", 0.0, "sum", "paper")
    assert (cfg.lr_encoders, cfg.lr_heads, cfg.weight_decay, cfg.tau1) == (5e-2, 5e-3, 5e-4, 10.0)


def test_paper_fixed_is_the_paper_architecture_with_the_fixes():
    paper, fixed = load_config("paper").to_dict(), load_config("paper-fixed").to_dict()
    changed = {k for k in FIELDS if paper[k] != fixed[k]}
    assert changed == {"affinity_axis", "affinity_center", "gate_sharpness", "truncation", "pia_norm",
                       "se_mask", "curriculum", "adversarial_target", "adversarial_schedule",
                       "discriminator_batch", "lr_encoders", "lr_heads"}
    for name in changed:  # every fix is a listed departure with its reason
        assert name in pt.REASONS and "paper-fixed" in pt.REASONS[name]


def test_every_preset_is_registered_on_the_command_line():
    from bianet_lib.cli import build_parser

    for preset in PRESETS:
        args = build_parser().parse_args(["train", "--preset", preset, "--run-dir", "R"])
        assert args.preset == preset
    assert set(PRESETS) == {"cpu-small", "paper", "paper-fixed"}


# --- the departures table -------------------------------------------------------------------

def test_the_departures_table_in_the_docs_is_current():
    assert pt.doc_block(ROOT / "docs/paper-ambiguities.md") == pt.table_block()


def test_every_config_field_has_a_literal_reading():
    assert set(pt.LITERAL) == set(FIELDS)


def test_a_new_field_without_a_literal_entry_fails_the_table():
    with pytest.raises(pt.TableError, match="new_knob"):
        pt.departure_rows(fields=FIELDS + ["new_knob"])


def test_a_new_dataclass_field_fails_the_table(monkeypatch):
    planted = dataclasses.make_dataclass("Planted", [("new_knob", "int", dataclasses.field(default=3))],
                                         bases=(BIANetConfig,))
    monkeypatch.setattr(config_mod, "BIANetConfig", planted)
    with pytest.raises(pt.TableError, match="without a literal-reading entry.*new_knob"):
        pt.departure_rows()


def test_a_departure_without_a_reason_fails_the_table():
    presets = pt.preset_values()
    presets["paper"] = {**presets["paper"], "k": 3}  # k has no reason: no preset departs today
    with pytest.raises(pt.TableError, match="config field k: a preset differs"):
        pt.departure_rows(presets=presets)
    reasons = {k: v for k, v in pt.REASONS.items() if k != "tau1"}
    with pytest.raises(pt.TableError, match="tau1"):
        pt.departure_rows(reasons=reasons)


def test_rows_name_each_presets_value():
    rows = {r["field"]: r for r in pt.departure_rows()}
    assert (rows["tau1"]["literal"], rows["tau1"]["paper"], rows["tau1"]["cpu-small"]) == (10.0, 10.0, 5.0)
    assert "tau2" not in rows and "seed" not in rows  # equal everywhere / not the paper's to fix
    assert isinstance(rows["curriculum"]["literal"], pt.Unrunnable)


# --- old runs keep loading with their old behaviour ----------------------------------------

NEW_FIELDS = {"truncation": "drop", "se_mask": "joint", "discriminator_batch": "joint"}


def test_a_committed_cpu_small_config_saved_before_the_options_loads_with_its_behaviour():
    """The channel-axis run (saved before these options and the speed fields existed; the course
    runs have been retrained since and name every field) loads as it was trained, through
    from_dict and through its config file."""
    path = ROOT / "results/axis-comparison/channels/config.yaml"
    values = yaml.safe_load(path.read_text())
    assert not {*NEW_FIELDS, "channels_last", "compile"} & set(values)  # saved before the options existed
    cfg = BIANetConfig.from_dict(values)
    assert {k: getattr(cfg, k) for k in NEW_FIELDS} == NEW_FIELDS
    assert not cfg.channels_last and not cfg.compile  # NCHW eager, as it was trained
    assert config_mod.load_config(path=path) == cfg
    assert cfg == BIANetConfig.from_dict({**config_mod.cpu_small().to_dict(), **values,
                                          **config_mod.SPEED_BEFORE_ISSUE_28})


def test_an_old_results_record_of_the_former_paper_preset_keeps_its_meaning():
    values = json.loads((ROOT / "results/paper-cpu-check-vox/results.json").read_text())["config"]
    cfg = BIANetConfig.from_dict(values)
    assert {k: getattr(cfg, k) for k in NEW_FIELDS} == NEW_FIELDS
    # what the former `paper` preset carried, not what `paper` is now
    assert (cfg.affinity_center, cfg.adversarial_target, cfg.w_identity, cfg.curriculum) == \
        (True, "confusion", 1.0, "cosine")
    assert cfg != load_config("paper")


# --- the new options: defaults compute what the code computed before ------------------------

def test_default_options_compute_the_former_formulas():
    from bianet_lib.model.affinity import strong_gate_log, weak_gate_log
    from bianet_lib.model.attention import ChannelMask, negative_attention, positive_attention

    torch.manual_seed(0)
    a, eps = torch.rand(2, 6, 6) * 2 - 1, torch.tensor(0.1)
    assert torch.equal(positive_attention(a, eps, 10.0, 0.05),
                       torch.softmax(10.0 * a + strong_gate_log(a, eps, 0.05), dim=-1))
    a_tilde = torch.relu(-(torch.relu(a) - eps))
    assert torch.equal(negative_attention(a, eps, 0.05),
                       torch.softmax(a_tilde + weak_gate_log(a, eps, 0.05), dim=-1))
    mask, x = ChannelMask(8), torch.randn(3, 8, 3, 3)
    avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    assert torch.allclose(mask(x), torch.sigmoid(mask.se(avg) + mask.se(mx)))


def test_the_literal_forms():
    from bianet_lib.model.attention import ChannelMask, negative_attention, positive_attention

    a = torch.tensor([[[0.9, 0.5, 0.05, -0.3]]])
    eps = torch.tensor(0.1)
    # Eq. 10 + 12, hard zeroing: weak entries keep logit 0, i.e. weight exp(0)
    p = positive_attention(a, eps, 10.0, 0.0, "zero")
    z = torch.tensor([9.0, 5.0, 0.0, 0.0])
    assert torch.allclose(p[0, 0], torch.softmax(z, dim=0))
    # Eq. 11 + 15: strong entries keep logit A_tilde = 0
    n = negative_attention(a, eps, 0.0, None, 1.0, "zero")
    assert torch.allclose(n[0, 0], torch.softmax(torch.tensor([0.0, 0.0, 0.05, 0.1]), dim=0))
    # a soft zeroing (gate_sharpness > 0) multiplies A by sigmoid((A - eps) / s)
    from bianet_lib.model.attention import strong_part

    assert torch.allclose(strong_part(a, eps, 0.05), a * torch.sigmoid((a - eps) / 0.05))
    # the authors' SE mask: a sum of two sigmoids, in (0, 2)
    mask, x = ChannelMask(8, form="sum"), torch.randn(3, 8, 3, 3)
    avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    assert torch.allclose(mask(x), torch.sigmoid(mask.se(avg)) + torch.sigmoid(mask.se(mx)))


def test_with_the_hard_threshold_epsilon_learns_only_through_nia():
    from bianet_lib.model.attention import BidirectionalIntervention

    x = torch.randn(2, 16, 3, 3)
    grads = {}
    for use_nia in (False, True):
        torch.manual_seed(0)
        mod = BidirectionalIntervention(16, 8, gate_sharpness=0.0, truncation="zero", se_mask="sum",
                                        use_nia=use_nia, drop_p=0.0)
        out = mod(x)
        loss = out.positive.pow(2).sum() + (out.negative.pow(2).sum() if use_nia else 0)
        loss.backward()
        grads[use_nia] = mod.threshold.theta.grad
    assert grads[False] is None or float(grads[False]) == 0.0
    assert float(grads[True].abs()) > 0


def test_separate_discriminator_batches_standardise_each_modality_alone():
    from bianet_lib.model.network import BIANet

    cfg = load_config("cpu-small", overrides=["discriminator_batch=separate"])
    torch.manual_seed(0)
    model = BIANet(cfg)
    hv, hf = torch.randn(8, 128) + 3, torch.randn(8, 128) - 3
    lv, lf = model.discriminate(hv, hf)
    assert torch.allclose(lv, model.discriminator(hv)) and torch.allclose(lf, model.discriminator(hf))
    joint = BIANet(load_config("cpu-small"))
    joint.load_state_dict(model.state_dict())
    jv, _ = joint.discriminate(hv, hf)
    assert not torch.allclose(jv, lv)


# --- docs/paper-vs-fixed.md: every table generated, every quoted number read from the runs ---

RUNS = ROOT / "results/paper-vs-fixed"
DOC = ROOT / "docs/paper-vs-fixed.md"
N_TEST = 20  # the tree's test identities (write_vox_tree(n_test=20), quoted in the doc)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_paper_vs_fixed_tables_are_generated_from_the_committed_runs():
    from bianet_lib.reports import paper_vs_fixed as pvf
    from bianet_lib.reports.blocks import readme_blocks, render_readme_block

    text = DOC.read_text()
    blocks = readme_blocks(text)
    assert {kind for kind, _, _ in blocks} == {"paper-vs-fixed-epochs", "results-table", "health-table"}
    for kind, header, body in blocks:
        assert body.strip() == render_readme_block(kind, header, ROOT).strip(), kind
    runs = {"paper": ("paper", []), "paper-fixed": ("paper-fixed", []),
            "paper-lr1e-3": ("paper", ["lr_encoders=0.001", "lr_heads=0.001"])}
    assert set(runs) == set(pvf.RUNS)
    for name, (preset, extra) in runs.items():  # the committed files are the small ones, no weights
        kept = {p.name for p in (RUNS / name).iterdir()}
        assert {"config.yaml", "metrics.jsonl", "results.json", "provenance.json", "timing.jsonl",
                "diagnose-best.json"} <= kept
        cfg = BIANetConfig.from_yaml(RUNS / name / "config.yaml")
        assert cfg == load_config(preset, overrides=[
            "data=voxceleb", "audio_root=/tmp/pvs/tree/wav", "face_root=/tmp/pvs/tree/faces",
            f"cache_dir=/tmp/pvs/cache-{preset}", "face_weights=null", "device=cpu", "batch_size=16",
            "clip_seconds=1.0", "face_size=96", "epochs=3", "num_threads=1", "loader_workers=0", *extra])


def _load(name):
    from bianet_lib.reports.paper_vs_fixed import epoch_records

    run = RUNS / name
    return (epoch_records(run), json.loads((run / "results.json").read_text())["metrics"],
            json.loads((run / "diagnose-best.json").read_text()))


def test_the_paper_vs_fixed_text_quotes_the_runs():
    from bianet_lib.engine import diagnostics

    text = _flat(DOC.read_text())
    assert f"n_test={N_TEST}" in text
    ep, res, dg = _load("paper")
    fep, fres, fdg = _load("paper-fixed")

    def pair(d, key):
        return f"{d['vf']:.3f} / {d['fv']:.3f}" if key is None else f"{d[key]['vf']:.3f} / {d[key]['fv']:.3f}"

    def h(report, mod, key):
        return report["health"][mod][key]

    ck, fck, lck = (json.loads((RUNS / n / "results.json").read_text())["checkpoint"]
                    for n in ("paper", "paper-fixed", "paper-lr1e-3"))
    assert ck["epoch"] == 1 and ck["best_val_acc"] == max(r["val_acc"] for r in ep) == ep[0]["val_acc"]
    val = [r[k] for r in ep for k in ("val_acc_vf", "val_acc_fv")]
    cls, fcls, fcos = res["classifier"]["curve"], fres["classifier"]["curve"], fres["cosine"]["curve"]
    match = [(r["match_vf"] + r["match_fv"]) / 2 for r in ep]
    fab = fdg["ablations"]
    best = max(fep, key=lambda r: r["val_acc"])
    quotes = [
        f"between {min(val):.3f} and {max(val):.3f} in all three epochs",
        f"test 1:2 is {cls['vf']['2']:.3f} / {cls['fv']['2']:.3f}",
        f"weight reaches {ep[-1]['w']:.3f} in the last epoch",
        f"climbs from {match[0]:.3f} to {match[-1]:.3f}",
        "to three decimals (" + ", ".join(f"{r['discriminator']:.3f}" for r in ep) + ")",
        f"(linear probe {dg['discriminator']['probe_accuracy']:.3f}, the discriminator in eval mode "
        f"{dg['discriminator']['accuracy']:.3f})",
        f"{100 * h(dg, 'voice', 'saturated_share'):.1f}% of the voice affinity and "
        f"{100 * h(dg, 'face', 'saturated_share'):.1f}% of the face affinity",
        f"(voice {h(dg, 'voice', 'strong_share@0.01'):.3f} at 0.01, {h(dg, 'voice', 'strong_share@0.2'):.3f} at 0.2)",
        f"(entropy {h(dg, 'face', 'nia_entropy'):.3f} of uniform on both modalities)",
        f"attends {h(dg, 'face', 'eq19_pos_effective_rows'):.1f} / {h(dg, 'voice', 'eq19_pos_effective_rows'):.1f} "
        f"of the {h(dg, 'voice', 'tokens')} channel rows",
        f"median is {h(dg, 'voice', 'mask_q50'):.3f} and its 5% quantile {h(dg, 'voice', 'mask_q05'):.3f}",
        f"h_hat is {h(dg, 'face', 'pia_contribution'):.3f} (face) and {h(dg, 'voice', 'pia_contribution'):.3f} (voice)",
        f"(probe {dg['probes']['face/h_hat']['identity']['accuracy']:.2f} against "
        f"{dg['probes']['face/h_hat']['identity']['chance']:.2f} chance), voice embeddings far less "
        f"({dg['probes']['voice/h_hat']['identity']['accuracy']:.2f})",
        f"validation 1:2 {best['val_acc_vf']:.3f} / {best['val_acc_fv']:.3f} after the second epoch",
        f"test 1:2 {fcls['vf']['2']:.3f} / {fcls['fv']['2']:.3f} by the classifier and "
        f"{fcos['vf']['2']:.3f} / {fcos['fv']['2']:.3f} by cosine",
        f"h_hat is {h(fdg, 'face', 'pia_contribution'):.3f} (face) and {h(fdg, 'voice', 'pia_contribution'):.3f} (voice)",
        f"(entropy {h(fdg, 'face', 'pia_entropy'):.3f} / {h(fdg, 'voice', 'pia_entropy'):.3f} of uniform "
        f"over {h(fdg, 'face', 'tokens')} tokens)",
        f"lowers 1:2 from {pair(fab, 'full')} to {pair(fab, 'attended_zero')}",
        f"(entropy {h(fdg, 'face', 'nia_entropy'):.3f} / {h(fdg, 'voice', 'nia_entropy'):.3f})",
        f"Eq. 19 attends {h(fdg, 'face', 'eq19_pos_effective_rows'):.1f} / "
        f"{h(fdg, 'voice', 'eq19_pos_effective_rows'):.1f} rows",
        f"(1:2 from -z_neg {pair(fab, 'neg_only')})",
        f"with w = 0 the model reads {pair(fab, 'w_zero')} against {pair(fab, 'full')}",
        f"(share |A| > 0.9: {h(fdg, 'face', 'saturated_share'):.3f} on both)",
        f"(face {h(fdg, 'face', 'strong_share@0.01'):.3f} at 0.01, {h(fdg, 'face', 'strong_share@0.2'):.3f} at 0.2)",
        f"{h(fdg, 'face', 'epsilon'):.3f} / {h(fdg, 'voice', 'epsilon'):.3f} after {fck['step']} steps",
        f"the checkpoint of epoch {ck['epoch']} for `paper` (every epoch at chance, the first kept), epoch "
        f"{fck['epoch']} for `paper-fixed` and epoch {lck['epoch']} for `paper` at lr 1e-3",
        f"at {fdg['discriminator']['accuracy']:.3f} on held-out embeddings while a linear probe still reads "
        f"{fdg['discriminator']['probe_accuracy']:.3f}",
        f"{diagnostics.TRIALS_PER_ID} trials per test identity, {diagnostics.TRIALS_PER_ID * N_TEST} per direction",
    ]
    def minutes(names):
        sec = [json.loads(line)["seconds"] for n in names
               for line in (RUNS / n / "timing.jsonl").read_text().splitlines() if line.strip()]
        return f"{min(sec) / 60:.1f} to {max(sec) / 60:.1f}"

    quotes += [f"an epoch took {minutes(['paper', 'paper-fixed'])} minutes of wall time",
               f"its epochs took {minutes(['paper-lr1e-3'])} minutes"]
    lep, lres, ldg = _load("paper-lr1e-3")
    lab, lcls = ldg["ablations"], lres["classifier"]["curve"]
    lmatch = [(r["match_vf"] + r["match_fv"]) / 2 for r in lep]
    quotes += [
        f"validation 1:2 {lep[-1]['val_acc_vf']:.3f} / {lep[-1]['val_acc_fv']:.3f} in the last epoch, "
        f"test 1:2 {lcls['vf']['2']:.3f} / {lcls['fv']['2']:.3f} (classifier)",
        f"contribution {h(ldg, 'face', 'pia_contribution'):.3f} (face) and {h(ldg, 'voice', 'pia_contribution'):.3f} (voice)",
        f"lowers 1:2 from {pair(lab, 'full')} to {pair(lab, 'attended_zero')}",
        f"(entropy {h(ldg, 'voice', 'nia_entropy'):.3f} of uniform on both)",
        f"drops 1:2 to {pair(lab, 'neg_shuffled')}",
        f"-z_neg alone reads {pair(lab, 'neg_only')}",
        f"w = 0 gives {pair(lab, 'w_zero')}",
        f"rises from {lmatch[0]:.3f} to {lmatch[-1]:.3f} over the three epochs while w goes to {lep[-1]['w']:.3f}",
        f"{ldg['discriminator']['accuracy']:.3f} on held-out embeddings) while a linear probe separates the "
        f"modalities at {ldg['discriminator']['probe_accuracy']:.3f}",
        f"(share |A| > 0.9: {h(ldg, 'voice', 'saturated_share'):.3f}; face {h(ldg, 'face', 'saturated_share'):.3f})",
    ]
    assert min(h(ldg, m, "nia_entropy") for m in ("face", "voice")) > 0.999
    assert all(abs(r["discriminator"] - r["adversarial"]) < 1e-3 for r in lep)
    assert lmatch == sorted(lmatch)
    assert all(lab["full"][d] > lab["attended_zero"][d] and lab["full"][d] > lab["neg_shuffled"][d] for d in ("vf", "fv"))
    assert lcls["vf"]["2"] > 0.7 and lcls["fv"]["2"] > 0.7 > max(cls["vf"]["2"], cls["fv"]["2"])  # the lr decides
    missing = [q for q in quotes if _flat(q) not in text]
    assert not missing, missing
    # the statements behind the words
    assert all(0.45 < v < 0.55 for v in val)  # chance
    assert match == sorted(match) and ep[-1]["w"] > 1.5  # rising loss under the literal weight
    assert all(abs(r["discriminator"] - r["adversarial"]) < 1e-3 for r in ep)  # blind discriminator
    assert h(dg, "voice", "nia_entropy") > 0.999 and h(dg, "face", "nia_entropy") > 0.999  # uniform NIA
    assert h(fdg, "face", "saturated_share") == 0.0 == h(fdg, "voice", "saturated_share")
    assert all(fab["full"][d] > fab["attended_zero"][d] for d in ("vf", "fv"))  # PIA helps at test
    assert (fab["full"]["vf"] > fab["w_zero"]["vf"]) and (fab["full"]["fv"] < fab["w_zero"]["fv"])  # mixed
    assert fdg["discriminator"]["accuracy"] < fdg["discriminator"]["probe_accuracy"]
    assert abs(h(fdg, "face", "epsilon") - 0.1) < 0.005 and abs(h(fdg, "voice", "epsilon") - 0.1) < 0.005


def test_the_hard_threshold_needs_the_zeroing_truncation():
    assert load_config("cpu-small", overrides=["truncation=zero", "gate_sharpness=0"]).gate_sharpness == 0
    with pytest.raises(ValueError, match=r"gate_sharpness=0.0: must be > 0 \(and finite\); 0 \(hard\) only with "
                                         r"truncation='zero'"):
        load_config("paper", overrides=["truncation=drop"])
    with pytest.raises(ValueError, match="truncation='cut'"):
        load_config("paper", overrides=["truncation=cut"])
