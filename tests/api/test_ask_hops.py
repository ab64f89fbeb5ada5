"""The ask's one-hop path (lock, read, compute, write, unlock in one compute-pool call) and
its way back to the event loop when the engine lags behind the store, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from server.service import SteeringService
from server.settings import Settings
from server.steering.errors import Conflict
from server.store.base import ExperimentStatus, NewMeasurement, SuggestionStatus, open_store
from tests.api.conftest import SPEC


@pytest.fixture(params=["sqlite", "postgresql"])
async def service(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[SteeringService]:
    url = (request.getfixturevalue("sqlite_url") if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = open_store(url)
    # a short lock timeout: an ask that kept the PostgreSQL lock makes the next one Busy
    svc = SteeringService(store, Settings(data_dir=tmp_path, log_json=False,
                                          ask_lock_timeout_s=3))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        store.close()


def _m(x: float, y: float) -> dict:
    return {"position": {"x": x, "y": y}, "values": {"intensity": x - y}}


async def test_an_ask_catches_up_on_measurements_another_process_stored(
        service: SteeringService) -> None:
    exp = await service.create_experiment(SPEC)
    await service.measure(exp.id, [_m(1.0 + i, -2.0 + 0.5 * i) for i in range(6)])
    service.wait_for_refits()
    # Another API process stored two more: the store has them, this engine does not.
    service.store.add_measurements(exp.id, [
        NewMeasurement(position={"x": 9.0, "y": 4.0}, values={"intensity": 5.0}, noise={},
                       suggestion_id=None, key=None, metadata={}),
        NewMeasurement(position={"x": 0.5, "y": 4.5}, values={"intensity": -4.0}, noise={},
                       suggestion_id=None, key=None, metadata={})])
    live = service._live[exp.id]
    assert live.engine.status().n == 6
    (s,) = await service.suggest(exp.id, 1)
    assert live.engine.status().n == 8 and live.seqs == set(range(1, 9))
    pending = service.store.list_suggestions(exp.id, status=SuggestionStatus.pending)
    assert [p.id for p in pending] == [s.id]  # committed before the reply
    (again,) = await service.suggest(exp.id, 1)  # the lock was given back
    assert again.id != s.id and again.position != s.position


async def test_one_hop_asks_are_stored_distinct_and_release_the_lock(
        service: SteeringService) -> None:
    exp = await service.create_experiment(SPEC)
    await service.measure(exp.id, [_m(1.0 + i, -2.0 + 0.5 * i) for i in range(8)])
    service.wait_for_refits()
    batches = await asyncio.gather(*(service.suggest(exp.id, 2) for _ in range(3)))
    ids = {s.id for b in batches for s in b}
    positions = {tuple(s.position.values()) for b in batches for s in b}
    assert len(ids) == len(positions) == 6
    pending = service.store.list_suggestions(exp.id, status=SuggestionStatus.pending)
    assert {p.id for p in pending} == ids


async def test_a_refused_ask_gives_the_lock_back(service: SteeringService) -> None:
    exp = await service.create_experiment(SPEC)
    await service.measure(exp.id, [_m(1.0 + i, -2.0 + 0.5 * i) for i in range(6)])
    await service.set_status(exp.id, ExperimentStatus.paused)
    with pytest.raises(Conflict):
        await service.suggest(exp.id, 1)
    await service.set_status(exp.id, ExperimentStatus.active)
    (s,) = await service.suggest(exp.id, 1)  # Busy after 3 s if the refusal kept the lock
    assert s.status == SuggestionStatus.pending


async def test_asks_waiting_for_another_process_leave_the_compute_threads_free(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two experiments' ask locks held by "another process": their asks wait on I/O
    threads, so a third experiment's posterior (compute pool, 2 threads) is answered while
    they wait; once the locks go, both asks complete."""
    store = open_store(request.getfixturevalue("postgres_url"))
    svc = SteeringService(store, Settings(data_dir=tmp_path, log_json=False,
                                          ask_lock_timeout_s=30, compute_threads=2))
    await svc.start()
    try:
        exps = [await svc.create_experiment(SPEC) for _ in range(3)]
        for e in exps:
            await svc.measure(e.id, [_m(1.0 + i, -2.0 + 0.5 * i) for i in range(6)])
        svc.wait_for_refits()
        other = open_store(request.getfixturevalue("postgres_url"))  # the other process
        leases = [await asyncio.to_thread(other.lock_asks, e.id) for e in exps[:2]]
        try:
            asks = [asyncio.create_task(svc.suggest(e.id, 1)) for e in exps[:2]]
            await asyncio.sleep(0.5)  # both asks are waiting for the locks
            post = await asyncio.wait_for(
                svc.posterior(exps[2].id, np.array([[0.0, 0.0], [1.0, 1.0]])), 20)
            assert np.isfinite(post.mean["intensity"]).all()
            assert not any(a.done() for a in asks), "an ask did not wait for the lock"
        finally:
            for lease in leases:
                await asyncio.to_thread(lease.release)
        done = await asyncio.wait_for(asyncio.gather(*asks), 20)
        assert [len(b) for b in done] == [1, 1]
        other.close()
    finally:
        await svc.stop()
        store.close()
