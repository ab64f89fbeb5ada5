"""A detector that returns synthetic SAXS images (``models.synth``) of the sample.

At each position the sample's local properties (from its ``truth``) choose the image: a
diffuse sphere form factor everywhere (the film's amorphous matrix), plus a sharp powder
ring (sasmodels ``gaussian_peak``) at the local ``q0`` and ``width`` whose strength is the
local ``order`` (the ring appears in the ordered domain). The server reduces each image as
the experiment spec says (:attr:`ImageDetector.reductions`): the tagger's ``ring``
probability, and the mean counts over the ring's q range. Needs ``models.synth``
(numpy and sasmodels, not torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients.simulate.sample import Sample


@dataclass(frozen=True)
class ImageDetector:
    """A small square detector (``size`` pixels) with the beam in its middle.

    ``distance`` (m) is chosen so that the film's rings (q0 1.2-2.5 1/nm) fall inside a
    64-pixel image with 172 um pixels at 1 A.
    """

    size: int = 64
    pixel_size: float = 172e-6
    distance: float = 0.12
    wavelength: float = 1.0  # Angstrom
    ring_per_s: float = 60.0  # peak counts of a fully ordered ring in 1 s
    diffuse_per_s: float = 20.0  # counts of the matrix near the beam in 1 s
    background_per_s: float = 2.0

    @property
    def outputs(self) -> list[str]:
        return list(self.reductions)

    @property
    def reductions(self) -> dict[str, dict[str, Any]]:
        """The spec's ``reductions``: the tagger's ``ring`` probability, and the mean
        counts over q 0.13-0.23 1/A (where the rings lie) in this geometry."""
        return {"ring_prob": {"model": "tagger", "output": "ring"},
                "ring_iq": {"q_min": 0.13, "q_max": 0.23, "q_per_pixel": self.q_per_pixel}}

    @property
    def q_per_pixel(self) -> float:
        """q (1/A) per pixel of radius near the beam."""
        return float(4 * np.pi / self.wavelength
                     * np.sin(np.arctan(self.pixel_size / self.distance) / 2))

    def truth(self, sample: Sample, X: np.ndarray) -> dict[str, np.ndarray]:
        """What a perfect reduction would map: ``ring_prob`` is the local order (0..1)."""
        return {"ring_prob": sample.truth(X)["order"]}

    def image(self, sample: Sample, position: Mapping[str, float], rng: np.random.Generator,
              exposure: float = 1.0) -> np.ndarray:
        """Poisson counts (float32, ``size x size``) at ``position``."""
        from models.synth import scattering
        from models.synth.geometry import Detector

        c = self.size / 2
        det = Detector((self.size, self.size), pixel_size=self.pixel_size,
                       distance=self.distance, wavelength=self.wavelength, beam_center=(c, c))
        q, _, _ = det.q_map()
        X = np.array([[position[a.name] for a in sample.axes]])
        t = {k: float(v[0]) for k, v in sample.truth(X).items()}
        q0, width = t["q0"] / 10, t["width"] / 10  # 1/nm -> 1/A
        ring = scattering.on_pixels(
            scattering.curve("gaussian_peak", {"peak_pos": q0, "sigma": width}), q)
        sphere = scattering.on_pixels(scattering.curve("sphere", {"radius": 30.0}), q)
        rate = (self.background_per_s + self.diffuse_per_s * sphere / sphere.max()
                + self.ring_per_s * t["order"] * ring / ring.max())
        return rng.poisson(rate * exposure).astype(np.float32)
