"""Two small parts of ``SteeringService`` tested on their own: ``_Live.told`` (the smoothed
time from an ask's reply to the next tell) and ``_store_and_release`` (commit, give the
lock back, then count the suggestions served from prepared picks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from server.service import SteeringService, _Live, _OnceLease
from server.settings import Settings
from server.steering.engine import GPEngine
from server.steering.errors import Conflict
from server.steering.spec import ExperimentSpec
from server.store.base import (
    ExperimentStatus,
    NewSuggestion,
    StoreUnavailable,
    SuggestionRecord,
)
from server.store.sql import SQLStore
from tests.store.factories import SPEC, suggestion

AHEAD = "beamsteer_suggestions_ahead_total"


def _live() -> _Live:
    spec = ExperimentSpec.from_dict(SPEC)
    return _Live(spec, GPEngine(spec), asyncio.Lock())


def test_told_sets_the_first_gap_then_averages() -> None:
    live = _live()
    live.asked_at = 100.0
    live.told(102.0)
    assert live.measuring_s == 2.0 and live.asked_at is None
    live.asked_at = 200.0
    live.told(206.0)
    assert live.measuring_s == 0.5 * 2.0 + 0.5 * 6.0
    assert live.asked_at is None


def test_told_ignores_a_tell_without_an_ask_or_older_than_it() -> None:
    live = _live()
    live.told(50.0)  # no ask yet
    assert live.measuring_s is None and live.asked_at is None
    live.asked_at = 100.0
    live.told(99.0)  # e.g. another process's tell, stored before this ask's reply
    assert live.measuring_s is None and live.asked_at == 100.0
    live.told(103.0)
    live.told(110.0)  # a second tell after the same ask
    assert live.measuring_s == 3.0 and live.asked_at is None


class _FlakyStore(SQLStore):
    """A real SQLite store whose database stops answering, while ``down``, when suggestions
    are added (nothing is stored)."""

    down = False

    def add_suggestions(self, experiment_id: str,
                        items: Sequence[NewSuggestion]) -> list[SuggestionRecord]:
        if self.down:
            raise StoreUnavailable("database down")
        return super().add_suggestions(experiment_id, items)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[SteeringService]:
    store = _FlakyStore(f"sqlite:///{tmp_path / 'b.db'}")
    svc = SteeringService(store, Settings(data_dir=tmp_path, log_json=False))
    try:
        yield svc
    finally:
        asyncio.run(svc.stop())
        store.close()


def _ahead(svc: SteeringService) -> float:
    value = svc.metrics.registry.get_sample_value(AHEAD)
    assert value is not None
    return value


@pytest.mark.parametrize("ahead", [True, False])
def test_stored_suggestions_count_as_ahead_only_if_ahead(
        service: SteeringService, ahead: bool) -> None:
    exp_id = service.store.create_experiment(SPEC).id
    lease = _OnceLease(service.store.lock_asks(exp_id, 1.0))
    new = [suggestion(1.0), suggestion(2.0), suggestion(3.0)]
    recs = service._store_and_release(lease, exp_id, new, ahead)
    assert [r.position["x"] for r in recs] == [1.0, 2.0, 3.0] and lease.released
    assert len(service.store.list_suggestions(exp_id)) == 3
    assert _ahead(service) == (3.0 if ahead else 0.0)


@pytest.mark.parametrize("failure", ["unavailable", "paused"])
def test_a_failed_commit_counts_nothing_and_keeps_the_lock(
        service: SteeringService, failure: str) -> None:
    store = service.store
    assert isinstance(store, _FlakyStore)
    exp_id = store.create_experiment(SPEC).id
    if failure == "paused":  # the real store refuses suggestions for a paused experiment
        store.set_status(exp_id, ExperimentStatus.paused)
    store.down = failure == "unavailable"
    lease = _OnceLease(store.lock_asks(exp_id, 1.0))
    with pytest.raises(StoreUnavailable if failure == "unavailable" else Conflict):
        service._store_and_release(lease, exp_id, [suggestion(1.0)], True)
    assert _ahead(service) == 0.0
    assert not lease.released  # the caller gives it back (broken after StoreUnavailable)
    assert store.list_suggestions(exp_id) == []


# --- the ahead thread: one for every experiment, in turns ----------------------------------


def _pending(service: SteeringService) -> list[SuggestionRecord]:
    """One suggestion, stored as pending (what an ask hands to the prepare)."""
    exp_id = service.store.create_experiment(SPEC).id
    return service.store.add_suggestions(exp_id, [suggestion(5.0)])


async def _fitted_experiment(service: SteeringService, seed: int) -> str:
    """A ``variance`` experiment with 20 measurements, fitted, no refit running."""
    exp_id = (await service.create_experiment({**SPEC, "acquisition": "variance"})).id
    rng = np.random.default_rng(seed)
    await service.measure(exp_id, [
        {"position": {"x": float(x), "y": float(y)}, "values": {"intensity": float(x - y)}}
        for x, y in zip(rng.uniform(0, 10, 20), rng.uniform(-5, 5, 20), strict=True)])
    await asyncio.to_thread(service.wait_for_refits)
    return exp_id


async def _tell(service: SteeringService, exp_id: str, s: SuggestionRecord) -> None:
    """Measure suggestion ``s`` and wait for a refit it may have scheduled."""
    await service.measure(exp_id, [{"position": s.position, "values": {"intensity": 1.0},
                                    "suggestion_id": s.id}])
    await asyncio.to_thread(service.wait_for_refits)


def test_experiments_take_turns_on_the_ahead_thread(service: SteeringService) -> None:
    """A loop that asks faster than its picks are prepared does not keep the one ahead
    thread from another experiment's prepare (the engines' work is left out: this is the
    queue's order)."""
    ran: list[tuple[str, int]] = []
    first_started, b_requested = threading.Event(), threading.Event()
    a, b = _live(), _live()
    service._live.update({"A": a, "B": b})
    pending = _pending(service)

    def prepare(eid: str, live: _Live, q: int, P: object, n_seen: int) -> None:
        ran.append((eid, q))
        if eid == "A" and q == 1:
            first_started.set()
            assert b_requested.wait(10)
        if eid == "A" and q < 6:  # the next ask of A arrives while this one is prepared
            service._prepare_next("A", a, q + 1, pending)

    service._prepare = prepare  # type: ignore[method-assign]
    service._prepare_next("A", a, 1, pending)
    assert first_started.wait(10)
    service._prepare_next("B", b, 1, pending)
    b_requested.set()
    service.wait_for_lookahead(10)
    assert ran[:3] == [("A", 1), ("B", 1), ("A", 2)]  # B's turn came after A's first
    assert [q for e, q in ran if e == "A"] == [1, 2, 3, 4, 5, 6]  # and A lost nothing
    assert not a.ahead_running and not b.ahead_running
    assert a.ahead_wanted is None and b.ahead_wanted is None


def test_waiting_for_lookahead_after_stop_does_not_raise(service: SteeringService) -> None:
    gate = threading.Event()
    a, b = _live(), _live()
    service._live.update({"A": a, "B": b})
    service._prepare = lambda *args: gate.wait(10)  # type: ignore[method-assign]
    service._prepare_next("A", a, 1, _pending(service))
    service._prepare_next("B", b, 1, _pending(service))  # queued behind A's: cancelled by stop()
    asyncio.run(service.stop())
    gate.set()
    assert b.ahead is not None and b.ahead.cancelled()
    service.wait_for_lookahead(10)


def test_model_status_does_not_block_the_event_loop(service: SteeringService) -> None:
    """The engine's lock may be held for an O(N^2)-O(N^3) update on another thread: a
    status request waits for it on a compute thread, while the event loop serves others."""
    exp_id = service.store.create_experiment(SPEC).id

    async def scenario() -> str:
        await service.model_status(exp_id)  # load the engine
        live = service._live[exp_id]
        release, held = threading.Event(), threading.Event()

        def hold() -> str:
            with live.engine._lock:
                held.set()
                return "released" if release.wait(10) else "timed out"

        holder = asyncio.get_running_loop().run_in_executor(None, hold)
        await asyncio.to_thread(held.wait, 10)
        status = asyncio.ensure_future(service.model_status(exp_id))
        await asyncio.sleep(0.2)  # the loop runs other work while the status waits
        assert not status.done()
        release.set()
        await status
        return await holder

    assert asyncio.run(scenario()) == "released"


@pytest.mark.parametrize("newer_queued", [False, True])
def test_an_ask_joins_the_prepare_running_for_it(service: SteeringService,
                                                 newer_queued: bool) -> None:
    """An ask that arrives while its picks are still being prepared waits for them (up to
    the time they should still take) instead of computing its own beside them; not if a
    newer request is queued behind that prepare (its picks are out of date)."""
    service.settings.lookahead_room = 0  # prepare after every ask

    async def scenario() -> tuple[float, bool]:
        exp_id = await _fitted_experiment(service, 3)
        live = service._live[exp_id]
        real_acquire, go = live.engine._acquire, threading.Event()

        def slow_acquire(*args: object, **kw: object) -> object:
            # the prepare has read the state it prepares for; it is still computing when
            # the tell and the next ask come
            if threading.current_thread().name.startswith("beamsteer-ahead"):
                assert go.wait(10)
            return real_acquire(*args, **kw)

        live.engine._acquire = slow_acquire  # type: ignore[method-assign]
        (s,) = await service.suggest(exp_id, 1)
        await _tell(service, exp_id, s)
        live.ask_s = 30.0  # an ask takes long here: worth waiting for the prepare
        if newer_queued:
            live.ahead_wanted = (1, np.zeros((0, 2)))
        ask = asyncio.ensure_future(service.suggest(exp_id, 1))
        done, _ = await asyncio.wait([ask], timeout=5.0 if newer_queued else 0.3)
        go.set()
        await ask
        return _ahead(service), not done

    served_ahead, waited = asyncio.run(scenario())
    if newer_queued:  # computed its own picks at once
        assert not waited and served_ahead == 0.0
    else:
        assert waited  # the ask did not compute beside the prepare ...
        assert served_ahead == 1.0  # ... and took its pick


def test_a_prepare_the_next_tell_overtook_is_skipped(service: SteeringService) -> None:
    """A prepare that waited its turn until after the tell of its pending suggestion can
    not serve the next ask: it is skipped, and the thread goes on to other work."""
    service.settings.lookahead_room = 0  # prepare after every ask

    async def scenario() -> tuple[object, object]:
        exp_id = await _fitted_experiment(service, 4)
        live = service._live[exp_id]
        busy = threading.Event()
        service._ahead.submit(busy.wait, 10)  # another experiment's turn, until released
        (s,) = await service.suggest(exp_id, 1)  # its prepare queues behind that turn
        await _tell(service, exp_id, s)
        before = live.engine._ahead
        busy.set()
        await asyncio.to_thread(service.wait_for_lookahead, 10)
        return before, live.engine._ahead

    before, after = asyncio.run(scenario())
    assert before is None and after is None  # nothing was prepared for the told state


def test_a_refit_check_waiting_for_one_engine_does_not_hold_up_another(
        service: SteeringService) -> None:
    """Scheduling refits takes one guard for every experiment: the check of one engine,
    waiting for that engine's lock (held by an ingest's update), must not hold it."""
    a, b = _live(), _live()
    held, release = threading.Event(), threading.Event()

    def hold_a() -> None:
        with a.engine._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_a)
    holder.start()
    assert held.wait(10)
    waiting = threading.Thread(target=service._maybe_refit, args=("A", a))
    waiting.start()  # blocks on A's engine lock
    other = threading.Thread(target=service._maybe_refit, args=("B", b))
    other.start()
    other.join(5)
    done_meanwhile = not other.is_alive()
    release.set()
    for t in (holder, waiting, other):
        t.join(10)
    assert done_meanwhile
