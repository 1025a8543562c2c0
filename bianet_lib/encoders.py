"""Feature extractors that end in a C x 3 x 3 map (Sec. 5.1: "uniformly adjusted to 512x3x3").

- Face, paper preset: torchvision ResNet-18 without pooling/fc, on 224x224 RGB (512 x 7 x 7),
  adaptively pooled to 3 x 3. ImageNet weights are read from a local file only, never fetched.
- Audio, paper preset: an SE-ResNet on a 40-mel log spectrogram computed inside the network.
  The paper says "SE-ResNet-34": blocks (3, 4, 6, 3) with squeeze-excitation; the authors'
  related code uses (2, 2, 2, 2) without SE, which ``audio_blocks`` can express.
- Small variants (CPU): the same residual trunk with narrow widths and one block per stage.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bianet_lib.data.audio import LogMelFrontEnd

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
    """A ResNet of basic blocks: a stem, four stages (stride 1, 2, 2, 2), pooled to 3 x 3."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...],
                 se: bool, stem_stride: int = 2):
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} must have the same length")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, width, 2 if (j == 0 and i > 0) else 1, se))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), MAP_SIZE)


class FaceEncoder(nn.Module):
    """uint8-normalised RGB faces [B, 3, S, S] -> [B, C, 3, 3]."""

    def __init__(self, kind: str = "small", widths: tuple[int, ...] = (16, 32, 64, 128),
                 weights: str | None = None):
        super().__init__()
        if kind == "small":
            self.net = ResidualTrunk(3, widths, (1,) * len(widths), se=False)
            self.out_channels = widths[-1]
        elif kind == "resnet18":
            self.net = resnet18_trunk(weights)
            self.out_channels = 512
        else:
            raise ValueError(f"unknown face encoder {kind!r}: expected small or resnet18")

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces)


def resnet18_trunk(weights: str | None) -> nn.Module:
    """torchvision ResNet-18 up to layer4, then pooled to 3 x 3; weights from disk only."""
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    path = find_resnet18_weights(weights)
    if path is not None:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    trunk = nn.Sequential(*list(net.children())[:-2], nn.AdaptiveAvgPool2d(MAP_SIZE))
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
    """Waveforms [B, L] at 16 kHz -> log-mel [B, 1, n_mels, T] -> [B, C, 3, 3]."""

    def __init__(self, kind: str = "small", widths: tuple[int, ...] = (16, 32, 64, 128),
                 blocks: tuple[int, ...] = (1, 1, 1, 1), n_mels: int = 40):
        super().__init__()
        if kind not in ("small", "se-resnet"):
            raise ValueError(f"unknown audio encoder {kind!r}: expected small or se-resnet")
        self.frontend = LogMelFrontEnd(n_mels=n_mels)
        self.net = ResidualTrunk(1, widths, blocks, se=(kind == "se-resnet"), stem_stride=1)
        self.out_channels = widths[-1]

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.net(self.frontend(waves))
