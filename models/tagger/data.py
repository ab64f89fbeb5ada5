"""Tagger data: synthetic SAXS images drawn by ``models.synth`` with their tag vectors.

Three distributions:

* ``TRAIN``: the training images (three detector sizes, beam centre in the middle
  40 % of the image or off it, exposures 1-10 s).
* held-out in-distribution: ``TRAIN`` with unseen seeds.
* ``SHIFTED``: unseen seeds *and* conditions never trained on: other detector
  sizes (192 x 192, 100 x 150), the beam centre near a corner (12-30 % of the
  size), exposures of 0.1-1 s, another set of particle shapes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from models.synth import SynthConfig, SynthImage, generate
from models.tagger.net import preprocess

TRAIN = SynthConfig(shapes=((128, 128), (128, 160), (96, 128)))
SHIFTED = replace(
    TRAIN,
    shapes=((192, 192), (100, 150)),
    beam_region=(0.12, 0.3),
    exposure=(0.1, 1.0),
    form_factors=("fuzzy_sphere", "ellipsoid", "hollow_cylinder", "sphere@hardsphere"),
)
CALIBRATION_OFFSET = 900_000  # seed*1e6 + this.. : images for the temperature fit
HELDOUT_SEED0 = 20_000_000
SHIFTED_SEED0 = 30_000_000


def train_seeds(seed: int, n: int) -> range:
    if not 0 <= seed < 20 or n > CALIBRATION_OFFSET:
        raise ValueError("seed must be in [0, 20) and n <= 900000 to stay off held-out seeds")
    return range(seed * 1_000_000, seed * 1_000_000 + n)


def calibration_seeds(seed: int, n: int) -> range:
    start = seed * 1_000_000 + CALIBRATION_OFFSET
    return range(start, start + n)


def images(seeds: range | list[int], config: SynthConfig) -> list[SynthImage]:
    return [generate(s, config) for s in seeds]


def tensors(ims: list[SynthImage], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed inputs (n x 5 x size x size, float16 to save memory) and n x n_tags labels."""
    x = torch.stack([preprocess(torch.from_numpy(im.counts), size) for im in ims]).half()
    y = torch.from_numpy(np.stack([im.tag_vector() for im in ims]))
    return x, y
