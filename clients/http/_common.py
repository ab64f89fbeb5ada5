"""Small pieces shared by the sync and async clients."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from clients.http import _calls
from clients.http.errors import (
    AuthenticationError,
    BeamsteerError,
    ConnectionFailed,
    NotFound,
    PermissionDenied,
    error_from_reply,
)
from clients.http.models import Experiment, Suggestion

log = logging.getLogger("beamsteer.client")

DEFAULT_URL = "http://127.0.0.1:8000"
# The first ask of an experiment may wait for a GP to be built: be generous by default.
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "beamsteer-client/0.1"
# Close codes with which the server refuses an events websocket: unknown experiment, no
# valid API key, a key without `read` for that experiment (4000 + the HTTP status).
WS_UNKNOWN_EXPERIMENT = 4404
WS_UNAUTHENTICATED = 4401
WS_FORBIDDEN = 4403

ExperimentRef = str | Experiment
SuggestionRef = str | Suggestion


def eid(experiment: ExperimentRef) -> str:
    """An experiment id from an id or an :class:`Experiment`."""
    return experiment.id if isinstance(experiment, Experiment) else str(experiment)


def sid(suggestion: SuggestionRef) -> str:
    """A suggestion id from an id or a :class:`Suggestion`."""
    return suggestion.id if isinstance(suggestion, Suggestion) else str(suggestion)


def headers(api_key: str | None) -> dict[str, str]:
    """Headers of every request (the key goes as a bearer token)."""
    h = {"user-agent": USER_AGENT, "accept": "application/json"}
    if api_key:
        h["authorization"] = f"Bearer {api_key}"
    return h


def request_id() -> str:
    """One id per call, kept across its retries, so the server logs show them together."""
    return uuid.uuid4().hex[:16]


def reply_error(r: httpx.Response) -> BeamsteerError:
    """The typed error of an error reply."""
    try:
        body: Any = r.json()
    except ValueError:
        body = None
    return error_from_reply(r.status_code, body, r.text[:500])


def connection_failed(call: _calls.Call[Any], exc: Exception, tries: int) -> ConnectionFailed:
    return ConnectionFailed(f"{call.method} {call.path}: no reply after {tries} "
                            f"tr{'y' if tries == 1 else 'ies'}: {type(exc).__name__}: {exc}")


def log_retry(call: _calls.Call[Any], why: str, delay: float, attempt: int) -> None:
    log.warning("%s %s: %s; retry %d in %.2f s", call.method, call.path, why, attempt + 1, delay)


def ws_url(base: str, experiment_id: str) -> str:
    """``http://host:8000`` -> ``ws://host:8000/api/v1/experiments/ID/events``."""
    url = httpx.URL(base)
    scheme = "wss" if url.scheme == "https" else "ws"
    path = url.path.rstrip("/") + f"{_calls.API}/{experiment_id}/events"
    return str(url.copy_with(scheme=scheme, path=path))


def measure_items(position: Mapping[str, float] | Sequence[Mapping[str, Any]],
                  values: Mapping[str, float] | None, *, noise: Mapping[str, float] | None,
                  suggestion: SuggestionRef | None, key: str | None,
                  metadata: Mapping[str, Any] | None,
                  image: Any = None) -> tuple[list[dict[str, Any]], bool]:
    """The wire items of a tell, and whether it was a single measurement."""
    if isinstance(position, Mapping):
        if values is None and image is None:
            raise TypeError("measure(experiment, position, values): values are missing")
        return [_calls.measurement_body(position, values, noise=noise, suggestion=suggestion,
                                        key=key, metadata=metadata, image=image)], True
    if (values is not None or noise or suggestion is not None or key or metadata
            or image is not None):
        raise TypeError("a batch carries everything inside its items; give only the list")
    items = list(position)
    if not items:
        raise TypeError("an empty batch")
    return _calls.batch_bodies(items), False


def closed_unknown(code: int | None, experiment_id: str) -> BeamsteerError | None:
    """The error for a websocket closed for good: the experiment does not exist, or the key
    does not open it (reconnecting would not help)."""
    if code == WS_UNAUTHENTICATED:
        return AuthenticationError("events: the server needs a valid API key", status=401)
    if code == WS_FORBIDDEN:
        return PermissionDenied(f"events: this key may not read {experiment_id!r}",
                                status=403)
    if code == WS_UNKNOWN_EXPERIMENT:
        return NotFound(f"unknown experiment {experiment_id!r}", status=404,
                        detail=[{"loc": ["path", "experiment_id"],
                                 "msg": f"unknown experiment {experiment_id!r}",
                                 "type": "not_found"}])
    return None


def fitted(exp: Experiment, min_fitted: int) -> bool:
    """Whether the steering output was fitted on ``min_fitted`` points, no refit running."""
    m = exp.model
    if m is None or m.refitting or exp.target not in m.outputs:
        return False
    return m.outputs[exp.target].fitted_n >= min_fitted
