"""The Redis Streams backend: one stream per model version, one consumer group of workers.

* Enqueue is one Lua call: refuse past ``max_depth`` entries (QueueFull), store a large
  payload under its own key with a TTL, XADD the entry. Workers XDEL what they finish, so
  a stream's length is the number of unfinished jobs.
* Replies go to the caller's API process on its own list; one task per process BLPOPs it
  and resolves the waiting futures (milliseconds, no polling). A reply that finds no
  waiter (a duplicate after a redelivery, or a caller that gave up) is dropped, so a
  caller never sees two results.
* A worker that dies holding a batch leaves its entries pending; live workers XAUTOCLAIM
  entries idle for ``claim_idle_ms``. An entry delivered more than ``max_deliveries``
  times goes to the dead-letter stream, and its caller gets a JobFailed saying so.
* Redis going away: every call raises QueueUnavailable (the API answers 503) after a
  couple of quick retries; the reply reader and the workers keep reconnecting with
  backoff, and workers recreate their consumer groups if Redis came back empty. Once the
  reply reader is back it fails, at once, every waiting job whose entry Redis no longer
  holds (a restart without persistence lost it), instead of leaving its caller to wait
  for the deadline. With persistence (AOF), waiting jobs survive and complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.queue import constants as k
from server.queue.base import (
    Job,
    JobHandle,
    JobResult,
    JobSource,
    JobStatus,
    QueueFull,
    QueueStats,
    QueueUnavailable,
    backoff,
    register_queue,
)
from server.queue.codec import pack, unpack

log = logging.getLogger("beamsteer.queue")
Key = tuple[str, str]

# KEYS: stream, payload key. ARGV: max depth, payload TTL ms, payload ('' = inline), then
# the entry's field/value pairs. Returns {0, depth} when full, else {1, entry id}.
_ENQUEUE = """
local depth = redis.call('XLEN', KEYS[1])
if depth >= tonumber(ARGV[1]) then return {0, depth} end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
return {1, redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))}
"""


# KEYS: reply list, stream, payload key or the stream again (nothing to drop).
# ARGV: reply, reply TTL ms, entry id, group. One script, so the reply and the ack are atomic.
_FINISH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XACK', KEYS[2], ARGV[4], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
if KEYS[3] ~= KEYS[2] then redis.call('DEL', KEYS[3]) end
return 1
"""


# No command here blocks for more than a second (XREADGROUP BLOCK is at most block_s), so a
# read that takes 10 s means a dead connection: fail it rather than hang.
_TIMEOUTS = {"socket_timeout": 10, "socket_connect_timeout": 5}
# A command that fails to connect is tried twice more within ~50 ms (a blip, a stale pooled
# connection after a restart), then fails: a request gets its 503 at once instead of after
# redis-py's default of 10 tries (seconds); the loops below back off on their own.
_RETRY = {"retry": Retry(ExponentialWithJitterBackoff(cap=0.05, base=0.01), 2)}
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

def _why(exc: BaseException) -> str:
    """What went wrong, in words safe for a client (no host names)."""
    if isinstance(exc, BusyLoadingError):
        return "Redis is loading its data after a restart"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "Redis did not answer in time"
    return "cannot reach Redis"


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """Turn a lost Redis into QueueUnavailable."""
    try:
        yield
    except _DOWN as exc:
        raise QueueUnavailable(_why(exc)) from exc


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


@register_queue("redis")
class RedisQueue:
    """The API process's side: enqueue, and one reply list read by a background task."""

    name = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "beamsteer",
                 max_depth: int = 1000, inline_bytes: int = k.INLINE_PAYLOAD_BYTES,
                 claim_idle_ms: int = 30_000, max_deliveries: int = 3, **_: Any) -> None:
        self.url, self.prefix, self.max_depth = url, prefix, max_depth
        self.inline_bytes = inline_bytes
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.process_id = uuid.uuid4().hex[:12]
        self.reply_to = k.reply_key(prefix, self.process_id)
        self._futures: dict[str, asyncio.Future[JobResult]] = {}
        self._entries: dict[str, tuple[str, bytes]] = {}  # job id -> (stream, entry id)
        self._redis: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        # enqueues waiting for the next round trip: (keys, args, the caller's future)
        self._outbox: list[tuple[list[str], list[Any], asyncio.Future[list[Any]]]] = []
        self._sender: asyncio.Task[None] | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("queue not started")
        return self._redis

    async def start(self) -> None:
        """Connect and start the reply reader."""
        self._redis = aioredis.Redis.from_url(self.url, **_TIMEOUTS, **_RETRY)
        await self._redis.ping()
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._reader = asyncio.create_task(self._read_replies(), name="beamsteer-replies")

    async def close(self) -> None:
        """Stop the reply reader and disconnect."""
        if self._sender is not None:
            await asyncio.wait([self._sender], timeout=5)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader], timeout=5)
        if self._redis is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._redis.aclose(), 5)
            self._redis = None

    async def _read_replies(self) -> None:
        # A connection of its own: BLPOP holds it for up to a second at a time. The socket
        # timeout bounds every read, so a half-dead connection cannot block it forever.
        # No retries inside redis-py: every disconnect must reach the loop below, which
        # then checks what a restarted Redis still holds (_settle_lost).
        conn = aioredis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5,
                                       retry=Retry(NoBackoff(), 0))
        failures = 0
        try:
            while True:
                try:
                    if failures:
                        await self._settle_lost(conn)
                        log.info("reply reader has Redis back", extra={"failures": failures})
                        failures = 0
                    item = await conn.blpop([self.reply_to], timeout=1)
                    if item is not None:
                        self._resolve(item[1])
                        # under load many replies wait: take them in one round trip
                        for data in await conn.lpop(self.reply_to, 256) or []:
                            self._resolve(data)
                except _DOWN as exc:
                    failures += 1
                    wait = backoff(failures)
                    log.warning("reply reader lost Redis; retrying",
                                extra={"error": _why(exc), "failures": failures,
                                       "retry_in_s": round(wait, 3)})
                    await asyncio.sleep(wait)
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.aclose(), 5)

    async def _settle_lost(self, conn: aioredis.Redis) -> None:
        """After the reader lost Redis: fail the waiting jobs whose entry Redis no longer
        holds, with QueueUnavailable (Redis restarted without persistence).

        An entry leaves its stream only in the script that pushes its reply, so an entry
        that is gone has its reply in the list, unless Redis lost both. Entries are
        checked first and the list drained after, so no reply is missed in between.
        """
        await conn.ping()  # Redis is back (else this raises and the reader waits more)
        waiting = [(job_id, self._entries[job_id]) for job_id in list(self._futures)
                   if job_id in self._entries]
        if not waiting:
            return
        async with conn.pipeline(transaction=False) as p:
            for _, (stream, eid) in waiting:
                p.xrange(stream, eid, eid)
            present = await p.execute()
        gone = [job_id for (job_id, _), rows in zip(waiting, present, strict=True) if not rows]
        while replies := await conn.lpop(self.reply_to, 256):
            for data in replies:
                self._resolve(data)
        lost = 0
        for job_id in gone:
            fut = self._futures.pop(job_id, None)
            self._entries.pop(job_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(QueueUnavailable(
                    "Redis restarted without this job (it was not persisted); send the "
                    "request again"))
                lost += 1
        if lost:
            log.error("jobs lost in a Redis restart", extra={"jobs": lost})

    def _resolve(self, data: bytes) -> None:
        try:
            header, arrays = unpack(data)
            result = JobResult.from_header(header, arrays)
        except (ValueError, KeyError):
            log.error("undecodable reply dropped")
            return
        fut = self._futures.pop(result.job_id, None)
        self._entries.pop(result.job_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _forget(self, job_id: str) -> None:
        self._futures.pop(job_id, None)
        self._entries.pop(job_id, None)

    async def enqueue_job(self, model: str, inputs: Mapping[str, np.ndarray], *,
                          params: Mapping[str, Any] | None = None,
                          version: str = k.DEFAULT_VERSION, deadline: float) -> JobHandle:
        """XADD the job (payload inline or in its own key); QueueFull at ``max_depth``."""
        job_id = uuid.uuid4().hex
        now = time.time()
        payload = pack({"params": dict(params or {})}, inputs)
        fields: dict[str, bytes | str] = {"job_id": job_id, "reply_to": self.reply_to,
                                          "deadline": repr(deadline), "enqueued_at": repr(now)}
        big = len(payload) > self.inline_bytes
        if big:
            fields["payload_key"] = k.payload_key(self.prefix, job_id)
        else:
            fields["payload"] = payload
        ttl_ms = int(max(0.0, deadline - now) * 1000) + k.PAYLOAD_GRACE_MS
        flat = [x for kv in fields.items() for x in kv]
        fut: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._futures[job_id] = fut  # before the XADD: a fast worker may reply at once
        stream = k.stream_key(self.prefix, model, version)
        try:
            ok, depth_or_id = await self._send(
                [stream, k.payload_key(self.prefix, job_id)],
                [self.max_depth, ttl_ms, payload if big else b"", *flat])
        except (QueueUnavailable, asyncio.CancelledError):
            # maybe queued, maybe not: a reply would find no waiter, and none is kept
            self._futures.pop(job_id, None)
            raise
        if not ok:
            self._futures.pop(job_id, None)
            raise QueueFull(model, int(depth_or_id))
        if job_id in self._futures:  # not answered yet: remember where to look for it
            self._entries[job_id] = (stream, depth_or_id)
        return JobHandle(job_id, model, deadline, fut, self._forget)

    async def _send(self, keys: list[str], args: list[Any]) -> list[Any]:
        """Run the enqueue script in the next round trip, with every enqueue made meanwhile.

        Under load, many callers enqueue in the same event-loop turn; one pipeline for all of
        them costs one connection and one round trip instead of one each (the API process's
        share of an inference request is mostly this per-command overhead).
        """
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._outbox.append((keys, args, fut))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_outbox(), name="beamsteer-enqueue")
        return await fut

    async def _send_outbox(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                with _unavailable():
                    async with self.redis.pipeline(transaction=False) as p:
                        for keys, args, _ in batch:
                            await self._enqueue(keys=keys, args=args, client=p)
                        replies = await p.execute(raise_on_error=False)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), reply in zip(batch, replies, strict=True):
                if fut.done():
                    continue
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    async def stats(self, model: str, version: str = k.DEFAULT_VERSION) -> QueueStats:
        """XLEN of the stream and of its dead letters, and the group's pending count."""
        stream = k.stream_key(self.prefix, model, version)
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as p:
                p.xlen(stream)
                p.xlen(k.dead_letter_key(self.prefix, model, version))
                depth, dead = await p.execute()
            try:
                pending = int((await self.redis.xpending(stream, k.GROUP))["pending"])
            except ResponseError:  # no group yet: no worker ever started
                pending = 0
        return QueueStats(int(depth), pending, int(dead))

    async def served_models(self) -> dict[Key, dict[str, Any]]:
        """Models with a worker whose heartbeat is fresh, with the worker's description."""
        out: dict[Key, dict[str, Any]] = {}
        since = time.time() - k.READY_TTL_S
        with _unavailable():
            adverts = await self.redis.hgetall(k.models_key(self.prefix))
            for key, info in adverts.items():
                model, version = _s(key).rsplit(":", 1)
                if await self.redis.zcount(k.ready_key(self.prefix, model, version),
                                           since, "+inf"):
                    out[(model, version)] = json.loads(info)
        return out

    def worker_source(self, models: list[Key], worker_id: str) -> JobSource:
        """A worker's source on the same Redis and prefix."""
        return RedisJobSource(self.url, self.prefix, models, worker_id,
                              claim_idle_ms=self.claim_idle_ms,
                              max_deliveries=self.max_deliveries)


class RedisJobSource:
    """A worker's side: XREADGROUP micro-batches, XAUTOCLAIM the dead's, ack with the reply."""

    def __init__(self, url: str, prefix: str, models: list[Key], consumer: str, *,
                 claim_idle_ms: int = 30_000, max_deliveries: int = 3) -> None:
        self.url, self.prefix, self.models, self.consumer = url, prefix, models, consumer
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.streams = {k.stream_key(prefix, m, v): (m, v) for m, v in models}
        self._redis: aioredis.Redis | None = None
        self._next_claim = 0.0

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("source not started")
        return self._redis

    async def start(self) -> None:
        """Connect; create each stream's group from its start (jobs queued before any worker
        existed are served too)."""
        self._redis = aioredis.Redis.from_url(self.url, **_TIMEOUTS, **_RETRY)
        self._finish = self._redis.register_script(_FINISH)
        with _unavailable():
            await self._create_groups()

    async def _create_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, k.GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def close(self) -> None:
        """Withdraw readiness (pending entries stay, for XAUTOCLAIM) and disconnect."""
        if self._redis is None:
            return
        try:
            for m, v in self.models:
                await self._redis.zrem(k.ready_key(self.prefix, m, v), self.consumer)
        except _DOWN:  # Redis is away: the heartbeat goes stale by itself
            log.warning("could not withdraw readiness: Redis does not answer")
        await self._redis.aclose()
        self._redis = None

    async def advertise(self, models: Mapping[Key, Mapping[str, Any]]) -> None:
        """Write each model's description and this worker's heartbeat."""
        now = time.time()
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as p:
                for (m, v), info in models.items():
                    p.hset(k.models_key(self.prefix), f"{m}:{v}", json.dumps(info, default=str))
                    p.zadd(k.ready_key(self.prefix, m, v), {self.consumer: now})
                    p.zremrangebyscore(k.ready_key(self.prefix, m, v), "-inf",
                                       now - k.READY_TTL_S)
                await p.execute()

    async def remaining(self) -> int:
        """Unfinished jobs on this worker's streams (finished entries are deleted)."""
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as p:
                for stream in self.streams:
                    p.xlen(stream)
                return int(sum(await p.execute()))

    # --- reading ----------------------------------------------------------------------

    async def read_batch(self, max_batch: int, max_delay_s: float, block_s: float) -> list[Job]:
        """Reclaimed entries first; else block for new ones, then top up for ``max_delay_s``.

        Raises:
            QueueUnavailable: Redis does not answer. If it came back without this worker's
                consumer groups (restarted empty), they are made again and [] returned.
        """
        with _unavailable():
            try:
                return await self._read_batch(max_batch, max_delay_s, block_s)
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                log.warning("consumer groups gone (Redis restarted empty); making them again")
                await self._create_groups()
                return []

    async def _read_batch(self, max_batch: int, max_delay_s: float,
                          block_s: float) -> list[Job]:
        entries = await self._reclaim(max_batch)
        if not entries:
            entries = await self._read(max_batch, max(1, int(block_s * 1000)))
            # Top up without BLOCK: Redis expires blocking reads on its cron tick (100 ms at
            # the default hz 10), so "BLOCK 4" can wait 100 ms. Polling every millisecond
            # for a few milliseconds costs a handful of round trips and keeps the delay exact.
            t_end = time.monotonic() + max_delay_s
            while entries and len(entries) < max_batch:
                more = await self._read(max_batch - len(entries), None)
                entries += more
                left = t_end - time.monotonic()
                if left <= 0:
                    break
                if not more:
                    await asyncio.sleep(min(left, 0.001))
        return await self._jobs(entries)

    async def _read(self, count: int,
                    block_ms: int | None) -> list[tuple[str, bytes, dict, int]]:
        reply = await self.redis.xreadgroup(k.GROUP, self.consumer,
                                            dict.fromkeys(self.streams, ">"),
                                            count=count, block=block_ms)
        return [(_s(stream), eid, fields, 1) for stream, items in reply or []
                for eid, fields in items if fields]

    async def _reclaim(self, count: int) -> list[tuple[str, bytes, dict, int]]:
        """Entries idle past ``claim_idle_ms`` (their worker died); at most twice per idle
        period, since each XAUTOCLAIM scans the pending list."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + self.claim_idle_ms / 2000
        out = []
        for stream in self.streams:
            res = await self.redis.xautoclaim(stream, k.GROUP, self.consumer,
                                              self.claim_idle_ms, "0-0", count=count)
            claimed, deleted = res[1], (res[2] if len(res) > 2 else [])
            if deleted:
                await self.redis.xack(stream, k.GROUP, *deleted)
            for eid, fields in claimed:
                info = await self.redis.xpending_range(stream, k.GROUP, eid, eid, 1)
                n = int(info[0]["times_delivered"]) if info else 1
                if n > self.max_deliveries:
                    await self._bury(stream, eid, fields, n,
                                     f"delivered {n} times without a reply (a worker died "
                                     f"each time; max_deliveries={self.max_deliveries})")
                else:
                    out.append((stream, eid, fields, n))
            if out:
                log.warning("reclaimed jobs of a dead worker",
                            extra={"stream": stream, "jobs": len(out)})
        return out

    async def _jobs(self, entries: list[tuple[str, bytes, dict, int]]) -> list[Job]:
        keys = [f.get(b"payload_key") for _, _, f, _ in entries]
        blobs = await self.redis.mget([x for x in keys if x]) if any(keys) else []
        fetched = iter(blobs)
        jobs = []
        for (stream, eid, f, n), key in zip(entries, keys, strict=True):
            data = next(fetched) if key else f.get(b"payload")
            try:
                jobs.append(self._job(stream, eid, f, n, data))
            except (ValueError, KeyError, TypeError) as e:
                await self._bury(stream, eid, f, n, f"undecodable job: {e}")
        return jobs

    def _job(self, stream: str, eid: bytes, f: dict, n: int, data: bytes | None) -> Job:
        model, version = self.streams[stream]
        deadline = float(f[b"deadline"])
        if data is None:
            if time.time() < deadline:
                raise ValueError("payload missing (its key expired or was deleted)")
            header, inputs = {"params": {}}, {}  # past its deadline: answered "expired"
        else:
            header, inputs = unpack(data)
        return Job(id=_s(f[b"job_id"]), model=model, version=version, inputs=inputs,
                   params=header.get("params", {}), deadline=deadline,
                   enqueued_at=float(f[b"enqueued_at"]), deliveries=n,
                   receipt=(stream, eid, _s(f[b"reply_to"]), f.get(b"payload_key")))

    # --- replying ---------------------------------------------------------------------

    async def finish(self, done: Sequence[tuple[Job, JobResult]]) -> None:
        """Per job, atomically: push the reply, XACK, XDEL, drop the payload key (again
        after a failure is harmless: a second reply finds no waiter)."""
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as p:
                for job, result in done:
                    stream, eid, reply_to, payload_key = job.receipt
                    await self._finish(keys=[reply_to, stream, payload_key or stream],
                                       args=[pack(result.header(), result.outputs),
                                             k.REPLY_TTL_MS, eid, k.GROUP], client=p)
                await p.execute()

    async def retry(self, job: Job) -> None:
        """Leave the entry pending: XAUTOCLAIM delivers it again after ``claim_idle_ms``
        (and dead-letters it once it has been delivered ``max_deliveries`` times)."""

    async def dead_letter(self, job: Job, result: JobResult) -> None:
        """Record the job in the dead-letter stream, then reply and acknowledge it."""
        stream, eid, _, _ = job.receipt
        model, version = self.streams[stream]
        with _unavailable():
            await self.redis.xadd(k.dead_letter_key(self.prefix, model, version),
                                  {"job_id": job.id, "entry": eid, "error": result.error or "",
                                   "status": result.status.value, "deliveries": job.deliveries,
                                   "worker": self.consumer, "at": repr(time.time())},
                                  maxlen=k.DEAD_LETTER_MAXLEN, approximate=True)
        await self.finish([(job, result)])

    async def _bury(self, stream: str, eid: bytes, f: dict, n: int, error: str) -> None:
        """Dead-letter an entry that never became a Job (too many deliveries, undecodable)."""
        log.error("job dead-lettered", extra={"stream": stream, "error": error})
        job_id = _s(f.get(b"job_id", b"")) or _s(eid)
        reply_to = _s(f[b"reply_to"]) if b"reply_to" in f else None
        now = time.time()
        result = JobResult(job_id, JobStatus.dead_lettered, error=error, finished_at=now,
                           worker=self.consumer)
        job = Job(job_id, *self.streams[stream], {}, {}, now, now, n,
                  receipt=(stream, eid, reply_to, f.get(b"payload_key")))
        if reply_to is None:  # nobody to tell: record and drop it
            await self.redis.xadd(k.dead_letter_key(self.prefix, *self.streams[stream]),
                                  {"entry": eid, "error": error}, maxlen=k.DEAD_LETTER_MAXLEN)
            await self.redis.xack(stream, k.GROUP, eid)
            await self.redis.xdel(stream, eid)
            return
        await self.dead_letter(job, result)
