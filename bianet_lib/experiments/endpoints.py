"""Model-agnostic mechanism endpoints for a world with local interference (issue 11).

Every function takes a scorer of the evaluator's shape (``embed``, ``match_logits``; see
``bianet_lib.engine.evaluate.Scorer``, e.g. ``BIANetScorer``) or plain tensors, never a model class:

1. ``attention_mass_on_mask``: the attention mass on the ground-truth interference tokens
   against their area share (what attention blind to the interference would give);
2. ``clean_twin_drop``: per-trial 1:K correctness on a split and on its clean twin
   (``synthvox.regenerate_split(..., dose=0)``), the drop per model and the paired difference
   between models on the same trials, with bootstrap intervals over query identities;
3. ``dose_response``: accuracy at several test-time interference strengths, no retraining;
5. ``neutral_fill``: the split with every interference region replaced by a neutral fill (the
   input side of a "perfect attention" ceiling).

Bootstrap intervals resample query identities (clusters) with replacement, because the trials
of one identity share its samples and are not independent.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from bianet_lib.data.interference import split_face_masks, split_voice_masks
from bianet_lib.data.types import SplitData
from bianet_lib.engine import metrics
from bianet_lib.experiments.bits import pack_bits
from bianet_lib.experiments.world import TRIAL_SEED, TRIALS_PER_ID, endpoint_trials, test_split_at

#: Trials scored per call to ``match_logits`` (bounds the [T, K, ...] candidate tensor).
CHUNK = 4096
DOSES = (0.0, 0.5, 1.0, 1.5)


# --- 1. attention mass ------------------------------------------------------------------------
def attention_mass_on_mask(attn: torch.Tensor, token_share: torch.Tensor,
                           threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mass [B], baseline [B]) of token attention ``attn`` [B, N, N] (rows = queries) on the
    interference tokens given by ``token_share`` [B, N] (share of each token covered by the
    mask, e.g. from ``interference.token_share_2d``).

    mass: mean over query rows of sum_j a_ij s_j / sum_j a_ij (rows with zero total are left
    out); baseline: mean_j s_j, the mass of uniform attention. With ``threshold`` the shares
    are first binarised (s_j >= threshold). Attention entirely on fully covered tokens scores 1;
    a sample without interference has mass = baseline = 0.
    """
    if attn.ndim != 3 or attn.shape[1] != attn.shape[2]:
        raise ValueError(f"attn must be [B, N, N], got {tuple(attn.shape)}")
    if tuple(token_share.shape) != tuple(attn.shape[:2]):
        raise ValueError(f"token_share must be [B, N] = {tuple(attn.shape[:2])}, got {tuple(token_share.shape)}")
    a = attn.detach().to(torch.float64)
    s = token_share.detach().to(torch.float64)
    if threshold is not None:
        s = (s >= threshold).to(torch.float64)
    total = a.sum(-1)
    on_mask = (a @ s[..., None])[..., 0]
    valid = total > 0
    row_mass = torch.where(valid, on_mask / torch.where(valid, total, torch.ones_like(total)), 0.0)
    mass = row_mass.sum(-1) / valid.sum(-1).clamp(min=1)
    return mass.float(), s.mean(-1).float()


# --- trial correctness and the bootstrap ------------------------------------------------------
def _modalities(direction: str) -> tuple[str, str]:
    if direction not in ("vf", "fv"):
        raise ValueError(f"trials.direction must be 'vf' or 'fv', got {direction!r}")
    return ("voice", "face") if direction == "vf" else ("face", "voice")


def _ids(split: SplitData, modality: str) -> np.ndarray:
    return (split.voice_meta if modality == "voice" else split.face_meta)["identity"].to_numpy()


def query_identities(split: SplitData, trials) -> np.ndarray:
    """The identity of each trial's query: the cluster of the bootstrap."""
    return _ids(split, _modalities(trials.direction)[0])[np.asarray(trials.query)]


@torch.no_grad()
def trial_correct(scorer, split: SplitData, trials, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """bool [T]: whether the scorer's highest-scored candidate is the target, per matching trial
    (ties broken at random with ``seed``, as ``metrics.matching_correct``)."""
    q_mod, c_mod = _modalities(trials.direction)
    query = np.asarray(trials.query)
    cands = np.asarray(trials.candidates)
    target = np.asarray(trials.target)
    q_id, c_id = _ids(split, q_mod)[query], _ids(split, c_mod)[cands]
    if not (c_id[np.arange(len(target)), target] == q_id).all():
        raise ValueError(f"split {split.name!r}: the target candidate of some trial is not of the "
                         "query's identity (trials made on another split?)")
    emb = {m: scorer.embed(split, m, batch_size) for m in (q_mod, c_mod)}
    q, c = torch.as_tensor(query), torch.as_tensor(cands)
    logits = torch.cat([scorer.match_logits(emb[q_mod][q[i:i + CHUNK]], emb[c_mod][c[i:i + CHUNK]]).float().cpu()
                        for i in range(0, len(q), CHUNK)])
    return metrics.matching_correct(logits, target, seed)


def bootstrap_mean_ci(values, clusters, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and a percentile interval from resampling
    whole clusters (e.g. query identities) with replacement."""
    v = np.asarray(values, dtype=float)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    if len(v) == 0 or len(inverse) != len(v):
        raise ValueError(f"values and clusters must be non-empty and of one length, got {len(v)}, {len(inverse)}")
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse).astype(float)
    n = len(sums)
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    stats = (draws @ sums) / (draws @ counts)
    alpha = (1 - level) / 2
    return float(v.mean()), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def _same_samples(a: SplitData, b: SplitData) -> None:
    for m in ("voice", "face"):
        if not np.array_equal(_ids(a, m), _ids(b, m)):
            raise ValueError(f"splits {a.name!r} and {b.name!r} do not hold the same {m} samples; "
                             "a clean twin must come from regenerate_split of the same world")


def _interval(mean_lo_hi: tuple[float, float, float]) -> dict:
    mean, lo, hi = mean_lo_hi
    return {"mean": mean, "ci": [lo, hi]}


# --- 2. clean-twin drop -----------------------------------------------------------------------
def clean_twin_drop(scorers: Mapping[str, object], split: SplitData, twin: SplitData, trials,
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Per trial, correct on the clean twin minus correct on the split (1 = interference turned
    a right answer wrong), for each named scorer on the SAME trials; and, for each pair of
    scorers (a, b) in the given order, the paired difference drop_a - drop_b. Means with
    bootstrap intervals over query identities. ``per_trial`` holds the drops [T] per model."""
    _same_samples(split, twin)
    clusters = query_identities(split, trials)
    out: dict = {"n_trials": len(clusters), "n_identities": int(len(np.unique(clusters))),
                 "level": level, "models": {}, "paired": {}, "per_trial": {}}
    for name, scorer in scorers.items():
        hit = trial_correct(scorer, split, trials, seed).astype(float)
        clean = trial_correct(scorer, twin, trials, seed).astype(float)
        drop = clean - hit
        out["per_trial"][name] = drop
        out["models"][name] = {"accuracy": float(hit.mean()), "clean_accuracy": float(clean.mean()),
                               "drop": _interval(bootstrap_mean_ci(drop, clusters, n_boot, seed, level))}
    names = list(scorers)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = out["per_trial"][a] - out["per_trial"][b]
            out["paired"][f"{a} - {b}"] = _interval(bootstrap_mean_ci(diff, clusters, n_boot, seed, level))
    return out


# --- 3. dose-response -------------------------------------------------------------------------
def dose_response(scorer, splits: Mapping[float, SplitData] | Callable[[float], SplitData], trials,
                  doses=DOSES, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy of one (already trained) scorer on the same trials at each test-time
    interference dose; ``splits`` maps a dose to its split or regenerates it (e.g.
    ``lambda d: synthvox.regenerate_split(cfg, seed, "test", d)``). ``loss`` per dose: accuracy
    at the smallest dose minus accuracy at this dose, paired per trial, with a bootstrap
    interval over query identities."""
    doses = sorted(float(d) for d in doses)
    get = splits.__getitem__ if isinstance(splits, Mapping) else splits
    correct, clusters, first = {}, None, None
    for d in doses:
        s = get(d)
        if first is None:
            first, clusters = s, query_identities(s, trials)
        else:
            _same_samples(first, s)
        correct[d] = trial_correct(scorer, s, trials, seed).astype(float)
    base = correct[doses[0]]
    return {"doses": doses, "accuracy": [float(correct[d].mean()) for d in doses],
            "loss": [_interval(bootstrap_mean_ci(base - correct[d], clusters, n_boot, seed, level))
                     for d in doses],
            "n_trials": len(base), "level": level}


# --- 5. neutral fill --------------------------------------------------------------------------
def fill_faces(faces: torch.Tensor, masks: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """uint8 [N, 3, S, S] with the pixels of ``masks`` [N, S, S] replaced by a neutral value:
    ``mean`` = the image's per-channel mean over its unmasked pixels (grey 128 if none),
    ``grey`` = 128."""
    if mode not in ("mean", "grey"):
        raise ValueError(f"face fill mode must be 'mean' or 'grey', got {mode!r}")
    out = faces.clone()
    m = masks[:, None].expand_as(faces)
    if mode == "grey":
        return out.masked_fill(m, 128)
    keep = (~masks)[:, None].float()
    n_keep = keep.sum((2, 3))
    mean = (faces.float() * keep).sum((2, 3)) / n_keep.clamp(min=1)
    mean = torch.where(n_keep > 0, mean, torch.full_like(mean, 128.0))
    fill = mean.round().clamp(0, 255).to(torch.uint8)[..., None, None].expand_as(faces)
    return torch.where(m, fill, out)


def fill_voices(voices: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[N, L] with the samples of ``masks`` [N, L] set to silence (0)."""
    return voices.masked_fill(masks, 0.0)


def neutral_fill(split: SplitData, face_mode: str = "mean") -> SplitData:
    """A copy of ``split`` whose interference regions (its boxes and intervals) hold a neutral
    fill (see ``fill_faces``; voices: silence); metadata, masks and everything else unchanged."""
    return SplitData(name=f"{split.name}-filled",
                     faces=fill_faces(split.faces, split_face_masks(split), face_mode),
                     voices=fill_voices(split.voices, split_voice_masks(split)),
                     face_meta=split.face_meta, voice_meta=split.voice_meta,
                     identities=split.identities, face_boxes=split.face_boxes,
                     voice_intervals=split.voice_intervals)


# --- the test-bed's endpoints of one run (issue 11) -----------------------------------------------
N_ATTENTION = 512  # samples per modality for the attention-mass endpoint


# --- 1. attention mass ------------------------------------------------------------------------
@torch.no_grad()
def attention_masses(model, test, device="cpu", n: int = N_ATTENTION) -> dict:
    """Mean attention mass of PIA's and NIA's rows on the interference tokens, against the mean
    share of those tokens (uniform attention), over the first ``n`` interfered samples of each
    modality. {} for a model without BIANet's intervention."""
    from bianet_lib.data.interference import (
        split_face_masks,
        split_voice_masks,
        token_share_1d,
        token_share_2d,
    )
    from bianet_lib.engine.diagnostics import _inputs
    from bianet_lib.experiments.endpoints import attention_mass_on_mask

    model.eval()
    out: dict = {}
    for modality in ("face", "voice"):
        mod = model.face_intervention if modality == "face" else model.voice_intervention
        if mod is None or mod.axis != "tokens":
            continue
        if modality == "face":
            masks = split_face_masks(test)
            has = masks.flatten(1).any(1)
        else:
            masks = split_voice_masks(test)
            has = masks.any(1)
        idx = torch.nonzero(has).flatten()[:n]
        if len(idx) == 0:
            continue
        sums: dict = {}
        for start in range(0, len(idx), 128):
            chunk = idx[start:start + 128]
            encoder = model.face_encoder if modality == "face" else model.voice_encoder
            x = encoder(_inputs(test, modality, chunk).to(device))
            if modality == "face":
                share = token_share_2d(masks[chunk], tuple(x.shape[-2:]))
            else:
                # row-major (H, W) tokens; W is time: every row of the map shares a column's share
                share = token_share_1d(masks[chunk], x.shape[-1]).repeat(1, x.shape[-2])
            res = mod(x)
            for name, attn in (("pia", res.positive_attention), ("nia", res.negative_attention)):
                if attn is None:
                    continue
                mass, base = attention_mass_on_mask(attn.cpu(), share)
                s = sums.setdefault(name, [0.0, 0.0, 0])
                s[0] += float(mass.sum())
                s[1] += float(base.sum())
                s[2] += len(chunk)
        out[modality] = {name: {"mass": m / k, "share": b / k, "ratio": m / b if b > 0 else float("nan"),
                                "n": k} for name, (m, b, k) in sums.items()}
    return out


# --- the paired attention shift (issue 25) -----------------------------------------------------
def attention_shift(mass_interfered, mass_clean, identities, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """Per sample, attention mass on its interfered tokens in the interfered version minus in its
    clean twin (the same tokens): mean with a bootstrap interval over identities, and n."""
    diff = np.asarray(mass_interfered, dtype=float) - np.asarray(mass_clean, dtype=float)
    return {**_interval(bootstrap_mean_ci(diff, identities, n_boot, seed, level)), "n": int(len(diff))}


@torch.no_grad()
def _masses_on(model, split, modality: str, idx: torch.Tensor, device, masks: dict) -> dict[str, torch.Tensor]:
    """{"pia"/"nia": mass [len(idx)]} of the model's attention rows on the token masks ``masks[m]``."""
    from bianet_lib.engine.diagnostics import _inputs
    from bianet_lib.model.losses import attention_mass

    encoder = model.face_encoder if modality == "face" else model.voice_encoder
    mod = model.face_intervention if modality == "face" else model.voice_intervention
    out: dict[str, list] = {}
    for start in range(0, len(idx), 128):
        chunk = idx[start:start + 128]
        res = mod(encoder(_inputs(split, modality, chunk).to(device)))
        for name, attn in (("pia", res.positive_attention), ("nia", res.negative_attention)):
            if attn is not None:
                out.setdefault(name, []).append(attention_mass(attn.cpu(), masks[modality][chunk]))
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def paired_attention_shifts(model, test, twin, device="cpu", n: int = N_ATTENTION, n_boot: int = 2000) -> dict:
    """PIA's and NIA's paired attention shift per modality (``attention_shift``) over the first
    ``n`` interfered test samples, the mask the interfered version's interfered tokens at the
    model's map grids; {} for a model without token attention."""
    from bianet_lib.data.interference import TokenMasks
    from bianet_lib.model.encoders import map_grids

    model.eval()
    _same_samples(test, twin)
    tm = TokenMasks(test, *map_grids(model.cfg))
    masks = {"face": tm.faces(range(len(test.faces))), "voice": tm.voices(range(len(test.voices)))}
    out: dict = {}
    for modality in ("face", "voice"):
        mod = model.face_intervention if modality == "face" else model.voice_intervention
        if mod is None or mod.axis != "tokens":
            continue
        idx = torch.nonzero(masks[modality].any(1)).flatten()[:n]
        if len(idx) == 0:
            continue
        hit = _masses_on(model, test, modality, idx, device, masks)
        clean = _masses_on(model, twin, modality, idx, device, masks)
        ids = _ids(test, modality)[idx.numpy()]
        out[modality] = {k: attention_shift(hit[k].numpy(), clean[k].numpy(), ids, n_boot) for k in hit}
    return out


# --- 4. probes ----------------------------------------------------------------------------------
def local_labels(split, modality: str) -> dict[str, np.ndarray]:
    """Per sample: ``kind`` of local interference (none / face / texture, none / speaker / noise)
    and, for samples that carry it, its ``position``: faces the box centre's image quadrant
    (0-3), voices the first burst's place in the room its segment leaves it, in thirds (0-2); -1
    without (or, for a burst that fills its segment, without a position)."""
    meta = split.face_meta if modality == "face" else split.voice_meta
    kind = meta["local_kind"].astype(str).to_numpy() if "local_kind" in meta else np.full(len(meta), "none")
    pos = np.full(len(meta), -1)
    if modality == "face" and split.face_boxes is not None:
        b = np.asarray(split.face_boxes, dtype=float)
        size = split.faces.shape[-1]
        has = b[:, 2] > b[:, 0]
        cy, cx = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        pos = np.where(has, 2 * (cy >= size / 2) + (cx >= size / 2), -1)
    elif modality == "voice" and split.voice_intervals is not None:
        # where the first burst sits in the room its segment leaves it (the generator's u);
        # a burst that fills its segment has no position
        iv = np.asarray(split.voice_intervals, dtype=float)
        seg_end = np.floor(split.voices.shape[1] / iv.shape[1])
        room = seg_end - (iv[:, 0, 1] - iv[:, 0, 0])
        has = (iv[:, 0, 1] > iv[:, 0, 0]) & (room >= 3)
        u = np.where(has, iv[:, 0, 0] / np.maximum(room, 1), 0.0)
        pos = np.where(has, np.minimum((3 * u).astype(int), 2), -1)
    return {"kind": kind, "position": pos}


@torch.no_grad()
def local_probes(model, test, device="cpu", scorer=None) -> dict:
    """Linear probes (folds grouped by identity) of h_hat and, with NIA, h_tilde for the local
    interference's kind (all samples) and position (samples that carry it). ``scorer``: a
    ``BIANetScorer`` of ``model`` whose embeddings of ``test`` may already be cached."""
    from bianet_lib.engine.diagnostics import linear_probe
    from bianet_lib.engine.scoring import BIANetScorer

    scorer = scorer if scorer is not None else BIANetScorer(model, device)
    out = {}
    for modality in ("face", "voice"):
        emb = scorer.embed(test, modality)
        ids = (test.face_meta if modality == "face" else test.voice_meta)["identity"].to_numpy()
        labels = local_labels(test, modality)
        has = labels["position"] >= 0
        for part, name in ((0, "h_hat"), (1, "h_tilde")):
            if part >= emb.shape[1]:
                continue
            x = emb[:, part].double()
            out[f"{modality}/{name}"] = {
                "kind": _finite(linear_probe(x, labels["kind"], ids)),
                "position": _finite(linear_probe(x[torch.as_tensor(has)], labels["position"][has], ids[has]))}
    return out


def _finite(probe: dict) -> dict:
    """A probe result with NaN (one class only: nothing to probe) stored as None."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in probe.items()}


@torch.no_grad()
def branch_accuracies(model, scorer, test: SplitData, trials) -> dict:
    """Per direction, the 1:2 accuracy on the endpoint trials of the counterfactual prediction's
    parts (Eq. 20-22): z_pos alone, -z_neg alone (above 0.5: the negative branch scores the true
    pair LOW, an anti-identity matcher) and z = z_pos - w z_neg, and the correlation of the two
    branches' candidate logit differences, and each part's per-trial correctness (bit-packed, so
    arms can be paired trial by trial); {} for a model without a negative branch or scored by
    cosine. Reuses the scorer's embeddings of ``test``."""
    from bianet_lib.engine.diagnostics import dz_correlation, trial_logits

    if model.cfg.select_route == "cosine" or not model.cfg.use_nia:
        return {}
    emb = {m: scorer.embed(test, m).to(scorer.device) for m in ("voice", "face")}
    out = {}
    for d, logits in trial_logits(model, emb, trials, scorer.w).items():
        z, z_pos, z_neg = (t.float().cpu() for t in logits)
        target = np.asarray(trials[d].target)
        hits = {name: metrics.matching_correct(x, target, TRIAL_SEED)
                for name, x in (("z", z), ("z_pos", z_pos), ("minus_z_neg", -z_neg))}
        out[d] = {**{k: float(np.mean(v)) for k, v in hits.items()}, "corr_dz_pos_neg": dz_correlation(z_pos, z_neg),
                  "w": float(scorer.w), "n_trials": len(target), "bits": {k: pack_bits(v) for k, v in hits.items()}}
    return out


# --- 2, 3, 5: per-trial correctness under each condition --------------------------------------
def run_endpoints(model, cfg, world: dict, device="cpu") -> dict:
    """Every endpoint of one trained model on the test-bed (see the module docstring)."""
    from bianet_lib.data.synthvox import is_fair
    from bianet_lib.engine.scoring import BIANetScorer, EmbeddingCosineScorer
    from bianet_lib.experiments.endpoints import neutral_fill, trial_correct

    test = world["test"]
    if test.face_boxes is None and test.voice_intervals is None:
        raise ValueError("run_endpoints needs a world with local interference (world_preset=local)")
    trials = endpoint_trials(test)
    conditions = {f"dose{d:g}": test_split_at(cfg, d, base=test) for d in DOSES}
    conditions["filled"] = neutral_fill(test)
    # the route the run was selected on: the peer's classifier is never trained (select_route=cosine)
    scorer = (EmbeddingCosineScorer if cfg.select_route == "cosine" else BIANetScorer)(model, device)
    record: dict = {"route": cfg.select_route, "trial_seed": TRIAL_SEED, "trials_per_id": TRIALS_PER_ID,
                    "doses": list(DOSES), "local_scale": cfg.world_local_scale, "directions": {}}
    for d, tr in trials.items():
        rec = {"n_trials": len(tr.query), "accuracy": {}, "bits": {}}
        for name, split in conditions.items():
            correct = trial_correct(scorer, split, tr, seed=TRIAL_SEED)
            rec["accuracy"][name] = float(correct.mean())
            rec["bits"][name] = pack_bits(correct)
        rec["clean_twin_drop"] = rec["accuracy"]["dose0"] - rec["accuracy"]["dose1"]
        rec["ceiling_gain"] = rec["accuracy"]["filled"] - rec["accuracy"]["dose1"]
        record["directions"][d] = rec
    record["attention"] = attention_masses(model, test, device)
    record["probes"] = local_probes(model, test, device, scorer)  # the same scorer: test embedded once
    if is_fair(cfg.world_preset):  # issue 25 (the local test-bed's records keep their keys)
        record["attention_shift"] = paired_attention_shifts(model, test, conditions["dose0"], device)
        record["branches"] = branch_accuracies(model, scorer, test, trials)
    return record
