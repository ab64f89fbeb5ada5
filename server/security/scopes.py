"""Scopes, the principal a request acts as, and the two ways a request is refused."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a key may do. ``admin`` implies every other scope; the others imply nothing.

    A beamline's control software typically holds ``read``, ``write:suggestions`` and
    ``write:measurements``; a dashboard viewer holds ``read``.
    """

    read = "read"  # experiments, measurements, suggestions, posterior, events
    write_suggestions = "write:suggestions"  # ask, abandon
    write_measurements = "write:measurements"  # tell
    admin = "admin"  # create, pause, resume, close experiments; and all of the above


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """``["read", "admin"]`` -> the scopes. Raises ValueError naming an unknown one."""
    out = set()
    for name in names:
        try:
            out.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {name!r}; known: {known}") from None
    return frozenset(out)


class AuthError(Exception):
    """Base of the refusals below; ``reason`` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Unauthenticated(AuthError):
    """No key, or a key that is unknown, expired or revoked (HTTP 401, websocket 4401).

    Attributes:
        presented: Whether the caller sent a key at all (RFC 6750 then says
            ``error="invalid_token"``).
    """

    def __init__(self, reason: str, *, presented: bool) -> None:
        self.presented = presented
        super().__init__(reason)


class Forbidden(AuthError):
    """A valid key that lacks the scope or the experiment (HTTP 403, websocket 4403)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as.

    Args:
        key_id: The API key's id; ``None`` for the anonymous caller of a server without keys.
        name: The key's name, for logs.
        scopes: What it may do (``admin`` implies the rest).
        experiments: The experiment ids it may touch, or ``None`` for all of them.
    """

    key_id: str | None
    name: str
    scopes: frozenset[Scope]
    experiments: frozenset[str] | None = None

    def allows(self, scope: Scope) -> bool:
        """Whether this principal holds ``scope`` (directly or through ``admin``)."""
        return scope in self.scopes or Scope.admin in self.scopes

    def sees(self, experiment_id: str) -> bool:
        """Whether this principal may touch that experiment at all."""
        return self.experiments is None or experiment_id in self.experiments

    def require(self, scope: Scope, experiment_id: str | None = None) -> None:
        """Raise :class:`Forbidden` unless ``scope`` is held (for ``experiment_id``).

        A key restricted to some experiments is told 403 for any other id, existing or
        not, so it cannot probe which experiments exist.
        """
        if not self.allows(scope):
            raise Forbidden(f"this key lacks the {scope.value!r} scope")
        if experiment_id is not None and not self.sees(experiment_id):
            raise Forbidden("this key is restricted to other experiments")

    def require_every_experiment(self, scope: Scope) -> None:
        """Like :meth:`require`, for acts that no experiment list covers (creating one)."""
        self.require(scope)
        if self.experiments is not None:
            raise Forbidden("this key is restricted to some experiments; creating one "
                            "needs a key without that restriction")


# The caller of a server that has no keys at all: may do everything (loopback by default).
ANONYMOUS = Principal(key_id=None, name="anonymous", scopes=frozenset(Scope))
