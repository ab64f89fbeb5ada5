"""Train the SAXS tagger on synthetic images (CPU, minutes).

The training images are drawn once (``data.TRAIN``, seeds ``seed * 1e6 + i``) and
preprocessed; each step takes a batch with a random rotation by 90 degrees and a
flip (every tag is invariant to both). After training, one temperature per tag is
fitted on separate calibration images so that the probabilities are calibrated.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from tqdm import tqdm

from models.checkpoint import default_path, save_checkpoint
from models.synth import GENERATOR_VERSION, TAGS
from models.tagger import data
from models.tagger.net import TaggerConfig, TaggerNet

NAME = "tagger"


@torch.no_grad()
def logits_of(net: TaggerNet, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    net.eval()
    dev = net.log_temperature.device
    return torch.cat([net(x[i : i + batch].float().to(dev)).cpu() for i in range(0, len(x), batch)])


def fit_temperature(net: TaggerNet, x: torch.Tensor, y: torch.Tensor) -> None:
    """Fit one temperature per tag by minimizing the BCE on (x, y) (Guo et al. 2017)."""
    z = logits_of(net, x)
    log_t = torch.zeros(z.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([log_t], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    fitted = torch.nan_to_num(log_t.detach(), nan=0.0).clamp(-3, 3)
    net.log_temperature.copy_(fitted)


def train(
    epochs: int = 10,
    seed: int = 0,
    out: str | Path | None = None,
    n_images: int = 6000,
    n_calibration: int = 800,
    batch_size: int = 32,
    lr: float = 2e-3,
    threads: int = 1,
    config: TaggerConfig | None = None,
    eval_images: int = 300,
    baseline_images: int = 3000,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, calibrate, evaluate on the held-out sets and write the checkpoint.

    Args:
        epochs: passes over the n_images training images.
        seed: seeds the images, the batch order, the augmentation and the init.
        out: checkpoint path; default the shipped weights ``models/weights/tagger.pt``.
        n_images: training images drawn once.
        n_calibration: images for the temperature fit.
        batch_size: images per step.
        lr: AdamW learning rate at the start of the cosine schedule.
        threads: torch CPU threads.
        config: the architecture; default ``TaggerConfig(TAGS, size=96, ...)``.
        eval_images: held-out images per evaluation set stored in the checkpoint.
        baseline_images: training images for the logistic-regression baseline.
        progress: show a tqdm bar.

    Returns:
        The checkpoint dict that was written.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = config or TaggerConfig(TAGS, size=96, widths=(16, 32, 48, 64, 96))
    net = TaggerNet(cfg)
    t0 = time.time()
    x, y = data.tensors(data.images(data.train_seeds(seed, n_images), data.TRAIN), cfg.size)
    t_data = time.time() - t0
    steps_per_epoch = n_images // batch_size
    steps = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(total=steps, desc="tagger", disable=not progress, mininterval=2.0)
    ema = None
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(n_images, generator=gen)
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            xb = x[idx].float()
            k = int(torch.randint(4, (1,), generator=gen))
            xb = torch.rot90(xb, k, dims=(2, 3))
            if torch.rand(1, generator=gen).item() < 0.5:
                xb = xb.flip(3)
            loss = F.binary_cross_entropy_with_logits(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", epoch=epoch + 1)
    bar.close()
    t_train = time.time() - t0
    del x, y
    xc, yc = data.tensors(data.images(data.calibration_seeds(seed, n_calibration), data.TRAIN),
                          cfg.size)
    fit_temperature(net, xc, yc)
    from models.tagger.eval import evaluate

    metrics = evaluate(net, n=eval_images, baseline_seed=seed, baseline_n=baseline_images)
    ckpt = {
        "name": NAME,
        "config": asdict(cfg),
        "state_dict": net.state_dict(),
        "seed": seed,
        "generator": {"version": GENERATOR_VERSION, "config": data.TRAIN.to_dict(),
                      "shifted_config": data.SHIFTED.to_dict()},
        "train": {"epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr,
                  "n_images": n_images, "n_calibration": n_calibration, "threads": threads,
                  "data_seconds": round(t_data, 1), "seconds": round(t_train, 1),
                  "final_loss": ema, "torch": torch.__version__},
        "metrics": metrics,
    }
    save_checkpoint(out or default_path(NAME), ckpt)
    return ckpt
