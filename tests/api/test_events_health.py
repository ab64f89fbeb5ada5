"""The websocket event stream, health, metrics and the OpenAPI docs."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clients.http import server_seconds
from tests.api.conftest import LiveServer, make_settings, recv_until


def test_events_follow_the_experiment(live_server: LiveServer, client: httpx.Client,
                                      experiment: dict) -> None:
    ws_url = live_server.url.replace("http", "ws") + \
        f"/api/v1/experiments/{experiment['id']}/events"
    url = f"/api/v1/experiments/{experiment['id']}"
    with connect(ws_url) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello" and hello["data"]["n_measurements"] == 0
        batch = client.post(f"{url}/suggestions", json={"n": 2}).json()["suggestions"]
        ev = recv_until(ws, "suggestions")
        assert [s["id"] for s in ev["data"]["suggestions"]] == [s["id"] for s in batch]
        items = [{"position": {"x": x, "y": y}, "values": {"intensity": x + y}}
                 for x in (1, 4, 8) for y in (-3, 0, 3)]
        client.post(f"{url}/measurements", json={"measurements": items})
        ev = recv_until(ws, "measurements")
        assert len(ev["data"]["measurements"]) == 9
        ev = recv_until(ws, "refit")  # 9 points: the first fit runs in the background
        assert ev["data"]["n"] == 9 and "intensity" in ev["data"]["outputs"]
        err = ev["data"]["outputs"]["intensity"]["map_error"]  # the refitted model's
        assert err["n"] == 9 and err["measured_range"] == pytest.approx(13)  # x + y: -2..11
        assert err["relative"] == pytest.approx(err["rms_std"] / 13)
        client.delete(f"{url}/suggestions/{batch[0]['id']}")
        ev = recv_until(ws, "suggestion_closed")
        assert ev["data"] == {"id": batch[0]["id"], "status": "abandoned"}
        client.patch(url, json={"status": "paused"})
        assert recv_until(ws, "status")["data"] == {"status": "paused"}


@pytest.mark.parametrize("eid", ["nope", "no%00pe"])  # a NUL: PostgreSQL refuses the query
def test_events_of_unknown_experiment_close(live_server: LiveServer, eid: str) -> None:
    ws_url = live_server.url.replace("http", "ws") + f"/api/v1/experiments/{eid}/events"
    with pytest.raises(ConnectionClosed) as info, connect(ws_url) as ws:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4404


def test_health_metrics_docs(client: httpx.Client, experiment: dict) -> None:
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert h.headers["x-request-id"]
    client.post(f"/api/v1/experiments/{experiment['id']}/suggestions", json={"n": 1})
    text = client.get("/metrics").text
    for name in ("beamsteer_suggest_seconds_bucket", "beamsteer_measure_seconds",
                 "beamsteer_refit_seconds", "beamsteer_measurements_total",
                 "beamsteer_http_requests_total"):
        assert name in text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/api/v1/experiments/{experiment_id}/suggestions" in schema["paths"]
    r = client.get("/health", headers={"x-request-id": "trace-me"})
    assert r.headers["x-request-id"] == "trace-me"


def test_errors_carry_request_id(client: httpx.Client) -> None:
    r = client.get("/api/v1/experiments/nope", headers={"x-request-id": "rid-1"})
    assert r.status_code == 404 and r.json()["request_id"] == "rid-1"


def test_server_timing_says_how_long_the_server_took(client: httpx.Client,
                                                      experiment: dict) -> None:
    """Every reply, errors included, carries one ``Server-Timing: app;dur=<ms>``: the
    server's own time, which is part of what the client waited (a 500 too: see below)."""
    url = f"/api/v1/experiments/{experiment['id']}/suggestions"
    t0 = time.perf_counter()
    r = client.post(url, json={"n": 1})
    wall = time.perf_counter() - t0
    assert r.status_code == 201, r.text
    assert 0 < (server_seconds(r) or 0) <= wall
    assert len(r.headers.get_list("server-timing")) == 1
    bad = client.post(url, json={"n": 0})
    assert bad.status_code == 422 and (server_seconds(bad) or 0) > 0
    missing = client.get("/api/v1/experiments/nope")
    assert missing.status_code == 404 and (server_seconds(missing) or 0) > 0


def test_an_unhandled_error_is_a_500_with_both_headers(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A bug's 500 carries ``X-Request-ID`` and ``Server-Timing`` as every other reply does
    (Starlette would send it from outside our middleware, without them), its body the
    request id (in the Open Inference Protocol's shape under ``/v2/``) and not the error;
    the traceback is logged once, with the request id."""
    server = LiveServer(make_settings(f"sqlite:///{tmp_path / 'beamsteer.db'}", tmp_path))

    async def bug() -> None:
        raise RuntimeError("a secret of the server")

    for path in ("/bug", "/v2/bug"):
        server.app.add_api_route(path, bug)
    with (caplog.at_level(logging.ERROR), server,
          httpx.Client(base_url=server.url, timeout=60) as c):
        r = c.get("/bug", headers={"x-request-id": "rid-500"})
        v2 = c.get("/v2/bug")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error", "request_id": "rid-500"}
    assert r.headers["x-request-id"] == "rid-500" and (server_seconds(r) or 0) > 0
    assert v2.status_code == 500 and (server_seconds(v2) or 0) > 0
    assert v2.json() == {"error": "internal error", "request_id": v2.headers["x-request-id"]}
    assert "secret" not in r.text + v2.text
    errors = [(rec.getMessage(), getattr(rec, "request_id", None)) for rec in caplog.records
              if rec.levelno >= logging.ERROR]
    assert errors == [("unhandled error", "rid-500"),
                      ("unhandled error", v2.headers["x-request-id"])]
