"""Scattering curves from sasmodels, evaluated on detector pixels.

sasmodels compiles each model once (C backend, ``SAS_OPENCL=none``); the compiled
models and their 1D kernels on a fixed log-spaced q grid are cached per process,
so drawing a curve costs about a millisecond. Isotropic patterns are evaluated on
that grid and interpolated in log-log onto the pixel |q|; oriented patterns are
evaluated directly on the pixel (qx, qy).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import numpy as np

# The C backend needs no GPU driver and gives the same numbers on every machine.
os.environ.setdefault("SAS_OPENCL", "none")

from sasmodels.core import load_model  # noqa: E402
from sasmodels.direct_model import call_kernel  # noqa: E402

# 1e-4..2 1/A covers SAXS and SANS geometries; 512 points keep the sharpest
# form-factor minima we draw (R <= 600 A) resolved to a few percent.
Q_GRID = np.logspace(-4, np.log10(2.0), 512)


@cache
def _model(name: str) -> Any:
    return load_model(name)


@cache
def _kernel_1d(name: str) -> Any:
    return _model(name).make_kernel([Q_GRID])


def curve(name: str, params: dict[str, float]) -> np.ndarray:
    """I(q) of a sasmodels model on ``Q_GRID`` (orientation averaged).

    Args:
        name: sasmodels model name, e.g. ``"sphere"`` or ``"sphere@hardsphere"``.
        params: model parameters, polydispersity as ``radius_pd``/``radius_pd_n``.

    Returns:
        len(Q_GRID) intensities, scale and background as given in params
        (defaults 1 and 0 here).
    """
    full = {"scale": 1.0, "background": 0.0, **params}
    out = np.asarray(call_kernel(_kernel_1d(name), full), dtype=np.float64)
    return np.nan_to_num(np.maximum(out, 0.0))


def on_pixels(i_q: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Interpolate a curve on ``Q_GRID`` onto per-pixel q (log-log, clamped)."""
    logi = np.log(np.maximum(i_q, 1e-300))
    qq = np.clip(q, Q_GRID[0], Q_GRID[-1])
    return np.exp(np.interp(np.log(qq), np.log(Q_GRID), logi))


def pattern_2d(name: str, params: dict[str, float], qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """I(qx, qy) of an oriented model (e.g. cylinder with theta/phi) on pixels.

    Args:
        name: sasmodels model name with orientation parameters.
        params: model parameters including ``theta``/``phi`` in degrees.
        qx: per-pixel qx in 1/A, rows x cols.
        qy: per-pixel qy in 1/A, same shape.

    Returns:
        rows x cols intensities.
    """
    kernel = _model(name).make_kernel([qx.ravel(), qy.ravel()])
    try:
        full = {"scale": 1.0, "background": 0.0, **params}
        out = np.asarray(call_kernel(kernel, full), dtype=np.float64)
    finally:
        kernel.release()
    return np.nan_to_num(np.maximum(out, 0.0)).reshape(qx.shape)
