"""The inference queue's interface, with an in-process and a Redis Streams backend.

Two sides, one interface each (after tiled's ``StreamingDatastore`` Protocol):

* :class:`JobQueue` is what the API process holds: ``enqueue_job`` returns a
  :class:`JobHandle` whose ``result()`` waits for the reply until the job's deadline.
* :class:`JobSource` is what a worker reads from: micro-batches of :class:`Job`, then
  ``finish`` (reply and acknowledge) or ``dead_letter`` each one.

Backends register with :func:`register_queue` and are picked by name ("memory", "redis")
with :func:`open_queue`. This module imports no Redis.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from server.queue.constants import DEFAULT_VERSION

# Waits between tries while a queue is unavailable (reply reader, workers): 50 ms,
# doubling up to 2 s, so a restarted Redis is found again within about 2 s.
BACKOFF_S, MAX_BACKOFF_S = 0.05, 2.0


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row (half fixed, half jitter, so
    many processes do not retry in step)."""
    base = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** max(0, failures - 1))
    return base / 2 + random.random() * base / 2


class JobStatus(StrEnum):
    """Where a job is (arq's words)."""

    queued = "queued"
    in_progress = "in_progress"
    complete = "complete"
    failed = "failed"  # the model refused this job's input
    expired = "expired"  # its deadline passed before compute
    dead_lettered = "dead_lettered"  # delivered too often (workers died) or undecodable


class QueueError(Exception):
    """Base of the queue's errors."""


class QueueFull(QueueError):
    """The model's queue holds ``depth`` jobs, its bound: retry after ``retry_after`` s."""

    def __init__(self, model: str, depth: int, retry_after: float = 1.0) -> None:
        super().__init__(f"the queue of model {model!r} is full ({depth} jobs); retry later")
        self.model, self.depth, self.retry_after = model, depth, retry_after


class QueueUnavailable(QueueError):
    """The queue's server (Redis) does not answer, or restarted without a job in flight:
    retry after ``retry_after`` s (an inference request is safe to repeat)."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(f"the inference queue is unavailable ({reason})")
        self.reason, self.retry_after = reason, retry_after


class DeadlineExceeded(QueueError):
    """No result before the job's deadline (it was dropped if it had not started)."""

    def __init__(self, job_id: str, model: str, waited_s: float) -> None:
        super().__init__(f"job {job_id} on model {model!r}: no result within {waited_s:.3g} s")
        self.job_id, self.model, self.waited_s = job_id, model, waited_s


class JobFailed(QueueError):
    """The job ended without a result; ``result.error`` says why, ``result.status`` how."""

    def __init__(self, result: JobResult) -> None:
        super().__init__(f"job {result.job_id} {result.status.value}: {result.error}")
        self.result = result

    @property
    def bad_input(self) -> bool:
        """Whether the model refused the input (else a worker or the queue failed)."""
        return self.result.status == JobStatus.failed


class Retry(Exception):  # noqa: N818 - arq's name: a job function asks to be run again
    """Raised by a job function to have the job delivered again (e.g. a CUDA OOM)."""


@dataclass
class Job:
    """One inference request, as a worker sees it.

    Args:
        id: Unique job id.
        model: Registry name, e.g. ``"tagger"``.
        version: Model version served.
        inputs: Named arrays, e.g. ``{"image": H x W}``.
        params: Model parameters, e.g. ``{"factor": 4}`` (JSON-able).
        deadline: UNIX seconds after which the result is useless.
        enqueued_at: UNIX seconds.
        deliveries: How many times a worker received it (1 = first time).
        receipt: What the backend needs to acknowledge it (opaque to the worker).
    """

    id: str
    model: str
    version: str
    inputs: dict[str, np.ndarray]
    params: dict[str, Any]
    deadline: float
    enqueued_at: float
    deliveries: int = 1
    receipt: Any = None

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.time() >= self.deadline


@dataclass
class JobResult:
    """The reply to a job: outputs, or why there are none, and where the time went."""

    job_id: str
    status: JobStatus
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    enqueued_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    batch_size: int = 0
    worker: str = ""

    @property
    def queue_s(self) -> float:
        """Seconds from enqueue to the start of compute."""
        return max(0.0, self.started_at - self.enqueued_at)

    @property
    def compute_s(self) -> float:
        """Seconds of the batch's forward pass this job was part of."""
        return max(0.0, self.finished_at - self.started_at)

    def header(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-able."""
        return {"job_id": self.job_id, "status": self.status.value, "error": self.error,
                "enqueued_at": self.enqueued_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "batch_size": self.batch_size,
                "worker": self.worker}

    @classmethod
    def from_header(cls, h: Mapping[str, Any], outputs: dict[str, np.ndarray]) -> JobResult:
        """Inverse of :meth:`header`."""
        return cls(job_id=h["job_id"], status=JobStatus(h["status"]), outputs=outputs,
                   error=h.get("error"), enqueued_at=h.get("enqueued_at", 0.0),
                   started_at=h.get("started_at", 0.0), finished_at=h.get("finished_at", 0.0),
                   batch_size=h.get("batch_size", 0), worker=h.get("worker", ""))


@dataclass(frozen=True)
class QueueStats:
    """Gauges of one model's queue: jobs not finished, of which delivered, and dead letters."""

    depth: int
    pending: int
    dead_lettered: int


class JobHandle:
    """A job in flight, as its caller holds it."""

    def __init__(self, job_id: str, model: str, deadline: float,
                 future: asyncio.Future[JobResult], forget: Callable[[str], None]) -> None:
        self.id, self.model, self.deadline = job_id, model, deadline
        self._future, self._forget = future, forget
        self._t0 = time.time()

    def cancel(self) -> None:
        """Stop waiting for the reply (the caller will not ask for it)."""
        self._forget(self.id)

    async def result(self) -> JobResult:
        """Wait for the reply.

        Raises:
            DeadlineExceeded: no reply before the deadline (or the worker said expired).
            JobFailed: the model refused the input, or the job was dead-lettered.
            QueueUnavailable: the queue lost the job (Redis restarted without it).
        """
        try:
            res = await asyncio.wait_for(asyncio.shield(self._future),
                                         max(0.0, self.deadline - time.time()))
        except TimeoutError:
            raise DeadlineExceeded(self.id, self.model, time.time() - self._t0) from None
        finally:
            self._forget(self.id)
        if res.status == JobStatus.expired:
            raise DeadlineExceeded(self.id, self.model, time.time() - self._t0)
        if res.status != JobStatus.complete:
            raise JobFailed(res)
        return res


class JobQueue(Protocol):
    """The API process's side of the queue."""

    name: str

    async def start(self) -> None:
        """Connect and start reading replies."""

    async def close(self) -> None:
        """Stop reading replies; jobs in flight fail with DeadlineExceeded at their deadline."""

    async def enqueue_job(self, model: str, inputs: Mapping[str, np.ndarray], *,
                          params: Mapping[str, Any] | None = None,
                          version: str = DEFAULT_VERSION, deadline: float) -> JobHandle:
        """Put a job on the model's queue. Raises QueueFull when the queue is at its bound."""

    async def stats(self, model: str, version: str = DEFAULT_VERSION) -> QueueStats:
        """Depth, pending and dead-lettered counts of one model's queue."""

    async def served_models(self) -> dict[tuple[str, str], dict[str, Any]]:
        """``(model, version) -> description`` advertised by ready workers."""

    def worker_source(self, models: list[tuple[str, str]], worker_id: str) -> JobSource:
        """A job source over the same queue (embedded workers, tests)."""


class JobSource(Protocol):
    """A worker's side of the queue."""

    async def start(self) -> None:
        """Connect (and create consumer groups)."""

    async def close(self) -> None:
        """Withdraw readiness and disconnect."""

    async def read_batch(self, max_batch: int, max_delay_s: float, block_s: float) -> list[Job]:
        """Up to ``max_batch`` jobs: block up to ``block_s`` for the first, then wait at most
        ``max_delay_s`` for more. Returns [] when nothing came."""

    async def finish(self, done: Sequence[tuple[Job, JobResult]]) -> None:
        """Reply to the callers and acknowledge the jobs (each reply and its ack together)."""

    async def dead_letter(self, job: Job, result: JobResult) -> None:
        """Record the job as dead, reply the failure to its caller, acknowledge it."""

    async def retry(self, job: Job) -> None:
        """Give a job back unanswered, to be delivered again (a job function raised Retry)."""

    async def advertise(self, models: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        """Announce (and refresh) that this worker serves ``models`` and is warm."""

    async def remaining(self) -> int:
        """Jobs not finished on this source's models (burst mode stops at 0)."""


QueueFactory = Callable[..., JobQueue]
_BACKENDS: dict[str, QueueFactory] = {}
_MODULES = {"memory": "server.queue.memory", "redis": "server.queue.redis_streams"}


def register_queue(name: str) -> Callable[[QueueFactory], QueueFactory]:
    """Class decorator: make a backend available to :func:`open_queue` by name."""

    def deco(factory: QueueFactory) -> QueueFactory:
        _BACKENDS[name] = factory
        return factory

    return deco


def open_queue(name: str, **options: Any) -> JobQueue:
    """Build a queue backend: ``"memory"`` (in-process) or ``"redis"`` (``url=``, ``prefix=``)."""
    if name in _MODULES:  # importing the module registers it; Redis only when asked for
        importlib.import_module(_MODULES[name])
    if name not in _BACKENDS:
        raise ValueError(f"no queue backend {name!r}; known: {sorted(_BACKENDS)}")
    return _BACKENDS[name](**options)
