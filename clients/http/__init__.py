"""The HTTP client of Beamsteer: :class:`Client` (blocking) and :class:`AsyncClient`."""

from clients.http.aio import AsyncClient, AsyncEventStream
from clients.http.errors import (
    BeamsteerError,
    ConflictError,
    ConnectionFailed,
    NotFound,
    ServerError,
    ValidationError,
)
from clients.http.models import (
    Event,
    Experiment,
    Measurement,
    Measurements,
    Posterior,
    Suggestion,
)
from clients.http.retry import Retry
from clients.http.sync import Client, EventStream

__all__ = [
    "AsyncClient", "AsyncEventStream", "BeamsteerError", "Client", "ConflictError",
    "ConnectionFailed", "Event", "EventStream", "Experiment", "Measurement", "Measurements",
    "NotFound", "Posterior", "Retry", "ServerError", "Suggestion", "ValidationError",
]
