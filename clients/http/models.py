"""What the server sends back, as small typed objects (the client's own copy of the wire
format: it never imports ``server``).

Unknown fields are ignored, so a newer server does not break an older client.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

ExperimentStatus = Literal["active", "paused", "closed"]
# measurements per dimension before a stop rule trusts the map error estimate: with fewer,
# the fitted lengthscales, and with them the estimate, are unreliable
MAP_ERROR_MIN_POINTS_PER_DIM = 10


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MapError(_Wire):
    """How well the steering output is mapped, by the model's own account: the RMS of the
    posterior std over the allowed region (``rms_std``, output units), as a fraction of the
    measured range (``relative``), on ``n`` measurements."""

    rms_std: float
    measured_range: float
    relative: float | None = None
    n: int


class MapErrorPoint(_Wire):
    """The steering output's estimated map error after one refit (a point of the
    convergence curve: ``relative`` against ``n``)."""

    n: int
    rms_std: float
    relative: float | None = None
    at: float


class OutputModel(_Wire):
    """One output's GP: how many points it holds, and how many its hyperparameters saw;
    the steering output's estimated map error."""

    n: int
    fitted_n: int
    hyperparameters: dict[str, Any] = {}
    last_fit_at: float | None = None
    last_fit_seconds: float | None = None
    fit_failures: int = 0
    last_error: str | None = None
    map_error: MapError | None = None


class ModelState(_Wire):
    """The engine's state (only in :meth:`Client.get_experiment`)."""

    n: int
    refitting: bool
    outputs: dict[str, OutputModel]


class Experiment(_Wire):
    """An experiment: its spec with every default filled in, status and counts."""

    id: str
    spec: dict[str, Any]
    status: ExperimentStatus
    created_at: float
    updated_at: float
    n_measurements: int
    n_pending: int
    model: ModelState | None = None
    map_error_history: tuple[MapErrorPoint, ...] = ()
    """The steering output's map error after each refit, oldest first (only from
    :meth:`Client.get_experiment`; empty from a server that does not keep it)::

        plt.loglog([p.n for p in h], [p.relative for p in h])
    """

    @property
    def name(self) -> str:
        """The spec's name."""
        return str(self.spec.get("name", ""))

    @property
    def parameter_names(self) -> list[str]:
        """Parameter names, in the spec's order (the order of posterior ``points``)."""
        return [p["name"] for p in self.spec.get("parameters", [])]

    @property
    def output_names(self) -> list[str]:
        """Output names, in the spec's order."""
        return [o["name"] for o in self.spec.get("outputs", [])]

    @property
    def target(self) -> str:
        """The output that steers."""
        return str(self.spec.get("target") or self.output_names[0])

    def _steering_model(self) -> OutputModel | None:
        return None if self.model is None else self.model.outputs.get(self.target)

    @property
    def map_error(self) -> MapError | None:
        """The steering output's estimated map error (``None`` before it has a model, or
        from a server that does not report it)."""
        out = self._steering_model()
        return None if out is None else out.map_error

    @property
    def map_error_min_points(self) -> int:
        """Measurements before :meth:`map_good_enough` trusts the estimate by default
        (:data:`MAP_ERROR_MIN_POINTS_PER_DIM` per dimension)."""
        return MAP_ERROR_MIN_POINTS_PER_DIM * len(self.parameter_names)

    def map_good_enough(self, target_error: float, min_points: int | None = None) -> bool:
        """Whether the server's estimated map error (:attr:`map_error`) is at most
        ``target_error`` of the measured range, on at least ``min_points`` measurements
        (default :attr:`map_error_min_points`), with no refit running (the estimate then
        rests on hyperparameters fitted to most of the data, as where it was measured:
        ``benchmarks/README.md``). The stopping rule of the Bluesky plan and ``beamsteer
        simulate``."""
        err = self.map_error
        least = self.map_error_min_points if min_points is None else min_points
        return (err is not None and err.relative is not None and err.n >= least
                and err.relative <= target_error
                and self.model is not None and not self.model.refitting)

    @property
    def reports_map_error(self) -> bool | None:
        """Whether the server reports :attr:`map_error` (``None`` until the steering output
        has a fitted model, when a server that does would have sent it)."""
        out = self._steering_model()
        if out is None or out.fitted_n == 0:
            return None
        return out.map_error is not None


class Suggestion(_Wire):
    """A position to measure; ``mean``/``std`` are the posterior there when asked."""

    id: str
    position: dict[str, float]
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    acquisition: float | None = None
    source: str = ""
    status: str = "pending"
    batch: str = ""
    rank: int = 0
    created_at: float = 0.0
    expires_at: float | None = None
    closed_at: float | None = None


class Measurement(_Wire):
    """A stored measurement. ``created`` is false when a tell repeated a known ``key``
    (the stored original comes back), None when read with :meth:`Client.measurements`."""

    id: int
    seq: int
    position: dict[str, float]
    values: dict[str, float]
    noise: dict[str, float] = {}
    suggestion_id: str | None = None
    key: str | None = None
    metadata: dict[str, Any] = {}
    created_at: float = 0.0
    created: bool | None = None

    def flat(self) -> dict[str, Any]:
        """One flat row: seq, each parameter, each output, ``<output>_noise``, ids, time."""
        row: dict[str, Any] = {"seq": self.seq, **self.position, **self.values}
        row.update({f"{k}_noise": v for k, v in self.noise.items()})
        row.update(suggestion_id=self.suggestion_id, key=self.key,
                   created_at=self.created_at, metadata=self.metadata or None)
        return row


class Measurements(list[Measurement]):
    """A list of measurements that can become a pandas DataFrame."""

    def as_dataframe(self) -> Any:
        """One row per measurement (columns as :meth:`Measurement.flat`); needs pandas."""
        try:
            import pandas as pd
        except ImportError as e:  # pandas is optional: say which extra brings it
            raise ImportError("as_dataframe() needs pandas: pip install 'beamsteer[data]'"
                              ) from e
        return pd.DataFrame([m.flat() for m in self])


class OutputPosterior(_Wire):
    """Posterior of one output at every point; None where it has no model yet."""

    mean: list[float | None]
    std: list[float | None]


class Posterior(_Wire):
    """Posterior mean and std at ``points`` (``n x d``, in ``parameters`` order). For a
    grid, ``axes`` holds each axis' values and the last axis runs fastest."""

    parameters: list[str]
    points: list[list[float]]
    axes: dict[str, list[float]] | None = None
    outputs: dict[str, OutputPosterior]

    def mean(self, output: str | None = None) -> list[float | None]:
        """Posterior mean of ``output`` (default: the first) at every point."""
        return self.outputs[output or next(iter(self.outputs))].mean

    def std(self, output: str | None = None) -> list[float | None]:
        """Posterior std of ``output`` (default: the first) at every point."""
        return self.outputs[output or next(iter(self.outputs))].std


class Event(_Wire):
    """One event from ``ws .../events``: ``hello`` (on every (re)connect), ``suggestions``,
    ``measurements``, ``suggestion_closed``, ``refit``, ``status``, ``overflow``."""

    type: str
    experiment_id: str
    seq: int
    time: float
    data: dict[str, Any] = {}

    @property
    def when(self) -> _dt.datetime:
        """``time`` as a local datetime."""
        return _dt.datetime.fromtimestamp(self.time)
