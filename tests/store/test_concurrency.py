"""Concurrent writers to one experiment: no duplicate seq, no lost row, keys stored once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from server.store.base import Store
from tests.store.factories import measurement

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
