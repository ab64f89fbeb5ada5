"""The client's stop rule on the server's map error estimate (``Experiment.map_good_enough``)
and the Bluesky plan's use of it, on experiments as the server sends them."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from clients.http.models import Experiment

SPEC = {"name": "t", "parameters": [{"name": "x", "lower": 0, "upper": 1},
                                    {"name": "y", "lower": 0, "upper": 1}],
        "outputs": [{"name": "I"}, {"name": "J"}], "target": "J"}


def experiment(map_error: dict[str, Any] | None, *, fitted_n: int = 20,
               refitting: bool = False, older: bool = False) -> Experiment:
    out: dict[str, Any] = {"n": 30, "fitted_n": fitted_n}
    if not older:
        out["map_error"] = map_error
    return Experiment.model_validate({
        "id": "e1", "spec": SPEC, "status": "active", "created_at": 0, "updated_at": 0,
        "n_measurements": 30, "n_pending": 0,
        "model": {"n": 30, "refitting": refitting,
                  "outputs": {"I": {"n": 30, "fitted_n": fitted_n, "map_error": None},
                              "J": out}}})


def err(relative: float | None, n: int = 30) -> dict[str, Any]:
    return {"rms_std": 0.1, "measured_range": 5.0, "relative": relative, "n": n}


def test_the_rule_needs_the_estimate_the_points_and_a_settled_model() -> None:
    assert experiment(err(0.02)).map_good_enough(0.02)  # at the threshold: good enough
    assert not experiment(err(0.0201)).map_good_enough(0.02)
    assert experiment(err(0.01, n=20)).map_good_enough(0.02)  # 10 per dimension, d = 2
    assert not experiment(err(0.01, n=19)).map_good_enough(0.02)
    assert experiment(err(0.01, n=5)).map_good_enough(0.02, min_points=5)
    assert not experiment(err(None)).map_good_enough(0.5)  # a constant output: no range
    assert not experiment(None).map_good_enough(0.5)  # no posterior yet
    assert not experiment(err(0.01), refitting=True).map_good_enough(0.02)
    assert experiment(err(0.01)).map_error_min_points == 20


def test_an_older_server_is_recognized() -> None:
    assert experiment(err(0.01)).reports_map_error is True
    assert experiment(None, older=True).reports_map_error is False
    assert experiment(None, older=True, fitted_n=0).reports_map_error is None  # cannot tell


class _OlderServer:
    """What a server from before the estimate answers between batches. The shipped server
    always sends ``map_error``, so this one case cannot be played by it; the plan against
    the real server is in ``test_bluesky.py``."""

    url = "http://beamline:8000"

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp

    def get_experiment(self, _: object) -> Experiment:
        return self.exp


def test_the_plan_warns_when_the_server_cannot_say() -> None:
    pytest.importorskip("bluesky")
    from clients.bluesky import _good_enough

    old = _OlderServer(experiment(None, older=True))
    with pytest.warns(RuntimeWarning, match="reports no map error estimate"):
        assert _good_enough(old, old.exp, None, 0.02, 20, 30) is None  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a server that has not fitted yet: no warning
        early = _OlderServer(experiment(None, older=True, fitted_n=0))
        assert _good_enough(early, early.exp, None, 0.02, 20, 30) is None  # type: ignore[arg-type]
