"""Is each part of a trained BIANet alive? One report: the mechanism's health in numbers.

A module can pass every equation test and still do nothing in the trained model (the first
version of this course trained exactly such a model: PIA's attended map averaged away by the
pooling generator, a discriminator blinded by per-modality batch norm, an affinity saturated
at +-1). :func:`diagnose` measures, on one split of held-out data:

- the mask m of Eq. 14 (mean and quantiles) and the threshold epsilon of Eq. 10-11;
- the share of strong entries (A >= eps) at the model's epsilon and at Table 6's 0.01 / 0.1 /
  0.2, and the share of |A| > 0.9 (saturation);
- attention entropy relative to uniform (1 = uniform) and the effective number of attended
  rows exp(H) for PIA (Eq. 12), NIA (Eq. 15, also at other temperatures) and Eq. 19;
- PIA's contribution: ||h(X_bar) - h((1 - m) X)|| / ||h(X_bar)||, how much the attended term
  m * N(X_hat) of Eq. 14 moves the embedding;
- the discriminator's accuracy on held-out embeddings beside a linear probe's;
- test-time ablations as 1:2 accuracies: full model, m = 0, attended term removed, w = 0,
  -z_neg alone, negative embeddings shuffled across samples;
- linear probes of h_hat and h_tilde for identity, gender and each interference factor
  (folds grouped by identity, except for identity itself).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from bianet_lib.data.trials import make_matching_trials
from bianet_lib.data.types import SplitData
from bianet_lib.engine.metrics import matching_accuracy
from bianet_lib.engine.scoring import BIANetScorer
from bianet_lib.model.affinity import affinity, to_rows
from bianet_lib.model.attention import negative_attention
from bianet_lib.model.network import BIANet

TABLE6_EPSILONS = (0.01, 0.1, 0.2)
NIA_TAUS = (1.0, 10.0, 50.0)
TRIAL_SEED, TRIALS_PER_ID = 2024, 50  # 5,000 trials per direction on 100 test identities


def _entropy_stats(p: torch.Tensor) -> tuple[float, float]:
    """Mean row entropy of attention rows p [..., N] relative to log N, and mean exp(H)."""
    h = -(p.clamp_min(1e-12).log() * p).sum(-1)
    return float(h.mean() / math.log(p.shape[-1])), float(h.exp().mean())


def _modules(model: BIANet, modality: str):
    if modality == "face":
        return model.face_encoder, model.face_intervention
    return model.voice_encoder, model.voice_intervention


def _inputs(split: SplitData, modality: str, idx: np.ndarray) -> torch.Tensor:
    """What the encoder of ``modality`` reads (faces scaled as BIANet.embed_faces does)."""
    if modality == "face":
        return split.faces[idx].float() / 127.5 - 1.0
    return split.voices[idx].float()


@torch.no_grad()
def mechanism_health(model: BIANet, split: SplitData, modality: str, n: int = 256,
                     batch_size: int = 64, device: str = "cpu") -> dict:
    """Mask, threshold, affinity, entropies and PIA's contribution on ``n`` samples of ``split``."""
    model.eval()
    encoder, mod = _modules(model, modality)
    if mod is None:
        return {}
    total = len(split.faces if modality == "face" else split.voices)
    idx = np.linspace(0, total - 1, min(n, total)).astype(int)
    acc: dict[str, list[float]] = {}

    def add(key, value, weight):
        acc.setdefault(key, []).append((float(value), weight))

    masks, n_tokens = [], None
    for start in range(0, len(idx), batch_size):
        chunk = idx[start:start + batch_size]
        x = encoder(_inputs(split, modality, chunk).to(device))
        out = mod(x)
        a, eps, w = out.affinity, out.epsilon, len(chunk)
        n_tokens = a.shape[-1]
        add("epsilon", eps.float().mean(), w)
        add("strong_share", (a >= eps).float().mean(), w)
        for e in TABLE6_EPSILONS:
            add(f"strong_share@{e}", (a >= e).float().mean(), w)
        add("saturated_share", (a.abs() > 0.9).float().mean(), w)
        if out.positive_attention is not None:
            rel, eff = _entropy_stats(out.positive_attention)
            add("pia_entropy", rel, w)
            add("pia_effective_rows", eff, w)
            m = mod.pia_mask(x)
            masks.append(m.flatten().cpu())
            h_full = model.generator(out.positive)
            h_gate = model.generator((1 - m) * x)
            add("pia_contribution", ((h_full - h_gate).norm(dim=1) / h_full.norm(dim=1).clamp_min(1e-9)).mean(), w)
        if out.negative_attention is not None:
            rel, eff = _entropy_stats(out.negative_attention)
            add("nia_entropy", rel, w)
            add("nia_effective_rows", eff, w)
            for tau in NIA_TAUS:
                p = negative_attention(a, eps, mod.sharpness, None, tau, mod.truncation)
                add(f"nia_entropy@tau{tau:g}", _entropy_stats(p)[0], w)
            xt = out.negative_attention @ to_rows(mod.value(x), mod.axis)
            a2 = affinity(xt, xt, mod.center)
            for sign, name in ((1, "eq19_pos"), (-1, "eq19_neg")):
                rel, eff = _entropy_stats(torch.softmax(sign * mod.tau2 * a2, dim=-1))
                add(f"{name}_entropy", rel, w)
                add(f"{name}_effective_rows", eff, w)
    report = {k: sum(v * w for v, w in vals) / sum(w for _, w in vals) for k, vals in acc.items()}
    report["tokens"] = int(n_tokens)
    report["axis"] = mod.axis
    if masks:
        m = torch.cat(masks)
        q = torch.quantile(m[torch.randperm(len(m), generator=torch.Generator().manual_seed(0))[:200_000]],
                           torch.tensor([0.05, 0.5, 0.95]))
        report.update(mask_mean=float(m.mean()), mask_q05=float(q[0]), mask_q50=float(q[1]), mask_q95=float(q[2]))
    return report


@contextlib.contextmanager
def ablated(model: BIANet, what: str):
    """Test-time ablation inside PIA: "mask_zero" (m = 0, X_bar = X) or "attended_zero"
    (the term m * N(X_hat) of Eq. 14 removed, X_bar = (1 - m) X: PIA as a bare SE gate)."""
    handles = []
    for mod in (model.face_intervention, model.voice_intervention):
        if mod is None or not mod.use_pia:
            continue
        target = mod.pia_mask if what == "mask_zero" else mod.pia_norm
        handles.append(target.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _trials(split: SplitData) -> dict:
    return {d: make_matching_trials(split, d, 2, TRIALS_PER_ID, TRIAL_SEED) for d in ("vf", "fv")}


def trial_logits(model: BIANet, emb: dict, trials: dict, w: float = 0.0) -> dict:
    """Per direction, ``model.match_logits`` (z, z_pos, z_neg; Eq. 20-22) of the 1:K trials from
    the embeddings {"voice": [N, P, D], "face": [N, P, D]} of one split."""
    out = {}
    for d, t in trials.items():
        q, c = (emb["voice"], emb["face"]) if d == "vf" else (emb["face"], emb["voice"])
        out[d] = model.match_logits(q[t.query], c[t.candidates], w)
    return out


def dz_correlation(z_pos: torch.Tensor, z_neg: torch.Tensor) -> float:
    """Correlation over 1:2 trials of the two branches' candidate logit differences (first
    candidate minus second): near -1 when the negative branch mirrors the positive one."""
    return float(np.corrcoef((z_pos[:, 0] - z_pos[:, 1]).numpy(), (z_neg[:, 0] - z_neg[:, 1]).numpy())[0, 1])


def _accuracy(model: BIANet, emb: dict, trials: dict, combine) -> dict:
    return {d: matching_accuracy(combine(z_pos, z_neg), trials[d].target)
            for d, (_, z_pos, z_neg) in trial_logits(model, emb, trials).items()}


@torch.no_grad()
def ablations(model: BIANet, split: SplitData, device: str = "cpu") -> dict:
    """1:2 accuracies (V-F, F-V) of the full model and of each test-time ablation."""
    model.eval()
    trials = _trials(split)

    def embed():
        scorer = BIANetScorer(model, device)
        return {m: scorer.embed(split, m) for m in ("voice", "face")}, scorer.w

    emb, w = embed()
    has_neg = emb["voice"].shape[1] > 1
    full = (lambda zp, zn: zp - w * zn) if has_neg else (lambda zp, zn: zp)
    report = {"w": w, "full": _accuracy(model, emb, trials, full)}
    for what in ("mask_zero", "attended_zero"):
        if model.cfg.use_pia:
            with ablated(model, what):
                emb_a, _ = embed()
            report[what] = _accuracy(model, emb_a, trials, full)
    if has_neg:
        report["w_zero"] = _accuracy(model, emb, trials, lambda zp, zn: zp)
        report["neg_only"] = _accuracy(model, emb, trials, lambda zp, zn: -zn)
        g = torch.Generator().manual_seed(TRIAL_SEED)
        shuffled = {m: torch.stack([e[:, 0], e[torch.randperm(len(e), generator=g), 1]], dim=1)
                    for m, e in emb.items()}
        report["neg_shuffled"] = _accuracy(model, shuffled, trials, full)
        report["corr_dz_pos_neg"] = {d: dz_correlation(zp, zn) for d, (_, zp, zn) in trial_logits(model, emb, trials).items()}
    return report


def linear_probe(x: torch.Tensor, y: np.ndarray, groups: np.ndarray, folds: int = 5,
                 steps: int = 100, l2: float = 1e-3) -> dict:
    """Cross-validated accuracy of a multinomial logistic regression (LBFGS) and the majority
    baseline. Folds hold whole groups (identities), so a probe cannot read identity instead."""
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        return {"accuracy": float("nan"), "chance": 1.0, "classes": 1}
    uniq = np.unique(groups)
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(uniq))}
    fold = np.array([fold_of[g] for g in groups])
    correct, chance, n = 0, 0, 0
    for f in range(folds):
        tr, te = fold != f, fold == f
        if te.sum() == 0 or len(np.unique(y_idx[tr])) < 2:
            continue  # a fold whose training part holds one class cannot be probed: not counted
        n += int(te.sum())
        mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-6)
        xtr, xte = (x[tr] - mu) / sd, (x[te] - mu) / sd
        lin = _fit_logistic(xtr.double(), torch.tensor(y_idx[tr]), len(classes), steps, l2)
        with torch.no_grad():
            correct += int((lin(xte.double()).argmax(1).numpy() == y_idx[te]).sum())
        chance += int((y_idx[te] == np.bincount(y_idx[tr]).argmax()).sum())
    if n == 0:
        return {"accuracy": float("nan"), "chance": float("nan"), "classes": int(len(classes))}
    return {"accuracy": correct / n, "chance": chance / n, "classes": int(len(classes))}


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression with an L2 penalty, fitted by LBFGS (deterministic)."""
    lin = torch.nn.Linear(x.shape[1], n_classes).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + l2 * lin.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lin


def interference_labels(split: SplitData, modality: str) -> dict[str, np.ndarray]:
    """The interference factors a probe should (not) find, as class labels per sample.

    Categorical columns as they are; continuous ones split at their median (high / low);
    ``occluded`` and ``blur`` as present / absent; ``overlap_db`` as a second voice present.
    """
    meta = split.face_meta if modality == "face" else split.voice_meta
    out = {}
    for col in meta.columns:
        if col in ("identity", "video", "shortcut_aligned"):
            continue
        v = meta[col].to_numpy()
        if col in ("occluded", "blur"):
            out[col] = (v > 0).astype(int)
        elif col == "overlap_db":
            out["second_voice"] = np.isfinite(v.astype(float)).astype(int)
        elif v.dtype.kind in "fi" and len(np.unique(v)) > 8:
            out[col] = (v > np.median(v)).astype(int)
        else:
            out[col] = v.astype(str)
    return out


def probes(emb: dict[str, torch.Tensor], split: SplitData) -> dict:
    """Linear probes of h_hat (and h_tilde) for identity, gender and interference factors."""
    report = {}
    for modality, e in emb.items():
        ids = (split.face_meta if modality == "face" else split.voice_meta)["identity"].to_numpy()
        targets = {"gender": split.identities["gender"].to_numpy()[ids]} if "gender" in split.identities else {}
        targets.update(interference_labels(split, modality))
        # identity: train and test on different samples of the same identities
        within = np.zeros(len(ids), dtype=int)
        for i in np.unique(ids):
            rows = np.flatnonzero(ids == i)
            within[rows] = np.arange(len(rows)) % 2
        for part, name in ((0, "h_hat"), (1, "h_tilde")):
            if part >= e.shape[1]:
                continue
            x = e[:, part].double()
            r = {"identity": linear_probe(x, ids, within, folds=2)}
            r.update({k: linear_probe(x, y, ids) for k, y in targets.items()})
            report[f"{modality}/{name}"] = r
    return report


@torch.no_grad()
def discriminator_health(model: BIANet, emb: dict[str, torch.Tensor], split: SplitData) -> dict:
    """Accuracy of the model's own discriminator on held-out h_hat, and of a linear probe."""
    model.eval()
    hv, hf = emb["voice"][:, 0], emb["face"][:, 0]
    lv, lf = model.discriminate(hv, hf)
    acc = float(torch.cat([lv.argmax(1) == 1, lf.argmax(1) == 0]).float().mean())
    ids = np.concatenate([split.voice_meta["identity"].to_numpy(), split.face_meta["identity"].to_numpy()])
    y = np.concatenate([np.ones(len(hv), int), np.zeros(len(hf), int)])
    probe = linear_probe(torch.cat([hv, hf]).double(), y, ids)
    return {"accuracy": acc, "probe_accuracy": probe["accuracy"]}


#: Seed of torch's generator while :func:`diagnose` fits its probes (their initial weights come
#: from it): the report is a function of the model and the split alone. Unseeded, two
#: ``bianet diagnose`` runs on the same checkpoint gave probe accuracies 0.002-0.02 apart.
PROBE_SEED = 0


def diagnose(model: BIANet, split: SplitData, device: str = "cpu", n_health: int = 256) -> dict:
    """The whole health report of a trained model on one held-out split (see module doc). The
    probes run under their own seed (:data:`PROBE_SEED`); the caller's random state is untouched."""
    scorer = BIANetScorer(model, device)
    emb = {m: scorer.embed(split, m) for m in ("voice", "face")}
    health = {m: mechanism_health(model, split, m, n_health, device=device) for m in ("face", "voice")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_SEED)
        disc = discriminator_health(model, emb, split)
        probe = probes(emb, split)
    return {"split": split.name, "health": health, "discriminator": disc,
            "ablations": ablations(model, split, device), "probes": probe}
