"""The posterior map: mean and std of every output at points or on a grid."""

from __future__ import annotations

import math

import numpy as np
from fastapi import APIRouter, Query

from server.api.deps import ServiceDep, SettingsDep
from server.api.schemas import ErrorPublic, PosteriorPublic, PosteriorRequest
from server.api.security import RESPONSES, ReadDep
from server.steering.errors import InvalidInput
from server.steering.grid import check_points, grid_points

router = APIRouter(prefix="/api/v1/experiments/{experiment_id}/posterior", tags=["posterior"],
                   responses={404: {"model": ErrorPublic}, 422: {"model": ErrorPublic},
                              **RESPONSES})


def _nulls(a: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else v for v in a.tolist()]


@router.post("", response_model=PosteriorPublic)
async def posterior(experiment_id: str, body: PosteriorRequest, service: ServiceDep,
                    settings: SettingsDep, _: ReadDep) -> PosteriorPublic:
    """Posterior mean and std (latent, output units) at ``points`` or on a ``grid``."""
    spec = await service.spec(experiment_id)
    axes = None
    if (body.points is None) == (body.grid is None):
        raise InvalidInput("points", "give exactly one of points or grid")
    if body.points is not None:
        X = check_points(spec, body.points, settings.max_posterior_points)
    else:
        X, axes = grid_points(spec, body.grid or {}, body.at, settings.max_posterior_points)
    post = await service.posterior(experiment_id, X)
    return PosteriorPublic(
        parameters=spec.parameter_names, points=X.tolist(), axes=axes,
        outputs={k: {"mean": _nulls(post.mean[k]), "std": _nulls(post.std[k])}
                 for k in spec.output_names})


@router.get("", response_model=PosteriorPublic)
async def posterior_grid(
    experiment_id: str, service: ServiceDep, settings: SettingsDep, principal: ReadDep,
    n: int = Query(40, ge=2, le=400, description="Grid points along the first two axes"),
) -> PosteriorPublic:
    """The posterior on an ``n x n`` grid over the first two parameters (others at mid-range)."""
    spec = await service.spec(experiment_id)
    body = PosteriorRequest(grid={p: n for p in spec.parameter_names[:2]})
    return await posterior(experiment_id, body, service, settings, principal)
