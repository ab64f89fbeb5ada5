"""JSON form of the fitted hyperparameters (reported in the status, stored for warm starts)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from server.steering.errors import InvalidInput
from server.steering.gp import Hyperparameters
from server.steering.spec import ExperimentSpec


def to_dict(spec: ExperimentSpec, hp: Hyperparameters) -> dict[str, Any]:
    """JSON-ready hyperparameters: spec/output units, and the model-space values.

    Args:
        spec: The experiment spec (for parameter names and ranges).
        hp: Model-space hyperparameters.
    """
    spans = [p.upper - p.lower for p in spec.parameters]
    ls = [float(v) for v in hp.lengthscale]
    return {
        "kernel": hp.kernel,
        "lengthscales": {p.name: v * s for p, v, s in zip(spec.parameters, ls, spans,
                                                          strict=True)},
        "lengthscales_normalized": ls,
        "outputscale": hp.outputscale * hp.y_std**2,
        "outputscale_standardized": hp.outputscale,
        "noise_variance": hp.noise * hp.y_std**2,
        "noise_variance_standardized": hp.noise,
        "noise_model": hp.noise_model,
        "mean_constant": hp.mean_constant * hp.y_std + hp.y_mean,
        "mean_constant_standardized": hp.mean_constant,
        "y_mean": hp.y_mean,
        "y_std": hp.y_std,
        "fitted_n": hp.fitted_n,
    }


def _number(data: dict[str, Any], key: str, fld: str, *, positive: bool = False) -> float:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InvalidInput(f"{fld}.{key}", "must be a finite number")
    if positive and v <= 0:
        raise InvalidInput(f"{fld}.{key}", "must be positive")
    return float(v)


def from_dict(spec: ExperimentSpec, data: Any, fld: str = "hyperparameters") -> Hyperparameters:
    """Parse what :func:`to_dict` produced.

    Args:
        spec: The experiment spec; the kernel and dimension must match.
        data: The dict.
        fld: Field path used in errors.

    Raises:
        InvalidInput: Missing, non-finite or inconsistent values.
    """
    if not isinstance(data, dict):
        raise InvalidInput(fld, "must be an object")
    kernel = spec.kernel.value  # type: ignore[union-attr]
    if data.get("kernel", kernel) != kernel:
        raise InvalidInput(f"{fld}.kernel", f"does not match the spec's {kernel!r}")
    ls = data.get("lengthscales_normalized")
    if not isinstance(ls, list) or len(ls) != spec.dim:
        raise InvalidInput(f"{fld}.lengthscales_normalized", f"must be a list of {spec.dim}")
    lengthscale = np.array([_number({"v": v}, "v", f"{fld}.lengthscales_normalized",
                                    positive=True) for v in ls])
    fitted_n = data.get("fitted_n", 0)
    if isinstance(fitted_n, bool) or not isinstance(fitted_n, int) or fitted_n < 0:
        raise InvalidInput(f"{fld}.fitted_n", "must be a non-negative integer")
    noise_model = data.get("noise_model", "learned")
    if noise_model not in ("learned", "fixed"):
        raise InvalidInput(f"{fld}.noise_model", "must be 'learned' or 'fixed'")
    noise = _number(data, "noise_variance_standardized", fld)
    if noise < 0:
        raise InvalidInput(f"{fld}.noise_variance_standardized", "must be >= 0")
    return Hyperparameters(
        kernel=kernel, lengthscale=lengthscale, noise=noise,
        mean_constant=_number(data, "mean_constant_standardized", fld),
        y_mean=_number(data, "y_mean", fld), y_std=_number(data, "y_std", fld, positive=True),
        noise_model=noise_model,
        outputscale=float(data.get("outputscale_standardized", 1.0)), fitted_n=fitted_n)
