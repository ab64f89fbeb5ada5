"""The experiment spec: what is varied, what is measured, what is sought.

Specs are immutable and validated once, here, where data enters the core
(after botorch's ``OptimizeAcqfInputs``). Every error names its field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

from server.steering.errors import InvalidMeasurement, InvalidSpec


class Goal(StrEnum):
    """What the experiment is after."""

    map = "map"  # reduce the map's uncertainty everywhere (kriging, Noack et al. 2019)
    maximize = "maximize"
    minimize = "minimize"


class Acquisition(StrEnum):
    """How the next positions are chosen."""

    variance = "variance"  # max posterior std (gpCAM's default)
    integrated_variance = "integrated_variance"  # largest reduction of the integrated variance
    # ... of the integrated variance weighted by the posterior mean's gradient (value-aware)
    gradient_variance = "gradient_variance"
    # ... weighted by the local error: posterior mean vs the nearest measurement (EIGF)
    misfit_variance = "misfit_variance"
    ucb = "ucb"  # upper (lower, when minimizing) confidence bound
    ei = "ei"  # log expected improvement


class Kernel(StrEnum):
    """Covariance function of the GP (ARD: one lengthscale per parameter)."""

    matern52 = "matern52"
    matern32 = "matern32"
    rbf = "rbf"


DEFAULT_ACQUISITION = {
    Goal.map: Acquisition.misfit_variance,
    Goal.maximize: Acquisition.ei,
    Goal.minimize: Acquisition.ei,
}

# Matern 3/2 for maps: rougher than 5/2, it follows phase boundaries and hot spots a few
# percent of an axis wide with less ringing (benchmarks/README.md, "Third pass": lower RMSE
# on the held-out validation maps); BoTorch's Matern 5/2 for optimization
DEFAULT_KERNEL = {
    Goal.map: Kernel.matern32,
    Goal.maximize: Kernel.matern52,
    Goal.minimize: Kernel.matern52,
}

MAX_PARAMETERS = 20
MAX_OUTPUTS = 16
MAX_BATCH = 100
MAX_NAME = 64
RESERVED_NAMES = frozenset({"seq", "suggestion_id", "key", "created_at", "metadata"})
# Measured values must be smaller than this in magnitude: the model squares them (a
# variance), and a square of 1e155 or more overflows double precision.
MAX_VALUE = 1e150


def _check_name(name: object, fld: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidSpec(fld, "must be a non-empty string")
    if len(name) > MAX_NAME:
        raise InvalidSpec(fld, f"longer than {MAX_NAME} characters")
    ok = all(c.isalnum() or c in "_-." for c in name)
    if not (name[0].isalpha() or name[0] == "_") or not ok:
        raise InvalidSpec(fld, "must start with a letter; only letters, digits, '_', '-', '.'")
    return name


def _finite(value: object, fld: str, error: type[InvalidSpec] | type[InvalidMeasurement]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(fld, "must be a number")
    v = float(value)
    if not math.isfinite(v):
        raise error(fld, "must be finite (no NaN or inf)")
    return v


@dataclass(frozen=True)
class Parameter:
    """One axis of the parameter space.

    Args:
        name: Identifier used in positions, e.g. ``"x"``.
        lower: Lower bound (inclusive), in ``units``.
        upper: Upper bound (inclusive), in ``units``.
        units: Free text shown on plots, e.g. ``"mm"``.
        speed: Motor speed in units/s, used to order a batch for short travel; ``None`` means
            travel along this axis costs nothing.
    """

    name: str
    lower: float
    upper: float
    units: str = ""
    speed: float | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        lo = _finite(self.lower, "lower", InvalidSpec)
        hi = _finite(self.upper, "upper", InvalidSpec)
        if not lo < hi:
            raise InvalidSpec("upper", f"must be greater than lower ({lo})")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)
        if self.speed is not None:
            s = _finite(self.speed, "speed", InvalidSpec)
            if s <= 0:
                raise InvalidSpec("speed", "must be positive (units per second)")
            object.__setattr__(self, "speed", s)


@dataclass(frozen=True)
class Output:
    """One measured quantity.

    Args:
        name: Identifier used in measurement values, e.g. ``"intensity"``.
        units: Free text shown on plots.
    """

    name: str
    units: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "name")


class ReductionKind(StrEnum):
    """How a detector image becomes a number."""

    model = "model"  # a named output of a deep net, e.g. the tagger's probability of "ring"
    q_integral = "q_integral"  # mean intensity over a ring of momentum transfer q


@dataclass(frozen=True)
class Reduction:
    """How a measurement's detector image becomes the value of one output.

    Pure data: the server runs it (the model ones through the inference queue).

    Args:
        kind: ``model`` or ``q_integral``; inferred from the fields when not given.
        model: Registry name of the net, e.g. ``"tagger"`` (kind ``model``).
        output: Which of the net's named outputs, e.g. the tag ``"ring"`` (kind ``model``).
        q_min: Lower edge of the q range, in the units of ``q_per_pixel`` (kind ``q_integral``).
        q_max: Upper edge (exclusive).
        q_per_pixel: q per pixel of radius from ``center`` (a small-angle detector's
            ``4 pi / lambda * pixel_size / (2 * distance)``).
        center: Beam centre ``[row, column]`` in pixels; default the image centre.
    """

    kind: ReductionKind | None = None
    model: str | None = None
    output: str | None = None
    q_min: float | None = None
    q_max: float | None = None
    q_per_pixel: float = 1.0
    center: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        kind = self.kind or (ReductionKind.model if self.model is not None
                             else ReductionKind.q_integral)
        object.__setattr__(self, "kind", _enum(ReductionKind, kind, "kind"))
        if self.kind == ReductionKind.model:
            for fld in ("model", "output"):
                v = getattr(self, fld)
                if not isinstance(v, str) or not v:
                    raise InvalidSpec(fld, "a model reduction names a model and its output")
            return
        lo = _finite(self.q_min, "q_min", InvalidSpec)
        hi = _finite(self.q_max, "q_max", InvalidSpec)
        if not 0 <= lo < hi:
            raise InvalidSpec("q_max", "needs 0 <= q_min < q_max")
        if _finite(self.q_per_pixel, "q_per_pixel", InvalidSpec) <= 0:
            raise InvalidSpec("q_per_pixel", "must be positive")
        if self.center is not None:
            if not isinstance(self.center, Sequence) or len(self.center) != 2:
                raise InvalidSpec("center", "must be [row, column]")
            object.__setattr__(self, "center", tuple(
                _finite(c, "center", InvalidSpec) for c in self.center))


    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with only the fields of its kind."""
        if self.kind == ReductionKind.model:
            return {"kind": "model", "model": self.model, "output": self.output}
        d: dict[str, Any] = {"kind": "q_integral", "q_min": self.q_min, "q_max": self.q_max,
                             "q_per_pixel": self.q_per_pixel}
        if self.center is not None:
            d["center"] = list(self.center)
        return d


@dataclass(frozen=True)
class Box:
    """A forbidden box: positions with every named coordinate inside its interval.

    Args:
        bounds: ``{parameter: (lower, upper)}``; parameters not named are unconstrained,
            so ``{"x": (2, 3)}`` forbids a whole stripe.
    """

    bounds: Mapping[str, tuple[float, float]]

    def contains(self, position: Mapping[str, float]) -> bool:
        """Whether a position lies inside the box (closed intervals)."""
        return all(lo <= position[k] <= hi for k, (lo, hi) in self.bounds.items())


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything needed to steer one experiment.

    Args:
        name: Display name.
        parameters: The axes of the parameter space, ``d = len(parameters)``.
        outputs: Measured quantities, ``m = len(outputs)``.
        goal: ``map``, ``maximize`` or ``minimize``.
        acquisition: Defaults by goal: ``misfit_variance`` for ``map``, ``ei`` otherwise.
        kernel: ``matern52``, ``matern32`` or ``rbf``; always ARD. Defaults by goal:
            ``matern32`` for ``map``, ``matern52`` otherwise.
        target: The output that steers; defaults to the first. Others are modelled and reported.
        batch_size: Default ``q`` of an ask.
        initial_design: Number of scrambled-Sobol positions suggested before the GP takes over.
        forbidden: Boxes never to be suggested (measurements there are refused too).
        ucb_beta: Exploration weight of ``ucb`` (mean + sqrt(beta) * std).
        seed: Seeds the Sobol design and the optimizer, so replays are reproducible.
        suggestion_ttl_s: Seconds after which a pending suggestion expires; ``None`` uses
            the server's default.
        reductions: ``{output: Reduction}``: outputs whose value the server computes from a
            detector image posted with the measurement.
    """

    name: str
    parameters: tuple[Parameter, ...]
    outputs: tuple[Output, ...]
    goal: Goal = Goal.map
    acquisition: Acquisition | None = None
    kernel: Kernel | None = None
    target: str | None = None
    batch_size: int = 1
    initial_design: int | None = None
    forbidden: tuple[Box, ...] = ()
    ucb_beta: float = 4.0
    seed: int = 0
    suggestion_ttl_s: float | None = None
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    reductions: Mapping[str, Reduction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            raise InvalidSpec("name", "must be a non-empty string of at most 200 characters")
        self._check_axes()
        goal = _enum(Goal, self.goal, "goal")
        object.__setattr__(self, "goal", goal)
        acq = DEFAULT_ACQUISITION[goal] if self.acquisition is None else self.acquisition
        object.__setattr__(self, "acquisition", _enum(Acquisition, acq, "acquisition"))
        kernel = DEFAULT_KERNEL[goal] if self.kernel is None else self.kernel
        object.__setattr__(self, "kernel", _enum(Kernel, kernel, "kernel"))
        target = self.outputs[0].name if self.target is None else self.target
        if target not in self.output_names:
            raise InvalidSpec("target", f"{target!r} is not one of the outputs {self.output_names}")
        object.__setattr__(self, "target", target)
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise InvalidSpec("batch_size", f"must be an integer in [1, {MAX_BATCH}]")
        n0 = max(4, 2 * self.dim) if self.initial_design is None else self.initial_design
        if not isinstance(n0, int) or not 0 <= n0 <= 10_000:
            raise InvalidSpec("initial_design", "must be an integer in [0, 10000]")
        object.__setattr__(self, "initial_design", n0)
        beta = _finite(self.ucb_beta, "ucb_beta", InvalidSpec)
        if beta < 0:
            raise InvalidSpec("ucb_beta", "must be >= 0")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise InvalidSpec("seed", "must be an integer in [0, 2**31)")
        if self.suggestion_ttl_s is not None:
            ttl = _finite(self.suggestion_ttl_s, "suggestion_ttl_s", InvalidSpec)
            if ttl <= 0:
                raise InvalidSpec("suggestion_ttl_s", "must be positive")
        object.__setattr__(self, "forbidden", tuple(self._check_box(i, b)
                                                    for i, b in enumerate(self.forbidden)))
        for name in self.reductions:
            if name not in self.output_names:
                raise InvalidSpec(f"reductions.{name}",
                                  f"not one of the outputs {self.output_names}")

    def _check_axes(self) -> None:
        if not self.parameters:
            raise InvalidSpec("parameters", "at least one parameter is needed")
        if len(self.parameters) > MAX_PARAMETERS:
            raise InvalidSpec("parameters", f"at most {MAX_PARAMETERS} parameters")
        if not self.outputs:
            raise InvalidSpec("outputs", "at least one output is needed")
        if len(self.outputs) > MAX_OUTPUTS:
            raise InvalidSpec("outputs", f"at most {MAX_OUTPUTS} outputs")
        for kind, items in (("parameters", self.parameters), ("outputs", self.outputs)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.name in seen:
                    raise InvalidSpec(f"{kind}[{i}].name", f"duplicate name {item.name!r}")
                seen.add(item.name)

    def check_new(self) -> None:
        """The checks a new experiment passes on top of a valid spec's (an experiment
        stored before them still loads): parameters and outputs share one namespace, as
        the columns of a measurements table (CSV, a dataframe) beside its own columns and
        a noise column per output.

        Raises:
            InvalidSpec: A name used twice across parameters and outputs, or one of
                :data:`RESERVED_NAMES` or an ``<output>_noise``.
        """
        seen = set(RESERVED_NAMES)
        noise_columns = {f"{o.name}_noise" for o in self.outputs}
        for kind, items in (("parameters", self.parameters), ("outputs", self.outputs)):
            for i, item in enumerate(items):
                if item.name in seen or item.name in noise_columns:
                    why = ("is a column of the measurements table" if item.name in
                           RESERVED_NAMES or item.name in noise_columns else "is used twice")
                    raise InvalidSpec(f"{kind}[{i}].name",
                                      f"duplicate name {item.name!r}: {why} (parameters and "
                                      "outputs share one namespace)")
                seen.add(item.name)

    def _check_box(self, i: int, box: Box) -> Box:
        if not box.bounds:
            raise InvalidSpec(f"forbidden[{i}]", "must bound at least one parameter")
        clean: dict[str, tuple[float, float]] = {}
        for name, interval in box.bounds.items():
            fld = f"forbidden[{i}].{name}"
            if name not in self.parameter_names:
                raise InvalidSpec(fld, f"unknown parameter; expected one of {self.parameter_names}")
            if not isinstance(interval, Sequence) or len(interval) != 2:
                raise InvalidSpec(fld, "must be [lower, upper]")
            lo = _finite(interval[0], fld, InvalidSpec)
            hi = _finite(interval[1], fld, InvalidSpec)
            if lo > hi:
                raise InvalidSpec(fld, "lower must not exceed upper")
            clean[name] = (lo, hi)
        if all(clean.get(p.name, (-math.inf, math.inf))[0] <= p.lower
               and clean.get(p.name, (-math.inf, math.inf))[1] >= p.upper
               for p in self.parameters):
            raise InvalidSpec(f"forbidden[{i}]", "forbids the whole parameter space")
        return Box(clean)

    # --- derived --------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of parameters ``d``."""
        return len(self.parameters)

    @property
    def parameter_names(self) -> list[str]:
        """Parameter names in axis order."""
        return [p.name for p in self.parameters]

    @property
    def output_names(self) -> list[str]:
        """Output names in order."""
        return [o.name for o in self.outputs]

    @property
    def bounds(self) -> list[tuple[float, float]]:
        """``d`` pairs ``(lower, upper)`` in axis order."""
        return [(p.lower, p.upper) for p in self.parameters]

    def is_forbidden(self, position: Mapping[str, float]) -> bool:
        """Whether a position falls in any forbidden box."""
        return any(box.contains(position) for box in self.forbidden)

    # --- validation of incoming data --------------------------------------------------

    def check_position(self, position: object, fld: str = "position") -> list[float]:
        """Validate a position and return it as a list in axis order.

        Args:
            position: ``{parameter: value}`` with exactly the spec's parameters.
            fld: Field path used in errors.

        Raises:
            InvalidMeasurement: Missing/extra names, non-finite, out of bounds, or forbidden.
        """
        if not isinstance(position, Mapping):
            raise InvalidMeasurement(fld, "must be an object {parameter: value}")
        extra = sorted(set(position) - set(self.parameter_names))
        if extra:
            raise InvalidMeasurement(f"{fld}.{extra[0]}",
                                     f"unknown parameter; expected {self.parameter_names}")
        out = []
        for p in self.parameters:
            if p.name not in position:
                raise InvalidMeasurement(f"{fld}.{p.name}", "missing")
            v = _finite(position[p.name], f"{fld}.{p.name}", InvalidMeasurement)
            if not p.lower <= v <= p.upper:
                raise InvalidMeasurement(f"{fld}.{p.name}",
                                         f"{v} outside bounds [{p.lower}, {p.upper}]")
            out.append(v)
        if self.is_forbidden(dict(zip(self.parameter_names, out, strict=True))):
            raise InvalidMeasurement(fld, "inside a forbidden region")
        return out

    def check_values(self, values: object, fld: str = "values",
                     *, allow_partial: bool = True) -> dict[str, float]:
        """Validate measured values ``{output: value}``.

        Args:
            values: Values for some (``allow_partial``) or all outputs; never unknown ones.
            fld: Field path used in errors.
            allow_partial: Whether outputs may be missing (e.g. a detector that skipped one).

        Raises:
            InvalidMeasurement: Unknown output, a value non-finite or too large (:data:`MAX_VALUE`),
                or nothing measured.
        """
        if not isinstance(values, Mapping) or not values:
            raise InvalidMeasurement(fld, "must be a non-empty object {output: value}")
        out: dict[str, float] = {}
        for k, v in values.items():
            if k not in self.output_names:
                raise InvalidMeasurement(f"{fld}.{k}",
                                         f"unknown output; expected {self.output_names}")
            out[k] = _finite(v, f"{fld}.{k}", InvalidMeasurement)
            if abs(out[k]) >= MAX_VALUE:
                raise InvalidMeasurement(f"{fld}.{k}", f"must be smaller than {MAX_VALUE:g} in "
                                         "magnitude (the model squares it)")
        if not allow_partial and set(out) != set(self.output_names):
            missing = sorted(set(self.output_names) - set(out))
            raise InvalidMeasurement(f"{fld}.{missing[0]}", "missing")
        return out

    def check_noise(self, noise: object, values: Mapping[str, float],
                    fld: str = "noise") -> dict[str, float]:
        """Validate per-measurement noise variances ``{output: variance >= 0}``."""
        if not isinstance(noise, Mapping):
            raise InvalidMeasurement(fld, "must be an object {output: variance}")
        out: dict[str, float] = {}
        for k, v in noise.items():
            if k not in values:
                raise InvalidMeasurement(f"{fld}.{k}", "noise given for an output with no value")
            var = _finite(v, f"{fld}.{k}", InvalidMeasurement)
            if var < 0:
                raise InvalidMeasurement(f"{fld}.{k}", "variance must be >= 0")
            out[k] = var
        return out

    # --- (de)serialization --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every default filled in."""
        d = asdict(self)
        d["parameters"] = [asdict(p) for p in self.parameters]
        d["outputs"] = [asdict(o) for o in self.outputs]
        d["goal"] = self.goal.value
        d["acquisition"] = self.acquisition.value  # type: ignore[union-attr]
        d["kernel"] = self.kernel.value  # type: ignore[union-attr]
        d["forbidden"] = [{k: list(v) for k, v in b.bounds.items()} for b in self.forbidden]
        d["metadata"] = dict(self.metadata)
        d["reductions"] = {k: r.to_dict() for k, r in self.reductions.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """Build a spec from plain JSON data (as produced by ``to_dict`` or an API body).

        Raises:
            InvalidSpec: Naming the first offending field.
        """
        data = dict(data)
        params = []
        for i, p in enumerate(data.pop("parameters", None) or []):
            params.append(_build(Parameter, p, f"parameters[{i}]"))
        outputs = []
        for i, o in enumerate(data.pop("outputs", None) or []):
            outputs.append(_build(Output, o, f"outputs[{i}]"))
        reductions = data.pop("reductions", None) or {}
        if not isinstance(reductions, Mapping):
            raise InvalidSpec("reductions", "must be an object {output: reduction}")
        reductions = {k: _build(Reduction, r, f"reductions.{k}") for k, r in reductions.items()}
        boxes = []
        for i, b in enumerate(data.pop("forbidden", None) or []):
            if not isinstance(b, Mapping):
                raise InvalidSpec(f"forbidden[{i}]",
                                  "must be an object {parameter: [lower, upper]}")
            boxes.append(Box(dict(b)))
        try:
            return cls(parameters=tuple(params), outputs=tuple(outputs), forbidden=tuple(boxes),
                       reductions=reductions, **data)
        except TypeError as e:
            raise InvalidSpec("spec", str(e)) from None


def _enum(kind: type[Enum], value: object, fld: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidSpec(fld, f"{value!r} is not one of {[e.value for e in kind]}") from None


def _build(kind: type[Any], data: object, fld: str) -> Any:
    if not isinstance(data, Mapping):
        raise InvalidSpec(fld, "must be an object")
    try:
        return kind(**data)
    except InvalidSpec as e:
        raise InvalidSpec(f"{fld}.{e.field}", e.reason) from None
    except TypeError as e:
        raise InvalidSpec(fld, str(e)) from None
