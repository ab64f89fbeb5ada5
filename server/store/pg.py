"""PostgreSQL connections whose every wait for the server is bounded.

psycopg 3 routes every exchange of a (sync) connection with the server through
``Connection.wait``: a query and the fetching of its rows, COMMIT, ROLLBACK, the pool's
ping, pipeline syncs. :class:`WatchedConnection` registers each such wait with the
:data:`~server.store.watchdog.WATCHDOG` for the store timeout; one that outlives it has
its socket shut down and raises :class:`NoAnswer`, and the connection is closed, so that
SQLAlchemy sees a disconnect and discards it (with the rest of the pool) instead of using
it again. Connecting is bounded by ``connect_timeout`` instead.

TCP keepalives and ``tcp_user_timeout`` are set too (unless the URL sets them): they end a
connection whose peer vanished (a black-holed network) even between calls, while it sits
in the pool or holds an ask lock.
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.store.watchdog import WATCHDOG, call_limit

# A peer that does not acknowledge keepalive probes for idle + interval * count seconds
# (25 s) is dead; data the kernel sent and got no acknowledgement for within
# tcp_user_timeout ends the connection too. Both only detect a vanished host or network;
# a stopped process on a live host is the watchdog's.
PG_TCP_DEFAULTS: dict[str, int] = {"keepalives": 1, "keepalives_idle": 10,
                                   "keepalives_interval": 5, "keepalives_count": 3,
                                   "tcp_user_timeout": 20_000}
# The same from the server's side, sent as startup options (unless the URL sets `options`):
# a server whose client vanished (a partitioned API host) ends that session after ~25 s,
# and with it any ask lock the session held; PostgreSQL's default is the kernel's (~2 h).
PG_SERVER_OPTIONS = ("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
                     "-c tcp_keepalives_count=3 -c tcp_user_timeout=20000")


class NoAnswer(psycopg.OperationalError):
    """PostgreSQL did not answer one call within the store timeout; the connection was
    shut down and closed (a COMMIT's outcome is unknown)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"PostgreSQL did not answer within {seconds:g} s; "
                         "connection closed")
        self.no_answer_s = seconds


class WatchedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits for the server end within ``timeout_s`` seconds
    (plus :func:`~server.store.watchdog.patience`), or raise :class:`NoAnswer`."""

    timeout_s: float | None = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        limit = call_limit(self.timeout_s)
        if limit is None:
            return super().wait(gen, *args, **kwargs)
        call = WATCHDOG.enter(self.pgconn.socket, limit)
        try:
            result = super().wait(gen, *args, **kwargs)
        except psycopg.Error as exc:
            if WATCHDOG.leave(call):
                raise self._no_answer(limit) from exc
            raise
        except BaseException:
            WATCHDOG.leave(call)
            raise
        if WATCHDOG.leave(call):
            # The answer came as the deadline struck: the socket is shut down all the same.
            raise self._no_answer(limit)
        return result

    def _no_answer(self, limit: float) -> NoAnswer:
        # Closed, so that the driver calls the connection closed and SQLAlchemy treats the
        # error as a disconnect: the connection is discarded, never used again.
        self.pgconn.finish()
        return NoAnswer(limit)


def connect_args(query: Any, connect_timeout_s: float) -> dict[str, Any]:
    """libpq options for the engine: ``connect_timeout``, the TCP defaults on both ends
    (:data:`PG_TCP_DEFAULTS`, :data:`PG_SERVER_OPTIONS`), except those that the URL's query
    (``?keepalives_idle=...``, ``?options=...``) sets itself."""
    defaults = {"connect_timeout": connect_timeout_s, **PG_TCP_DEFAULTS,
                "options": PG_SERVER_OPTIONS}
    return {k: v for k, v in defaults.items() if k not in query}


def watch(engine: Engine, timeout_s: float | None) -> None:
    """Make the engine's new connections :class:`WatchedConnection` with ``timeout_s``
    (``None``: plain psycopg connections, no limit)."""
    if timeout_s is None:
        return

    @sa.event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> WatchedConnection:
        conn = WatchedConnection.connect(*cargs, **cparams)
        conn.timeout_s = timeout_s
        return conn
