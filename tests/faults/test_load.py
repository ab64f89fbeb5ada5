"""A short load run (the CI version of benchmarks/load.py): beamlines doing ask/tell
loops against one server; afterwards the store holds exactly the acknowledged posts.
No timing is asserted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.load import client_for, create_experiments, run_load, stats, verify
from server.live import LiveServer
from tests.api.conftest import make_settings

BEAMLINES, EXPERIMENTS, SECONDS = 12, 4, 6.0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_load_stores_exactly_the_acknowledged(backend: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'beamsteer.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    # every beamline comes from 127.0.0.1: the per-caller rate limit would refuse them
    settings = make_settings(url, tmp_path, rate_limit_per_s=0)
    with LiveServer(settings) as server:
        async with client_for(server.url, BEAMLINES, timeout=60) as client:
            experiments = await create_experiments(client, EXPERIMENTS)
            run = await run_load(client, experiments, BEAMLINES, SECONDS)
            check = await verify(client, run)
    statuses = Counter((c.op, c.status, c.error) for c in run.calls)
    assert {s for _, s, _ in statuses} == {201}, statuses  # no 5xx, no refusals
    assert not any(b.given_up for b in run.beamlines)
    assert check.ok, check.summary()
    assert check.stored == len(run.acked) > BEAMLINES  # every beamline got some through
    assert all(b.acked for b in run.beamlines)
    assert stats(run)["operations"]["tell"]["ok"] == len(run.acked)
