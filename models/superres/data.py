"""Training and held-out pairs for super-resolution: (binned noisy counts, HR truth).

The high-resolution truth is the generator's noiseless expected counts of a SANS
detector (128 x 128 pixels of 5 mm, 4-12 A neutrons, 1-15 m). The low-resolution
input is that expectation summed over factor x factor pixels and Poisson-sampled:
the counting noise of the coarse collection. Training and held-out sets differ in
seeds and in particle shapes (``TRAIN_SHAPES`` vs ``HELDOUT_SHAPES``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from models.synth import SynthConfig, generate

TRAIN_SHAPES = ("sphere", "cylinder", "guinier_porod", "lamellar", "sphere@hardsphere")
HELDOUT_SHAPES = ("core_shell_sphere", "ellipsoid", "fuzzy_sphere", "hollow_cylinder")
HELDOUT_SEED0 = 10_000_000  # held-out seeds start here; training seeds stay below

SANS = SynthConfig(
    shapes=((128, 128),),
    beam_region=(0.35, 0.65),
    exposure=(1.0, 10.0),
    flux=(0.3, 300.0),
    wavelength=(4.0, 12.0),
    distance=(1.0, 15.0),
    pixel_size=5e-3,
    form_factors=TRAIN_SHAPES,
    p_blank=0.0,
    p_diffuse=0.85,
    p_halo=0.2,
    p_ring=0.15,
    p_many_rings=0.3,
    p_spots=0.05,
    p_oriented_cylinders=0.25,
    p_arcs=0.1,
    p_high_background=0.2,
    defects=False,
)
HELDOUT = replace(SANS, form_factors=HELDOUT_SHAPES)


def bin_image(img: np.ndarray, factor: int) -> np.ndarray:
    """Sum factor x factor blocks (crops the edges to a multiple of factor)."""
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3))


def truth_images(seeds: range | list[int], config: SynthConfig = SANS) -> tuple[np.ndarray, ...]:
    """Noiseless HR images, masks and beam centres.

    Returns:
        (n x H x W float32 expected counts, n x H x W bool mask, n x 2 beam centres).
    """
    ims = [generate(s, config) for s in seeds]
    return (np.stack([im.expected for im in ims]).astype(np.float32),
            np.stack([im.mask for im in ims]),
            np.array([im.detector.beam_center for im in ims]))


def low_res(truth: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy binned measurement of a (... x H x W) noiseless HR expectation."""
    binned = bin_image(truth, factor) if truth.ndim == 2 else np.stack(
        [bin_image(t, factor) for t in truth.reshape(-1, *truth.shape[-2:])]
    ).reshape(*truth.shape[:-2], truth.shape[-2] // factor, truth.shape[-1] // factor)
    return rng.poisson(binned).astype(np.float32)


@lru_cache(maxsize=4)
def _heldout_truth(n: int, seed0: int) -> tuple[np.ndarray, ...]:
    # both factors and the figure use the same noiseless images: draw them once
    return truth_images(range(seed0, seed0 + n), HELDOUT)


def heldout_pairs(n: int, factor: int, seed0: int = HELDOUT_SEED0) -> tuple[np.ndarray, ...]:
    """n held-out (lr counts, hr truth, hr mask, beam centre), deterministic."""
    truth, mask, centers = _heldout_truth(n, seed0)
    lr = low_res(truth, factor, np.random.default_rng(seed0 + factor))
    return lr, truth, mask, centers
