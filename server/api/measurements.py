"""Tells: post measurements (durable before the reply); read them as JSON pages or CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from server.api.deps import ServiceDep
from server.api.schemas import (
    ErrorPublic,
    MeasurementCreate,
    MeasurementsCreate,
    MeasurementsPage,
    MeasurementsStored,
)
from server.api.security import RESPONSES, ReadDep, TellDep
from server.api.uploads import image_from_request
from server.service import measurement_json
from server.store.base import MeasurementRecord

router = APIRouter(prefix="/api/v1/experiments/{experiment_id}/measurements",
                   tags=["measurements"],
                   responses={404: {"model": ErrorPublic}, 422: {"model": ErrorPublic},
                              **RESPONSES})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=MeasurementsStored,
             responses={409: {"model": ErrorPublic}, 413: {"model": ErrorPublic}})
async def measure(experiment_id: str, body: MeasurementsCreate, service: ServiceDep,
                  _: TellDep) -> MeasurementsStored:
    """Store a batch atomically (committed before this reply), then update the GP.

    A measurement whose ``key`` was seen before is not stored again: its original record
    comes back with ``created: false``.
    """
    items = [m.model_dump() for m in body.measurements]
    stored = await service.measure(experiment_id, items)
    return MeasurementsStored.model_validate({
        "measurements": [measurement_json(r) for r in stored.records],
        "created": stored.created})


@router.post("/image", status_code=status.HTTP_201_CREATED, response_model=MeasurementsStored,
             responses={409: {"model": ErrorPublic}, 413: {"model": ErrorPublic},
                        429: {"model": ErrorPublic}, 504: {"model": ErrorPublic}})
async def measure_image(experiment_id: str, request: Request,
                        service: ServiceDep, _: TellDep) -> MeasurementsStored:
    """One measurement with its detector image as a multipart upload: ``file`` (.npy, TIFF
    or EDF) and ``measurement``, the rest as JSON (``{"position": ..., "key": ...}``).

    The spec's reductions turn the image into values; stored before this reply.
    """
    image, fields = await image_from_request(request)
    try:
        m = MeasurementCreate.model_validate_json(str(fields.get("measurement") or "{}"))
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", "measurement", *err["loc"])} for err in e.errors()]
        ) from None
    stored = await service.measure(experiment_id, [{**m.model_dump(), "image": image}])
    return MeasurementsStored.model_validate({
        "measurements": [measurement_json(r) for r in stored.records],
        "created": stored.created})


@router.get("", response_model=MeasurementsPage,
            responses={200: {"content": {"text/csv": {}}}})
async def list_measurements(
    experiment_id: str, service: ServiceDep, _: ReadDep,
    after: int = Query(0, ge=0, le=2**62, description="Return measurements with seq > after"),
    limit: int = Query(1000, ge=1, le=100_000),
    format: Literal["json", "csv"] = "json",
) -> MeasurementsPage | Response:
    """Measurements in order of arrival: a page of JSON, or CSV (one column per parameter,
    output and noise)."""
    recs = await service.list_measurements(experiment_id, after_seq=after,
                                           limit=None if format == "csv" else limit)
    if format == "csv":
        spec = await service.spec(experiment_id)
        return Response(_csv(spec.parameter_names, spec.output_names, recs), media_type="text/csv",
                        headers={"content-disposition":
                                 f'attachment; filename="{experiment_id}.csv"'})
    next_after = recs[-1].seq if len(recs) == limit else None
    return MeasurementsPage.model_validate({
        "measurements": [measurement_json(r) for r in recs], "next_after": next_after})


def _csv(params: list[str], outputs: list[str], recs: list[MeasurementRecord]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["seq", *params, *outputs, *[f"{o}_noise" for o in outputs],
                "suggestion_id", "key", "created_at", "metadata"])
    for r in recs:
        w.writerow([r.seq, *[r.position[p] for p in params],
                    *[r.values.get(o, "") for o in outputs],
                    *[r.noise.get(o, "") for o in outputs],
                    r.suggestion_id or "", r.key or "", f"{r.created_at:.6f}",
                    _csv_metadata(r.metadata)])
    return buf.getvalue()


def _csv_metadata(meta: dict) -> str:
    """The metadata as JSON, less the image thumbnail (a preview for the dashboard, kB a row)."""
    rest = {k: v for k, v in (meta or {}).items() if k != "thumbnail"}
    return json.dumps(rest) if rest else ""
