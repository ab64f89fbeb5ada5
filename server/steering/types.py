"""Plain result types that the steering core returns (no torch tensors leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """One suggested position.

    Args:
        x: ``d`` coordinates in the spec's units, axis order.
        mean: Posterior mean per output at ``x`` (output units); empty before any model.
        std: Posterior standard deviation per output at ``x`` (output units).
        acquisition: Value of the acquisition function that chose it (larger is better);
            ``None`` for initial-design points.
        source: ``"initial_design"`` or the acquisition's name.
        ahead: Whether the pick was computed before the ask, while the last suggestions
            were being measured (:meth:`~server.steering.engine.GPEngine.prepare`).
    """

    x: list[float]
    mean: dict[str, float]
    std: dict[str, float]
    acquisition: float | None
    source: str
    ahead: bool = False


@dataclass(frozen=True)
class Posterior:
    """Posterior of every output at ``n`` points.

    Args:
        mean: ``{output: array (n,)}`` in output units; NaN where the output has no model yet.
        std: ``{output: array (n,)}`` in output units (latent function, without noise).
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]


@dataclass(frozen=True)
class OutputStatus:
    """State of one output's GP."""

    n: int
    fitted_n: int
    hyperparameters: dict[str, Any]
    last_fit_at: float | None
    last_fit_seconds: float | None
    fit_failures: int
    last_error: str | None


@dataclass(frozen=True)
class ModelStatus:
    """State of the engine, per output."""

    n: int
    outputs: dict[str, OutputStatus] = field(default_factory=dict)
    refitting: bool = False
