"""The SQL store: SQLite (embedded default) and PostgreSQL through SQLAlchemy 2 Core.

Concurrency: every write runs in one transaction that serializes with the other writes
of its experiment, so ``seq`` numbers stay gapless and idempotency keys are checked
against committed data. PostgreSQL locks the experiment row (``SELECT ... FOR UPDATE``)
before it touches the experiment's suggestions or measurements, in every write, so that
two writers never wait on each other's locks in opposite orders (a deadlock);
SQLite opens write transactions with ``BEGIN IMMEDIATE``, which takes the database's one
write lock up front (a deferred transaction that later writes can fail with
``SQLITE_BUSY`` instead of waiting). In WAL mode, readers are never blocked by writers.

Faults: a database that does not answer (PostgreSQL down or restarting, a connection cut,
SQLite locked past its busy timeout) raises :class:`StoreUnavailable` from every method,
whether it failed at connect, mid-transaction (rolled back: nothing stored) or at COMMIT
(the outcome is unknown: ``during_commit``). The engine pings pooled connections before
use, so the first calls after the database is back reconnect by themselves.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import fields
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.steering.errors import Conflict, UnknownExperiment, UnknownSuggestion
from server.store.base import (
    AskContext,
    ExperimentRecord,
    ExperimentStatus,
    Lease,
    MapErrorPoint,
    MeasurementRecord,
    NewMeasurement,
    NewSuggestion,
    StoredMeasurements,
    StoreUnavailable,
    SuggestionRecord,
    SuggestionStatus,
    register_store,
    thinned,
)
from server.store.engine import (
    IMMEDIATE,
    PG_STORE_TIMEOUT_S,
    is_memory,
    make_engine,
    sqlalchemy_url,
)
from server.store.keys import SQLKeyStore
from server.store.migrate import upgrade
from server.store.schema import experiments, map_errors, measurements, new_id, suggestions
from server.store.watchdog import patience

T = TypeVar("T")
# The longest an ask may hold its experiment's lock without a word to PostgreSQL: the lock's
# session is idle in its transaction while the ask computes and writes on other
# connections. Generous, since a catch-up on thousands of another process's measurements
# runs under the lock; past it the holder is stopped or hung, and asks elsewhere go on.
ASK_LOCK_HOLD_S = 300.0

# A concurrent insert of the same key (or seq) loses with IntegrityError; the retry then
# sees the winner's row. Locks make this rare, so a few attempts are plenty.
WRITE_ATTEMPTS = 4

PENDING = SuggestionStatus.pending.value

# SQLite errors that pass (another process holds the lock, the file cannot be reached);
# other OperationalErrors ("no such table", a syntax error) are bugs and stay errors.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy",
                     "unable to open database file", "disk I/O error")
# psycopg's words for a server that is not there (any OperationalError on PostgreSQL is
# unavailability: connect failures, admin shutdown, "starting up", deadlock, disk full).
_PG_CONNECT = {"connection refused": "connection refused", "timeout expired": "connect timeout",
               "server closed the connection": "connection lost",
               "no such file or directory": "connection refused",
               "is starting up": "starting up", "is shutting down": "shutting down",
               "in recovery mode": "recovering"}


def _unavailable(exc: BaseException, sqlite: bool) -> str | None:
    """Why ``exc`` means "the database does not answer" (client-safe words), or ``None``
    when it is another error."""
    if isinstance(exc, sa.exc.TimeoutError):  # every pooled connection busy for pool_timeout
        return "no database connection free within the pool timeout"
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    no_answer_s = getattr(exc.orig, "no_answer_s", None)  # server.store.pg.NoAnswer
    if no_answer_s is not None:
        return f"PostgreSQL: no answer within {no_answer_s:g} s"
    if sqlite:
        msg = str(exc.orig)
        if isinstance(exc, sa.exc.OperationalError) and any(t in msg for t in _SQLITE_TRANSIENT):
            return f"SQLite: {msg}"
        return None
    if exc.connection_invalidated:
        return "connection lost"
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return None
    msg = str(exc.orig).lower()
    for words, reason in _PG_CONNECT.items():
        if words in msg:
            return f"PostgreSQL: {reason}"
    return f"PostgreSQL: {type(exc.orig).__name__}"  # e.g. AdminShutdown, CannotConnectNow


# ---------------------------------------------------------------- ask locks


def _lock_key(experiment_id: str) -> int:
    """A signed 64-bit advisory-lock key for an experiment (migrations use a small one)."""
    digest = hashlib.blake2b(f"beamsteer-ask:{experiment_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _TxLease:
    """Holds a transaction (and its advisory lock) open until released."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def release(self, broken: bool = False) -> None:
        if broken:
            # A ROLLBACK to a server that hangs would wait out the store timeout again:
            # closing the connection ends the session (once the server reads again), and
            # the lock with it.
            self._conn.invalidate()
            self._conn.close()
            return
        try:
            self._conn.rollback()  # ends the transaction: the xact lock goes with it
        except sa.exc.DBAPIError:
            # The connection is gone, and the lock with its session: nothing to release,
            # and the ask that held it already stored its suggestions.
            self._conn.invalidate()
        finally:
            self._conn.close()


class _NoLease:
    def release(self, broken: bool = False) -> None:
        pass


# ---------------------------------------------------------------- rows -> records


def _experiment(row: sa.Row[Any]) -> ExperimentRecord:
    return ExperimentRecord(
        id=row.id,
        spec=row.spec,
        status=ExperimentStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        model_state=row.model_state,
        n_measurements=row.n_measurements,
        n_pending=row.n_pending,
    )


def _measurement(row: sa.Row[Any]) -> MeasurementRecord:
    return MeasurementRecord(
        id=row.id,
        experiment_id=row.experiment_id,
        seq=row.seq,
        position=row.position,
        values=row.values_,
        noise=row.noise,
        suggestion_id=row.suggestion_id,
        key=row.key,
        metadata=row.metadata,
        created_at=row.created_at,
    )


def _suggestion(row: sa.Row[Any]) -> SuggestionRecord:
    return SuggestionRecord(
        id=row.id,
        experiment_id=row.experiment_id,
        position=row.position,
        mean=row.mean,
        std=row.std,
        acquisition=row.acquisition,
        source=row.source,
        status=SuggestionStatus(row.status),
        batch=row.batch,
        rank=row.rank,
        created_at=row.created_at,
        expires_at=row.expires_at,
        closed_at=row.closed_at,
    )


_SUGGESTION_FIELDS = tuple(f.name for f in fields(SuggestionRecord))


def _suggestion_row(r: SuggestionRecord) -> dict[str, Any]:
    """The insert parameters of a suggestion. Not ``dataclasses.asdict``: it deep-copies the
    dicts, and its recursion probes every value with a failing ``hasattr`` (an exception
    each), which cost more than SQLite's insert."""
    row = {k: getattr(r, k) for k in _SUGGESTION_FIELDS}
    row["status"] = r.status.value
    return row


def _content(m: MeasurementRecord | NewMeasurement) -> tuple[Any, ...]:
    """What must match when a key is repeated (metadata, e.g. a retry's timestamp, may not)."""
    return (m.position, m.values, m.noise, m.suggestion_id)


def _n_measurements() -> sa.ScalarSelect[int]:
    # seq counts 1, 2, ... without gaps and measurements are never deleted, so the count is
    # the largest seq: one probe of the (experiment_id, seq) index instead of a scan of the
    # experiment's entries (O(N) on every ask and lookup).
    m = measurements
    return (sa.select(sa.func.coalesce(sa.func.max(m.c.seq), 0))
            .where(m.c.experiment_id == experiments.c.id).scalar_subquery())


def _n_pending() -> sa.ScalarSelect[int]:
    s = suggestions
    return (sa.select(sa.func.count())
            .where(s.c.experiment_id == experiments.c.id, s.c.status == PENDING)
            .scalar_subquery())


# Statements of the hot paths (an ask and its lookups), built once with bound parameters:
# building a select and its cache key costs more than SQLite takes to run it.
_EID = sa.bindparam("eid")
_GET_EXPERIMENT = (sa.select(experiments, _n_measurements().label("n_measurements"),
                             _n_pending().label("n_pending"))
                   .where(experiments.c.id == _EID))
_EXPERIMENT_STATUS_FOR_UPDATE = (sa.select(experiments.c.status)
                                 .where(experiments.c.id == _EID).with_for_update())
_EXPERIMENT_EXISTS = sa.select(experiments.c.id).where(experiments.c.id == _EID)
_TOUCH_EXPERIMENT = (experiments.update().where(experiments.c.id == _EID)
                     .values(updated_at=sa.bindparam("now")))
_PENDING_UNEXPIRED = (
    sa.select(suggestions)
    .where(suggestions.c.experiment_id == _EID, suggestions.c.status == PENDING,
           sa.or_(suggestions.c.expires_at.is_(None),
                  suggestions.c.expires_at > sa.bindparam("now")))
    .order_by(suggestions.c.created_at, suggestions.c.batch, suggestions.c.rank))
_LAST_MEASUREMENT = (sa.select(measurements).where(measurements.c.experiment_id == _EID)
                     .order_by(measurements.c.seq.desc()).limit(1))
_INSERT_SUGGESTIONS = suggestions.insert()


@register_store("sqlite", "postgresql")
class SQLStore:
    """The :class:`~server.store.base.Store` on SQLite or PostgreSQL.

    Args:
        url: ``sqlite:///path/to.db``, ``sqlite:///:memory:``, ``postgresql://user@host/db``
            or ``postgresql+psycopg://...``. The schema is created if missing and migrated
            to the newest revision (``server/store/migrations``) if older.
        timeout_s: PostgreSQL: the longest one call (a query, a COMMIT) may wait for the
            server's answer before its connection is shut down and the method raises
            :class:`StoreUnavailable` (``None``: no limit). The ask lock's wait gets its
            own timeout on top; migrations have no limit. SQLite ignores it.
    """

    def __init__(self, url: str, *, timeout_s: float | None = PG_STORE_TIMEOUT_S) -> None:
        self.url = url
        u = sqlalchemy_url(url)
        self._engine = make_engine(u, timeout_s)
        self._sqlite = u.get_backend_name() == "sqlite"
        # An in-memory database is one shared connection: let one thread use it at a time.
        self._serial: Any = threading.RLock() if is_memory(u) else nullcontext()
        self._closed = False
        sa.event.listen(self._engine, "checkin", self._on_checkin)
        try:
            upgrade(self._engine)  # under a lock: safe when processes start together
        except BaseException:
            self._engine.dispose()
            raise
        self.keys = SQLKeyStore(self._begin, self._write)

    def close(self) -> None:
        """Close the pool's connections. A connection that a thread still holds (a call in
        flight when the service stops, e.g. waiting out an outage) is closed when it comes
        back, instead of lingering in the discarded pool until garbage collection."""
        self._closed = True
        self._engine.dispose()

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        if self._closed and dbapi_connection is not None:
            try:
                dbapi_connection.close()
            except Exception:  # already broken: nothing left to close
                pass

    def __repr__(self) -> str:
        return f"SQLStore({self._engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------ transactions

    def lock_asks(self, experiment_id: str, timeout_s: float = 30.0,
                  hold_s: float = ASK_LOCK_HOLD_S) -> Lease:
        """PostgreSQL: a transaction-scoped advisory lock on a connection of its own, held
        until :meth:`~Lease.release` (so a crashed holder's lock dies with its connection).
        A holder that stops talking to the server (a stopped or hung API process) loses the
        lock after ``hold_s`` seconds: the server ends the session idle in its transaction
        (``idle_in_transaction_session_timeout``). SQLite is one process's database:
        nothing to lock across processes."""
        if self._sqlite:
            return _NoLease()
        try:
            conn = self._engine.connect()
        except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
            reason = _unavailable(exc, self._sqlite)
            if reason is None:
                raise
            raise StoreUnavailable(reason) from exc
        try:
            conn.begin()
            # lock_timeout bounds the wait for the advisory lock, in this transaction only.
            conn.execute(sa.select(sa.func.set_config("lock_timeout",
                                                      f"{max(1, int(timeout_s * 1000))}ms",
                                                      True),
                                   sa.func.set_config("idle_in_transaction_session_timeout",
                                                      f"{max(1, int(hold_s * 1000))}ms",
                                                      True)))
            # The server bounds this wait (lock_timeout): the store timeout counts after it.
            with patience(timeout_s):
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
                    _lock_key(experiment_id))))
        except sa.exc.OperationalError as exc:
            conn.close()
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                raise TimeoutError(f"ask lock of experiment {experiment_id} not acquired "
                                   f"within {timeout_s} s") from None
            reason = _unavailable(exc, self._sqlite)
            if reason is None:
                raise
            raise StoreUnavailable(reason) from exc
        except BaseException:
            conn.close()
            raise
        return _TxLease(conn)

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[Connection]:
        """One transaction; a write one takes SQLite's write lock at BEGIN.

        Raises:
            StoreUnavailable: The database does not answer (``during_commit`` when it
                broke after the body ran, while committing).
        """
        committing = False
        try:
            with self._serial, self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{IMMEDIATE: True})
                with conn.begin():
                    yield conn
                    committing = True  # the body ran: what fails now is the COMMIT
        except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
            reason = _unavailable(exc, self._sqlite)
            if reason is None:
                raise
            # SQLite answers a failed COMMIT for sure (not committed); a lost connection to
            # PostgreSQL leaves the COMMIT's outcome unknown.
            raise StoreUnavailable(reason, during_commit=committing and not self._sqlite
                                   ) from exc

    def _write(self, fn: Callable[[Connection], T], attempts: int = 1) -> T:
        """Run ``fn`` in a write transaction, again on IntegrityError up to ``attempts``."""
        for attempt in range(1, attempts + 1):
            try:
                with self._begin(write=True) as conn:
                    return fn(conn)
            except sa.exc.IntegrityError:
                if attempt == attempts:
                    raise
            except sa.exc.StatementError as exc:
                # A value the JSON serializer refuses (NaN): the same ValueError on every
                # backend (SQLite's driver path wraps it, psycopg's does not).
                if isinstance(exc.orig, ValueError):
                    raise exc.orig from None
                raise
        raise AssertionError("unreachable")

    def _lock_experiment(self, conn: Connection, experiment_id: str) -> str:
        """Lock the experiment row until commit (a no-op on SQLite); return its status."""
        status = conn.execute(_EXPERIMENT_STATUS_FOR_UPDATE,
                              {"eid": experiment_id}).scalar_one_or_none()
        if status is None:
            raise UnknownExperiment(experiment_id)
        return str(status)

    def _require_experiment(self, conn: Connection, experiment_id: str) -> None:
        if conn.execute(_EXPERIMENT_EXISTS, {"eid": experiment_id}).first() is None:
            raise UnknownExperiment(experiment_id)

    def _get_experiment(self, conn: Connection, experiment_id: str) -> ExperimentRecord:
        row = conn.execute(_GET_EXPERIMENT, {"eid": experiment_id}).first()
        if row is None:
            raise UnknownExperiment(experiment_id)
        return _experiment(row)

    # ------------------------------------------------------------ experiments

    def create_experiment(self, spec: dict[str, Any]) -> ExperimentRecord:
        def tx(conn: Connection) -> ExperimentRecord:
            now = time.time()
            experiment_id = new_id()
            conn.execute(experiments.insert().values(
                id=experiment_id, name=str(spec.get("name", ""))[:200], spec=spec,
                status=ExperimentStatus.active.value, created_at=now, updated_at=now,
                model_state={}))
            return self._get_experiment(conn, experiment_id)

        return self._write(tx, attempts=2)  # 2: a (72-bit) id collision gets a new id

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        with self._begin(write=False) as conn:
            return self._get_experiment(conn, experiment_id)

    def ask_context(self, experiment_id: str, now: float) -> AskContext:
        with self._begin(write=False) as conn:
            rec = self._get_experiment(conn, experiment_id)
            rows = conn.execute(_PENDING_UNEXPIRED, {"eid": experiment_id, "now": now}).all()
            row = conn.execute(_LAST_MEASUREMENT, {"eid": experiment_id}).first()
        return AskContext(rec, [_suggestion(r) for r in rows],
                          _measurement(row) if row is not None else None)

    def list_experiments(self) -> list[ExperimentRecord]:
        e, m, s = experiments, measurements, suggestions
        # One grouped query, however many experiments there are.
        n_m = (sa.select(m.c.experiment_id, sa.func.count().label("n"))
               .group_by(m.c.experiment_id).subquery())
        n_p = (sa.select(s.c.experiment_id, sa.func.count().label("n"))
               .where(s.c.status == PENDING).group_by(s.c.experiment_id).subquery())
        query = (
            sa.select(e, sa.func.coalesce(n_m.c.n, 0).label("n_measurements"),
                      sa.func.coalesce(n_p.c.n, 0).label("n_pending"))
            .select_from(e.outerjoin(n_m, n_m.c.experiment_id == e.c.id)
                         .outerjoin(n_p, n_p.c.experiment_id == e.c.id))
            .order_by(e.c.created_at.desc(), e.c.id)
        )
        with self._begin(write=False) as conn:
            return [_experiment(row) for row in conn.execute(query)]

    def set_status(self, experiment_id: str, status: ExperimentStatus) -> ExperimentRecord:
        status = ExperimentStatus(status)

        def tx(conn: Connection) -> ExperimentRecord:
            e = experiments
            done = conn.execute(e.update().where(e.c.id == experiment_id)
                                .values(status=status.value, updated_at=time.time()))
            if done.rowcount == 0:
                raise UnknownExperiment(experiment_id)
            return self._get_experiment(conn, experiment_id)

        return self._write(tx)

    def save_model_state(self, experiment_id: str, state: dict[str, Any]) -> None:
        # updated_at stays: a refit changes no data a client posted or was given.
        def tx(conn: Connection) -> None:
            e = experiments
            done = conn.execute(e.update().where(e.c.id == experiment_id)
                                .values(model_state=state))
            if done.rowcount == 0:
                raise UnknownExperiment(experiment_id)

        self._write(tx)

    def add_map_error(self, experiment_id: str, point: MapErrorPoint, keep: int) -> None:
        if not all(math.isfinite(v) for v in (point.rms_std, point.relative or 0.0)):
            raise ValueError(f"a map error must be finite, not {point}")

        def tx(conn: Connection) -> None:
            e = map_errors
            self._lock_experiment(conn, experiment_id)  # serializes writers of its points
            mine = e.c.experiment_id == experiment_id
            conn.execute(e.delete().where(mine, e.c.n == point.n))
            conn.execute(e.insert().values(experiment_id=experiment_id, n=point.n,
                                           rms_std=point.rms_std, relative=point.relative,
                                           created_at=point.at))
            if conn.execute(sa.select(sa.func.count()).where(mine)).scalar_one() > keep:
                ns = conn.execute(sa.select(e.c.n).where(mine).order_by(e.c.n)).scalars()
                conn.execute(e.delete().where(mine, e.c.n.in_(thinned(list(ns), keep))))

        self._write(tx)

    def list_map_errors(self, experiment_id: str) -> list[MapErrorPoint]:
        e = map_errors
        query = sa.select(e).where(e.c.experiment_id == experiment_id).order_by(e.c.n)
        with self._begin(write=False) as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require_experiment(conn, experiment_id)
        return [MapErrorPoint(n=r.n, rms_std=r.rms_std, relative=r.relative,
                              at=r.created_at) for r in rows]

    # ------------------------------------------------------------ measurements

    def add_measurements(self, experiment_id: str,
                         items: Sequence[NewMeasurement]) -> StoredMeasurements:
        items = list(items)
        return self._write(lambda conn: self._add_measurements(conn, experiment_id, items),
                           attempts=WRITE_ATTEMPTS)

    def _add_measurements(self, conn: Connection, experiment_id: str,
                          items: list[NewMeasurement]) -> StoredMeasurements:
        m, s = measurements, suggestions
        if self._lock_experiment(conn, experiment_id) == ExperimentStatus.closed.value:
            raise Conflict("status", f"experiment {experiment_id!r} is closed")
        now = time.time()
        order = [it.suggestion_id for it in items if it.suggestion_id is not None]
        suggestion_ids = set(order)
        self._require_suggestions(conn, experiment_id, order)

        keys = {it.key for it in items if it.key is not None}
        stored: dict[str, MeasurementRecord] = {}
        if keys:
            rows = conn.execute(sa.select(m).where(m.c.experiment_id == experiment_id,
                                                   m.c.key.in_(keys)))
            stored = {row.key: _measurement(row) for row in rows}
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(m.c.seq), 0))
                           .where(m.c.experiment_id == experiment_id)).scalar_one()

        # Plan the batch: each item resolves to a stored record or to a row to insert.
        plan: list[MeasurementRecord | int] = []  # a record, or an index into new_rows
        new_rows: list[dict[str, Any]] = []
        new_by_key: dict[str, int] = {}  # key -> index of its first item
        inserted: list[int] = []  # indexes of the items stored now
        created: list[bool] = []
        for i, it in enumerate(items):
            known: MeasurementRecord | NewMeasurement | None = None
            if it.key in stored:
                known = stored[it.key]
                plan.append(stored[it.key])
            elif it.key in new_by_key:
                known = items[new_by_key[it.key]]
                plan.append(plan[new_by_key[it.key]])
            else:
                seq += 1
                inserted.append(i)
                plan.append(len(new_rows))
                new_rows.append(dict(
                    experiment_id=experiment_id, seq=seq, position=dict(it.position),
                    values_=dict(it.values), noise=dict(it.noise),
                    suggestion_id=it.suggestion_id, key=it.key, metadata=dict(it.metadata),
                    created_at=now))
                if it.key is not None:
                    new_by_key[it.key] = i
            created.append(known is None)
            if known is not None and _content(known) != _content(it):
                by = ("a stored measurement" if it.key in stored else
                      f"measurements[{new_by_key[it.key]}] of this batch")
                raise Conflict(f"measurements[{i}].key",
                               f"key {it.key!r} is already used by {by}, for a different "
                               "measurement", in_body=True)

        self._answered_once(conn, experiment_id, items, inserted)
        new_records: list[MeasurementRecord] = []
        if new_rows:
            ids = conn.execute(m.insert().returning(m.c.id, sort_by_parameter_order=True),
                               new_rows).scalars().all()
            new_records = [MeasurementRecord(
                id=id_, experiment_id=experiment_id, seq=r["seq"], position=r["position"],
                values=r["values_"], noise=r["noise"], suggestion_id=r["suggestion_id"],
                key=r["key"], metadata=r["metadata"], created_at=now)
                for id_, r in zip(ids, new_rows, strict=True)]
            conn.execute(experiments.update().where(experiments.c.id == experiment_id)
                         .values(updated_at=now))
        if suggestion_ids:
            # A late answer to an abandoned or expired suggestion is still data; only a
            # pending one changes state.
            conn.execute(s.update().where(s.c.id.in_(suggestion_ids), s.c.status == PENDING)
                         .values(status=SuggestionStatus.measured.value, closed_at=now))
        records = [p if isinstance(p, MeasurementRecord) else new_records[p] for p in plan]
        return StoredMeasurements(records=records, created=created)

    def _answered_once(self, conn: Connection, experiment_id: str,
                       items: list[NewMeasurement], new: list[int]) -> None:
        """A suggestion is answered by one measurement: a new item (``new``: indexes of the
        items to insert, not key replays) may not name one answered before or by an
        earlier item of the batch. A retry without a key would store a point twice."""
        asked = [i for i in new if items[i].suggestion_id is not None]
        if not asked:
            return
        m = measurements
        ids = {items[i].suggestion_id for i in asked}
        before = dict(conn.execute(
            sa.select(m.c.suggestion_id, sa.func.min(m.c.seq))
            .where(m.c.experiment_id == experiment_id, m.c.suggestion_id.in_(ids))
            .group_by(m.c.suggestion_id)).all())
        first: dict[str, int] = {}
        for i in asked:
            sid = items[i].suggestion_id
            assert sid is not None
            by = (f"measurement seq {before[sid]}" if sid in before else
                  f"measurements[{first[sid]}] of this batch" if sid in first else None)
            if by is not None:
                raise Conflict(f"measurements[{i}].suggestion_id",
                               f"suggestion {sid!r} was already answered by {by}: a retry "
                               "needs the first try's key; a repeat measurement needs no "
                               "suggestion_id", in_body=True)
            first[sid] = i

    def _require_suggestions(self, conn: Connection, experiment_id: str,
                             order: list[str]) -> None:
        """Raise UnknownSuggestion for the first of ``order`` this experiment lacks."""
        suggestion_ids = set(order)
        if not suggestion_ids:
            return
        s = suggestions
        known = set(conn.execute(sa.select(s.c.id).where(
            s.c.experiment_id == experiment_id, s.c.id.in_(suggestion_ids))).scalars())
        missing = suggestion_ids - known
        if missing:
            raise UnknownSuggestion(experiment_id, next(s for s in order if s in missing))

    def list_measurements(self, experiment_id: str, *, after_seq: int = 0,
                          limit: int | None = None) -> list[MeasurementRecord]:
        m = measurements
        query = (sa.select(m).where(m.c.experiment_id == experiment_id, m.c.seq > after_seq)
                 .order_by(m.c.seq).limit(limit))
        with self._begin(write=False) as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require_experiment(conn, experiment_id)
            return [_measurement(row) for row in rows]

    # ------------------------------------------------------------ suggestions

    def add_suggestions(self, experiment_id: str,
                        items: Sequence[NewSuggestion]) -> list[SuggestionRecord]:
        items = list(items)

        def tx(conn: Connection) -> list[SuggestionRecord]:
            status = self._lock_experiment(conn, experiment_id)
            if status != ExperimentStatus.active.value:
                raise Conflict("status", f"experiment {experiment_id!r} is {status}")
            if not items:
                return []
            now, batch = time.time(), new_id()
            records = [SuggestionRecord(
                id=new_id(), experiment_id=experiment_id, position=dict(it.position),
                mean=dict(it.mean), std=dict(it.std), acquisition=it.acquisition,
                source=it.source,
                status=SuggestionStatus.pending, batch=batch, rank=rank, created_at=now,
                expires_at=it.expires_at, closed_at=None) for rank, it in enumerate(items)]
            conn.execute(_INSERT_SUGGESTIONS, [_suggestion_row(r) for r in records])
            conn.execute(_TOUCH_EXPERIMENT, {"eid": experiment_id, "now": now})
            return records

        return self._write(tx, attempts=2)  # 2: an id collision gets new ids

    def _find_suggestion(self, conn: Connection, experiment_id: str,
                         suggestion_id: str) -> sa.Row[Any]:
        s = suggestions
        row = conn.execute(sa.select(s).where(s.c.id == suggestion_id,
                                              s.c.experiment_id == experiment_id)).first()
        if row is None:
            self._require_experiment(conn, experiment_id)
            raise UnknownSuggestion(experiment_id, suggestion_id)
        return row

    def get_suggestion(self, experiment_id: str, suggestion_id: str) -> SuggestionRecord:
        with self._begin(write=False) as conn:
            return _suggestion(self._find_suggestion(conn, experiment_id, suggestion_id))

    def list_suggestions(self, experiment_id: str, *,
                         status: SuggestionStatus | None = None) -> list[SuggestionRecord]:
        s = suggestions
        query = (sa.select(s).where(s.c.experiment_id == experiment_id)
                 .order_by(s.c.created_at, s.c.batch, s.c.rank))
        if status is not None:
            query = query.where(s.c.status == SuggestionStatus(status).value)
        with self._begin(write=False) as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require_experiment(conn, experiment_id)
            return [_suggestion(row) for row in rows]

    def close_suggestion(self, experiment_id: str, suggestion_id: str,
                         status: SuggestionStatus) -> SuggestionRecord:
        status = SuggestionStatus(status)
        if status not in (SuggestionStatus.abandoned, SuggestionStatus.expired):
            raise ValueError(f"a suggestion is closed as abandoned or expired, not {status}")

        def tx(conn: Connection) -> SuggestionRecord:
            s = suggestions
            self._lock_experiment(conn, experiment_id)
            row = self._find_suggestion(conn, experiment_id, suggestion_id)
            if row.status != PENDING:
                return _suggestion(row)
            now = time.time()
            conn.execute(s.update().where(s.c.id == suggestion_id)
                         .values(status=status.value, closed_at=now))
            conn.execute(experiments.update().where(experiments.c.id == experiment_id)
                         .values(updated_at=now))
            return _suggestion(self._find_suggestion(conn, experiment_id, suggestion_id))

        return self._write(tx)

    def expire_suggestions(self, now: float) -> list[SuggestionRecord]:
        def tx(conn: Connection) -> list[SuggestionRecord]:
            s, e = suggestions, experiments
            due = (s.c.status == PENDING, s.c.expires_at.is_not(None), s.c.expires_at <= now)
            touched = conn.execute(sa.select(s.c.experiment_id).where(*due).distinct())
            ids = sorted(touched.scalars())
            if not ids:
                return []
            # Lock order, as everywhere: experiment rows first (sorted), then suggestions.
            conn.execute(sa.select(e.c.id).where(e.c.id.in_(ids)).order_by(e.c.id)
                         .with_for_update())
            rows = conn.execute(
                s.update().where(*due, s.c.experiment_id.in_(ids))
                .values(status=SuggestionStatus.expired.value, closed_at=now)
                .returning(*s.c)
            ).all()
            conn.execute(e.update().where(e.c.id.in_(ids)).values(updated_at=time.time()))
            return sorted((_suggestion(row) for row in rows),
                          key=lambda r: (r.created_at, r.batch, r.rank))

        return self._write(tx)

