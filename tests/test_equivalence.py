"""Number-equivalence certificates (bianet_lib.engine.equivalence): what makes a committed run of
older code still count as made by today's code, and the battery that decides it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bianet_lib.engine import equivalence as eq
from bianet_lib.engine import provenance as pv

ROOT = Path(__file__).resolve().parents[1]
COURSE_CASE = "results/course/bianet-cpu-small/config.yaml"


def _cert(a: str, b: str, schema_a: str = "s", schema_b: str = "s") -> dict:
    return {"from": {"code_hash": a, "config_schema": schema_a}, "to": {"code_hash": b, "config_schema": schema_b},
            "equal": True, "cases": {}}


def test_equivalent_hashes_follow_chains_both_ways_and_nothing_else():
    certs = [_cert("a", "b"), _cert("c", "b"), _cert("x", "y")]
    assert eq.equivalent_hashes("a", certs) == {"a", "b", "c"}
    assert eq.equivalent_hashes("b", certs) == {"a", "b", "c"}
    assert eq.equivalent_hashes("z", certs) == {"z"}


def test_a_record_of_certified_code_matches_and_an_uncertified_one_does_not():
    current = pv.provenance_record({"seed": 0, "num_threads": 1, "device": "cpu"})
    old = dict(current, code_hash="0" * 64, modules={"bianet_lib/model/network.py": "f" * 64},
               config_schema="1" * 64)
    assert pv.check_provenance(current) == []
    problems = pv.check_provenance(old)
    assert len(problems) == 2 and "no certificate" in problems[0] and "schema" in problems[1]
    chain = [_cert("0" * 64, "2" * 64, "1" * 64, "3" * 64),
             _cert("2" * 64, current["code_hash"], "3" * 64, current["config_schema"])]
    assert pv.check_provenance(old, certificates=chain) == []
    assert len(pv.check_provenance(old, certificates=chain[:1])) == 2  # the chain must reach today's code


def test_a_certified_older_schema_tolerates_fields_its_config_lacks_but_not_changed_values():
    from bianet_lib.config import load_config

    current = pv.provenance_record({"seed": 0})
    config = load_config("cpu-small").to_dict()  # what today's code writes
    assert pv.check_provenance(current, config) == []
    older = dict(current, config_schema="1" * 64)
    certs = [_cert(current["code_hash"], current["code_hash"], "1" * 64, current["config_schema"])]
    lacking = {k: v for k, v in config.items() if k != "tau_nia"}  # made before tau_nia existed
    assert pv.check_provenance(older, lacking, certs) == []
    assert pv.check_provenance(current, lacking) == ["its config differs from what the current code writes in tau_nia"]
    changed = dict(lacking, tau1=[1, 2])  # a value today's code would not write back
    assert pv.check_provenance(older, changed, certs)[0].startswith("its config no longer loads")


def test_shrink_keeps_the_switches_and_shrinks_the_sizes():
    small = eq.shrink({"use_pia": False, "tau1": 20.0, "seed": 3, "world_n_train": 300, "epochs": 16,
                       "cache_dir": "/x", "k": 2, "face_strides": (1, 2, 2, 1), "world_preset": "local"})
    assert small["use_pia"] is False and small["tau1"] == 20.0 and small["world_preset"] == "local"
    assert small["seed"] == 0 and small["world_n_train"] == 8 and small["epochs"] == 2
    assert small["face_widths"] == [8, 8, 16, 16] and small["face_strides"] == [1, 2, 2, 1]
    assert "cache_dir" not in small
    paper = eq.shrink({"face_encoder": "resnet18", "audio_encoder": "se-resnet", "audio_widths": [64, 128, 256, 512],
                       "k": 5})
    assert paper["audio_widths"] == [64, 128, 256, 512] and "face_widths" not in paper
    assert paper["batch_size"] == 5  # a 1:k training trial needs k samples in a batch


def test_the_battery_covers_every_committed_configuration():
    cases = eq.battery_cases(ROOT)
    configs = eq.committed_configs(ROOT)
    assert {json.dumps(eq.shrink(c), sort_keys=True) for c in configs.values()} == \
        {json.dumps(c, sort_keys=True) for c in cases.values()}
    assert COURSE_CASE in cases and any(c.get("data") == "voxceleb" for c in cases.values())


def test_committed_certificates_are_complete_and_agreeing():
    certs = eq.load_certificates(ROOT / eq.CERTIFICATES)
    for cert in certs:
        assert cert["equal"] and not cert["differing"]
        assert cert["cases"] and all(len(d) == 64 for d in cert["cases"].values())
        assert len(cert["from"]["revision"]) == 40


def test_the_battery_tells_numbers_apart_and_reproduces_the_certificate(tmp_path):
    """The evidence behind a certificate: a case's digest is the same on a rerun, changes when one
    number of the config changes, and (for the certificate of today's code) equals the recorded one."""
    case = eq.battery_cases(ROOT)[COURSE_CASE]
    cases = {"a": case, "again": case, "tau1": dict(case, tau1=case["tau1"] * 2)}
    digests = eq.run_battery(ROOT, cases, tmp_path)
    assert digests["a"] == digests["again"] and len(digests["a"]) == 64
    assert digests["tau1"] != digests["a"]
    current = pv.combined_hash(pv.code_hashes())
    mine = [c for c in eq.load_certificates(ROOT / eq.CERTIFICATES) if c["to"]["code_hash"] == current]
    if not mine:
        pytest.skip("no certificate names today's code: every committed run must match it directly "
                    "(test_committed_runs_match_current_code checks that)")
    if mine[-1].get("machine") != eq.machine_fingerprint():
        pytest.skip(f"the certificate's digests are bit-level and were recorded on another kind of machine "
                    f"({mine[-1].get('machine')}); this one is {eq.machine_fingerprint()}")
    assert mine[-1]["cases"][COURSE_CASE] == digests["a"], \
        "the newest certificate's battery does not reproduce on today's code: re-certify"


def test_the_battery_runs_the_library_it_is_given(tmp_path):
    """certify's premise: each battery runs the library under its own root, never the repository's
    (a subprocess started in the repository would import it first). A copy with one planted
    change in the training code gives another digest; an unchanged copy the same one."""
    import shutil

    case = {COURSE_CASE: eq.battery_cases(ROOT)[COURSE_CASE]}
    same, planted = tmp_path / "same", tmp_path / "planted"
    for root in (same, planted):
        shutil.copytree(ROOT / "bianet_lib", root / "bianet_lib", ignore=shutil.ignore_patterns("__pycache__"))
    trainer = planted / "bianet_lib" / "engine" / "trainer.py"
    text = trainer.read_text()
    assert "loss.backward()" in text
    trainer.write_text(text.replace("loss.backward()", "(loss * 1.5).backward()", 1))
    assert eq.code_identity(same)["code_hash"] == pv.combined_hash(pv.code_hashes())
    assert eq.code_identity(planted)["code_hash"] != eq.code_identity(same)["code_hash"]
    ours = eq.run_battery(ROOT, case, tmp_path / "ours")
    assert eq.run_battery(same, case, tmp_path / "b-same") == ours
    assert eq.run_battery(planted, case, tmp_path / "b-planted")[COURSE_CASE] != ours[COURSE_CASE]


def test_compare_separates_differing_from_configurations_the_old_code_cannot_run():
    d = "a" * 64
    old = {"same": d, "other": "b" * 64, "new-field": eq.REFUSED, "crashed": "exit code 1"}
    new = {"same": d, "other": d, "new-field": d, "crashed": d}
    assert eq.compare(old, new) == (["crashed", "other"], ["new-field"])
    # the working tree must run every case: one it refuses is a difference, not a skip
    assert eq.compare({"x": eq.REFUSED}, {"x": eq.REFUSED}) == (["x"], [])


def test_an_older_library_raising_on_bad_input_counts_as_refused(tmp_path):
    """A library whose command line raises ValueError on a configuration it cannot run (an older
    revision meeting a world preset it lacks) gives that case REFUSED, not a crashed battery."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(ROOT / "bianet_lib", old / "bianet_lib", ignore=shutil.ignore_patterns("__pycache__"))
    cli = old / "bianet_lib" / "cli.py"
    text = cli.read_text()
    head = "def main(argv: list[str] | None = None) -> int:\n"
    assert head in text
    cli.write_text(text.replace(head, head + "    raise ValueError(\"world_preset='new': expected one of ('old',)\")\n", 1))
    case = {COURSE_CASE: eq.battery_cases(ROOT)[COURSE_CASE]}
    assert eq.run_battery(old, case, tmp_path / "b") == {COURSE_CASE: eq.REFUSED}


def test_unfinished_grid_runs_are_not_committed_configurations(tmp_path):
    run = tmp_path / "results" / "experiments" / "g" / "runs" / "a__s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 3\n")
    rec = {"metrics": {}, "config": {"epochs": 2}}
    (run / "results.json").write_text(json.dumps(rec))
    (tmp_path / "results" / "experiments" / "g" / "a__s0.json").write_text(json.dumps(rec))
    assert eq.committed_configs(tmp_path) == {"results/experiments/g/a__s0.json": {"epochs": 2}}
