"""The one place where errors become HTTP replies.

Every reply has the shape ``{"detail": [{"loc": [...], "msg": ..., "type": ...}] | str,
"request_id": ...}``: the same ``loc`` convention as FastAPI's own 422s, so a client
reads a field path the same way whoever found the problem.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api.security import WS_FORBIDDEN, WS_UNAUTHENTICATED, www_authenticate
from server.api.v2_tensors import ProtocolError
from server.images import ImageError
from server.inference import ModelNotReady, UnknownModel
from server.queue.base import DeadlineExceeded, JobFailed, QueueFull, QueueUnavailable
from server.security import Forbidden, Unauthenticated
from server.steering.errors import (
    Busy,
    Conflict,
    InvalidInput,
    SteeringError,
    UnknownExperiment,
    UnknownSuggestion,
)
from server.store.base import StoreUnavailable

log = logging.getLogger("beamsteer.api")


def _loc(field: str) -> list[str | int]:
    """``measurements[2].position.x`` -> ``["body", "measurements", 2, "position", "x"]``."""
    out: list[str | int] = ["body"]
    for part in field.replace("]", "").split("."):
        for i, piece in enumerate(part.split("[")):
            if piece:
                out.append(int(piece) if i > 0 and piece.isdigit() else piece)
    return out


def _reply(request: Request, status: int, detail: object,
           headers: dict[str, str] | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    if request.url.path.startswith("/v2/"):  # Open Inference Protocol: {"error": "..."}
        return JSONResponse({"error": _flat(detail), "request_id": rid}, status_code=status,
                            headers=headers)
    return JSONResponse({"detail": jsonable_encoder(detail), "request_id": rid},
                        status_code=status, headers=headers)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code``: a browser sees the code only after an accept."""
    await websocket.accept()
    await websocket.close(code=code, reason=reason[:120])


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def unavailable_body(msg: str, kind: str) -> list[dict[str, object]]:
    """The ``detail`` of a 503: which service is unavailable (``kind``) and why."""
    return [{"loc": [], "msg": msg, "type": kind}]


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header of whole seconds, at least 1."""
    return {"Retry-After": str(max(1, round(seconds)))}


def _unavailable(request: Request, msg: str, kind: str, seconds: float) -> JSONResponse:
    return _reply(request, 503, unavailable_body(msg, kind), headers=retry_after(seconds))


def _flat(detail: object) -> str:
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                         if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


def _install_inference_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
        """404: no such model."""
        return _reply(request, 404, [{"loc": ["path", "name"], "msg": str(exc),
                                      "type": "not_found"}])

    @app.exception_handler(ModelNotReady)
    async def not_ready(request: Request, exc: ModelNotReady) -> JSONResponse:
        """503 with Retry-After: the model exists, no warm worker serves it yet."""
        return _reply(request, 503, str(exc),
                      headers={"Retry-After": str(max(1, round(exc.retry_after)))})

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        """429 with Retry-After: the model's queue is at its bound."""
        return _reply(request, 429, str(exc),
                      headers={"Retry-After": str(max(1, round(exc.retry_after)))})

    @app.exception_handler(DeadlineExceeded)
    async def deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        """504: no result before the request's deadline (dropped if not yet computed)."""
        return _reply(request, 504, str(exc))

    @app.exception_handler(JobFailed)
    async def job_failed(request: Request, exc: JobFailed) -> JSONResponse:
        """422 when the model refused the input; 502 when the job was dead-lettered
        (workers died delivering it, or it could not be decoded)."""
        if exc.bad_input:
            return _reply(request, 422, [{"loc": ["body"], "msg": exc.result.error,
                                          "type": "model_refused_input"}])
        return _reply(request, 502, str(exc))

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, exc: ProtocolError) -> JSONResponse:
        """400: an Open Inference Protocol request that does not follow the protocol."""
        return _reply(request, 400, str(exc))

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, exc: ImageError) -> JSONResponse:
        """422: the upload is not an image this service reads."""
        return _reply(request, 422, [{"loc": ["body"], "msg": str(exc), "type": "image"}])


def _install_unavailable_handlers(app: FastAPI) -> None:
    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        """503 with Retry-After: another process held the experiment's ask lock too long."""
        return _unavailable(request, exc.reason, "busy", exc.retry_after)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        """503 with Retry-After: the database does not answer (down, restarting, locked
        past the busy timeout) and nothing was stored, so any request may be sent again.
        502 with Retry-After when the connection broke while COMMIT was in flight: the
        write may have been stored, so only an idempotent request should be sent again
        (a tell with the same keys is stored once; an ask might leave a second batch of
        pending suggestions, as a lost reply would)."""
        log.warning("store unavailable", extra={"error": str(exc),
                                                "request_id": _request_id(request)})
        status = 502 if exc.during_commit else 503
        return _reply(request, status, unavailable_body(str(exc), "store_unavailable"),
                      headers=retry_after(exc.retry_after))

    @app.exception_handler(QueueUnavailable)
    async def queue_unavailable(request: Request, exc: QueueUnavailable) -> JSONResponse:
        """503 with Retry-After: the queue (Redis) does not answer, or lost the job when
        it restarted; an inference request is safe to repeat."""
        log.warning("queue unavailable", extra={"error": str(exc),
                                                "request_id": _request_id(request)})
        return _unavailable(request, str(exc), "queue_unavailable", exc.retry_after)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers below on an app."""
    _install_inference_handlers(app)
    _install_unavailable_handlers(app)

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        """422: the core refused a field (spec, measurement, parameter of an ask)."""
        return _reply(request, 422, [{"loc": _loc(exc.field), "msg": exc.reason,
                                      "type": "value_error"}])

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(conn: Request | WebSocket,
                              exc: Unauthenticated) -> JSONResponse | None:
        """401 with ``WWW-Authenticate: Bearer``: no key, or an unknown, expired or revoked
        one. A websocket is accepted, then closed with 4401."""
        if isinstance(conn, WebSocket):
            await _close(conn, WS_UNAUTHENTICATED, exc.reason)
            return None
        return _reply(conn, 401, [{"loc": ["header", "authorization"], "msg": exc.reason,
                                   "type": "unauthenticated"}], headers=www_authenticate(exc))

    @app.exception_handler(Forbidden)
    async def forbidden(conn: Request | WebSocket, exc: Forbidden) -> JSONResponse | None:
        """403: a valid key without the scope, or restricted to other experiments. A
        websocket is accepted, then closed with 4403."""
        if isinstance(conn, WebSocket):
            await _close(conn, WS_FORBIDDEN, exc.reason)
            return None
        return _reply(conn, 403, [{"loc": ["header", "authorization"], "msg": exc.reason,
                                   "type": "forbidden"}])

    @app.exception_handler(UnknownExperiment)
    async def unknown_experiment(request: Request, exc: UnknownExperiment) -> JSONResponse:
        """404: no such experiment."""
        return _reply(request, 404, [{"loc": ["path", "experiment_id"], "msg": str(exc),
                                      "type": "not_found"}])

    @app.exception_handler(UnknownSuggestion)
    async def unknown_suggestion(request: Request, exc: UnknownSuggestion) -> JSONResponse:
        """404: no such suggestion in this experiment (a body naming one gets a 422 from
        the service instead)."""
        return _reply(request, 404, [{"loc": ["path", "suggestion_id"], "msg": str(exc),
                                      "type": "not_found"}])

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        """409: the request contradicts the stored state (e.g. experiment closed)."""
        loc = _loc(exc.field) if exc.in_body else _loc(exc.field)[1:]  # (state: no "body")
        return _reply(request, 409, [{"loc": loc, "msg": exc.reason, "type": "conflict"}])

    @app.exception_handler(SteeringError)
    async def steering_error(request: Request, exc: SteeringError) -> JSONResponse:
        """500: a core error without a more specific mapping (a bug: logged)."""
        log.error("unmapped steering error", exc_info=exc)
        return _reply(request, 500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422: the body or query did not parse into the documented schema."""
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "value_error")} for e in exc.errors()]
        return _reply(request, 422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Whatever status the framework chose (404 route, 405 method, 413 ...)."""
        return _reply(request, exc.status_code, exc.detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """500, as :func:`internal_error`. Starlette calls this from outside every middleware,
        so it sees only what ``RequestContext`` did not answer itself: an error after the
        reply started (which then only the server can end) or in that middleware."""
        return internal_error(request, exc)


def internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """500 with the request id, for an error nothing mapped (a bug); the traceback goes to
    the log, never to the client."""
    log.error("unhandled error", exc_info=exc, extra={"request_id": _request_id(request)})
    return _reply(request, 500, "internal error")
