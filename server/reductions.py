"""Detector images become output values, as an experiment's spec says (``reductions``).

Model reductions go through the inference queue (all images of a batch at once, so they
share micro-batches); q-range integrals are a few numpy operations, done in a thread.
What was computed, and from which image, is kept in the measurement's metadata:
``metadata["image"]`` (shape, dtype, sha256), ``metadata["reductions"]``,
``metadata["thumbnail"]`` (a 64 px log-scaled PNG data URL, see server/thumbnails.py) and,
when a tagging model ran, ``metadata["tags"]`` (``{tag: probability}``, every tag).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from server.images import ImageError, check_image, decode_npy_b64
from server.inference import InferenceService
from server.queue.base import JobFailed
from server.steering.errors import InvalidMeasurement
from server.steering.spec import ExperimentSpec, Reduction, ReductionKind
from server.thumbnails import thumbnail_data_url


def q_integral(image: np.ndarray, r: Reduction) -> float:
    """Mean of the valid pixels (finite, >= 0) whose q lies in ``[q_min, q_max)``."""
    h, w = image.shape
    cy, cx = r.center if r.center is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[0:h, 0:w]
    q = np.hypot(yy - cy, xx - cx) * r.q_per_pixel
    a = image.astype(np.float64)
    mask = (q >= r.q_min) & (q < r.q_max) & np.isfinite(a) & (a >= 0)
    if not mask.any():
        raise ValueError(f"no valid pixel with q in [{r.q_min}, {r.q_max})")
    return float(a[mask].mean())


class ImageReducer:
    """``await reducer(spec, items)``: items with images -> items with values filled."""

    def __init__(self, inference: InferenceService) -> None:
        self.inference = inference

    async def __call__(self, spec: ExperimentSpec,
                       items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = [dict(m) for m in items]
        work = []
        for i, m in enumerate(out):
            if m.get("image") is None:
                continue
            if not spec.reductions:
                raise InvalidMeasurement(f"measurements[{i}].image",
                                         "the experiment's spec names no reductions")
            try:
                raw = m.pop("image")
                image = check_image(raw) if isinstance(raw, np.ndarray) else decode_npy_b64(raw)
            except ImageError as e:
                raise InvalidMeasurement(f"measurements[{i}].image", str(e)) from None
            given = dict(m.get("values") or {})
            todo = {k: r for k, r in spec.reductions.items() if k not in given}
            work.append((i, image, given, todo))
        results = await asyncio.gather(*[self._reduce(i, im, todo) for i, im, _, todo in work])
        thumbs = await asyncio.gather(*[asyncio.to_thread(thumbnail_data_url, im)
                                        for _, im, _, _ in work])
        for (i, image, given, _), reduced, thumb in zip(work, results, thumbs, strict=True):
            m = out[i]
            m["values"] = {**given, **{k: v for k, (v, _) in reduced.items()}}
            tags: dict[str, float] = {}
            for _, d in reduced.values():
                tags.update(d.pop("tags", None) or {})
            m["metadata"] = {**(m.get("metadata") or {}),
                             "image": {"shape": list(image.shape), "dtype": str(image.dtype),
                                       "sha256": hashlib.sha256(image.tobytes()).hexdigest()},
                             "reductions": {k: d for k, (_, d) in reduced.items()},
                             "thumbnail": thumb,
                             **({"tags": tags} if tags else {})}
        return out

    async def _reduce(self, i: int, image: np.ndarray,
                      todo: Mapping[str, Reduction]) -> dict[str, tuple[float, dict[str, Any]]]:
        names = list(todo)
        values = await asyncio.gather(*[self._one(i, image, todo[k]) for k in names])
        return dict(zip(names, values, strict=True))

    async def _one(self, i: int, image: np.ndarray, r: Reduction) -> tuple[float, dict[str, Any]]:
        fld = f"measurements[{i}].image"
        if r.kind == ReductionKind.q_integral:
            try:
                v = await asyncio.to_thread(q_integral, image, r)
            except ValueError as e:
                raise InvalidMeasurement(fld, str(e)) from None
            return v, {**r.to_dict(), "value": v}
        assert r.model is not None and r.output is not None
        info = await self.inference.model(r.model)
        names = list(info.get("tags") or [])
        if r.output not in names:
            raise InvalidMeasurement(fld, f"model {r.model!r} has no output {r.output!r}; "
                                          f"it has {names}")
        try:
            (res,) = await self.inference.infer(r.model, [image],
                                                input_name=info["inputs"][0]["name"])
        except JobFailed as e:
            if not e.bad_input:
                raise
            raise InvalidMeasurement(fld, e.result.error or "refused") from None
        probs = [float(p) for p in next(iter(res.outputs.values()))]
        v = probs[names.index(r.output)]
        return v, {**r.to_dict(), "value": v, "version": info["versions"][0],
                   "job_id": res.job_id, "tags": dict(zip(names, probs, strict=True))}
