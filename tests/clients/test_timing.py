"""``server_seconds`` reads the server's own time from a reply's ``Server-Timing`` header."""

from __future__ import annotations

import httpx
import pytest

from clients.http import server_seconds


def reply(*timing: str) -> httpx.Response:
    return httpx.Response(200, headers=[("server-timing", t) for t in timing])


def test_the_app_metric_in_seconds() -> None:
    assert server_seconds(reply("app;dur=4.5")) == pytest.approx(0.0045)
    assert server_seconds(reply("app;dur=0")) == 0
    assert server_seconds(reply('app ; desc="the API" ; dur = "12"')) == pytest.approx(0.012)


def test_the_app_metric_among_others() -> None:
    assert server_seconds(reply('db;dur=3, cdn;desc="hit, edge";dur=1, app;dur=20.25')) \
        == pytest.approx(0.02025)
    # two header lines are one list (RFC 9110), and the first app metric counts
    assert server_seconds(reply("proxy;dur=2", "app;dur=7, app;dur=9")) == pytest.approx(0.007)
    assert server_seconds(reply("application;dur=5, app;dur=6")) == pytest.approx(0.006)


def test_no_app_duration_is_none() -> None:
    assert server_seconds(httpx.Response(200)) is None
    assert server_seconds(reply("")) is None
    assert server_seconds(reply("db;dur=3")) is None
    assert server_seconds(reply("app")) is None
    assert server_seconds(reply('app;desc="dur=5"')) is None


@pytest.mark.parametrize("header", ["app;dur=", "app;dur=fast", "app;dur=-1", "app;dur=nan",
                                    "app;dur=inf", ";, ;;", 'app;dur="4'])
def test_a_malformed_duration_is_none(header: str) -> None:
    assert server_seconds(reply(header)) is None
