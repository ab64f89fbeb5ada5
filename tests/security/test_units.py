"""The pure parts: scopes, expiry parsing, the cached authenticator, the token bucket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.keys_cli import SCOPES
from server.security import ANONYMOUS, Forbidden, Principal, Scope, Unauthenticated
from server.security.auth import Authenticator
from server.security.keys import ApiKey, NewApiKey, hash_secret, new_secret, parse_expiry
from server.security.limits import RateLimiter, retry_after_header
from server.security.scopes import parse_scopes
from server.settings import Settings, is_loopback

ROOT = Path(__file__).resolve().parents[2]


class MemoryKeys:
    """A KeyStore in a dict (a fake of our own interface), counting store calls."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, ApiKey]] = {}
        self.calls = 0

    def create_key(self, key: NewApiKey) -> ApiKey:
        rec = ApiKey(id=f"k{len(self.keys)}", name=key.name, scopes=key.scopes,
                     experiments=key.experiments, prefix=key.prefix, created_at=0.0,
                     expires_at=key.expires_at)
        self.keys[rec.id] = (key.secret_hash, rec)
        return rec

    def list_keys(self) -> list[ApiKey]:
        return [rec for _, rec in self.keys.values()]

    def find_key(self, secret_hash: str) -> ApiKey | None:
        self.calls += 1
        return next((rec for h, rec in self.keys.values() if h == secret_hash), None)

    def revoke_key(self, key_id: str) -> ApiKey:
        from dataclasses import replace

        h, rec = self.keys[key_id]
        self.keys[key_id] = (h, replace(rec, revoked_at=1.0))
        return self.keys[key_id][1]

    def count_unrevoked_keys(self) -> int:
        self.calls += 1
        return sum(rec.revoked_at is None for _, rec in self.keys.values())

    def touch_key(self, key_id: str, when: float) -> None:
        from dataclasses import replace

        h, rec = self.keys[key_id]
        self.keys[key_id] = (h, replace(rec, last_used_at=when))


def test_scopes_and_principals() -> None:
    assert [s.value for s in Scope] == list(SCOPES)  # the CLI's list is in step
    assert parse_scopes(["read", "admin"]) == {Scope.read, Scope.admin}
    with pytest.raises(ValueError, match="known: read"):
        parse_scopes(["write"])
    beamline = Principal("k", "b", frozenset({Scope.read, Scope.write_measurements}),
                         frozenset({"e1"}))
    beamline.require(Scope.read, "e1")
    with pytest.raises(Forbidden, match="write:suggestions"):
        beamline.require(Scope.write_suggestions, "e1")
    with pytest.raises(Forbidden, match="restricted"):
        beamline.require(Scope.read, "e2")
    admin = Principal("a", "a", frozenset({Scope.admin}))
    for scope in Scope:
        admin.require(scope, "anything")
    admin.require_every_experiment(Scope.admin)
    with pytest.raises(Forbidden):
        Principal("a", "a", frozenset({Scope.admin}), frozenset({"e1"})) \
            .require_every_experiment(Scope.admin)
    assert all(ANONYMOUS.allows(s) for s in Scope)


def test_parse_expiry() -> None:
    now = 1_000_000.0
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("12h", now) == now + 12 * 3600
    assert parse_expiry("2w", now) == now + 14 * 86400
    assert parse_expiry("2026-12-31", now) == parse_expiry("2027-01-01T00:00:00Z", now)
    assert parse_expiry("2026-12-31T18:00:00+01:00", now) == \
        parse_expiry("2026-12-31T17:00:00", now)
    for bad in ("soon", "30x", "2026-13-01"):
        with pytest.raises(ValueError, match="use 30d"):
            parse_expiry(bad, now)


def test_authenticator_caches_and_checks_expiry_on_every_call() -> None:
    store = MemoryKeys()
    now = [100.0]
    auth = Authenticator(store, ttl=2.0, clock=lambda: now[0])
    assert auth.authenticate(None) is ANONYMOUS  # no keys
    assert auth.cached(None) is ANONYMOUS
    secret = new_secret()
    rec = store.create_key(NewApiKey("b", (Scope.read,), hash_secret(secret), secret[:10],
                                     expires_at=104.0))
    assert auth.cached(None) is ANONYMOUS  # the "no keys" answer is kept for ttl seconds
    now[0] += 2.5
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(None)
    assert not info.value.presented
    assert auth.authenticate(secret).key_id == rec.id
    assert store.keys[rec.id][1].last_used_at == now[0]  # touched on first use
    calls = store.calls
    assert auth.cached(secret) is not None and auth.authenticate(secret).key_id == rec.id
    assert store.calls == calls  # served from the cache
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate("bsk_unknown")
    assert info.value.presented
    now[0] = 104.0  # expired: refused even from the cache
    with pytest.raises(Unauthenticated, match="expired"):
        auth.cached(secret)

    other = new_secret()
    rec = store.create_key(NewApiKey("c", (Scope.read,), hash_secret(other), other[:10]))
    assert auth.authenticate(other).key_id == rec.id
    store.revoke_key(rec.id)
    assert auth.authenticate(other).key_id == rec.id  # cached: up to ttl late
    now[0] += 2.1
    with pytest.raises(Unauthenticated, match="revoked"):
        auth.authenticate(other)
    assert Authenticator(MemoryKeys(), require_keys=True).enabled()


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # callers do not share a bucket
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"
    off = RateLimiter(rate=0, burst=1)
    assert all(off.take("a") == 0.0 for _ in range(100))


def test_loopback() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "beamline.example"):
        assert not is_loopback(host), host
    assert not Settings().exposed and Settings(host="0.0.0.0").exposed


def test_security_core_imports_no_web_or_sql() -> None:
    code = ("import sys, server.security, server.security.auth, server.security.limits\n"
            "bad = [m for m in ('fastapi', 'starlette', 'sqlalchemy') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT)})
