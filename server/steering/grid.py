"""Regular grids over the parameter space, for posterior maps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from server.steering.errors import InvalidInput
from server.steering.spec import ExperimentSpec


def grid_points(spec: ExperimentSpec, grid: Mapping[str, int],
                at: Mapping[str, float] | None = None,
                max_points: int = 250_000) -> tuple[np.ndarray, dict[str, list[float]]]:
    """A regular grid over some parameters, the others fixed.

    Args:
        spec: The experiment spec.
        grid: Points per gridded parameter, e.g. ``{"x": 50, "y": 40}`` (each 2..2000).
        at: Values of the parameters not gridded; default: the middle of their range.
        max_points: Refuse grids with more points than this.

    Returns:
        ``(X, axes)``: ``X`` is ``n x d`` in axis order, the last gridded axis running
        fastest; ``axes`` maps each gridded parameter to its values.

    Raises:
        InvalidInput: Unknown parameter, bad count, value out of bounds, or too many points.
    """
    at = dict(at or {})
    names = spec.parameter_names
    for k in list(grid) + list(at):
        if k not in names:
            raise InvalidInput(f"grid.{k}" if k in grid else f"at.{k}",
                               f"unknown parameter; expected one of {names}")
    if not grid:
        raise InvalidInput("grid", "name at least one parameter")
    total = 1
    for k, n in grid.items():
        if not isinstance(n, int) or not 2 <= n <= 2000:
            raise InvalidInput(f"grid.{k}", "must be an integer in [2, 2000]")
        total *= n
    if total > max_points:
        raise InvalidInput("grid", f"{total} points; at most {max_points}")
    axes: dict[str, list[float]] = {}
    columns = []
    for p in spec.parameters:
        if p.name in grid:
            values = np.linspace(p.lower, p.upper, grid[p.name])
            axes[p.name] = values.tolist()
            columns.append(values)
        else:
            v = at.get(p.name, 0.5 * (p.lower + p.upper))
            if not (np.isfinite(v) and p.lower <= v <= p.upper):
                raise InvalidInput(f"at.{p.name}", f"must be within [{p.lower}, {p.upper}]")
            columns.append(np.array([float(v)]))
    mesh = np.meshgrid(*columns, indexing="ij")
    X = np.stack([m.reshape(-1) for m in mesh], axis=1)
    return X, axes


def check_points(spec: ExperimentSpec, points: object, max_points: int = 250_000) -> np.ndarray:
    """Validate explicit positions (``n x d``, axis order, inside the bounds).

    Raises:
        InvalidInput: Wrong shape, non-finite or out-of-bounds values, too many points.
    """
    try:
        X = np.asarray(points, dtype=float)
    except (TypeError, ValueError):  # ragged rows or non-numbers
        raise InvalidInput("points", f"must be an n x {spec.dim} list of numbers") from None
    if X.ndim != 2 or X.shape[1] != spec.dim or X.shape[0] == 0:
        raise InvalidInput("points", f"must be a non-empty n x {spec.dim} list "
                                     f"(parameters {spec.parameter_names})")
    if X.shape[0] > max_points:
        raise InvalidInput("points", f"at most {max_points} points")
    if not np.isfinite(X).all():
        raise InvalidInput("points", "must be finite")
    lo = np.array([p.lower for p in spec.parameters])
    hi = np.array([p.upper for p in spec.parameters])
    bad = np.argwhere((X < lo) | (X > hi))
    if len(bad):
        i, j = bad[0]
        raise InvalidInput(f"points[{i}][{j}]", f"{X[i, j]} outside bounds of "
                                               f"{spec.parameter_names[j]} [{lo[j]}, {hi[j]}]")
    return X
