"""``beamsteer worker``: serve models from the Redis queue (imports torch only when run)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any


def register(sub: Any) -> None:
    """Add ``worker`` to the ``beamsteer`` command line."""
    p = sub.add_parser(
        "worker", help="run an inference worker fed by Redis",
        description="Load the models once (GPU when there is one), then answer inference "
                    "jobs from the Redis queue in micro-batches. Several workers may share "
                    "a queue; SIGTERM finishes the batch in hand and exits.")
    p.add_argument("--redis-url", default=os.environ.get("BEAMSTEER_REDIS_URL"),
                   help="Redis of the queue (default $BEAMSTEER_REDIS_URL)")
    p.add_argument("--prefix", default=os.environ.get("BEAMSTEER_REDIS_PREFIX", "beamsteer"),
                   help="key prefix shared with the API (default $BEAMSTEER_REDIS_PREFIX or "
                        "beamsteer)")
    p.add_argument("--models", default="",
                   help="comma list of models, each NAME or NAME=CHECKPOINT.pt "
                        "(default: every model whose weights ship)")
    p.add_argument("--version", default="1", help="model version served (default 1)")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    p.add_argument("--max-batch", type=int, default=32, help="most jobs per forward pass")
    p.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="longest wait for more jobs once one arrived (default 5)")
    p.add_argument("--claim-idle-ms", type=int, default=30_000,
                   help="take over jobs a dead worker held this long (default 30000)")
    p.add_argument("--max-deliveries", type=int, default=3,
                   help="dead-letter a job delivered more often than this (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--allow-tf32", action="store_true",
                   help="let CUDA use TF32 (faster; ~1e-3 relative error against the CPU)")
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    p.add_argument("--slow-ms", type=float, default=0.0, help=argparse.SUPPRESS)  # tests
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    """Build the worker from the options and run it until SIGTERM/SIGINT (or burst's end)."""
    if not args.redis_url:
        print("beamsteer worker: --redis-url (or BEAMSTEER_REDIS_URL) is needed")
        return 2
    import torch

    from server.logs import configure_logging
    from server.queue.base import open_queue
    from server.worker import Worker, new_worker_id, parse_models

    configure_logging("info", json_lines=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = parse_models(args.models)
    queue = open_queue("redis", url=args.redis_url, prefix=args.prefix,
                       claim_idle_ms=args.claim_idle_ms, max_deliveries=args.max_deliveries)
    worker_id = new_worker_id()
    worker = Worker(queue.worker_source([(m, args.version) for m in models], worker_id),
                    models, version=args.version, device=args.device,
                    max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                    burst=args.burst, worker_id=worker_id, slow_ms=args.slow_ms,
                    allow_tf32=args.allow_tf32)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        return await worker.run()

    asyncio.run(main())
    return 0
