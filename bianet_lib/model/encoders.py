"""Feature extractors that end in a C x H x W map the attention reads.

Two map modes (``encoder_map``):
- "pool3": adaptively pooled to 3 x 3, as the paper (Sec. 5.1: "uniformly adjusted to 512x3x3").
  The map must have at least 3 x 3 positions before pooling: it is never upsampled.
- "native" (cpu-small): the trunk's own map. Faces keep an H x W grid (64 px at stride 16 ->
  4 x 4 = 16 tokens; ``face_strides`` sets it); voices are averaged over frequency into 1 x T
  time tokens (1 s -> 13).
  Departure, why: on a 3 x 3 map (and worse, a 2 x 2 map upsampled to 3 x 3) attention has
  no positions to choose between, so it cannot down-weight a local occluder or a noise burst.

- Face, paper preset: torchvision ResNet-18 without pooling/fc, on 224x224 RGB (512 x 7 x 7),
  adaptively pooled to 3 x 3. ImageNet weights are read from a local file only, never fetched.
- Audio, paper preset: an SE-ResNet on a 40-mel log spectrogram computed inside the network.
  The paper says "SE-ResNet-34": blocks (3, 4, 6, 3) with squeeze-excitation; the authors'
  related code uses (2, 2, 2, 2) without SE, which ``audio_blocks`` can express.
- Small variants (CPU): the same residual trunk with narrow widths and one block per stage.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from bianet_lib.data.audio import LogMelFrontEnd

if TYPE_CHECKING:
    from bianet_lib.config import BIANetConfig

MAP_SIZE = 3
RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ImageNet1K_V1 file name


class SqueezeExcite(nn.Module):
    """Channel re-weighting of SE-ResNets (Hu et al.)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, se: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout) if se else nn.Identity()
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResidualTrunk(nn.Module):
    """A ResNet of basic blocks: a stem, then one stage per width (first block of stage i at
    ``strides[i]``, default 1, 2, 2, 2), ending in the map mode's shape (see module doc)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...],
                 se: bool, stem_stride: int = 2, strides: tuple[int, ...] | None = None,
                 map_mode: str = "pool3", pool_frequency: bool = False):
        super().__init__()
        strides = strides or (1,) + (2,) * (len(widths) - 1)
        if not len(widths) == len(blocks) == len(strides):
            raise ValueError(f"widths {widths}, blocks {blocks} and strides {strides} must have the "
                             "same length")
        self.map_mode, self.pool_frequency = map_mode, pool_frequency
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, width, strides[i] if j == 0 else 1, se))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_map(self.stages(self.stem(x)), self.map_mode, self.pool_frequency)


def to_map(x: torch.Tensor, map_mode: str, pool_frequency: bool = False) -> torch.Tensor:
    """A trunk's output [B, C, H, W] -> the attention's map (see the module doc).

    "pool3" refuses a map smaller than 3 x 3 instead of upsampling it (an upsampled 2 x 2 map
    has 4 distinct positions, which attention cannot tell apart from 9).
    """
    if map_mode == "native":
        return x.mean(dim=2, keepdim=True) if pool_frequency else x
    if x.shape[-2] < MAP_SIZE or x.shape[-1] < MAP_SIZE:
        raise ValueError(f"the encoder's map is {tuple(x.shape[-2:])}, smaller than {MAP_SIZE}x{MAP_SIZE}: "
                         "use larger inputs or encoder_map='native' (maps are never upsampled)")
    return F.adaptive_avg_pool2d(x, MAP_SIZE)


class FaceEncoder(nn.Module):
    """uint8-normalised RGB faces [B, 3, S, S] -> [B, C, h, w] (3 x 3 with "pool3")."""

    def __init__(self, kind: str = "small", widths: tuple[int, ...] = (16, 32, 64, 128),
                 weights: str | None = None, strides: tuple[int, ...] | None = None,
                 map_mode: str = "pool3"):
        super().__init__()
        if kind == "small":
            self.net = ResidualTrunk(3, widths, (1,) * len(widths), se=False, strides=strides,
                                     map_mode=map_mode)
            self.out_channels = widths[-1]
        elif kind == "resnet18":
            self.net = resnet18_trunk(weights, map_mode)
            self.out_channels = 512
        else:
            raise ValueError(f"unknown face encoder {kind!r}: expected small or resnet18")

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces)


class _MapHead(nn.Module):
    def __init__(self, map_mode: str):
        super().__init__()
        self.map_mode = map_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_map(x, self.map_mode)


def resnet18_trunk(weights: str | None, map_mode: str = "pool3") -> nn.Module:
    """torchvision ResNet-18 up to layer4 (7 x 7 at 224 px), then the map mode; weights from disk only."""
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    path = find_resnet18_weights(weights)
    if path is not None:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    trunk = nn.Sequential(*list(net.children())[:-2], _MapHead(map_mode))
    return trunk


def find_resnet18_weights(weights: str | None) -> Path | None:
    """Resolve ``weights``: None (random init), "auto" (torch's local cache) or a file path.

    Nothing is ever downloaded. When "auto" finds no file, training goes on from scratch with
    a warning that says how to get the file.
    """
    if weights is None:
        return None
    if weights != "auto":
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ResNet-18 weights file not found")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE
    if path.is_file():
        return path
    warnings.warn(
        f"ImageNet ResNet-18 weights not found at {path}; the face encoder starts from scratch. "
        "To use them, on a machine with internet run: python -c \"import torchvision; "
        "torchvision.models.resnet18(weights='IMAGENET1K_V1')\" and copy the file to that path, "
        "or set face_weights to the file's path.", stacklevel=2)
    return None


class AudioEncoder(nn.Module):
    """Waveforms [B, L] at 16 kHz -> log-mel [B, 1, n_mels, T] -> [B, C, 3, 3] ("pool3") or
    time tokens [B, C, 1, T'] ("native": frequency averaged out)."""

    def __init__(self, kind: str = "small", widths: tuple[int, ...] = (16, 32, 64, 128),
                 blocks: tuple[int, ...] = (1, 1, 1, 1), n_mels: int = 40, map_mode: str = "pool3"):
        super().__init__()
        if kind not in ("small", "se-resnet"):
            raise ValueError(f"unknown audio encoder {kind!r}: expected small or se-resnet")
        self.frontend = LogMelFrontEnd(n_mels=n_mels)
        self.net = ResidualTrunk(1, widths, blocks, se=(kind == "se-resnet"), stem_stride=1,
                                 map_mode=map_mode, pool_frequency=True)
        self.out_channels = widths[-1]

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.net(self.frontend(waves))


# --- the maps' token grids (issue 25: the fair world and its masks) -------------------------------
#: Config fields that set the encoders' map shapes.
_MAP_FIELDS = ("face_encoder", "audio_encoder", "face_size", "face_widths", "audio_widths", "audio_blocks",
               "face_strides", "encoder_map", "n_mels", "clip_seconds")


def map_grids(cfg: BIANetConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """((H, W) of the face map, (H, W) of the voice map) the config's encoders produce, read by
    running them on a zero batch (never assumed from strides)."""
    return _map_grids(tuple((f, getattr(cfg, f)) for f in _MAP_FIELDS))


@lru_cache(maxsize=16)
def _map_grids(fields: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    from bianet_lib.data.types import SAMPLE_RATE

    c = dict(fields)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's random stream is left as it was
        face = FaceEncoder(c["face_encoder"], c["face_widths"], None, c["face_strides"], c["encoder_map"]).eval()
        voice = AudioEncoder(c["audio_encoder"], c["audio_widths"], c["audio_blocks"], c["n_mels"],
                             c["encoder_map"]).eval()
        f = face(torch.zeros(1, 3, c["face_size"], c["face_size"]))
        v = voice(torch.zeros(1, int(round(c["clip_seconds"] * SAMPLE_RATE))))
    return (int(f.shape[-2]), int(f.shape[-1])), (int(v.shape[-2]), int(v.shape[-1]))
