"""SQLAlchemy engines for the store's URLs: driver choice, pool, SQLite pragmas and BEGIN."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

# A writer waits this long for SQLite's write lock before failing with "database is locked";
# generous because a beamline's burst of posts queues behind one slow commit (fsync).
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option that makes the SQLite "begin" hook emit BEGIN IMMEDIATE.
IMMEDIATE = "beamsteer_immediate"
# A PostgreSQL server that does not accept a connection within this many seconds counts
# as down (the request gets a 503) instead of holding a request and a thread; a refused
# connection fails at once anyway. A URL's own ?connect_timeout= wins.
PG_CONNECT_TIMEOUT_S = 5
# A request waits at most this long for a pooled connection before a 503: with 10 + 20
# overflow connections against a few store threads, a wait that long means a stuck
# database, not load.
POOL_TIMEOUT_S = 10
# The longest one PostgreSQL call (a query, a COMMIT, the pool's ping) may wait for the
# server's answer before its connection is shut down (server/store/watchdog.py): a server
# that stopped answering then costs a request this long, plus a connect timeout, instead
# of forever. Our queries take milliseconds; loading a large experiment, well under a
# second. Waits that are long by design (the ask lock, migrations) get more time.
PG_STORE_TIMEOUT_S = 15.0


def sqlalchemy_url(url: str) -> URL:
    """Parse a store URL; plain ``postgresql://`` gets the psycopg 3 driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def _json(value: Any) -> str:
    """Strict JSON: NaN and inf are refused on every backend (PostgreSQL's json type would
    refuse them, SQLite would store them), so the store behaves the same on both."""
    return json.dumps(value, allow_nan=False)


def is_memory(u: URL) -> bool:
    """Whether the URL names an in-memory SQLite database."""
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


def _set_wal(cur: Any) -> None:
    """Switch the database to WAL (it stays so: later connections find it set). Changing the
    journal mode needs the database to itself, and SQLite answers "database is locked" at
    once, without its busy handler, while another connection holds it: processes opening a
    new database together (several stores migrating at start-up) retry for up to the busy
    timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.05)


def _sqlite_engine(u: URL) -> Engine:
    memory = is_memory(u)
    if memory:
        # One shared connection, or every checkout would see its own empty database.
        engine = sa.create_engine(u, poolclass=StaticPool, json_serializer=_json,
                                  connect_args={"check_same_thread": False})
    else:
        assert u.database is not None
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, json_serializer=_json,
                                  connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin): the sqlite3 module's own
        # transaction handling never begins a transaction for SELECT.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            _set_wal(cur)
        cur.execute("PRAGMA synchronous=FULL")  # a returned write survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engine(u: URL, timeout_s: float | None = PG_STORE_TIMEOUT_S) -> Engine:
    """An engine for a parsed store URL, with pool and per-connection settings set.

    Args:
        u: The store URL.
        timeout_s: PostgreSQL: the longest one call may wait for the server's answer
            (``None``: no limit). SQLite ignores it: its busy timeout bounds its waits.
    """
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u)
    from server.store import pg  # psycopg: loaded only for a PostgreSQL store

    # pre_ping: a threaded server outlives database restarts and idle-connection reapers;
    # a connection that fails it is replaced, and a disconnect invalidates the whole pool.
    engine = sa.create_engine(u, json_serializer=_json, pool_pre_ping=True, pool_size=10,
                              max_overflow=20, pool_timeout=POOL_TIMEOUT_S,
                              connect_args=pg.connect_args(u.query, PG_CONNECT_TIMEOUT_S))
    pg.watch(engine, timeout_s)
    return engine
