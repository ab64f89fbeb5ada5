"""The store timeout: a wait for PostgreSQL's answer that outlives it fails, its connection
is discarded, and waits that are long by design (the ask lock) are not cut short.

The end-to-end check (a frozen PostgreSQL under a live server) is
``tests/faults/test_postgres_hang.py``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from server.store.base import NewMeasurement, Store, StoreUnavailable, open_store
from server.store.watchdog import Watchdog, call_limit, patience
from tests.store.factories import SPEC


def test_a_wait_past_its_deadline_wakes_with_its_socket_shut_down() -> None:
    dog = Watchdog(every_s=0.02)
    a, b = socket.socketpair()
    with a, b:
        call = dog.enter(a.fileno(), 0.3)
        t0 = time.monotonic()
        assert a.recv(1) == b""  # the peer never writes: only the watchdog ends this
        waited = time.monotonic() - t0
        assert dog.leave(call)
        assert 0.25 < waited < 2.0
        assert b.recv(1) == b""  # the other side sees the connection end


def test_a_wait_that_ends_in_time_leaves_its_socket_alone() -> None:
    dog = Watchdog(every_s=0.02)
    a, b = socket.socketpair()
    with a, b:
        call = dog.enter(a.fileno(), 0.3)
        threading.Timer(0.05, b.sendall, (b"x",)).start()
        assert a.recv(1) == b"x"
        assert not dog.leave(call)
        time.sleep(0.4)  # past the deadline: the call is no longer watched
        b.sendall(b"y")
        assert a.recv(1) == b"y"


def test_patience_adds_time_or_lifts_the_limit() -> None:
    assert call_limit(2.0) == 2.0 and call_limit(None) is None
    with patience(30.0):
        assert call_limit(2.0) == 32.0
        with patience(None):
            assert call_limit(2.0) is None
        assert call_limit(2.0) == 32.0
    assert call_limit(2.0) == 2.0


M = NewMeasurement(position={"x": 1.0, "y": 0.0}, values={"intensity": 1.0}, key="k")


def test_a_query_without_answer_is_unavailable_and_the_store_recovers(
        store_postgres_url: str) -> None:
    import psycopg

    store = open_store(store_postgres_url, timeout_s=0.5)
    eid = store.create_experiment(SPEC).id
    # Another program holds the experiment's row: the store's write waits for an answer
    # that does not come within its timeout (as with a stopped server).
    other = psycopg.connect(store_postgres_url, connect_timeout=5)
    try:
        other.execute("SELECT id FROM experiments WHERE id = %s FOR UPDATE", (eid,))
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            store.add_measurements(eid, [M])
        assert 0.45 < time.monotonic() - t0 < 3.0
        assert "no answer within 0.5 s" in str(info.value) and not info.value.during_commit
        other.rollback()
        # The same store again: the shut-down connection was discarded, not reused.
        assert store.add_measurements(eid, [M]).created == [True]
        assert store.get_experiment(eid).n_measurements == 1
    finally:
        other.close()
        store.close()


def test_the_ask_lock_wait_is_bounded_by_its_own_timeout_not_the_store_timeout(
        store_postgres_url: str) -> None:
    holder = open_store(store_postgres_url)
    waiter = open_store(store_postgres_url, timeout_s=0.3)
    try:
        eid = holder.create_experiment(SPEC).id
        lease = holder.lock_asks(eid, 1.0)
        try:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):  # lock_timeout: "busy", not "unavailable"
                waiter.lock_asks(eid, 1.2)
            assert 1.1 < time.monotonic() - t0 < 3.0
        finally:
            lease.release()
        waiter.lock_asks(eid, 1.0).release()  # free now, and the waiter's pool is sound
    finally:
        holder.close()
        waiter.close()


@pytest.fixture
def two_stores(store_postgres_url: str) -> Iterator[tuple[Store, Store, str]]:
    """Two stores on one PostgreSQL (as two API processes hold them) and an experiment."""
    a, b = open_store(store_postgres_url), open_store(store_postgres_url)
    try:
        yield a, b, a.create_experiment(SPEC).id
    finally:
        a.close()
        b.close()


def test_a_broken_release_drops_the_lock_with_its_connection(
        two_stores: tuple[Store, Store, str]) -> None:
    a, b, eid = two_stores
    a.lock_asks(eid, 1.0).release(broken=True)  # no ROLLBACK sent: the session ends
    t0 = time.monotonic()
    b.lock_asks(eid, 5.0).release()
    assert time.monotonic() - t0 < 2.0
    a.lock_asks(eid, 1.0).release()  # the first store's pool is sound


def test_a_holder_that_stops_talking_loses_the_ask_lock(
        two_stores: tuple[Store, Store, str]) -> None:
    """A stopped or hung API process holding an experiment's ask lock: the server ends its
    idle session after ``hold_s``, so other processes' asks go on (a stopped holder is
    what this store looks like while it computes and never releases)."""
    a, b, eid = two_stores
    lease = a.lock_asks(eid, 1.0, hold_s=1.0)
    t0 = time.monotonic()
    b.lock_asks(eid, 10.0).release()
    waited = time.monotonic() - t0
    assert 0.7 < waited < 5.0  # held until the hold ran out, not the waiter's 10 s
    lease.release()  # the holder wakes: its release fails quietly, the lock is gone
    a.lock_asks(eid, 1.0).release()  # and its pool still works


def test_an_ask_lock_held_within_its_hold_time_is_kept(
        two_stores: tuple[Store, Store, str]) -> None:
    a, b, eid = two_stores
    lease = a.lock_asks(eid, 1.0, hold_s=30.0)
    with pytest.raises(TimeoutError):
        b.lock_asks(eid, 1.5)
    lease.release()
    b.lock_asks(eid, 1.0).release()


def test_store_sessions_ask_the_server_to_probe_a_vanished_client(
        store_postgres_url: str) -> None:
    """The server-side TCP settings reach PostgreSQL (a partitioned API host's sessions,
    ask locks included, end within ~25 s instead of the kernel's ~2 h). Over TCP only:
    a Unix-socket session reports 0."""
    store = open_store(store_postgres_url)
    try:
        with store._engine.connect() as conn:  # noqa: SLF001 - the settings of its sessions
            got = {k: conn.exec_driver_sql(f"SHOW {k}").scalar()
                   for k in ("tcp_keepalives_idle", "tcp_keepalives_interval",
                             "tcp_keepalives_count", "tcp_user_timeout")}
    finally:
        store.close()
    assert got == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
                   "tcp_keepalives_count": "3", "tcp_user_timeout": "20000"}
