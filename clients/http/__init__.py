"""The HTTP client of Beamsteer: :class:`Client` (blocking) and :class:`AsyncClient`."""

from clients.http.aio import AsyncClient, AsyncEventStream
from clients.http.errors import (
    AuthenticationError,
    BeamsteerError,
    ConflictError,
    ConnectionFailed,
    NotFound,
    PermissionDenied,
    ServerError,
    ValidationError,
)
from clients.http.models import (
    Event,
    Experiment,
    MapError,
    MapErrorPoint,
    Measurement,
    Measurements,
    Posterior,
    Suggestion,
)
from clients.http.retry import Retry
from clients.http.sync import Client, EventStream
from clients.http.timing import server_seconds

__all__ = [
    "AsyncClient", "AsyncEventStream", "AuthenticationError", "BeamsteerError", "Client",
    "ConflictError", "ConnectionFailed", "Event", "EventStream", "Experiment", "MapError",
    "MapErrorPoint", "Measurement", "Measurements", "NotFound", "PermissionDenied", "Posterior",
    "Retry", "ServerError", "Suggestion", "ValidationError", "server_seconds",
]
