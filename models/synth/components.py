"""Sample-scattering components of a synthetic image, in expected counts per pixel.

Each component is drawn so that its tag is true by construction: features are
scaled against the local counts underneath them (``visible_amplitude``), so a
ring, halo or spot stays above the Poisson noise whatever the flux and exposure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.synth import scattering
from models.synth.geometry import Detector

# Ratios of the ring positions of common lattices (powder orders).
LATTICE_RATIOS: dict[str, tuple[float, ...]] = {
    "lamellar": (1.0, 2.0, 3.0, 4.0, 5.0),
    "hexagonal": (1.0, 3**0.5, 2.0, 7**0.5, 3.0),
    "bcc": (1.0, 2**0.5, 3**0.5, 2.0, 5**0.5),
    "fcc": (1.0, (4 / 3) ** 0.5, (8 / 3) ** 0.5, (11 / 3) ** 0.5, 2.0),
}


@dataclass
class Scene:
    """Per-image geometry shared by the components (all maps rows x cols)."""

    detector: Detector
    q: np.ndarray
    qx: np.ndarray
    qy: np.ndarray
    chi: np.ndarray
    valid: np.ndarray
    q_valid: np.ndarray  # sorted q of the valid pixels
    dq_pixel: float  # q step of one pixel near the beam

    @classmethod
    def build(cls, det: Detector) -> Scene:
        q, qx, qy = det.q_map()
        valid = det.valid_mask()
        dq = 4 * np.pi / det.wavelength * np.sin(np.arctan(det.pixel_size / det.distance) / 2)
        return cls(det, q, qx, qy, det.chi_map(), valid, np.sort(q[valid]), float(dq))

    def q_quantile(self, p: float) -> float:
        """q below which a fraction p of the valid pixels lie."""
        return float(self.q_valid[int(p * (len(self.q_valid) - 1))])

    def local_level(self, base: np.ndarray, q0: float, width: float) -> float:
        """Median of ``base`` over the valid pixels within ``width`` of q0."""
        sel = self.valid & (np.abs(self.q - q0) <= max(width, self.dq_pixel))
        return float(np.median(base[sel])) if sel.any() else float(np.median(base[self.valid]))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def visible_amplitude(
    rng: np.random.Generator, level: float, contrast: tuple[float, float]
) -> float:
    """Peak counts of a feature on top of ``level`` counts that is clearly visible.

    At least 8 standard deviations of the Poisson noise of the level plus 20 counts,
    so a feature never hides in the noise of a short exposure.
    """
    return max(rng.uniform(*contrast) * level, 8.0 * np.sqrt(level) + 20.0)


def form_factor(
    rng: np.random.Generator, scene: Scene, names: tuple[str, ...]
) -> tuple[str, np.ndarray]:
    """An orientation-averaged particle form factor, normalized to 1 at the lowest valid q.

    Sizes are drawn relative to the detector's q range (R ~ 1.5..8 / q_median) so
    the curve falls off across the detector whatever the geometry.
    """
    name = names[rng.integers(len(names))]
    size = rng.uniform(1.5, 8.0) / scene.q_quantile(0.5)
    pd = {"radius_pd": rng.uniform(0.0, 0.25), "radius_pd_n": 15}
    if name == "sphere":
        params = {"radius": size, **pd}
    elif name in ("core_shell_sphere",):
        params = {"radius": size, "thickness": size * rng.uniform(0.1, 0.5), **pd,
                  "sld_core": rng.uniform(0, 2), "sld_shell": rng.uniform(2, 5)}
    elif name == "fuzzy_sphere":
        params = {"radius": size, "fuzziness": size * rng.uniform(0.05, 0.2), **pd}
    elif name == "ellipsoid":
        params = {"radius_polar": size * rng.uniform(1.5, 4), "radius_equatorial": size,
                  "radius_equatorial_pd": pd["radius_pd"], "radius_equatorial_pd_n": 15}
    elif name in ("cylinder", "hollow_cylinder"):
        params = {"radius": size * rng.uniform(0.3, 1.0), "length": size * rng.uniform(3, 10), **pd}
    elif name == "guinier_porod":
        params = {"rg": size, "s": float(rng.choice([0.0, 1.0, 2.0])) * rng.uniform(0.5, 1),
                  "porod_exp": rng.uniform(2.5, 4.0)}
    elif name == "lamellar":
        params = {"thickness": size * rng.uniform(0.5, 2.0), "thickness_pd": rng.uniform(0, 0.3),
                  "thickness_pd_n": 15}
    elif name == "sphere@hardsphere":
        params = {"radius": size, **pd, "volfraction": rng.uniform(0.05, 0.4)}
    else:
        raise ValueError(f"no parameter recipe for form factor {name!r}")
    img = scattering.on_pixels(scattering.curve(name, params), scene.q)
    return name, img / max(img[scene.valid].max(), 1e-300)


def oriented_cylinders(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """Aligned cylinders (sasmodels 2D): a streak across the beam, max normalized to 1."""
    size = rng.uniform(1.0, 4.0) / scene.q_quantile(0.5)
    params = {"radius": size * rng.uniform(0.2, 0.5), "length": size * rng.uniform(5, 15),
              "theta": rng.uniform(75, 90), "phi": rng.uniform(0, 180)}
    img = scattering.pattern_2d("cylinder", params, scene.qx, scene.qy)
    return img / max(img[scene.valid].max(), 1e-300)


def rings(
    rng: np.random.Generator, scene: Scene, base: np.ndarray, many: bool
) -> tuple[np.ndarray, float]:
    """Sharp isotropic powder rings (sasmodels gaussian_peak), 1-2 or >= 3 orders."""
    # sigma/q0 <= 0.035 keeps a ring sharp; sigma >= 0.6 pixel keeps it drawable, so
    # the first ring sits at least ~17 pixels from the beam.
    q_min = max(scene.q_quantile(0.05), 0.6 * scene.dq_pixel / 0.035)
    q_max = scene.q_quantile(0.97)
    if many:
        ratios = LATTICE_RATIOS[list(LATTICE_RATIOS)[rng.integers(len(LATTICE_RATIOS))]]
        hi = q_max / ratios[2]
    else:
        ratios = (1.0,) if rng.random() < 0.6 else (1.0, rng.uniform(1.3, 2.0))
        hi = q_max / ratios[-1]
    if hi <= q_min:
        raise _Reject("detector q range too short for these rings")
    q0 = rng.uniform(q_min, hi)
    rel_width = rng.uniform(0.008, 0.035)
    decay = rng.uniform(0.5, 0.95)
    out = np.zeros_like(scene.q)
    for n, ratio in enumerate(ratios):
        qn = q0 * ratio
        if qn > q_max:
            break
        sigma = max(rel_width * qn, 0.6 * scene.dq_pixel)
        level = scene.local_level(base, qn, sigma)
        # higher orders decay but never below the visibility floor (contrast 0)
        amp = max(visible_amplitude(rng, level, (0.5, 4.0)) * decay**n,
                  visible_amplitude(rng, level, (0.0, 0.0)))
        i_q = scattering.curve("gaussian_peak", {"peak_pos": qn, "sigma": sigma})
        out += amp * scattering.on_pixels(i_q, scene.q)
    return out, q0


def halo(rng: np.random.Generator, scene: Scene, base: np.ndarray) -> tuple[np.ndarray, float]:
    """A broad isotropic peak (sasmodels broad_peak), HWHM 15-35 % of its position."""
    q0 = rng.uniform(scene.q_quantile(0.2), scene.q_quantile(0.7))
    hwhm = rng.uniform(0.15, 0.35) * q0
    params = {"porod_scale": 0.0, "peak_scale": 1.0, "peak_pos": q0,
              "correlation_length": 1.0 / hwhm, "width_exp": 2.0}
    shape = scattering.on_pixels(scattering.curve("broad_peak", params), scene.q)
    amp = visible_amplitude(rng, scene.local_level(base, q0, hwhm), (0.5, 3.0))
    return amp * shape / shape.max(), q0


def arcs(rng: np.random.Generator, scene: Scene, base: np.ndarray) -> np.ndarray:
    """A textured (oriented) ring: two arcs, intensity drops e^-6..e^-20 across azimuth."""
    q0 = rng.uniform(scene.q_quantile(0.15), scene.q_quantile(0.8))
    sigma = max(rng.uniform(0.02, 0.15) * q0, 0.8 * scene.dq_pixel)
    kappa = rng.uniform(3.0, 10.0)
    chi0 = rng.uniform(0, np.pi)
    radial = np.exp(-0.5 * ((scene.q - q0) / sigma) ** 2)
    azim = np.exp(kappa * (np.cos(2 * (scene.chi - chi0)) - 1.0))
    amp = visible_amplitude(rng, scene.local_level(base, q0, sigma), (1.0, 5.0))
    return amp * radial * azim


def lattice_spots(rng: np.random.Generator, scene: Scene, base: np.ndarray) -> np.ndarray:
    """Bragg spots of a 2D square or hexagonal reciprocal lattice in the detector plane.

    A single crystal (or aligned domain) with a random in-plane orientation; spot
    intensities fall with |G| like a Debye-Waller factor.
    """
    q1 = rng.uniform(max(scene.q_quantile(0.1), 6 * scene.dq_pixel), scene.q_quantile(0.5))
    angle = rng.uniform(0, np.pi)
    hexagonal = rng.random() < 0.5
    a1 = np.array([np.cos(angle), np.sin(angle)]) * q1
    rot = np.pi / 3 if hexagonal else np.pi / 2
    a2 = np.array([np.cos(angle + rot), np.sin(angle + rot)]) * q1
    sigma = rng.uniform(0.7, 1.5) * scene.dq_pixel
    dw = rng.uniform(0.05, 0.4)
    out = np.zeros_like(scene.q)
    q_max = scene.q_quantile(1.0)
    amp1 = visible_amplitude(rng, scene.local_level(base, q1, sigma), (2.0, 10.0))
    for h in range(-5, 6):
        for k in range(-5, 6):
            g = h * a1 + k * a2
            gn = float(np.hypot(*g))
            if gn < 0.5 * q1 or gn > q_max:
                continue
            amp = amp1 * np.exp(-dw * (gn / q1) ** 2)
            d2 = (scene.qx - g[0]) ** 2 + (scene.qy - g[1]) ** 2
            out += amp * np.exp(-0.5 * d2 / sigma**2)
    if np.count_nonzero(out[scene.valid] > 0.3 * amp1) < 3:
        raise _Reject("no Bragg spot falls on the valid detector area")
    return out


class _Reject(Exception):
    """A draw that cannot satisfy its labels; the generator draws again."""
