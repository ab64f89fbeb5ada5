"""Health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server import __version__
from server.api.deps import ServiceDep

router = APIRouter(tags=["service"])


@router.get("/health")
async def health(service: ServiceDep) -> dict[str, object]:
    """Liveness and the store's reachability (503 when the store does not answer)."""
    try:
        await service.list_experiments()
    except Exception as e:  # the store is down: say so, do not crash
        return Response(f'{{"status": "unavailable", "store": "{type(e).__name__}"}}',
                        status_code=503, media_type="application/json")  # type: ignore[return-value]
    return {"status": "ok", "version": __version__, "store": service.store.url.split(":", 1)[0],
            "engines": service.engine_count, "websockets": service.events.subscriber_count()}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    await request.app.state.inference.refresh_gauges()
    return Response(generate_latest(request.app.state.service.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
