"""The inference worker: loads models once, then micro-batches jobs through them.

After arq's ``Worker``: ``on_startup`` loads the nets onto the device and warms them, and
only then is readiness advertised; the loop reads a micro-batch (up to ``max_batch`` jobs,
waiting at most ``max_delay_ms`` for more after the first), runs one forward pass per
model and shape, replies and acknowledges. ``stop()`` (SIGTERM) lets the batch in hand
finish and reads nothing more; ``burst`` stops once the queue is empty (tests).

When the queue goes away (Redis restarting), the worker keeps trying with backoff instead
of exiting; replies of the batch in hand are retried until their deadlines pass, and once
the queue answers again the worker advertises itself at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from server.queue.base import (
    Job,
    JobResult,
    JobSource,
    JobStatus,
    QueueUnavailable,
    Retry,
    backoff,
)
from server.queue.constants import DEFAULT_VERSION, HEARTBEAT_S

log = logging.getLogger("beamsteer.worker")


def parse_models(text: str) -> dict[str, str | None]:
    """``"superres,tagger=/ckpt/tagger.pt"`` -> ``{"superres": None, "tagger": "/ckpt/..."}``.

    A bare name means the shipped weights; an empty string means every shipped model.
    """
    if not text.strip():
        from models import registry

        return dict.fromkeys(registry.available())
    out: dict[str, str | None] = {}
    for part in text.split(","):
        name, _, path = part.strip().partition("=")
        if name:
            out[name] = path or None
    return out


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def set_precision(device: str, allow_tf32: bool) -> None:
    """Full float32 on CUDA unless ``allow_tf32``: PyTorch lets cuDNN convolutions use TF32
    by default, which on an H100 moved the tagger's probabilities by 1e-3 and superres's
    counts by 4e-4 of their range against the CPU (1e-6 without TF32). A value that steers
    an experiment should not depend on which worker computed it; these nets are too small
    for TF32's speed to matter (the queue, not the GPU, bounds their throughput)."""
    if device.startswith("cuda"):
        import torch

        torch.backends.cudnn.allow_tf32 = allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


def new_worker_id() -> str:
    """Host, pid and a random suffix: unique, and readable in XPENDING."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Reads micro-batches from a :class:`JobSource` and runs them through the models.

    Args:
        source: Where jobs come from (its models must be those named here).
        models: ``{name: checkpoint path or None for the shipped weights}``.
        version: Version served for every model.
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``.
        max_batch: Most jobs per forward pass.
        max_delay_ms: Longest wait for more jobs once one has arrived.
        burst: Stop when the queue is empty instead of waiting for more.
        slow_ms: Sleep before each forward pass (tests and demos of crash recovery).
        allow_tf32: Let CUDA convolutions and matmuls use TF32 (faster, ~1e-3 relative
            error); off by default, so that GPU and CPU workers agree to ~1e-6.
    """

    def __init__(self, source: JobSource, models: Mapping[str, str | Path | None], *,
                 version: str = DEFAULT_VERSION, device: str = "auto", max_batch: int = 32,
                 max_delay_ms: float = 5.0, burst: bool = False, worker_id: str | None = None,
                 slow_ms: float = 0.0, allow_tf32: bool = False) -> None:
        self.source, self.models, self.version = source, dict(models), version
        self.device, self.allow_tf32 = device, allow_tf32
        self.max_batch, self.max_delay_s = max_batch, max_delay_ms / 1000
        self.burst, self.slow_s = burst, slow_ms / 1000
        self.worker_id = worker_id or new_worker_id()
        self.ctx: dict[str, Any] = {}  # arq's ctx: what on_startup made (runners, device)
        self.jobs_done = 0
        self.ready = asyncio.Event()
        self._stopping = False
        self._pool = ThreadPoolExecutor(1, "beamsteer-infer")  # one forward pass at a time

    def stop(self) -> None:
        """Finish the batch in hand, then return from :meth:`run` (SIGTERM)."""
        self._stopping = True

    async def on_startup(self) -> None:
        """Load every model once onto the device and warm it; then advertise readiness."""
        loop = asyncio.get_running_loop()
        self.ctx["device"] = await loop.run_in_executor(self._pool, pick_device, self.device)
        self.ctx["runners"] = await loop.run_in_executor(self._pool, self._load)
        await self.source.advertise(self._adverts())
        self.ready.set()
        log.info("worker ready", extra={"worker": self.worker_id, "device": self.ctx["device"],
                                        "models": sorted(self.models)})

    def _load(self) -> dict[str, Any]:
        from models import registry
        from server.runners import ModelRunner

        set_precision(self.ctx["device"], self.allow_tf32)
        runners = {}
        for name, path in self.models.items():
            loaded = registry.load(path or name, device=self.ctx["device"])
            runner = ModelRunner(loaded, self.version)
            runner.warm_up()
            runners[name] = runner
        return runners

    def _adverts(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(n, self.version): {**r.describe(), "max_batch": self.max_batch,
                                    "tf32": self.allow_tf32 and r.device.type == "cuda"}
                for n, r in self.ctx["runners"].items()}

    async def run(self) -> int:
        """Start up, then serve until stopped (or, in burst mode, until the queue is empty).

        Returns:
            The number of jobs answered.
        """
        await self.source.start()
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self.on_startup()
            heartbeat = asyncio.create_task(self._heartbeat())
            failures = 0
            while not self._stopping:
                try:
                    if await self._step():
                        break
                    if failures:
                        failures = 0
                        await self.source.advertise(self._adverts())  # it may have restarted
                        log.info("queue is back", extra={"worker": self.worker_id})
                except QueueUnavailable as exc:
                    failures += 1
                    wait = backoff(failures)
                    log.warning("queue unavailable; retrying",
                                extra={"worker": self.worker_id, "error": str(exc),
                                       "failures": failures, "retry_in_s": round(wait, 3)})
                    await asyncio.sleep(wait)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            await self.source.close()
            self._pool.shutdown(wait=False)
        log.info("worker stopped", extra={"worker": self.worker_id, "jobs": self.jobs_done})
        return self.jobs_done

    async def _step(self) -> bool:
        """Read and serve one batch; True when a burst worker is done."""
        jobs = await self.source.read_batch(self.max_batch, self.max_delay_s, 0.25)
        if jobs:
            await self._process(jobs)
            return False
        return self.burst and await self.source.remaining() == 0

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.source.advertise(self._adverts())
            except Exception:
                log.warning("heartbeat failed", exc_info=True)

    async def _process(self, jobs: list[Job]) -> None:
        """Drop the expired, run the rest grouped by model, reply, acknowledge."""
        done: list[tuple[Job, JobResult]] = []
        by_model: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            if job.expired:
                done.append((job, JobResult(job.id, JobStatus.expired, enqueued_at=job.enqueued_at,
                                            error="deadline passed before compute",
                                            worker=self.worker_id)))
            else:
                by_model[job.model].append(job)
        for model, group in by_model.items():
            done += await self._compute(model, group)
        if done:
            await self._finish(done)
        self.jobs_done += len(done)

    async def _finish(self, done: list[tuple[Job, JobResult]]) -> None:
        """Reply and acknowledge; while the queue is unavailable, try again until the
        batch's last deadline has passed (no caller waits longer; an unacknowledged job
        is delivered again, and then answered "expired")."""
        failures = 0
        last = max(job.deadline for job, _ in done)
        while True:
            try:
                await self.source.finish(done)
                return
            except QueueUnavailable as exc:
                failures += 1
                if time.time() >= last or self._stopping:
                    raise
                wait = backoff(failures)
                log.warning("queue unavailable; retrying the replies of a batch",
                            extra={"worker": self.worker_id, "error": str(exc),
                                   "jobs": len(done), "retry_in_s": round(wait, 3)})
                await asyncio.sleep(wait)

    async def _compute(self, model: str, jobs: list[Job]) -> list[tuple[Job, JobResult]]:
        runner = self.ctx["runners"].get(model)
        t0 = time.time()
        if runner is None:
            outcomes: list[Any] = [LookupError(f"model {model!r} not served here")] * len(jobs)
        else:
            if self.slow_s:
                await asyncio.sleep(self.slow_s)
            outcomes = await asyncio.get_running_loop().run_in_executor(
                self._pool, runner.run, jobs)
        t1 = time.time()
        done = []
        for job, out in zip(jobs, outcomes, strict=True):
            res = JobResult(job.id, JobStatus.complete, enqueued_at=job.enqueued_at,
                            started_at=t0, finished_at=t1, batch_size=len(jobs),
                            worker=self.worker_id)
            if isinstance(out, Retry):
                await self.source.retry(job)
            elif isinstance(out, Exception):
                res.status = JobStatus.failed
                res.error = f"{model} refused the input: {type(out).__name__}: {out}"
                log.warning("job failed", extra={"job_id": job.id, "error": res.error})
                await self.source.dead_letter(job, res)
            else:
                res.outputs = out
                done.append((job, res))
        return done
