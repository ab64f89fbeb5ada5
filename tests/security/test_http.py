"""Every route, every scope: 401 without a valid key, 403 without the scope, else through."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import SPEC, LiveServer
from tests.security.conftest import Keys, bearer

# (method, path, body, the scope it needs); {a} and {s} are filled in.
ROUTES = [
    ("GET", "/api/v1/experiments", None, "read"),
    ("POST", "/api/v1/experiments", SPEC, "admin"),
    ("GET", "/api/v1/experiments/{a}", None, "read"),
    ("PATCH", "/api/v1/experiments/{a}", {"status": "active"}, "admin"),
    ("POST", "/api/v1/experiments/{a}/suggestions", {"n": 1}, "ask"),
    ("GET", "/api/v1/experiments/{a}/suggestions", None, "read"),
    ("DELETE", "/api/v1/experiments/{a}/suggestions/{s}", None, "ask"),
    ("POST", "/api/v1/experiments/{a}/measurements",
     {"measurements": [{"position": {"x": 2, "y": 1}, "values": {"intensity": 2.0}}]}, "tell"),
    ("GET", "/api/v1/experiments/{a}/measurements", None, "read"),
    ("GET", "/api/v1/experiments/{a}/measurements?format=csv", None, "read"),
    ("POST", "/api/v1/experiments/{a}/posterior", {"points": [[1, 0]]}, "read"),
    ("GET", "/api/v1/experiments/{a}/posterior?n=5", None, "read"),
    ("GET", "/api/v1/models", None, "read"),
    ("GET", "/v2/models/superres", None, "read"),
    ("POST", "/v2/models/superres/infer",
     {"inputs": [{"name": "counts", "shape": [8, 8], "datatype": "FP32", "data": [1.0] * 64}]},
     "read"),
]
ROLES = ("read", "ask", "tell", "admin")


def _call(c: httpx.Client, route: tuple, ids: dict[str, str],  # type: ignore[type-arg]
          key: str | None) -> httpx.Response:
    method, path, body, _ = route
    return c.request(method, path.format(a=ids["a"], s=ids["suggestion"]), json=body,
                     headers=bearer(key))


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_scope_matrix(secured: tuple[LiveServer, Keys, dict[str, str]],
                      route: tuple) -> None:  # type: ignore[type-arg]
    server, keys, ids = secured
    needed = route[3]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for key, presented in ((None, False), ("bsk_not-a-key", True), ("nonsense", True)):
            r = _call(c, route, ids, key)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert ('error="invalid_token"' in r.headers["www-authenticate"]) == presented
            body = r.json()
            assert body["request_id"] == r.headers["x-request-id"]
            if route[1].startswith("/v2/"):  # the Open Inference Protocol's error shape
                assert "authorization" in body["error"]
            else:
                assert body["detail"][0]["loc"] == ["header", "authorization"]
        for role in ROLES:
            r = _call(c, route, ids, keys[role])
            allowed = role in (needed, "admin")
            assert r.status_code < 300 if allowed else r.status_code == 403, (role, r.text)
            if not allowed and route[1].startswith("/v2/"):
                assert "scope" in r.json()["error"]
            elif not allowed:
                assert r.json()["detail"][0]["type"] == "forbidden"
                assert "scope" in r.json()["detail"][0]["msg"]


def test_open_routes_need_no_key(secured: tuple[LiveServer, Keys, dict[str, str]]) -> None:
    """Health (load balancers, container healthchecks), metrics (Prometheus: counts by route
    template, no experiment data), the dashboard's files and the OpenAPI schema."""
    server, _, _ = secured
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for path in ("/health", "/metrics", "/", "/dashboard/api.js", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        # An unknown path under /api/ says 401, not 404: no probing of routes without a key.
        assert c.get("/api/v1/nothing-here").status_code == 401
        schema = c.get("/openapi.json").json()
        assert "APIKey" in schema["components"]["securitySchemes"]


def test_key_restricted_to_an_experiment(secured: tuple[LiveServer, Keys, dict[str, str]]
                                         ) -> None:
    server, keys, ids = secured
    a, b = ids["a"], ids["b"]
    with httpx.Client(base_url=server.url, timeout=60,
                      headers=bearer(keys["only_a"])) as c:
        assert [e["id"] for e in c.get("/api/v1/experiments").json()["experiments"]] == [a]
        assert c.get(f"/api/v1/experiments/{a}").status_code == 200
        assert c.patch(f"/api/v1/experiments/{a}", json={"status": "active"}).status_code == 200
        for path in (f"/api/v1/experiments/{b}", "/api/v1/experiments/no-such-one"):
            r = c.get(path)  # another experiment, existing or not: the same 403
            assert r.status_code == 403 and "restricted" in r.json()["detail"][0]["msg"]
        assert c.get(f"/api/v1/experiments/{b}/measurements").status_code == 403
        r = c.post("/api/v1/experiments", json=SPEC)  # admin, but only for some experiments
        assert r.status_code == 403, r.text
    with httpx.Client(base_url=server.url, timeout=60, headers=bearer(keys["admin"])) as c:
        assert {a, b} <= {e["id"] for e in c.get("/api/v1/experiments").json()["experiments"]}


def test_beamline_key_runs_the_loop_with_the_python_client(
        secured: tuple[LiveServer, Keys, dict[str, str]]) -> None:
    from clients.http import AuthenticationError, Client, PermissionDenied

    server, keys, ids = secured
    with Client(server.url, api_key=keys["beamline"]) as client:
        s = client.suggest(ids["a"])[0]
        client.measure(ids["a"], s.position, {"intensity": 1.0}, suggestion=s)
        with pytest.raises(PermissionDenied) as info:
            client.set_status(ids["a"], "paused")  # admin only
        assert info.value.status == 403 and "scope" in info.value.reason
    with Client(server.url) as client, pytest.raises(AuthenticationError):
        client.get_experiment(ids["a"])
    with Client(server.url, api_key=keys["tell"]) as client, pytest.raises(PermissionDenied):
        next(iter(client.events(ids["a"])))  # closed with 4403: no reconnecting
