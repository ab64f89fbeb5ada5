"""API keys: the secret, its hash, the stored record, and the store interface.

A key is ``bsk_`` followed by 32 random bytes (``secrets.token_urlsafe(32)``, 256 bits). It
is shown once, at creation; the store keeps only its SHA-256. A fast, unsalted hash is
enough here because the secret is random, not chosen by a person: no dictionary holds it
and 2**256 guesses are out of reach however fast each is, so a slow password hash (bcrypt,
argon2) would only slow every request down. Unsalted also means a request's key is found
with one indexed lookup of its hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from server.security.scopes import Principal, Scope

KEY_PREFIX = "bsk_"
# Characters of the secret kept in clear to tell keys apart in `keys list`: "bsk_" and 6 of
# its 43 random characters, leaving 222 random bits unknown.
SHOWN_PREFIX = len(KEY_PREFIX) + 6


def new_secret() -> str:
    """A fresh key: ``bsk_`` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a key: SHA-256, hex (see the module docstring for why)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class UnknownKey(LookupError):
    """No key with that id."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no API key {key_id!r}")


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the secret).

    Args:
        id: Public id, for ``keys revoke`` and the logs.
        name: Who or what holds it ("beamline 7 control").
        scopes: What it may do.
        experiments: The experiments it is restricted to, or ``None`` for all.
        prefix: The first characters of the secret, to recognize it.
        created_at: UNIX seconds; likewise ``expires_at``, ``revoked_at``,
            ``last_used_at`` (``None``: never / not yet; last use is recorded at most once a
            minute).
    """

    id: str
    name: str
    scopes: tuple[Scope, ...]
    experiments: tuple[str, ...] | None
    prefix: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def state(self, now: float) -> str:
        """``"active"``, ``"expired"`` or ``"revoked"``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        """Who a request with this key acts as."""
        return Principal(key_id=self.id, name=self.name, scopes=frozenset(self.scopes),
                         experiments=None if self.experiments is None
                         else frozenset(self.experiments))


@dataclass(frozen=True)
class NewApiKey:
    """What :meth:`KeyStore.create_key` stores (``secret_hash``, never the secret)."""

    name: str
    scopes: tuple[Scope, ...]
    secret_hash: str
    prefix: str
    expires_at: float | None = None
    experiments: tuple[str, ...] | None = None


class KeyStore(Protocol):
    """Where keys live (the store's database). Every write commits before returning."""

    def create_key(self, key: NewApiKey) -> ApiKey:
        """Store a new key and return it with a fresh id."""

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""

    def find_key(self, secret_hash: str) -> ApiKey | None:
        """The key with that hash, revoked or expired ones too; ``None`` if none."""

    def revoke_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (again: a no-op). Raises UnknownKey."""

    def count_unrevoked_keys(self) -> int:
        """Keys not revoked, expired ones included: any such key turns authentication on."""

    def touch_key(self, key_id: str, when: float) -> None:
        """Record a use of the key (a missing key is ignored)."""


def issue_key(store: KeyStore, name: str, scopes: Sequence[Scope], *,
              expires_at: float | None = None,
              experiments: Sequence[str] | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns the record and the secret, which nothing stores.

    Raises:
        ValueError: No scope, an empty name, or an expiry in the past.
    """
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if not name.strip():
        raise ValueError("a key needs a name")
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC).timestamp():
        raise ValueError("the expiry is in the past")
    secret = new_secret()
    record = store.create_key(NewApiKey(
        name=name.strip(), scopes=tuple(sorted(set(scopes), key=list(Scope).index)),
        secret_hash=hash_secret(secret), prefix=secret[:SHOWN_PREFIX], expires_at=expires_at,
        experiments=None if experiments is None else tuple(dict.fromkeys(experiments))))
    return record, secret


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float) -> float:
    """``"30d"``, ``"12h"``, ``"2w"`` (from ``now``), ``"2026-12-31"`` (valid through that
    day, UTC) or an ISO time (``"2026-12-31T18:00:00+01:00"``; UTC if no zone) -> UNIX s.

    Raises:
        ValueError: Neither form.
    """
    m = _DURATION.match(text)
    if m:
        return now + float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = dt.date.fromisoformat(text.strip())
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
            return end.timestamp()
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expiry {text!r}: use 30d, 12h, 2w, 2026-12-31 or an ISO "
                         "time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
