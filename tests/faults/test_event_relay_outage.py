"""The event relay between API processes when Redis is killed (SIGKILL) and restarted.

Events are notifications (the store keeps the data), so what must hold is:

* while Redis is down, each process still delivers its own events to its own websocket
  subscribers at once, and publishing never blocks or raises into the caller;
* both sides reconnect by themselves, and events flow between the processes again;
* what a process published while Redis was down waits in its buffer and is sent once Redis
  is back, in order (pub/sub keeps nothing: another process receives it only if it has
  resubscribed by then, a race either way), and a process never receives its own events.
"""

from __future__ import annotations

import asyncio

import pytest

from server.event_relay import RedisEventRelay
from server.events import EventBus
from tests.faults.helpers import until

pytestmark = pytest.mark.timeout(120)


async def _next(sub, timeout: float = 10.0) -> dict:
    return await asyncio.wait_for(sub.get(), timeout)


async def test_relay_survives_a_redis_kill_and_delivers_what_waited(
        make_private_redis, redis_prefix) -> None:
    server = make_private_redis()
    buses, relays = [EventBus(), EventBus()], []
    for bus in buses:
        bus.bind(asyncio.get_running_loop())
        relay = RedisEventRelay(server.url, redis_prefix)
        await relay.start(bus)
        relays.append(relay)
    a, b = buses
    try:
        await until(lambda: all(r.subscribed.is_set() for r in relays), "both subscribed")
        seen_by_a, seen_by_b = a.subscribe("*"), b.subscribe("*")
        a.publish("exp", "measurement", {"n": 1})
        assert (await _next(seen_by_a))["data"] == {"n": 1}  # its own, delivered locally
        assert (await _next(seen_by_b))["data"] == {"n": 1}  # relayed

        server.kill()
        await until(lambda: not relays[1].subscribed.is_set(), "b notices the outage")
        for n in (2, 3):  # published into the outage: never blocks, local delivery goes on
            a.publish("exp", "measurement", {"n": n})
            assert (await _next(seen_by_a, 1.0))["data"] == {"n": n}

        server.start()
        await until(lambda: all(r.subscribed.is_set() for r in relays), "both resubscribed")
        a.publish("exp", "measurement", {"n": 4})
        assert (await _next(seen_by_a))["data"] == {"n": 4}
        got: list[int] = []
        while not got or got[-1] != 4:
            got.append((await _next(seen_by_b, 30.0))["data"]["n"])
        assert got in ([2, 3, 4], [3, 4], [4]), got  # in order, none twice, 4 always
        await until(lambda: relays[0]._out.empty(), "a's buffer sent")
        assert relays[0].dropped == 0
        b.publish("exp", "measurement", {"n": 5})  # and the other way round
        assert (await _next(seen_by_a, 30.0))["data"] == {"n": 5}
        assert seen_by_a.queue.empty()  # nothing of its own came back through Redis
    finally:
        for relay in relays:
            await relay.stop()
