"""The one configuration object: presets, YAML round trip, overrides, and clear errors."""

import pytest

from bianet_lib.config import BIANetConfig, load_config


def test_paper_preset_follows_the_paper_and_cpu_small_differs():
    paper = load_config("paper")
    assert (paper.face_encoder, paper.audio_encoder, paper.face_size) == ("resnet18", "se-resnet", 224)
    assert (paper.clip_seconds, paper.batch_size, paper.epochs, paper.tau1) == (10.0, 50, 50, 10.0)
    assert paper.lr_milestones == (20, 40) and paper.generator == "paper"
    assert load_config("cpu-small").face_encoder == "small"


def test_yaml_round_trip_and_file_preset(tmp_path):
    cfg = load_config("paper", overrides=["tau2=5", "lr_milestones=[3, 4]"])
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert BIANetConfig.from_yaml(path) == cfg
    small = tmp_path / "s.yaml"
    small.write_text("preset: paper\nepochs: 3\n")
    loaded = load_config(path=small)
    assert loaded.epochs == 3 and loaded.face_encoder == "resnet18"


def test_speed_fields_are_on_for_new_cpu_runs_and_off_for_runs_saved_before_them(tmp_path):
    """cpu-small trains NHWC now; a run's saved config that predates the speed fields (every
    committed run before issue 28) still loads as the NCHW eager step it was made with, through
    from_dict and through a config file, while a few settings in a file still take the preset's."""
    import yaml

    from bianet_lib.config import SPEED_BEFORE_ISSUE_28, is_saved_run_config

    assert load_config("cpu-small").channels_last and BIANetConfig().channels_last
    assert not load_config("paper").channels_last and not load_config("paper-fixed").channels_last
    assert not any(load_config(p).compile for p in ("cpu-small", "paper", "paper-fixed"))
    old = {k: v for k, v in BIANetConfig().to_dict().items() if k not in SPEED_BEFORE_ISSUE_28}
    assert is_saved_run_config(old) and not BIANetConfig.from_dict(old).channels_last
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(old))
    assert not load_config(path=saved).channels_last
    assert load_config(path=saved, overrides=["channels_last=true"]).channels_last
    assert load_config("cpu-small", path=saved).channels_last  # a preset named: the preset, then the file
    few = tmp_path / "few.yaml"
    few.write_text("epochs: 3\n")
    assert not is_saved_run_config(yaml.safe_load(few.read_text())) and load_config(path=few).channels_last
    # the provenance battery's cases drop where data, cache and weights live: still a saved config
    from bianet_lib.engine.equivalence import shrink

    assert is_saved_run_config(shrink(old)) and not BIANetConfig.from_dict(shrink(old)).channels_last
    # one field more missing than any saved config ever lacked: a partial file, read over the preset
    partial = {k: v for k, v in old.items() if k != "epochs"}
    saved.write_text(yaml.safe_dump(partial))
    assert not is_saved_run_config(partial) and load_config(path=saved).channels_last


@pytest.mark.parametrize("override, needle", [
    ("epochs=abc", "epochs"), ("face_widths=[1, x]", "face_widths"), ("k=1", "k=1"),
    ("bogus=1", "bogus"), ("tau1=[1,", "not a YAML value"), ("curriculum=linear", "curriculum"),
    ("use_pia=3", "use_pia"),
    # ranges (issue 13): each names the field and the allowed range
    ("tau1=-1", r"tau1=-1: must be > 0"), ("tau2=0", r"tau2=0: must be > 0"),
    ("lr_heads=0", "lr_heads=0"), ("epsilon=1.5", r"epsilon=1.5: must be in \[0, 1\)"),
    ("lr_milestones=[3, 2]", "lr_milestones.*strictly increasing"), ("k=100", "k=100: must be <= batch_size=64"),
    ("face_widths=[8, 8, 16, 16]", "face_widths.*audio_widths"), ("bias=-0.1", "bias"),
    ("world_n_test=1", "world_n_test=1: must be >= k=2"), ("clip_seconds=0", "clip_seconds"),
])
def test_bad_overrides_name_the_field(override, needle):
    with pytest.raises(ValueError, match=needle if "\\" in needle or ".*" in needle else needle.replace("[", r"\[")):
        load_config("cpu-small", overrides=[override])


def test_configs_saved_with_the_retired_extra_field_still_load():
    old = {**BIANetConfig().to_dict(), "extra": {}}  # what configs and checkpoints before 2026-11-26 hold
    assert BIANetConfig.from_dict(old) == BIANetConfig()
    with pytest.raises(ValueError, match="unknown config field.*extra"):
        BIANetConfig.from_dict({**old, "extra": {"x": 1}})  # a non-empty one was never written: refuse


def test_every_preset_and_grid_run_is_in_range():
    """The range checks refuse nonsense, not a configuration the project uses."""
    from bianet_lib.config import PRESETS
    from bianet_lib.experiments import grids as ex

    for preset in PRESETS:
        load_config(preset)
    for grid in ex.GRIDS.values():
        for run in grid.runs:
            grid.config(run)


def test_every_committed_run_config_reads_as_a_saved_config(tmp_path):
    """Each committed run's config (and each provenance battery case, which drops the locations)
    is recognised as a saved config, so a config file of it loads exactly what from_dict loads:
    a field added to the config later must be listed in ADDED_AFTER_FIRST_RUNS, or this fails."""
    from pathlib import Path

    import yaml

    from bianet_lib.config import is_saved_run_config
    from bianet_lib.engine.equivalence import battery_cases, committed_configs

    root = Path(__file__).resolve().parents[1]
    configs = committed_configs(root)
    assert len(configs) > 100
    for name, values in [*configs.items(), *battery_cases(root).items()]:
        assert is_saved_run_config(values), name
    old = next(v for v in configs.values() if "channels_last" not in v)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    assert load_config(path=path) == BIANetConfig.from_dict(old) and not load_config(path=path).channels_last
