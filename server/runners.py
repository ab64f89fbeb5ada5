"""How a micro-batch of jobs runs through a net: one forward pass per same-shape group.

A runner wraps a :class:`models.registry.LoadedModel`. ``run(jobs)`` returns, per job,
its output arrays or the exception that job alone raised: when a batch's forward pass
fails, each job is run on its own, so one poison image fails alone and its batch-mates
still get their results.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.registry import LoadedModel
from models.superres.net import SuperResNet
from models.tagger.net import TaggerNet
from server.queue.base import Job, Retry

Outcome = dict[str, np.ndarray] | Exception


def image_of(job: Job) -> torch.Tensor:
    """The job's one input as an H x W float32 tensor (ValueError otherwise)."""
    if len(job.inputs) != 1:
        raise ValueError(f"expected one input image, got {sorted(job.inputs)}")
    a = next(iter(job.inputs.values()))
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"expected one H x W image, got shape {list(a.shape)}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"expected a real-valued image, got dtype {a.dtype}")
    return torch.from_numpy(np.array(a, dtype=np.float32))  # a copy: payloads are read-only


class ModelRunner:
    """A loaded net, its version, and the batched forward pass for its kind."""

    def __init__(self, loaded: LoadedModel, version: str) -> None:
        self.loaded, self.version = loaded, version
        self.name = loaded.info.name
        self.net = loaded.net
        self.device = loaded.device

    def describe(self) -> dict[str, Any]:
        """JSON-able description that workers advertise (inputs, outputs, tags, ...)."""
        d = dataclasses.asdict(self.loaded.info)
        d.update(version=self.version, device=str(self.device))
        return d

    def warm_up(self) -> None:
        """One small batch through every path, so the first real request pays no set-up."""
        rng = np.random.default_rng(0)
        imgs = [rng.poisson(5.0, (16, 16)).astype(np.float32) for _ in range(2)]
        factors = self.net.config.factors if isinstance(self.net, SuperResNet) else [None]
        for f in factors:
            params = {} if f is None else {"factor": f}
            jobs = [Job("warm-up", self.name, self.version, {"x": im}, params, 0, 0)
                    for im in imgs]
            for out in self.run(jobs):
                if isinstance(out, Exception):
                    raise out

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Outputs per job, in order; a job whose input fails gets its exception."""
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            groups[self._group_key(job)].append(i)
        out: list[Outcome] = [ValueError("not run")] * len(jobs)
        for idx in groups.values():
            batch = [jobs[i] for i in idx]
            try:
                results: list[Outcome] = list(self._forward(batch))
            except Exception:  # find the culprit: each job on its own
                results = [self._alone(j) for j in batch]
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    def _alone(self, job: Job) -> Outcome:
        try:
            return self._forward([job])[0]
        except torch.OutOfMemoryError as e:
            return Retry(str(e))
        except Exception as e:
            return e

    def _group_key(self, job: Job) -> Any:
        """Jobs that can share one forward pass (superres: same shape and factor)."""
        if isinstance(self.net, SuperResNet):
            shape = tuple(a.shape for a in job.inputs.values())
            return (shape, job.params.get("factor"))
        return None  # the tagger pools every image to one size itself

    @torch.no_grad()
    def _forward(self, jobs: Sequence[Job]) -> list[dict[str, np.ndarray]]:
        images = [image_of(j) for j in jobs]
        if isinstance(self.net, SuperResNet):
            factor = jobs[0].params.get("factor", max(self.net.config.factors))
            if factor not in self.net.config.factors:
                raise ValueError(f"factor {factor!r} not served; "
                                 f"this net has {list(self.net.config.factors)}")
            x = torch.stack(images)[:, None].to(self.device)
            y = self.net(x, int(factor))[:, 0].cpu().numpy()
            return [{"counts": y[i]} for i in range(len(jobs))]
        if isinstance(self.net, TaggerNet):
            p = self.net.tag_images(images).cpu().numpy()
            return [{"probabilities": p[i]} for i in range(len(jobs))]
        raise TypeError(f"no batched runner for {type(self.net).__name__}")
