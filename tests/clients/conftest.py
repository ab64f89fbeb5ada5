"""Fixtures of the client tests: the real server of the API tests (both store backends),
and a small HTTP proxy in front of it that fails on purpose, to test retries for real."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from clients import Client, Experiment, Retry
from tests.api.conftest import SPEC, LiveServer, free_port, live_server  # noqa: F401

__all__ = ["SPEC", "FlakyProxy", "LiveServer", "free_port"]


@pytest.fixture
def bs(live_server: LiveServer) -> Iterator[Client]:  # noqa: F811
    """A client of the live server that retries quickly."""
    with Client(live_server.url, retry=Retry(attempts=4, backoff=0.05)) as c:
        yield c


@pytest.fixture
def exp(bs: Client) -> Experiment:
    """A fresh 2-D experiment (x in [0, 10], y in [-5, 5], output intensity)."""
    return bs.create_experiment(SPEC)


@dataclass
class Seen:
    """One request the proxy received, and what it did with it."""

    method: str
    path: str
    action: str
    time: float = field(default_factory=time.monotonic)


class FlakyProxy:
    """An HTTP proxy to ``upstream`` that plays a script of failures, one per request:
    ``"503"`` / ``"429"`` (answer that status, with ``Retry-After: retry_after``),
    ``"drop"`` (forward the request, then close the connection without a reply: the
    server acted but the client never hears of it). When the script is empty, it forwards.
    """

    def __init__(self, upstream: str, script: list[str], retry_after: str = "0",
                 only_path: str | None = None) -> None:
        self.upstream = upstream
        self.script = list(script)
        self.retry_after = retry_after
        self.only_path = only_path
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream, timeout=60)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
        self._http.close()

    def _next_action(self, path: str) -> str:
        with self._lock:
            if self.script and (self.only_path is None or self.only_path in path):
                return self.script.pop(0)
            return "forward"

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        action = self._next_action(h.path)
        self.seen.append(Seen(h.command, h.path, action))
        if action in ("503", "429"):
            data = b'{"detail": "try later", "request_id": null}'
            h.send_response(int(action))
            h.send_header("retry-after", self.retry_after)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in ("content-type", "x-request-id", "authorization")}
        r = self._http.request(h.command, h.path, content=body, headers=headers)
        if action == "drop":
            h.close_connection = True
            return
        h.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                 "content-encoding", "date", "server"):
                h.send_header(k, v)
        h.send_header("content-length", str(len(r.content)))
        h.end_headers()
        h.wfile.write(r.content)
