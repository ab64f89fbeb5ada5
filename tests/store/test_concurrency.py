"""Concurrent writers to one experiment: no duplicate seq, no lost row, keys stored once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from server.store.base import Store, open_store
from tests.store.factories import SPEC, measurement

T = TypeVar("T")
THREADS = 8


def _together(fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(0..THREADS-1)`` in threads released at the same moment."""
    start = threading.Barrier(THREADS)

    def run(t: int) -> T:
        start.wait()
        return fn(t)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def test_concurrent_writers_get_gapless_seq(store: Store, experiment_id: str) -> None:
    per_thread = 25

    def post(t: int) -> list[int]:
        return [store.add_measurements(experiment_id, [measurement(i, key=f"{t}-{i}")])
                .records[0].seq for i in range(per_thread)]

    seqs = [s for thread in _together(post) for s in thread]
    total = THREADS * per_thread
    assert sorted(seqs) == list(range(1, total + 1))
    stored = store.list_measurements(experiment_id)
    assert [m.seq for m in stored] == list(range(1, total + 1))
    assert len({m.key for m in stored}) == total
    assert store.get_experiment(experiment_id).n_measurements == total


def test_concurrent_same_key_stores_once(store: Store, experiment_id: str) -> None:
    keys = 5

    def post(t: int) -> list[tuple[int, bool]]:
        out = []
        for k in range(keys):
            result = store.add_measurements(experiment_id, [measurement(k, key=f"k{k}")])
            out.append((result.records[0].id, result.created[0]))
        return out

    results = _together(post)
    for k in range(keys):
        ids = {thread[k][0] for thread in results}
        assert len(ids) == 1
        assert sum(thread[k][1] for thread in results) == 1
    stored = store.list_measurements(experiment_id)
    assert [m.key for m in stored] == [f"k{k}" for k in range(keys)]


def test_mixed_writers_do_not_deadlock(store: Store, experiment_id: str) -> None:
    """Answers, closes and expiry sweeps touch experiments and suggestions together."""
    import time

    from server.store.base import SuggestionStatus
    from tests.store.factories import suggestion

    rounds = 10
    pending = store.add_suggestions(
        experiment_id, [suggestion(i, time.time() - 1) for i in range(THREADS * rounds)])

    def work(t: int) -> None:
        for r in range(rounds):
            sid = pending[t * rounds + r].id
            if t % 3 == 0:
                store.add_measurements(experiment_id, [measurement(r, suggestion_id=sid)])
            elif t % 3 == 1:
                store.close_suggestion(experiment_id, sid, SuggestionStatus.abandoned)
            else:
                store.expire_suggestions(time.time())

    _together(work)
    assert store.get_experiment(experiment_id).n_measurements == 3 * rounds
    assert [m.seq for m in store.list_measurements(experiment_id)] == list(range(1, 31))


def test_ask_lock_excludes_other_processes_on_postgresql(postgres_url: str) -> None:
    """Two stores (as two API processes would hold) on one PostgreSQL: the second
    ``lock_asks`` waits until the first lease is released, and gives up after its timeout."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        eid = a.create_experiment(SPEC).id
        other = a.create_experiment(SPEC).id
        lease = a.lock_asks(eid)
        with pytest.raises(TimeoutError, match="not acquired"):
            b.lock_asks(eid, timeout_s=0.2)
        b.lock_asks(other, timeout_s=0.2).release()  # another experiment is not held

        got = threading.Event()

        def take() -> None:
            b.lock_asks(eid, timeout_s=10).release()
            got.set()

        t = threading.Thread(target=take)
        t.start()
        assert not got.wait(0.3)  # still held by the first lease
        lease.release()
        assert got.wait(10)
        t.join()
    finally:
        a.close()
        b.close()


def test_ask_lock_dies_with_its_holder(postgres_url: str) -> None:
    """A process SIGKILLed while it holds the lock does not keep the experiment locked:
    PostgreSQL ends its session, and the transaction-scoped lock with it."""
    s = open_store(postgres_url)
    try:
        eid = s.create_experiment(SPEC).id
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time; from server.store.base import open_store; "
             "open_store(sys.argv[1]).lock_asks(sys.argv[2]); print('held', flush=True); "
             "time.sleep(120)", postgres_url, eid],
            stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            with pytest.raises(TimeoutError):
                s.lock_asks(eid, timeout_s=0.2)
        finally:
            holder.kill()
            holder.communicate()
        s.lock_asks(eid, timeout_s=10).release()
    finally:
        s.close()


def test_ask_lock_is_a_no_op_on_sqlite(sqlite_url: str) -> None:
    s = open_store(sqlite_url)
    try:
        eid = s.create_experiment(SPEC).id
        s.lock_asks(eid).release()
        s.lock_asks(eid, timeout_s=0.01).release()  # nothing to wait for
    finally:
        s.close()


def test_connection_held_across_close_is_closed_when_returned(store_postgres_url: str) -> None:
    """A call still in flight when the store closes (e.g. a tell waiting out an outage as
    the service stops) returns its connection to the discarded pool: it must be closed
    then, not left for the garbage collector (psycopg warns, and the server keeps it)."""
    store = open_store(store_postgres_url)
    eid = store.create_experiment(SPEC).id
    lease = store.lock_asks(eid, 5.0)
    raw = lease._conn.connection.dbapi_connection  # type: ignore[attr-defined]
    store.close()
    assert not raw.closed  # still held: close() cannot take it away
    lease.release()
    assert raw.closed
