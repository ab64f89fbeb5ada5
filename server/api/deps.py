"""Dependencies that routers declare with ``Annotated`` aliases.

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hop (and, on a loaded 2-core machine, a wait for the scheduler)
per dependency per request, only to read an attribute.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.requests import HTTPConnection

from server.inference import InferenceService
from server.service import SteeringService
from server.settings import Settings
from server.steering.errors import UnknownExperiment, UnknownSuggestion


def names_nothing(*ids: str) -> bool:
    """Whether an id holds a NUL character: it names nothing, and PostgreSQL refuses such
    text in a query outright (SQLite finds no row)."""
    return any("\x00" in i for i in ids)


async def ids_in_path(conn: HTTPConnection) -> None:
    """Every HTTP route's: an id with a NUL character names nothing (404). A websocket
    route says so its own way (accept, then close with 4404)."""
    if conn.scope["type"] != "http":
        return
    params = conn.path_params
    eid, sid = params.get("experiment_id", ""), params.get("suggestion_id", "")
    if names_nothing(eid):
        raise UnknownExperiment(eid)
    if names_nothing(sid):
        raise UnknownSuggestion(eid, sid)


async def get_service(request: Request) -> SteeringService:
    """The app's steering service (built in the lifespan)."""
    service: SteeringService = request.app.state.service
    return service


async def get_ws_service(websocket: WebSocket) -> SteeringService:
    """The steering service, for websocket routes."""
    service: SteeringService = websocket.app.state.service
    return service


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_inference(request: Request) -> InferenceService:
    """The app's inference service (built in the lifespan)."""
    inference: InferenceService = request.app.state.inference
    return inference


InferenceDep = Annotated[InferenceService, Depends(get_inference)]
ServiceDep = Annotated[SteeringService, Depends(get_service)]
WsServiceDep = Annotated[SteeringService, Depends(get_ws_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
