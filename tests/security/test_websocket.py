"""The events websocket: the same keys and scopes, refusals as close codes 4401/4403."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import LiveServer
from tests.security.conftest import Keys, bearer


def _events(server: LiveServer, experiment_id: str, query: str = "") -> str:
    return (server.url.replace("http", "ws")
            + f"/api/v1/experiments/{experiment_id}/events{query}")


def _closed_with(url: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(ConnectionClosed) as info, \
            connect(url, additional_headers=headers or {}) as ws:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


def test_websocket_keys_and_scopes(secured: tuple[LiveServer, Keys, dict[str, str]]) -> None:
    server, keys, ids = secured
    a, b = ids["a"], ids["b"]
    # A browser puts the key in the query; other clients may send the header.
    for url, headers in ((_events(server, a, f"?api_key={keys['read']}"), None),
                         (_events(server, a), bearer(keys["read"])),
                         (_events(server, a, f"?api_key={keys['only_a']}"), None)):
        with connect(url, additional_headers=headers or {}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"

    assert _closed_with(_events(server, a)) == 4401
    assert _closed_with(_events(server, a, "?api_key=bsk_wrong")) == 4401
    assert _closed_with(_events(server, a), bearer("bsk_wrong")) == 4401
    assert _closed_with(_events(server, a, f"?api_key={keys['tell']}")) == 4403
    assert _closed_with(_events(server, b, f"?api_key={keys['only_a']}")) == 4403
    # Restricted keys learn nothing about other ids: 4403, not the 4404 of unknown ones.
    assert _closed_with(_events(server, "no-such-one", f"?api_key={keys['only_a']}")) == 4403
    assert _closed_with(_events(server, "no-such-one", f"?api_key={keys['read']}")) == 4404
