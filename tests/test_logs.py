"""The service's log lines, plain and JSON: both carry the ``extra=`` fields that say what
a line is about, and neither carries an API key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from server.logs import configure_logging


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("json_lines", [False, True])
def test_lines_carry_their_fields_and_no_keys(root_restored: None, json_lines: bool,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json_lines=json_lines)
    log = logging.getLogger("beamsteer.test")
    log.info("request", extra={"request_id": "r1", "method": "GET", "status": 404,
                               "path": "/ws?api_key=bsk_secret"})
    log.info("request", extra={"path": "/x\n2026 INFO forged: line"})
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.exception("refit failed", extra={"experiment_id": "e7"})
    lines = capsys.readouterr().err.splitlines()
    assert "bsk_secret" not in "\n".join(lines)
    if json_lines:
        first, forged, second = (json.loads(x) for x in lines[:3])
        assert first["request_id"] == "r1" and first["status"] == 404
        assert forged["path"] == "/x\n2026 INFO forged: line"
        assert second["experiment_id"] == "e7" and "ZeroDivisionError" in second["exc"]
    else:
        assert lines[0].endswith(": request request_id=r1 method=GET status=404 "
                                 "path=/ws?api_key=***")
        assert lines[1].endswith(": request path='/x\\n2026 INFO forged: line'")
        assert lines[2].endswith(": refit failed experiment_id=e7")
        assert lines[3].startswith("Traceback")
