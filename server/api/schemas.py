"""Request and response bodies of the HTTP API (role suffixes: Create, Public, Request).

These shape and document the wire format; semantic checks (bounds, names, forbidden
regions) happen once, in the steering core, which names the failing field.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationInfo,
    field_validator,
)

from server.store.base import ExperimentStatus, SuggestionStatus


def _leaves(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(path, item)`` below a JSON-like value that is not a dict or list, dict
    keys included (as ``"the key 'k'"``): ``a.b[1]`` names ``{"a": {"b": [0, item]}}``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (f"the key {k[:40]!r}" if isinstance(k, str) else ""), k
            yield from _leaves(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{where}[{i}]")
    else:
        yield where, value


def _no_nul(value: Any) -> None:
    """Raise ValueError if a string in ``value`` (dict keys too) holds a NUL character,
    which PostgreSQL cannot store in text or JSON (SQLite could: the backends would differ)."""
    for where, v in _leaves(value):
        if isinstance(v, str) and "\x00" in v:
            raise ValueError(f"{where or 'the string'} contains a NUL character (\\u0000)")


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form JSON must be storable as JSON: no NaN or infinity (Python's parser takes
    them, JSON has none)."""
    for where, v in _leaves(value):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{where} is {v}: JSON has no NaN or infinity")
    return value


FreeJSON = Annotated[dict[str, Any], AfterValidator(_finite_json)]


def _a_number(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number (not a string or a boolean)")
    return value


# An integer given as a JSON number: 4 or 4.0, not "4" or true (StrictInt refuses 4.0).
JSONInt = Annotated[int, BeforeValidator(_a_number)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _storable_text(cls, value: Any, info: ValidationInfo) -> Any:
        # only fields whose type can hold text: a walk over a posterior's 250,000 numbers
        # would hold the event loop for most of a second
        if info.field_name is not None and _holds_text(cls, info.field_name):
            _no_nul(value)
        return value


@functools.cache
def _holds_text(model: type[BaseModel], name: str) -> bool:
    """Whether field ``name`` of ``model`` may hold a string, outside nested models (which
    check their own fields)."""
    def text(t: Any) -> bool:
        if t is str or t is Any:
            return True
        if isinstance(t, type) and issubclass(t, BaseModel):
            return False
        return any(text(a) for a in typing.get_args(t))
    return text(model.model_fields[name].annotation)


class ParameterCreate(_Strict):
    """One axis of the parameter space."""

    name: str = Field(examples=["x"])
    lower: float
    upper: float
    units: str = ""
    speed: float | None = Field(None, gt=0,
                                description="Motor speed, units/s; orders a batch")


class OutputCreate(_Strict):
    """One measured quantity."""

    name: str = Field(examples=["intensity"])
    units: str = ""


class ExperimentCreate(_Strict):
    """A new experiment. Only name, parameters and outputs are required."""

    name: str = Field(min_length=1, max_length=200, examples=["gradient-film"])
    parameters: list[ParameterCreate] = Field(min_length=1, max_length=20)
    outputs: list[OutputCreate] = Field(min_length=1, max_length=16)
    goal: Literal["map", "maximize", "minimize"] = "map"
    acquisition: Literal["variance", "integrated_variance", "gradient_variance",
                         "misfit_variance", "ucb", "ei"] | None = Field(
        None, description="Default: misfit_variance for map, ei for maximize/minimize")
    kernel: Literal["matern52", "matern32", "rbf"] | None = Field(
        None, description="Default: matern32 for map, matern52 for maximize/minimize")
    target: str | None = Field(None, description="Output that steers; default the first")
    batch_size: int = Field(1, ge=1, le=100, description="Default q of an ask")
    initial_design: int | None = Field(None, ge=0, le=10_000,
                                       description="Sobol points before the GP; "
                                                   "default max(4, 2d)")
    forbidden: list[dict[str, list[float]]] = Field(
        default_factory=list, description="Boxes never suggested: {parameter: [lower, upper]}")
    ucb_beta: float = Field(4.0, ge=0)
    seed: int = Field(0, ge=0, lt=2**31)
    suggestion_ttl_s: float | None = Field(None, gt=0)
    description: str = ""
    metadata: FreeJSON = Field(default_factory=dict)
    reductions: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Outputs computed from a posted detector image: {output: "
                    "{'model': 'tagger', 'output': 'ring'}} (a net's output, through the "
                    "inference queue) or {'q_min', 'q_max', 'q_per_pixel', 'center'?} (mean "
                    "intensity over a q ring)",
        examples=[{"ring_prob": {"model": "tagger", "output": "ring"}}])


class MapErrorPublic(BaseModel):
    """How well the steering output is mapped, by the model's own account."""

    rms_std: float = Field(description="Root-mean-square latent posterior std over the "
                                       "allowed region, output units: the model's estimate "
                                       "of its map's RMSE against the truth")
    measured_range: float = Field(description="Largest minus smallest measured value")
    relative: float | None = Field(description="rms_std / measured_range, the range of the "
                                               "measurements the last fit saw: stop a map "
                                               "when this is small enough (e.g. 0.02)")
    n: int = Field(description="Measurements behind the posterior")


class OutputModelPublic(BaseModel):
    """One output's GP."""

    n: int
    fitted_n: int
    hyperparameters: dict[str, Any]
    last_fit_at: float | None
    last_fit_seconds: float | None
    fit_failures: int
    last_error: str | None
    map_error: MapErrorPublic | None = Field(
        None, description="The steering output's estimated map error (null for the other "
                          "outputs, and before a posterior exists)")


class MapErrorPointPublic(BaseModel):
    """The steering output's estimated map error after one refit."""

    n: int = Field(description="Measurements behind the posterior")
    rms_std: float = Field(description="As in map_error, output units")
    relative: float | None = Field(description="As in map_error")
    at: float = Field(description="When it was recorded (UNIX seconds)")


class ModelPublic(BaseModel):
    """The engine's state."""

    n: int
    refitting: bool
    outputs: dict[str, OutputModelPublic]


class ExperimentPublic(BaseModel):
    """An experiment with its full spec (defaults filled in) and counts."""

    id: str
    spec: dict[str, Any]
    status: ExperimentStatus
    created_at: float
    updated_at: float
    n_measurements: int
    n_pending: int
    model: ModelPublic | None = None
    map_error_history: list[MapErrorPointPublic] = Field(
        default_factory=list,
        description="The steering output's map_error after each refit, in n order, kept "
                    "by the server across restarts (the last 1,000; older ones thinned "
                    "evenly on a log scale of n): the convergence curve of the whole run, "
                    "also of a closed experiment. Between refits, the model's map_error is "
                    "newer than the last point. Only in GET of one experiment")


class ExperimentsPublic(BaseModel):
    """All experiments, newest first."""

    experiments: list[ExperimentPublic]


class StatusUpdate(_Strict):
    """Pause, resume or close an experiment."""

    status: ExperimentStatus


class SuggestionRequest(_Strict):
    """An ask."""

    n: JSONInt | None = Field(None, ge=1, le=100,
                          description="How many positions (q); default the spec's batch_size")


class SuggestionPublic(BaseModel):
    """A suggested position; ``mean``/``std`` are the posterior per output there."""

    id: str
    position: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    acquisition: float | None
    source: str
    status: SuggestionStatus
    batch: str
    rank: int
    created_at: float
    expires_at: float | None
    closed_at: float | None


class SuggestionsPublic(BaseModel):
    """Suggestions, in the order to measure them."""

    suggestions: list[SuggestionPublic]


class MeasurementCreate(_Strict):
    """One measurement. ``key`` makes a retry safe: a repeated key stores nothing new."""

    # Strict: a number is a JSON number ("1.5" and true are refused, not read as 1.5 and 1)
    position: dict[str, StrictFloat]
    values: dict[str, StrictFloat] = Field(
        default_factory=dict, description="Measured outputs; may be empty with an image")
    image: str | None = Field(None, description="Detector image as base64 .npy bytes; the "
                                                "spec's reductions turn it into values")
    noise: dict[str, StrictFloat] | None = Field(None, description="Variance per output")
    suggestion_id: str | None = None
    key: str | None = Field(None, description="Client idempotency key")
    metadata: FreeJSON = Field(default_factory=dict)


class MeasurementsCreate(_Strict):
    """A batch of measurements, stored atomically."""

    measurements: list[MeasurementCreate] = Field(min_length=1)


class MeasurementPublic(BaseModel):
    """A stored measurement."""

    id: int
    seq: int
    position: dict[str, float]
    values: dict[str, float]
    noise: dict[str, float]
    suggestion_id: str | None
    key: str | None
    metadata: dict[str, Any]
    created_at: float


class MeasurementsStored(BaseModel):
    """Result of a tell, in the order sent; ``created[i]`` is false for a repeated key."""

    measurements: list[MeasurementPublic]
    created: list[bool]


class MeasurementsPage(BaseModel):
    """A page of measurements; pass ``next_after`` as ``after`` for the next page."""

    measurements: list[MeasurementPublic]
    next_after: int | None


class PosteriorRequest(_Strict):
    """Where to evaluate the posterior: explicit points, or a regular grid."""

    points: list[list[float]] | None = Field(
        None, description="n x d positions in parameter order")
    grid: dict[str, int] | None = Field(
        None, description="Points per parameter, e.g. {'x': 50, 'y': 50}; a parameter left "
                          "out is fixed at its midpoint, or at `at`")
    at: dict[str, float] | None = Field(None, description="Values of parameters off the grid")


class OutputPosterior(BaseModel):
    """Posterior of one output; NaN (null) where it has no model yet."""

    mean: list[float | None]
    std: list[float | None]


class PosteriorPublic(BaseModel):
    """Posterior at ``points`` (n x d); for a grid, ``axes`` holds each axis' values and
    the points run with the last grid axis fastest."""

    parameters: list[str]
    points: list[list[float]]
    axes: dict[str, list[float]] | None = None
    outputs: dict[str, OutputPosterior]


class ErrorItem(BaseModel):
    """One problem with a request."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorPublic(BaseModel):
    """Every error reply: what went wrong, where, and the request id for the logs."""

    detail: list[ErrorItem] | str
    request_id: str | None = None
