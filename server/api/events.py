"""Live events over a websocket: every measurement, suggestion, expiry and refit."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from server.api.deps import WsServiceDep, names_nothing
from server.api.security import WsReadDep
from server.events import OVERFLOW
from server.steering.errors import UnknownExperiment

router = APIRouter(tags=["events"])


@router.websocket("/api/v1/experiments/{experiment_id}/events")
async def events(websocket: WebSocket, experiment_id: str, service: WsServiceDep,
                 _: WsReadDep) -> None:
    """Push JSON events ``{"type", "experiment_id", "seq", "time", "data"}``.

    The first message is ``{"type": "hello", ...}`` with the experiment's counts, so a client
    knows from where it follows along. Unknown experiment: closed with code 4404; no or a
    bad key: 4401; a key without ``read`` for this experiment: 4403 (after the accept).
    """
    try:
        if names_nothing(experiment_id):
            raise UnknownExperiment(experiment_id)
        rec = await service.get_experiment(experiment_id)
    except UnknownExperiment:
        # Accept first so the client sees the reason, not a bare 403 handshake failure.
        await websocket.accept()
        await websocket.close(code=4404, reason="unknown experiment")
        return
    sub = service.events.subscribe(experiment_id)
    service.metrics.websockets.inc()
    await websocket.accept()
    try:
        await websocket.send_json({"type": "hello", "experiment_id": experiment_id, "seq": 0,
                                   "time": rec.updated_at,
                                   "data": {"status": rec.status.value,
                                            "n_measurements": rec.n_measurements,
                                            "n_pending": rec.n_pending}})
        receiver = asyncio.create_task(_drain(websocket))
        while not receiver.done():
            getter = asyncio.create_task(sub.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            event = getter.result()
            await websocket.send_json(event)
            if event["type"] == OVERFLOW:
                await websocket.close(code=1013, reason="client too slow; reconnect")
                break
        receiver.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        service.events.unsubscribe(sub)
        service.metrics.websockets.dec()


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
