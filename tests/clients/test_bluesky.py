"""The Bluesky plan with the real RunEngine, simulated ophyd motors and a detector whose
reading is a known function of where they are, against the live server."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import pytest

pytest.importorskip("bluesky")
pytest.importorskip("ophyd")

from bluesky import RunEngine  # noqa: E402
from ophyd.sim import SynAxis, SynSignal  # noqa: E402

from clients import BeamsteerError, Client  # noqa: E402
from clients.bluesky import BadReadings, _Scan, autonomous_scan  # noqa: E402
from tests.clients.conftest import SPEC, LiveServer  # noqa: E402


def truth(x: float, y: float) -> float:
    return math.sin(x / 2) * math.cos(y / 3) + 0.1 * x


@pytest.fixture(params=[False, True, "auto"], ids=["in-turn", "ask-ahead", "auto"])
def ahead(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool | str:
    """``autonomous_scan``'s ``ask_ahead``: the server's calls in turn with the beamline's
    moves and reads, or on the plan's thread while it moves and reads, or ``"auto"``. For
    ``"auto"`` any wait counts (``AUTO_SHARE = 0``), so that what it does hangs on timings
    only in the first batch: in turn until the first post is timed, then ahead."""
    if request.param == "auto":
        monkeypatch.setattr("clients.bluesky.AUTO_SHARE", 0.0)
    return request.param  # type: ignore[no-any-return]


def asked_and_told(client: Client, exp: Any, n: int) -> tuple[list[Any], list[Any]]:
    """The ``n`` suggestions in the order asked, and the measurement that told each; every
    one was measured, with events 1..n."""
    stored = client.measurements(exp)
    sugs = sorted(client.suggestions(exp), key=lambda s: s.created_at)
    assert [m.metadata["seq_num"] for m in stored] == list(range(1, n + 1))
    assert [s.status for s in sugs] == ["measured"] * n
    by_suggestion = {m.suggestion_id: m for m in stored}
    return sugs, [by_suggestion[s.id] for s in sugs]


@pytest.fixture
def beamline() -> tuple[SynAxis, SynAxis, SynSignal]:
    x, y = SynAxis(name="x"), SynAxis(name="y")
    det = SynSignal(func=lambda: truth(x.position, y.position), name="det")
    return x, y, det


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_one_run_every_point_stored_with_its_event(live_server: LiveServer,
                                                   beamline: tuple[Any, ...],
                                                   ahead: bool) -> None:
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    RE = RunEngine({}, call_returns_result=True)
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky")
        result = RE(autonomous_scan([det], {"x": x, "y": y}, client, exp.id, max_points=7,
                                    batch=3, reduce=lambda r: {"intensity": r["det"]},
                                    ask_ahead=ahead, md={"sample": "film-3"}),
                    lambda name, doc: docs.append((name, doc)))
        stored = client.measurements(exp)
        sugs = client.suggestions(exp)
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("start") == 1 and names.count("descriptor") == 1
    start, stop = docs[0][1], docs[-1][1]
    uid = start["uid"]
    assert result.run_start_uids == (uid,) and result.exit_status == "success"
    assert start["plan_name"] == "autonomous_scan" and start["sample"] == "film-3"
    assert start["beamsteer"]["experiment_id"] == exp.id
    assert stop["exit_status"] == "success" and stop["num_events"]["primary"] == 7
    events = [d for n, d in docs if n == "event"]
    assert [e["seq_num"] for e in events] == list(range(1, 8))

    assert len(stored) == 7  # 3 + 3 + 1: the last ask was for just one
    for m, ev in zip(stored, events, strict=True):
        assert m.metadata == {"run_uid": uid, "seq_num": ev["seq_num"],
                              "plan_name": "autonomous_scan"}
        assert m.key == f"{uid}-{ev['seq_num']}"
        assert m.position == {"x": ev["data"]["x"], "y": ev["data"]["y"]}
        assert m.values["intensity"] == pytest.approx(truth(m.position["x"], m.position["y"]))
        assert m.values["intensity"] == pytest.approx(ev["data"]["det"])
    assert len(sugs) == 7 and all(s.status == "measured" for s in sugs)


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_reading_that_is_not_finite_is_skipped_and_a_run_of_them_fails(
        live_server: LiveServer, beamline: tuple[Any, ...],
        caplog: pytest.LogCaptureFixture, ahead: bool) -> None:
    """A glitch (NaN) is not told: its suggestion is abandoned with a warning and the scan
    goes on; three in a row stop the run as failed, saying why."""
    x, y, det = beamline
    RE = RunEngine({}, call_returns_result=True)
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-glitch")
        n = 0

        def glitch_at_3(r: dict[str, Any]) -> dict[str, float]:
            nonlocal n
            n += 1
            return {"intensity": math.nan if n == 3 else r["det"]}

        # (logged, not warned: warning filters are process-wide, and the server's fits in
        # this process swap them)
        with caplog.at_level(logging.WARNING, logger="beamsteer.bluesky"):
            result = RE(autonomous_scan([det], [x, y], client, exp.id, max_points=6,
                                        batch=2, reduce=glitch_at_3, ask_ahead=ahead))
        assert [r.getMessage() for r in caplog.records] == [
            "event 3: intensity = nan; not told to Beamsteer, its suggestion abandoned"]
        assert result.exit_status == "success"
        stored = client.measurements(exp)
        assert [m.metadata["seq_num"] for m in stored] == [1, 2, 4, 5, 6]
        statuses = sorted(s.status for s in client.suggestions(exp))
        assert statuses == ["abandoned"] + ["measured"] * 5

        exp = client.create_experiment(SPEC, name="bluesky-dead")
        docs: list[tuple[str, dict[str, Any]]] = []
        with pytest.raises(BadReadings, match="3 readings"):
            RE(autonomous_scan([det], [x, y], client, exp.id, max_points=10, batch=2,
                               reduce=lambda r: {"intensity": math.inf}, ask_ahead=ahead),
               lambda name, doc: docs.append((name, doc)))
        assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "fail"
        assert "3 readings in a row were not finite" in docs[-1][1]["reason"]
        assert client.measurements(exp) == []
        assert {s.status for s in client.suggestions(exp)} == {"abandoned"}


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_failure_closes_the_run_and_abandons_the_rest(live_server: LiveServer,
                                                      beamline: tuple[Any, ...],
                                                      ahead: bool) -> None:
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    calls = []

    def reduce(r: dict[str, Any]) -> dict[str, float]:
        calls.append(r)
        if len(calls) == 2:
            raise RuntimeError("detector saturated")
        return {"intensity": r["det"]}

    RE = RunEngine({})
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-fail")
        with pytest.raises(RuntimeError, match="saturated"):
            RE(autonomous_scan([det], [x, y], client, exp.id, max_points=8, batch=4,
                               reduce=reduce, ask_ahead=ahead),
               lambda n, d: docs.append((n, d)))
        states = sorted(s.status for s in client.suggestions(exp))
        assert client.get_experiment(exp).n_measurements == 1
    # asking ahead, the next batch of 4 may have been asked already (the plan asks before
    # the last position once measuring the rest outlasts an ask): abandoned as well; "auto"
    # asks the first batch in turn
    assert states in ([["abandoned"] * 3 + ["measured"]]
                      + [["abandoned"] * 7 + ["measured"]] * (ahead is True))
    assert not [t for t in threading.enumerate() if t.name.startswith("beamsteer-plan")]
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "fail"


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_stops_when_the_map_is_good_enough(live_server: LiveServer,
                                           beamline: tuple[Any, ...], ahead: bool,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """... after the batch that made it so (asking ahead: after the next one, whose
    check came back while it was measured; the batch asked meanwhile is abandoned)."""
    x, y, det = beamline
    caplog.set_level(logging.DEBUG, logger="beamsteer.bluesky")
    RE = RunEngine({})
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-std")
        readings = []

        def reduce(r: dict[str, Any]) -> dict[str, float]:
            # From the second batch on, let the first fit (background) finish, as a slower
            # real detector would: any std is below 1e9 once the model can say.
            if len(readings) == 4:
                client.wait_for_fit(exp)
            readings.append(r["det"])
            return {"intensity": r["det"]}

        RE(autonomous_scan([det], [x, y], client, exp.id, max_points=40, batch=4,
                           target_std=1e9, reduce=reduce, ask_ahead=ahead))
        # stops at the first check after a fit: after batch 1 if the fit was that quick
        n = client.get_experiment(exp).n_measurements
        sugs = client.suggestions(exp)
    # "auto" asks the second batch ahead if the first post was timed before the first
    # batch's last position (the plan's debug log says), and then ends as asking ahead;
    # else the first check is read in turn, the later ones one batch late
    first_ahead = any(r.getMessage() == "asking for 4 position(s) ahead, 4 measured"
                      for r in caplog.records)
    if ahead is True or (ahead == "auto" and first_ahead):
        assert n in (8, 12) and sorted(s.status for s in sugs) == (
            ["abandoned"] * 4 + ["measured"] * n)
    elif ahead is False:
        assert n in (4, 8) and {s.status for s in sugs} == {"measured"}
    else:
        assert n in (4, 12) and sorted(s.status for s in sugs) == (
            ["abandoned"] * 4 * (n > 4) + ["measured"] * n)


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_stops_on_the_servers_map_error_estimate(live_server: LiveServer,
                                                 beamline: tuple[Any, ...],
                                                 ahead: bool) -> None:
    """``target_error``: the plan stops once the server's estimated map error is at most
    5% of the measured range, not before ``10 d`` points, and says why in the stop
    document; the map it leaves is that good against the truth (within 2x)."""
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    RE = RunEngine({})
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-error")
        readings: list[float] = []

        def reduce(r: dict[str, Any]) -> dict[str, float]:
            if readings and len(readings) % 4 == 0:  # each batch sees the refitted model,
                client.wait_for_fit(exp)  # as it would behind a slower detector
            readings.append(r["det"])
            return {"intensity": r["det"]}

        RE(autonomous_scan([det], [x, y], client, exp.id, max_points=120, batch=4,
                           target_error=0.05, reduce=reduce, ask_ahead=ahead),
           lambda name, doc: docs.append((name, doc)))
        n = client.get_experiment(exp).n_measurements
        post = client.posterior(exp, grid={"x": 30, "y": 30})
    stop = docs[-1][1]
    # asking ahead ("auto" too, from the second batch on), the estimate that stopped the
    # plan was read one batch of 4 before
    assert stop["reason"].startswith("estimated map error")
    assert f"(N={n - 4 * (ahead is not False)})" in stop["reason"]
    assert docs[0][1]["plan_args"]["min_points"] == 20
    assert 20 <= n < 120
    truth_at = [truth(px, py) for px, py in post.points]
    span = max(truth_at) - min(truth_at)
    rmse = math.sqrt(sum((m - t) ** 2 for m, t in zip(post.mean(), truth_at, strict=True))
                     / len(truth_at))
    assert rmse / span < 2 * 0.05


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_the_estimate_is_not_read_before_min_points(live_server: LiveServer,
                                                    beamline: tuple[Any, ...]) -> None:
    """Below ``min_points`` (10 d = 20 here) the plan does not ask the server for the
    estimate after its batches: the experiment is read once, when the plan starts."""
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    route = {"method": "GET", "route": "/api/v1/experiments/{experiment_id}", "status": "2xx"}
    metrics = live_server.service.metrics.registry
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-early")
        before = metrics.get_sample_value("beamsteer_http_requests_total", route) or 0.0
        RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=8, batch=4,
                                      target_error=0.5, reduce=lambda r: {"intensity": r["det"]}),
                      lambda name, doc: docs.append((name, doc)))
        reads = metrics.get_sample_value("beamsteer_http_requests_total", route) - before
    assert reads == 1
    assert docs[-1][1]["reason"] == "max_points 8 measured"


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_asking_ahead_asks_while_the_last_position_is_measured(
        live_server: LiveServer, beamline: tuple[Any, ...]) -> None:
    """With ``ask_ahead`` each ask reaches the server before the measurement at the
    position asked for before it, which is pending then (so the server knew where it was
    being measured); every point is still stored, with its event, and nothing is left
    pending."""
    x, y, det = beamline
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-ahead")
        RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=9,
                                      reduce=lambda r: {"intensity": r["det"]},
                                      ask_ahead=True))
        sugs, told = asked_and_told(client, exp, 9)
    for k in range(1, 9):
        assert sugs[k].created_at < told[k - 1].created_at
        if k >= 2:  # the one before that was told before this ask (one point behind)
            assert told[k - 2].created_at < sugs[k].created_at


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_asking_ahead_a_refused_tell_fails_the_run_and_abandons_what_was_asked(
        live_server: LiveServer, beamline: tuple[Any, ...]) -> None:
    """A tell the server refuses while the beamline moves on (the experiment was closed
    meanwhile) fails the run at the next batch with the server's error; what was asked
    ahead is not measured."""
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-closed")
        n = 0

        def reduce(r: dict[str, Any]) -> dict[str, float]:
            nonlocal n
            n += 1
            if n == 3:  # once the first two points are in (their posts run in the
                while client.get_experiment(exp).n_measurements < 2:  # background)
                    time.sleep(0.01)
                client.set_status(exp, "closed")
            return {"intensity": r["det"]}

        with pytest.raises(BeamsteerError) as info:
            RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=10,
                                          reduce=reduce, ask_ahead=True),
                          lambda name, doc: docs.append((name, doc)))
        stored = client.measurements(exp)
    assert info.value.status == 409
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "fail"
    assert [m.metadata["seq_num"] for m in stored] == [1, 2]
    assert n <= 4  # at most one more position read after the refused tell


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_point_the_server_refuses_fails_the_run_and_leaves_nothing_pending(
        live_server: LiveServer, beamline: tuple[Any, ...], ahead: bool) -> None:
    """A reading the server refuses (an output the experiment does not have: 422) fails
    the run with the server's message; its suggestion, and any asked ahead, are abandoned
    rather than left pending until they expire."""
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-refused")
        with pytest.raises(BeamsteerError, match="bogus") as info:
            RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=5,
                                          reduce=lambda r: {"intensity": r["det"], "bogus": 1.0},
                                          ask_ahead=ahead),
                          lambda name, doc: docs.append((name, doc)))
        sugs = client.suggestions(exp)
        assert client.measurements(exp) == []
    assert info.value.status == 422
    assert docs[-1][1]["exit_status"] == "fail"
    assert {s.status for s in sugs} == {"abandoned"}
    # asking ahead, the refusal is seen at the next batch, or at the one after if the
    # tell was still on its way then (one more position read)
    assert len(sugs) in ((2, 3) if ahead is True else (1,))  # "auto": the first in turn


def test_asking_ahead_asks_at_the_latest_position_that_hides_the_ask() -> None:
    """The next batch is asked at the last position of a batch while asks are quicker than
    a point; when an ask takes longer (0.5 s against 0.2 s per point), at the latest
    position from which the rest of the batch outlasts it."""
    scan = _Scan(client=None, exp=None, motor_of={}, devices=[],  # type: ignore[arg-type]
                 reduce=dict, max_points=100, batch=6, target_std=None, target_error=None,
                 trust_from=20, max_bad_readings=3, ask_ahead=True)
    left = [None] * 6

    def first_asked_with() -> int:  # positions left, the one being measured included
        return next(n for n in range(6, 0, -1) if scan._ask_now(left[:n]))  # type: ignore[arg-type]

    assert first_asked_with() == 1  # nothing timed yet
    scan._ask_s, scan._point_s = 0.015, 0.2
    assert first_asked_with() == 1
    scan._ask_s = 0.5
    assert first_asked_with() == 3  # 3 x 0.2 s >= 1.2 x 0.5 s > 2 x 0.2 s
    scan._ask_s = 5.0
    assert first_asked_with() == 6  # as early as it can: the batch has just come


@pytest.mark.parametrize("value", [0, 1, "yes", None, "AUTO"])
def test_ask_ahead_is_true_false_or_auto(value: Any) -> None:
    """Anything else is refused when the plan starts, before it calls the server (0 and 1
    compare equal to False and True, but would start the plan's thread or not by accident)."""
    plan = autonomous_scan([], [], None, "e", max_points=3,  # type: ignore[arg-type]
                           reduce=dict, ask_ahead=value)
    with pytest.raises(ValueError, match="ask_ahead must be True, False or 'auto'"):
        next(plan)


def test_auto_asks_ahead_while_waiting_would_cost_more_than_a_share_of_the_beamtime(
        ) -> None:
    """``ask_ahead="auto"``: ahead once the last post, stop check and ask, as timed (or
    the last wait in turn, if longer), add up to more than ``AUTO_SHARE`` (5%) of a
    batch's moving and reading; undecided until they and a point are timed."""
    scan = _Scan(client=None, exp=None, motor_of={}, devices=[],  # type: ignore[arg-type]
                 reduce=dict, max_points=100, batch=1, target_std=None, target_error=None,
                 trust_from=20, max_bad_readings=3, ask_ahead="auto")
    assert scan._ahead_now() is None  # nothing timed yet: decided at each position
    scan._ask_s, scan._point_s = 0.010, 0.2
    assert scan._ahead_now() is None  # no post timed yet
    scan._tell_s, scan._check_s = 0.008, 0.002  # a wait of 20 ms per batch
    assert scan._ahead_now() is True  # 10% of the first point's 200 ms
    scan._point_s, scan._mean_point_s = 10.0, 0.2  # a batch done: its mean counts
    assert scan._ahead_now() is True
    scan._mean_point_s = 1.0
    assert not scan._ahead_now()  # 2% of a 1 s point
    scan._mean_point_s, scan.batch = 0.11, 4
    assert not scan._ahead_now()  # 4.5% of a batch of 4 x 110 ms
    scan._mean_point_s = 0.09
    assert scan._ahead_now()  # 5.6% of 4 x 90 ms
    scan._mean_point_s = 0.1
    scan._turn_s = 0.030  # the last wait in turn, longer than the calls say
    assert scan._ahead_now()  # 30 ms: 7.5% of 4 x 100 ms
    scan._turn_s, scan._mean_point_s = 0.010, 0.11
    assert not scan._ahead_now()  # the calls' 20 ms: 4.5% of 4 x 110 ms
    scan._mean_point_s = 0.0  # a clock too coarse to time a point: any wait counts
    assert scan._ahead_now()
    scan.ask_ahead = False
    assert not scan._ahead_now()
    scan.ask_ahead, scan._mean_point_s = True, 100.0
    assert scan._ahead_now()


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_auto_switches_between_asking_ahead_and_in_turn_within_a_scan(
        live_server: LiveServer, beamline: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``"auto"`` with motors that move at once (a point takes milliseconds, the server's
    calls more than 5% of that): the first ask after a point in turn, then ahead; with
    the share raised after the 4th reading (as if the beamline now counted for minutes)
    in turn, and ahead again once it is 0 after the 7th. Every switch is logged, every
    point is stored with its event, nothing stays pending."""
    x, y, det = beamline
    readings: list[float] = []

    def reduce(r: dict[str, Any]) -> dict[str, float]:
        readings.append(r["det"])
        if len(readings) == 4:
            monkeypatch.setattr("clients.bluesky.AUTO_SHARE", 1e9)
        if len(readings) == 7:
            monkeypatch.setattr("clients.bluesky.AUTO_SHARE", 0.0)
        return {"intensity": r["det"]}

    caplog.set_level(logging.INFO, logger="beamsteer.bluesky")
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-auto")
        RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=10,
                                      reduce=reduce))  # ask_ahead="auto", the default
        sugs, told = asked_and_told(client, exp, 10)
    # the k-th ask (0-based) was decided before the k-th point was read
    asked_ahead = [sugs[k].created_at < told[k - 1].created_at for k in range(1, 10)]
    assert asked_ahead == [False, True, True, True, False, False, False, True, True]
    switches = [r.getMessage().split(":")[0] for r in caplog.records
                if r.name == "beamsteer.bluesky"]
    assert switches == ["asking ahead", "asking in turn", "asking ahead"]


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_switch_to_asking_in_turn_reads_the_stop_check_asking_ahead_left(
        live_server: LiveServer, beamline: tuple[Any, ...],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch asked ahead, then one in turn: the check after the first batch (not read
    yet: asking ahead reads a check one batch late) says stop, the check after the second
    says go on (as a ``target_error`` check does while a refit runs). The plan stops on the
    first before it asks again: no batch asked to be abandoned, and the stop document
    gives that check's reason. The decisions and the checks' answers are scripted here;
    the server, the RunEngine and the plan's calls are real."""
    x, y, det = beamline
    decisions = iter([True, False, False, False, False])
    monkeypatch.setattr(_Scan, "_ahead_now", lambda self: next(decisions))
    monkeypatch.setattr("clients.bluesky._good_enough",
                        lambda *args: "stop after 2" if args[-1] == 2 else None)
    docs: list[tuple[str, dict[str, Any]]] = []
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-switch-stop")
        RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=10, batch=2,
                                      reduce=lambda r: {"intensity": r["det"]},
                                      ask_ahead="auto"),
                      lambda name, doc: docs.append((name, doc)))
        sugs = client.suggestions(exp)
    assert docs[-1][1]["reason"] == "stop after 2"
    assert sorted(s.status for s in sugs) == ["measured"] * 4  # asked: batches 1 and 2


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_scan_that_reaches_max_points_says_if_the_map_was_good_enough(
        live_server: LiveServer, beamline: tuple[Any, ...], ahead: bool) -> None:
    """The stop document's reason is the check's when the last batch made the map good
    enough, asking ahead too (its last checks are read when the scan ends)."""
    x, y, det = beamline
    docs: list[tuple[str, dict[str, Any]]] = []
    with Client(live_server.url) as client:
        exp = client.create_experiment(SPEC, name="bluesky-last-check")
        readings: list[float] = []

        def reduce(r: dict[str, Any]) -> dict[str, float]:
            if len(readings) == 4:  # the first fit is done before the second batch ends
                client.wait_for_fit(exp)
            readings.append(r["det"])
            return {"intensity": r["det"]}

        RunEngine({})(autonomous_scan([det], [x, y], client, exp.id, max_points=8, batch=4,
                                      target_std=1e9, reduce=reduce, ask_ahead=ahead),
                      lambda name, doc: docs.append((name, doc)))
        n = client.get_experiment(exp).n_measurements
    assert n in ((8,) if ahead is True else (4, 8))  # "auto": as the fit's wait decides
    assert docs[-1][1]["reason"].startswith("largest posterior std")
