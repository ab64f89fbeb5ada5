"""What beamlines run against Beamsteer: the Python client (sync and async), the
``beamsteer`` command line, a simulated beamline, and a Bluesky plan.

``import clients`` loads only the client (httpx, websockets, pydantic): no torch, no server.
"""

from clients.http import (
    AsyncClient,
    BeamsteerError,
    Client,
    ConflictError,
    ConnectionFailed,
    Event,
    Experiment,
    MapError,
    MapErrorPoint,
    Measurement,
    Measurements,
    NotFound,
    Posterior,
    Retry,
    ServerError,
    Suggestion,
    ValidationError,
)

__all__ = [
    "AsyncClient", "BeamsteerError", "Client", "ConflictError", "ConnectionFailed", "Event",
    "Experiment", "MapError", "MapErrorPoint", "Measurement", "Measurements", "NotFound",
    "Posterior", "Retry", "ServerError", "Suggestion", "ValidationError",
]
