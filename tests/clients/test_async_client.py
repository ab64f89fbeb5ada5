"""The asyncio client against the real server: the same calls, awaited, and its events."""

from __future__ import annotations

import asyncio

import pytest

from clients import AsyncClient, NotFound, Retry, ValidationError
from tests.clients.conftest import SPEC, LiveServer


async def test_async_ask_tell_and_events(live_server: LiveServer) -> None:
    async with AsyncClient(live_server.url, retry=Retry(attempts=3, backoff=0.05)) as c:
        exp = await c.create_experiment(SPEC, name="async")
        async with c.events(exp) as stream:
            hello = await stream.next(timeout=10)
            assert hello is not None and hello.type == "hello"
            sugs = await c.suggest(exp, 2)
            stored = await c.measure(exp, [{"position": s.position, "values": {"intensity": 1.0},
                                            "suggestion": s} for s in sugs])
            assert all(m.created for m in stored)
            seen = []
            async for ev in stream:
                seen.append(ev.type)
                if ev.type == "measurements":
                    break
            assert seen[0] == "suggestions" and seen[-1] == "measurements"
            with pytest.raises(TimeoutError):
                await stream.next(timeout=0.2)
        again = await c.measure(exp, sugs[0].position, {"intensity": 1.0},
                                suggestion=sugs[0], key=stored[0].key)
        assert again.created is False
        assert [m.seq for m in await c.measurements(exp)] == [1, 2]
        post = await c.posterior(exp, points=[[5.0, 0.0]])
        assert len(post.mean("intensity")) == 1
        assert (await c.get_experiment(exp)).n_measurements == 2
        with pytest.raises(NotFound):
            await c.abandon(exp, "no-such-suggestion")
        with pytest.raises(ValidationError) as ve:
            await c.measure(exp, {"x": 1}, {"intensity": 1.0})
        assert ve.value.field.startswith("measurements[0].position")
        with pytest.raises(NotFound):
            await c.events("nope").next(timeout=10)
        # several asks in flight at once never get the same place
        many = await asyncio.gather(*(c.suggest(exp, 1) for _ in range(3)))
        assert len({tuple(s[0].position.values()) for s in many}) == 3
