"""Open Inference Protocol (KServe v2 / Triton HTTP), so Triton and KServe clients work.

Errors on these routes have the protocol's shape, ``{"error": "..."}`` (api/errors.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from server import __version__
from server.api.deps import InferenceDep, ServiceDep
from server.api.security import RESPONSES, require
from server.api.v2_tensors import ProtocolError, encode_response, parse_request
from server.security import Scope as KeyScope

router = APIRouter(prefix="/v2", tags=["inference (Open Inference Protocol v2)"])
# Model routes need the `read` scope when the server has keys; health and server metadata
# stay open for load balancers, as on Triton.
_READ = [Depends(require(KeyScope.read))]
_MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model"}, 503: {"description": "No warm worker serves it"},
    **RESPONSES}
_MODEL: dict[str, Any] = {"dependencies": _READ, "responses": _MODEL_RESPONSES}
_RESERVED = {"binary_data_output", "timeout"}  # request parameters that are not the model's


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return {"name": "beamsteer", "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository"]}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """200 while the process answers."""
    return {"live": True}


@router.get("/health/ready")
async def ready(inference: InferenceDep, service: ServiceDep) -> JSONResponse:
    """200 when the store answers and every known model has a warm worker, else 503."""
    models = await inference.models()
    try:
        await service.list_experiments()
        store_ok = True
    except Exception:
        store_ok = False
    ok = store_ok and bool(models) and all(m["ready"] for m in models.values())
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}", **_MODEL)
@router.get("/models/{name}/versions/{version}", **_MODEL)
async def model_metadata(name: str, inference: InferenceDep,
                         version: str | None = None) -> dict[str, Any]:
    """Inputs, outputs, shapes (-1 = any; the first axis is the batch), datatypes, versions."""
    m = await inference.model(name)
    return {"name": name, "versions": m["versions"], "platform": "pytorch",
            "inputs": [_tensor_meta(t) for t in m["inputs"]],
            "outputs": [_tensor_meta(t) for t in m["outputs"]],
            "parameters": {"task": m["task"], "tags": list(m.get("tags", [])),
                           **m.get("parameters", {})}}


@router.get("/models/{name}/ready", **_MODEL)
@router.get("/models/{name}/versions/{version}/ready", **_MODEL)
async def model_ready(name: str, inference: InferenceDep,
                      version: str | None = None) -> JSONResponse:
    """200 ``{"ready": true}`` when a warm worker serves the model, else 503."""
    m = await inference.model(name)
    return JSONResponse({"name": name, "ready": m["ready"]},
                        status_code=200 if m["ready"] else 503)


@router.post("/models/{name}/infer", **_MODEL)
@router.post("/models/{name}/versions/{version}/infer", **_MODEL)
async def infer(name: str, request: Request, inference: InferenceDep,
                version: str | None = None) -> Response:
    """One H x W image, or a batch N x H x W (each image a job; the queue micro-batches)."""
    m = await inference.model(name)
    length = request.headers.get("inference-header-content-length")
    req = parse_request(await request.body(), int(length) if length and length.isdigit()
                        else None)
    want = m["inputs"][0]["name"]
    if set(req.inputs) != {want}:
        raise ProtocolError(f"model {name!r} takes one input named {want!r}, "
                            f"got {sorted(req.inputs)}")
    x = req.inputs[want]
    if x.ndim not in (2, 3) or 0 in x.shape:
        raise ProtocolError(f"input {want!r}: shape must be [H, W] or [N, H, W], "
                            f"got {list(x.shape)}")
    params = {k: v for k, v in req.parameters.items() if k not in _RESERVED}
    timeout = req.parameters.get("timeout")  # Triton's unit: microseconds
    results = await inference.infer(name, list(x) if x.ndim == 3 else [x], params=params,
                                    input_name=want, version=version or m["versions"][0],
                                    timeout_s=float(timeout) / 1e6 if timeout else None)
    outputs = {k: np.stack([r.outputs[k] for r in results]) for k in results[0].outputs}
    if x.ndim == 2:
        outputs = {k: v[0] for k, v in outputs.items()}
    body, header_length = encode_response(name, version or m["versions"][0], req.id, outputs,
                                          req.binary_outputs, req.all_binary)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


def _tensor_meta(t: dict[str, Any]) -> dict[str, Any]:
    """A registry TensorSpec as protocol metadata: a leading batch axis, -1 for free sizes."""
    shape = [-1] + [s if isinstance(s, int) else -1 for s in t["shape"]]
    return {"name": t["name"], "datatype": "FP32" if t["dtype"] == "float32" else
            t["dtype"].upper(), "shape": shape}
