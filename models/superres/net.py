"""Residual CNN that super-resolves a binned SANS detector image (after Chang et al. 2019).

Input: a low-resolution image of counts (batch x 1 x h x w), the high-resolution
detector binned by ``factor`` in each direction. Output: the expected counts per
high-resolution pixel (batch x 1 x h*factor x w*factor) for the same collection,
so that binning the output gives back the low-resolution expectation.

The counts are scaled inside ``forward`` (log1p of counts per high-resolution
pixel), so any count range works; the trunk predicts a residual on top of the
bicubic upsampling of the log image, one sub-pixel (PixelShuffle) head per factor.
Negative and NaN pixels (masked, gaps) are read as 0 counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class SuperResConfig:
    """Architecture of the super-resolution net.

    Args:
        factors: the binning factors the net has a head for (powers of two).
        channels: feature channels of the trunk.
        n_blocks: residual blocks in the trunk.
    """

    factors: tuple[int, ...] = (2, 4)
    channels: int = 32
    n_blocks: int = 6


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _upsampler(c: int, factor: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    f = factor
    while f > 1:
        layers += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]
        f //= 2
    layers.append(nn.Conv2d(c, 1, 3, padding=1))
    return nn.Sequential(*layers)


class SuperResNet(nn.Module):
    """Shared residual trunk with one sub-pixel upsampling head per factor."""

    def __init__(self, config: SuperResConfig) -> None:
        super().__init__()
        for f in config.factors:
            if f < 2 or f & (f - 1):
                raise ValueError(f"factor {f} is not a power of two >= 2")
        self.config = config
        c = config.channels
        self.head = nn.Conv2d(1, c, 3, padding=1)
        self.trunk = nn.Sequential(*[_Block(c) for _ in range(config.n_blocks)])
        self.body = nn.Conv2d(c, c, 3, padding=1)
        self.ups = nn.ModuleDict({f"x{f}": _upsampler(c, f) for f in config.factors})

    @staticmethod
    def preprocess(counts: torch.Tensor, factor: int) -> torch.Tensor:
        """Counts (batch x 1 x h x w, any float dtype) -> log1p of counts per HR pixel."""
        if counts.ndim != 4 or counts.shape[1] != 1:
            raise ValueError(f"expected batch x 1 x h x w counts, got {tuple(counts.shape)}")
        x = torch.nan_to_num(counts.float(), nan=0.0, posinf=0.0).clamp_min(0.0)
        return torch.log1p(x / factor**2)

    def forward_log(self, counts: torch.Tensor, factor: int) -> torch.Tensor:
        """Predicted log1p(counts per HR pixel), batch x 1 x h*factor x w*factor."""
        if f"x{factor}" not in self.ups:
            raise ValueError(f"no head for factor {factor}; this net has {self.config.factors}")
        x = self.preprocess(counts, factor)
        feat = self.head(x)
        feat = feat + self.body(self.trunk(feat))
        skip = F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
        return skip + self.ups[f"x{factor}"](feat)

    def forward(self, counts: torch.Tensor, factor: int) -> torch.Tensor:
        """Expected counts per high-resolution pixel, batch x 1 x h*factor x w*factor."""
        return torch.expm1(self.forward_log(counts, factor).clamp(min=0.0, max=30.0))
