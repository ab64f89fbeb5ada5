"""Redis only: a worker SIGKILLed holding a batch loses nothing; redelivery has a limit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from models import registry
from server.queue import constants as k
from server.queue.base import JobFailed, JobResult, JobStatus, open_queue
from server.queue.codec import pack
from tests.queue.conftest import deadline, images, running_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def queue(redis_url: str, redis_prefix: str):
    q = open_queue("redis", url=redis_url, prefix=redis_prefix, claim_idle_ms=300,
                   max_deliveries=3)
    await q.start()
    yield q
    await q.close()


def _pending_of(r: redis.Redis, stream: str) -> dict[str, int]:
    try:
        return {c["name"].decode(): int(c["pending"]) for c in r.xinfo_consumers(stream, k.GROUP)}
    except redis.ResponseError:
        return {}


async def test_sigkilled_worker_batch_is_completed_by_another_once(
        queue, redis_url: str, redis_prefix: str) -> None:
    ims = images(6)
    handles = [await queue.enqueue_job("superres", {"counts": im}, params={"factor": 2},
                                       deadline=deadline(120)) for im in ims]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    doomed = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "worker", "--redis-url", redis_url,
         "--prefix", redis_prefix, "--models", "superres", "--device", "cpu",
         "--max-batch", "6", "--max-delay-ms", "300", "--slow-ms", "600000", "--threads", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    r = redis.Redis.from_url(redis_url)
    stream = k.stream_key(redis_prefix, "superres", "1")
    try:
        t_end = time.monotonic() + 90
        while sum(_pending_of(r, stream).values()) < 6:  # it holds the whole batch
            assert doomed.poll() is None, doomed.stderr.read().decode()[-2000:]
            assert time.monotonic() < t_end, "the worker never took the batch"
            await asyncio.sleep(0.1)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
        doomed.stderr.close()
    assert all(not h._future.done() for h in handles)

    async with running_worker(queue, {"superres": None}, burst=True) as rescuer:
        results = await asyncio.wait_for(asyncio.gather(*[h.result() for h in handles]), 60)
    assert rescuer.jobs_done == 6
    direct = registry.load("superres")
    for im, res in zip(ims, results, strict=True):
        np.testing.assert_allclose(res.outputs["counts"], direct.predict(im, factor=2),
                                   rtol=1e-4, atol=1e-4)
    assert sorted(res.job_id for res in results) == sorted(h.id for h in handles)
    assert r.xlen(stream) == 0 and sum(_pending_of(r, stream).values()) == 0

    # A late duplicate reply (the dead worker's, had it lived) reaches nobody.
    dup = JobResult(handles[0].id, JobStatus.complete, outputs={"counts": np.zeros(1)})
    r.rpush(queue.reply_to, pack(dup.header(), dup.outputs))
    await asyncio.sleep(0.3)
    assert r.llen(queue.reply_to) == 0 and results[0].outputs["counts"].shape == (64, 64)
    r.close()


async def test_job_delivered_too_often_is_dead_lettered_with_a_clear_error(
        queue, redis_url: str, redis_prefix: str) -> None:
    handle = await queue.enqueue_job("superres", {"counts": images(1)[0]},
                                     deadline=deadline(60))
    r = redis.Redis.from_url(redis_url)
    stream = k.stream_key(redis_prefix, "superres", "1")
    r.xgroup_create(stream, k.GROUP, id="0")
    ((_, [(eid, _)]),) = r.xreadgroup(k.GROUP, "ghost", {stream: ">"}, count=1)
    r.xclaim(stream, k.GROUP, "ghost", 0, [eid], retrycount=3)  # it died three times
    await asyncio.sleep(0.35)  # idle past claim_idle_ms

    async with running_worker(queue, {"superres": None}, burst=True):
        with pytest.raises(JobFailed) as info:
            await asyncio.wait_for(handle.result(), 30)
    assert info.value.result.status == JobStatus.dead_lettered
    assert "delivered 4 times" in str(info.value)
    dead = r.xrange(k.dead_letter_key(redis_prefix, "superres", "1"))
    assert len(dead) == 1 and dead[0][1][b"job_id"] == handle.id.encode()
    assert r.xlen(stream) == 0
    r.close()


async def test_sigterm_drains_the_batch_in_hand(queue, redis_url: str, redis_prefix: str) -> None:
    handles = [await queue.enqueue_job("superres", {"counts": im}, deadline=deadline(120))
               for im in images(4)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "worker", "--redis-url", redis_url,
         "--prefix", redis_prefix, "--models", "superres", "--device", "cpu",
         "--max-batch", "4", "--max-delay-ms", "300", "--slow-ms", "1500", "--threads", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    r = redis.Redis.from_url(redis_url)
    stream = k.stream_key(redis_prefix, "superres", "1")
    try:
        t_end = time.monotonic() + 90
        while sum(_pending_of(r, stream).values()) < 4:
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            assert time.monotonic() < t_end, "the worker never took the batch"
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGTERM)  # mid-batch: it finishes, answers, then exits
        results = await asyncio.wait_for(asyncio.gather(*[h.result() for h in handles]), 60)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stderr.close()
    assert [res.batch_size for res in results] == [4] * 4
    assert r.xlen(stream) == 0 and await queue.served_models() == {}
    r.close()
