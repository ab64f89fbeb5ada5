"""Typed errors of the client, built from the server's one error shape.

Every error reply is ``{"detail": [{"loc": [...], "msg": ..., "type": ...}] | str,
"request_id": ...}``; the first item of ``detail`` becomes ``field``/``reason``/``loc`` so a
caller can say which field was refused and why without parsing JSON.
"""

from __future__ import annotations

from typing import Any

# The first element of a FastAPI ``loc`` says where the field was; it is not part of it.
_LOC_ROOTS = ("body", "path", "query", "header")


def field_path(loc: list[str | int]) -> str:
    """``["body", "measurements", 2, "position", "x"]`` -> ``measurements[2].position.x``."""
    parts = list(loc[1:] if loc and loc[0] in _LOC_ROOTS else loc)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


class BeamsteerError(Exception):
    """Base of every error this client raises on purpose.

    Attributes:
        status: HTTP status, or None when no reply came.
        detail: The server's ``detail`` (a list of ``{"loc", "msg", "type"}`` or a string).
        request_id: The server's request id, to find the request in its logs.
        loc: ``loc`` of the first problem (``[]`` when the server gave none).
        field: That ``loc`` as a path, e.g. ``measurements[2].position.x`` (``""`` if none).
        reason: The first problem's message (or the whole string detail).
    """

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None,
                 request_id: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.request_id = request_id
        self.loc: list[str | int] = []
        self.reason = message
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            self.loc = list(detail[0].get("loc") or [])
            self.reason = str(detail[0].get("msg", message))
        elif isinstance(detail, str):
            self.reason = detail
        self.field = field_path(self.loc)
        super().__init__(message)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every problem the server listed (``[]`` for a string detail)."""
        return list(self.detail) if isinstance(self.detail, list) else []


class NotFound(BeamsteerError):
    """404: no such experiment, suggestion, or route."""


class ValidationError(BeamsteerError):
    """422/400/413: the request was refused; ``field``, ``reason`` and ``loc`` say why."""


class AuthenticationError(BeamsteerError):
    """401: the server has API keys, and this client sent none, or one that is unknown,
    expired or revoked (``Client(api_key=...)``)."""


class PermissionDenied(BeamsteerError):
    """403: the key is valid but lacks the scope, or is restricted to other experiments."""


class ConflictError(BeamsteerError):
    """409: the request contradicts the stored state (experiment paused or closed, an
    idempotency key reused for different content)."""


class ServerError(BeamsteerError):
    """5xx after the retries ran out (or at once for a call that cannot be retried)."""


class ConnectionFailed(BeamsteerError):
    """No reply: the server could not be reached, or the connection broke, after retries."""


def error_from_reply(status: int, body: Any, text: str = "") -> BeamsteerError:
    """Build the typed error of an error reply (``body`` is its parsed JSON, or None)."""
    detail: Any = text or None
    rid = None
    if isinstance(body, dict):
        detail, rid = body.get("detail", detail), body.get("request_id")
    cls: type[BeamsteerError]
    if status == 404:
        cls = NotFound
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDenied
    elif status == 409:
        cls = ConflictError
    elif status in (400, 413, 422):
        cls = ValidationError
    elif status >= 500:
        cls = ServerError
    else:
        cls = BeamsteerError
    first = ""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        path = field_path(list(detail[0].get("loc") or []))
        first = f"{path}: {detail[0].get('msg', '')}" if path else str(detail[0].get("msg", ""))
    elif detail:
        first = str(detail)
    return cls(f"HTTP {status}: {first}" if first else f"HTTP {status}", status=status,
               detail=detail, request_id=rid)
