"""In-process publish/subscribe of experiment events, for websockets and the dashboard.

Events are published from the event loop or from worker threads (a refit finishing), and
delivered to per-subscriber bounded queues. A subscriber too slow to keep up is told so
with an ``overflow`` event and dropped, so one stuck client cannot grow memory without bound.

With a :class:`Relay` (``server/event_relay.py``: Redis pub/sub), every local event is also
sent to the other API processes, and theirs are delivered here: a websocket client sees
the events of its experiment whichever process took the request. Events are notifications
(at most once); the store stays the truth, and a client that reconnects reads it again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

OVERFLOW = "overflow"


@dataclass(eq=False)  # identity-hashed: held in sets
class Subscription:
    """One subscriber's queue; iterate ``await sub.get()`` until an ``overflow`` event."""

    experiment_id: str
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(1000))
    overflowed: bool = False

    async def get(self) -> dict[str, Any]:
        """Next event (waits)."""
        return await self.queue.get()


class Relay(Protocol):
    """Carries this process's events to the other API processes."""

    def send(self, event: dict[str, Any]) -> None:
        """Hand over one local event (called on the bus's loop; must not block)."""


class EventBus:
    """Fan-out of events per experiment (``"*"`` subscribes to all experiments)."""

    def __init__(self, relay: Relay | None = None) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = itertools.count(1)
        self.relay = relay

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that owns the queues (called once at start-up)."""
        self._loop = loop

    def subscribe(self, experiment_id: str) -> Subscription:
        """Start receiving events of one experiment (or ``"*"`` for all)."""
        sub = Subscription(experiment_id)
        self._subs[experiment_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop receiving events."""
        self._subs[sub.experiment_id].discard(sub)

    def subscriber_count(self) -> int:
        """Number of live subscriptions."""
        return sum(len(s) for s in self._subs.values())

    def publish(self, experiment_id: str, type_: str, data: dict[str, Any]) -> None:
        """Publish an event; safe to call from any thread."""
        event = {"type": type_, "experiment_id": experiment_id, "seq": next(self._seq),
                 "time": time.time(), "data": data}
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._local(event)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._local, event)

    def deliver_remote(self, event: dict[str, Any]) -> None:
        """Deliver an event another process published (call on the bus's loop)."""
        self._deliver(event)

    def _local(self, event: dict[str, Any]) -> None:
        self._deliver(event)
        if self.relay is not None:
            self.relay.send(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        for sub in list(self._subs.get(event["experiment_id"], ())) + list(self._subs.get("*", ())):
            if sub.overflowed:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed = True
                self.unsubscribe(sub)
                # Make room for the notice so the reader learns why it was dropped.
                sub.queue.get_nowait()
                sub.queue.put_nowait({"type": OVERFLOW, "experiment_id": event["experiment_id"],
                                      "seq": event["seq"], "time": event["time"], "data": {}})
