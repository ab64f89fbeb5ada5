"""The embedded queue: asyncio, in one process (the default when no Redis is configured).

The API process runs a worker task over :meth:`MemoryQueue.worker_source`, so everything
the Redis backend does (bounds, deadlines, micro-batches, readiness) behaves the same with
nothing else running. Nothing survives the process: there is nobody else to hand jobs to.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from server.queue.base import (
    Job,
    JobHandle,
    JobResult,
    JobSource,
    QueueFull,
    QueueStats,
    register_queue,
)
from server.queue.constants import DEFAULT_VERSION

Key = tuple[str, str]


@register_queue("memory")
class MemoryQueue:
    """Per-model bounded deques, a future per job, and a wake-up event for workers."""

    name = "memory"

    def __init__(self, max_depth: int = 1000, **_: Any) -> None:
        self.max_depth = max_depth
        self._jobs: dict[Key, deque[Job]] = {}
        self._in_progress: dict[Key, int] = {}
        self._dead: dict[Key, int] = {}
        self._futures: dict[str, asyncio.Future[JobResult]] = {}
        self._served: dict[Key, dict[str, Any]] = {}
        self._wake = asyncio.Event()

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Fail nothing: callers' deadlines end their waits."""

    async def enqueue_job(self, model: str, inputs: Mapping[str, np.ndarray], *,
                          params: Mapping[str, Any] | None = None,
                          version: str = DEFAULT_VERSION, deadline: float) -> JobHandle:
        """Append a job; QueueFull past ``max_depth`` jobs not yet finished."""
        key = (model, version)
        q = self._jobs.setdefault(key, deque())
        depth = len(q) + self._in_progress.get(key, 0)
        if depth >= self.max_depth:
            raise QueueFull(model, depth)
        job = Job(id=uuid.uuid4().hex, model=model, version=version, inputs=dict(inputs),
                  params=dict(params or {}), deadline=deadline, enqueued_at=time.time())
        fut: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._futures[job.id] = fut
        q.append(job)
        self._wake.set()
        return JobHandle(job.id, model, deadline, fut, self._forget)

    def _forget(self, job_id: str) -> None:
        self._futures.pop(job_id, None)

    async def stats(self, model: str, version: str = DEFAULT_VERSION) -> QueueStats:
        """Gauges of one model's queue."""
        key = (model, version)
        busy = self._in_progress.get(key, 0)
        return QueueStats(len(self._jobs.get(key, ())) + busy, busy, self._dead.get(key, 0))

    async def served_models(self) -> dict[Key, dict[str, Any]]:
        """What the embedded worker advertised."""
        return dict(self._served)

    def worker_source(self, models: list[Key], worker_id: str) -> JobSource:
        """The embedded worker's view of this queue."""
        return _MemorySource(self, models)

    # --- worker side ------------------------------------------------------------------

    def _take(self, models: list[Key], n: int) -> list[Job]:
        """Up to ``n`` jobs of the first model (in ``models`` order) that has any."""
        for key in models:
            q = self._jobs.get(key)
            if q:
                out = [q.popleft() for _ in range(min(n, len(q)))]
                self._in_progress[key] = self._in_progress.get(key, 0) + len(out)
                return out
        return []

    def _reply(self, job: Job, result: JobResult) -> None:
        key = (job.model, job.version)
        self._in_progress[key] = max(0, self._in_progress.get(key, 0) - 1)
        fut = self._futures.get(job.id)
        if fut is not None and not fut.done():
            fut.set_result(result)


class _MemorySource:
    """Reads micro-batches of one model at a time from a :class:`MemoryQueue`."""

    def __init__(self, queue: MemoryQueue, models: list[Key]) -> None:
        self.queue, self.models = queue, models

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Withdraw readiness."""
        for key in self.models:
            self.queue._served.pop(key, None)

    async def read_batch(self, max_batch: int, max_delay_s: float, block_s: float) -> list[Job]:
        """First job within ``block_s``, then more of the same model for ``max_delay_s``."""
        q = self.queue
        jobs = q._take(self.models, max_batch)
        if not jobs:
            q._wake.clear()
            try:
                await asyncio.wait_for(q._wake.wait(), block_s)
            except TimeoutError:
                return []
            jobs = q._take(self.models, max_batch)
            if not jobs:
                return []
        key = [(jobs[0].model, jobs[0].version)]
        t_end = time.monotonic() + max_delay_s
        while len(jobs) < max_batch and (left := t_end - time.monotonic()) > 0:
            q._wake.clear()
            try:
                await asyncio.wait_for(q._wake.wait(), left)
            except TimeoutError:
                pass
            jobs += q._take(key, max_batch - len(jobs))
        return jobs

    async def finish(self, done: Sequence[tuple[Job, JobResult]]) -> None:
        """Resolve the callers' futures."""
        for job, result in done:
            self.queue._reply(job, result)

    async def dead_letter(self, job: Job, result: JobResult) -> None:
        """Count it as dead and tell the caller."""
        key = (job.model, job.version)
        self.queue._dead[key] = self.queue._dead.get(key, 0) + 1
        self.queue._reply(job, result)

    async def retry(self, job: Job) -> None:
        """Put the job back at the front of its queue."""
        key = (job.model, job.version)
        self.queue._in_progress[key] = max(0, self.queue._in_progress.get(key, 0) - 1)
        job.deliveries += 1
        self.queue._jobs.setdefault(key, deque()).appendleft(job)
        self.queue._wake.set()

    async def advertise(self, models: Mapping[Key, Mapping[str, Any]]) -> None:
        """Mark the models ready."""
        for key, info in models.items():
            self.queue._served[key] = dict(info)

    async def remaining(self) -> int:
        """Jobs queued or in progress on this source's models."""
        q = self.queue
        return sum(len(q._jobs.get(k, ())) + q._in_progress.get(k, 0) for k in self.models)
