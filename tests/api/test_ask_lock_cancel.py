"""An ask cancelled at any moment (a client that hangs up) never leaves the experiment's
PostgreSQL ask lock held: the next ask gets it at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from server.service import SteeringService
from server.settings import Settings
from server.store.base import open_store
from tests.api.conftest import SPEC


async def test_cancelled_asks_release_the_lock(postgres_url: str, tmp_path: Path) -> None:
    store = open_store(postgres_url)
    settings = Settings(data_dir=tmp_path, log_json=False, ask_lock_timeout_s=3)
    service = SteeringService(store, settings)
    await service.start()
    try:
        exp = await service.create_experiment(SPEC)
        for delay in (0.0, 0.0005, 0.002, 0.005, 0.01, 0.02, 0.05):
            task = asyncio.create_task(service.suggest(exp.id, 1))
            await asyncio.sleep(delay)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # Raises Busy after 3 s if a cancelled ask kept the lock.
            (s,) = await service.suggest(exp.id, 1)
            await service.abandon(exp.id, s.id)
    finally:
        await service.stop()
        store.close()


async def test_asks_waiting_for_another_process_do_not_hold_up_tells(
        postgres_url: str, tmp_path: Path) -> None:
    """Another process holds the ask locks of eight experiments: their asks here wait (on
    threads of their own), and a tell to a ninth is stored meanwhile, not after them. The
    default pool has 6 threads on 2 cores (set here: more cores have more): the waits held
    them all before."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(6))
    store = open_store(postgres_url)
    other = open_store(postgres_url)  # the other process's connections
    service = SteeringService(store, Settings(data_dir=tmp_path, log_json=False,
                                              ask_lock_timeout_s=30))
    await service.start()
    leases: list = []
    try:
        exps = [await service.create_experiment({**SPEC, "name": f"held-{i}"})
                for i in range(9)]
        leases = [other.lock_asks(e.id, 5.0) for e in exps[:8]]
        asks = [asyncio.create_task(service.suggest(e.id, 1)) for e in exps[:8]]
        await asyncio.sleep(0.5)  # every ask is waiting for its lock now
        assert not any(a.done() for a in asks)
        tell = service.measure(exps[8].id, [{"position": {"x": 1.0, "y": 0.0},
                                             "values": {"intensity": 1.0}}])
        stored = await asyncio.wait_for(tell, timeout=20)  # the asks wait up to 30 s
        assert stored.created == [True]
        assert not any(a.done() for a in asks)  # still waiting: the tell did not wait
        while leases:
            leases.pop().release()
        done = await asyncio.wait_for(asyncio.gather(*asks), timeout=30)
        assert all(len(s) == 1 for s in done)
    finally:
        for lease in leases:
            lease.release()
        await service.stop()
        other.close()
        store.close()
