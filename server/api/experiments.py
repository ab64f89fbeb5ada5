"""Experiments: create, list, read, pause/resume/close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from fastapi import APIRouter, status

from server.api.deps import ServiceDep
from server.api.schemas import (
    ErrorPublic,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    MapErrorPointPublic,
    ModelPublic,
    StatusUpdate,
)
from server.api.security import RESPONSES, AdminDep, CreateDep, ReadDep
from server.steering.types import ModelStatus
from server.store.base import ExperimentRecord, MapErrorPoint

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"],
                   responses={404: {"model": ErrorPublic}, 422: {"model": ErrorPublic},
                              **RESPONSES})


def experiment_public(rec: ExperimentRecord, model: ModelStatus | None = None,
                      history: Sequence[MapErrorPoint] = ()) -> ExperimentPublic:
    """Shape a stored experiment (and optionally its engine's state, with the map error
    history) for the wire."""
    return ExperimentPublic(
        id=rec.id, spec=rec.spec, status=rec.status, created_at=rec.created_at,
        updated_at=rec.updated_at, n_measurements=rec.n_measurements, n_pending=rec.n_pending,
        model=None if model is None else ModelPublic.model_validate(asdict(model)),
        map_error_history=[MapErrorPointPublic.model_validate(asdict(p)) for p in history])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ExperimentPublic)
async def create_experiment(body: ExperimentCreate, service: ServiceDep,
                            _: CreateDep) -> ExperimentPublic:
    """Create an experiment; the reply holds its id and the spec with defaults filled in.

    Needs ``admin`` from a key not restricted to some experiments."""
    rec = await service.create_experiment(body.model_dump())
    return experiment_public(rec)


@router.get("", response_model=ExperimentsPublic)
async def list_experiments(service: ServiceDep, principal: ReadDep) -> ExperimentsPublic:
    """All experiments (those the key may see), newest first."""
    return ExperimentsPublic(experiments=[
        experiment_public(r) for r in await service.list_experiments() if principal.sees(r.id)])


@router.get("/{experiment_id}", response_model=ExperimentPublic)
async def get_experiment(experiment_id: str, service: ServiceDep,
                         _: ReadDep) -> ExperimentPublic:
    """Spec, counts, and the model: hyperparameters, last fit, fit failures, the map error
    and its history."""
    rec = await service.get_experiment(experiment_id)
    model = await service.model_status(experiment_id)
    history = await service.map_error_history(experiment_id)
    return experiment_public(rec, model, history)


@router.patch("/{experiment_id}", response_model=ExperimentPublic,
              responses={409: {"model": ErrorPublic}})
async def update_status(experiment_id: str, body: StatusUpdate, service: ServiceDep,
                        _: AdminDep) -> ExperimentPublic:
    """Pause (no new suggestions), resume, or close (read-only; pending ones abandoned)."""
    return experiment_public(await service.set_status(experiment_id, body.status))
