"""Limits and safe defaults: request rate (429), open websockets (1013), no CORS, and a
server exposed beyond loopback that refuses anonymous callers."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.security import Scope
from server.security.keys import issue_key
from tests.security.conftest import ServerFactory, bearer

EXPERIMENTS = "/api/v1/experiments"


def test_rate_limit_per_caller_answers_429_with_retry_after(
        start_server: ServerFactory) -> None:
    server = start_server(rate_limit_per_s=0.1, rate_limit_burst=3)  # a token per 10 s
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert [c.get(EXPERIMENTS).status_code for _ in range(3)] == [200, 200, 200]
        r = c.get(EXPERIMENTS)  # anonymous: the bucket of this address
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["detail"][0]["type"] == "rate_limited"
        assert r.json()["request_id"] == r.headers["x-request-id"]

        keys = server.service.store.keys
        _, one = issue_key(keys, "one", [Scope.read])
        _, two = issue_key(keys, "two", [Scope.read])
        server.app.state.gate.authenticator.forget()
        # Each key has its own budget, whatever the address used up.
        assert [c.get(EXPERIMENTS, headers=bearer(one)).status_code
                for _ in range(4)] == [200, 200, 200, 429]
        assert c.get(EXPERIMENTS, headers=bearer(two)).status_code == 200


def test_open_websockets_are_capped(start_server: ServerFactory) -> None:
    server = start_server(max_websockets=2)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        eid = c.post(EXPERIMENTS, json={
            "name": "ws", "parameters": [{"name": "x", "lower": 0, "upper": 1}],
            "outputs": [{"name": "y"}]}).json()["id"]
    url = server.url.replace("http", "ws") + f"/api/v1/experiments/{eid}/events"
    with connect(url) as one, connect(url) as two:
        for ws in (one, two):
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        with pytest.raises(ConnectionClosed) as info, connect(url) as three:
            three.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1013
    for _ in range(100):  # closed ones stop counting once the server sees them go
        try:
            with connect(url) as again:
                assert json.loads(again.recv(timeout=10))["type"] == "hello"
                break
        except ConnectionClosed:
            time.sleep(0.05)
    else:
        raise AssertionError("websockets still counted after they closed")


def test_no_cors(start_server: ServerFactory) -> None:
    """A page from another origin gets no permission to call the API (no CORS headers)."""
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        pre = c.options(EXPERIMENTS, headers={
            "origin": "http://evil.example", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})
        assert "access-control-allow-origin" not in pre.headers
        r = c.get(EXPERIMENTS, headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("insecure", [False, True])
def test_exposed_server_without_keys_refuses_anonymous_callers(
        start_server: ServerFactory, insecure: bool) -> None:
    """Settings that say "listen on every interface" with no key: fail closed unless told
    insecure (``beamsteer serve`` refuses to start in that case; this is the second line)."""
    server = start_server(host="0.0.0.0", insecure=insecure)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        assert c.get(EXPERIMENTS).status_code == (200 if insecure else 401)
        if not insecure:
            _, key = issue_key(server.service.store.keys, "k", [Scope.read])
            assert c.get(EXPERIMENTS, headers=bearer(key)).status_code == 200
