"""Detector geometry: q per pixel, beamstop and gaps.

A flat detector normal to the beam at ``distance`` metres, square pixels of
``pixel_size`` metres, wavelength in Angstrom. The beam centre is given in
pixel coordinates (row, col) and may lie outside the image. q is in 1/Angstrom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detector:
    """Geometry of one detector image.

    Args:
        shape: (rows, cols) of the image.
        pixel_size: pixel edge in metres.
        distance: sample-detector distance in metres.
        wavelength: in Angstrom.
        beam_center: (row, col) of the direct beam in pixels, may be off the image.
        beamstop_radius: radius of the beamstop shadow in pixels (0: none).
        gaps: module gaps as (axis, start, width) bands of dead pixels, axis 0 = rows.
    """

    shape: tuple[int, int]
    pixel_size: float = 172e-6
    distance: float = 3.0
    wavelength: float = 1.0
    beam_center: tuple[float, float] = (64.0, 64.0)
    beamstop_radius: float = 0.0
    gaps: tuple[tuple[int, int, int], ...] = ()

    def pixel_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centre offsets from the beam in metres, (dy, dx), each rows x cols."""
        rows, cols = self.shape
        r = (np.arange(rows) + 0.5 - self.beam_center[0]) * self.pixel_size
        c = (np.arange(cols) + 0.5 - self.beam_center[1]) * self.pixel_size
        dy, dx = np.meshgrid(r, c, indexing="ij")
        return dy, dx

    def q_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (q, qx, qy) per pixel in 1/Angstrom, each rows x cols.

        q = 4 pi / lambda * sin(2theta / 2); qx, qy are its in-plane components
        along the columns and rows (the flat-detector approximation sasmodels uses
        for 2D patterns).
        """
        dy, dx = self.pixel_offsets()
        rad = np.hypot(dx, dy)
        two_theta = np.arctan2(rad, self.distance)
        q = 4.0 * np.pi / self.wavelength * np.sin(two_theta / 2.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_chi = np.where(rad > 0, dx / rad, 1.0)
            sin_chi = np.where(rad > 0, dy / rad, 0.0)
        return q, q * cos_chi, q * sin_chi

    def chi_map(self) -> np.ndarray:
        """Azimuth of each pixel around the beam centre in radians, rows x cols."""
        dy, dx = self.pixel_offsets()
        return np.arctan2(dy, dx)

    def radius_map(self) -> np.ndarray:
        """Distance of each pixel centre from the beam centre in pixels."""
        dy, dx = self.pixel_offsets()
        return np.hypot(dx, dy) / self.pixel_size

    def valid_mask(self) -> np.ndarray:
        """True where a pixel sees the sample: outside the beamstop and the gaps."""
        mask = np.ones(self.shape, dtype=bool)
        if self.beamstop_radius > 0:
            mask &= self.radius_map() > self.beamstop_radius
        for axis, start, width in self.gaps:
            if axis == 0:
                mask[start : start + width, :] = False
            else:
                mask[:, start : start + width] = False
        return mask

    def beam_on_image(self) -> bool:
        """Whether the direct beam hits the detector area."""
        r, c = self.beam_center
        return 0.0 <= r <= self.shape[0] and 0.0 <= c <= self.shape[1]

    def binned(self, factor: int) -> Detector:
        """The same detector read out with factor x factor pixels summed."""
        return Detector(
            shape=(self.shape[0] // factor, self.shape[1] // factor),
            pixel_size=self.pixel_size * factor,
            distance=self.distance,
            wavelength=self.wavelength,
            beam_center=(self.beam_center[0] / factor, self.beam_center[1] / factor),
            beamstop_radius=self.beamstop_radius / factor,
            gaps=(),
        )
