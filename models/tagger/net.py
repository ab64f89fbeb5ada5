"""Multi-label CNN that tags SAXS detector images (after Wang et al. 2017, Guan et al. 2018).

``preprocess`` turns one image of any size into a fixed ``in_channels x size x size``
tensor: invalid pixels (NaN, inf, negative: gaps and masks) become 0 counts and are
flagged, the image is zero-padded to a square (centred) and pooled to ``size``:

    0  log1p(mean counts)  / log1p(image max)     shape of the pattern
    1  log1p(max counts)   / log1p(image max)     keeps single hot pixels (zingers)
    2  log1p(mean counts)  / 14                   absolute count level (~1.2e6 = 1)
    3  fraction of valid pixels                   gaps, beamstop, padding
    4  fraction of pixels at the image max        saturation plateaus

The net returns logits, one per tag in ``tags``; ``probabilities`` divides by a
temperature fitted after training (calibration) and applies the sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TaggerConfig:
    """Architecture of the tagger.

    Args:
        tags: the tag vocabulary, in output order.
        size: preprocessed image edge in pixels.
        widths: channels of the conv stages (each halves the resolution).
    """

    tags: tuple[str, ...]
    size: int = 128
    widths: tuple[int, ...] = (24, 32, 48, 64, 96)
    in_channels: int = 5


def preprocess(image: torch.Tensor, size: int = 128) -> torch.Tensor:
    """One H x W image (any real dtype, any size >= 1 x 1) -> 5 x size x size float32.

    Raises:
        ValueError: if the image is not 2D or has no valid pixel.
    """
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"expected one 2D image, got shape {tuple(image.shape)}")
    x = image.to(torch.float32)
    valid = torch.isfinite(x) & (x >= 0)
    if not valid.any():
        raise ValueError("the image has no valid (finite, non-negative) pixel")
    x = torch.where(valid, x, torch.zeros((), dtype=x.dtype))
    vmax = x.max()
    at_max = (valid & (x >= vmax) & (vmax > 0)).float()
    h, w = x.shape
    side = max(h, w)
    pad = ((side - w) // 2, side - w - (side - w) // 2, (side - h) // 2, side - h - (side - h) // 2)
    stack = torch.stack([x, valid.float(), at_max])
    stack = F.pad(stack, pad)[None]
    avg = F.adaptive_avg_pool2d(stack, size)[0]
    mx = F.adaptive_max_pool2d(stack[:, :1], size)[0, 0]
    norm = torch.log1p(vmax).clamp_min(1e-6)
    la = torch.log1p(avg[0])
    return torch.stack([la / norm, torch.log1p(mx) / norm, la / 14.0, avg[1], avg[2]])


class TaggerNet(nn.Module):
    """Conv stages (conv-BN-ReLU x2, max-pool) then global avg+max pooling and a linear head."""

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for c in config.widths:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, len(config.tags))
        # fitted on held-aside training-distribution images after training
        self.register_buffer("log_temperature", torch.zeros(len(config.tags)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """batch x in_channels x size x size preprocessed images -> batch x n_tags logits."""
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated probability per tag, batch x n_tags."""
        return torch.sigmoid(self(x) / self.log_temperature.exp())

    @torch.no_grad()
    def tag_images(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Raw images (each H x W, any size) -> calibrated probabilities, n x n_tags."""
        dev = self.log_temperature.device
        x = torch.stack([preprocess(im, self.config.size) for im in images]).to(dev)
        return self.probabilities(x)
