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
class MapError:
    """How well the steering output is mapped, by the model's own account.

    The error a scientist can read before deciding to stop: the root-mean-square of the
    latent posterior std over the whole allowed region (a fixed scrambled-Sobol set, uniform
    over the box less the forbidden boxes), which estimates the RMSE of the posterior mean
    against the truth when the model fits the data. The set is the candidate set the
    acquisition searches, so measured points sit near some of its points (a slight bias
    low against an independent set). ``benchmarks/autonomy.py`` measures how it compares
    with the true error on maps with a known truth.

    Args:
        rms_std: That root-mean-square std, in output units.
        measured_range: Largest minus smallest measured value of the output.
        relative: ``rms_std`` over the range of the measurements the hyperparameters were
            fitted on (``None`` while that range is 0): ``rms_std / measured_range`` once a
            refit has seen every measurement; before, a new extreme value (a glitch) does
            not make the map look better than the model can yet say.
        n: Measurements of the output behind the posterior.
    """

    rms_std: float
    measured_range: float
    relative: float | None
    n: int


@dataclass(frozen=True)
class OutputStatus:
    """State of one output's GP; ``map_error`` for the steering output once it has a
    posterior (``None`` for the others)."""

    n: int
    fitted_n: int
    hyperparameters: dict[str, Any]
    last_fit_at: float | None
    last_fit_seconds: float | None
    fit_failures: int
    last_error: str | None
    map_error: MapError | None = None


@dataclass(frozen=True)
class ModelStatus:
    """State of the engine, per output."""

    n: int
    outputs: dict[str, OutputStatus] = field(default_factory=dict)
    refitting: bool = False
