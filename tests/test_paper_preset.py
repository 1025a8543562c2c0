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


def test_the_committed_course_config_loads_with_its_behaviour():
    values = yaml.safe_load((ROOT / "results/course/bianet-cpu-small/config.yaml").read_text())
    assert not set(NEW_FIELDS) & set(values)  # saved before the options existed
    cfg = BIANetConfig.from_dict(values)
    assert {k: getattr(cfg, k) for k in NEW_FIELDS} == NEW_FIELDS
    assert cfg == BIANetConfig.from_dict({**config_mod.cpu_small().to_dict(), **values})


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
