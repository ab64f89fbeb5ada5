"""``SteeringService.stop`` returns while refits run and others are queued (it used to
hang: a cancelled queued refit's callback submitted into the pool being shut down)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.service import SteeringService
from server.settings import Settings
from server.store.base import open_store
from tests.api.conftest import SPEC


async def test_stop_returns_with_refits_queued(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    service = SteeringService(store, Settings(data_dir=tmp_path, log_json=False,
                                              refit_threads=1))
    await service.start()
    try:
        points = [{"position": {"x": x / 2, "y": y / 2 - 5}, "values": {"intensity": x - y}}
                  for x in range(20) for y in range(20)]
        for _ in range(4):  # one refit runs (one thread), the others wait in the queue
            exp = await service.create_experiment(SPEC)
            await service.measure(exp.id, points)
        assert sum(1 for lv in service._live.values()  # noqa: SLF001
                   if lv.refit is not None and not lv.refit.done()) >= 2
    finally:
        await asyncio.wait_for(service.stop(), 30)
        store.close()
