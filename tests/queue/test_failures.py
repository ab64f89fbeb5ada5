"""Poison input, a full queue and a passed deadline, over both backends."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from server.queue.base import DeadlineExceeded, JobFailed, JobStatus, QueueFull
from tests.queue.conftest import deadline, images, running_worker


async def test_poison_input_is_dead_lettered_and_the_worker_keeps_serving(
        make_queue, models) -> None:
    queue = await make_queue()
    good = images(3)
    async with running_worker(queue, models, max_delay_ms=50):
        handles = [await queue.enqueue_job("tagger", {"image": im}, deadline=deadline())
                   for im in (good[0], np.full((8, 8), np.nan, np.float32), good[1])]
        outcomes = await asyncio.gather(*[h.result() for h in handles],
                                        return_exceptions=True)
        later = await queue.enqueue_job("tagger", {"image": good[2]}, deadline=deadline())
        assert (await later.result()).status == JobStatus.complete
    assert outcomes[0].status == outcomes[2].status == JobStatus.complete
    err = outcomes[1]
    assert isinstance(err, JobFailed) and err.bad_input
    assert "no valid (finite, non-negative) pixel" in str(err), str(err)
    assert (await queue.stats("tagger")).dead_lettered == 1
    assert (await queue.stats("tagger")).depth == 0


async def test_full_queue_refuses_with_queue_full(make_queue) -> None:
    queue = await make_queue(max_depth=2)
    for im in images(2):
        await queue.enqueue_job("superres", {"counts": im}, deadline=deadline(1))
    with pytest.raises(QueueFull) as info:
        await queue.enqueue_job("superres", {"counts": images(1)[0]}, deadline=deadline(1))
    assert info.value.depth == 2 and info.value.retry_after > 0
    assert (await queue.stats("superres")).depth == 2


async def test_concurrent_enqueues_each_get_their_own_answer_at_the_limit(
        make_queue) -> None:
    """Enqueues made together (Redis sends them in one round trip) are still refused one
    by one: exactly ``max_depth`` are queued, the rest get QueueFull, none is lost."""
    queue = await make_queue(max_depth=4)
    outcomes = await asyncio.gather(
        *[queue.enqueue_job("superres", {"counts": im}, deadline=deadline(1))
          for im in images(10)], return_exceptions=True)
    queued = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, QueueFull)]
    assert (len(queued), len(refused)) == (4, 6), outcomes
    assert len({h.id for h in queued}) == 4
    assert (await queue.stats("superres")).depth == 4


async def test_deadline_passed_before_compute_is_dropped(make_queue, models) -> None:
    queue = await make_queue()
    handle = await queue.enqueue_job("superres", {"counts": images(1)[0]},
                                     deadline=time.time() + 0.2)
    with pytest.raises(DeadlineExceeded):
        await handle.result()  # no worker yet: the caller gives up at the deadline
    async with running_worker(queue, {"superres": None}, burst=True) as worker:
        pass
    assert worker.jobs_done == 1  # answered "expired", never computed
    assert (await queue.stats("superres")).depth == 0


async def test_an_enqueue_cancelled_in_flight_leaves_no_waiter_behind(make_queue) -> None:
    """A caller that hangs up mid-enqueue (its HTTP request was cancelled) keeps nothing
    in the queue's table of waiting callers; a reply, if the job did go out, is dropped."""
    queue = await make_queue()
    task = asyncio.create_task(
        queue.enqueue_job("superres", {"counts": images(1)[0]}, deadline=deadline(1)))
    await asyncio.sleep(0)  # started: its enqueue is on its way
    task.cancel()
    try:
        handle = await task
    except asyncio.CancelledError:
        assert queue.name == "redis"  # its enqueue waits for a round trip
    else:  # the in-process queue enqueues without waiting: the caller drops the handle
        handle.cancel()
    assert not queue._futures
