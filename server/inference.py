"""Inference as the API process sees it: models, readiness, requests through the queue.

``InferenceService`` owns the queue (and, with the embedded default, a worker task inside
this process), knows which models exist (advertised by warm workers, else the shipped
weights' descriptions), and turns images into results, recording Triton-style metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from server.metrics import Metrics
from server.queue.base import (
    DeadlineExceeded,
    JobFailed,
    JobQueue,
    JobResult,
    QueueError,
    QueueFull,
    QueueUnavailable,
)
from server.queue.constants import DEFAULT_VERSION
from server.settings import Settings
from server.worker import Worker, new_worker_id, parse_models

log = logging.getLogger("beamsteer.inference")


class UnknownModel(LookupError):
    """No model of this name (and version) is served or shipped."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown model {name!r}; known: {sorted(known)}")
        self.name, self.known = name, list(known)


class ModelNotReady(LookupError):
    """The model exists but no warm worker serves it (yet): retry after ``retry_after`` s."""

    def __init__(self, name: str, retry_after: float = 1.0) -> None:
        super().__init__(f"model {name!r} is not ready: no warm worker serves it")
        self.name, self.retry_after = name, retry_after


_MODELS_TTL_S = 0.5


@lru_cache
def _shipped_names() -> list[str]:
    from models import registry

    return registry.available()


@lru_cache
def _shipped_description(name: str) -> dict[str, Any]:
    from models import registry

    return dataclasses.asdict(registry.load(name).info)


class InferenceService:
    """Models and inference requests over a :class:`JobQueue`."""

    def __init__(self, queue: JobQueue, settings: Settings, metrics: Metrics) -> None:
        self.queue, self.settings = queue, settings
        self.metrics = metrics.inference
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[int] | None = None
        self._models: tuple[float, dict[str, dict[str, Any]]] | None = None

    async def start(self) -> None:
        """Connect the queue; start the embedded worker (it loads models in the background,
        and the models are ready once it has warmed them)."""
        await self.queue.start()
        if self.settings.runs_embedded_worker:
            models = parse_models(self.settings.inference_models)
            wid = f"embedded-{new_worker_id()}"
            source = self.queue.worker_source([(m, DEFAULT_VERSION) for m in models], wid)
            self.worker = Worker(source, models, device=self.settings.inference_device,
                                 max_batch=self.settings.worker_max_batch,
                                 max_delay_ms=self.settings.worker_max_delay_ms, worker_id=wid)
            self._worker_task = asyncio.create_task(self.worker.run(), name="beamsteer-worker")
            self._worker_task.add_done_callback(_log_worker_end)

    async def stop(self) -> None:
        """Drain the embedded worker, then close the queue."""
        if self.worker is not None and self._worker_task is not None:
            self.worker.stop()
            await asyncio.wait([self._worker_task], timeout=30)
        await self.queue.close()

    # --- models -----------------------------------------------------------------------

    async def models(self) -> dict[str, dict[str, Any]]:
        """Every model known here: ``name -> description`` with ``ready`` and ``versions``.

        Cached for ``_MODELS_TTL_S``: every request asks, and with Redis each answer costs
        round trips; readiness a fraction of a second old is fine (a job waits for a
        worker until its deadline anyway).
        """
        now = time.monotonic()
        if self._models is None or now - self._models[0] > _MODELS_TTL_S:
            self._models = (now, await self._read_models())
        return self._models[1]

    async def _read_models(self) -> dict[str, dict[str, Any]]:
        served = await self.queue.served_models()
        out: dict[str, dict[str, Any]] = {}
        for (name, version), info in sorted(served.items()):
            entry = out.setdefault(name, {**info, "versions": [], "ready": True})
            entry["versions"].append(version)
        for name in self._shipped():
            if name not in out:
                out[name] = {**_shipped_description(name), "versions": [DEFAULT_VERSION],
                             "ready": False}
        return out

    def _shipped(self) -> list[str]:
        return _shipped_names()

    async def model(self, name: str) -> dict[str, Any]:
        """One model's description (raises UnknownModel)."""
        models = await self.models()
        if name not in models:
            raise UnknownModel(name, list(models))
        return models[name]

    # --- requests ---------------------------------------------------------------------

    async def infer(self, name: str, images: Sequence[np.ndarray], *,
                    params: Mapping[str, Any] | None = None, input_name: str = "image",
                    timeout_s: float | None = None,
                    version: str = DEFAULT_VERSION) -> list[JobResult]:
        """Run images through a model, one job each (they may share micro-batches).

        Raises:
            UnknownModel, ModelNotReady, QueueFull, DeadlineExceeded, JobFailed,
            QueueUnavailable.
        """
        if not (await self.model(name))["ready"]:
            self._models = None  # a cached "not ready" is not worth a 503: ask again
            if not (await self.model(name))["ready"]:
                raise ModelNotReady(name)
        deadline = time.time() + (timeout_s or self.settings.inference_timeout_s)
        labels = (name, version)
        handles = []
        try:
            for im in images:
                handles.append(await self.queue.enqueue_job(
                    name, {input_name: im}, params=params, version=version, deadline=deadline))
        except QueueError as exc:
            for h in handles:  # the request fails: nobody will wait for the ones queued
                h.cancel()
            outcome = "queue_full" if isinstance(exc, QueueFull) else "unavailable"
            self.metrics.requests.labels(*labels, outcome).inc()
            raise
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*[h.result() for h in handles], return_exceptions=True)
        elapsed = time.perf_counter() - t0
        for out in outcomes:
            self._observe(labels, out, elapsed)
        for out in outcomes:
            if isinstance(out, BaseException):
                raise out
        return list(outcomes)  # type: ignore[arg-type]

    def _observe(self, labels: tuple[str, str], out: JobResult | BaseException,
                 elapsed: float) -> None:
        m = self.metrics
        if isinstance(out, JobResult):
            m.requests.labels(*labels, "success").inc()
            m.queue_seconds.labels(*labels).observe(out.queue_s)
            m.compute_seconds.labels(*labels).observe(out.compute_s)
            m.batch_size.labels(*labels).observe(out.batch_size)
            m.request_seconds.labels(*labels).observe(elapsed)
        elif isinstance(out, DeadlineExceeded):
            m.requests.labels(*labels, "expired").inc()
        elif isinstance(out, JobFailed):
            m.requests.labels(*labels, out.result.status.value).inc()
        elif isinstance(out, QueueUnavailable):
            m.requests.labels(*labels, "unavailable").inc()

    async def refresh_gauges(self) -> None:
        """Queue depth, pending, dead letters and readiness, read at scrape time."""
        for name, info in (await self.models()).items():
            for version in info["versions"]:
                stats = await self.queue.stats(name, version)
                m = self.metrics
                m.queue_depth.labels(name, version).set(stats.depth)
                m.pending.labels(name, version).set(stats.pending)
                m.dead_lettered.labels(name, version).set(stats.dead_lettered)
                m.ready.labels(name, version).set(1 if info["ready"] else 0)


def _log_worker_end(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("embedded worker stopped", exc_info=task.exception())
