"""``infer`` and image tells through the Python client, against the live server whose
embedded worker serves the shipped models: answers equal a direct call of the registry."""

from __future__ import annotations

import numpy as np
import pytest

from clients import AsyncClient, Client, ValidationError
from models import registry
from tests.clients.conftest import LiveServer


def frame(x: float, size: int = 64, seed: int = 0) -> np.ndarray:
    """A powder ring whose radius grows with ``x``, on a Poisson background."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    rate = 2.0 + 40.0 * np.exp(-((r - (6 + 2 * x)) ** 2) / 2.0)
    return np.random.default_rng(seed).poisson(rate).astype(np.float32)


@pytest.fixture(scope="module")
def direct() -> dict[str, registry.LoadedModel]:
    return {name: registry.load(name) for name in ("tagger", "superres")}


def test_infer_tags_and_superres(bs: Client, direct) -> None:
    im = frame(3.0)
    tags = bs.infer("tagger", im)
    expected = direct["tagger"].predict(im)
    assert list(tags) == list(expected)
    np.testing.assert_allclose(list(tags.values()), list(expected.values()), atol=1e-5)
    hr = bs.infer("superres", im[:16, :16], factor=2)
    assert isinstance(hr, np.ndarray) and hr.shape == (32, 32)
    np.testing.assert_allclose(hr, direct["superres"].predict(im[:16, :16], factor=2),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValidationError):
        bs.infer("superres", im[:16, :16], factor="x")


async def test_async_infer(live_server: LiveServer, direct) -> None:
    im = frame(1.0, seed=1)
    async with AsyncClient(live_server.url) as c:
        tags = await c.infer("tagger", im)
    assert tags["ring"] == pytest.approx(direct["tagger"].predict(im)["ring"], abs=1e-5)


def test_measure_with_an_image(bs: Client, direct) -> None:
    exp = bs.create_experiment(
        name="ring-hunt", target="ring_prob", initial_design=2,
        parameters=[{"name": "x", "lower": 0, "upper": 10}],
        outputs=[{"name": "ring_prob"}, {"name": "iq"}],
        reductions={"ring_prob": {"model": "tagger", "output": "ring"},
                    "iq": {"q_min": 0.05, "q_max": 0.1, "q_per_pixel": 0.01}})
    (s,) = bs.suggest(exp, 1)
    im = frame(s.position["x"])
    m = bs.measure(exp, s.position, image=im, suggestion=s, key="frame-0")
    assert m.values["ring_prob"] == pytest.approx(direct["tagger"].predict(im)["ring"],
                                                  abs=1e-5)
    assert m.metadata["image"]["shape"] == [64, 64]
    again = bs.measure(exp, s.position, image=im, suggestion=s, key="frame-0")
    assert again.created is False and again.values == m.values  # a retry stores nothing
    batch = bs.measure(exp, [{"position": {"x": 7.0}, "image": frame(7.0, seed=2)},
                             {"position": {"x": 8.0}, "values": {"iq": 1.0},
                              "image": frame(8.0, seed=3)}])
    assert batch[1].values["iq"] == 1.0 and "ring_prob" in batch[1].values
    assert [x.key for x in bs.measurements(exp)][0] == "frame-0"
    with pytest.raises(TypeError):
        bs.measure(exp, {"x": 1.0})
