"""Synthetic sample maps with a known ground truth, for the sample-efficiency benchmark.

Each map is a noiseless truth over a box in physical units plus additive Gaussian noise of
:data:`NOISE_FRACTION` of the map's range. The features are the ones a steered scan has to
find on real samples: smoothed phase/domain boundaries (steps a few percent of the axis
wide), small hot spots, a smooth trend. ``gradient-film`` is the simulated beamline's film
(:class:`clients.simulate.sample.GradientFilm`, its ``q0`` map), reused rather than copied.

The maps were fixed before any strategy was run on them; their widths were chosen from
what the samples look like, not from how the strategies fare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.quasirandom import SobolEngine

from clients.simulate.sample import GradientFilm

NOISE_FRACTION = 0.01  # measurement noise sd, as a fraction of the map's range
TEST_POINTS = 4096  # scrambled-Sobol points where the RMSE against the truth is taken
TEST_SEED = 20240  # fixed: the test set is the same for every seed and strategy


def _step(s: np.ndarray, width: float) -> np.ndarray:
    """A smoothed step 0 -> 1 across ``s = 0`` (logistic, ``width`` in the units of ``s``)."""
    return 1.0 / (1.0 + np.exp(-np.clip(s / width, -60.0, 60.0)))


def _spot(U: np.ndarray, center: tuple[float, ...], sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((U - np.asarray(center)) ** 2).sum(axis=1) / sigma**2)


def combinatorial_film(U: np.ndarray) -> np.ndarray:
    """2-D combinatorial film: three phases separated by a straight and a curved boundary
    (each 3% of the wafer wide), a composition trend, and three hot spots (sigma 3-5%)."""
    x, y = U[:, 0], U[:, 1]
    trend = 0.3 * x + 0.1 * np.sin(2 * np.pi * y)
    phase_b = _step(x + 0.3 * y - 0.6, 0.03)  # straight boundary across the wafer
    phase_c = _step(0.35 - np.hypot(x - 0.15, y - 0.85), 0.03)  # a round domain in a corner
    spots = (0.8 * _spot(U, (0.72, 0.22), 0.04) + 0.6 * _spot(U, (0.35, 0.40), 0.05)
             + 0.5 * _spot(U, (0.85, 0.80), 0.03))
    return trend + 0.6 * phase_b - 0.4 * phase_c + spots


_FILM = GradientFilm()


def gradient_film(U: np.ndarray) -> np.ndarray:
    """The simulated beamline's film: ring position ``q0`` (1/nm), a composition trend, a
    slow wiggle and a round ordered domain (edge 0.35 mm of 10 mm)."""
    lo = np.array([a.lower for a in _FILM.axes])
    hi = np.array([a.upper for a in _FILM.axes])
    return _FILM.truth(lo + U * (hi - lo))["q0"]


def phase_diagram_3d(U: np.ndarray) -> np.ndarray:
    """Composition (x, y) x temperature: an order parameter that vanishes above a
    composition-dependent transition temperature (edge 4% of the T range), on a smooth
    background, with one broad peak (a superstructure near one composition)."""
    x, y, t = U[:, 0], U[:, 1], U[:, 2]
    tc = 0.55 + 0.25 * (x - 0.5) + 0.1 * np.sin(3.0 * y)
    order = (0.6 + 0.4 * x) * _step(tc - t, 0.04)
    return order + 0.2 * t + 0.3 * y * x + 0.5 * _spot(U, (0.7, 0.3, 0.3), 0.1)


def landscape_4d(U: np.ndarray) -> np.ndarray:
    """Four process parameters: a smooth landscape, one curved phase boundary (edge 6%),
    and one broad optimum (sigma 15%)."""
    a, b, c, d = U.T
    smooth = 0.4 * np.sin(2.0 * a + 1.0) * np.cos(1.5 * b) + 0.3 * c * d
    surface = (a - 0.4) ** 2 + (b - 0.6) ** 2 + 0.5 * c - 0.45
    return smooth + 0.5 * _step(surface, 0.06) + 0.6 * _spot(U, (0.7, 0.3, 0.6, 0.5), 0.15)


@dataclass(frozen=True)
class SampleMap:
    """A ground-truth map over a box.

    Args:
        name: Key used on the command line.
        axes: ``(name, lower, upper, units)`` per parameter.
        unit_truth: Noiseless truth on the unit cube, ``n x d -> n``.
        description: One line for the report.
    """

    name: str
    axes: tuple[tuple[str, float, float, str], ...]
    unit_truth: Callable[[np.ndarray], np.ndarray]
    description: str

    @property
    def dim(self) -> int:
        """Number of parameters ``d``."""
        return len(self.axes)

    @property
    def lower(self) -> np.ndarray:
        return np.array([a[1] for a in self.axes], dtype=float)

    @property
    def upper(self) -> np.ndarray:
        return np.array([a[2] for a in self.axes], dtype=float)

    def to_unit(self, X: np.ndarray) -> np.ndarray:
        """Physical ``n x d`` to the unit cube."""
        return (np.asarray(X, dtype=float) - self.lower) / (self.upper - self.lower)

    def from_unit(self, U: np.ndarray) -> np.ndarray:
        """Unit cube ``n x d`` to physical units."""
        return self.lower + np.asarray(U, dtype=float) * (self.upper - self.lower)

    def truth(self, X: np.ndarray) -> np.ndarray:
        """Noiseless values at physical positions ``n x d``."""
        return self.unit_truth(np.clip(self.to_unit(np.atleast_2d(X)), 0.0, 1.0))

    def test_points(self) -> np.ndarray:
        """The fixed ``TEST_POINTS x d`` positions (physical units) where RMSE is taken."""
        U = SobolEngine(self.dim, scramble=True, seed=TEST_SEED).draw(
            TEST_POINTS, dtype=torch.float64).numpy()
        return self.from_unit(U)

    def value_range(self) -> float:
        """Max minus min of the truth on the test points."""
        t = self.truth(self.test_points())
        return float(t.max() - t.min())

    def noise_sd(self) -> float:
        """Measurement noise standard deviation."""
        return NOISE_FRACTION * self.value_range()


def _axes(names: str, upper: float = 10.0, units: str = "mm"
          ) -> tuple[tuple[str, float, float, str], ...]:
    return tuple((n, 0.0, upper, units) for n in names.split())


MAPS: dict[str, SampleMap] = {m.name: m for m in (
    SampleMap("film-2d", _axes("x y"), combinatorial_film,
              "combinatorial film: 3 phases, straight + round boundary, 3 hot spots"),
    SampleMap("gradient-film-2d",
              tuple((a.name, a.lower, a.upper, a.units) for a in _FILM.axes), gradient_film,
              "clients.simulate GradientFilm q0: trend, wiggle, round domain"),
    SampleMap("phase-3d", (("x", 0.0, 10.0, "mm"), ("y", 0.0, 10.0, "mm"),
                           ("T", 300.0, 700.0, "K")), phase_diagram_3d,
              "composition x temperature: order parameter with a T_c(x, y) edge, a peak"),
    SampleMap("landscape-4d", _axes("a b c d", 1.0, ""), landscape_4d,
              "4 process parameters: smooth landscape, curved boundary, broad optimum"),
)}


# --- held-out validation maps -----------------------------------------------------------------
#
# A seeded generator of random films for tuning acquisitions without touching MAPS: a
# knob is chosen on these, and only then checked on the benchmark maps. Its seeds start at
# VALIDATION_SEED, far from the benchmark's seeds (0, 1, 2) and from any seed used above.

VALIDATION_SEED = 50_000


def _boundary(rng: np.random.Generator, d: int) -> Callable[[np.ndarray], np.ndarray]:
    """A random straight (hyperplane) or curved (sphere) boundary through the box, as a
    signed distance-like coordinate ``s(U)`` (0 on the boundary)."""
    if rng.random() < 0.5:
        normal = rng.standard_normal(d)
        normal /= np.linalg.norm(normal)
        offset = float(normal @ rng.uniform(0.25, 0.75, d))
        return lambda U: U @ normal - offset
    center = rng.uniform(-0.2, 1.2, d)
    # a radius that puts the sphere's surface through the middle part of the box
    to_mid = float(np.linalg.norm(center - 0.5))
    radius = max(0.15, to_mid + rng.uniform(-0.25, 0.25))
    return lambda U: radius - np.linalg.norm(U - center, axis=1)


def random_film(seed: int, d: int) -> Callable[[np.ndarray], np.ndarray]:
    """A random sample map on the unit cube ``[0, 1]^d``: a smooth trend (linear plus one
    slow sinusoid), 1-3 phase boundaries (straight or curved, each 2-6% of the axis wide,
    steps of random height and sign) and 0-4 hot spots (sigma 3-8%, amplitude 0.2-0.8)."""
    rng = np.random.default_rng([VALIDATION_SEED, seed, d])
    slope = rng.uniform(-0.4, 0.4, d)
    freq = rng.uniform(0.5, 2.0) * rng.standard_normal(d)
    wiggle, phase = rng.uniform(0.0, 0.15), rng.uniform(0, 2 * np.pi)
    steps = [(_boundary(rng, d), rng.uniform(0.02, 0.06),
              rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.8))
             for _ in range(rng.integers(1, 4))]
    spots = [(tuple(rng.uniform(0.1, 0.9, d)), rng.uniform(0.03, 0.08),
              rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.8))
             for _ in range(rng.integers(0, 5))]

    def truth(U: np.ndarray) -> np.ndarray:
        v = U @ slope + wiggle * np.sin(2 * np.pi * U @ freq + phase)
        for s, width, height in steps:
            v = v + height * _step(s(U), width)
        for center, sigma, amp in spots:
            v = v + amp * _spot(U, center, sigma)
        return v

    return truth


def validation_maps(seeds: range | tuple[int, ...] = range(4), dims: tuple[int, ...] = (2, 3, 4)
                    ) -> dict[str, SampleMap]:
    """Held-out random films ``val-{d}d-{seed}``, for tuning; never the benchmark's maps."""
    out = {}
    for d in dims:
        for s in seeds:
            name = f"val-{d}d-{s}"
            out[name] = SampleMap(name, _axes(" ".join(f"u{i}" for i in range(d)), 1.0, ""),
                                  random_film(s, d), f"random film, d = {d}, seed {s}")
    return out
