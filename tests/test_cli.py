"""Command line: bad input exits 2 with one line; evaluate reproduces train's results.json."""

import json
import subprocess
import sys

import pytest
import torch

import bianet_lib.train as train_mod
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
    (["bench", "--steps", "0"], "--steps"),
    (["bench", "--device", "tpu"], "invalid choice"),
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
