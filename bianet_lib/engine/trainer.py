"""The trainer: counterfactual curriculum, adversarial game, checkpoints, exact resume, DDP.

One step embeds B voices and B faces once, builds the in-batch V-F and F-V trials, and adds:
matching (Eq. 22 on both directions) x w_match + metric x w_metric + generator adversarial x
w_adv; the discriminator takes its own step on detached embeddings. Model selection reads the
validation split only (1:2 V-F and F-V on fixed seeded trials), never the test split.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm  # text bars: ipywidgets is not a dependency

from bianet_lib.config import BIANetConfig
from bianet_lib.data.batches import IdentityBatches, in_batch_trials
from bianet_lib.data.trials import make_matching_trials
from bianet_lib.data.types import SplitData
from bianet_lib.engine.metrics import matching_accuracy
from bianet_lib.engine.provenance import write_provenance
from bianet_lib.engine.safeio import (
    CheckpointError,
    FileLock,
    LockBusy,
    atomic_write_text,
    read_checkpoint,
    remove_stale_temps,
    write_checkpoint,
)
from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer
from bianet_lib.model.counterfactual import counterfactual_loss, curriculum_weight
from bianet_lib.model.encoders import map_grids
from bianet_lib.model.losses import (
    adversarial_ramp,
    attention_supervision_loss,
    discriminator_loss,
    generator_adversarial_loss,
    metric_loss,
)
from bianet_lib.model.network import BIANet

LATEST, BEST, METRICS, CONFIG = "latest.pt", "best.pt", "metrics.jsonl", "config.yaml"
#: Wall seconds per epoch: kept apart from metrics.jsonl (and ignored by git), so that a rerun of
#: the same command leaves the committed results bit-identical.
TIMING = "timing.jsonl"
VAL_TRIAL_SEED = 12345
VAL_TRIALS_PER_ID = 10
#: Steps between the host's reads of the loss values (one sync each): the epoch's sums, the
#: progress bar and the non-finite check read a device buffer of this many steps at once.
READ_EVERY = 20


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class ConfigMismatchError(ValueError):
    """Resuming with a config that differs from the one the run was started with."""


class RunExistsError(ValueError):
    """A fresh start in a folder that already holds a run (its latest.pt or results.json)."""


#: What a fresh start (``fit(overwrite=True)``) deletes: an earlier run's files, not this run's.
STALE_ON_FRESH_START = (LATEST, BEST, "results.json")


def config_state(cfg: BIANetConfig) -> dict:
    """``cfg.to_dict()`` as plain, freshly built objects (a JSON round trip), so a checkpoint's
    config pickles to the same bytes however the config was made: read from YAML, from a
    checkpoint or built in code (pickle shares objects that are the same object, not equal ones)."""
    return json.loads(json.dumps(cfg.to_dict()))


def config_changes(saved: dict, new: dict) -> list[str]:
    """``field=new (run: old)`` for every field where ``new`` differs from ``saved``."""
    saved = BIANetConfig.from_dict(dict(saved)).to_dict()  # older files: migrated defaults
    return [f"{k}={new.get(k)!r} (run: {saved.get(k)!r})" for k in sorted(set(saved) | set(new))
            if saved.get(k) != new.get(k)]


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Trainer:
    """Trains a BIANet on a SplitData; ``fit`` resumes from ``run_dir/latest.pt`` if asked."""

    def __init__(self, cfg: BIANetConfig, train: SplitData, val: SplitData, run_dir: str | Path,
                 progress: bool = True):
        self.cfg, self.train_split, self.val_split = cfg, train, val
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.dist = Distributed.from_env()
        self.device = resolve_device(cfg.device)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        if self.device.type == "cuda" and cfg.channels_last:
            # cuDNN times its algorithms for each shape once (fixed shapes here); it may pick other
            # ones in another process, so a GPU run's last bits are not reproducible with it
            torch.backends.cudnn.benchmark = True
        self.model = BIANet(cfg).to(self.device)
        # auxiliary identity classifier shared by both modalities (not in the paper; docs/paper-ambiguities.md)
        self.identity_head = torch.nn.Linear(cfg.embed_dim, train.n_identities).to(self.device)
        self.net = self.model
        if self.dist.world > 1:
            # the discriminator trains in its own backward pass, so DDP must not wait for it;
            # its gradients are averaged by hand in _average_discriminator_grads
            ignored = [f"discriminator.{n}" for n, _ in self.model.discriminator.named_parameters()]
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.model, ignored)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.eager_net, self.compile_seconds = self.net, None
        if cfg.compile:
            self.net = torch.compile(self.net)  # compiled at the first step (see _forward)
        # in memory (SynthVox) or streamed from a feature store by DataLoader workers (VoxCeleb)
        self.batches = IdentityBatches(train, cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world,
                                       workers=None if cfg.loader_workers < 0 else cfg.loader_workers,
                                       pin_memory=self.device.type == "cuda",
                                       token_grids=None if cfg.token_masks == "none" else map_grids(cfg))
        self.trial_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.optimizer, self.disc_optimizer = self._optimizers()
        if cfg.lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.epochs)
        else:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)
        self.val_trials = {d: make_matching_trials(val, d, 2, VAL_TRIALS_PER_ID, VAL_TRIAL_SEED) for d in ("vf", "fv")}
        self.epoch, self.step, self.best_val = 0, 0, -1.0
        self.records: list[dict] = []  # every epoch's record so far (metrics.jsonl is derived)
        self.timings: list[dict] = []  # {"epoch", "seconds"} per epoch (timing.jsonl)
        self.best_state: dict | None = None  # the validation-selected weights and where
        self.amp = cfg.amp and self.device.type == "cuda"

    def _optimizers(self):
        cfg, m = self.cfg, self.model
        encoders = list(m.face_encoder.parameters()) + list(m.voice_encoder.parameters())
        heads = list(m.classifier.parameters()) + list(self.identity_head.parameters())
        attention = [p for mod in (m.face_intervention, m.voice_intervention, m.face_control, m.voice_control)
                     if mod is not None for p in mod.parameters()] + list(m.generator.parameters())
        # authors' grouping: encoders + classifier at one rate, attention + generator at another
        groups = [{"params": encoders + heads, "lr": cfg.lr_encoders},
                  {"params": attention, "lr": cfg.lr_heads}]
        # foreach left to torch: on for CUDA parameters already; on this CPU it measured ~1.0x and
        # foreach=True would be written into every checkpoint's optimizer state (other bytes)
        opt = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
        disc = torch.optim.Adam(m.discriminator.parameters(), lr=cfg.lr_heads, betas=(0.5, 0.999))
        return opt, disc

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * len(self.batches)

    def curriculum_w(self) -> float:
        """w of Eq. 22 at the current iteration ("epoch" in Eq. 22 counts iterations)."""
        if not self.cfg.use_nia:
            return 0.0
        return curriculum_weight(self.step, self.total_steps, self.cfg.curriculum)

    # --- one step -------------------------------------------------------------------------
    def train_step(self, voices: torch.Tensor, faces: torch.Tensor, identity: torch.Tensor,
                   masks=None) -> dict[str, float]:
        """One training step; its loss terms as floats (read at once: one host sync). Raises
        :class:`NonFiniteLossError` after the step when a term is not finite. ``masks``: the
        batch's (voice, face) interfered-token masks, for the arms that use them (issue 25)."""
        values = self._step(voices, faces, identity, masks)
        return self._read([values], self.step - 1)[0]

    def _step(self, voices: torch.Tensor, faces: torch.Tensor, identity: torch.Tensor, masks=None) -> dict:
        """The step itself, with no host sync: the loss terms stay on the device (a dict of
        0-d tensors, plus the floats ``w`` and ``w_adv``) until :meth:`_read` reads them."""
        if self.net is not self.eager_net and self.compile_seconds is None:
            start = time.perf_counter()  # the first compiled step: compiling its forward and backward
            out = self._step_body(voices, faces, identity, masks)
            self.compile_seconds = time.perf_counter() - start
            return out
        return self._step_body(voices, faces, identity, masks)

    def _step_body(self, voices: torch.Tensor, faces: torch.Tensor, identity: torch.Tensor, masks=None) -> dict:
        cfg = self.cfg
        self.net.train()
        w = self.curriculum_w()
        w_adv = cfg.w_adv * adversarial_ramp(self.step / self.total_steps, cfg.adversarial_schedule)
        literal = cfg.curriculum == "paper"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            ev, ef = self._forward(voices, faces, masks if cfg.token_masks == "oracle" else None)
            hv, hf = ev.stacked(), ef.stacked()
            terms = {}
            for name, q, c in (("match_vf", hv, hf), ("match_fv", hf, hv)):
                cands, target = in_batch_trials(len(q), cfg.k, self.trial_generator)
                target = target.to(self.device)
                _, z_pos, z_neg = self.model.match_logits(q, c[cands.to(self.device)], w)
                terms[name] = counterfactual_loss(z_pos.float(), None if z_neg is None else z_neg.float(),
                                                  target, w, literal)
            if cfg.metric_loss != "none":
                terms["metric"] = metric_loss(cfg.metric_loss, ev.positive.float(), ef.positive.float(),
                                              cfg.metric_margin)
            if cfg.w_identity > 0:
                terms["identity"] = (F.cross_entropy(self.identity_head(ev.positive.float()), identity)
                                     + F.cross_entropy(self.identity_head(ef.positive.float()), identity)) / 2
            d_v, d_f = self.model.discriminate(ev.positive, ef.positive, frozen=True)
            terms["adversarial"] = generator_adversarial_loss(d_v.float(), d_f.float(), cfg.adversarial_target)
            if cfg.token_masks == "supervised":  # issue 25: masks (voice, face) from the batch
                terms["attn_supervision"] = attention_supervision_loss((ev.maps, ef.maps), masks)
        loss = (cfg.w_match * (terms["match_vf"] + terms["match_fv"]) / 2
                + cfg.w_metric * terms.get("metric", 0.0) + w_adv * terms["adversarial"]
                + cfg.w_identity * terms.get("identity", 0.0)
                + cfg.w_attn_supervision * terms.get("attn_supervision", 0.0))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # the discriminator's own step, on embeddings detached from the generator
        d_loss = discriminator_loss(*self.model.discriminate(ev.positive.detach().float(),
                                                             ef.positive.detach().float()))
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self._average_discriminator_grads()
        self.disc_optimizer.step()
        self.step += 1
        return {**{k: v.detach() for k, v in terms.items()}, "loss": loss.detach(),
                "discriminator": d_loss.detach(), "w": w, "w_adv": w_adv}

    def _forward(self, voices: torch.Tensor, faces: torch.Tensor, masks=None):
        """``self.net(voices, faces[, masks])``. With ``cfg.compile`` the first call compiles (the first
        step's wall time, ``compile_seconds``, goes to timing.jsonl); a compiler that cannot run
        here leaves one warning line and the eager model (timing.jsonl: ``compiled: false``)."""
        args = (voices, faces) if masks is None else (voices, faces, masks)  # masks: the oracle arm's
        if self.net is self.eager_net or self.compile_seconds is not None:
            return self.net(*args)
        import sys

        try:
            return self.net(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eagerly instead
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            print(f"warning: torch.compile is unavailable here ({type(exc).__name__}: {first}); "
                  "training without it", file=sys.stderr)
            self.net = self.eager_net
            return self.net(*args)

    def _read(self, pending: list[dict], first_step: int) -> list[dict[str, float]]:
        """The loss values of consecutive steps (the first numbered ``first_step``) as floats,
        read from the device in one transfer; :class:`NonFiniteLossError` naming the first step
        and term that is not finite. The checks happen here, not before each backward: the run
        stops at most ``READ_EVERY`` steps later, before the epoch's checkpoint, so no
        checkpoint ever holds weights a non-finite loss touched."""
        if not pending:
            return []
        keys = [k for k, v in pending[0].items() if isinstance(v, torch.Tensor)]
        table = torch.stack([torch.stack([p[k].float() for k in keys]) for p in pending]).cpu()
        rows = []
        for i, (p, values) in enumerate(zip(pending, table.tolist(), strict=True)):
            row = dict(zip(keys, values, strict=True))
            bad = [k for k in keys if k != "loss" and not np.isfinite(row[k])]
            if bad:  # the step's own terms first (the first version checked them in this order)
                step = first_step + i
                raise NonFiniteLossError(f"step {step} (epoch {self.epoch + 1}): loss term {bad[0]!r} is "
                                         f"{row[bad[0]]}; lower the learning rate or check the input data")
            row.update({k: v for k, v in p.items() if not isinstance(v, torch.Tensor)})
            rows.append(row)
        return rows

    def _average_discriminator_grads(self) -> None:
        if self.dist.world == 1:
            return
        for p in self.model.discriminator.parameters():
            dist.all_reduce(p.grad)
            p.grad /= self.dist.world

    # --- epochs ---------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False, locked: bool = False) -> list[dict]:
        """Train to ``cfg.epochs``; with ``resume`` continue exactly from ``latest.pt``.

        ``latest.pt`` is the run's one commit point: it holds the training state, the best
        (validation-selected) weights and every epoch's record. ``best.pt``, ``metrics.jsonl``
        and ``config.yaml`` are derived from it after each commit and again on resume, so a
        kill at any instant (even inside a write) resumes to the bits of an uninterrupted run.
        A second process training in the same folder is refused (:class:`LockBusy`).

        Without ``resume`` the run starts fresh; a folder that already holds a run (latest.pt
        or results.json) is refused (:class:`RunExistsError`) unless ``overwrite``. That check,
        and the deletion of the old files, happen under the run's lock, so two processes
        started at any moments never both start over one run. ``locked``: the caller holds
        the lock already (``bianet train`` takes it before loading the data).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.run_dir / ".lock") if self.dist.is_main and not locked else None
        if lock is not None and not lock.acquire(blocking=False):
            raise LockBusy(f"{self.run_dir}: another process is training in this run folder "
                           f"(pid {lock.holder()})")
        try:
            return self._fit(resume, overwrite)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool, overwrite: bool = False) -> list[dict]:
        latest = self.run_dir / LATEST
        if self.dist.is_main:
            remove_stale_temps(self.run_dir)  # a killed writer's half files
        if resume and latest.exists():
            self.load_checkpoint(latest)
            if self.dist.is_main:
                self._write_derived(best=True, config=True)
                atomic_write_text(self.run_dir / TIMING, "".join(json.dumps(t) + "\n" for t in self.timings))
        elif self.dist.is_main:
            held = [name for name in (LATEST, "results.json") if (self.run_dir / name).exists()]
            if held and not overwrite:
                raise RunExistsError(f"{self.run_dir} already holds a run ({', '.join(held)}); "
                                     "resume it, or start it again with overwrite (--overwrite)")
            for name in STALE_ON_FRESH_START:  # an earlier run's, not this run's
                (self.run_dir / name).unlink(missing_ok=True)
            self.cfg.to_yaml(self.run_dir / CONFIG)
            write_provenance(self.run_dir, self.cfg)  # code hash, config schema, threads (provenance.py)
            atomic_write_text(self.run_dir / METRICS, "")
            atomic_write_text(self.run_dir / TIMING, "")
        history = []
        while self.epoch < self.cfg.epochs:
            record = self._run_epoch()
            history.append(record)
            self.records.append(record)
            self.epoch += 1
            improved = record["val_acc"] > self.best_val
            if improved:
                self.best_val = record["val_acc"]
                if self.dist.is_main:
                    self.best_state = {"epoch": self.epoch, "step": self.step, "best_val": self.best_val,
                                       # deepcopy keeps the OrderedDict and its _metadata, so
                                       # best.pt has the same bytes whether written now or on resume
                                       "model": copy.deepcopy(self.model.state_dict())}
            if self.dist.is_main:
                self.save_checkpoint(latest)  # the commit point
                self._write_derived(best=improved)
                timing = {"epoch": self.epoch, "seconds": self.epoch_seconds}
                if self.cfg.compile and self.epoch == 1:
                    timing.update(compiled=self.net is not self.eager_net, first_step_seconds=self.compile_seconds)
                self.timings.append(timing)
                atomic_write_text(self.run_dir / TIMING, "".join(json.dumps(t) + "\n" for t in self.timings))
        return history

    def _write_derived(self, best: bool, config: bool = False) -> None:
        """best.pt (when ``best``), metrics.jsonl, and config.yaml (when ``config``) from the
        committed state."""
        if best and self.best_state is not None:
            write_checkpoint(self.run_dir / BEST, {"config": config_state(self.cfg), **self.best_state})
        atomic_write_text(self.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in self.records))
        if config:
            self.cfg.to_yaml(self.run_dir / CONFIG)

    def _run_epoch(self) -> dict:
        start = time.perf_counter()
        sums: dict[str, float] = {}
        bar = tqdm(self.batches.epoch(), total=len(self.batches), disable=not (self.progress and self.dist.is_main),
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False)
        pending: list[dict] = []
        first = self.step

        def read() -> None:
            if not pending:
                return
            for out in self._read(pending, first):  # the same float64 sums, in step order, as per-step reads
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{out['loss']:.3f}", w=f"{out['w']:.2f}")
            pending.clear()

        for batch in bar:
            masks = None if batch.face_mask is None else (batch.voice_mask.to(self.device),
                                                          batch.face_mask.to(self.device))
            pending.append(self._step(batch.voices.to(self.device), batch.faces.to(self.device),
                                      batch.identity.to(self.device), masks))
            if len(pending) == READ_EVERY:
                read()
                first = self.step
        read()
        self.scheduler.step()
        n = len(self.batches)
        record = {"epoch": self.epoch + 1, "step": self.step, **{k: v / n for k, v in sums.items()}}
        self.epoch_seconds = time.perf_counter() - start  # timing.jsonl, not the record
        record.update(self._epsilons())
        record.update(self.validate())
        return self._reduce(record)

    @torch.no_grad()
    def _epsilons(self) -> dict[str, float]:
        out = {}
        for name in ("face", "voice"):
            mod = getattr(self.model, f"{name}_intervention")
            if mod is not None and mod.threshold.mode != "adaptive":
                out[f"epsilon_{name}"] = float(mod.threshold(torch.zeros(1, 1, 1)))
        return out

    def validate(self) -> dict[str, float]:
        """1:2 accuracy on the validation split's fixed trials (model selection reads this),
        scored by the route ``cfg.select_route`` names."""
        route = EmbeddingCosineScorer if self.cfg.select_route == "cosine" else BIANetScorer
        scorer = route(self.model, self.device)
        emb = {"voice": scorer.embed(self.val_split, "voice"), "face": scorer.embed(self.val_split, "face")}
        accs = {}
        for direction, trials in self.val_trials.items():
            q, c = ("voice", "face") if direction == "vf" else ("face", "voice")
            logits = scorer.match_logits(emb[q][trials.query], emb[c][trials.candidates])
            accs[f"val_acc_{direction}"] = matching_accuracy(logits, trials.target)
        accs["val_acc"] = (accs["val_acc_vf"] + accs["val_acc_fv"]) / 2
        return accs

    def _reduce(self, record: dict) -> dict:
        if self.dist.world == 1:
            return record
        keys = sorted(k for k, v in record.items() if isinstance(v, float))
        t = torch.tensor([record[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        record.update({k: float(v) / self.dist.world for k, v in zip(keys, t.tolist(), strict=True)})
        return record

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, path: Path, weights_only: bool = False) -> None:
        """Atomic and checksummed (``safeio.write_checkpoint``): a unique temporary file, fsync,
        rename; a crash never leaves a broken file, and a damaged one is refused on load.

        ``weights_only`` keeps the model and where it was taken (the content of best.pt); the
        full state adds what resuming needs, the best weights and the metrics history.
        """
        state = {"config": config_state(self.cfg), "model": self.model.state_dict(),
                 "epoch": self.epoch, "step": self.step, "best_val": self.best_val}
        if not weights_only:
            state.update(self._training_state())
        write_checkpoint(path, state)

    def _training_state(self) -> dict:
        best = self.best_state
        if best is not None and best["epoch"] == self.epoch:
            best = {**best, "model": None}  # the current weights: not stored twice
        return {
            "records": list(self.records), "best": best,
            "identity_head": self.identity_head.state_dict(),
            "optimizer": self.optimizer.state_dict(), "disc_optimizer": self.disc_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "batch_rng": self.batches.generator.get_state(),
            "trial_rng": self.trial_generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
        }

    def load_checkpoint(self, path: Path) -> None:
        """Restore the full training state of ``path`` (written by ``save_checkpoint``).

        Refuses (:class:`ConfigMismatchError`) a checkpoint whose config differs from this
        trainer's: resuming under another config would silently mix two runs.
        """
        state = read_checkpoint(path, map_location=self.device)
        if "optimizer" not in state:
            raise CheckpointError(f"{path}: holds weights only (a best.pt?); resuming needs a latest.pt")
        try:
            changes = config_changes(state["config"], self.cfg.to_dict())
        except (ValueError, TypeError) as exc:  # e.g. a field this code does not know
            raise ConfigMismatchError(f"{path}: its config cannot be read by this code ({exc})") from None
        if changes:
            raise ConfigMismatchError(f"{path}: the run was started with another config; changed: "
                                      + ", ".join(changes))
        self.model.load_state_dict(state["model"])
        self.identity_head.load_state_dict(state["identity_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.best_val = state["epoch"], state["step"], state["best_val"]
        self.batches.generator.set_state(state["batch_rng"])
        self.trial_generator.set_state(state["trial_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        if "records" in state:
            self.records = list(state["records"])
        else:  # a latest.pt written before the history moved into it
            self.records = [r for r in _read_jsonl(self.run_dir / METRICS) if r.get("epoch", 0) <= self.epoch]
        self.timings = [t for t in _read_jsonl(self.run_dir / TIMING, tolerant=True)
                        if isinstance(t, dict) and t.get("epoch", 0) <= self.epoch]
        best = state.get("best")
        self.best_state = None if best is None else {
            **best, "model": state["model"] if best["model"] is None else best["model"]}


def _read_jsonl(path: Path, tolerant: bool = False) -> list[dict]:
    """The records of a JSON-lines file ([] when absent). A damaged line is an error naming the
    file and line, or with ``tolerant`` (an auxiliary file such as timing.jsonl) left out with
    one warning line on stderr."""
    import sys

    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        text = path.read_bytes().decode("utf-8", "replace")
    records, bad = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                bad.append(n)
    if bad and not tolerant:
        raise CheckpointError(f"{path}: damaged (line {bad[0]} is not JSON)")
    if bad:
        print(f"warning: {path}: damaged (line {bad[0]} is not JSON); {len(bad)} damaged line(s) "
              "left out and the file rewritten", file=sys.stderr)
    return records


def load_checkpoint_model(path: str | Path, device: str = "cpu") -> tuple[BIANet, dict]:
    """A trained BIANet (eval mode) and the checkpoint's state; :class:`CheckpointError` with
    one line when the file is missing, damaged, or not a checkpoint of a BIANet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    state = read_checkpoint(path, map_location=device)
    return model_from_checkpoint(path, state, device), state


def model_from_checkpoint(path: str | Path, state: dict, device: str = "cpu") -> BIANet:
    """The BIANet (eval mode) of an already read checkpoint state (``safeio.read_checkpoint``)."""
    try:
        cfg = BIANetConfig.from_dict(dict(state["config"]))
        model = BIANet(cfg).to(device)
        model.load_state_dict(state["model"])
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a checkpoint of this BIANet ({first[:200]})") from None
    return model.eval()


def load_model(path: str | Path, device: str = "cpu") -> BIANet:
    """A trained BIANet from a checkpoint written by :class:`Trainer`, in eval mode."""
    return load_checkpoint_model(path, device)[0]
