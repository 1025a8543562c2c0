"""The departures table: where each preset differs from the literal reading of the paper.

Every field of :class:`bianet_lib.config.BIANetConfig` has one entry in :data:`LITERAL`: the
equation or section it comes from, the literal reading's value (the paper's where the paper
gives one, the authors' related code's where only the code does, see
../shared/notes/paper-facts.md) and that source; run-environment and data-location fields are
marked :data:`FREE` (the paper fixes nothing there). :func:`departure_rows` computes one row per
field where ``paper``, ``paper-fixed`` or ``cpu-small`` differs from the literal value, with the
one-line reason from :data:`REASONS`; it refuses a field without a literal entry and a differing
row without a reason, so a new config field or a changed default cannot go unlisted.
:func:`render_markdown` turns the rows into the table of docs/paper-ambiguities.md (between
:data:`BEGIN` and :data:`END`); tests/test_paper_preset.py regenerates it and compares.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

BEGIN, END = "<!-- departures-table -->", "<!-- /departures-table -->"
TABLE_PRESETS = ("paper", "paper-fixed", "cpu-small")


class _Free:
    def __repr__(self) -> str:
        return "FREE"


#: A field the paper has no reading of: where the data live, the device, threads, seeds.
FREE = _Free()


@dataclass(frozen=True)
class Unrunnable:
    """A literal form no config value can hold, because as printed it does not run."""

    text: str


@dataclass(frozen=True)
class Literal:
    equation: str  # where the reading comes from: "Eq. 10", "Sec. 5.1", ...
    value: object  # the literal value (a config value), an Unrunnable, or FREE
    source: str  # "paper", "authors' code", "open" (neither gives it: the reading we take)


P, CODE, OPEN = "paper", "authors' code", "open"

#: The literal reading of every config field.
LITERAL: dict[str, Literal] = {
    "face_encoder": Literal("Sec. 5.1", "resnet18", P),
    "audio_encoder": Literal("Sec. 5.1", "se-resnet", P),
    "face_size": Literal("Sec. 5.1", 224, P),
    "face_widths": Literal("Sec. 5.1 (ResNet-18)", [64, 128, 256, 512], P),
    "audio_widths": Literal("Sec. 5.1 (SE-ResNet-34)", [64, 128, 256, 512], CODE),
    "audio_blocks": Literal("Sec. 5.1 (SE-ResNet-34)", [3, 4, 6, 3], P),
    "face_weights": Literal("Sec. 5.1 (ImageNet)", "auto", P),
    "face_strides": Literal("Sec. 5.1 (ResNet-18)", [1, 2, 2, 2], P),
    "encoder_map": Literal("Sec. 5.1 (512x3x3)", "pool3", P),
    "n_mels": Literal("audio front end", 40, CODE),
    "clip_seconds": Literal("Sec. 5.1 (160000 values)", 10.0, P),
    "attn_channels": Literal("Eq. 9 (Q/K/V)", 128, CODE),
    "affinity_axis": Literal("Eq. 9", "channels", CODE),
    "epsilon_mode": Literal("Eq. 10-11, Table 6", "learned", P),
    "epsilon": Literal("Table 6 (initial value)", 0.1, OPEN),
    "gate_sharpness": Literal("Eq. 10 (hard truncation)", 0.0, P),
    "truncation": Literal("Eq. 10-12, 15", "zero", P),
    "affinity_center": Literal("Eq. 9 (A = X X^T)", False, P),
    "use_pia": Literal("Fig. 3", True, P),
    "use_nia": Literal("Fig. 3", True, P),
    "control_attention": Literal("(not in the paper)", False, P),
    "tau1": Literal("Eq. 12 (text)", 10.0, P),
    "tau2": Literal("Eq. 19, Fig. 7", 10.0, OPEN),
    "nia_drop_p": Literal("Eq. 17", 0.1, CODE),
    "tau_nia": Literal("Eq. 15 (no temperature)", 1.0, P),
    "pia_norm": Literal("Eq. 14 (IN)", "instance", P),
    "se_mask": Literal("Eq. 14 (SENet mask)", "sum", CODE),
    "embed_dim": Literal("Sec. 5.1", 128, P),
    "generator": Literal("Sec. 5.1 (MLP generator)", "paper", CODE),
    "hidden_dim": Literal("Sec. 5.1 (MLP generator)", 256, CODE),
    "matching_head": Literal("Eq. 20 (K*128 -> K)", "paper", P),
    "k": Literal("Table 1 (1:2)", 2, P),
    "curriculum": Literal("Eq. 22", Unrunnable("-log(P_cp - (1 - cos(pi e/N)) P_cn)"), P),
    "w_match": Literal("losses", 2.0, CODE),
    "w_adv": Literal("Sec. 4.4", 1.0, CODE),
    "adversarial_target": Literal("Sec. 4.4 (GAN game)", "flipped", CODE),
    "adversarial_schedule": Literal("Sec. 4.4 (no schedule)", "constant", P),
    "discriminator_batch": Literal("Sec. 4.4 (GAN game)", "separate", OPEN),
    "w_metric": Literal("Sec. 4.4 (pair weighting)", 2.0, CODE),
    "w_identity": Literal("(not in the paper)", 0.0, P),
    "metric_loss": Literal("Sec. 4.4 (pair weighting)", "lifted", CODE),
    "metric_margin": Literal("Sec. 4.4 (pair weighting)", 1.2, CODE),
    "select_route": Literal("Sec. 5.1 (classifier ACC)", "classifier", P),
    "token_masks": Literal("(not in the paper)", "none", P),
    "w_attn_supervision": Literal("(not in the paper)", 0.0, P),
    "epochs": Literal("Sec. 5.1", 50, CODE),
    "batch_size": Literal("Sec. 5.1", 50, P),
    "lr_encoders": Literal("Sec. 5.1", 5e-2, P),
    "lr_heads": Literal("Sec. 5.1", 5e-3, P),
    "lr_schedule": Literal("Sec. 5.1", "step", P),
    "lr_milestones": Literal("Sec. 5.1", [20, 40], P),
    "lr_gamma": Literal("Sec. 5.1", 0.1, P),
    "weight_decay": Literal("Sec. 5.1", 5e-4, P),
    "data": Literal("Sec. 5 (VoxCeleb1)", "voxceleb", P),
    "split": Literal("Table 1 (Wen et al.)", "wen", P),
    **{name: Literal("(run environment)", FREE, OPEN) for name in (
        "amp", "device", "seed", "num_threads", "loader_workers", "audio_root", "face_root", "cache_dir",
        "channels_last", "compile")},
    **{name: Literal("(SynthVox only)", FREE, OPEN) for name in (
        "world_seed", "bias", "world_n_train", "world_n_val", "world_n_test", "world_per_id_train",
        "world_per_id_eval", "world_preset", "world_local_scale")},
}

#: One line per field where some preset departs from the literal reading: why.
REASONS: dict[str, str] = {
    "face_encoder": "cpu-small: small towers that train in minutes on 2 CPU cores (the course's scale)",
    "audio_encoder": "cpu-small: small towers that train in minutes on 2 CPU cores",
    "face_size": "cpu-small: SynthVox faces at 64 px keep a training run within minutes on CPU",
    "face_widths": "cpu-small: the small face tower's widths (the ResNet-18 presets ignore this field)",
    "audio_widths": "cpu-small: the small voice tower's widths",
    "audio_blocks": "cpu-small: one block per stage; the paper's SE-ResNet-34 has (3, 4, 6, 3) (the authors' code (2, 2, 2, 2))",
    "face_weights": "cpu-small: no ImageNet weights exist for the small tower, and SynthVox faces are not photographs",
    "encoder_map": "cpu-small: native maps (16 face tokens, 13 voice time steps) instead of 3x3 (docs/reproduction.md, 'The mechanism, alive': maps too small to attend over)",
    "clip_seconds": "cpu-small: 1 s SynthVox clips",
    "attn_channels": "cpu-small: Q/K/V width 64 for the small towers' 128 channels (the authors reduce 512 -> 128)",
    "affinity_axis": "paper-fixed, cpu-small: tokens; with channels and centring the voice affinity still saturates (35%, health table of docs/reproduction.md) and only tokens act on position",
    "gate_sharpness": "paper-fixed, cpu-small: a soft threshold (width 0.05) lets PIA's loss move epsilon too; the hard one passes epsilon a gradient only through NIA's A_tilde (measured: paper-fixed's epsilon stays within 0.005 of its initial 0.1, docs/paper-vs-fixed.md)",
    "truncation": "paper-fixed, cpu-small: weak entries dropped from PIA's softmax (and strong ones from NIA's); zeroed, each keeps weight exp(0) = 1 (docs/paper-vs-fixed.md measures NIA's entropy)",
    "affinity_center": "paper-fixed, cpu-small: post-ReLU rows share one direction, so uncentred cosines pile near +-1 and epsilon splits only by sign (docs/reproduction.md, 'The mechanism, alive')",
    "tau1": "cpu-small: 5, Fig. 7's best value; the text's 10 is the literal reading",
    "pia_norm": "paper-fixed, cpu-small: IN zeroes every channel's spatial mean, so a pooling generator averages PIA away (docs/reproduction.md, 'The mechanism, alive', first row)",
    "se_mask": "paper-fixed, cpu-small: sigmoid(SE(avg) + SE(max)) keeps m in (0, 1) and Eq. 14 a convex mix; the authors' sum of two sigmoids reaches 2, so (1 - m) X turns negative (docs/paper-vs-fixed.md measures the literal mask)",
    "generator": "cpu-small: global pool + linear; the batch-normalised MLP kept the contrastive loss at chance for hundreds of SynthVox steps (config.generator)",
    "matching_head": "all: a K*128 -> K head scores only K = k, so the protocol's 1:3-1:10 curve (Fig. 4) and verification could not run; 'tied' is Eq. 20 with one block-diagonal scorer",
    "curriculum": "paper: 'paper' = Eq. 22 with the log argument floored at 1e-6 (undefined when P_cp <= w P_cn, w up to 2); paper-fixed, cpu-small: logits z_pos - w z_neg, w 0 -> 1",
    "adversarial_target": "paper-fixed, cpu-small: flipped labels reward swapping the modalities' sides; measured discriminator loss 2.8 > 2 ln 2 (docs/reproduction.md, 'The mechanism, alive')",
    "adversarial_schedule": "paper-fixed, cpu-small: DANN ramp 0 -> 1; with a constant weight the 8x8-map BIANet read 0.52 on validation after two epochs, with the ramp 0.62 (docs/reproduction.md)",
    "discriminator_batch": "paper-fixed, cpu-small: batch norm over a one-modality batch standardises each modality alone and blinds D: loss 2 ln 2 in every epoch (docs/reproduction.md)",
    "w_identity": "cpu-small: an auxiliary identity loss that speeds up learning on CPU (not in the paper)",
    "metric_loss": "cpu-small: InfoNCE, the contrastive family of Wen et al. and peers",
    "epochs": "cpu-small: 8 epochs, minutes on CPU",
    "batch_size": "cpu-small: 64 (SynthVox, CPU)",
    "lr_encoders": "paper-fixed: 1e-3; at reduced size the authors' 5e-2 / 5e-3 drove the matching loss up from 1.04 to 1.27 over 30 steps, and on an H200 at full size from 0.47 to 5.59 over 256 (docs/gpu-and-real-data.md); cpu-small: 2e-3",
    "lr_heads": "paper-fixed: 1e-3 (see lr_encoders); cpu-small: 2e-3",
    "lr_schedule": "cpu-small: cosine to zero over a short run",
    "lr_milestones": "cpu-small: no milestones (cosine schedule)",
    "weight_decay": "cpu-small: none (the authors' code has none either; the paper says 5e-4)",
    "data": "cpu-small: the SynthVox world the course trains on",
}


class TableError(ValueError):
    """A field without a literal reading, or a departure without a reason."""


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def preset_values(names=TABLE_PRESETS) -> dict[str, dict]:
    from bianet_lib.config import PRESETS

    return {name: PRESETS[name]().to_dict() for name in names}


def departure_rows(fields: list[str] | None = None, presets: dict[str, dict] | None = None,
                   literal: dict[str, Literal] | None = None,
                   reasons: dict[str, str] | None = None) -> list[dict]:
    """One row per field where a preset differs from the literal reading (see module doc).

    ``fields`` defaults to BIANetConfig's fields, ``presets`` to {name: config dict} of
    :data:`TABLE_PRESETS`; a field missing from a preset dict reads as its dataclass default.
    """
    from bianet_lib.config import BIANetConfig

    literal = LITERAL if literal is None else literal
    reasons = REASONS if reasons is None else reasons
    presets = preset_values() if presets is None else presets
    defaults = BIANetConfig().to_dict()
    fields = [f.name for f in dataclasses.fields(BIANetConfig)] if fields is None else fields
    missing = [f for f in fields if f not in literal]
    if missing:
        raise TableError(f"config field(s) without a literal-reading entry in presets_table.LITERAL: "
                         f"{', '.join(missing)}")
    rows = []
    for name in fields:
        lit = literal[name]
        if lit.value is FREE:
            continue
        values = {p: _norm(cfg.get(name, defaults.get(name))) for p, cfg in presets.items()}
        if all(v == _norm(lit.value) for v in values.values()):
            continue
        if not reasons.get(name):
            raise TableError(f"config field {name}: a preset differs from the literal reading "
                             f"({lit.value!r}) but presets_table.REASONS has no reason")
        rows.append({"field": name, "equation": lit.equation, "source": lit.source,
                     "literal": lit.value, **values, "reason": reasons[name]})
    return rows


def free_fields(literal: dict[str, Literal] | None = None) -> list[str]:
    return [name for name, lit in (LITERAL if literal is None else literal).items() if lit.value is FREE]


def fmt(value) -> str:
    """A value as the table shows it (YAML spelling)."""
    if isinstance(value, Unrunnable):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def render_markdown(rows: list[dict], presets=TABLE_PRESETS) -> str:
    """The rows as a markdown table; a preset's cell is bold where it departs from the literal."""
    head = ["field", "equation", "literal (source)", *presets, "reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lit = r["literal"]
        cells = [f"`{r['field']}`", r["equation"], f"{fmt(lit)} ({r['source']})"]
        for p in presets:
            v = r[p]
            same = not isinstance(lit, Unrunnable) and v == _norm(lit)
            cells.append(fmt(v) if same else f"**{fmt(v)}**")
        cells.append(r["reason"])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append("Fields the paper does not fix (run environment, data location, SynthVox): "
                 + ", ".join(f"`{f}`" for f in free_fields()) + ".")
    return "\n".join(lines)


def table_block() -> str:
    return f"{BEGIN}\n{render_markdown(departure_rows())}\n{END}"


def rewrite_doc(path: str | Path) -> bool:
    """Replace the block between the markers in ``path`` with the current table; True if changed."""
    path = Path(path)
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise TableError(f"{path}: no {BEGIN} ... {END} block")
    new = pattern.sub(lambda _m: table_block(), text)
    if new != text:
        path.write_text(new)
    return new != text


def doc_block(path: str | Path) -> str:
    text = Path(path).read_text()
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S)
    if m is None:
        raise TableError(f"{path}: no {BEGIN} ... {END} block")
    return m.group(0)
