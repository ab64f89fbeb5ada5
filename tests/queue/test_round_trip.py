"""Jobs through either backend give what calling the model directly gives."""

from __future__ import annotations

import asyncio

import numpy as np

from models import registry
from server.queue.codec import pack, unpack
from tests.queue.conftest import deadline, images, running_worker


async def test_superres_and_tagger_equal_direct_call(make_queue, models) -> None:
    queue = await make_queue()
    ims = images(5) + images(2, (24, 40), seed=1)  # two shapes: two forward passes
    async with running_worker(queue, models, max_delay_ms=50):
        sr = [await queue.enqueue_job("superres", {"counts": im}, params={"factor": 2},
                                      deadline=deadline()) for im in ims]
        tg = [await queue.enqueue_job("tagger", {"image": im}, deadline=deadline())
              for im in ims]
        sr_res = await asyncio.gather(*[h.result() for h in sr])
        tg_res = await asyncio.gather(*[h.result() for h in tg])
    direct_sr, direct_tg = registry.load("superres"), registry.load(models["tagger"])
    for im, s, t in zip(ims, sr_res, tg_res, strict=True):
        np.testing.assert_allclose(s.outputs["counts"], direct_sr.predict(im, factor=2),
                                   rtol=1e-4, atol=1e-4)
        probs = direct_tg.predict(im)
        np.testing.assert_allclose(t.outputs["probabilities"], list(probs.values()),
                                   rtol=1e-4, atol=1e-5)
    assert max(r.batch_size for r in sr_res) > 1, "jobs enqueued together share a batch"
    assert {r.job_id for r in sr_res} == {h.id for h in sr}


async def test_served_models_advertised_after_warm_up(make_queue, models) -> None:
    queue = await make_queue()
    assert await queue.served_models() == {}
    async with running_worker(queue, models):
        served = await queue.served_models()
        assert set(served) == {("superres", "1"), ("tagger", "1")}
        assert served[("tagger", "1")]["tags"][0] == "ring"
        assert served[("superres", "1")]["inputs"][0]["name"] == "counts"
    assert await queue.served_models() == {}


def test_codec_round_trip_and_refusal() -> None:
    a = np.arange(12, dtype="<u2").reshape(3, 4)
    header, arrays = unpack(pack({"x": 1}, {"a": a}))
    assert header == {"x": 1}
    np.testing.assert_array_equal(arrays["a"], a)
    for bad in (b"", b"\x00\x00\x00\x05{}", pack({}, {"a": a})[:-3]):
        try:
            unpack(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
