"""Issue 28: the faster step computes what the step computed before.

The references (tests/fixtures/step-reference-<CPU kernel family>.json, AVX2 and AVX512) were
written by the step as it was before this change (commit 731df27, see
tests/fixtures/step_fingerprint.py): every loss term and, per
parameter, its gradient's sum, norm and projection on a fixed random vector, after one step
of cpu-small's shapes on a fixed random batch. The NCHW eager path (channels_last and compile
off: cpu-small's default until the course was retrained NHWC, and what every saved config
without the fields loads as) must agree to float32 round-off; channels_last (now cpu-small's
default) and torch.compile reorder float sums, and
gradients that are sums with heavy cancellation (batch-norm biases) move by up to ~1% of their
own norm under any reordering (measured; the loss terms agree to 1e-5), hence the looser bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bianet_lib.engine.trainer as train_mod
from bianet_lib.engine import gpu_check
from bianet_lib.engine.trainer import NonFiniteLossError, Trainer
from tests.fixtures.step_fingerprint import fingerprint
from tests.helpers import (  # noqa: F401 (autouse fixture)
    one_thread,
    poison_nth_call,
    random_split,
    tiny_config,
)

#: the former step's fingerprint on this machine's CPU kernel family, or (a family no reference was
#: written on) the AVX2 one, compared then only to the cross-machine tolerance (see the first test)
CAPABILITY = torch.backends.cpu.get_cpu_capability()
_REF_FILE = Path(__file__).parent / "fixtures" / f"step-reference-{CAPABILITY}.json"
SAME_KERNELS = _REF_FILE.is_file()
REFERENCE = json.loads((_REF_FILE if SAME_KERNELS else _REF_FILE.with_name("step-reference-AVX2.json")).read_text())


def assert_same_step(got: dict, ref: dict, grad_tol: float, term_tol: float) -> None:
    assert set(got["terms"]) == set(ref["terms"])
    for k, v in ref["terms"].items():
        assert got["terms"][k] == pytest.approx(v, rel=term_tol, abs=term_tol), k
    assert set(got["grads"]) == set(ref["grads"])
    total_ref = total_diff = 0.0
    # a gradient that is zero up to round-off (e.g. a bias a softmax cancels) is compared on the
    # scale of the largest one, not its own
    floor = 1e-6 * max(r[1] for r in ref["grads"].values() if r is not None) + 1e-6
    for name, r in ref["grads"].items():
        g = got["grads"][name]
        assert (g is None) == (r is None), f"{name}: gradient present in one step only"
        if r is None:
            continue
        scale = r[1] + floor
        assert abs(g[1] - r[1]) <= grad_tol * scale, f"{name}: gradient norm {g[1]} vs {r[1]}"
        assert abs(g[2] - r[2]) <= 5 * grad_tol * scale, f"{name}: gradient direction differs"
        total_ref += r[1] ** 2
        total_diff += (g[2] - r[2]) ** 2
    assert total_diff ** 0.5 <= grad_tol * total_ref ** 0.5, "gradients differ overall"
    for name, r in ref["buffers"].items():
        assert got["buffers"][name] == pytest.approx(r, rel=1e-3, abs=1e-4), name


def test_nchw_eager_step_matches_the_step_before_the_change():
    """To float32 round-off against the former step run on the same CPU kernel family; on a
    family with no reference, to the tolerance that separates kernel families (measured: AVX512
    against AVX2 up to 0.3% on a batch-norm bias's gradient), said in the failure message."""
    grad_tol = 1e-5 if SAME_KERNELS else 1e-2
    try:
        assert_same_step(fingerprint(["channels_last=false", "compile=false"]), REFERENCE, grad_tol=grad_tol, term_tol=1e-6 if SAME_KERNELS else 1e-5)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (reference: {REFERENCE['cpu_capability']}, this CPU: {CAPABILITY})") from None


def test_references_of_both_kernel_families_agree_to_the_cross_machine_tolerance():
    """The two committed references are the same step on two CPUs: they differ only by round-off."""
    fixtures = Path(__file__).parent / "fixtures"
    avx2, avx512 = (json.loads((fixtures / f"step-reference-{c}.json").read_text()) for c in ("AVX2", "AVX512"))
    assert (avx2["cpu_capability"], avx512["cpu_capability"]) == ("AVX2", "AVX512")
    assert avx2["grads"] != avx512["grads"]  # other kernels: not bit-identical
    assert_same_step(avx512, avx2, grad_tol=1e-2, term_tol=1e-5)


def test_channels_last_step_matches_to_float_tolerance():
    got = fingerprint(["channels_last=true"])
    assert_same_step(got, REFERENCE, grad_tol=1e-2, term_tol=1e-5)


def test_step_check_fails_on_a_changed_step():
    """The comparison can fail: a step without the identity loss is caught."""
    with pytest.raises(AssertionError):
        assert_same_step(fingerprint(["w_identity=0"]), REFERENCE, grad_tol=1e-2, term_tol=1e-5)


def test_channels_last_reaches_the_convolutions():
    from bianet_lib.model.network import BIANet

    model = BIANet(tiny_config(channels_last=True))
    seen = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            assert mod.weight.is_contiguous(memory_format=torch.channels_last)
            mod.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)
                                                                 and o.shape[1] > 1))
    model.embed_faces(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    model.embed_voices(torch.randn(4, 16000))
    assert seen and all(seen), "every convolution's output is NHWC"


def splits():
    return random_split(12, 3, face_size=32, seed=0), random_split(6, 2, face_size=32, seed=1, name="val")


def test_epoch_reads_the_device_once_per_read_interval(tmp_path, monkeypatch):
    """No host sync inside a step: the losses are read READ_EVERY steps at a time (counted on
    the tensor-to-list transfer, the only read) and the epoch's means are the per-step ones."""
    train, val = splits()
    monkeypatch.setattr(train_mod, "READ_EVERY", 2)
    trainer = Trainer(tiny_config(epochs=1, batch_size=2), train, val, tmp_path, progress=False)
    reads, real = [], train_mod.Trainer._read

    def spy(self, pending, first):
        reads.append(len(pending))
        return real(self, pending, first)

    monkeypatch.setattr(train_mod.Trainer, "_read", spy)
    record = trainer._run_epoch()
    steps = len(trainer.batches)
    assert steps >= 4 and sum(reads) == steps and max(reads) == 2 and len(reads) == -(-steps // 2)
    # the same means as a step-by-step read: a fresh trainer, train_step (one read per step)
    monkeypatch.setattr(train_mod.Trainer, "_read", real)
    other = Trainer(tiny_config(epochs=1, batch_size=2), train, val, tmp_path / "b", progress=False)
    sums = {}
    for batch in other.batches.epoch():
        for k, v in other.train_step(batch.voices, batch.faces, batch.identity).items():
            sums[k] = sums.get(k, 0.0) + v
    assert record["loss"] == sums["loss"] / steps and record["metric"] == sums["metric"] / steps


def test_step_makes_no_host_sync(tmp_path):
    """_step issues no .item()/bool() read (aten::_local_scalar_dense); train_step makes one
    transfer for all its terms."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self, host):
            super().__init__()
            self.n, self.host = 0, host

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default and id(args[0]) not in self.host:
                self.n += 1
            return func(*args, **(kwargs or {}))

    train, val = splits()
    trainer = Trainer(tiny_config(epochs=1), train, val, tmp_path, progress=False)
    batch = next(iter(trainer.batches.epoch()))
    # the optimizers' step counters live on the host (torch keeps them there even for GPU
    # parameters), so reading them never waits for the device: not a sync
    trainer._step(batch.voices, batch.faces, batch.identity)  # the optimizers' state exists from here
    counters = {id(s["step"]) for opt in (trainer.optimizer, trainer.disc_optimizer) for s in opt.state.values()}
    with Count(counters) as c:
        trainer._step(batch.voices, batch.faces, batch.identity)
    assert c.n == 0


def test_non_finite_term_stops_at_the_read_naming_its_step(tmp_path, monkeypatch):
    train, val = splits()
    monkeypatch.setattr(train_mod, "READ_EVERY", 50)
    trainer = Trainer(tiny_config(epochs=1, batch_size=2), train, val, tmp_path, progress=False)
    monkeypatch.setattr(train_mod, "generator_adversarial_loss",
                        poison_nth_call(train_mod.generator_adversarial_loss, 4, float("inf")))
    with pytest.raises(NonFiniteLossError, match=r"^step 3 \(epoch 1\): loss term 'adversarial' is inf"):
        trainer.fit()
    assert not (tmp_path / train_mod.LATEST).exists(), "no checkpoint holds weights a bad loss touched"


def test_compile_falls_back_to_eager_with_one_line(tmp_path, monkeypatch, capsys):
    train, val = splits()

    class Broken(torch.nn.Module):  # what torch.compile returns, failing at the first call as a compiler does
        def forward(self, *args, **kwargs):
            raise RuntimeError("no C++ compiler\nsecond line")

    def broken_compile(model, *a, **k):
        return Broken()

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = tiny_config(epochs=1)
    eager = Trainer(cfg, train, val, tmp_path / "a", progress=False)  # each trainer seeds torch: step at once
    batch = next(iter(eager.batches.epoch()))
    a = eager.train_step(batch.voices, batch.faces, batch.identity)
    compiled = Trainer(tiny_config(epochs=1, compile=True), train, val, tmp_path / "b", progress=False)
    b = compiled.train_step(batch.voices, batch.faces, batch.identity)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torch.compile is unavailable here (RuntimeError: no C++ compiler)" in err
    assert a == b and compiled.net is compiled.eager_net


def test_frozen_discriminator_computes_the_same_and_stays_still():
    from bianet_lib.model.network import ModalityDiscriminator

    torch.manual_seed(0)
    d1, d2 = ModalityDiscriminator(16), ModalityDiscriminator(16)
    d2.load_state_dict(d1.state_dict())
    h = torch.randn(10, 16, requires_grad=True)
    params = {k: v.detach() for k, v in d1.named_parameters()}
    ref = torch.func.functional_call(d1, params, (h,))  # the former frozen call
    got = d2(h, frozen=True)
    assert torch.equal(got, ref)
    assert all(torch.equal(a, b) for a, b in zip(d1.state_dict().values(), d2.state_dict().values(), strict=True))
    got.sum().backward()
    assert h.grad is not None and all(p.grad is None for p in d2.parameters())


def test_compiled_step_matches_eager_to_float_tolerance(tmp_path):
    """torch.compile for real (tiny shapes: compiling takes most of this test), two steps."""
    train, val = splits()
    outs = []
    for name, flag in (("eager", False), ("compiled", True)):
        # NIA's random drop off: compiled code draws its random numbers its own way
        t = Trainer(tiny_config(epochs=1, compile=flag, nia_drop_p=0.0), train, val, tmp_path / name, progress=False)
        batches = iter(t.batches.epoch())
        outs.append([t.train_step(b.voices, b.faces, b.identity) for b in (next(batches), next(batches))])
        assert (t.net is not t.eager_net) == flag and (t.compile_seconds is not None) == flag
    for a, b in zip(*outs, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k


def test_step_table_counts_what_each_arm_does():
    from bianet_lib.engine.bench import format_step_table, step_table
    from bianet_lib.engine.trainer import READ_EVERY

    cfg = tiny_config(channels_last=True)
    out = step_table(cfg, steps=2, warmup=1, compare={"channels_last": False})
    rows = {(r["variant"], r["arm"]): r for r in out["rows"]}
    assert set(rows) == {(v, a) for v in ("this", "compare") for a in ("bianet", "baseline", "encoders")}
    for v in ("this", "compare"):
        b, base, enc = rows[(v, "bianet")], rows[(v, "baseline")], rows[(v, "encoders")]
        # the layout moves no FLOP; PIA/NIA and the heads add FLOPs and ops to the encoders'
        assert b["flops_per_step"] == rows[("this", "bianet")]["flops_per_step"]
        assert b["flops_per_step"] > base["flops_per_step"] > enc["flops_per_step"] > 0
        assert b["ops_per_step"] > base["ops_per_step"] > enc["ops_per_step"] > 0
        assert b["host_syncs_per_step"] == base["host_syncs_per_step"] == 1 / READ_EVERY
        assert enc["host_syncs_per_step"] == 0 and enc["ratio_to_bare_encoders"] == 1.0
    assert rows[("this", "bianet")]["ratio_to_this_bianet"] == 1.0
    text = format_step_table(out).splitlines()
    assert len(text) == 7 and "syncs/step" in text[0]


def test_step_table_refuses_a_variant_name_twice():
    from bianet_lib.engine.bench import step_table

    with pytest.raises(ValueError, match="'compare' is taken"):
        step_table(tiny_config(), steps=1, warmup=1, compare={"channels_last": True},
                   more={"compare": {"channels_last": False}})


def test_time_train_steps_times_only_the_steps_after_warmup(monkeypatch):
    """time_train_steps runs train_step (step and loss read) warmup + steps times on one fixed batch
    and reports the statistics of the last ``steps`` only (a slow first step is left out)."""
    from bianet_lib.engine import bench

    seconds = iter([5.0, 0.3, 0.1, 0.2])  # the warm-up step is the slow one
    calls = []
    monkeypatch.setattr(bench, "_timed", lambda fn, device: (calls.append(fn), next(seconds))[1])
    out = bench.time_train_steps(tiny_config(batch_size=4, clip_seconds=0.25), steps=3, warmup=1)
    assert len(calls) == 4 and len({id(f) for f in calls}) == 1
    assert calls[0].func.__name__ == "train_step" and len(calls[0].args) == 3
    assert (out["median_s"], out["min_s"], out["steps"], out["warmup"]) == (0.2, 0.1, 3, 1)
    assert abs(out["mean_s"] - 0.2) < 1e-12 and out["params"] > 0


# --- the step side by side with another revision of the repository (bianet bench --against) --------
TINY_SHAPES = [*gpu_check._tiny_model(), "face_size=32", "batch_size=8", "clip_seconds=0.25"]


def test_against_a_revision_times_each_arm_in_its_own_code(tmp_path):
    """Four arms, each from the code it names (the revision's library extracted by git archive,
    checked by the module path each process reports); ratios are per-round medians, so the
    revision against itself is exactly 1, and the bare encoders cost less than a whole step."""
    import subprocess

    from bianet_lib.engine.bench_against import against_revision, format_against

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = against_revision("HEAD", overrides=TINY_SHAPES, rounds=2, steps=2, warmup=1, progress=False,
                           this_overrides=["channels_last=false"])
    assert out["revision_commit"] == head and out["threads"] == 1
    assert set(out["step_s"]) == {"revision", "this", "nchw_eager", "encoders"}
    assert all(len(t) == 2 and min(t) > 0 for t in out["per_round_s"].values())
    assert out["revision_over"]["revision"] == 1.0
    assert out["step_s"]["encoders"] < out["step_s"]["this"]
    # --this-set reaches this code's arms only (the revision's config is its own default)
    assert out["config"]["channels_last"] is False and out["overrides"] == TINY_SHAPES
    assert out["this_overrides"] == ["channels_last=false"]
    lines = format_against(out).splitlines()
    assert len(lines) == 5 and lines[1].split()[:2] == ["revision", head[:7]]


def test_against_refuses_a_folder_without_history_in_one_line(tmp_path):
    from bianet_lib.engine.bench_against import resolve_revision

    with pytest.raises(ValueError, match="is not a git checkout"):
        resolve_revision("HEAD", tmp_path)


def test_the_command_line_names_the_revision_before_issue_28():
    """``bianet bench --help`` names the commit the issue's ratios are against (it is written out
    there so that --help does not import torch)."""
    import inspect

    from bianet_lib.commands import bench as cmd
    from bianet_lib.engine.bench_against import BEFORE_ISSUE_28

    assert f"--against {BEFORE_ISSUE_28} (the step before issue 28)" in inspect.getsource(cmd.add_arguments)
