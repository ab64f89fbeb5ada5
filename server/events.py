"""In-process publish/subscribe of experiment events, for websockets and the dashboard.

Events are published from the event loop or from worker threads (a refit finishing), and
delivered to per-subscriber bounded queues. A subscriber too slow to keep up is told so
with an ``overflow`` event and dropped, so one stuck client cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

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


class EventBus:
    """Fan-out of events per experiment (``"*"`` subscribes to all experiments)."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = itertools.count(1)

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
            self._deliver(event)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, event)

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
