"""Train the super-resolution net on synthetic SANS images (CPU, minutes).

A fixed set of noiseless high-resolution images is drawn once from the training
seeds; every step takes random 64 x 64 crops, flips and rotations of them and
draws fresh Poisson noise for the binned input, alternating the factors. The loss
is the L1 error of log1p(counts) over valid pixels. Same seed, same thread count:
same weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.checkpoint import default_path, save_checkpoint
from models.superres import data
from models.superres.net import SuperResConfig, SuperResNet
from models.synth import GENERATOR_VERSION

NAME = "superres"


def _batch(
    truth: np.ndarray, mask: np.ndarray, rng: np.random.Generator, factor: int, size: int, crop: int
) -> tuple[torch.Tensor, ...]:
    idx = rng.integers(len(truth), size=size)
    h, w = truth.shape[1:]
    ys = rng.integers(0, (h - crop) // factor + 1, size=size) * factor
    xs = rng.integers(0, (w - crop) // factor + 1, size=size) * factor
    where = list(zip(idx, ys, xs, strict=True))
    t = np.stack([truth[i, y : y + crop, x : x + crop] for i, y, x in where])
    m = np.stack([mask[i, y : y + crop, x : x + crop] for i, y, x in where])
    k = int(rng.integers(4))
    t, m = np.rot90(t, k, axes=(1, 2)), np.rot90(m, k, axes=(1, 2))
    if rng.random() < 0.5:
        t, m = t[:, :, ::-1], m[:, :, ::-1]
    t, m = np.ascontiguousarray(t), np.ascontiguousarray(m)
    lr = data.low_res(t, factor, rng)
    return (torch.from_numpy(lr)[:, None], torch.from_numpy(t)[:, None],
            torch.from_numpy(m)[:, None])


def train(
    epochs: int = 40,
    seed: int = 0,
    out: str | Path | None = None,
    n_images: int = 2000,
    batch_size: int = 32,
    crop: int = 64,
    lr: float = 2e-3,
    threads: int = 1,
    config: SuperResConfig | None = None,
    eval_images: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate on the held-out set and write the checkpoint.

    Args:
        epochs: passes over the n_images training images (one crop per image per pass).
        seed: seeds the training images (seed * 100_000 + i), crops, noise and init.
        out: checkpoint path; default the shipped weights ``models/weights/superres.pt``.
        n_images: noiseless training images drawn once.
        batch_size: crops per step.
        crop: high-resolution crop edge in pixels (a multiple of every factor).
        lr: Adam learning rate at the start of the cosine schedule.
        threads: torch CPU threads.
        config: the architecture; default ``SuperResConfig()``.
        eval_images: held-out images per factor for the metrics stored in the checkpoint.
        progress: show a tqdm bar.

    Returns:
        The checkpoint dict that was written.
    """
    if not 0 <= seed < data.HELDOUT_SEED0 // 100_000:
        raise ValueError("seed must be in [0, 100) so training seeds stay off the held-out set")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = config or SuperResConfig()
    net = SuperResNet(cfg)
    t0 = time.time()
    seeds = range(seed * 100_000, seed * 100_000 + n_images)
    truth, mask, _ = data.truth_images(seeds, data.SANS)
    t_data = time.time() - t0
    steps = epochs * max(1, n_images // batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    bar = tqdm(range(steps), desc="superres", disable=not progress, mininterval=2.0)
    ema = None
    for step in bar:
        factor = cfg.factors[step % len(cfg.factors)]
        x, y, m = _batch(truth, mask, rng, factor, batch_size, crop)
        pred = net.forward_log(x, factor)
        loss = ((pred - torch.log1p(y)).abs() * m).sum() / m.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}", epoch=step * batch_size // n_images + 1)
    t_train = time.time() - t0
    from models.superres.eval import evaluate  # late: eval imports train's NAME

    net.eval()
    metrics = evaluate(net, n=eval_images)
    ckpt = {
        "name": NAME,
        "config": asdict(cfg),
        "state_dict": net.state_dict(),
        "seed": seed,
        "generator": {"version": GENERATOR_VERSION, "config": data.SANS.to_dict(),
                      "heldout_config": data.HELDOUT.to_dict()},
        "train": {"epochs": epochs, "steps": steps, "batch_size": batch_size, "crop": crop,
                  "lr": lr, "n_images": n_images, "threads": threads,
                  "data_seconds": round(t_data, 1), "seconds": round(t_train, 1),
                  "final_loss": ema, "torch": torch.__version__},
        "metrics": metrics,
    }
    save_checkpoint(out or default_path(NAME), ckpt)
    return ckpt
