"""The app factory: ``create_app(settings) -> FastAPI``; nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from server import __version__
from server.api import (
    events,
    experiments,
    health,
    inference_v2,
    measurements,
    models,
    posterior,
    suggestions,
)
from server.api.deps import ids_in_path
from server.api.errors import install_error_handlers
from server.api.middleware import BodyLimit, RequestContext
from server.api.schemas import ErrorPublic
from server.api.security import Gate, Guard
from server.dashboard import mount_dashboard
from server.event_relay import RedisEventRelay
from server.events import EventBus
from server.inference import InferenceService
from server.metrics import Metrics
from server.queue.base import open_queue
from server.reductions import ImageReducer
from server.service import SteeringService
from server.settings import Settings, get_settings
from server.store.base import Store, StoreUnavailable, open_store

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # an older FastAPI, which builds included routes eagerly
    iter_route_contexts = None  # type: ignore[assignment]

log = logging.getLogger("beamsteer.app")


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: Configuration; default from the environment (``BEAMSTEER_*``).
        store: A store to use instead of opening ``settings.store_url`` (the app then
            leaves closing it to the caller).
    """
    settings = settings or get_settings()
    metrics = Metrics()
    gate = Gate(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import torch  # heavy: imported when the service starts, not when the module loads

        torch.set_num_threads(settings.torch_threads)
        own_store = store is None
        the_store = store or open_store(settings.store_url,
                                        timeout_s=settings.store_timeout_s or None)
        auth = gate.start(the_store.keys)
        inference = InferenceService(_queue(settings), settings, metrics)
        await inference.start()
        app.state.inference = inference
        bus = EventBus()
        service = SteeringService(the_store, settings, events=bus, metrics=metrics,
                                  reducer=ImageReducer(inference))
        await service.start()
        relay = None
        if settings.event_relay_name == "redis":
            if not settings.redis_url:
                raise ValueError("event_relay=redis needs redis_url")
            relay = RedisEventRelay(settings.redis_url, settings.redis_prefix)
            await relay.start(bus)
        app.state.service = service
        stop = asyncio.Event()
        expiry = asyncio.create_task(
            _expire_forever(service, settings.expiry_interval_s, stop))
        log.info("beamsteer ready", extra={"store": the_store.url.split(":", 1)[0],
                                          "version": __version__,
                                          "keys_required": await asyncio.to_thread(auth.enabled)})
        try:
            yield
        finally:
            # Let a running pass finish rather than cancel it: a cancelled await leaves its
            # store call running in a thread, holding a connection past the store's close.
            stop.set()
            await expiry
            if relay is not None:
                await relay.stop()
            await service.stop()
            await inference.stop()
            if own_store:
                the_store.close()

    app = FastAPI(
        title="Beamsteer", version=__version__, lifespan=lifespan,
        dependencies=[Depends(ids_in_path)],
        responses={400: {"model": ErrorPublic, "description": "Body is not parseable"},
                   413: {"model": ErrorPublic, "description": "Body too large"},
                   500: {"model": ErrorPublic, "description": "Bug (logged with request id)"}},
        description="Autonomous experiments at scattering beamlines: ask where to measure "
                    "next, tell what was measured, follow the GP posterior live.")
    app.state.settings = settings
    app.state.gate = gate
    install_error_handlers(app)
    for module in (experiments, suggestions, measurements, posterior, events, health, models,
                   inference_v2):
        app.include_router(module.router)
    mount_dashboard(app)  # after the API routes, which keep winning
    _build_routes_now(app)
    # Outermost last: request id and log, then who is calling (before any body is read),
    # then the body limit.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Guard, gate=gate)
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def _build_routes_now(app: FastAPI) -> None:
    """Build every included route's per-app state now, in the caller's thread.

    FastAPI 0.165 builds an ``include_router``'d router's routes for this app (their
    dependants and request/response fields, i.e. pydantic TypeAdapters) on the first request
    that reaches them (``fastapi/routing.py``, ``_IncludedRouter.effective_candidates``).
    It builds each field inside ``warnings.catch_warnings()`` to silence pydantic's
    UnsupportedFieldAttributeWarning (``fastapi/_compat/v2.py``, ``ModelField``), and that
    swaps the process-wide warning filters: not thread-safe. A GP fit in a pool thread does
    the same around each optimizer run (botorch ``fit_gpytorch_mll``); when it restores its
    filters in the middle of FastAPI's block, the warning escapes, and under ``-W error``
    (the tests' ``filterwarnings``) the first request fails with a 500. Here this app's fits
    have not started (another app's, in the same process, could still overlap).
    """
    if iter_route_contexts is None:
        return
    for _ in iter_route_contexts(app.router.routes):
        pass


def _queue(settings: Settings):  # -> JobQueue
    """The inference queue the settings name (Redis options are ignored by "memory")."""
    return open_queue(settings.queue_name, url=settings.redis_url, prefix=settings.redis_prefix,
                      max_depth=settings.queue_max_depth, claim_idle_ms=settings.claim_idle_ms,
                      max_deliveries=settings.max_deliveries)


async def _expire_forever(service: SteeringService, interval: float,
                          stop: asyncio.Event) -> None:
    """Expire overdue pending suggestions every ``interval`` seconds until ``stop`` is set;
    survive store errors."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            await service.expire_due()
        except StoreUnavailable as exc:  # expected while the database restarts
            log.warning("expiry pass skipped", extra={"error": str(exc)})
        except Exception:
            log.exception("expiry pass failed")
