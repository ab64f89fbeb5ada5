"""Servers with API keys, each on a database of its own.

Never create keys on the shared ``live_server`` of ``tests/api``: once a key exists every
request needs one, and the other tests send none. Each server here has its own SQLite file
or its own PostgreSQL database, made for this package and dropped after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from server.security import Scope
from server.security.keys import issue_key
from tests.api.conftest import SPEC, LiveServer, make_settings

# Short, so that revocation tests wait little; long enough that the cache is exercised.
AUTH_CACHE_S = 0.3


ServerFactory = Callable[..., LiveServer]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _factory(backend: str, request: pytest.FixtureRequest, tmp: Path,
             opened: list[LiveServer]) -> ServerFactory:
    def start(**overrides: object) -> LiveServer:
        here = tmp / f"server-{len(opened)}"
        here.mkdir()
        if backend == "sqlite":
            url = f"sqlite:///{here / 'beamsteer.db'}"
        else:
            url = request.getfixturevalue("new_database")()
        overrides.setdefault("auth_cache_s", AUTH_CACHE_S)
        server = LiveServer(make_settings(url, here, **overrides)).__enter__()
        opened.append(server)
        return server

    return start


@pytest.fixture
def start_server(backend: str, request: pytest.FixtureRequest,
                 tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(**settings)``: a running server on a database of its own."""
    opened: list[LiveServer] = []
    yield _factory(backend, request, tmp_path, opened)
    for s in opened:
        s.__exit__(None, None, None)


class Keys(dict[str, str]):
    """Secrets by role, and the key ids (``ids[role]``)."""

    ids: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[LiveServer, Keys, dict[str, str]]]:
    """A server with a key per role, two experiments (``a`` with measurements and a pending
    suggestion, ``b``), and a key restricted to ``a``; shared by a module's tests."""
    opened: list[LiveServer] = []
    start = _factory(request.param, request, tmp_path_factory.mktemp("secured"), opened)
    server = start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:  # no keys yet: anonymous
            a = c.post("/api/v1/experiments", json={**SPEC, "name": "a"}).json()["id"]
            b = c.post("/api/v1/experiments", json={**SPEC, "name": "b"}).json()["id"]
            c.post(f"/api/v1/experiments/{a}/measurements", json={"measurements": [
                {"position": {"x": x, "y": y}, "values": {"intensity": x * y}}
                for x in (1, 5, 9) for y in (-4, 4)]})
            sid = c.post(f"/api/v1/experiments/{a}/suggestions",
                         json={"n": 1}).json()["suggestions"][0]["id"]
        store = server.service.store.keys
        roles = {"read": [Scope.read], "ask": [Scope.write_suggestions],
                 "tell": [Scope.write_measurements], "admin": [Scope.admin],
                 "beamline": [Scope.read, Scope.write_suggestions, Scope.write_measurements]}
        keys = Keys()
        keys.ids = {}
        for role, scopes in roles.items():
            rec, keys[role] = issue_key(store, role, scopes)
            keys.ids[role] = rec.id
        rec, keys["only_a"] = issue_key(store, "only-a", [Scope.admin], experiments=[a])
        keys.ids["only_a"] = rec.id
        server.app.state.gate.authenticator.forget()  # "no keys" was cached by the calls above
        yield server, keys, {"a": a, "b": b, "suggestion": sid}
    finally:
        for s in opened:
            s.__exit__(None, None, None)


def bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}
