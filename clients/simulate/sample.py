"""Virtual samples: ground-truth maps over a parameter space, and what a detector sees.

A sample knows the truth (``truth(X)``: the scalar maps a perfect analysis would give) and
produces raw data at a position (``scatter(position, rng)``: a 1-D scattering curve
``I(q)`` with counting noise). The beamline reduces raw data to numbers
(:mod:`clients.simulate.reduce`), so the steering sees what a real analysis would give,
bias and noise included, while the RMSE is measured against the truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Axis:
    """One parameter of a sample, with the speed of the motor that drives it."""

    name: str
    lower: float
    upper: float
    units: str = "mm"
    speed: float = 1.0  # units/s


class Sample(Protocol):
    """What the simulated beamline needs from a sample."""

    name: str
    axes: tuple[Axis, ...]
    q: np.ndarray  # the detector's q bins, 1/nm

    def truth(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Ground-truth maps at ``X`` (``n x d``, axis order): ``{output: (n,)}``."""
        ...

    def scatter(self, position: Mapping[str, float], rng: np.random.Generator,
                exposure: float) -> np.ndarray:
        """Detector counts per ``q`` bin after ``exposure`` seconds at ``position``."""
        ...


@dataclass(frozen=True)
class GradientFilm:
    """A thin film with a composition gradient along x and an ordered domain.

    The scattering ring sits at ``q0`` (1/nm), which grows with the composition
    ``c = x / 10`` (lattice contraction) and wiggles slowly with y (a thickness
    modulation); in a round ordered domain centred at ``domain_center`` the ring moves out
    by ``domain_shift``, sharpens (``width`` falls) and grows brighter. The domain edge is
    a sigmoid ``0.35`` mm wide: the map has one smooth trend, one slow wiggle and one
    localized feature, which is what a steered scan should find faster than a grid.
    """

    name: str = "gradient-film"
    axes: tuple[Axis, ...] = (Axis("x", 0.0, 10.0, "mm", speed=2.0),
                              Axis("y", -5.0, 5.0, "mm", speed=1.0))
    domain_center: tuple[float, float] = (7.0, -2.0)
    domain_radius: float = 2.0
    domain_shift: float = 0.25
    q: np.ndarray = field(default_factory=lambda: np.linspace(0.5, 3.0, 256))
    counts_per_s: float = 200.0  # peak counts of the ring in 1 s outside the domain
    background_per_s: float = 10.0

    def _order(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.hypot(x - self.domain_center[0], y - self.domain_center[1])
        return np.asarray(1.0 / (1.0 + np.exp((r - self.domain_radius) / 0.35)))

    def truth(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """``q0`` (1/nm), ``width`` (1/nm, Gaussian sigma) and ``order`` (0..1) at ``X``."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        x, y = X[:, 0], X[:, 1]
        c, order = x / 10.0, self._order(x, y)
        q0 = 1.2 + 0.8 * c + 0.08 * np.sin(y / 1.5) + self.domain_shift * order
        width = 0.06 + 0.05 * (1.0 - c) - 0.03 * order
        return {"q0": q0, "width": width, "order": order}

    def scatter(self, position: Mapping[str, float], rng: np.random.Generator,
                exposure: float = 1.0) -> np.ndarray:
        """Poisson counts of a Gaussian ring on a sloped background."""
        X = np.array([[position[a.name] for a in self.axes]])
        t = {k: float(v[0]) for k, v in self.truth(X).items()}
        amp = self.counts_per_s * (1.0 + 1.5 * t["order"])
        rate = (self.background_per_s * (1.2 - 0.2 * self.q / self.q[-1])
                + amp * np.exp(-0.5 * ((self.q - t["q0"]) / t["width"]) ** 2))
        return rng.poisson(rate * exposure).astype(float)


SAMPLES: dict[str, type[GradientFilm]] = {"gradient-film": GradientFilm}
