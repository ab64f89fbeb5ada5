"""Small helpers of the fault and load tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(check: Callable[[], bool | Awaitable[bool]], what: str,
                timeout: float = 30.0, every: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def quiesce_refits(service: Any, timeout: float = 120.0) -> None:
    """Block until no refit runs or is queued and no engine wants one.

    Called before a LiveServer stops: ``SteeringService.stop`` cancels queued refits,
    and the cancelled future's callback submits to the executor whose shutdown lock is
    held, which deadlocks the stop (reported; fixed in server/service.py, not here).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.wait_for_refits(timeout)
        lives = list(service._live.values())
        if all((lv.refit is None or lv.refit.done()) and not lv.engine.needs_refit()
               for lv in lives):
            return
        time.sleep(0.05)
    raise AssertionError("refits did not settle")
