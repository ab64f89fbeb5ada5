"""The steering service: ties the store, one GP engine per experiment, and the event bus.

Routers call this; it knows no HTTP. The rules it keeps:

* A measurement is committed to the store before anyone is told it exists; the engine
  ingests it afterwards (cheap, incremental), and a refit is only *scheduled* (background
  thread). An ask never waits for a refit.
* Asks on one experiment are serialized, and each ask conditions on every pending
  suggestion, so parallel asks never return the same spot.
* Engines are rebuilt from the store at start-up (measurements, pending suggestions and
  the last good hyperparameters), so a restart loses nothing.
* Several API processes may share one PostgreSQL store: asks also take the store's
  per-experiment lock (:meth:`Store.lock_asks`), and an engine catches up on measurements
  another process stored (by ``seq``) before it suggests or answers a posterior.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from server.events import EventBus
from server.metrics import Metrics
from server.settings import Settings
from server.steering.engine import GPEngine, background_priority
from server.steering.errors import (
    Busy,
    Conflict,
    InvalidInput,
    InvalidMeasurement,
    UnknownSuggestion,
)
from server.steering.spec import ExperimentSpec
from server.steering.types import ModelStatus, Posterior
from server.store.base import (
    AskContext,
    ExperimentRecord,
    ExperimentStatus,
    Lease,
    MapErrorPoint,
    MeasurementRecord,
    NewMeasurement,
    NewSuggestion,
    Store,
    StoredMeasurements,
    StoreUnavailable,
    SuggestionRecord,
    SuggestionStatus,
)

log = logging.getLogger("beamsteer.service")
T = TypeVar("T")
_H = TypeVar("_H")  # what a hop holding the ask lease returns
_Asked = tuple[Sequence[SuggestionRecord], list[SuggestionRecord]]  # (pending before, new)
# (spec, items) -> items whose detector images became values (server/reductions.py)
Reducer = Callable[[ExperimentSpec, Sequence[Mapping[str, Any]]],
                   Awaitable[list[dict[str, Any]]]]


@dataclass
class _Live:
    """What the service holds in memory for one experiment."""

    spec: ExperimentSpec
    engine: GPEngine
    ask_lock: asyncio.Lock
    seqs: set[int] = field(default_factory=set)  # measurements the engine has ingested
    ingesting: set[int] = field(default_factory=set)  # ... and those it is ingesting now
    sync_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # guards engine + seqs
    refit: Future[ModelStatus] | None = None
    ahead: Future[None] | None = None  # the engine preparing the next ask's picks ...
    # ... the newest (q, pending, measurements ingested when it was asked for) ...
    ahead_wanted: tuple[int, np.ndarray, int] | None = None
    ahead_running: bool = False  # ... whether a thread works them off
    ahead_lock: threading.Lock = field(default_factory=threading.Lock)  # guards those
    # Wall-clock time (time.time()) of the last ask's reply, until a tell: the tell may
    # come through another API process, and then only its stored created_at says when.
    asked_at: float | None = None
    measuring_s: float | None = None  # smoothed time from an ask's reply to the next tell
    ask_s: float | None = None  # the engine's last ask that computed its own picks
    # perf_counter() when the prepare running now began (None: none runs), and its q
    ahead_started: float | None = None
    ahead_q: int = 0
    # Held to be looked at only (closed): no lookahead, and only the last few are kept.
    closed: bool = False
    _through: int = field(default=0, init=False)  # see ingested_through

    def __post_init__(self) -> None:
        self.add_seqs(())

    def close(self) -> None:
        """Held to be looked at only: no more asks to prepare (a queued request is dropped;
        :meth:`SteeringService._prepare_next` queues none)."""
        self.closed = True
        with self.ahead_lock:
            self.ahead_wanted = None

    def add_seqs(self, seqs: Iterable[int]) -> None:
        """Record measurements as ingested by the engine (event loop only)."""
        self.seqs.update(seqs)
        while self._through + 1 in self.seqs:
            self._through += 1

    def told(self, at: float) -> None:
        """A tell at wall time ``at`` ended the measuring of the last ask's suggestions
        (``Settings.lookahead_room`` compares that time with an ask's)."""
        if self.asked_at is None or at < self.asked_at:
            return
        gap = at - self.asked_at
        self.measuring_s = gap if self.measuring_s is None else (
            0.5 * self.measuring_s + 0.5 * gap)
        self.asked_at = None

    @property
    def ingested_through(self) -> int:
        """Every measurement with ``seq`` up to this one has been ingested. The store's
        count says whether the engine holds all it stores (``seq`` counts 1, 2, ... without
        gaps); the number ingested does not: this process's own newer tell may be in while
        another process's older one is not."""
        return self._through


LOCK_WAIT_THREADS = 8  # experiments whose asks wait for another process's lock at once

# Map error points kept per experiment (one per refit; refits come at geometric steps of N,
# 25%, so a run of a million measurements makes about 60): a bound that only a very long
# run reaches, past which older points are thinned.
MAP_ERROR_POINTS = 1000

CLOSED_HELD = 2  # engines of closed experiments kept after being looked at (posterior, status)

# An uncontended ask lock is taken at once; a compute thread tries this long (PostgreSQL's
# lock_timeout is in whole milliseconds) before the ask waits on an I/O thread instead.
LOCK_TRY_S = 0.001
# An ask joins a prepare running for it for as long as the prepare should still take, plus
# this share of an ask (the ahead thread runs at a lower priority).
JOIN_SLACK = 0.25


class _Contended(Exception):
    """The experiment's ask lock is held by another process (internal to the ask path)."""


class _OnceLease:
    """A :class:`Lease` that releases at most once, from whichever thread asks first."""

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._lock = threading.Lock()
        self.released = False

    def release(self, broken: bool = False) -> None:
        with self._lock:
            if self.released:
                return
            self.released = True
        self._lease.release(broken)


class SteeringService:
    """Experiments, suggestions, measurements and posteriors, over a :class:`Store`."""

    def __init__(self, store: Store, settings: Settings, *, events: EventBus | None = None,
                 metrics: Metrics | None = None, reducer: Reducer | None = None) -> None:
        self.store = store
        self.reducer = reducer
        self.settings = settings
        self.events = events or EventBus()
        self.metrics = metrics or Metrics()
        self._live: dict[str, _Live] = {}
        self._compute = ThreadPoolExecutor(settings.compute_threads, "beamsteer-gp")
        self._refits = ThreadPoolExecutor(settings.refit_threads, "beamsteer-refit")
        self._ahead = ThreadPoolExecutor(1, "beamsteer-ahead", initializer=background_priority)
        # Waits for another process's ask lock (up to ask_lock_timeout_s each) have threads
        # of their own: in the default pool they held up every store call, tells included.
        self._lock_waits = ThreadPoolExecutor(LOCK_WAIT_THREADS, "beamsteer-lock-wait")
        self._load_lock = asyncio.Lock()
        self._refit_guard = threading.Lock()
        self._stopping = False
        self._asks: set[asyncio.Future[_Asked]] = set()  # locked parts

    @property
    def engine_count(self) -> int:
        """Number of GP engines held in memory."""
        return len(self._live)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the engine of every experiment that is not closed."""
        self.events.bind(asyncio.get_running_loop())
        records = await self._io(self.store.list_experiments)
        for rec in records:
            if rec.status != ExperimentStatus.closed:
                try:
                    await self._load(rec.id)
                except Exception:  # one unloadable experiment must not keep the rest down
                    log.exception("engine not rebuilt; retried on first use",
                                  extra={"experiment_id": rec.id})
        log.info("service started", extra={"experiments": len(records),
                                            "engines": len(self._live)})

    async def stop(self) -> None:
        """Stop background work; running refits are abandoned (their result is not needed)."""
        # Asks in their locked part finish first: they give the database its locks back.
        if self._asks:
            await asyncio.wait(list(self._asks), timeout=10)
        # Then: cancelling a queued refit runs its done-callback, which must not submit
        # again (submit waits on the lock that shutdown holds: a hang).
        with self._refit_guard:
            self._stopping = True
        self._refits.shutdown(wait=False, cancel_futures=True)
        self._ahead.shutdown(wait=False, cancel_futures=True)
        self._lock_waits.shutdown(wait=False, cancel_futures=True)
        self._compute.shutdown(wait=False, cancel_futures=True)

    async def _io(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking store call in the default thread pool."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _cpu(self, fn: Any, *args: Any) -> Any:
        """Run GP work in the compute pool."""
        return await asyncio.get_running_loop().run_in_executor(self._compute, fn, *args)

    async def _load(self, experiment_id: str) -> _Live:
        """The live engine of an experiment, rebuilt from the store on first use."""
        live = self._live.get(experiment_id)
        if live is not None:
            if live.closed:
                self._hold_closed(experiment_id, live)  # now the one used last
            return live
        async with self._load_lock:
            if experiment_id in self._live:
                return self._live[experiment_id]
            rec = await self._io(self.store.get_experiment, experiment_id)
            ms = await self._io(self.store.list_measurements, experiment_id)
            spec = ExperimentSpec.from_dict(rec.spec)
            engine = await self._cpu(self._build_engine, spec, rec.model_state, ms)
            live = _Live(spec, engine, asyncio.Lock(), seqs={m.seq for m in ms})
            self._live[experiment_id] = live
            if rec.status == ExperimentStatus.closed:
                self._hold_closed(experiment_id, live)
            self.metrics.engines.set(len(self._live))
            self._maybe_refit(experiment_id, live)
            return live

    def _hold_closed(self, experiment_id: str, live: _Live) -> None:
        """Hold a closed experiment's engine as the one used last: the engines of the
        :data:`CLOSED_HELD` closed experiments used last are kept (their map and model are
        still looked at), the others let go."""
        live.close()
        self._live[experiment_id] = self._live.pop(experiment_id)  # to the end: used last
        held = [k for k, v in self._live.items() if v.closed]
        for k in held[:-CLOSED_HELD]:
            self._drop(k)

    def _drop(self, experiment_id: str) -> None:
        """Let go of an experiment's engine: a queued refit or lookahead is cancelled (one
        that runs finishes, and nothing follows it). Requests that hold it finish with it."""
        live = self._live.pop(experiment_id, None)
        if live is None:
            return
        live.close()
        for fut in (live.refit, live.ahead):
            if fut is not None:
                fut.cancel()
        self.metrics.engines.set(len(self._live))

    async def _catch_up(self, experiment_id: str, live: _Live, n_stored: int) -> None:
        """Ingest measurements that the store holds and the engine does not: those another
        API process stored. ``n_stored`` is the store's count (``seq`` has no gaps)."""
        if live.ingested_through >= n_stored:
            return
        async with live.sync_lock:
            ms = await self._io(self.store.list_measurements, experiment_id,
                                after_seq=live.ingested_through)
            new = await self._ingest(experiment_id, live, ms)
        if new and live.asked_at is not None:  # the loop's tell went to another process
            later = [m.created_at for m in new if m.created_at >= live.asked_at]
            if later:  # when it was stored
                live.told(min(later))

    async def _ingest(self, experiment_id: str, live: _Live,
                      ms: Sequence[MeasurementRecord]) -> list[MeasurementRecord]:
        """Ingest the records the engine has not seen (caller holds ``live.sync_lock``).
        A caller cancelled meanwhile does not stop it: the engine's thread ingests anyway,
        and the rows are then recorded as ingested (not ingested again by the next)."""
        # once per seq: a batch that repeats a key holds the one stored record twice
        new = list({m.seq: m for m in ms
                    if m.seq not in live.seqs and m.seq not in live.ingesting}.values())
        if new:
            seqs = [m.seq for m in new]
            live.ingesting.update(seqs)

            async def ingest() -> None:
                try:
                    await self._cpu(live.engine.ingest, *_arrays(live.spec, new))
                    live.add_seqs(seqs)
                finally:
                    live.ingesting.difference_update(seqs)

            done = asyncio.ensure_future(ingest())
            done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
            await asyncio.shield(done)
            self._maybe_refit(experiment_id, live)
        return new

    @staticmethod
    def _build_engine(spec: ExperimentSpec, state: Mapping[str, Any],
                      ms: Sequence[MeasurementRecord]) -> GPEngine:
        engine = GPEngine(spec, hyperparameters=dict(state) or None)
        if ms:
            engine.ingest(*_arrays(spec, ms))
        return engine

    # --- experiments -------------------------------------------------------------------

    async def create_experiment(self, spec_data: Mapping[str, Any]) -> ExperimentRecord:
        """Validate a spec (raises InvalidSpec naming the field), store it, start its engine."""
        spec = ExperimentSpec.from_dict(spec_data)
        spec.check_new()
        rec: ExperimentRecord = await self._io(self.store.create_experiment, spec.to_dict())
        self._live[rec.id] = _Live(spec, GPEngine(spec), asyncio.Lock())
        self.metrics.engines.set(len(self._live))
        self.events.publish(rec.id, "experiment_created", {"name": spec.name})
        log.info("experiment created", extra={"experiment_id": rec.id, "experiment": spec.name})
        return rec

    async def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        """Raises UnknownExperiment."""
        rec: ExperimentRecord = await self._io(self.store.get_experiment, experiment_id)
        return rec

    async def list_experiments(self) -> list[ExperimentRecord]:
        """All experiments, newest first."""
        recs: list[ExperimentRecord] = await self._io(self.store.list_experiments)
        return recs

    async def set_status(self, experiment_id: str, status: ExperimentStatus) -> ExperimentRecord:
        """Pause, resume or close an experiment; closing abandons its pending suggestions."""
        rec: ExperimentRecord = await self._io(self.store.set_status, experiment_id, status)
        live = self._live.get(experiment_id)
        if status == ExperimentStatus.closed:
            if live is not None:  # kept while among the closed ones used last
                self._hold_closed(experiment_id, live)
            pending = await self._io(self.store.list_suggestions, experiment_id,
                                     status=SuggestionStatus.pending)
            for s in pending:
                await self._io(self.store.close_suggestion, experiment_id, s.id,
                               SuggestionStatus.abandoned)
            rec = await self._io(self.store.get_experiment, experiment_id)
        elif live is not None and live.closed:  # reopened while held to be looked at
            live.closed = False
        self.events.publish(experiment_id, "status", {"status": status.value})
        return rec

    async def model_status(self, experiment_id: str) -> ModelStatus | None:
        """The engine's state, or ``None`` for a closed experiment not held in memory."""
        rec = await self.get_experiment(experiment_id)
        live = self._live.get(experiment_id)
        if live is None:
            if rec.status == ExperimentStatus.closed:
                return None
            live = await self._load(experiment_id)
        await self._catch_up(experiment_id, live, rec.n_measurements)
        # on an I/O thread: the engine's lock may be held by an ingest that rebuilds or by
        # a refit's update, and a wait for a lock must not hold a compute thread
        status = await self._io(live.engine.status)
        if not status.refitting and live.refit is not None and not live.refit.done():
            status = dataclasses.replace(status, refitting=True)  # scheduled, not started
        return status

    # --- ask -----------------------------------------------------------------------------

    async def suggest(self, experiment_id: str, n: int | None = None) -> list[SuggestionRecord]:
        """Propose ``n`` positions (default: the spec's batch size) and store them as pending.

        Raises:
            UnknownExperiment; Conflict if the experiment is not active; InvalidInput for n.
        """
        t0 = time.perf_counter()
        if experiment_id not in self._live:  # an ask on a closed one builds no engine
            rec = await self.get_experiment(experiment_id)
            if rec.status == ExperimentStatus.closed:
                raise Conflict("status", "experiment is closed; suggestions need active")
        live = await self._load(experiment_id)
        q = live.spec.batch_size if n is None else n
        if not 1 <= q <= self.settings.max_suggestions:
            raise InvalidInput("n", f"must be in [1, {self.settings.max_suggestions}]")
        # The locked part runs as a task of its own that a cancelled request (a client
        # that hung up) does not interrupt: it always releases the cross-process lock, and
        # its suggestions are stored as pending, as when only the reply is lost.
        task = asyncio.ensure_future(self._ask_under_locks(experiment_id, live, q))
        self._asks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._ask_done)
        pending, stored = await asyncio.shield(task)
        live.closed = False  # it is active (reopened, maybe by another process)
        live.asked_at = time.time()
        room = self.settings.lookahead_room  # measuring / asking (q=4: 34 -> 77 ms at 0)
        if self.settings.lookahead and (room == 0 or (
                live.measuring_s is not None and live.ask_s is not None
                and live.measuring_s >= room * live.ask_s)):
            self._prepare_next(experiment_id, live, q, [*pending, *stored])
        self.metrics.suggestions.inc(len(stored))
        self.metrics.suggest_seconds.observe(time.perf_counter() - t0)
        self.events.publish(experiment_id, "suggestions",
                            {"suggestions": [suggestion_json(s) for s in stored]})
        return stored

    def _prepare_next(self, experiment_id: str, live: _Live, q: int,
                      pending: Sequence[SuggestionRecord]) -> None:
        """Have the engine compute the next ask's picks while ``pending`` is measured, on
        the low-priority thread. One at a time per experiment: a request made while one
        runs replaces any waiting one (only the newest state matters) and runs after the
        requests other experiments made meanwhile, so that a fast loop does not keep the
        thread to itself. Called only where the loop measures long enough
        (``Settings.lookahead_room``)."""
        if live.closed:
            return
        names = live.spec.parameter_names
        P = np.array([[s.position[k] for k in names] for s in pending],
                     dtype=float).reshape(-1, live.spec.dim)

        def run() -> None:
            with live.ahead_lock:
                wanted, live.ahead_wanted = live.ahead_wanted, None
            if wanted is not None:
                self._prepare(experiment_id, live, *wanted)
            with live.ahead_lock:
                if live.ahead_wanted is None:
                    live.ahead_running = False
                    return
                # A newer request came meanwhile: it runs after what other experiments
                # queued (one thread prepares for all of them, in turns).
                try:
                    live.ahead = self._ahead.submit(run)
                except RuntimeError:  # shutting down
                    live.ahead_wanted = None
                    live.ahead_running = False

        with live.ahead_lock:
            live.ahead_wanted = (q, P, len(live.seqs))
            if live.ahead_running:
                return  # the running one takes it next
            try:
                live.ahead = self._ahead.submit(run)
            except RuntimeError:  # shutting down
                live.ahead_wanted = None
                return
            live.ahead_running = True

    def _prepare(self, experiment_id: str, live: _Live, q: int, P: np.ndarray,
                 n_seen: int) -> None:
        """Ahead thread: one :meth:`GPEngine.prepare`; never raises. Nothing to do if a
        measurement was ingested since the request (``n_seen`` were): the pending
        suggestions were told, or something else was measured, and the next ask could not
        take picks prepared now (the thread's turn goes to the next experiment)."""
        if len(live.seqs) != n_seen:
            return
        t0 = time.perf_counter()
        live.ahead_q, live.ahead_started = q, t0
        try:
            done = live.engine.prepare(q, P)
        except Exception:
            log.exception("next ask not prepared", extra={"experiment_id": experiment_id})
            return
        finally:
            live.ahead_started = None
        if done:  # what an ask would cost now (N grows while asks take prepared picks)
            live.ask_s = time.perf_counter() - t0
            self.metrics.asks_prepared.inc()

    def _ask_done(self, task: asyncio.Future[_Asked]) -> None:
        self._asks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that hung up does not need it

    async def _ask_under_locks(self, experiment_id: str, live: _Live, q: int) -> _Asked:
        """The ask's locked part: (the suggestions pending before, the new ones)."""
        # The usual ask is one thread hop: lock, read, compute, write and unlock in the
        # compute pool (each hop is a wake-up of another thread: ~0.1 ms on an idle machine,
        # milliseconds when the cores are busy). Only an engine that is behind the store
        # (another API process measured) comes back to the event loop to catch up.
        async with live.ask_lock:  # this process's asks, then every process's
            await self._join_prepare(live, q)
            try:
                lease, ctx, stored = await self._held(self._cpu(
                    self._ask_in_one_hop, experiment_id, live, q, None))
            except _Contended:
                # Another process holds the experiment's lock: wait for it on a thread
                # of the lock-wait pool, never on one of the few compute threads (other
                # experiments' asks and posteriors) or the I/O threads (every store call).
                held = await self._held(asyncio.get_running_loop().run_in_executor(
                    self._lock_waits, self._lock, experiment_id))
                lease, ctx, stored = await self._held(self._cpu(
                    self._ask_in_one_hop, experiment_id, live, q, held))
            if stored is not None:
                return ctx.pending, stored
            try:
                await self._catch_up(experiment_id, live, ctx.experiment.n_measurements)
                new, ahead = await self._cpu(self._new_suggestions, live, q, ctx)
                stored = await self._io(self._store_and_release, lease, experiment_id, new,
                                        ahead)
                return ctx.pending, stored
            except BaseException as exc:
                if not lease.released:  # not reached the write, it failed, or was cancelled
                    await self._io(lease.release, isinstance(exc, StoreUnavailable))
                raise

    @staticmethod
    async def _join_prepare(live: _Live, q: int) -> None:
        """If the picks of an ask of ``q`` are being prepared right now, wait for them, up
        to the time they should still take (plus :data:`JOIN_SLACK` of an ask): computing
        beside them would take an ask's whole time, and slow both down. The engine then
        decides whether they hold for this ask (:meth:`GPEngine.suggest`)."""
        # the future first: a prepare that runs when `started` is read is then its own
        fut = live.ahead
        started, ask_s = live.ahead_started, live.ask_s
        if (started is None or fut is None or fut.done() or live.ahead_q != q
                or ask_s is None or live.ahead_wanted is not None):
            return  # (a newer request is queued: the running prepare is out of date)
        left = max(0.0, ask_s - (time.perf_counter() - started)) + JOIN_SLACK * ask_s
        # asyncio.wait neither raises on a timeout (the ask then computes its own picks)
        # nor cancels the prepare's future, nor raises if stop() cancelled it
        await asyncio.wait([asyncio.wrap_future(fut)], timeout=left)

    @staticmethod
    async def _held(hop: Awaitable[_H]) -> _H:
        """Await a hop that returns the ask's lease (alone, or first of a tuple); if this
        await is cancelled (the loop shuts down) while the thread still runs, the lease it
        returns is released then."""
        fut = asyncio.ensure_future(hop)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            def release(f: asyncio.Future[Any]) -> None:
                if not f.cancelled() and f.exception() is None:
                    r = f.result()
                    (r[0] if isinstance(r, tuple) else r).release()
            fut.add_done_callback(release)
            raise
        except TimeoutError as exc:
            raise Busy(str(exc), retry_after=1.0) from None

    def _lock(self, experiment_id: str) -> _OnceLease:
        """I/O pool: wait (up to the ask lock timeout) for the store's ask lock."""
        return _OnceLease(self.store.lock_asks(experiment_id,
                                               self.settings.ask_lock_timeout_s))

    def _ask_in_one_hop(self, experiment_id: str, live: _Live, q: int,
                        lease: _OnceLease | None
                        ) -> tuple[_OnceLease, AskContext, list[SuggestionRecord] | None]:
        """Compute pool: take the store's ask lock (unless ``lease`` holds it), read the
        ask's context and, if the engine holds every stored measurement, compute the
        suggestions, commit them and give the lock back. Otherwise return with the lock
        held and ``None`` for the records.

        Raises (with the lock given back):
            _Contended: Another process holds the lock (this thread does not wait for it).
            Conflict: The experiment is not active.
        """
        if lease is None:
            try:
                lease = _OnceLease(self.store.lock_asks(experiment_id, LOCK_TRY_S))
            except TimeoutError:
                raise _Contended(experiment_id) from None
        try:
            ctx = self.store.ask_context(experiment_id, time.time())
            rec = ctx.experiment
            if rec.status != ExperimentStatus.active:
                raise Conflict("status",
                               f"experiment is {rec.status.value}; suggestions need active")
            # ingested_through grows on the event loop only after the engine ingested: read
            # here, it never claims data the engine lacks.
            if live.ingested_through < rec.n_measurements:
                return lease, ctx, None
            return lease, ctx, self._store_and_release(
                lease, experiment_id, *self._new_suggestions(live, q, ctx))
        except BaseException as exc:
            lease.release(broken=isinstance(exc, StoreUnavailable))
            raise

    def _store_and_release(self, lease: _OnceLease, experiment_id: str,
                           new: list[NewSuggestion], ahead: bool) -> list[SuggestionRecord]:
        """Commit the new suggestions, then give the lock back (one thread hop), then count
        them as served from prepared picks if ``ahead``. If the commit fails, the caller
        gives the lock back (broken after :class:`StoreUnavailable`: see
        :meth:`Lease.release`)."""
        recs: list[SuggestionRecord] = self.store.add_suggestions(experiment_id, new)
        lease.release()
        if ahead:
            self.metrics.suggestions_ahead.inc(len(recs))
        return recs

    def _new_suggestions(self, live: _Live, q: int, ctx: AskContext
                         ) -> tuple[list[NewSuggestion], bool]:
        """The engine's ask from the context read under the locks (another process may have
        measured or asked meanwhile), and whether its picks were prepared ahead. Pending
        suggestions past their time are left out there and marked expired by the expiry
        loop."""
        names = live.spec.parameter_names
        x_pending = np.array([[s.position[k] for k in names] for s in ctx.pending],
                             dtype=float).reshape(-1, live.spec.dim)
        start = (np.array([ctx.last.position[k] for k in names])
                 if ctx.last is not None else None)
        t0 = time.perf_counter()
        candidates = live.engine.suggest(q, x_pending, start)
        ahead = any(c.ahead for c in candidates)
        if not ahead:
            live.ask_s = time.perf_counter() - t0
        ttl = live.spec.suggestion_ttl_s or self.settings.suggestion_ttl_s
        now = time.time()
        return [NewSuggestion(position=dict(zip(names, c.x, strict=True)),
                              mean=_finite_only(c.mean), std=_finite_only(c.std),
                              acquisition=_finite_or_none(c.acquisition), source=c.source,
                              expires_at=now + ttl) for c in candidates], ahead

    async def abandon(self, experiment_id: str, suggestion_id: str) -> SuggestionRecord:
        """Give up a pending suggestion (a no-op on one already closed)."""
        rec: SuggestionRecord = await self._io(self.store.close_suggestion, experiment_id,
                                               suggestion_id, SuggestionStatus.abandoned)
        self.events.publish(experiment_id, "suggestion_closed",
                            {"id": rec.id, "status": rec.status.value})
        return rec

    async def expire_due(self) -> list[SuggestionRecord]:
        """Expire pending suggestions past their time (all experiments)."""
        expired: list[SuggestionRecord] = await self._io(self.store.expire_suggestions,
                                                         time.time())
        for s in expired:
            self.events.publish(s.experiment_id, "suggestion_closed",
                                {"id": s.id, "status": s.status.value})
        self.metrics.expired.inc(len(expired))
        return expired

    async def list_suggestions(self, experiment_id: str,
                               status: SuggestionStatus | None = None) -> list[SuggestionRecord]:
        """Suggestions, oldest first."""
        recs: list[SuggestionRecord] = await self._io(self.store.list_suggestions,
                                                      experiment_id, status=status)
        return recs

    # --- tell ----------------------------------------------------------------------------

    async def measure(self, experiment_id: str,
                      items: Sequence[Mapping[str, Any]]) -> StoredMeasurements:
        """Validate, store (committed before return) and ingest a batch of measurements.

        Args:
            experiment_id: The experiment.
            items: Each ``{"position", "values", "noise"?, "suggestion_id"?, "key"?,
                "metadata"?}``.

        Raises:
            UnknownExperiment; InvalidMeasurement naming ``measurements[i].<field>``;
            Conflict for a closed experiment; UnknownSuggestion.
        """
        t0 = time.perf_counter()
        rec = await self.get_experiment(experiment_id)
        if rec.status == ExperimentStatus.closed:
            raise Conflict("status", "experiment is closed")
        if not items:
            raise InvalidMeasurement("measurements", "at least one measurement is needed")
        if len(items) > self.settings.max_batch_measurements:
            raise InvalidMeasurement(
                "measurements", f"at most {self.settings.max_batch_measurements} per request")
        spec = ExperimentSpec.from_dict(rec.spec)
        if any(isinstance(m, Mapping) and m.get("image") is not None for m in items):
            if self.reducer is None:
                raise InvalidMeasurement("measurements", "this server reduces no images")
            items = await self.reducer(spec, items)  # before the store: values go in with it
        new = [_check_measurement(spec, m, f"measurements[{i}]") for i, m in enumerate(items)]
        try:
            stored: StoredMeasurements = await self._io(self.store.add_measurements,
                                                        experiment_id, new)
        except UnknownSuggestion as e:
            i = next(i for i, m in enumerate(new) if m.suggestion_id == e.suggestion_id)
            raise InvalidMeasurement(f"measurements[{i}].suggestion_id",
                                     f"unknown suggestion {e.suggestion_id!r}") from None
        fresh = [r for r, c in zip(stored.records, stored.created, strict=True) if c]
        # Ingest by seq, not by `created`: a retried key whose first commit went through
        # while its reply was lost (a dropped connection) is stored but not yet in the GP.
        live = self._live.get(experiment_id)
        if live is None:
            await self._load(experiment_id)  # rebuilt from the store: includes these
            announce = fresh
        else:
            live.told(time.time())  # how long this loop measures (lookahead_room)
            async with live.sync_lock:
                ingested = await self._ingest(experiment_id, live, stored.records)
            # fresh ones (an ask's catch-up may have ingested them first) and recovered ones
            announce = sorted({r.seq: r for r in [*fresh, *ingested]}.values(),
                              key=lambda r: r.seq)
        self.metrics.measurements.inc(len(fresh))
        if announce:
            self.events.publish(experiment_id, "measurements",
                                {"measurements": [measurement_json(r) for r in announce]})
        self.metrics.measure_seconds.observe(time.perf_counter() - t0)
        return stored

    async def list_measurements(self, experiment_id: str, *, after_seq: int = 0,
                                limit: int | None = None) -> list[MeasurementRecord]:
        """Measurements in order (raises UnknownExperiment)."""
        await self.get_experiment(experiment_id)
        recs: list[MeasurementRecord] = await self._io(
            self.store.list_measurements, experiment_id, after_seq=after_seq, limit=limit)
        return recs

    # --- posterior -----------------------------------------------------------------------

    async def posterior(self, experiment_id: str, points: np.ndarray) -> Posterior:
        """Posterior mean and std of every output at ``points`` (``n x d``, spec units)."""
        rec = await self.get_experiment(experiment_id)
        live = await self._load(experiment_id)
        await self._catch_up(experiment_id, live, rec.n_measurements)
        post: Posterior = await self._cpu(live.engine.posterior, points)
        return post

    async def spec(self, experiment_id: str) -> ExperimentSpec:
        """The validated spec of an experiment."""
        live = self._live.get(experiment_id)
        if live is not None:
            return live.spec
        rec = await self.get_experiment(experiment_id)
        return ExperimentSpec.from_dict(rec.spec)

    # --- refits --------------------------------------------------------------------------

    def _maybe_refit(self, experiment_id: str, live: _Live) -> None:
        """Schedule a background refit if the engine asks for one and none is running.

        Called after each tell and when a refit finishes (from the refit thread), so data
        that arrived in the gap between a refit's last check and its end is not left
        waiting for the next tell.
        """
        if (self._stopping or self._live.get(experiment_id) is not live  # let go
                or (live.refit is not None and not live.refit.done())):
            return
        # Outside the guard, which every experiment shares: the engine's lock may be held
        # by this experiment's ingest (an O(N^2) update) while another's tell needs the guard.
        if not live.engine.needs_refit():
            return
        with self._refit_guard:
            if self._stopping or (live.refit is not None and not live.refit.done()):
                return
            try:
                fut = self._refits.submit(self._run_refit, experiment_id, live)
            except RuntimeError:  # shutting down
                return
            live.refit = fut
        fut.add_done_callback(lambda _: self._maybe_refit(experiment_id, live))

    def _run_refit(self, experiment_id: str, live: _Live) -> ModelStatus:
        """Background thread: refit, persist the hyperparameters, tell the subscribers.
        (Data that arrived meanwhile is refit by the done-callback of ``_maybe_refit``.)"""
        t0 = time.perf_counter()
        failures_before = sum(o.fit_failures for o in live.engine.status().outputs.values())
        status = live.engine.refit()
        seconds = time.perf_counter() - t0
        self.metrics.refit_seconds.observe(seconds)
        failures = sum(o.fit_failures for o in status.outputs.values()) - failures_before
        if failures:
            self.metrics.refit_failures.inc(failures)
        self._save_refit(experiment_id, live, status)
        self.events.publish(experiment_id, "refit", {
            "seconds": seconds, "n": status.n, "failed": failures,
            "outputs": {k: {"hyperparameters": o.hyperparameters, "last_error": o.last_error,
                            "map_error": None if o.map_error is None else asdict(o.map_error)}
                        for k, o in status.outputs.items()}})
        error = next((o.map_error.relative for o in status.outputs.values()
                      if o.map_error is not None), None)
        log.info("refit", extra={"experiment_id": experiment_id, "n": status.n,
                                 "seconds": round(seconds, 3), "failed": failures,
                                 "map_error": None if error is None else round(error, 5)})
        return status

    def _save_refit(self, experiment_id: str, live: _Live, status: ModelStatus) -> None:
        """Persist what a refit leaves behind: the hyperparameters (a restart warm-starts
        from them) and the steering output's map error (a point of the convergence curve).
        A failure is logged, not raised: the model in memory is fine, and the next refit
        saves again (that refit's point is missing from the curve). A refit that ends
        while the service stops is abandoned (:meth:`stop`): the store may be closed."""
        if self._stopping:
            return
        target = status.outputs.get(live.spec.target or "")
        err = None if target is None else target.map_error  # finite (or None): _map_error
        try:
            self.store.save_model_state(experiment_id, live.engine.hyperparameters())
            if err is not None:
                self.store.add_map_error(experiment_id, MapErrorPoint(
                    n=err.n, rms_std=err.rms_std, relative=err.relative, at=time.time()),
                    keep=MAP_ERROR_POINTS)
        except StoreUnavailable as exc:  # an outage, not a bug: no traceback per refit
            log.warning("could not save model state; the next refit saves again",
                        extra={"experiment_id": experiment_id, "error": str(exc)})
        except Exception:  # the model in memory is fine; the next refit saves again
            log.exception("could not save model state", extra={"experiment_id": experiment_id})

    async def map_error_history(self, experiment_id: str) -> list[MapErrorPoint]:
        """The steering output's map error after each refit, in ``n`` order (the last
        :data:`MAP_ERROR_POINTS`, older ones thinned). Raises UnknownExperiment."""
        points: list[MapErrorPoint] = await self._io(self.store.list_map_errors,
                                                     experiment_id)
        return points

    def wait_for_lookahead(self, timeout: float = 60.0) -> None:
        """Block until the next asks being prepared are ready (benchmarks whose simulated
        measurement takes no time; at a beamline measuring takes longer)."""
        deadline = time.monotonic() + timeout
        for live in list(self._live.values()):
            while (fut := live.ahead) is not None and not fut.cancelled():
                fut.result(max(0.0, deadline - time.monotonic()))
                if live.ahead is fut:  # no newer request was queued behind it
                    break

    def wait_for_refits(self, timeout: float = 60.0) -> None:
        """Block until running refits finish (tests and orderly shutdown)."""
        for live in list(self._live.values()):
            if live.refit is not None:
                live.refit.result(timeout)


def _finite_or_none(v: float | None) -> float | None:
    """JSON has no NaN/inf: a non-finite acquisition value (e.g. log-EI underflow) is null."""
    return v if v is not None and np.isfinite(v) else None


def _finite_only(d: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if np.isfinite(v)}


def _check_measurement(spec: ExperimentSpec, m: Mapping[str, Any], fld: str) -> NewMeasurement:
    if not isinstance(m, Mapping):
        raise InvalidMeasurement(fld, "must be an object")
    pos = spec.check_position(m.get("position"), f"{fld}.position")
    values = spec.check_values(m.get("values"), f"{fld}.values")
    noise = spec.check_noise(m.get("noise") or {}, values, f"{fld}.noise")
    key = m.get("key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
        raise InvalidMeasurement(f"{fld}.key", "must be a string of 1 to 200 characters")
    meta = m.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise InvalidMeasurement(f"{fld}.metadata", "must be an object")
    return NewMeasurement(position=dict(zip(spec.parameter_names, pos, strict=True)),
                          values=values, noise=noise, suggestion_id=m.get("suggestion_id"),
                          key=key, metadata=dict(meta))


def _arrays(spec: ExperimentSpec,
            ms: Sequence[MeasurementRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Measurements as engine arrays: ``X (n x d)``, ``Y (n x m)`` and ``Yvar`` (NaN = none)."""
    names, outs = spec.parameter_names, spec.output_names
    X = np.array([[m.position[k] for k in names] for m in ms], dtype=float)
    Y = np.array([[m.values.get(k, np.nan) for k in outs] for m in ms], dtype=float)
    Yvar = None
    if any(m.noise for m in ms):
        Yvar = np.array([[m.noise.get(k, np.nan) for k in outs] for m in ms], dtype=float)
    return X, Y, Yvar


def suggestion_json(s: SuggestionRecord) -> dict[str, Any]:
    """The public JSON shape of a suggestion (also used in events)."""
    return {"id": s.id, "position": s.position, "mean": s.mean, "std": s.std,
            "acquisition": s.acquisition, "source": s.source, "status": s.status.value,
            "batch": s.batch, "rank": s.rank, "created_at": s.created_at,
            "expires_at": s.expires_at, "closed_at": s.closed_at}


def measurement_json(m: MeasurementRecord) -> dict[str, Any]:
    """The public JSON shape of a measurement (also used in events)."""
    return {"id": m.id, "seq": m.seq, "position": m.position, "values": m.values,
            "noise": m.noise, "suggestion_id": m.suggestion_id, "key": m.key,
            "metadata": m.metadata, "created_at": m.created_at}
