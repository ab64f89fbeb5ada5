"""Load: N simulated beamlines doing ask -> measure loops against one server.

Each beamline asks for one suggestion, "measures" it (a smooth synthetic map, no motor
time) and posts the value with an idempotency key; a tell that fails with 429/5xx or a
transport error is sent again with the same key until it is acknowledged (201) or
``--give-up`` seconds pass; an ask that fails is asked again. Beamlines share experiments
round-robin (50 beamlines over 10 experiments by default), so asks on one experiment
contend for its ask lock and condition on each other's pending suggestions.

Afterwards every experiment's measurements are read back through the API: the stored
count must equal the number of acknowledged posts exactly, with no key stored twice,
none acknowledged but missing, and none stored that no caller saw acknowledged.

    python benchmarks/load.py                                  # own server on SQLite
    python benchmarks/load.py --database-url postgresql://postgres@127.0.0.1/test
    python benchmarks/load.py --url http://beamsteer.example:8000 --api-key bsk_...

Our own server runs as a ``beamsteer serve`` subprocess (``--in-process`` for a LiveServer
thread instead) with the per-caller rate limit off, since every simulated beamline comes
from 127.0.0.1. Requests/s, p50/p99 latency per operation and errors by status are printed
as markdown and written as JSON to ``benchmarks/out/``.
"""

from __future__ import annotations

import os

# Before numpy/torch load (the in-process server): one BLAS thread and passive OpenMP
# waits were the only steady setting on the 2-core VMs (DESIGN.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `server` importable
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "out" / "load"
API = "/api/v1/experiments"
SPEC: dict[str, Any] = {
    "name": "load",
    "parameters": [{"name": "x", "lower": 0, "upper": 10, "units": "mm"},
                   {"name": "y", "lower": -5, "upper": 5, "units": "mm"}],
    "outputs": [{"name": "intensity"}],
    "goal": "map",
}
# A tell carries its idempotency key, so it is sent again after any of these (as the
# Python client does): 429/503 say "not done, come back later"; 502 says "the database
# connection broke during the commit: maybe stored"; 500/504 may hide either.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def intensity(x: float, y: float) -> float:
    """The synthetic sample: smooth, so the GP has something to learn."""
    return math.sin(x) * math.cos(0.5 * y) + 0.1 * x


# --- one beamline ---------------------------------------------------------------------------


@dataclass
class Call:
    """One HTTP request as the beamline saw it.

    Args:
        op: ``ask`` or ``tell``.
        status: HTTP status, or 0 for a transport error (no reply).
        t0: ``time.monotonic()`` when it was sent.
        seconds: Until the reply (or the error).
        error: For a failure: the reply's first ``detail`` type, or the exception's name.
        message: For a failure: the reply's first ``detail`` message (or the exception).
        retry_after: The reply's ``Retry-After`` header, if any.
        key: The idempotency key of a tell.
    """

    op: str
    status: int
    t0: float
    seconds: float
    error: str | None = None
    message: str | None = None
    retry_after: str | None = None
    key: str | None = None


@dataclass
class BeamlineRun:
    """What one beamline did: every call, and the keys acknowledged or given up."""

    name: str
    experiment_id: str
    calls: list[Call] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)


def _failure(r: httpx.Response) -> tuple[str | None, str | None]:
    try:
        detail = r.json().get("detail")
    except ValueError:
        return "not_json", r.text[:200]
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return detail[0].get("type"), detail[0].get("msg")
    return None, str(detail)[:200]


async def _call(client: httpx.AsyncClient, run: BeamlineRun, op: str, path: str,
                body: dict[str, Any], key: str | None = None) -> httpx.Response | None:
    t0 = time.monotonic()
    try:
        r = await client.post(path, json=body)
    except httpx.TransportError as exc:
        run.calls.append(Call(op, 0, t0, time.monotonic() - t0, type(exc).__name__,
                              str(exc)[:200], key=key))
        return None
    call = Call(op, r.status_code, t0, time.monotonic() - t0, key=key,
                retry_after=r.headers.get("retry-after"))
    if r.status_code >= 400:
        call.error, call.message = _failure(r)
    run.calls.append(call)
    return r


def _wait(r: httpx.Response | None, max_wait: float) -> float:
    """How long to wait before sending again: Retry-After (capped), else 50 ms."""
    if r is not None:
        with contextlib.suppress(TypeError, ValueError):
            return min(max_wait, float(r.headers.get("retry-after")))
    return min(max_wait, 0.05)


async def beamline(client: httpx.AsyncClient, run: BeamlineRun, stop: asyncio.Event, *,
                   give_up_s: float = 60.0, max_wait_s: float = 1.0) -> BeamlineRun:
    """Ask -> measure -> tell until ``stop`` is set (a tell in flight is finished first).

    Args:
        client: Pointed at the server.
        run: Where the calls and keys are recorded (its name prefixes the keys).
        stop: Set to end the loop.
        give_up_s: A tell not acknowledged after this many seconds of retries is given up
            (its key goes to ``run.given_up``: it may or may not be stored).
        max_wait_s: Cap of one wait between retries (``Retry-After`` is honoured up to it).
    """
    path = f"{API}/{run.experiment_id}"
    n = 0
    while not stop.is_set():
        r = await _call(client, run, "ask", f"{path}/suggestions", {"n": 1})
        if r is None or r.status_code != 201:
            await asyncio.sleep(_wait(r, max_wait_s))
            continue
        s = r.json()["suggestions"][0]
        key = f"{run.name}-{n}"
        n += 1
        m = {"position": s["position"], "values": {"intensity": intensity(**s["position"])},
             "suggestion_id": s["id"], "key": key}
        t_give_up = time.monotonic() + give_up_s
        while True:  # a tell is sent again, with its key, until it is acknowledged
            r = await _call(client, run, "tell", f"{path}/measurements",
                            {"measurements": [m]}, key=key)
            if r is not None and r.status_code == 201:
                run.acked.append(key)
                break
            retry = r is None or r.status_code in RETRY_STATUSES
            if not retry or time.monotonic() > t_give_up:
                run.given_up.append(key)
                break
            await asyncio.sleep(_wait(r, max_wait_s))
    return run


# --- many beamlines ---------------------------------------------------------------------


@dataclass
class LoadRun:
    """Every beamline's run, and the wall time they ran."""

    experiments: list[str]
    beamlines: list[BeamlineRun]
    seconds: float

    @property
    def calls(self) -> list[Call]:
        """All calls of all beamlines."""
        return [c for b in self.beamlines for c in b.calls]

    @property
    def acked(self) -> list[str]:
        """Keys acknowledged with a 201, all beamlines."""
        return [k for b in self.beamlines for k in b.acked]


def client_for(url: str, n: int, api_key: str | None = None,
               timeout: float = 30.0) -> httpx.AsyncClient:
    """One pooled client for ``n`` beamlines (a connection each)."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers,
                             limits=httpx.Limits(max_connections=n + 4,
                                                 max_keepalive_connections=n + 4))


async def create_experiments(client: httpx.AsyncClient, n: int) -> list[str]:
    """``n`` experiments of :data:`SPEC`; their ids."""
    ids = []
    for i in range(n):
        r = await client.post(API, json={**SPEC, "name": f"load-{i}"})
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


async def run_load(client: httpx.AsyncClient, experiments: list[str], beamlines: int,
                   duration_s: float, *, progress: Any = None, give_up_s: float = 60.0,
                   max_wait_s: float = 1.0) -> LoadRun:
    """Run ``beamlines`` loops over ``experiments`` (round-robin) for ``duration_s``.

    Args:
        client: See :func:`client_for`.
        experiments: Experiment ids.
        beamlines: How many loops run at once.
        duration_s: Seconds until they are told to stop (each then finishes its tell).
        progress: Called every second with the :class:`LoadRun` so far, if given.
        give_up_s: See :func:`beamline`.
        max_wait_s: See :func:`beamline`.
    """
    stop = asyncio.Event()
    runs = [BeamlineRun(f"b{i:03d}", experiments[i % len(experiments)])
            for i in range(beamlines)]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(beamline(client, r, stop, give_up_s=give_up_s,
                                          max_wait_s=max_wait_s)) for r in runs]
    try:
        t_end = t0 + duration_s
        while (left := t_end - time.monotonic()) > 0:
            done, _ = await asyncio.wait(tasks, timeout=min(1.0, left),
                                         return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a bug in a loop: raise it now
            if progress is not None:
                progress(LoadRun(experiments, runs, time.monotonic() - t0))
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
    return LoadRun(experiments, runs, time.monotonic() - t0)


# --- checking what was stored -------------------------------------------------------------


@dataclass
class Verification:
    """The store, read back through the API, against what the beamlines were told.

    Args:
        stored: Measurements stored in all the run's experiments.
        acked: Posts acknowledged with a 201.
        duplicates: Keys stored more than once.
        lost: Keys acknowledged but not stored.
        unacked: Keys stored that no caller saw acknowledged (given up after an error).
        bad_seq: Experiments whose ``seq`` numbers are not 1..n.
        count_mismatch: Experiments whose ``n_measurements`` differs from the rows read.
    """

    stored: int
    acked: int
    duplicates: list[str]
    lost: list[str]
    unacked: list[str]
    bad_seq: list[str]
    count_mismatch: list[str]

    @property
    def ok(self) -> bool:
        """Stored count equals acknowledged posts exactly, nothing twice or missing."""
        return (self.stored == self.acked and not self.duplicates and not self.lost
                and not self.unacked and not self.bad_seq and not self.count_mismatch)

    def summary(self) -> str:
        """One line for humans."""
        verdict = "OK" if self.ok else "MISMATCH"
        return (f"{verdict}: {self.stored} measurements stored, {self.acked} posts "
                f"acknowledged; {len(self.duplicates)} duplicate keys, {len(self.lost)} "
                f"acknowledged but missing, {len(self.unacked)} stored but never "
                f"acknowledged, {len(self.bad_seq)} experiments with gaps in seq, "
                f"{len(self.count_mismatch)} with a wrong n_measurements")


async def stored_measurements(client: httpx.AsyncClient,
                              experiment_id: str) -> list[dict[str, Any]]:
    """Every measurement of an experiment, page by page."""
    out: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        r = await client.get(f"{API}/{experiment_id}/measurements",
                             params={"after": after, "limit": 10_000})
        r.raise_for_status()
        page = r.json()
        out += page["measurements"]
        after = page["next_after"]
    return out


async def verify(client: httpx.AsyncClient, run: LoadRun) -> Verification:
    """Read every experiment back and compare with the acknowledged keys."""
    keys: list[str] = []
    bad_seq, mismatch = [], []
    for eid in run.experiments:
        ms = await stored_measurements(client, eid)
        keys += [m["key"] for m in ms]
        if [m["seq"] for m in ms] != list(range(1, len(ms) + 1)):
            bad_seq.append(eid)
        r = await client.get(f"{API}/{eid}")
        r.raise_for_status()
        if r.json()["n_measurements"] != len(ms):
            mismatch.append(eid)
    counts = Counter(keys)
    acked = run.acked
    stored, acked_set = set(counts), set(acked)
    return Verification(
        stored=len(keys), acked=len(acked),
        duplicates=sorted(k for k, c in counts.items() if c > 1)
        + sorted(k for k, c in Counter(acked).items() if c > 1),
        lost=sorted(acked_set - stored), unacked=sorted(stored - acked_set),
        bad_seq=bad_seq, count_mismatch=mismatch)


# --- the report -----------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]  # nearest rank


def stats(run: LoadRun) -> dict[str, Any]:
    """Requests/s, latency percentiles per operation, errors by status."""
    calls = run.calls
    ops: dict[str, Any] = {}
    for op in ("ask", "tell", "all"):
        mine = [c for c in calls if op == "all" or c.op == op]
        ok = [c.seconds for c in mine if 200 <= c.status < 300]
        ops[op] = {"requests": len(mine), "ok": len(ok),
                   "per_s": len(mine) / run.seconds if run.seconds else 0.0,
                   "ok_per_s": len(ok) / run.seconds if run.seconds else 0.0,
                   "p50_ms": _ms(_pct(ok, 50)), "p99_ms": _ms(_pct(ok, 99)),
                   "max_ms": _ms(max(ok) if ok else None)}
    errors = Counter(f"{c.status} {c.error or ''}".strip() for c in calls
                     if not 200 <= c.status < 300)
    return {"seconds": run.seconds, "operations": ops, "errors": dict(errors.most_common()),
            "given_up": sum(len(b.given_up) for b in run.beamlines),
            "acked": len(run.acked)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _num(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(s: dict[str, Any], v: Verification, label: str) -> str:
    """The report as markdown: one table of operations, one of errors, the verdict."""
    lines = [f"{label}, {s['seconds']:.1f} s:", "",
             "| operation | requests | ok | req/s | ok/s | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for op, o in s["operations"].items():
        lines.append(f"| {op} | {o['requests']:,} | {o['ok']:,} | {_num(o['per_s'])} | "
                     f"{_num(o['ok_per_s'])} | {_num(o['p50_ms'])} | {_num(o['p99_ms'])} | "
                     f"{_num(o['max_ms'])} |")
    lines += ["", "| errors (status type) | count |", "|---|---:|"]
    lines += [f"| {k} | {n:,} |" for k, n in s["errors"].items()] or ["| none | 0 |"]
    lines += ["", f"Store check: {v.summary()}."]
    return "\n".join(lines)


# --- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def own_server(database_url: str | None, in_process: bool) -> Iterator[str]:
    """A server of our own on SQLite in a temporary directory (or ``database_url``),
    rate limit off; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="beamsteer-load-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'beamsteer.db'}"
        env = {"BEAMSTEER_RATE_LIMIT_PER_S": "0",
               "BEAMSTEER_LOG_LEVEL": os.environ.get("BEAMSTEER_LOG_LEVEL", "warning")}
        if in_process:
            from server.live import LiveServer
            from server.settings import Settings

            settings = Settings(database_url=url, data_dir=Path(tmp), rate_limit_per_s=0,
                                log_level="warning", log_json=False)
            with LiveServer(settings) as server:
                yield server.url
            return
        from server.live import ServeProcess  # (imports no service stack)

        # Everything acknowledged is committed already; a server that does not stop
        # within 10 s (a long refit in flight) is killed.
        with ServeProcess(Path(tmp), torch_threads=None, database_url=url, env=env,
                          log_level=None, stop_timeout=10) as server:
            yield server.url


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="N simulated beamlines doing ask/measure loops against one server; "
                    "reports requests/s, p50/p99 latency and errors, then checks that the "
                    "store holds exactly the acknowledged measurements.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--beamlines", type=int, default=50, help="concurrent beamline loops")
    p.add_argument("--experiments", type=int, default=10,
                   help="experiments they share round-robin (= --beamlines: one each)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--url", default=None,
                   help="an external server (else one of our own is started)")
    p.add_argument("--api-key", default=os.environ.get("BEAMSTEER_API_KEY"),
                   help="for --url with keys: one with ask, tell and create scopes")
    p.add_argument("--database-url", default=None,
                   help="our own server on this database (default: SQLite in a temp dir)")
    p.add_argument("--in-process", action="store_true",
                   help="our own server in a thread of this process, not a subprocess")
    p.add_argument("--give-up", type=float, default=60.0,
                   help="seconds a tell is retried (429/5xx/no reply) before giving up")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.beamlines < 1 or args.experiments < 1 or args.duration <= 0:
        p.error("--beamlines, --experiments and --duration must be positive")
    return args


def _progress_bar(total_s: float, enabled: bool) -> Any:
    if not enabled:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:  # periodic lines instead
        def line(run: LoadRun) -> None:
            if int(run.seconds) % 5 == 0:
                print(f"{run.seconds:5.0f} s  {len(run.acked):6d} acknowledged  "
                      f"{len(run.calls) / max(run.seconds, 1e-9):7.1f} req/s",
                      file=sys.stderr)
        return line, None
    bar = tqdm(total=round(total_s), unit="s", dynamic_ncols=True, file=sys.stderr)

    def update(run: LoadRun) -> None:
        bar.n = min(bar.total, round(run.seconds))
        errors = sum(1 for c in run.calls if not 200 <= c.status < 300)
        bar.set_postfix(acked=len(run.acked), errors=errors,
                        rps=f"{len(run.calls) / max(run.seconds, 1e-9):.0f}")
        bar.refresh()
    return update, bar


async def _main(args: argparse.Namespace, url: str) -> tuple[dict[str, Any], Verification]:
    async with client_for(url, args.beamlines, args.api_key, args.timeout) as client:
        experiments = await create_experiments(client, args.experiments)
        update, bar = _progress_bar(args.duration, not args.no_progress)
        try:
            run = await run_load(client, experiments, args.beamlines, args.duration,
                                 progress=update, give_up_s=args.give_up)
        finally:
            if bar is not None:
                bar.close()
        return stats(run), await verify(client, run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()
    started = datetime.now(UTC)
    if args.url:
        target = args.url
        s, v = asyncio.run(_main(args, args.url))
    else:
        target = ("postgresql" if args.database_url else "sqlite") + (
            " (in-process)" if args.in_process else "")
        with own_server(args.database_url, args.in_process) as url:
            s, v = asyncio.run(_main(args, url))
    label = (f"{args.beamlines} beamlines over {args.experiments} experiments, "
             f"{target}")
    report = markdown(s, v, label)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"load-{stamp}.md").write_text(report + "\n")
    info = {"started": started.isoformat(), "target": target,
            "config": {k: (str(v_) if isinstance(v_, Path) else v_)
                       for k, v_ in vars(args).items() if k != "api_key"},
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "loadavg_start": list(load_start),
                        "loadavg_end": list(os.getloadavg())},
            "stats": s, "verification": asdict(v) | {"ok": v.ok}}
    (args.out / f"load-{stamp}.json").write_text(json.dumps(info, indent=1) + "\n")
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
