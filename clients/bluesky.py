"""A Bluesky plan steered by Beamsteer: ask where to measure, move, read, tell.

Needs bluesky (``pip install 'beamsteer[bluesky]'``); ophyd or ophyd-async devices both do,
as any Bluesky-readable detector and movable motor.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import Msg

from clients.http import BeamsteerError, Client, Experiment, Suggestion

Reduce = Callable[[dict[str, Any]], Mapping[str, float]]
AskAhead = bool | Literal["auto"]

log = logging.getLogger("beamsteer.bluesky")

ASK_MARGIN = 1.2  # asking ahead: measuring what is left must outlast the last ask by this
# ask_ahead="auto": ask ahead once waiting in turn (the last post, stop check and ask) would
# idle the beamline for more than this share of a batch's time. Asking ahead costs ~2-7%
# more points to the same map error (benchmarks/README.md, "Asking ahead"): below this
# share, waiting costs less beamtime than the extra points do.
AUTO_SHARE = 0.05


class BadReadings(RuntimeError):
    """Several readings in a row reduced to values or positions that are not finite: the
    detector, a motor's readback or the reduction is failing (the run stops as failed)."""


T = TypeVar("T")


class _Calls:
    """The plan's calls to the server, in the order they are made: where they are made
    (an error raises there), or, with ``ahead``, one after another on a thread of their
    own, so that the plan moves and counts meanwhile (an error raises at the next
    :meth:`raise_failed`, :meth:`wait`, or at the ``result()`` of its future)."""

    def __init__(self, ahead: bool) -> None:
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="beamsteer-plan")
                      if ahead else None)
        self._sent: list[Future[Any]] = []  # not yet seen done
        self._optional: list[Future[Any]] = []  # asks and checks: dropped when stopping

    def submit(self, fn: Callable[..., T], *args: Any, optional: bool = False) -> Future[T]:
        """Call ``fn(*args)``; ``optional``: a call whose result only a run that goes on
        needs (an ask, a stop check), not sent if the run ends first (:meth:`close`)."""
        if self._pool is not None:
            future = self._pool.submit(fn, *args)
            self._sent.append(future)
            if optional:
                self._optional.append(future)
            return future
        done: Future[T] = Future()
        done.set_result(fn(*args))
        return done

    def raise_failed(self) -> None:
        """Raise the error of the first call that failed; forget the calls that are done."""
        done = [f for f in self._sent if f.done()]  # one look: a call may end meanwhile
        self._sent = [f for f in self._sent if f not in done]
        for f in done:
            if not f.cancelled() and (exc := f.exception()) is not None:
                raise exc

    def wait(self) -> None:
        wait(self._sent)

    def close(self, failing: bool) -> None:
        """Send what is queued and stop the thread. ``failing`` (the run ends on an
        error): the asks and checks not sent yet are dropped (with the server down, each
        would retry for a while), and the errors of the calls sent meanwhile are logged
        (the error already on its way is the one raised)."""
        if self._pool is None:
            return
        if failing:
            for f in self._optional:
                f.cancel()
        self._pool.shutdown(wait=True)
        if failing:
            for f in self._sent:
                if not f.cancelled() and (exc := f.exception()) is not None:
                    log.warning("a call to the server failed while the run ended: %s", exc)
        self._sent = []


def _motor_map(motors: Mapping[str, Any] | Sequence[Any], exp: Experiment) -> dict[str, Any]:
    names = exp.parameter_names
    if isinstance(motors, Mapping):
        out = dict(motors)
    else:
        if len(motors) != len(names):
            raise ValueError(f"{len(motors)} motors for {len(names)} parameters {names}: "
                             "give one per parameter, in the spec's order, or a mapping")
        out = dict(zip(names, motors, strict=True))
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(f"no motor for parameter(s) {missing}")
    return {n: out[n] for n in names}


def _where(motor: Any, reading: Mapping[str, Any], setpoint: float) -> float:
    """Where the motor is: its readback in this event, else ``.position``, else the
    setpoint (the GP should learn where the beam was, not where it was sent)."""
    for f in (getattr(motor, "hints", None) or {}).get("fields", []) or [motor.name]:
        if f in reading:
            return float(reading[f]["value"])
    pos = getattr(motor, "position", None)
    return float(pos) if isinstance(pos, int | float) else float(setpoint)


def _clip(exp: Experiment, position: dict[str, float]) -> dict[str, float]:
    """Keep a readback that overshot a bound by an encoder step inside the parameter space."""
    b = {p["name"]: (p["lower"], p["upper"]) for p in exp.spec["parameters"]}
    return {k: min(max(v, b[k][0]), b[k][1]) for k, v in position.items()}


def _check_counts(**counts: int) -> None:
    for name, n in counts.items():
        if n < 1:
            raise ValueError(f"{name} must be >= 1, not {n}")


def _not_finite(named: Mapping[str, Any]) -> str | None:
    """``"intensity = nan"`` for the first value that is not a finite number, else ``None``."""
    for k, v in named.items():
        try:
            ok = math.isfinite(float(v))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{k} = {v!r}"
    return None


def max_std(client: Client, exp: Experiment, points_per_axis: int = 20) -> float:
    """Largest posterior std of the steering output on a grid over (up to) the first two
    parameters; ``inf`` while the model cannot say."""
    post = client.posterior(exp, grid={n: points_per_axis for n in exp.parameter_names[:2]})
    std = post.std(exp.target)
    if not std or any(s is None for s in std):
        return math.inf
    return max(s for s in std if s is not None)


def _good_enough(client: Client, exp: Experiment, target_std: float | None,
                 target_error: float | None, trust_from: int, measured: int) -> str | None:
    """Why the map is good enough to stop now (see :func:`autonomous_scan`), or ``None``.
    ``measured``: the experiment's measurements now (the estimate is not read before
    ``trust_from``: it would not be trusted)."""
    if target_std is not None and (worst := max_std(client, exp)) < target_std:
        return f"largest posterior std {worst:.4g} < target_std {target_std:g}"
    if target_error is not None and measured >= trust_from:
        now = client.get_experiment(exp)
        if now.reports_map_error is False:
            warnings.warn(f"{client.url} reports no map error estimate (a server older "
                          "than the estimate): target_error cannot stop this scan",
                          RuntimeWarning, stacklevel=2)
        elif now.map_good_enough(target_error, trust_from) and (err := now.map_error):
            return (f"estimated map error {err.relative:.4g} of the measured range "
                    f"<= target_error {target_error:g} (N={err.n})")
    return None


def _first_reason(*checks: Future[str | None] | None) -> str | None:
    """The first stop reason among these stop checks (waiting for each), else ``None``."""
    return next((r for f in checks if f is not None and (r := f.result()) is not None), None)


def autonomous_scan(detectors: Sequence[Any], motors: Mapping[str, Any] | Sequence[Any],
                    client: Client, experiment_id: str, *, max_points: int, reduce: Reduce,
                    target_std: float | None = None, target_error: float | None = None,
                    min_points: int | None = None, batch: int = 1,
                    max_bad_readings: int = 3, ask_ahead: AskAhead = "auto",
                    md: Mapping[str, Any] | None = None) -> Generator[Msg, Any, str]:
    """Measure where Beamsteer suggests until ``max_points`` or the map is good enough.

    Each round asks the server for ``batch`` positions (in the order that keeps motor
    travel short), then for each: moves all motors at once, triggers and reads detectors and
    motors into one event of the ``primary`` stream, reduces that reading to the outputs
    the experiment expects, and posts it at once with ``metadata`` ``{"run_uid",
    "seq_num", "plan_name"}`` and the idempotency key ``"<uid>-<seq_num>"``, so a retried
    post never stores a point twice and every stored point leads back to its event.
    Suggestions not measured (a pause, an abort, an error) are abandoned on the way out.

    A reading whose reduced values or motor positions are not finite (a detector glitch,
    a beam dump) is not told: its event stays in the run, its suggestion is abandoned
    (the server may suggest the place again), a warning is logged (``beamsteer.bluesky``;
    Python prints it to stderr when logging is not set up), and the scan goes on.
    ``max_bad_readings`` such readings in a row end the run as failed (:class:`BadReadings`).

    With ``ask_ahead=True`` the beamline does not wait for the server: the next batch is
    asked for while the last position of this one is measured (that position is pending,
    so the server knows where, not what), or earlier if an ask takes longer than a point
    (as many positions before the end as it takes to hide the last ask's time), and each
    measurement is posted while the motors move on. The calls run in order on a thread
    of the plan's own; a call that fails ends the run (at the next batch) as failed, and
    measurements already read are still posted when the run ends for any reason. A
    ``target_std`` / ``target_error`` stop is then decided one batch late, so one more
    batch is measured than when asking in turn.
    What it saves and what it costs in measurements: ``benchmarks/README.md``, "The
    beamline's dead time".

    ``ask_ahead="auto"`` (the default) decides at the start of each batch, from how long
    the last post, stop check and ask took (timed by the calls, or the last wait in turn
    if that was longer) and how long the last batch's points took to move and read: it
    asks ahead while waiting in turn would idle the beamline for more than
    :data:`AUTO_SHARE` (5%) of a batch's time, which is about what asking ahead costs in
    extra points; else it asks in turn. Until a post and a point are timed (in the first
    batch) it decides at each position. At 200 ms per point a wait of ~25-50 ms is a
    tenth to a fifth of the beamtime and the plan asks ahead; at seconds per point it
    waits. A switch is logged (``beamsteer.bluesky``, INFO; each ask at DEBUG). Its calls
    run on the plan's thread either way, so a batch's posts overlap the next moves and a
    refused post fails the run at the end of its batch. ``False`` makes every call where
    the plan is (the beamline waits for each post too); ``True`` always asks ahead.

    The whole scan is **one run**: one start document, one descriptor, one event per
    point, one stop. One run keeps the documents of a scan together (a single uid finds
    all of it in Tiled/databroker, live plots and callbacks see one growing table), and
    it is what Bluesky's own adaptive plans (``adaptive_scan``, bluesky-adaptive's
    ``adaptive_plan``) do. A run per batch would scatter one map over many uids.

    Args:
        detectors: Readable devices to trigger and read at each point.
        motors: ``{parameter: motor}``, or motors in the order of the spec's parameters.
        client: A :class:`clients.Client` of the server.
        experiment_id: The experiment that steers; its outputs are what ``reduce`` returns.
        max_points: Points to measure at most.
        reduce: ``reading -> {output: value}``; ``reading`` maps each data key of the event
            to its value, e.g. ``lambda r: {"intensity": r["det"]}``.
        target_std: Stop once the largest posterior std of the steering output, on a
            20 x 20 grid over the first two parameters, falls below this (checked after
            each batch).
        target_error: Stop once the server's estimate of the map's error falls to this
            fraction of the measured range (e.g. ``0.02``): the RMS posterior std of the
            steering output over the whole allowed region (``Experiment.map_error``),
            checked after each batch once ``min_points`` are measured and while no refit
            runs. The stop document's ``reason`` records the estimate. How it compares
            with the true error: ``benchmarks/README.md``, "Stopping on the model's own
            error". With a server that does not report the estimate the plan warns
            (``RuntimeWarning``) and the scan runs to ``max_points``.
        min_points: Points measured before ``target_error`` is trusted (default ``10 *
            d``: with fewer, the fitted lengthscales, and with them the estimate, are
            unreliable).
        batch: Positions per ask.
        max_bad_readings: Non-finite readings in a row that stop the scan.
        ask_ahead: Ask and post while the beamline moves and counts: ``True``, ``False``,
            or ``"auto"`` (above).
        md: Extra metadata for the start document.

    Returns:
        The run's uid (``uid = yield from autonomous_scan(...)``; ``RE(...)`` returns it
        too).
    """
    _check_counts(max_points=max_points, batch=batch, max_bad_readings=max_bad_readings)
    if not (isinstance(ask_ahead, bool) or ask_ahead == "auto"):
        raise ValueError(f"ask_ahead must be True, False or 'auto', not {ask_ahead!r}")
    if target_error is not None and not 0 < target_error < 1:
        raise ValueError("target_error must be a fraction of the range in (0, 1)")
    exp = client.get_experiment(experiment_id)
    trust_from = exp.map_error_min_points if min_points is None else min_points
    motor_of = _motor_map(motors, exp)
    devices = [*detectors, *[m for m in motor_of.values() if m not in detectors]]
    _md: dict[str, Any] = {
        "plan_name": "autonomous_scan",
        "detectors": [d.name for d in detectors],
        "motors": [m.name for m in motor_of.values()],
        "num_points": max_points,
        "plan_args": {"experiment_id": exp.id, "max_points": max_points, "batch": batch,
                      "target_std": target_std, "target_error": target_error,
                      "min_points": trust_from, "ask_ahead": ask_ahead},
        "beamsteer": {"url": client.url, "experiment_id": exp.id, "experiment": exp.name,
                      "target": exp.target},
        "hints": {"dimensions": [([f for m in motor_of.values()
                                   for f in (getattr(m, "hints", None) or {}).get(
                                       "fields", [m.name])], "primary")]},
    }
    _md.update(md or {})

    scan = _Scan(client, exp, motor_of, devices, reduce, max_points=max_points, batch=batch,
                 target_std=target_std, target_error=target_error, trust_from=trust_from,
                 max_bad_readings=max_bad_readings, ask_ahead=ask_ahead)
    uid: str = yield from bpp.stage_wrapper(scan.run(_md), devices)
    return uid


@dataclass
class _Scan:
    """One :func:`autonomous_scan`: its settings and its steps."""

    client: Client
    exp: Experiment
    motor_of: dict[str, Any]
    devices: list[Any]
    reduce: Reduce
    max_points: int
    batch: int
    target_std: float | None
    target_error: float | None
    trust_from: int
    max_bad_readings: int
    ask_ahead: AskAhead
    # timed by the calls themselves, seconds: the last ask, post, stop check; and the last
    # point's move and read
    _ask_s: float | None = field(default=None, init=False)
    _tell_s: float | None = field(default=None, init=False)
    _check_s: float | None = field(default=None, init=False)
    _point_s: float | None = field(default=None, init=False)
    _mean_point_s: float | None = field(default=None, init=False)  # over the last batch
    _turn_s: float | None = field(default=None, init=False)  # the last wait in turn, whole
    _was_ahead: bool = field(default=False, init=False)  # "auto": the last decision

    def run(self, md: dict[str, Any]) -> Generator[Msg, Any, str]:
        """The run: ask, then move, read and tell each position, until done."""
        uid: str = yield from bps.open_run(md=md)
        calls = _Calls(self.ask_ahead is not False)
        seq = 0
        pending: list[Suggestion] = []  # asked for, neither measured nor abandoned
        asked: Future[list[Suggestion]] | None = self._ask(calls, 0, ahead=False)
        # ask_ahead: the stop checks after the last batch and after the one before it
        check: Future[str | None] | None = None
        earlier: Future[str | None] | None = None
        reason = None
        bad_in_row = 0
        failing = False
        idle_from: float | None = None  # the end of the last reading, when waiting in turn
        try:
            while asked is not None:
                pending, asked = list(asked.result()), None
                if idle_from is not None:  # how long the beamline waited, as it would again
                    self._turn_s, idle_from = time.perf_counter() - idle_from, None
                # Asking ahead, the calls made before that ask are done now (they run in
                # order): a refused tell fails the run here; the check after the batch
                # before last says whether to stop (the last batch's check would be waited
                # for, and the beamline with it).
                calls.raise_failed()
                if earlier is not None and (reason := earlier.result()) is not None:
                    break
                if not pending:  # every place excluded (forbidden, or pending already)
                    reason = "the server suggested no more positions"
                    break
                # decided once per batch (None: at each position, until the calls and a
                # point are timed)
                ahead, size, took = self._ahead_now(), len(pending), 0.0
                while pending:
                    seq += 1  # the seq_num of the event trigger_and_read emits
                    after = seq + len(pending) - 1  # measured once this batch is
                    if ahead is None:
                        ahead = self._ahead_now()
                    if (ahead and asked is None and after < self.max_points
                            and self._ask_now(pending)):
                        asked = self._ask(calls, after, ahead=True)  # while these are measured
                    started = time.perf_counter()
                    here, got = yield from self._read(pending[0])
                    read_end = time.perf_counter()
                    self._point_s = read_end - started
                    took += self._point_s
                    s = pending.pop(0)
                    if isinstance(got, str):
                        bad_in_row = self._skip(calls, s, seq, got, bad_in_row + 1)
                    else:
                        bad_in_row = 0
                        calls.submit(self._tell, uid, seq, s, here, got)
                self._mean_point_s = took / size
                earlier, check = check, calls.submit(
                    self._timed_check, self.exp.n_measurements + seq, optional=True)
                if asked is None:  # in turn (or the last batch): the checks, then the ask
                    calls.wait()  # this batch's posts and checks, in order: the first
                    calls.raise_failed()  # that failed (a refused post) fails the run
                    if (reason := _first_reason(earlier, check)) is not None:
                        break  # (asking ahead, the earlier one was not read yet)
                    earlier = check = None
                    if seq < self.max_points:
                        asked, idle_from = self._ask(calls, seq, ahead=False), read_end
            calls.wait()  # every measurement stored before the run is closed
            calls.raise_failed()
        except BaseException:
            failing = True
            raise
        finally:
            self._leave(calls, failing, asked, pending)
        yield from bps.close_run(reason=reason or f"max_points {self.max_points} measured")
        return uid

    def _leave(self, calls: _Calls, failing: bool, asked: Future[list[Suggestion]] | None,
               pending: list[Suggestion]) -> None:
        """The run ends: send what is queued (points read are not dropped), then abandon
        the suggestions that nobody will measure, a batch asked ahead included."""
        calls.close(failing)
        if asked is not None:
            with suppress(Exception):  # its error, if any, is not this run's to report
                pending = [*pending, *asked.result()]
        for s in pending:
            with suppress(BeamsteerError):
                self.client.abandon(self.exp, s)

    def _ask_now(self, left: list[Suggestion]) -> bool:
        """Asking ahead: ask for the next batch now, before the first of ``left`` (this
        batch's positions not measured yet)? At the last one; or earlier, when the last
        ask took longer than measuring a point does (a batch of 4 in 4-D at N = 5,000
        takes ~0.5 s): at the latest position from which measuring the rest still
        outlasts the ask (``ASK_MARGIN`` to spare), so that the batch is there when the
        beamline is free. The earlier it is asked, the more of this batch it knows only
        as pending."""
        if len(left) == 1:
            return True
        return (self._ask_s is not None and self._point_s is not None
                and (len(left) - 1) * self._point_s < ASK_MARGIN * self._ask_s)

    def _ahead_now(self) -> bool | None:
        """Ask ahead in the batch that starts? ``ask_ahead`` if it is ``True`` or
        ``False``; for ``"auto"``, whether waiting in turn would idle the beamline for more
        than :data:`AUTO_SHARE` of a batch's moving and reading (the last batch's mean
        point time, ``batch`` points). The wait: the last post, stop check and ask as the
        calls timed them, or, if longer, the last wait in turn as the beamline had it (from
        the end of a reading to the next batch). Timed while asking ahead, the calls can
        come out shorter than a wait in turn (the ask was prepared, the overhead around
        the calls is not in them): without the last wait in turn the plan went back to
        waiting now and then at 200 ms per point on a 2-core VM.
        ``None`` until an ask, a post and a point are timed (the last point's time stands
        for the batch's until a batch is done)."""
        if self.ask_ahead != "auto":
            return bool(self.ask_ahead)
        point_s = self._point_s if self._mean_point_s is None else self._mean_point_s
        if self._ask_s is None or self._tell_s is None or point_s is None:
            return None
        calls_s = self._ask_s + self._tell_s + (self._check_s or 0.0)
        wait_s = max(calls_s, self._turn_s or 0.0)
        batch_s = max(self.batch * point_s, 1e-9)
        ahead = wait_s > AUTO_SHARE * batch_s
        if ahead != self._was_ahead:
            log.info("%s: waiting in turn would take %.1f ms per batch of %d (the calls "
                     "%.1f ms, the last wait in turn %s), %.1f%% of its %.0f ms of moving "
                     "and reading", "asking ahead" if ahead else "asking in turn",
                     1e3 * wait_s, self.batch, 1e3 * calls_s,
                     "-" if self._turn_s is None else f"{1e3 * self._turn_s:.1f} ms",
                     100 * wait_s / batch_s, 1e3 * batch_s)
            self._was_ahead = ahead
        return ahead

    def _ask(self, calls: _Calls, measured: int, *, ahead: bool) -> Future[list[Suggestion]]:
        """The next batch, asked once ``measured`` points are (or, ``ahead``, are being)
        measured."""
        n = min(self.batch, self.max_points - measured)
        log.debug("asking for %d position(s) %s, %d measured", n,
                  "ahead" if ahead else "in turn", measured)
        return calls.submit(self._timed_suggest, n, optional=True)

    def _timed_suggest(self, n: int) -> list[Suggestion]:
        """Ask for ``n`` positions; keep how long the server took."""
        started = time.perf_counter()
        batch = self.client.suggest(self.exp, n)
        self._ask_s = time.perf_counter() - started
        return batch

    def _timed_check(self, measured: int) -> str | None:
        """The stop check after ``measured`` points (:func:`_good_enough`), timed."""
        started = time.perf_counter()
        try:
            return _good_enough(self.client, self.exp, self.target_std, self.target_error,
                                self.trust_from, measured)
        finally:
            self._check_s = time.perf_counter() - started

    def _read(self, s: Suggestion
              ) -> Generator[Msg, Any, tuple[dict[str, float], dict[str, float] | str]]:
        """Move and read: (where the motors were, the reduced values), or what was not
        finite instead of the values."""
        args: list[Any] = []
        for name, motor in self.motor_of.items():
            args += [motor, s.position[name]]
        yield from bps.mv(*args)
        reading = yield from bps.trigger_and_read(self.devices)
        values = dict(self.reduce({k: v["value"] for k, v in reading.items()}))
        here = {n: _where(m, reading, s.position[n]) for n, m in self.motor_of.items()}
        bad = _not_finite({**here, **values})
        return here, (values if bad is None else bad)

    def _tell(self, uid: str, seq: int, s: Suggestion, here: dict[str, float],
              values: dict[str, float]) -> None:
        """Post one point; if that fails, abandon its suggestion (a no-op if the point was
        stored and only the reply was lost) so that it does not stay pending, and raise."""
        started = time.perf_counter()
        try:
            self.client.measure(self.exp, _clip(self.exp, here), values, suggestion=s,
                                key=f"{uid}-{seq}",
                                metadata={"run_uid": uid, "seq_num": seq,
                                          "plan_name": "autonomous_scan"})
            self._tell_s = time.perf_counter() - started
        except Exception:  # refused, no answer, or a reply that did not parse
            with suppress(Exception):
                self.client.abandon(self.exp, s)
            raise

    def _skip(self, calls: _Calls, s: Suggestion, seq: int, bad: str, in_row: int) -> int:
        """A reading not told: abandon its suggestion, and warn or fail the run."""
        calls.submit(self.client.abandon, self.exp, s)
        if in_row >= self.max_bad_readings:
            raise BadReadings(f"{in_row} readings in a row were not finite (the last, "
                              f"event {seq}: {bad})")
        log.warning("event %d: %s; not told to Beamsteer, its suggestion abandoned", seq, bad)
        return in_row
