"""Events between API processes over Redis pub/sub (the :class:`~server.events.Relay`).

Every process publishes its own events on one channel (``<prefix>:events``) and delivers
the others' to its websocket clients; each message names the process it came from, so a
process never delivers its own event twice. One sender task publishes in order; if Redis
is away, events wait in a bounded buffer and the oldest are dropped beyond it (events are
notifications: the store keeps the data). Both reconnect with the queue's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from server.events import EventBus
from server.queue.base import backoff  # the queue's reconnect schedule, for the same Redis

log = logging.getLogger("beamsteer.events")

BUFFER = 10_000  # events held while Redis is unreachable


class RedisEventRelay:
    """Relay of an :class:`EventBus` through Redis pub/sub.

    Args:
        url: ``redis://host:port/db``.
        prefix: Key prefix of this deployment; the channel is ``<prefix>:events``.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.channel = f"{prefix}:events"
        self.origin = uuid.uuid4().hex
        self.dropped = 0
        self._out: asyncio.Queue[str] = asyncio.Queue(BUFFER)
        self._tasks: list[asyncio.Task[None]] = []
        self._bus: EventBus | None = None
        self.subscribed = asyncio.Event()  # set while the listener is subscribed

    async def start(self, bus: EventBus) -> None:
        """Attach to ``bus`` and start the sender and the listener."""
        import redis.asyncio as aioredis

        self._bus = bus
        bus.relay = self
        self._pub = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)
        self._sub = aioredis.from_url(self.url, socket_connect_timeout=2)
        self._tasks = [asyncio.create_task(self._send_forever(), name="event-relay-send"),
                       asyncio.create_task(self._listen_forever(), name="event-relay-listen")]

    async def stop(self) -> None:
        """Stop both tasks and close the connections (unsent events are dropped)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._bus is not None:
            self._bus.relay = None
        await self._pub.aclose()
        await self._sub.aclose()

    def send(self, event: dict[str, Any]) -> None:
        """Queue a local event for the other processes; drop the oldest when full."""
        msg = json.dumps({"origin": self.origin, "event": event}, separators=(",", ":"))
        if self._out.full():
            self._out.get_nowait()
            self.dropped += 1
        self._out.put_nowait(msg)

    async def _send_forever(self) -> None:
        failures = 0
        msg = await self._out.get()
        while True:
            try:
                await self._pub.publish(self.channel, msg)
                failures = 0
                msg = await self._out.get()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep the message, retry later
                failures += 1
                wait = backoff(failures)
                log.warning("event relay cannot publish; retrying",
                            extra={"error": str(exc), "retry_s": round(wait, 3)})
                await asyncio.sleep(wait)

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                failures = 0
                async for message in pubsub.listen():
                    self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event relay lost Redis; reconnecting", extra={"error": str(exc)})
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            failures += 1
            await asyncio.sleep(backoff(failures))

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message" or self._bus is None:
            return
        try:
            msg = json.loads(message["data"])
            if msg["origin"] == self.origin:
                return
            event = msg["event"]
            if not isinstance(event, dict) or "experiment_id" not in event:
                raise ValueError("no event")
        except (ValueError, KeyError, TypeError):
            log.warning("event relay ignored a malformed message")
            return
        self._bus.deliver_remote(event)
