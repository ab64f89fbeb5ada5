"""An ask cancelled at any moment (a client that hangs up) never leaves the experiment's
PostgreSQL ask lock held: the next ask gets it at once."""

from __future__ import annotations

import asyncio
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
