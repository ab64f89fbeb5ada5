"""Synthetic SAXS/SANS detector images with tags, deterministic under a seed.

``generate(seed, config)`` draws one image: a detector geometry, sample scattering
(form factors and structure from sasmodels, powder rings, a halo, Bragg spots,
oriented cylinders or textured arcs), a flat plus air-scatter background, the
exposure (flux x time), Poisson counting noise and beamline defects (zingers,
saturation, detector gaps, the beam centre off the image). Every tag in ``TAGS``
is true or false by construction; ``SynthImage.tags`` reports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.synth import components as comp
from models.synth.geometry import Detector
from models.synth.tags import TAG_INDEX, TAGS

GENERATOR_VERSION = "1.0"
GAP_VALUE = -1.0  # what a Pilatus-like detector writes into its module gaps


@dataclass(frozen=True)
class SynthConfig:
    """Distribution of the generated images. Ranges are (low, high), uniform unless noted.

    ``beam_region`` is where the beam centre lies when it is on the image, as a
    fraction of the image size; ``shapes`` are the detector sizes drawn from;
    ``exposure`` (s) and ``flux`` (counts/s at the brightest sample pixel) are
    log-uniform. The p_* are the probabilities of each feature or defect.
    """

    shapes: tuple[tuple[int, int], ...] = ((128, 128),)
    beam_region: tuple[float, float] = (0.3, 0.7)
    exposure: tuple[float, float] = (1.0, 10.0)
    flux: tuple[float, float] = (5.0, 2000.0)
    wavelength: tuple[float, float] = (0.7, 1.6)
    distance: tuple[float, float] = (1.0, 5.0)
    pixel_size: float = 172e-6
    form_factors: tuple[str, ...] = ("sphere", "core_shell_sphere", "cylinder", "guinier_porod",
                                     "lamellar")
    p_blank: float = 0.12
    p_diffuse: float = 0.5
    p_halo: float = 0.3
    p_ring: float = 0.35
    p_many_rings: float = 0.45  # given a ring
    p_spots: float = 0.2
    p_oriented_cylinders: float = 0.15
    p_arcs: float = 0.15
    p_high_background: float = 0.3
    p_saturation: float = 0.25
    p_zingers: float = 0.25
    p_beam_off: float = 0.15
    p_gaps: float = 0.4
    defects: bool = True  # False: no zingers, saturation, gaps or beam off the image

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, list | tuple) else v

        return cls(**{k: tup(v) for k, v in d.items()})


@dataclass
class SynthImage:
    """One generated detector image.

    Attributes:
        counts: rows x cols float32 measured counts; gap pixels hold GAP_VALUE.
        expected: rows x cols float64 noiseless expected counts (no defects).
        mask: rows x cols bool, True where a pixel sees the sample.
        tags: name -> bool for every tag in TAGS.
        detector: the geometry.
        info: what was drawn (model names, ring/halo q, exposure, ...).
    """

    counts: np.ndarray
    expected: np.ndarray
    mask: np.ndarray
    tags: dict[str, bool]
    detector: Detector
    info: dict[str, Any] = field(default_factory=dict)

    def tag_vector(self) -> np.ndarray:
        v = np.zeros(len(TAGS), dtype=np.float32)
        for name, on in self.tags.items():
            v[TAG_INDEX[name]] = float(on)
        return v


def _detector(rng: np.random.Generator, cfg: SynthConfig, beam_off: bool) -> Detector:
    shape = cfg.shapes[rng.integers(len(cfg.shapes))]
    rows, cols = shape
    if beam_off:
        # off one edge (or a corner) by 3-40 % of the size
        side = rng.integers(4)
        fr = [rng.uniform(*cfg.beam_region), rng.uniform(*cfg.beam_region)]
        out = rng.uniform(0.03, 0.4)
        axis = side % 2
        fr[axis] = -out if side < 2 else 1.0 + out
        if rng.random() < 0.3:  # a corner
            fr[1 - axis] = -rng.uniform(0.03, 0.3)
        center = (fr[0] * rows, fr[1] * cols)
    else:
        center = (rng.uniform(*cfg.beam_region) * rows, rng.uniform(*cfg.beam_region) * cols)
    gaps: list[tuple[int, int, int]] = []
    if cfg.defects and rng.random() < cfg.p_gaps:
        for _ in range(rng.integers(1, 3)):
            axis = int(rng.integers(2))
            gaps.append((axis, int(rng.integers(8, shape[axis] - 8)), int(rng.integers(2, 5))))
    return Detector(
        shape=shape,
        pixel_size=cfg.pixel_size,
        distance=comp.log_uniform(rng, *cfg.distance),
        wavelength=rng.uniform(*cfg.wavelength),
        beam_center=center,
        beamstop_radius=0.0 if beam_off else rng.uniform(3.0, 7.0) * min(shape) / 128,
        gaps=tuple(gaps),
    )


def _draw(rng: np.random.Generator, cfg: SynthConfig) -> SynthImage:  # noqa: C901
    tags = dict.fromkeys(TAGS, False)
    tags["beam_off_image"] = cfg.defects and rng.random() < cfg.p_beam_off
    det = _detector(rng, cfg, tags["beam_off_image"])
    scene = comp.Scene.build(det)
    if scene.valid.sum() < 0.5 * scene.valid.size:
        raise comp._Reject("too few valid pixels")
    level = comp.log_uniform(rng, *cfg.flux) * comp.log_uniform(rng, *cfg.exposure)
    info: dict[str, Any] = {"level": level}

    blank = rng.random() < cfg.p_blank
    want = {
        "diffuse": rng.random() < cfg.p_diffuse,
        "oriented_cylinders": rng.random() < cfg.p_oriented_cylinders,
        "halo": rng.random() < cfg.p_halo,
        "ring": rng.random() < cfg.p_ring,
        "spots": rng.random() < cfg.p_spots,
        "arcs": rng.random() < cfg.p_arcs,
    }
    many = rng.random() < cfg.p_many_rings
    if blank:
        want = dict.fromkeys(want, False)
    elif not any(want.values()):
        raise comp._Reject("a sample image needs at least one feature")
    tags["blank"] = blank

    smooth = np.zeros(det.shape)
    if want["diffuse"]:
        name, shape = comp.form_factor(rng, scene, cfg.form_factors)
        smooth += level * rng.uniform(1.0, 10.0) * shape
        info["form_factor"] = name
    if want["oriented_cylinders"]:
        smooth += level * rng.uniform(1.0, 10.0) * comp.oriented_cylinders(rng, scene)
    tags["diffuse_low_q"] = want["diffuse"] or want["oriented_cylinders"]
    tags["oriented"] = want["oriented_cylinders"] or want["arcs"] or want["spots"]

    # Background: flat (windows, fluorescence) + air scatter falling as q^-2.
    s_ref = float(smooth[scene.valid].mean()) if smooth.any() else 0.1 * level
    tags["high_background"] = rng.random() < cfg.p_high_background
    if tags["high_background"]:
        flat = max(rng.uniform(0.5, 3.0) * s_ref, rng.uniform(5.0, 50.0))
    else:
        flat = rng.uniform(0.002, 0.03) * s_ref
    q_lo = scene.q_quantile(0.0)
    air = rng.uniform(0.1, 1.0) * max(flat, 0.05) * np.minimum((q_lo / scene.q) ** 2, 1.0)
    background = flat + air
    info["flat_background"] = flat
    if tags["diffuse_low_q"]:
        low_q = scene.valid & (scene.q <= scene.q_quantile(0.02))
        fall = smooth[low_q].mean() / max(smooth[scene.valid & (scene.q >= scene.q_quantile(0.9))]
                                          .mean(), 1e-12)
        if smooth[low_q].mean() < 5 * background[low_q].mean() + 50 or fall < 5:
            raise comp._Reject("central scattering not strong enough")

    base = smooth + background
    sample = smooth.copy()
    if want["halo"]:
        h, info["halo_q"] = comp.halo(rng, scene, base)
        sample += h
    if want["ring"]:
        r, info["ring_q"] = comp.rings(rng, scene, base + sample - smooth, many)
        sample += r
        tags["ring"] = True
        tags["many_rings"] = many
    if want["arcs"]:
        sample += comp.arcs(rng, scene, base + sample - smooth)
    if want["spots"]:
        sample += comp.lattice_spots(rng, scene, base + sample - smooth)
    tags["halo"] = want["halo"]
    tags["spots"] = want["spots"]

    expected = (sample + background) * scene.valid
    counts = rng.poisson(expected).astype(np.float64)

    if cfg.defects and rng.random() < cfg.p_zingers:
        n = int(rng.integers(3, 21))
        idx = rng.choice(np.flatnonzero(scene.valid), size=n, replace=False)
        flat_counts = counts.ravel()
        flat_counts[idx] = (flat_counts[idx] + 10.0) * rng.uniform(20.0, 200.0, size=n)
        tags["zingers"] = True
    if cfg.defects and rng.random() < cfg.p_saturation:
        n_sat = int(rng.integers(8, max(9, int(0.02 * scene.valid.sum()))))
        cap = np.sort(counts[scene.valid])[-n_sat]
        if cap < 20:
            raise comp._Reject("too few counts to saturate")
        counts = np.minimum(counts, cap)
        tags["saturation"] = True
        info["saturation_value"] = float(cap)
    counts[~scene.valid & (det.radius_map() > det.beamstop_radius)] = GAP_VALUE
    return SynthImage(counts.astype(np.float32), expected, scene.valid, tags, det, info)


def generate(seed: int | np.random.Generator, config: SynthConfig | None = None) -> SynthImage:
    """Draw one image; the same seed and config give the same image.

    Args:
        seed: an integer seed or a numpy Generator to draw from.
        config: the image distribution; the default is the tagger's training set.

    Returns:
        The image, its noiseless expectation, its mask and its tags.
    """
    cfg = config or SynthConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    for _ in range(100):
        try:
            return _draw(rng, cfg)
        except comp._Reject:
            continue
    raise RuntimeError("the generator rejected 100 draws in a row; check the config ranges")
