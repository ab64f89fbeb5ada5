"""ASGI middleware: request ids, access logs and metrics, and the body-size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import internal_error
from server.metrics import Metrics

log = logging.getLogger("beamsteer.access")


class RequestContext:
    """Give each HTTP request an id (``X-Request-ID``, or a new one), log it, count it, and
    say how long the server took until its reply started (``Server-Timing: app;dur=ms``,
    which a browser's developer tools show, and which separates the server's time from the
    network's and the client's). The 500 of an unhandled error is sent from here too, so
    that it carries both headers; :func:`~server.api.errors.internal_error` logs the error
    and makes the reply."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                ms = 1000 * (time.perf_counter() - t0)
                message["headers"] = list(message["headers"]) + [
                    (b"x-request-id", rid.encode("latin-1")),
                    (b"server-timing", f"app;dur={ms:.3f}".encode("latin-1"))]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started:  # mid-reply: only the server can end it (it drops the connection)
                    raise
                # Answer here rather than let Starlette's ServerErrorMiddleware, which sits
                # outside every middleware, send the 500 without these headers.
                await internal_error(Request(scope), exc)(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(scope["method"], path, f"{status // 100}xx").inc()
            log.info("request", extra={
                "request_id": rid, "method": scope["method"], "path": scope["path"],
                "status": status, "ms": round(1000 * (time.perf_counter() - t0), 2)})


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        rid = scope.get("state", {}).get("request_id")
        body: dict[str, Any] = {"detail": [{"loc": ["body"], "type": "too_large",
                                            "msg": f"body larger than {self.max_bytes} bytes"}],
                                "request_id": rid}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


class _TooLarge(Exception):
    pass
