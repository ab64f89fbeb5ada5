"""PostgreSQL that hangs (stopped process, black-holed network) instead of refusing: a live
server's requests end within the store timeout with 503, or 502 for a tell whose COMMIT
hung; that tell, sent again with its key after PostgreSQL answers again, is stored once;
and the same server process serves again.

A proxy between the server and the session's PostgreSQL stands in for the hang: frozen,
it moves no byte either way but keeps every connection open, as a SIGSTOPped server does
(its kernel still accepts connections and acknowledges data)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from server.live import LiveServer
from server.settings import Settings
from tests.api.conftest import SPEC
from tests.faults.helpers import FreezableProxy

STORE_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2  # libpq's least
# A request meets the hang on a pooled connection (its ping: the store timeout), then on
# a fresh one (the connect timeout): both, and slack for a loaded machine.
BOUND_S = STORE_TIMEOUT_S + CONNECT_TIMEOUT_S + 3.0


def _m(key: str, x: float) -> dict[str, Any]:
    return {"position": {"x": x, "y": 0.0}, "values": {"intensity": x}, "key": key}


def test_hung_postgres_is_bounded_and_the_server_recovers(
        new_database: Callable[[], str], tmp_path: Path) -> None:
    url = make_url(new_database())
    proxy = FreezableProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port,
                      query={**url.query, "connect_timeout": str(CONNECT_TIMEOUT_S)})
    settings = Settings(database_url=proxied.render_as_string(hide_password=False),
                        data_dir=tmp_path, log_json=False, store_timeout_s=STORE_TIMEOUT_S,
                        # no background writes in the way; "no keys" stays cached, so each
                        # request reaches its own store calls
                        expiry_interval_s=3600, auth_cache_s=60)
    try:
        with LiveServer(settings) as server, \
                httpx.Client(base_url=server.url, timeout=BOUND_S + 5) as c:
            try:
                _hang_and_recover(c, proxy)
            finally:
                proxy.thaw()  # never leave the server stuck behind a failed assertion
    finally:
        proxy.close()


def _hang_and_recover(c: httpx.Client, proxy: FreezableProxy) -> None:
    exp = f"/api/v1/experiments/{c.post('/api/v1/experiments', json=SPEC).json()['id']}"
    acked = []
    for i in range(3):
        r = c.post(f"{exp}/measurements", json={"measurements": [_m(f"k{i}", i + 1.0)]})
        assert r.status_code == 201, r.text
        acked.append(f"k{i}")
    assert c.post(f"{exp}/suggestions", json={"n": 1}).status_code == 201

    def timed(method: str, path: str, body: Any = None) -> tuple[int, float, Any]:
        """Status (0: no reply before the client gave up), seconds, body."""
        t0 = time.monotonic()
        try:
            r = c.request(method, path, json=body)
        except httpx.TimeoutException:
            return 0, time.monotonic() - t0, None
        return r.status_code, time.monotonic() - t0, r.json() | {"headers": dict(r.headers)}

    tell = f"{exp}/measurements"
    # 1. The hang strikes while an ask holds the experiment's ask lock (on a connection
    # of its own) and stores its suggestions: one store timeout, not one more for giving
    # the lock back (that connection is dropped: the lock goes with it).
    proxy.freeze_on(b"INSERT INTO suggestions")
    status, seconds, body = timed("POST", f"{exp}/suggestions", {"n": 1})
    assert proxy.frozen, "the ask never stored its suggestions"
    assert status == 503 and seconds < STORE_TIMEOUT_S + 1.5, (status, seconds, body)
    assert "nothing was stored" in body["detail"][0]["msg"]
    proxy.thaw()

    # 2. The hang strikes at a tell's COMMIT; while it lasts, an ask, another tell and a
    # read come in.
    proxy.freeze_on(b"COMMIT", after=b"hung-commit")
    with ThreadPoolExecutor(4) as pool:
        hung = pool.submit(timed, "POST", tell, {"measurements": [_m("hung-commit", 5.0)]})
        deadline = time.monotonic() + 10
        while not proxy.frozen and not hung.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.frozen, "the tell never sent its COMMIT"
        during = {"ask": pool.submit(timed, "POST", f"{exp}/suggestions", {"n": 1}),
                  "tell": pool.submit(timed, "POST", tell,
                                      {"measurements": [_m("never-stored", 6.0)]}),
                  "read": pool.submit(timed, "GET", exp)}
        replies = {"hung tell": hung.result()} | {n: f.result() for n, f in during.items()}

    # Bounded, and honest: the COMMIT's outcome is unknown (502), nothing else was stored.
    for name, (status, seconds, body) in replies.items():
        assert status == (502 if name == "hung tell" else 503) and seconds < BOUND_S, (
            name, status, round(seconds, 2), body)
        (item,) = body["detail"]
        assert item["type"] == "store_unavailable", (name, item)
        assert ("may or may not have been stored" if name == "hung tell"
                else "nothing was stored") in item["msg"], (name, item)
        assert int(body["headers"]["retry-after"]) >= 1, name

    # 3. PostgreSQL answers again: the same process serves, and the tell sent again with
    # its key is stored once (by the first attempt if its COMMIT got through after all).
    proxy.thaw()
    retried = c.post(tell, json={"measurements": [_m("hung-commit", 5.0)]})
    assert retried.status_code == 201, retried.text
    assert retried.json()["created"] in ([True], [False])
    acked.append("hung-commit")
    assert c.post(f"{exp}/suggestions", json={"n": 1}).status_code == 201
    r = c.post(tell, json={"measurements": [_m("after", 7.0)]})
    assert r.status_code == 201, r.text
    acked.append("after")
    assert c.get(exp).status_code == 200

    # 4. The store holds exactly the acknowledged tells, each once, with gapless seq.
    stored = c.get(f"{tell}").json()["measurements"]
    assert sorted(m["key"] for m in stored) == sorted(acked)
    assert [m["seq"] for m in stored] == list(range(1, len(acked) + 1))
