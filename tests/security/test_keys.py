"""Keys turn authentication on, expire, are revoked, and are stored only as hashes."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest
import sqlalchemy as sa

from server.security import Scope
from server.security.keys import NewApiKey, hash_secret, issue_key, new_secret
from server.store.engine import make_engine, sqlalchemy_url
from tests.security.conftest import AUTH_CACHE_S, ServerFactory, bearer

EXPERIMENTS = "/api/v1/experiments"


def _status_within(c: httpx.Client, key: str | None, status: int, seconds: float) -> float:
    """Poll until a request answers ``status``; returns how long it took."""
    t0 = time.monotonic()
    while True:
        r = c.get(EXPERIMENTS, headers=bearer(key))
        if r.status_code == status:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < seconds, (status, r.status_code, r.text)
        time.sleep(0.05)


def test_first_key_turns_auth_on_and_revocation_takes_effect(
        start_server: ServerFactory) -> None:
    server = start_server()
    keys = server.service.store.keys
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get(EXPERIMENTS).status_code == 200  # no keys: anonymous
        rec, secret = issue_key(keys, "viewer", [Scope.read])
        _status_within(c, None, 401, AUTH_CACHE_S + 2)  # within the cache time
        assert c.get(EXPERIMENTS, headers=bearer(secret)).status_code == 200
        assert keys.list_keys()[0].last_used_at is not None

        other, _ = issue_key(keys, "admin", [Scope.admin])
        keys.revoke_key(rec.id)
        waited = _status_within(c, secret, 401, AUTH_CACHE_S + 2)
        assert waited <= AUTH_CACHE_S + 1
        r = c.get(EXPERIMENTS, headers=bearer(secret))
        assert "revoked" in r.json()["detail"][0]["msg"]
        # With every key revoked, a loopback server is open again.
        keys.revoke_key(other.id)
        _status_within(c, None, 200, AUTH_CACHE_S + 2)


def test_expired_key_is_refused(start_server: ServerFactory) -> None:
    server = start_server()
    keys = server.service.store.keys
    secret = new_secret()
    keys.create_key(NewApiKey(name="soon", scopes=(Scope.read,), secret_hash=hash_secret(secret),
                              prefix=secret[:10], expires_at=time.time() + 1.0))
    server.app.state.gate.authenticator.forget()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get(EXPERIMENTS, headers=bearer(secret)).status_code == 200
        time.sleep(max(0.0, keys.list_keys()[0].expires_at - time.time()) + 0.05)
        r = c.get(EXPERIMENTS, headers=bearer(secret))  # even while the lookup is cached
        assert r.status_code == 401 and "expired" in r.json()["detail"][0]["msg"]
    # An expired key still counts as a key: the server stays locked, not open.
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get(EXPERIMENTS).status_code == 401


def test_keys_are_stored_only_as_hashes(start_server: ServerFactory) -> None:
    server = start_server()
    rec, secret = issue_key(server.service.store.keys, "beamline", [Scope.read],
                            experiments=[])
    assert secret.startswith("bsk_") and len(secret) == 4 + 43
    engine = make_engine(sqlalchemy_url(server.settings.store_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    row = rows[0]
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret[:10] == row["prefix"]
    assert not any(secret in str(v) or secret[10:] in str(v) for v in row.values())


def test_a_key_needs_a_scope_a_name_and_a_future_expiry(start_server: ServerFactory) -> None:
    keys = start_server().service.store.keys
    for kwargs in ({"name": "x", "scopes": []}, {"name": " ", "scopes": [Scope.read]},
                   {"name": "x", "scopes": [Scope.read], "expires_at": time.time() - 1}):
        with pytest.raises(ValueError):
            issue_key(keys, **kwargs)  # type: ignore[arg-type]
    assert keys.list_keys() == []
