"""Space-filling designs: the scrambled-Sobol initial design, candidate and integration sets,
normalization to the unit cube, and filtering of forbidden boxes."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.quasirandom import SobolEngine

from server.steering.spec import ExperimentSpec

DUPLICATE_TOL = 1e-6  # normalized distance under which two positions are the same place


def mix_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (e.g. spec seed, N, number pending)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sobol(d: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` points of a scrambled Sobol sequence in the unit cube.

    Args:
        d: Dimension.
        n: Number of points.
        seed: Scrambling seed.

    Returns:
        ``n x d`` array; a prefix of the same sequence for any larger ``n``.
    """
    engine = SobolEngine(d, scramble=True, seed=seed)
    return engine.draw(n, dtype=torch.float64).numpy()


def bounds_array(spec: ExperimentSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)``, each of shape ``d``."""
    b = np.asarray(spec.bounds, dtype=np.float64)
    return b[:, 0], b[:, 1]


def to_unit(spec: ExperimentSpec, X: np.ndarray) -> np.ndarray:
    """Raw positions ``n x d`` (spec units) to the unit cube."""
    lo, hi = bounds_array(spec)
    return (np.asarray(X, dtype=np.float64) - lo) / (hi - lo)


def from_unit(spec: ExperimentSpec, U: np.ndarray) -> np.ndarray:
    """Unit-cube points ``n x d`` to raw positions, clipped to the bounds."""
    lo, hi = bounds_array(spec)
    return np.clip(lo + np.asarray(U, dtype=np.float64) * (hi - lo), lo, hi)


def forbidden_mask(spec: ExperimentSpec, X: np.ndarray) -> np.ndarray:
    """Which raw positions fall in a forbidden box (closed intervals), vectorized.

    Args:
        spec: The experiment spec.
        X: ``n x d`` raw positions.

    Returns:
        Boolean array ``n``.
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, spec.dim)
    out = np.zeros(X.shape[0], dtype=bool)
    index = {name: i for i, name in enumerate(spec.parameter_names)}
    for box in spec.forbidden:
        inside = np.ones(X.shape[0], dtype=bool)
        for name, (lo, hi) in box.bounds.items():
            col = X[:, index[name]]
            inside &= (col >= lo) & (col <= hi)
        out |= inside
    return out


def near_any(U: np.ndarray, others: np.ndarray, tol: float) -> np.ndarray:
    """Which rows of ``U`` (``n x d``) lie within ``tol`` (Euclidean) of a row of ``others``."""
    if others.size == 0 or U.size == 0:
        return np.zeros(U.shape[0], dtype=bool)
    out = np.zeros(U.shape[0], dtype=bool)
    for start in range(0, others.shape[0], 2048):  # bound memory: n x 2048 distances
        block = others[start:start + 2048]
        d2 = ((U[:, None, :] - block[None, :, :]) ** 2).sum(-1)
        out |= (d2 <= tol**2).any(1)
    return out


def initial_design(spec: ExperimentSpec, q: int, taken: np.ndarray) -> np.ndarray:
    """The next ``q`` positions of the scrambled-Sobol initial design.

    Walks the sequence (seed ``spec.seed``) in order, skipping forbidden points and any within
    :data:`DUPLICATE_TOL` of a ``taken`` (measured or pending) position, so a design is resumed
    where it stopped and parallel asks get different points.

    Args:
        spec: The experiment spec.
        q: Number of positions.
        taken: ``k x d`` measured and pending positions, normalized.

    Returns:
        ``q x d`` positions in the unit cube (fewer only if the allowed region is tiny).
    """
    n = 2 * (q + taken.shape[0]) + 16
    for _ in range(8):
        U = sobol(spec.dim, n, spec.seed)
        ok = ~forbidden_mask(spec, from_unit(spec, U)) & ~near_any(U, taken, DUPLICATE_TOL)
        if ok.sum() >= q:
            break
        n *= 4
    return U[ok][:q]


def allowed_sobol(spec: ExperimentSpec, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` scrambled-Sobol points in the unit cube that are not forbidden.

    Args:
        spec: The experiment spec.
        n: Number of points drawn before filtering.
        seed: Scrambling seed.

    Returns:
        ``k x d`` with ``k <= n``.
    """
    U = sobol(spec.dim, n, seed)
    return U[~forbidden_mask(spec, from_unit(spec, U))]
