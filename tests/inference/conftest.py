"""Live servers with inference: the embedded (memory) queue, and Redis with a worker.

Each Redis-backed server gets its own key prefix, deleted when the module's tests end.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from tests.api.conftest import LiveServer, make_settings


def wait_ready(client: httpx.Client, *models: str, timeout: float = 60) -> None:
    """Poll the protocol's model readiness until every model is warm."""
    t_end = time.monotonic() + timeout
    for m in models:
        while client.get(f"/v2/models/{m}/ready").status_code != 200:
            assert time.monotonic() < t_end, f"model {m} never became ready"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def module_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"beamsteer-test-{secrets.token_hex(6)}"
    yield prefix
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           tagger_checkpoint: Path) -> Iterator[LiveServer]:
    """A server whose in-process worker serves superres and the test tagger."""
    tmp = tmp_path_factory.mktemp(f"infer-{request.param}")
    extra: dict[str, object] = {}
    if request.param == "redis":
        extra = {"queue_backend": "redis", "embedded_worker": True,
                 "redis_url": request.getfixturevalue("redis_url"),
                 "redis_prefix": request.getfixturevalue("module_prefix")}
    settings = make_settings(f"sqlite:///{tmp / 'beamsteer.db'}", tmp, inference_device="cpu",
                             inference_models=f"superres,tagger={tagger_checkpoint}",
                             worker_max_delay_ms=20, **extra)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=60) as c:
        wait_ready(c, "superres", "tagger")
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def images(n: int, shape: tuple[int, int] = (32, 32), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(5.0, shape).astype(np.float32) for _ in range(n)]
