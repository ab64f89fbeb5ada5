"""A database that does not answer raises StoreUnavailable, never a driver error; other
database errors (bugs) stay what they are."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.store import engine as store_engine
from server.store.base import NewMeasurement, StoreUnavailable, open_store
from server.store.sql import _unavailable
from tests.store.factories import SPEC

M = NewMeasurement(position={"x": 1.0, "y": 0.0}, values={"intensity": 1.0}, key="k")


def test_sqlite_locked_past_the_busy_timeout_is_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "b.db"
    store = open_store(f"sqlite:///{path}")
    eid = store.create_experiment(SPEC).id
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        with pytest.raises(StoreUnavailable) as info:
            store.add_measurements(eid, [M])
        assert "database is locked" in str(info.value) and not info.value.during_commit
        assert store.get_experiment(eid).n_measurements == 0  # WAL: reads go on
        other.execute("ROLLBACK")
        assert store.add_measurements(eid, [M]).created == [True]
    finally:
        other.close()
        store.close()


def test_postgres_down_is_unavailable_fast_and_the_store_recovers(private_postgres) -> None:
    store = open_store(private_postgres.create_database("b"))
    try:
        eid = store.create_experiment(SPEC).id
        private_postgres.stop("immediate")
        t0 = time.monotonic()
        for call in (lambda: store.add_measurements(eid, [M]), store.list_experiments):
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert "PostgreSQL" in info.value.reason and "127.0.0.1" not in str(info.value)
        assert time.monotonic() - t0 < 10  # refused at once, not a hang (bound: the timeouts)
        private_postgres.start()
        assert store.add_measurements(eid, [M]).created == [True]  # the same store, reconnected
        assert store.get_experiment(eid).n_measurements == 1
    finally:
        store.close()


def test_other_database_errors_are_not_unavailability() -> None:
    sqlite_bug = sa.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))
    assert _unavailable(sqlite_bug, sqlite=True) is None
    integrity = sa.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    assert _unavailable(integrity, sqlite=True) is None
    assert _unavailable(integrity, sqlite=False) is None
    assert _unavailable(ValueError("x"), sqlite=False) is None
    assert _unavailable(sa.exc.TimeoutError("pool"), sqlite=False)
