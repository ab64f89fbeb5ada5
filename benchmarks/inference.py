"""Inference throughput and latency vs concurrency, every serving path in one run.

    python benchmarks/inference.py --quick                 # CPU, ~2 minutes
    python benchmarks/inference.py --device cuda           # the same on a GPU
    python benchmarks/inference.py --quick --write-readme  # table into benchmarks/README.md

Paths, per model (superres x2 and tagger):

* ``direct, 1 image``: the net called on one image at a time (what a naive server does);
* ``direct, batch B``: the net on stacked batches of B: the ceiling a queue can approach;
* ``memory queue``: the in-process queue with its embedded worker (the default server);
* ``redis, N worker(s)``: Redis Streams with ``beamsteer worker`` subprocesses.

Queue paths run with micro-batching on (``--max-batch``, ``--max-delay-ms``) and off
(max-batch 1), under closed-loop clients: C concurrent callers, each sending its next
image as soon as its last one is answered. Throughput is images/s; latency is per image,
enqueue to result, as the caller sees it. A missing tagger checkpoint is replaced by a
randomly initialised net of the shipped architecture (same compute, meaningless tags).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import registry  # noqa: E402
from server.queue.base import Job, JobQueue, JobResult, open_queue  # noqa: E402
from server.runners import ModelRunner  # noqa: E402
from server.worker import Worker, pick_device  # noqa: E402


@dataclasses.dataclass
class Row:
    model: str
    path: str
    batching: str
    concurrency: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    busy: float | None = None  # share of the wall time the workers spent in forward passes


def tagger_checkpoint(tmp: Path) -> str:
    """The shipped tagger, or a random one of the same architecture."""
    if "tagger" in registry.available():
        return "tagger"
    from models.checkpoint import save_checkpoint
    from models.synth.tags import TAGS
    from models.tagger.net import TaggerConfig, TaggerNet

    torch.manual_seed(0)
    config = TaggerConfig(tags=TAGS)
    return str(save_checkpoint(tmp / "tagger.pt", {
        "name": "tagger", "config": dataclasses.asdict(config),
        "state_dict": TaggerNet(config).state_dict(), "seed": 0,
        "generator": {"version": "benchmark", "config": {}}}))


def make_images(n: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.poisson(5.0, (size, size)).astype(np.float32) for _ in range(n)]


def stats(model: str, path: str, batching: str, c: int, lat: list[float],
          wall: float, results: list[JobResult] | None = None, workers: int = 1) -> Row:
    ms = np.array(lat) * 1000
    busy = None
    if results:  # each batch once: its worker and start time name it
        batches = {(r.worker, r.started_at): r.compute_s for r in results}
        busy = sum(batches.values()) / (wall * workers)
    return Row(model, path, batching, c, len(lat) / wall, float(np.percentile(ms, 50)),
               float(np.percentile(ms, 99)), busy)


def bench_direct(model: str, ckpt: str, device: str, images: list[np.ndarray],
                 params: dict, batch: int, n: int, repeat: int) -> Row:
    """The net itself, on batches of ``batch`` images (1 = one call per image)."""
    runner = ModelRunner(registry.load(ckpt, device=device), "1")
    jobs = [Job(str(i), model, "1", {"x": im}, params, 0, 0) for i, im in enumerate(images)]
    runner.run(jobs[:batch])  # warm
    label = "direct, 1 image" if batch == 1 else f"direct, batch {batch}"
    best: Row | None = None
    for _ in range(repeat):
        lat, t0, done = [], time.perf_counter(), 0
        while done < n:
            t = time.perf_counter()
            runner.run(jobs[done % len(jobs):done % len(jobs) + batch] or jobs[:batch])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            lat += [time.perf_counter() - t] * batch
            done += batch
        row = stats(model, label, "-", batch, lat, time.perf_counter() - t0)
        if best is None or row.images_per_s > best.images_per_s:
            best = row
    assert best is not None
    return best


async def closed_loop(send: Callable[[np.ndarray], Awaitable[JobResult]],
                      images: list[np.ndarray], concurrency: int, n: int, repeat: int
                      ) -> tuple[list[float], float, list[JobResult]]:
    """``concurrency`` callers share ``n`` requests; each waits for its answer. The best
    of ``repeat`` runs is kept (this host is shared: slow runs measure the neighbours)."""
    for im in images[:concurrency]:  # warm the path
        await send(im)
    best: tuple[list[float], float, list[JobResult]] | None = None
    for _ in range(repeat):
        lat: list[float] = []
        results: list[JobResult] = []
        counter = iter(range(n))

        async def caller(counter=counter, lat=lat, results=results) -> None:
            for i in counter:
                t = time.perf_counter()
                results.append(await send(images[i % len(images)]))
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*[caller() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
        if best is None or wall < best[1]:
            best = (lat, wall, results)
    assert best is not None
    return best


def sender(queue: JobQueue, model: str,
           params: dict) -> Callable[[np.ndarray], Awaitable[JobResult]]:
    async def send(im: np.ndarray) -> JobResult:
        h = await queue.enqueue_job(model, {"x": im}, params=params, deadline=time.time() + 120)
        return await h.result()
    return send


async def bench_memory(models: dict[str, str], device: str, work: dict, levels: list[int],
                       n: int, max_batch: int, delay_ms: float, repeat: int) -> list[Row]:
    rows = []
    for batching, mb in (("on", max_batch), ("off", 1)):
        q = open_queue("memory", max_depth=100_000)
        await q.start()
        w = Worker(q.worker_source([(m, "1") for m in models], "bench"), models,
                   device=device, max_batch=mb, max_delay_ms=delay_ms if mb > 1 else 0)
        task = asyncio.create_task(w.run())
        await w.ready.wait()
        for model, (images, params) in work.items():
            for c in levels:
                lat, wall, res = await closed_loop(sender(q, model, params), images, c, n,
                                                   repeat)
                rows.append(stats(model, "memory queue", batching, c, lat, wall, res))
        w.stop()
        await task
        await q.close()
    return rows


def start_workers(k: int, url: str, prefix: str, models: dict[str, str], device: str,
                  max_batch: int, delay_ms: float, threads: int) -> list[subprocess.Popen]:
    spec = ",".join(m if p == m else f"{m}={p}" for m, p in models.items())
    cmd = [sys.executable, "-m", "clients.cli", "worker", "--redis-url", url, "--prefix", prefix,
           "--models", spec, "--device", device, "--max-batch", str(max_batch),
           "--max-delay-ms", str(delay_ms), "--threads", str(threads)]
    # the repo first, then whatever the caller had (e.g. packages installed with --target)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(k)]


async def wait_workers(url: str, prefix: str, models: dict[str, str], k: int) -> None:
    import redis.asyncio as aioredis

    from server.queue.constants import ready_key

    r = aioredis.Redis.from_url(url)
    t_end = time.monotonic() + 180
    while True:
        counts = [await r.zcard(ready_key(prefix, m, "1")) for m in models]
        if min(counts) >= k:
            break
        if time.monotonic() > t_end:
            raise RuntimeError("workers did not become ready")
        await asyncio.sleep(0.1)
    await r.aclose()


async def bench_redis(url: str, models: dict[str, str], device: str, work: dict,
                      levels: list[int], n: int, max_batch: int, delay_ms: float,
                      threads: int, worker_counts: list[int], repeat: int) -> list[Row]:
    rows = []
    for k in worker_counts:
        for batching, mb in (("on", max_batch), ("off", 1)):
            prefix = f"beamsteer-bench-{secrets.token_hex(4)}"
            procs = start_workers(k, url, prefix, models, device, mb,
                                  delay_ms if mb > 1 else 0, threads)
            q = open_queue("redis", url=url, prefix=prefix, max_depth=100_000)
            await q.start()
            try:
                await wait_workers(url, prefix, models, k)
                for model, (images, params) in work.items():
                    for c in levels:
                        lat, wall, res = await closed_loop(sender(q, model, params), images,
                                                           c, n, repeat)
                        rows.append(stats(model, f"redis, {k} worker{'s' * (k > 1)}",
                                          batching, c, lat, wall, res, k))
            finally:
                await stop_workers(q, procs, url, prefix)
    return rows


async def stop_workers(q: JobQueue, procs: list[subprocess.Popen], url: str,
                       prefix: str) -> None:
    """Close the caller's queue, SIGTERM the workers (they drain), then delete the run's
    keys."""
    await q.close()
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    await _drop(url, prefix)


async def _drop(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    keys = [key async for key in r.scan_iter(f"{prefix}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


def table(rows: list[Row]) -> str:
    out = ["| model | path | micro-batching | concurrency | images/s | p50 ms | p99 ms | "
           "worker busy |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        busy = "-" if r.busy is None else f"{r.busy:.0%}"
        out.append(f"| {r.model} | {r.path} | {r.batching} | {r.concurrency} | "
                   f"{r.images_per_s:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {busy} |")
    return "\n".join(out)


def ratios(rows: list[Row], batch: int, c: int) -> str:
    """The issue's goals, per model, as ratios measured in this run."""
    lines = []
    for model in dict.fromkeys(r.model for r in rows):
        def get(path: str, batching: str, conc: int, model: str = model) -> float | None:
            hit = [r.images_per_s for r in rows if (r.model, r.path, r.batching) ==
                   (model, path, batching) and r.concurrency == conc]
            return hit[0] if hit else None
        direct = get(f"direct, batch {batch}", "-", batch)
        on, off = get("redis, 1 worker", "on", c), get("redis, 1 worker", "off", c)
        if direct and on and off:
            lines.append(f"- {model}: Redis (1 worker, micro-batching, concurrency {c}) = "
                         f"{on / direct:.0%} of the direct batch-{batch} forward pass "
                         f"(goal >= 80%), {on / off:.1f}x one image per forward pass "
                         f"(goal >= 3x)")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    """Replace (or add) the '## Inference' section of benchmarks/README.md, nothing else."""
    path = ROOT / "benchmarks" / "README.md"
    old = path.read_text() if path.exists() else ""
    section = f"## Inference\n\n{text.strip()}\n"
    pattern = re.compile(r"^## Inference\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: section + "\n", old) if pattern.search(old) else (
        (old.rstrip() + "\n\n" if old.strip() else "") + section)
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--redis-url", default=os.environ.get("BEAMSTEER_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    ap.add_argument("--quick", action="store_true", help="small images, few requests (CPU)")
    ap.add_argument("--size", type=int, default=None, help="image edge (default 64; quick 32)")
    ap.add_argument("--requests", type=int, default=None, help="per measurement")
    ap.add_argument("--concurrency", default=None, help="comma list (default 1,8,32,64)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--workers", default="1,2", help="Redis worker counts")
    ap.add_argument("--models", default="superres,tagger")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs per row, the best kept (default 3; quick 2)")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    size = args.size or (32 if args.quick else 64)
    n = args.requests or (128 if args.quick else 1024)
    repeat = args.repeat or (2 if args.quick else 3)
    levels = [int(c) for c in (args.concurrency or ("1,32" if args.quick else "1,8,32,64")
                               ).split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="beamsteer-bench-"))
    ckpts = {"superres": "superres", "tagger": tagger_checkpoint(tmp)}
    models = {m: ckpts[m] for m in args.models.split(",")}
    images = make_images(64, size)
    params = {"superres": {"factor": 2}, "tagger": {}}
    work = {m: (images, params[m]) for m in models}

    rows: list[Row] = []
    for m, ckpt in models.items():
        rows.append(bench_direct(m, ckpt, device, images, params[m], 1, max(32, n // 4),
                                 repeat))
        rows.append(bench_direct(m, ckpt, device, images, params[m], args.max_batch, n,
                                 repeat))
    print(table(rows), flush=True)
    rows += asyncio.run(bench_memory(models, device, work, levels, n, args.max_batch,
                                     args.max_delay_ms, repeat))
    rows += asyncio.run(bench_redis(args.redis_url, models, device, work, levels, n,
                                    args.max_batch, args.max_delay_ms, args.threads,
                                    [int(k) for k in args.workers.split(",")], repeat))
    rows.sort(key=lambda r: (r.model, r.path.startswith("redis"), r.path, r.batching,
                             r.concurrency))
    cpu = (torch.cuda.get_device_name() if device.startswith("cuda")
           else f"CPU, {os.cpu_count()} cores")
    text = (f"`python benchmarks/inference.py {' '.join(sys.argv[1:])}` on {cpu}; "
            f"{size}x{size} images (superres x2), {n} requests per row (best of {repeat}), "
            f"max-batch "
            f"{args.max_batch}, max-delay {args.max_delay_ms} ms, {args.threads} torch "
            f"thread(s) per process.\n\n{table(rows)}\n\n"
            f"{ratios(rows, args.max_batch, max(levels))}\n")
    print("\n" + text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
