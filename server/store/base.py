"""The store's interface: durable state of experiments, measurements and suggestions.

Backends implement :class:`Store` and register under a URL scheme with
:func:`register_store`; :func:`open_store` picks one from a URL. This module imports no
database library, so the domain and the API can name these types freely.

Every write method commits before it returns: once a call returns, the data survives a
SIGKILL of the process (SQLite in WAL mode with ``synchronous=FULL``, PostgreSQL commit).
Methods are synchronous; the app calls them from a thread pool. Any method may raise
:class:`StoreUnavailable` when the database does not answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from server.security.keys import KeyStore


class StoreUnavailable(Exception):
    """The database does not answer: down, restarting, unreachable, or locked past the
    busy timeout. Transient: the same call may succeed after ``retry_after`` seconds.

    Args:
        reason: What failed, safe to show a client (no host names or credentials).
        during_commit: The connection broke while COMMIT was in flight, so the write may
            or may not have been stored (a retry with the same idempotency key is safe);
            otherwise nothing was stored.
        retry_after: Seconds a caller should wait before trying again.
    """

    def __init__(self, reason: str, *, during_commit: bool = False,
                 retry_after: float = 1.0) -> None:
        outcome = ("the write may or may not have been stored" if during_commit
                   else "nothing was stored")
        super().__init__(f"the database is unavailable ({reason}); {outcome}")
        self.reason, self.during_commit, self.retry_after = reason, during_commit, retry_after


class ExperimentStatus(StrEnum):
    """Lifecycle of an experiment."""

    active = "active"  # accepts suggestions and measurements
    paused = "paused"  # accepts measurements, refuses new suggestions
    closed = "closed"  # read-only


class SuggestionStatus(StrEnum):
    """Lifecycle of a suggestion."""

    pending = "pending"
    measured = "measured"
    abandoned = "abandoned"
    expired = "expired"


@dataclass(frozen=True)
class ExperimentRecord:
    """A stored experiment.

    Args:
        id: Opaque string id (URL-safe).
        spec: The spec as JSON-ready data (``ExperimentSpec.to_dict()``).
        status: Lifecycle state.
        created_at: UNIX seconds.
        updated_at: UNIX seconds of the last change (status, measurement, suggestion).
        model_state: Last good hyperparameters per output (JSON), so a restart warm-starts.
        n_measurements: Number of stored measurements.
        n_pending: Number of pending suggestions.
    """

    id: str
    spec: dict[str, Any]
    status: ExperimentStatus
    created_at: float
    updated_at: float
    model_state: dict[str, Any] = field(default_factory=dict)
    n_measurements: int = 0
    n_pending: int = 0


@dataclass(frozen=True)
class NewMeasurement:
    """A measurement to store (already validated against the spec).

    Args:
        position: ``{parameter: value}``.
        values: ``{output: value}`` (some outputs may be missing).
        noise: ``{output: variance}`` or empty.
        suggestion_id: The suggestion it answers, if any; that suggestion becomes ``measured``.
        key: Client idempotency key, unique within the experiment, or ``None``.
        metadata: Free JSON (e.g. a Bluesky run uid).
    """

    position: dict[str, float]
    values: dict[str, float]
    noise: dict[str, float] = field(default_factory=dict)
    suggestion_id: str | None = None
    key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MeasurementRecord:
    """A stored measurement; ``seq`` counts 1, 2, ... within its experiment."""

    id: int
    experiment_id: str
    seq: int
    position: dict[str, float]
    values: dict[str, float]
    noise: dict[str, float]
    suggestion_id: str | None
    key: str | None
    metadata: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class StoredMeasurements:
    """Result of :meth:`Store.add_measurements`, in the order of the input.

    Args:
        records: One record per input; for a repeated key, the original record.
        created: ``created[i]`` is True when ``records[i]`` was stored by this call.
    """

    records: list[MeasurementRecord]
    created: list[bool]


@dataclass(frozen=True)
class NewSuggestion:
    """A suggestion to store as pending."""

    position: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    acquisition: float | None
    source: str
    expires_at: float | None


@dataclass(frozen=True)
class SuggestionRecord:
    """A stored suggestion. ``batch`` groups those of one ask; ``rank`` is their travel order."""

    id: str
    experiment_id: str
    position: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    acquisition: float | None
    source: str
    status: SuggestionStatus
    batch: str
    rank: int
    created_at: float
    expires_at: float | None
    closed_at: float | None


@dataclass(frozen=True)
class AskContext:
    """What an ask reads, from one consistent snapshot (see :meth:`Store.ask_context`).

    Attributes:
        experiment: The experiment, with its counts.
        pending: Pending suggestions not yet past their expiry time, oldest first.
        last: The newest measurement (the motors' position), or ``None``.
    """

    experiment: ExperimentRecord
    pending: list[SuggestionRecord]
    last: MeasurementRecord | None


@dataclass(frozen=True)
class MapErrorPoint:
    """The steering output's estimated map error after one refit (one point of the
    convergence curve; :class:`~server.steering.types.MapError` has the definitions).

    Args:
        n: Measurements behind the posterior.
        rms_std: RMS posterior std over the allowed region, output units.
        relative: ``rms_std`` over the measured range the fit saw, or ``None``.
        at: UNIX seconds when it was recorded.
    """

    n: int
    rms_std: float
    relative: float | None
    at: float


def thinned(ns: Sequence[int], keep: int) -> list[int]:
    """Which of the sorted ``ns`` to drop so that ``keep`` remain (``keep >= 2``).

    Drops, one at a time, the inner point whose neighbours are closest on a log scale (the
    one whose loss leaves the smallest gap): the first and the newest points always stay,
    and a curve of error against N keeps its shape over the whole run, spread evenly in
    log N as refits are (they come at geometric steps of N)."""
    if keep < 2:
        raise ValueError("keep at least the first and the newest point")
    left = sorted(ns)
    logs = [math.log(max(n, 1)) for n in left]
    dropped: list[int] = []
    while len(left) > keep:
        i = min(range(1, len(left) - 1), key=lambda k: logs[k + 1] - logs[k - 1])
        dropped.append(left.pop(i))
        logs.pop(i)
    return dropped


class Lease(Protocol):
    """A held lock; :meth:`release` it exactly once."""

    def release(self, broken: bool = False) -> None:
        """Give the lock back. ``broken``: the database just failed to answer
        (:class:`StoreUnavailable`), so drop the lock's connection, and the lock with it,
        instead of asking the server, which might not answer either."""


class Store(Protocol):
    """Durable state. Every write commits before returning; reads never block writes."""

    url: str
    keys: KeyStore  # API keys live in the same database

    def close(self) -> None:
        """Release connections."""

    # experiments
    def create_experiment(self, spec: dict[str, Any]) -> ExperimentRecord:
        """Store a new, active experiment and return it with a fresh id."""

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        """Raises UnknownExperiment."""

    def list_experiments(self) -> list[ExperimentRecord]:
        """All experiments, newest first."""

    def set_status(self, experiment_id: str, status: ExperimentStatus) -> ExperimentRecord:
        """Change the lifecycle state. Raises UnknownExperiment."""

    def save_model_state(self, experiment_id: str, state: dict[str, Any]) -> None:
        """Persist the last good hyperparameters (JSON); ``updated_at`` stays.

        Raises:
            UnknownExperiment.
        """

    def add_map_error(self, experiment_id: str, point: MapErrorPoint, keep: int) -> None:
        """Record the map error after a refit; one point per ``n`` (a later one at the same
        ``n`` replaces it). Past ``keep`` points, older ones are thinned (:func:`thinned`).
        ``updated_at`` stays.

        Raises:
            UnknownExperiment.
            ValueError: ``rms_std`` or ``relative`` is not finite.
        """

    def list_map_errors(self, experiment_id: str) -> list[MapErrorPoint]:
        """The recorded map errors in ``n`` order.

        Raises:
            UnknownExperiment.
        """

    def lock_asks(self, experiment_id: str, timeout_s: float = 30.0,
                  hold_s: float = 300.0) -> Lease:
        """Serialize asks on one experiment across every process that shares this store.

        Blocks until the lock is held. An ask reads the pending suggestions, computes new
        ones conditioned on them and stores them while it holds the lock, so two API
        processes never propose the same spot. A backend that only one process can use
        (SQLite) may return a lease that locks nothing; the service also serializes asks
        within a process. A lock whose holder dies is released with its connection, and
        one whose holder says nothing to the store for ``hold_s`` seconds (stopped, hung)
        is released too.

        Raises:
            TimeoutError: Not acquired within ``timeout_s``.
        """

    def ask_context(self, experiment_id: str, now: float) -> AskContext:
        """The experiment, its pending suggestions unexpired at ``now`` and its newest
        measurement, read in one transaction (an ask's reads, in one round trip).

        Raises:
            UnknownExperiment.
        """

    # measurements
    def add_measurements(self, experiment_id: str,
                         items: Sequence[NewMeasurement]) -> StoredMeasurements:
        """Store a batch atomically: all new items or none.

        Items whose ``key`` already exists in the experiment are not stored again; their
        original record is returned with ``created=False`` (a key repeated inside one batch
        stores the first). A ``suggestion_id`` that is pending becomes ``measured``; one that
        is unknown raises UnknownSuggestion and stores nothing. A paused experiment takes
        measurements; a closed one does not.

        Raises:
            UnknownExperiment, UnknownSuggestion.
            Conflict: A key already names a different measurement (position, values, noise
                or suggestion differ; metadata may), or the experiment is closed.
            ValueError: A value JSON cannot hold (NaN, inf).
        """

    def list_measurements(self, experiment_id: str, *, after_seq: int = 0,
                          limit: int | None = None) -> list[MeasurementRecord]:
        """Measurements with ``seq > after_seq`` in ``seq`` order, at most ``limit``.

        Raises:
            UnknownExperiment.
        """

    # suggestions
    def add_suggestions(self, experiment_id: str,
                        items: Sequence[NewSuggestion]) -> list[SuggestionRecord]:
        """Store one ask's suggestions as pending, one batch, ranked 0, 1, ... in order.

        Raises:
            UnknownExperiment.
            Conflict: The experiment is not active (paused or closed).
            ValueError: A value JSON cannot hold (NaN, inf).
        """

    def get_suggestion(self, experiment_id: str, suggestion_id: str) -> SuggestionRecord:
        """Raises UnknownExperiment, UnknownSuggestion."""

    def list_suggestions(self, experiment_id: str, *,
                         status: SuggestionStatus | None = None) -> list[SuggestionRecord]:
        """Suggestions of an experiment, oldest first, optionally of one status.

        Raises:
            UnknownExperiment.
        """

    def close_suggestion(self, experiment_id: str, suggestion_id: str,
                         status: SuggestionStatus) -> SuggestionRecord:
        """Move a pending suggestion to ``abandoned``/``expired``; a no-op on a closed one.

        Raises:
            UnknownExperiment, UnknownSuggestion.
            ValueError: ``status`` is neither ``abandoned`` nor ``expired``.
        """

    def expire_suggestions(self, now: float) -> list[SuggestionRecord]:
        """Expire every pending suggestion (all experiments) with ``expires_at <= now``."""


StoreFactory = Callable[..., Store]  # (url, **options) -> Store
_BACKENDS: dict[str, StoreFactory] = {}


def register_store(*schemes: str) -> Callable[[StoreFactory], StoreFactory]:
    """Register a backend factory for URL schemes (``"sqlite"``, ``"postgresql"``)."""

    def deco(factory: StoreFactory) -> StoreFactory:
        for s in schemes:
            _BACKENDS[s] = factory
        return factory

    return deco


def open_store(url: str, **options: Any) -> Store:
    """Open the store for a URL, e.g. ``sqlite:///data/beamsteer.db`` or
    ``postgresql://user@host/db`` (a ``+driver`` suffix is allowed); ``options`` go to the
    backend (the SQL store's: ``timeout_s``)."""
    from server.store import sql  # noqa: F401  (registers the SQLAlchemy backends)

    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in _BACKENDS:
        raise ValueError(f"no store backend for {scheme!r}; known: {sorted(_BACKENDS)}")
    return _BACKENDS[scheme](url, **options)
