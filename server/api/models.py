"""Inference for people: upload an image, get tags (JSON) or a super-resolved ``.npy``."""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from server.api.deps import InferenceDep
from server.api.schemas import ErrorPublic
from server.api.security import RESPONSES, require
from server.api.uploads import image_from_request
from server.security import Scope as KeyScope
from server.steering.errors import InvalidInput

router = APIRouter(prefix="/api/v1/models", tags=["models"],
                   dependencies=[Depends(require(KeyScope.read))],
                   responses={404: {"model": ErrorPublic}, 422: {"model": ErrorPublic},
                              **RESPONSES})


@router.get("")
async def list_models(inference: InferenceDep) -> dict[str, Any]:
    """Every model: task, inputs/outputs, tags, versions, and whether a warm worker serves it."""
    return {"models": list((await inference.models()).values())}


@router.get("/{name}")
async def get_model(name: str, inference: InferenceDep) -> dict[str, Any]:
    """One model's description."""
    return await inference.model(name)


@router.post("/{name}/infer",
             responses={200: {"content": {"application/json": {},
                                          "application/octet-stream": {}}},
                        429: {"model": ErrorPublic}, 503: {"model": ErrorPublic},
                        504: {"model": ErrorPublic}})
async def infer(name: str, request: Request, inference: InferenceDep,
                factor: int | None = Query(None, description="superres: binning factor"),
                format: Literal["npy", "json"] = Query("npy", description="image outputs"),
                timeout_s: float | None = Query(None, gt=0, le=600)) -> Any:
    """Body: raw ``.npy``/TIFF/EDF bytes, a multipart ``file``, or JSON ``{"image": [[..]]}``.

    Tagging models answer ``{"tags": {tag: probability}}``; image models answer ``.npy``
    bytes (``format=json`` for nested lists).
    """
    model = await inference.model(name)
    image, fields = await image_from_request(request)
    f = factor if factor is not None else fields.get("factor")
    try:
        params = {"factor": int(f)} if f is not None else {}
    except (TypeError, ValueError):
        raise InvalidInput("factor", "must be an integer") from None
    (res,) = await inference.infer(name, [image], params=params, timeout_s=timeout_s,
                                   input_name=model["inputs"][0]["name"])
    timing = {"queue_s": res.queue_s, "compute_s": res.compute_s, "batch_size": res.batch_size}
    if model.get("tags"):
        probs = res.outputs[model["outputs"][0]["name"]]
        return {"model": name, "version": model["versions"][0], "timing": timing,
                "tags": dict(zip(model["tags"], map(float, probs), strict=True))}
    out = res.outputs[model["outputs"][0]["name"]]
    if format == "json":
        return {"model": name, "version": model["versions"][0], "timing": timing,
                "shape": list(out.shape), model["outputs"][0]["name"]: out.tolist()}
    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    return Response(buf.getvalue(), media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{name}.npy"'})
