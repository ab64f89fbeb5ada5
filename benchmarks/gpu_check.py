"""Check the served nets on an accelerator against the CPU, directly and through a worker.

    python benchmarks/gpu_check.py --device cuda      # on a GPU machine, Redis at --redis-url

For each model (superres x2, tagger) it runs the same images three ways and prints the
largest differences:

* the net on the CPU (the reference);
* the net on ``--device`` (``ModelRunner``, one batch), in the worker's precision (full
  float32: no TF32), and, for information only, with TF32 allowed as PyTorch's default is;
* a ``beamsteer worker`` subprocess on ``--device`` fed through Redis Streams with
  micro-batching, as deployed: results must match the CPU's and every job must come back
  exactly once.

It exits non-zero when a difference passes ``--tolerance`` (float32 kernels differ between
CPU and GPU in the last bits; TF32 differs ~1e-3, which is why workers turn it off unless
``--allow-tf32``) or a job is lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.inference import (  # noqa: E402
    make_images,
    start_workers,
    stop_workers,
    wait_workers,
)
from models import registry  # noqa: E402
from server.queue.base import Job, open_queue  # noqa: E402
from server.runners import ModelRunner  # noqa: E402
from server.worker import pick_device, set_precision  # noqa: E402

PARAMS = {"superres": {"factor": 2}, "tagger": {}}
OUTPUT = {"superres": "counts", "tagger": "probabilities"}


def direct(model: str, device: str, images: list[np.ndarray]) -> np.ndarray:
    """The model's outputs for ``images`` in one forward pass on ``device``."""
    runner = ModelRunner(registry.load(model, device=device), "1")
    jobs = [Job(str(i), model, "1", {"x": im}, PARAMS[model], 0, 0)
            for i, im in enumerate(images)]
    outputs = []
    for r in runner.run(jobs):
        if isinstance(r, Exception):
            raise r
        outputs.append(r[OUTPUT[model]])
    return np.stack(outputs)


async def through_worker(url: str, device: str, images: list[np.ndarray],
                         max_batch: int) -> dict[str, np.ndarray]:
    """Every image through one worker subprocess on ``device``, 16 callers at a time."""
    prefix = f"beamsteer-gpucheck-{secrets.token_hex(4)}"
    models = {m: m for m in PARAMS}
    procs = start_workers(1, url, prefix, models, device, max_batch, 5.0, 1)
    q = open_queue("redis", url=url, prefix=prefix, max_depth=10_000)
    await q.start()
    out: dict[str, np.ndarray] = {}
    try:
        await wait_workers(url, prefix, models, 1)
        gate = asyncio.Semaphore(16)

        async def one(model: str, i: int) -> tuple[str, np.ndarray]:
            async with gate:
                h = await q.enqueue_job(model, {"x": images[i]}, params=PARAMS[model],
                                        deadline=time.time() + 120)
                r = await h.result()
                if r.error:
                    raise RuntimeError(f"{model} job {i}: {r.error}")
                return r.job_id, r.outputs[OUTPUT[model]]

        for model in PARAMS:
            got = await asyncio.gather(*[one(model, i) for i in range(len(images))])
            ids = [job_id for job_id, _ in got]
            if len(set(ids)) != len(images):
                raise RuntimeError(f"{model}: {len(set(ids))} distinct results "
                                   f"for {len(images)} jobs")
            out[model] = np.stack([a for _, a in got])
    finally:
        await stop_workers(q, procs, url, prefix)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    ap.add_argument("--redis-url", default=os.environ.get("BEAMSTEER_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="largest allowed difference, relative to the CPU output's range")
    args = ap.parse_args()
    device = pick_device(args.device)
    set_precision(device, allow_tf32=False)  # as a worker does
    print(f"device {device}: "
          f"{torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}; "
          f"torch {torch.__version__}; "
          f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
          f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}", flush=True)
    images = make_images(args.images, args.size)
    worker = asyncio.run(through_worker(args.redis_url, device, images, args.max_batch))
    failed = False
    for model in PARAMS:
        ref = direct(model, "cpu", images)
        scale = float(np.ptp(ref)) or 1.0
        runs = [("direct", direct(model, device, images)), ("redis worker", worker[model])]
        if device.startswith("cuda"):  # what PyTorch's default (TF32 convs) would give
            set_precision(device, allow_tf32=True)
            runs.append(("direct, TF32", direct(model, device, images)))
            set_precision(device, allow_tf32=False)
        for how, got in runs:
            diff = float(np.max(np.abs(got - ref))) / scale
            ok = got.shape == ref.shape and diff <= args.tolerance
            judged = "TF32" not in how  # shown, not judged: workers do not use it
            failed |= judged and not ok
            verdict = ("ok" if ok else "FAIL") if judged else "(information)"
            print(f"{model:9s} {how:13s} {device}: shape {list(got.shape)}, "
                  f"max |diff| / range {diff:.2e} {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
