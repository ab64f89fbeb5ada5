"""The asyncio client: the same calls as :class:`clients.http.sync.Client`, awaited."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from clients.http import _calls
from clients.http import _common as c
from clients.http.errors import ConnectionFailed
from clients.http.models import (
    Event,
    Experiment,
    ExperimentStatus,
    Measurement,
    Measurements,
    Posterior,
    Suggestion,
)
from clients.http.retry import Retry

T = TypeVar("T")


class AsyncClient:
    """Talks to one Beamsteer server from asyncio code; methods as in :class:`Client`.

    Args:
        url: The server, e.g. ``http://beamsteer.example:8000``.
        api_key: Sent as ``Authorization: Bearer <key>``.
        timeout: Seconds to wait for a reply (per try).
        retry: When and how to retry.
        transport: An httpx async transport instead of the network.
    """

    def __init__(self, url: str = c.DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = c.DEFAULT_TIMEOUT, retry: Retry | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or Retry()
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                       headers=c.headers(api_key), transport=transport)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def _send(self, call: _calls.Call[T]) -> T:
        rid = c.request_id()
        attempt = 0
        while True:
            try:
                r = await self._http.request(call.method, call.path, json=call.json,
                                             content=call.content,
                                             params=call.params or None,
                                             headers={"x-request-id": rid, **call.headers})
            except httpx.TransportError as e:
                delay = self.retry.after_error(e, call.idempotent, attempt)
                if delay is None:
                    raise c.connection_failed(call, e, attempt + 1) from e
                c.log_retry(call, f"{type(e).__name__}: {e}", delay, attempt)
            else:
                if r.is_success:
                    return call.parse(r)
                delay = self.retry.after_reply(r, call.idempotent, attempt)
                if delay is None:
                    raise c.reply_error(r)
                c.log_retry(call, f"HTTP {r.status_code}", delay, attempt)
            await asyncio.sleep(delay)
            attempt += 1

    async def health(self) -> dict[str, Any]:
        """The server's ``/health``."""
        return await self._send(_calls.health())

    async def create_experiment(self, spec: Mapping[str, Any] | None = None,
                                **fields: Any) -> Experiment:
        """Create an experiment (see :meth:`Client.create_experiment`)."""
        return await self._send(_calls.create_experiment({**(spec or {}), **fields}))

    async def get_experiment(self, experiment: c.ExperimentRef) -> Experiment:
        """One experiment, with its model state."""
        return await self._send(_calls.get_experiment(c.eid(experiment)))

    async def list_experiments(self) -> list[Experiment]:
        """All experiments, newest first."""
        return await self._send(_calls.list_experiments())

    async def set_status(self, experiment: c.ExperimentRef,
                         status: ExperimentStatus) -> Experiment:
        """``"paused"``, ``"active"`` or ``"closed"``."""
        return await self._send(_calls.set_status(c.eid(experiment), status))

    async def suggest(self, experiment: c.ExperimentRef,
                      n: int | None = None) -> list[Suggestion]:
        """Ask for ``n`` positions, in the order to measure them."""
        return await self._send(_calls.suggest(c.eid(experiment), n))

    async def suggestions(self, experiment: c.ExperimentRef,
                          status: str | None = None) -> list[Suggestion]:
        """Suggestions, oldest first; ``status="pending"`` for those not measured yet."""
        return await self._send(_calls.suggestions(c.eid(experiment), status))

    async def abandon(self, experiment: c.ExperimentRef,
                      suggestion: c.SuggestionRef) -> Suggestion:
        """Give up a pending suggestion."""
        return await self._send(_calls.abandon(c.eid(experiment), c.sid(suggestion)))

    @overload
    async def measure(self, experiment: c.ExperimentRef, position: Mapping[str, float],
                      values: Mapping[str, float] | None, *,
                      noise: Mapping[str, float] | None = ...,
                      suggestion: c.SuggestionRef | None = ..., key: str | None = ...,
                      metadata: Mapping[str, Any] | None = ...,
                      image: Any = ...) -> Measurement: ...

    @overload
    async def measure(self, experiment: c.ExperimentRef,
                      position: Sequence[Mapping[str, Any]]) -> list[Measurement]: ...

    async def measure(self, experiment: c.ExperimentRef,
                      position: Mapping[str, float] | Sequence[Mapping[str, Any]],
                      values: Mapping[str, float] | None = None, *,
                      noise: Mapping[str, float] | None = None,
                      suggestion: c.SuggestionRef | None = None, key: str | None = None,
                      metadata: Mapping[str, Any] | None = None, image: Any = None
                      ) -> Measurement | list[Measurement]:
        """Store one measurement or a batch (see :meth:`Client.measure`)."""
        items, single = c.measure_items(position, values, noise=noise, suggestion=suggestion,
                                        key=key, metadata=metadata, image=image)
        stored = await self._send(_calls.measure(c.eid(experiment), items))
        return stored[0] if single else stored

    async def measurements(self, experiment: c.ExperimentRef, *, after: int = 0,
                           page_size: int = 1000) -> Measurements:
        """Every measurement with ``seq > after``, in order."""
        out = Measurements()
        while True:
            page, nxt = await self._send(
                _calls.measurements_page(c.eid(experiment), after, page_size))
            out.extend(page)
            if nxt is None:
                return out
            after = nxt

    async def measurements_csv(self, experiment: c.ExperimentRef) -> str:
        """Every measurement as CSV."""
        return await self._send(_calls.measurements_csv(c.eid(experiment)))

    async def wait_for_fit(self, experiment: c.ExperimentRef, *, min_fitted: int = 1,
                           timeout: float = 120.0, poll: float = 0.2) -> Experiment:
        """Wait for a fit (see :meth:`Client.wait_for_fit`)."""
        deadline = time.monotonic() + timeout
        while True:
            exp = await self.get_experiment(experiment)
            if c.fitted(exp, min_fitted):
                return exp
            if time.monotonic() > deadline:
                raise TimeoutError(f"{exp.id}: not fitted on {min_fitted} points in {timeout} s")
            await asyncio.sleep(poll)

    async def posterior(self, experiment: c.ExperimentRef, *,
                        points: Sequence[Sequence[float]] | None = None,
                        grid: Mapping[str, int] | None = None,
                        at: Mapping[str, float] | None = None) -> Posterior:
        """Posterior mean and std at ``points`` or on a ``grid``."""
        return await self._send(_calls.posterior(c.eid(experiment), points, grid, at))

    async def infer(self, model: str, image: Any, *, timeout_s: float | None = None,
                    **params: Any) -> Any:
        """Run a served model on one image (see :meth:`Client.infer`)."""
        return await self._send(_calls.infer(model, image, {**params, "timeout_s": timeout_s}))

    def events(self, experiment: c.ExperimentRef, *, reconnect: bool = True,
               max_reconnects: int | None = None) -> AsyncEventStream:
        """Follow the experiment's events live: ``async for event in client.events(id)``."""
        return AsyncEventStream(c.ws_url(self.url, c.eid(experiment)), c.eid(experiment),
                                c.headers(self.api_key), self.retry, reconnect=reconnect,
                                max_reconnects=max_reconnects, open_timeout=self.timeout)


class AsyncEventStream:
    """Async iterator over an experiment's events, reconnecting when the connection drops
    (same behaviour and arguments as :class:`clients.http.sync.EventStream`)."""

    def __init__(self, url: str, experiment_id: str, headers: Mapping[str, str], retry: Retry,
                 *, reconnect: bool = True, max_reconnects: int | None = None,
                 open_timeout: float = 10.0) -> None:
        self.url = url
        self.experiment_id = experiment_id
        self.reconnects = 0
        self._headers = dict(headers)
        self._retry = retry
        self._reconnect = reconnect
        self._max = max_reconnects
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._failures = 0
        self._connected_once = False
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; iteration ends."""
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _connect(self, deadline: float | None) -> ClientConnection:
        while True:
            try:
                ws = await connect(self.url, additional_headers=self._headers,
                                   open_timeout=self._open_timeout, max_size=2 ** 24)
                if self._connected_once:
                    self.reconnects += 1
                self._connected_once = True
                return ws
            except (OSError, InvalidHandshake, TimeoutError) as e:
                self._failures += 1
                if self._max is not None and self._failures > self._max:
                    raise ConnectionFailed(f"events of {self.experiment_id}: no connection "
                                           f"after {self._failures} tries: {e}") from e
                delay = self._retry.wait(min(self._failures - 1, 10))
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise TimeoutError("no event before the timeout") from e
                c.log.warning("events: %s; reconnecting in %.2f s", e, delay)
                await asyncio.sleep(delay)

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event; None once closed. Raises TimeoutError, NotFound,
        ConnectionFailed as :meth:`clients.http.sync.EventStream.next`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if self._ws is None:
                self._ws = await self._connect(deadline)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(left):
                    raw = await self._ws.recv()
            except ConnectionClosed as e:
                self._ws = None
                code = e.rcvd.code if e.rcvd is not None else None
                unknown = c.closed_unknown(code, self.experiment_id)
                if unknown is not None:
                    self._closed = True
                    raise unknown from None
                if not self._reconnect:
                    self._closed = True
                    return None
                continue
            event = Event.model_validate(json.loads(raw))
            if event.type == "hello":
                self._failures = 0
            return event
        return None
