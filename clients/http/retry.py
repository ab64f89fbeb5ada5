"""When to try a request again, and how long to wait first.

A retry must never do twice what the caller asked once. Reads, status changes, abandons
and tells (every measurement carries an idempotency key) are safe to repeat whatever went
wrong. Creating an experiment or asking for suggestions is not: a reply lost after the
server acted would, on a retry, leave a second experiment or a second set of pending
suggestions. Those are retried only when the server certainly did nothing: the connection
was never made, or it answered 429/503 (refused, come back later).
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

# 500 may be a bug that repeats, but also a store that dropped a connection: worth a retry
# for idempotent calls, which cannot do harm.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that say "not done, come back later": safe to retry even for non-idempotent calls.
REFUSED_STATUSES = frozenset({429, 503})
# Transport errors raised before any byte of the request left this machine.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter; ``Retry-After`` wins when the server sends it.

    Args:
        attempts: Tries in all, the first included (1 = never retry).
        backoff: Wait before the second try, in seconds; doubles on each retry.
        max_backoff: Cap of one wait without ``Retry-After``.
        max_retry_after: Cap of one wait that ``Retry-After`` asks for.
    """

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("waits must be >= 0")

    def wait(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (no ``Retry-After``)."""
        # "equal jitter": half fixed, half random, so many clients do not retry in step
        base = min(self.max_backoff, self.backoff * 2 ** attempt)
        return base / 2 + random.random() * base / 2

    def after_error(self, exc: httpx.TransportError, idempotent: bool,
                    attempt: int) -> float | None:
        """Seconds to wait before retrying after a transport error, or None to give up.

        Args:
            exc: What went wrong.
            idempotent: Whether the call may be repeated after the server acted on it.
            attempt: 0 for the first try.
        """
        if attempt + 1 >= self.attempts:
            return None
        if idempotent or isinstance(exc, NOT_SENT):
            return self.wait(attempt)
        return None

    def after_reply(self, response: httpx.Response, idempotent: bool,
                    attempt: int) -> float | None:
        """Seconds to wait before retrying after an error reply, or None to give up."""
        status = response.status_code
        if attempt + 1 >= self.attempts or status not in RETRY_STATUSES:
            return None
        if not idempotent and status not in REFUSED_STATUSES:
            return None
        after = retry_after(response.headers.get("retry-after"))
        if after is not None:
            return min(after, self.max_retry_after)
        return self.wait(attempt)


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
