"""The Python client against the real server (SQLite and PostgreSQL): every call, the
typed errors, idempotent tells, and retries through a proxy that fails for real."""

from __future__ import annotations

import threading
import uuid

import pytest

from clients import (
    Client,
    ConflictError,
    ConnectionFailed,
    Experiment,
    NotFound,
    Retry,
    ServerError,
    ValidationError,
)
from tests.clients.conftest import SPEC, FlakyProxy, LiveServer, free_port


def test_experiments(bs: Client, exp: Experiment) -> None:
    assert exp.name == "gradient-film" and exp.parameter_names == ["x", "y"]
    assert exp.status == "active" and exp.n_measurements == 0 and exp.target == "intensity"
    assert exp.spec["acquisition"] == "misfit_variance"  # defaults come back filled in
    got = bs.get_experiment(exp.id)
    assert got.id == exp.id and got.model is not None
    assert exp.id in [e.id for e in bs.list_experiments()]
    assert bs.set_status(exp, "paused").status == "paused"
    with pytest.raises(ConflictError) as ei:
        bs.suggest(exp)
    assert ei.value.status == 409 and "paused" in ei.value.reason
    assert bs.set_status(exp, "active").status == "active"


def test_typed_errors_name_the_field(bs: Client, exp: Experiment) -> None:
    with pytest.raises(NotFound) as nf:
        bs.get_experiment("no-such-experiment")
    assert nf.value.status == 404 and nf.value.field == "experiment_id"
    assert nf.value.request_id

    bad = {**SPEC, "parameters": [{"name": "x", "lower": 3, "upper": 1}]}
    with pytest.raises(ValidationError) as ve:
        bs.create_experiment(bad)
    assert ve.value.status == 422 and ve.value.field.startswith("parameters[0]")
    assert ve.value.reason and ve.value.loc[0] == "body"

    with pytest.raises(ValidationError) as ve:
        bs.measure(exp, [{"position": {"x": 1, "y": 0}, "values": {"intensity": 1}},
                         {"position": {"x": 11, "y": 0}, "values": {"intensity": 1}}])
    assert ve.value.field == "measurements[1].position.x"
    assert ve.value.loc == ["body", "measurements", 1, "position", "x"]
    assert bs.get_experiment(exp).n_measurements == 0  # the batch is atomic

    # JSON has no NaN: refused here, before anything is sent, the way the server words it
    with pytest.raises(ValidationError) as ve:
        bs.measure(exp, {"x": 1, "y": 0}, {"intensity": float("nan")})
    assert ve.value.field == "measurements[0].values.intensity" and ve.value.status is None
    assert "finite" in ve.value.reason
    with pytest.raises(ValidationError) as ve:
        bs.posterior(exp, points=[[1.0, 0.0], [float("inf"), 0.0]])
    assert ve.value.field == "points[1][0]"
    assert bs.get_experiment(exp).n_measurements == 0

    with pytest.raises(TypeError):
        bs.posterior(exp)  # neither points nor grid


def test_ask_tell_read(bs: Client, exp: Experiment) -> None:
    sugs = bs.suggest(exp, 3)
    assert len(sugs) == 3 and all(s.status == "pending" for s in sugs)
    assert {s.id for s in bs.suggestions(exp, "pending")} == {s.id for s in sugs}

    one = bs.measure(exp, sugs[0].position, {"intensity": 1.5}, suggestion=sugs[0],
                     noise={"intensity": 0.01}, metadata={"scan": 42})
    assert one.created is True and one.seq == 1 and one.key  # a key was made up
    batch = bs.measure(exp, [{"position": s.position, "values": {"intensity": 2.0 + i},
                              "suggestion_id": s.id, "key": f"pt-{i}"}
                             for i, s in enumerate(sugs[1:])])
    assert [m.key for m in batch] == ["pt-0", "pt-1"] and all(m.created for m in batch)
    assert bs.suggestions(exp, "pending") == []

    extra = bs.suggest(exp, 1)[0]
    assert bs.abandon(exp, extra).status == "abandoned"

    ms = bs.measurements(exp, page_size=2)  # follows the pages
    assert [m.seq for m in ms] == [1, 2, 3] and ms[0].metadata == {"scan": 42}
    assert [m.seq for m in bs.measurements(exp, after=1)] == [2, 3]
    df = ms.as_dataframe()
    assert list(df["intensity"]) == [1.5, 2.0, 3.0] and "x" in df.columns
    csv = bs.measurements_csv(exp)
    assert csv.splitlines()[0].startswith("seq,x,y,intensity") and len(csv.splitlines()) == 4

    grid = bs.posterior(exp, grid={"x": 4, "y": 3})
    assert grid.axes is not None and len(grid.axes["x"]) == 4 and len(grid.points) == 12
    pts = bs.posterior(exp, points=[[1.0, 0.0], [9.0, 4.0]])
    assert len(pts.mean()) == 2 and len(pts.std("intensity")) == 2

    # the convergence curve: the map error after each refit, typed
    fitted = bs.wait_for_fit(exp, min_fitted=3)
    history = fitted.map_error_history
    assert history and history[-1].n == fitted.map_error.n == 3
    assert history[-1].rms_std == fitted.map_error.rms_std and history[-1].at > 0


def test_same_key_stores_once(bs: Client, exp: Experiment) -> None:
    first = bs.measure(exp, {"x": 1, "y": 1}, {"intensity": 1.0}, key="k1")
    again = bs.measure(exp, {"x": 1, "y": 1}, {"intensity": 1.0}, key="k1")
    assert first.created and again.created is False and again.id == first.id
    with pytest.raises(ConflictError) as ce:  # same key, other content
        bs.measure(exp, {"x": 2, "y": 1}, {"intensity": 1.0}, key="k1")
    assert ce.value.status == 409
    assert bs.get_experiment(exp).n_measurements == 1


def test_503_and_429_are_retried_honouring_retry_after(live_server: LiveServer,
                                                       exp: Experiment) -> None:
    with FlakyProxy(live_server.url, ["503", "503"]) as proxy, \
            Client(proxy.url, retry=Retry(attempts=3, backoff=0.01)) as c:
        assert c.get_experiment(exp.id).id == exp.id
        assert [s.action for s in proxy.seen] == ["503", "503", "forward"]

    # a create is not idempotent, but a 429/503 says the server did nothing: retried
    with FlakyProxy(live_server.url, ["429"], retry_after="1") as proxy, \
            Client(proxy.url, retry=Retry(attempts=2, backoff=0.0)) as c:
        created = c.create_experiment(SPEC, name="after-429")
        assert created.name == "after-429"
        assert [s.action for s in proxy.seen] == ["429", "forward"]
        assert proxy.seen[1].time - proxy.seen[0].time >= 0.9  # waited as told

    with FlakyProxy(live_server.url, ["503"] * 3) as proxy, \
            Client(proxy.url, retry=Retry(attempts=2, backoff=0.0)) as c:
        with pytest.raises(ServerError) as se:
            c.get_experiment(exp.id)
        assert se.value.status == 503 and len(proxy.seen) == 2


def test_lost_reply_retry_never_stores_twice(live_server: LiveServer, bs: Client,
                                             exp: Experiment) -> None:
    with FlakyProxy(live_server.url, ["drop"], only_path="/measurements") as proxy, \
            Client(proxy.url, retry=Retry(attempts=3, backoff=0.01)) as c:
        m = c.measure(exp, {"x": 3, "y": 2}, {"intensity": 0.5})
    assert [s.action for s in proxy.seen] == ["drop", "forward"]
    assert m.created is False  # the first try was stored; the retry found it by its key
    assert [x.key for x in bs.measurements(exp)] == [m.key]


def test_ask_is_not_repeated_after_a_lost_reply(live_server: LiveServer, bs: Client,
                                                exp: Experiment) -> None:
    with FlakyProxy(live_server.url, ["drop"], only_path="/suggestions") as proxy, \
            Client(proxy.url, retry=Retry(attempts=3, backoff=0.01)) as c:
        with pytest.raises(ConnectionFailed):
            c.suggest(exp, 2)
    assert len(proxy.seen) == 1
    assert len(bs.suggestions(exp, "pending")) == 2  # one ask reached the server, once


def test_unreachable_server() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", retry=Retry(attempts=2, backoff=0.01),
                timeout=2) as c:
        with pytest.raises(ConnectionFailed) as ei:
            c.list_experiments()
    assert ei.value.status is None and "2 tries" in str(ei.value)


def test_events(bs: Client, exp: Experiment) -> None:
    with bs.events(exp) as stream:
        hello = stream.next(timeout=10)
        assert hello is not None and hello.type == "hello"
        assert hello.data["n_measurements"] == 0
        bs.measure(exp, {"x": 5, "y": 0}, {"intensity": 2.0}, key="ev-1")
        ev = stream.next(timeout=10)
        assert ev is not None and ev.type == "measurements"
        assert ev.data["measurements"][0]["key"] == "ev-1"
        with pytest.raises(TimeoutError):
            stream.next(timeout=0.2)
    assert stream.next() is None  # closed
    with pytest.raises(NotFound):
        bs.events("no-such-experiment").next(timeout=10)


def test_schema_errors_are_typed_too(bs: Client) -> None:
    with pytest.raises(ValidationError) as ve:
        bs.create_experiment(SPEC, goal="explore")
    assert ve.value.field == "goal" and len(ve.value.errors) == 1


def test_events_reconnect_across_a_restart(tmp_path) -> None:  # noqa: ANN001
    """A stream survives the server going away and coming back on the same port."""
    import uvicorn

    from tests.api.conftest import make_settings

    port = free_port()
    settings = make_settings(f"sqlite:///{tmp_path / 'b.db'}", tmp_path)

    def start() -> LiveServer:
        srv = LiveServer(settings)
        srv.port, srv.url = port, f"http://127.0.0.1:{port}"
        srv.server = uvicorn.Server(uvicorn.Config(srv.app, host="127.0.0.1", port=port,
                                                   log_config=None, log_level="warning",
                                                   ws="websockets-sansio"))

        srv.thread = threading.Thread(target=srv.server.run, daemon=True)
        return srv.__enter__()

    first = start()
    with Client(first.url, retry=Retry(attempts=30, backoff=0.05, max_backoff=0.3)) as c:
        e = c.create_experiment(SPEC)
        stream = c.events(e)
        try:
            assert stream.next(timeout=10).type == "hello"  # type: ignore[union-attr]
            first.__exit__(None, None, None)
            second = start()
            try:
                hello = stream.next(timeout=20)  # the closed connection is noticed...
                assert hello is not None and hello.type == "hello"  # ...and replaced
                assert stream.reconnects == 1
                c.measure(e, {"x": 1, "y": 1}, {"intensity": 1.0}, key=uuid.uuid4().hex)
                ev = stream.next(timeout=20)
                assert ev is not None and ev.type == "measurements"
            finally:
                stream.close()
                second.__exit__(None, None, None)
        finally:
            stream.close()
