"""From a presented key to a :class:`Principal`, with a short cache in front of the store.

Authentication is on as soon as the store holds one key that is not revoked (or when the
server was told to require keys: bound beyond loopback without ``--insecure``). With it
off, every caller is :data:`ANONYMOUS` and may do everything.

The store is asked at most once per ``ttl`` seconds per key (and for "are there keys at
all"), so a revocation, a new first key, or the revocation of the last one takes effect
within ``ttl`` seconds (2 s by default) on every server process; expiry is checked on every
request against the clock. Last use is written at most once per ``touch_interval``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from server.security.keys import KEY_PREFIX, ApiKey, KeyStore, hash_secret
from server.security.scopes import ANONYMOUS, Principal, Unauthenticated

# Cached lookups of unknown keys are capped so that a stream of random keys cannot grow
# the cache without bound; past the cap the cache starts over.
MAX_CACHED = 10_000


@dataclass(frozen=True)
class _Seen:
    key: ApiKey | None
    at: float


class Authenticator:
    """Resolve API keys, caching the store's answers for ``ttl`` seconds.

    Args:
        keys: Where keys are stored.
        require_keys: Refuse anonymous callers even when no key exists (a server exposed
            beyond loopback).
        ttl: Seconds a store answer is reused (the revocation delay).
        touch_interval: Seconds between writes of a key's last use.
        clock: UNIX seconds (tests pass their own).
    """

    def __init__(self, keys: KeyStore, *, require_keys: bool = False, ttl: float = 2.0,
                 touch_interval: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.require_keys = require_keys
        self.ttl = ttl
        self.touch_interval = touch_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._enabled_at: float | None = None  # when "are there keys" was last asked
        self._enabled_value = False
        self._seen: dict[str, _Seen] = {}

    # --- the fast path: no store call -------------------------------------------------------

    def cached(self, secret: str | None) -> Principal | None:
        """The answer from the cache alone, or ``None`` when the store must be asked.

        Raises:
            Unauthenticated: As :meth:`authenticate`, when the cache already knows.
        """
        now = self.clock()
        with self._lock:
            if self._enabled_at is None or now - self._enabled_at > self.ttl:
                return None
            enabled = self._enabled_value
            if not enabled:
                return ANONYMOUS
            if not secret:
                raise Unauthenticated("an API key is required", presented=False)
            seen = self._seen.get(hash_secret(secret))
        if seen is None or now - seen.at > self.ttl:
            return None
        return self._judge(seen.key, now)

    # --- the full path: may call the store (blocking; run it in a thread) -------------------

    def authenticate(self, secret: str | None) -> Principal:
        """The principal of a request that presented ``secret`` (``None``: no key).

        Raises:
            Unauthenticated: Authentication is on and the key is missing, unknown, expired
                or revoked.
        """
        now = self.clock()
        if not self.enabled(now):
            return ANONYMOUS
        if not secret:
            raise Unauthenticated("an API key is required", presented=False)
        digest = hash_secret(secret)
        with self._lock:
            seen = self._seen.get(digest)
        if seen is None or now - seen.at > self.ttl:
            key = self.keys.find_key(digest) if secret.startswith(KEY_PREFIX) else None
            if key is not None and key.state(now) == "active" and (
                    key.last_used_at is None or now - key.last_used_at > self.touch_interval):
                self.keys.touch_key(key.id, now)
                key = replace(key, last_used_at=now)
            seen = _Seen(key, now)
            with self._lock:
                if len(self._seen) >= MAX_CACHED:
                    self._seen.clear()
                self._seen[digest] = seen
        return self._judge(seen.key, now)

    def enabled(self, now: float | None = None) -> bool:
        """Whether keys are required (cached for ``ttl`` seconds)."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._enabled_at is not None and now - self._enabled_at <= self.ttl:
                return self._enabled_value
        value = self.require_keys or self.keys.count_unrevoked_keys() > 0
        with self._lock:
            self._enabled_at, self._enabled_value = now, value
        return value

    def forget(self) -> None:
        """Drop every cached answer (the next request asks the store)."""
        with self._lock:
            self._enabled_at = None
            self._seen.clear()

    @staticmethod
    def _judge(key: ApiKey | None, now: float) -> Principal:
        if key is None:
            raise Unauthenticated("unknown API key", presented=True)
        state = key.state(now)
        if state != "active":
            raise Unauthenticated(f"API key {key.id} is {state}", presented=True)
        return key.principal()
