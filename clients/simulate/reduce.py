"""Reductions: raw detector data -> the scalars the GP steers on.

A reducer is any object with ``outputs`` (names) and ``reduce(data) -> {output: value}``.
:class:`CurveReducer` reduces a 1-D curve ``I(q)``. Detector images are reduced by the
server instead (:class:`clients.simulate.images.ImageDetector` and the spec's
``reductions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Reducer(Protocol):
    """Turns one measurement's raw data into named numbers."""

    outputs: Sequence[str]

    def reduce(self, data: Any) -> dict[str, float]:
        """``{output: value}`` for every name in ``outputs``."""
        ...


@dataclass(frozen=True)
class CurveReducer:
    """Peak position, width and area of one ring in ``I(q)``, above a linear background.

    The background is a line fitted to the outer ``edge`` fraction of bins at each end;
    the peak is the background-subtracted counts within ``window`` widths of the maximum
    (after a 5-bin smoothing): ``q0`` is their centroid, ``width`` their standard
    deviation, ``area`` their sum. Crude next to a fit, but fast and unbiased enough for a
    Gaussian ring well inside the window; the ``order``-like quantities a beamline wants
    come from the same numbers.
    """

    q: np.ndarray
    edge: float = 0.12
    window: float = 3.0
    outputs: tuple[str, ...] = ("q0", "width", "area")

    def reduce(self, data: Any) -> dict[str, float]:
        counts = np.asarray(data, dtype=float)
        q = self.q
        k = max(3, int(self.edge * q.size))
        edges = np.r_[0:k, q.size - k:q.size]
        slope, icpt = np.polyfit(q[edges], counts[edges], 1)
        signal = counts - (slope * q + icpt)
        smooth = np.convolve(signal, np.ones(5) / 5, mode="same")
        peak = int(np.argmax(smooth))
        half = smooth[peak] / 2
        lo, hi = peak, peak
        while lo > 0 and smooth[lo] > half:
            lo -= 1
        while hi < q.size - 1 and smooth[hi] > half:
            hi += 1
        sigma = max((q[hi] - q[lo]) / 2.355, q[1] - q[0])
        sel = np.abs(q - q[peak]) <= self.window * sigma
        w = np.clip(signal[sel], 0.0, None)
        total = float(w.sum())
        if total <= 0:
            return {"q0": float(q[peak]), "width": float(sigma), "area": 0.0}
        q0 = float((w * q[sel]).sum() / total)
        width = float(np.sqrt((w * (q[sel] - q0) ** 2).sum() / total))
        return {"q0": q0, "width": width, "area": total * float(q[1] - q[0])}
