"""Command line: bad input exits 2 with one line; evaluate reproduces train's results.json."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bianet_lib.engine.trainer as train_mod
from bianet_lib import cli

TINY = ["face_size=32", "face_widths=[8,8,16,16]", "audio_widths=[8,8,16,16]", "attn_channels=8",
        "hidden_dim=32", "embed_dim=16", "n_mels=16", "batch_size=8", "epochs=2", "num_threads=1",
        "device=cpu", "world_n_train=16", "world_n_val=10", "world_n_test=10",
        "world_per_id_train=2", "world_per_id_eval=2", "clip_seconds=0.5"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _exit_code(argv):
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


@pytest.mark.parametrize("argv, needle", [
    (["train", "--run-dir", "R", "--bogus"], "unrecognized arguments"),
    (["train"], "--run-dir"),
    (["train", "--run-dir", "R", "--preset", "huge"], "invalid choice"),
    (["train", "--run-dir", "R", "--set", "no_such_field=1"], "unknown config field"),
    (["train", "--run-dir", "R", "--set", "epochs"], "expected key=value"),
    (["train", "--run-dir", "R", "--set", "epochs=abc"], "epochs"),
    (["train", "--run-dir", "R", "--set", "face_size=[1,"], "face_size"),
    (["train", "--run-dir", "R", "--set", "k=1"], "k=1"),
    (["train", "--run-dir", "R", "--set", "metric_loss=cosine"], "metric_loss"),
    (["train", "--run-dir", "R", "--resume"], "latest.pt not found"),
    (["train", "--run-dir", "R", "--config", "missing.yaml"], "missing.yaml"),
    (["evaluate", "--run-dir", "does/not/exist"], "no such directory"),
    (["evaluate", "--run-dir", "."], "not found"),
    # ResNet-18 leaves a 2x2 map of a 64x64 face: refused before any data is read, naming the field
    (["train", "--preset", "paper", "--run-dir", "R", "--set", "face_size=64", "face_weights=null", "device=cpu"],
     "config field face_size=64: the encoder's map is (2, 2)"),
    (["bench", "--steps", "0"], "--steps"),
    (["bench", "--device", "tpu"], "invalid choice"),
    (["bench", "--rounds", "2"], "--rounds, --threads and --this-set go with --against"),
    (["bench", "--this-set", "compile=true"], "--this-set go with --against"),
    (["bench", "--rounds", "4"], "--rounds, --threads and --this-set go with --against"),
    (["bench", "--against", "HEAD", "--table"], "--against goes without --table"),
    (["bench", "--against", "no-such-revision-zz"], "--against no-such-revision-zz: no such commit"),
    (["bench", "--against", "HEAD", "--rounds", "0"], "rounds 0"),
    (["bench", "--against", "HEAD", "--set", "no_such_field=1"], "unknown config field"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_real_entry_point_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bianet_lib", "train", "--run-dir", str(tmp_path),
                           "--set", "batch_size=abc"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "batch_size" in proc.stderr


def test_evaluate_reproduces_train_results(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    seen = []
    real_init = train_mod.Trainer.__init__

    def spy(self, cfg, train, val, *args, **kwargs):
        seen.append((train.name, val.name))
        real_init(self, cfg, train, val, *args, **kwargs)

    monkeypatch.setattr(train_mod.Trainer, "__init__", spy)
    run = tmp_path / "run"
    sets = _sets(TINY + [f"cache_dir={tmp_path / 'cache'}"])
    assert cli.main(["train", "--run-dir", str(run), "--no-progress", *sets]) == 0
    assert seen == [("train", "val")]  # the test split never reaches the trainer
    results = json.loads((run / "results.json").read_text())
    for route in ("classifier", "cosine"):
        m = results["metrics"][route]
        assert m["test_split"] == "test" and m["val_split"] == "val"
        assert set(m["curve"]["vf"]) == {str(k) for k in range(2, 11)}
        assert m["verification"]["verification"]["threshold_source"] == "val"
    assert results["checkpoint"]["file"] == "best.pt"
    assert "V-F 1:2" in capsys.readouterr().out

    # a second train into the same directory is refused; evaluate reproduces the numbers
    assert cli.main(["train", "--run-dir", str(run), *sets]) == 2
    out = tmp_path / "again.json"
    assert cli.main(["evaluate", "--run-dir", str(run), "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["metrics"] == results["metrics"]
    assert again["checkpoint"] == results["checkpoint"]
    assert "identical to the metrics" in capsys.readouterr().out
    assert cli.main(["evaluate", "--run-dir", str(run), "--checkpoint", "latest",
                     "--out", str(tmp_path / "latest.json")]) == 0
    assert "warning" not in capsys.readouterr().err  # the run's own checkpoint
    # issue 27: a checkpoint of another config in this folder (here: the folder's config edited)
    import yaml

    own = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(dict(own, tau1=own["tau1"] * 2, use_nia=False)))
    assert cli.main(["evaluate", "--run-dir", str(run), "--out", str(tmp_path / "foreign.json")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "tau1, use_nia" in err[0]


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def _bad_input_setup(tmp_path):
    """A started run (config.yaml of 25 epochs), a run folder with a junk best.pt, a file where
    a folder is expected, and a malformed YAML file."""
    from bianet_lib.config import BIANetConfig

    (tmp_path / "started").mkdir()
    BIANetConfig(epochs=25).to_yaml(tmp_path / "started" / "config.yaml")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "best.pt").write_bytes(b"junk")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n  tau1: 2\n")
    (tmp_path / "audio").mkdir()
    (tmp_path / "faces").mkdir()


TRAIN = ["train", "--run-dir", "R", "--no-progress", "--set"]
INDEX = ["index", "--audio-root", "audio", "--face-root", "faces", "--split", "wen"]


@pytest.mark.parametrize("argv, needles", [
    # issue 13, item 7: nonsense that used to train to exit 0
    (TRAIN + ["tau1=-1"], ["tau1=-1", "> 0"]),
    (TRAIN + ["tau2=0"], ["tau2=0", "> 0"]),
    (TRAIN + ["lr_encoders=-1"], ["lr_encoders=-1", "> 0"]),
    (TRAIN + ["epsilon_mode=fixed", "epsilon=-5"], ["epsilon=-5", "[0, 1)"]),
    (TRAIN + ["lr_schedule=step", "lr_milestones=[-3]"], ["lr_milestones", ">= 1"]),
    (["train", "--run-dir", "started", "--resume", "--set", "epochs=27"], ["epochs=27", "(run: 25)"]),
    # item 6: tracebacks after the work had started
    (TRAIN + ["k=9", "batch_size=8"], ["k=9", "batch_size=8"]),
    (TRAIN + ["batch_size=32", "world_n_train=16"], ["batch_size=32", "world_n_train=16"]),
    (TRAIN + ["face_widths=[8,8,16,16]"], ["face_widths", "audio_widths"]),
    (INDEX + ["--clip-seconds", "-1", "--validate"], ["--clip-seconds", "> 0"]),
    (INDEX + ["--out", "missing/index.csv"], ["--out", "does not exist"]),
    (INDEX + ["--out", "audio"], ["--out", "folder"]),
    (["bench", "--out", "missing/b.json"], ["--out", "does not exist"]),
    (["bench", "--out", "audio"], ["--out", "is a folder"]),
    (["evaluate", "--run-dir", "done", "--out", "missing/e.json"], ["--out", "does not exist"]),
    (["evaluate", "--run-dir", "done", "--out", "audio"], ["--out", "is a folder"]),
    (["evaluate", "--run-dir", "done"], ["best.pt", "not a BIANet checkpoint"]),
    # item 11 and more found by trying
    (["bench", "--config", "bad.yaml"], ["bad.yaml", "not valid YAML", "line"]),
    (["course", "run", "--notebooks-dir", str(Path(__file__).resolve().parents[1] / "notebooks"),
      "--output-dir", "out", "--param", "FAST=[1,"], ["--param FAST"]),
    (TRAIN + ["bias=1.5"], ["bias=1.5", "[0, 1]"]),
    (TRAIN + ["world_n_val=1"], ["world_n_val=1", ">= k=2"]),
    (TRAIN + ["w_adv=-1"], ["w_adv=-1", ">= 0"]),
    (TRAIN + ["num_threads=-2"], ["num_threads=-2", ">= 0"]),
    (TRAIN + ["loader_workers=-2"], ["loader_workers=-2", ">= -1"]),
    (TRAIN + ["audio_blocks=[1,1]"], ["audio_blocks", "one entry per"]),
    (["train", "--run-dir", "afile"], ["afile", "not a directory"]),
    (["experiments", "smoke", "--results-dir", "afile"], ["afile", "not a folder"]),
    (["experiments", "smoke", "--workers", "0"], ["--workers"]),
])
def test_bad_input_table_exit_2_one_line_nothing_written(argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIANET_CACHE", str(tmp_path / "cache"))
    _bad_input_setup(tmp_path)
    before = _tree(tmp_path)
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert _tree(tmp_path) == before, "a refused command wrote something"


# --- issue 27, item 3: every field checked before any work, each error naming its field -----------
@pytest.mark.parametrize("bad, field", [
    (["epsilon_mode=adaptive", "epsilon=.nan"], "epsilon"),  # used to crash writing results.json
    (["tau_nia=.nan"], "tau_nia"),
    (["tau_nia=0"], "tau_nia"),
    (["tau_nia=-5"], "tau_nia"),
    (["lr_heads=.inf"], "lr_heads"),
    (["w_metric=.nan"], "w_metric"),
    (["clip_seconds=.nan"], "clip_seconds"),
    (["world_local_scale=.inf"], "world_local_scale"),
    (["seed=-1"], "seed"),  # was blamed on batch_size, after the world was generated
    (["world_seed=-1"], "world_seed"),
    (["face_strides=[0,2,2,2]"], "face_strides"),  # was blamed on face_size
    (["attn_channels=1000000000"], "attn_channels"),  # an allocator traceback
    (["world_n_train=1000000000"], "world_n_train"),
])
def test_config_errors_name_their_field_before_any_work(bad, field, capsys, tmp_path, monkeypatch):
    from bianet_lib.data import sources

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "load_world", lambda *a, **k: pytest.fail("work started: the world was loaded"))
    assert _exit_code(["train", "--run-dir", "R", "--no-progress", *_sets(TINY + bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"config field {field}=" in err and err.count("config field") == 1, err
    assert not (tmp_path / "R").exists()


def test_memory_errors_say_how_much_is_needed_and_available(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(["train", "--run-dir", "R", *_sets(TINY + ["attn_channels=1000000000"])]) == 2
    err = capsys.readouterr().err
    assert "parameters" in err and "GiB" in err and "memory" in err


def test_numbers_written_as_yaml_strings_are_numbers(tmp_path):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: in --set and in a config file it is the
    number people meant; a word is still refused, naming the field."""
    from bianet_lib.commands.train import config_from_args

    parser = cli.build_parser()
    args = parser.parse_args(["train", "--run-dir", "R", "--set", "lr_encoders=1e-3", "lr_heads=2E-4"])
    cfg = config_from_args(args)
    assert (cfg.lr_encoders, cfg.lr_heads) == (0.001, 0.0002)
    (tmp_path / "c.yaml").write_text("lr_encoders: 1e-3\nweight_decay: 5e-5\n")
    cfg = config_from_args(parser.parse_args(["train", "--run-dir", "R", "--config", str(tmp_path / "c.yaml")]))
    assert (cfg.lr_encoders, cfg.weight_decay) == (0.001, 5e-05)
    with pytest.raises(cli.UsageError, match="lr_encoders='fast'"):
        config_from_args(parser.parse_args(["train", "--run-dir", "R", "--set", "lr_encoders=fast"]))
