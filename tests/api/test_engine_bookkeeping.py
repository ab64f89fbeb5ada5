"""What the service holds per experiment: which measurements its engine has (a batch that
repeats a key, another process's tell that arrives between this one's), and which
engines it keeps (only the last few closed experiments')."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.service import CLOSED_HELD, SteeringService, _Live
from server.settings import Settings
from server.steering.engine import GPEngine
from server.steering.errors import Conflict, InvalidSpec
from server.steering.spec import ExperimentSpec
from server.store.base import ExperimentStatus
from server.store.sql import SQLStore
from tests.store.factories import SPEC


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'b.db'}"


def _service(db: str, tmp_path: Path) -> SteeringService:
    return SteeringService(SQLStore(db), Settings(data_dir=tmp_path, log_json=False))


@pytest.fixture
def service(db: str, tmp_path: Path) -> Iterator[SteeringService]:
    svc = _service(db, tmp_path)
    try:
        yield svc
    finally:
        asyncio.run(svc.stop())
        svc.store.close()


def _m(x: float, y: float = 0.0, **extra: object) -> dict:
    return {"position": {"x": x, "y": y}, "values": {"intensity": x - y}, **extra}


def test_ingested_through_is_the_gapless_prefix() -> None:
    spec = ExperimentSpec.from_dict(SPEC)
    live = _Live(spec, GPEngine(spec), asyncio.Lock(), seqs={1, 2, 4})
    assert live.ingested_through == 2
    live.add_seqs([3])
    assert live.ingested_through == 4
    live.add_seqs([6, 5])
    assert live.ingested_through == 6 and len(live.seqs) == 6


def test_a_batch_that_repeats_a_key_is_ingested_once(service: SteeringService) -> None:
    async def run() -> tuple[list[bool], int, int]:
        exp = await service.create_experiment(SPEC)
        stored = await service.measure(exp.id, [_m(1.0, key="k"), _m(1.0, key="k"),
                                                _m(2.0)])
        status = await service.model_status(exp.id)
        assert status is not None
        n_store = (await service.get_experiment(exp.id)).n_measurements
        return stored.created, status.n, n_store

    created, n_engine, n_store = asyncio.run(run())
    assert created == [True, False, True]
    assert n_engine == n_store == 2


def test_catch_up_takes_an_older_tell_behind_a_newer_own_one(
        db: str, tmp_path: Path, service: SteeringService) -> None:
    """Process A holds seqs 1, 2 and its own 4; B stored 3. A count of what A ingested (3)
    equals the count the store had when an ask read it before A's tell (3): only the
    gapless prefix says that 3 is missing."""
    (tmp_path / "b").mkdir()
    other = _service(db, tmp_path / "b")  # another API process on the same database

    async def run() -> np.ndarray:
        exp = await service.create_experiment(SPEC)
        await service.measure(exp.id, [_m(1.0), _m(2.0)])
        await other.measure(exp.id, [_m(3.0)])  # seq 3, by the other process
        await service.measure(exp.id, [_m(9.0)])  # seq 4, by this one
        live = service._live[exp.id]
        assert live.seqs == {1, 2, 4}
        await service._catch_up(exp.id, live, n_stored=3)  # the count an earlier read saw
        return np.sort(live.engine._X[:live.engine._n, 0])

    try:
        xs = asyncio.run(run())
    finally:
        asyncio.run(other.stop())
        other.store.close()
    assert xs.tolist() == [1.0, 2.0, 3.0, 9.0]


def test_closed_experiments_keep_only_the_last_few_engines(service: SteeringService) -> None:
    """Closing keeps an engine (its model is still looked at) among the CLOSED_HELD used
    last; a closed one looked at again is rebuilt and held in place of the oldest."""
    async def run() -> None:
        ids = []
        for i in range(CLOSED_HELD + 2):
            exp = await service.create_experiment({**SPEC, "name": f"e{i}"})
            await service.measure(exp.id, [_m(float(x), float(x) - 3) for x in range(6)])
            ids.append(exp.id)
        assert service.engine_count == len(ids)
        await asyncio.to_thread(service.wait_for_refits)  # fitted, hyperparameters stored
        for eid in ids:
            await service.set_status(eid, ExperimentStatus.closed)
        await asyncio.to_thread(service.wait_for_refits)
        assert service.engine_count == CLOSED_HELD
        assert set(service._live) == set(ids[-CLOSED_HELD:])
        assert await service.model_status(ids[-1]) is not None  # still shown
        assert await service.model_status(ids[0]) is None  # let go
        with pytest.raises(Conflict, match="closed"):  # answered without a rebuild
            await service.suggest(ids[0], 1)
        assert set(service._live) == set(ids[-CLOSED_HELD:])
        # looked at again (the dashboard's map): rebuilt, the least recently used let go
        for eid in ids:
            post = await service.posterior(eid, np.array([[5.0, 0.0]]))
            assert np.isfinite(post.mean["intensity"]).all()
        assert list(service._live) == ids[-CLOSED_HELD:]
        await service.posterior(ids[-2], np.array([[5.0, 0.0]]))  # used: now the newest
        assert list(service._live) == [ids[-1], ids[-2]]
        # reopened while held: a working experiment again
        await service.set_status(ids[-1], ExperimentStatus.active)
        assert not service._live[ids[-1]].closed
        (s,) = await service.suggest(ids[-1], 1)
        assert s.status.value == "pending"

    asyncio.run(run())


def test_an_experiment_stored_before_the_name_rules_still_works(
        service: SteeringService) -> None:
    """New experiments may not reuse a parameter's name for an output (or a column of the
    measurements table); one stored before that rule loads, measures and asks as before."""
    old = {**SPEC, "outputs": [{"name": "x"}, {"name": "key"}]}  # clashes with both rules
    rec = service.store.create_experiment(ExperimentSpec.from_dict(old).to_dict())

    async def run() -> None:
        with pytest.raises(InvalidSpec, match="share one namespace"):
            await service.create_experiment(old)
        await service.measure(rec.id, [{"position": {"x": 1.0, "y": 0.0},
                                        "values": {"x": 1.0, "key": 2.0}}])
        (s,) = await service.suggest(rec.id, 1)
        assert s.status.value == "pending"

    asyncio.run(run())


def test_a_catch_up_cancelled_while_the_engine_ingests_ingests_once(
        db: str, tmp_path: Path, service: SteeringService) -> None:
    """A posterior's catch-up cancelled mid-ingest (a shutdown): the engine's thread
    ingests anyway, so the rows count as ingested and the next catch-up does not add
    them a second time."""
    (tmp_path / "b").mkdir()
    other = _service(db, tmp_path / "b")  # another API process, which measured a lot
    rng = np.random.default_rng(3)

    async def run() -> tuple[int, int]:
        exp = await service.create_experiment({**SPEC, "acquisition": "variance"})
        await service.measure(exp.id, [_m(1.0)])
        xy = rng.uniform([0, -5], [10, 5], (300, 2))
        await other.measure(exp.id, [_m(float(x), float(y)) for x, y in xy])
        live = service._live[exp.id]
        # The engine's thread holds the rows until the catch-up is cancelled (else a quick
        # ingest could end between two looks at `ingesting`, and the wait below never end)
        gate, ingest = threading.Event(), live.engine.ingest

        def held(*arrays: np.ndarray) -> None:
            gate.wait(60)
            ingest(*arrays)

        live.engine.ingest = held  # type: ignore[method-assign]
        task = asyncio.create_task(service._catch_up(exp.id, live, n_stored=301))
        deadline = time.monotonic() + 60
        while not live.ingesting:  # the engine's thread has the rows now
            assert time.monotonic() < deadline, "the catch-up never started to ingest"
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert live.ingesting  # still in the engine's thread: cancelled mid-ingest
        gate.set()
        await service._catch_up(exp.id, live, n_stored=301)
        while live.ingesting:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(service.wait_for_refits, 120)
        return live.engine.status().n, live.ingested_through

    try:
        n_engine, through = asyncio.run(run())
    finally:
        other.wait_for_refits(120)  # its own engine refits on the 300 too
        asyncio.run(other.stop())
        other.store.close()
    assert n_engine == through == 301
