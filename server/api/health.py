"""Health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server import __version__
from server.api.deps import ServiceDep
from server.api.errors import retry_after
from server.store.base import StoreUnavailable

router = APIRouter(tags=["service"])


@router.get("/health", responses={503: {"description": "The store does not answer"}})
async def health(service: ServiceDep) -> dict[str, object]:
    """Liveness and the store's reachability (503 with Retry-After when the store does not
    answer: ``{"status": "unavailable", "store": why}``)."""
    try:
        await service.list_experiments()
    except Exception as e:  # the store is down: say so, do not crash
        why = e.reason if isinstance(e, StoreUnavailable) else type(e).__name__
        wait = e.retry_after if isinstance(e, StoreUnavailable) else 1.0
        return JSONResponse({"status": "unavailable", "store": why}, status_code=503,  # type: ignore[return-value]
                            headers=retry_after(wait))
    return {"status": "ok", "version": __version__, "store": service.store.url.split(":", 1)[0],
            "engines": service.engine_count, "websockets": service.events.subscriber_count()}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    await request.app.state.inference.refresh_gauges()
    return Response(generate_latest(request.app.state.service.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
