"""The blocking client: what a script, a SPEC macro bridge or a Bluesky plan uses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

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


class Client:
    """Talks to one Beamsteer server.

    Args:
        url: The server, e.g. ``http://beamsteer.example:8000``.
        api_key: Sent as ``Authorization: Bearer <key>`` (for a server or proxy that asks).
        timeout: Seconds to wait for a reply (per try).
        retry: When and how to retry (see :class:`~clients.http.retry.Retry`).
        transport: An httpx transport instead of the network (e.g. ``ASGITransport``).

    Every method raises :class:`~clients.http.errors.BeamsteerError` subclasses:
    ``NotFound``, ``ValidationError`` (``.field``, ``.reason``, ``.loc``),
    ``ConflictError``, ``ServerError``, ``ConnectionFailed``.
    """

    def __init__(self, url: str = c.DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = c.DEFAULT_TIMEOUT, retry: Retry | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or Retry()
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  headers=c.headers(api_key), transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def _send(self, call: _calls.Call[T]) -> T:
        rid = c.request_id()
        attempt = 0
        while True:
            try:
                r = self._http.request(call.method, call.path, json=call.json, content=call.content,
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
            time.sleep(delay)
            attempt += 1

    # --- experiments ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's ``/health``."""
        return self._send(_calls.health())

    def create_experiment(self, spec: Mapping[str, Any] | None = None,
                          **fields: Any) -> Experiment:
        """Create an experiment from a spec (a mapping, or keywords, or both: keywords win).

        Only ``name``, ``parameters`` and ``outputs`` are required; the reply has every
        default filled in. Not retried once the request may have reached the server.
        """
        return self._send(_calls.create_experiment({**(spec or {}), **fields}))

    def get_experiment(self, experiment: c.ExperimentRef) -> Experiment:
        """One experiment, with its model state (hyperparameters, fitted points)."""
        return self._send(_calls.get_experiment(c.eid(experiment)))

    def list_experiments(self) -> list[Experiment]:
        """All experiments, newest first."""
        return self._send(_calls.list_experiments())

    def set_status(self, experiment: c.ExperimentRef, status: ExperimentStatus) -> Experiment:
        """``"paused"`` (no new suggestions), ``"active"``, or ``"closed"`` (read-only)."""
        return self._send(_calls.set_status(c.eid(experiment), status))

    # --- ask -----------------------------------------------------------------------------

    def suggest(self, experiment: c.ExperimentRef, n: int | None = None) -> list[Suggestion]:
        """Ask for ``n`` positions (default: the spec's ``batch_size``), in the order to
        measure them. Not retried once the request may have reached the server."""
        return self._send(_calls.suggest(c.eid(experiment), n))

    def suggestions(self, experiment: c.ExperimentRef,
                    status: str | None = None) -> list[Suggestion]:
        """Suggestions, oldest first; ``status="pending"`` for those not measured yet."""
        return self._send(_calls.suggestions(c.eid(experiment), status))

    def abandon(self, experiment: c.ExperimentRef, suggestion: c.SuggestionRef) -> Suggestion:
        """Give up a pending suggestion (it will not be measured)."""
        return self._send(_calls.abandon(c.eid(experiment), c.sid(suggestion)))

    # --- tell ----------------------------------------------------------------------------

    @overload
    def measure(self, experiment: c.ExperimentRef, position: Mapping[str, float],
                values: Mapping[str, float] | None, *, noise: Mapping[str, float] | None = ...,
                suggestion: c.SuggestionRef | None = ..., key: str | None = ...,
                metadata: Mapping[str, Any] | None = ...,
                image: Any = ...) -> Measurement: ...

    @overload
    def measure(self, experiment: c.ExperimentRef,
                position: Sequence[Mapping[str, Any]]) -> list[Measurement]: ...

    def measure(self, experiment: c.ExperimentRef,
                position: Mapping[str, float] | Sequence[Mapping[str, Any]],
                values: Mapping[str, float] | None = None, *,
                noise: Mapping[str, float] | None = None,
                suggestion: c.SuggestionRef | None = None, key: str | None = None,
                metadata: Mapping[str, Any] | None = None,
                image: Any = None) -> Measurement | list[Measurement]:
        """Store one measurement, or a batch (a list of mappings with ``position``,
        ``values`` and optionally ``noise``, ``suggestion``, ``key``, ``metadata``).

        Each measurement gets a fresh uuid4 ``key`` unless it has one, so a retry after a
        lost reply never stores it twice (the stored original comes back with
        ``created=False``). A batch is stored atomically.

        Args:
            experiment: The experiment (id or object).
            position: ``{parameter: value}``, or the batch.
            values: ``{output: value}``.
            noise: ``{output: variance}``, if known.
            suggestion: The suggestion this measures (id or object).
            key: Idempotency key (default: a new uuid4).
            metadata: Anything JSON, stored with the measurement.
            image: A detector image (numpy array), sent as base64 ``.npy``; the spec's
                ``reductions`` compute the outputs missing from ``values`` on the server.
        """
        items, single = c.measure_items(position, values, noise=noise, suggestion=suggestion,
                                        key=key, metadata=metadata, image=image)
        stored = self._send(_calls.measure(c.eid(experiment), items))
        return stored[0] if single else stored

    def measurements(self, experiment: c.ExperimentRef, *, after: int = 0,
                     page_size: int = 1000) -> Measurements:
        """Every measurement with ``seq > after``, in order (follows the pages);
        ``.as_dataframe()`` turns them into a pandas DataFrame."""
        out = Measurements()
        while True:
            page, nxt = self._send(_calls.measurements_page(c.eid(experiment), after, page_size))
            out.extend(page)
            if nxt is None:
                return out
            after = nxt

    def measurements_csv(self, experiment: c.ExperimentRef) -> str:
        """Every measurement as CSV, one column per parameter, output and noise."""
        return self._send(_calls.measurements_csv(c.eid(experiment)))

    def wait_for_fit(self, experiment: c.ExperimentRef, *, min_fitted: int = 1,
                     timeout: float = 120.0, poll: float = 0.2) -> Experiment:
        """Wait until the steering output's GP hyperparameters were fitted on at least
        ``min_fitted`` points and no refit is running (fits run in the background, so a
        posterior right after the first tells may still be empty).

        Raises:
            TimeoutError: Not fitted within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            exp = self.get_experiment(experiment)
            if c.fitted(exp, min_fitted):
                return exp
            if time.monotonic() > deadline:
                raise TimeoutError(f"{exp.id}: not fitted on {min_fitted} points in {timeout} s")
            time.sleep(poll)

    # --- posterior and events ------------------------------------------------------------

    def posterior(self, experiment: c.ExperimentRef, *,
                  points: Sequence[Sequence[float]] | None = None,
                  grid: Mapping[str, int] | None = None,
                  at: Mapping[str, float] | None = None) -> Posterior:
        """Posterior mean and std of every output at ``points`` (``n x d``, parameter order)
        or on a ``grid`` (``{"x": 50, "y": 50}``; others fixed at mid-range or ``at``)."""
        return self._send(_calls.posterior(c.eid(experiment), points, grid, at))

    # --- inference -----------------------------------------------------------------------

    def infer(self, model: str, image: Any, *, timeout_s: float | None = None,
              **params: Any) -> Any:
        """Run a served model on one image (a 2-D numpy array, uploaded as ``.npy``).

        Returns ``{tag: probability}`` for a tagging model (``"tagger"``), the output
        array for an image model (``"superres"``, e.g. ``factor=4``). ``timeout_s`` is the
        server-side deadline (504 past it). Needs numpy (imported here only).
        """
        return self._send(_calls.infer(model, image, {**params, "timeout_s": timeout_s}))

    def events(self, experiment: c.ExperimentRef, *, reconnect: bool = True,
               max_reconnects: int | None = None) -> EventStream:
        """Follow the experiment's events live (see :class:`EventStream`)."""
        return EventStream(c.ws_url(self.url, c.eid(experiment)), c.eid(experiment),
                           c.headers(self.api_key), self.retry, reconnect=reconnect,
                           max_reconnects=max_reconnects, open_timeout=self.timeout)


class EventStream:
    """Iterator over an experiment's events that reconnects when the connection drops.

    Each (re)connection starts with a ``hello`` event holding the current counts: events
    published while disconnected are not replayed, so a ``hello`` after the first marks a
    possible gap (re-read measurements with ``after=`` the last seq you saw).

    Use it as ``for event in stream`` (blocks), or ``stream.next(timeout=...)``; close it
    (or use ``with``) when done. An unknown experiment raises ``NotFound``.

    Args:
        url: The websocket URL.
        experiment_id: For error messages.
        headers: Sent with every handshake.
        retry: Its backoff paces the reconnects.
        reconnect: Reconnect after the connection drops (else the iteration ends).
        max_reconnects: Consecutive failed connection attempts before ``ConnectionFailed``
            (None: keep trying, like ``tail -F``).
        open_timeout: Seconds for one handshake.
    """

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

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        event = self.next()
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; iteration ends."""
        self._closed = True
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def _connect(self, deadline: float | None) -> ClientConnection:
        while True:
            try:
                # entered as a context manager (websockets >= 17.1 warns otherwise);
                # close() exits it
                ws = connect(self.url, additional_headers=self._headers,
                             open_timeout=self._open_timeout, max_size=2 ** 24).__enter__()
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
                time.sleep(delay)

    def next(self, timeout: float | None = None) -> Event | None:
        """The next event; None once the stream is closed (or dropped without reconnect).

        Raises:
            TimeoutError: No event within ``timeout`` seconds.
            NotFound: Unknown experiment.
            ConnectionFailed: More than ``max_reconnects`` failed connection attempts.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if self._ws is None:
                self._ws = self._connect(deadline)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                raw = self._ws.recv(timeout=left)
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
