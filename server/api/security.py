"""API keys on the wire: who is calling (middleware), and what a route needs (dependencies).

:class:`Guard` runs before anything reads a body. It finds the key (``Authorization:
Bearer bsk_...``; on a websocket also ``?api_key=bsk_...``, since browsers cannot set
headers there), resolves it to a :class:`Principal` (or the reason it cannot), spends one
token of the caller's rate budget, refuses ``/api/`` requests without a valid key at once
(401), and caps the number of open websockets. Routes then state the scope they need with
the aliases below; the domain check is :meth:`Principal.require`, and ``errors.py`` turns
its refusals into 401/403 replies or websocket close codes 4401/4403.

``/health``, ``/metrics``, the dashboard's static files and the OpenAPI schema stay open:
a load balancer, a container healthcheck and Prometheus need no key, and they show no
experiment data (``/metrics`` has counters by route template, never ids or values).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.schemas import ErrorPublic
from server.security import Principal, Unauthenticated
from server.security import Scope as KeyScope
from server.security.auth import Authenticator
from server.security.keys import KeyStore
from server.security.limits import RateLimiter, retry_after_header
from server.settings import Settings
from server.store.base import StoreUnavailable

log = logging.getLogger("beamsteer.security")

# Websocket close codes: 4000 + the HTTP status they stand for; 1013 is "try again later".
WS_UNAUTHENTICATED = 4401
WS_FORBIDDEN = 4403
WS_TRY_LATER = 1013
WS_UNAVAILABLE = 1011


class Gate:
    """The app's security state: the authenticator (built when the store opens), the
    rate limiter and the count of open websockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.max_websockets = settings.max_websockets
        self.open_websockets = 0
        self.authenticator: Authenticator | None = None

    def start(self, keys: KeyStore) -> Authenticator:
        """Resolve keys from ``keys``; a server exposed beyond loopback without
        ``insecure`` refuses anonymous callers even while no key exists (fail closed)."""
        s = self.settings
        self.authenticator = Authenticator(keys, require_keys=s.exposed and not s.insecure,
                                           ttl=s.auth_cache_s)
        return self.authenticator

    async def identify(self, secret: str | None) -> Principal:
        """The caller's principal (from the cache, else from the store in a thread).

        Raises:
            Unauthenticated: No valid key while keys are required.
        """
        auth = self.authenticator
        if auth is None:
            raise RuntimeError("the store is not open yet")
        principal = auth.cached(secret)
        if principal is None:
            principal = await asyncio.to_thread(auth.authenticate, secret)
        return principal


def presented_key(scope: Scope) -> str | None:
    """The key of a request: the bearer token, or (websockets only) ``?api_key=``."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
    if scope["type"] == "websocket":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
        if values and values[0]:
            return values[0]
    return None


def _caller(scope: Scope, outcome: Principal | Unauthenticated) -> str:
    if isinstance(outcome, Principal) and outcome.key_id is not None:
        return f"key:{outcome.key_id}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class Guard:
    """ASGI middleware: identify the caller, rate-limit it, gate ``/api/``, cap websockets."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            outcome: Principal | Unauthenticated = await self.gate.identify(presented_key(scope))
        except Unauthenticated as exc:
            outcome = exc
        except StoreUnavailable as exc:  # refuse, do not guess; come back when it answers
            log.warning("API key lookup failed", extra={"error": str(exc)})
            await _refuse(scope, receive, send, 503, "store_unavailable",
                          f"cannot check API keys: {exc}", WS_UNAVAILABLE,
                          headers={"retry-after": str(max(1, round(exc.retry_after)))})
            return
        except Exception:  # a bug: refuse, do not guess
            log.exception("API key lookup failed")
            await _refuse(scope, receive, send, 503, "unavailable",
                          "cannot check API keys: the store does not answer", WS_UNAVAILABLE)
            return
        scope.setdefault("state", {})["auth"] = outcome

        wait = self.gate.limiter.take(_caller(scope, outcome))
        if wait > 0:
            await _refuse(scope, receive, send, 429, "rate_limited",
                          f"too many requests; retry in {wait:.2f} s", WS_TRY_LATER,
                          headers={"retry-after": retry_after_header(wait)})
            return
        if kind == "http":
            if isinstance(outcome, Unauthenticated) and scope["path"].startswith("/api/"):
                await _refuse(scope, receive, send, 401, "unauthenticated", outcome.reason,
                              WS_UNAUTHENTICATED, headers=www_authenticate(outcome))
                return
            await self.app(scope, receive, send)
            return
        if self.gate.open_websockets >= self.gate.max_websockets:
            await _refuse(scope, receive, send, 503, "", "too many open websockets",
                          WS_TRY_LATER)
            return
        self.gate.open_websockets += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.open_websockets -= 1


def www_authenticate(exc: Unauthenticated) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750)."""
    value = 'Bearer realm="beamsteer"'
    if exc.presented:
        value += ', error="invalid_token"'
    return {"www-authenticate": value}


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, kind: str,
                  msg: str, ws_code: int, headers: dict[str, str] | None = None) -> None:
    """Answer with the service's error shape, or accept and close a websocket with a code
    (so a client sees the reason, not a bare handshake failure)."""
    if scope["type"] == "websocket":
        if (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": ws_code, "reason": msg[:120]})
        return
    rid = scope.get("state", {}).get("request_id")
    data = json.dumps({"detail": [{"loc": ["header", "authorization"] if status == 401
                                   else [], "msg": msg, "type": kind}],
                       "request_id": rid}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


# --- dependencies ------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="APIKey",
                     description="An API key (`beamsteer keys create`) as a bearer token. "
                                 "Needed once the server has any key.")


def _principal(conn: HTTPConnection) -> Principal:
    outcome = getattr(conn.state, "auth", None)
    if isinstance(outcome, Unauthenticated):
        raise outcome
    if not isinstance(outcome, Principal):
        raise RuntimeError("Guard middleware is not installed")  # fail closed: 500
    return outcome


def require(scope: KeyScope, *, every_experiment: bool = False
            ) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's principal, if it holds ``scope`` for the route's
    ``experiment_id`` (403 otherwise). ``every_experiment``: a key restricted to some
    experiments is refused (creating experiments)."""

    async def check(conn: HTTPConnection,
                    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
                    ) -> Principal:
        principal = _principal(conn)
        if every_experiment:
            principal.require_every_experiment(scope)
        else:
            principal.require(scope, conn.path_params.get("experiment_id"))
        return principal

    return check


def require_ws(scope: KeyScope) -> Callable[..., Awaitable[Principal]]:
    """:func:`require` for websocket routes (refusals close with 4401/4403)."""

    async def check(conn: HTTPConnection) -> Principal:
        principal = _principal(conn)
        principal.require(scope, conn.path_params.get("experiment_id"))
        return principal

    return check


ReadDep = Annotated[Principal, Depends(require(KeyScope.read))]
WsReadDep = Annotated[Principal, Depends(require_ws(KeyScope.read))]
AskDep = Annotated[Principal, Depends(require(KeyScope.write_suggestions))]
TellDep = Annotated[Principal, Depends(require(KeyScope.write_measurements))]
AdminDep = Annotated[Principal, Depends(require(KeyScope.admin))]
CreateDep = Annotated[Principal, Depends(require(KeyScope.admin, every_experiment=True))]

# What every protected router documents, beside its own replies.
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "No API key, or an unknown, expired or "
                                               "revoked one (when the server has keys)"},
    403: {"model": ErrorPublic, "description": "The key lacks the scope, or the experiment"},
    429: {"model": ErrorPublic, "description": "Rate limit: retry after `Retry-After` s"},
}
