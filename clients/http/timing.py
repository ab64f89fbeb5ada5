"""How long the server itself took over a request, as its ``Server-Timing`` header says.

Every reply of Beamsteer's server carries ``Server-Timing: app;dur=<ms>``: the time from
the request's arrival to the start of the reply. What else the client waited is the
network, the reply's body and the client itself.
"""

from __future__ import annotations

import math
import re

import httpx

#: The metric in which Beamsteer's server states its own time.
APP_METRIC = "app"


def _split(text: str, sep: str) -> list[str]:
    """The non-empty pieces of ``text`` between ``sep`` characters outside quoted strings
    (a ``desc="a, b"`` parameter holds a comma that separates nothing)."""
    return [p.strip() for p in re.findall(rf'(?:"(?:\\.|[^"\\])*"|[^"{sep}])+', text)
            if p.strip()]


def server_seconds(response: httpx.Response) -> float | None:
    """The server's own time of a request, in seconds, from the ``dur`` (milliseconds) of
    the ``app`` metric of the reply's ``Server-Timing`` header.

    The header may hold other metrics, in any order (a proxy may add its own), and the
    metric other parameters (``app;desc="..";dur=4.5``); the first ``app`` metric counts.

    Args:
        response: A reply of Beamsteer's server.

    Returns:
        Seconds, or None when the reply states no such time: no ``Server-Timing`` header
        (a proxy dropped it, or the server is not Beamsteer), no ``app`` metric, or a
        ``dur`` that is missing or not a finite number >= 0.
    """
    header = response.headers.get("server-timing")
    if not header:
        return None
    for metric in _split(header, ","):
        name, *params = _split(metric, ";") or [""]
        if name != APP_METRIC:
            continue
        for param in params:
            key, eq, value = param.partition("=")
            if eq and key.strip().lower() == "dur":
                return _seconds(value.strip().removeprefix('"').removesuffix('"'))
        return None
    return None


def _seconds(ms: str) -> float | None:
    try:
        value = float(ms)
    except ValueError:
        return None
    return value / 1e3 if math.isfinite(value) and value >= 0 else None
