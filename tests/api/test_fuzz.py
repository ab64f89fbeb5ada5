"""Schemathesis against the live server's own OpenAPI schema: whatever a client sends,
the server never answers 5xx and every reply conforms to the documented schema.

Bounded (25 cases per operation) so the suite stays fast. A longer run of the same test:
``BEAMSTEER_FUZZ_EXAMPLES=500 pytest tests/api/test_fuzz.py`` (about 20x longer), or
``schemathesis run http://127.0.0.1:8000/openapi.json --max-examples 500`` against any
running server.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import SPEC, LiveServer

EXAMPLES = int(os.environ.get("BEAMSTEER_FUZZ_EXAMPLES", "25"))  # per operation


@pytest.fixture(scope="session")
def fuzz_target(live_server: LiveServer) -> dict[str, str]:
    """The live server's schema, and an experiment with data so that calls reach the core."""
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        exp = c.post("/api/v1/experiments", json={**SPEC, "name": "fuzz-target"}).json()
        c.post(f"/api/v1/experiments/{exp['id']}/measurements", json={"measurements": [
            {"position": {"x": x, "y": y}, "values": {"intensity": x - y}}
            for x in (1, 5, 9) for y in (-4, 0, 4)]})
    return {"url": live_server.url, "experiment_id": exp["id"]}


def test_no_server_errors_and_replies_match_the_schema(fuzz_target: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_target['url']}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance,
              status_code_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for op in operations:
        _fuzz(op.as_strategy(), fuzz_target["experiment_id"], checks)


def _fuzz(strategy: st.SearchStrategy, experiment_id: str, checks: list) -> None:  # type: ignore[type-arg]
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(strategy)
        if case.path_parameters and "experiment_id" in case.path_parameters \
                and data.draw(st.booleans()):
            case.path_parameters["experiment_id"] = experiment_id  # past the 404, to the core
        case.call_and_validate(checks=checks)

    fuzz()
