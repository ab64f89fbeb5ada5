"""Redis deployment without a running worker: deadlines give 504, a full queue gives 429."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import httpx
import pytest

from models import registry
from server.queue.base import open_queue
from server.worker import Worker
from tests.api.conftest import LiveServer, make_settings


@pytest.fixture
def idle_server(tmp_path, redis_url: str, redis_prefix: str) -> Iterator[LiveServer]:
    settings = make_settings(f"sqlite:///{tmp_path / 'b.db'}", tmp_path, redis_url=redis_url,
                             redis_prefix=redis_prefix, queue_max_depth=2)
    with LiveServer(settings) as live:
        yield live


async def _advertise(redis_url: str, prefix: str) -> None:
    """A worker that says it is warm, then never reads (e.g. stuck on a huge batch)."""
    source = open_queue("redis", url=redis_url, prefix=prefix).worker_source(
        [("superres", "1")], "stuck")
    await source.start()
    info = dataclasses.asdict(registry.load("superres").info)
    await source.advertise({("superres", "1"): {**info, "version": "1"}})
    await source.redis.aclose()  # not close(): that would withdraw the readiness


def test_deadline_504_then_queue_full_429(idle_server, redis_url, redis_prefix) -> None:
    body = {"image": [[1.0, 2.0], [3.0, 4.0]]}
    url = "/api/v1/models/superres/infer?format=json"
    with httpx.Client(base_url=idle_server.url, timeout=30) as c:
        assert c.post(url, json=body).status_code == 503  # no warm worker: 503
        asyncio.run(_advertise(redis_url, redis_prefix))
        for _ in range(2):
            r = c.post(url + "&timeout_s=0.3", json=body)
            assert r.status_code == 504 and "no result within" in r.json()["detail"], r.text
        r = c.post(url, json=body)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1", r.text
        metrics = c.get("/metrics").text
    assert 'outcome="expired",version="1"} 2.0' in metrics
    assert 'outcome="queue_full",version="1"} 1.0' in metrics
    assert 'beamsteer_inference_queue_depth{model="superres",version="1"} 2.0' in metrics

    async def drain() -> int:  # a real worker answers the stale jobs "expired" and empties it
        q = open_queue("redis", url=redis_url, prefix=redis_prefix)
        w = Worker(q.worker_source([("superres", "1")], "drain"), {"superres": None},
                   device="cpu", burst=True)
        return await w.run()

    assert asyncio.run(drain()) == 2
