"""One parametrized fixture runs the queue tests over both backends (after tiled's
``conftest.py``); Redis runs use their own key prefix, deleted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.queue.base import JobQueue, open_queue
from server.worker import Worker


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options that open a queue of the parametrized backend."""
    if request.param == "memory":
        return {"name": "memory"}
    return {"name": "redis", "url": request.getfixturevalue("redis_url"),
            "prefix": request.getfixturevalue("redis_prefix"), "claim_idle_ms": 300}


@pytest.fixture
async def make_queue(backend: dict[str, Any]) -> AsyncIterator[Callable[..., Any]]:
    """``await make_queue(max_depth=...)`` -> a started queue, closed after the test."""
    opened: list[JobQueue] = []

    async def make(**options: Any) -> JobQueue:
        q = open_queue(**{**backend, **options})
        await q.start()
        opened.append(q)
        return q

    yield make
    for q in opened:
        await q.close()


@pytest.fixture
def models(tagger_checkpoint: Path) -> dict[str, str | None]:
    """Shipped superres weights and the small test tagger."""
    return {"superres": None, "tagger": str(tagger_checkpoint)}


@contextlib.asynccontextmanager
async def running_worker(queue: JobQueue, models: dict[str, str | None],
                         **options: Any) -> AsyncIterator[Worker]:
    """A worker task over ``queue``, ready when entered, stopped (drained) on exit."""
    source = queue.worker_source([(m, "1") for m in models], f"test-{time.monotonic_ns()}")
    worker = Worker(source, models, device="cpu", **options)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait([task, ready], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # start-up failed: raise it
    try:
        yield worker
    finally:
        if not options.get("burst"):  # a burst worker stops by itself once the queue is empty
            worker.stop()
        await asyncio.wait_for(task, 30)


def images(n: int, shape: tuple[int, int] = (32, 32), seed: int = 0) -> list[np.ndarray]:
    """Poisson counts, like a detector's."""
    rng = np.random.default_rng(seed)
    return [rng.poisson(5.0, shape).astype(np.float32) for _ in range(n)]


def deadline(seconds: float = 20.0) -> float:
    return time.time() + seconds
