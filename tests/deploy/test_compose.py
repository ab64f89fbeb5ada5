"""docker-compose.yml: valid by the Compose Specification, secrets required, healthchecks,
and only settings the service knows.

No Docker engine runs here. The schema test uses the specification's JSON schema
(``compose-spec.json``, see README.md beside it); where a ``docker-compose`` binary is on
PATH (v2, which parses and validates without an engine), ``config`` checks the file too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from server.settings import Settings
from tests.deploy.files import (
    COMPOSE_FILE,
    DOCKERFILES,
    ROOT,
    MissingVariable,
    compose_text_without_comments,
    healthcheck_cmd,
    interpolate,
    load_compose,
    references,
    stages,
)

SCHEMA = Path(__file__).with_name("compose-spec.json")
SECRETS = {"POSTGRES_PASSWORD": "pg-secret-1", "REDIS_PASSWORD": "redis-secret-2"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as compose sees it: YAML, then interpolated with the secrets set."""
    resolved: dict[str, Any] = interpolate(load_compose(), dict(SECRETS))
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def test_valid_by_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_mistakes(compose: dict[str, Any]) -> None:
    """The check above would fail on a typical slip (a misspelt key, a wrong type)."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_on"]["redis"]["conditon"] = "service_healthy"
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"] = "gpu"
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert len(errors) == 2


def _docker_compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if r.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    cmd = _docker_compose()
    if cmd is None:
        pytest.skip("no docker compose v2 on PATH (the schema test above still ran)")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **SECRETS}
    base = [*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
    for profile in ([], ["--profile", "cpu"]):
        r = subprocess.run([*base, *profile, "config", "-q"], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([*base, "config", "-q"], env={"PATH": os.environ["PATH"]},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "REDIS_PASSWORD" in r.stderr + r.stdout


def test_secrets_are_required_never_defaulted() -> None:
    refs = references(compose_text_without_comments())
    secrets = [(name, op) for name, op in refs if SECRET_NAME.search(name)]
    assert {name for name, _ in secrets} == set(SECRETS)
    assert all(op == ":?" for _, op in secrets), secrets
    for missing in SECRETS:
        env = {k: v for k, v in SECRETS.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            interpolate(load_compose(), env)
        with pytest.raises(MissingVariable, match=missing):  # set but empty counts as unset
            interpolate(load_compose(), {**env, missing: ""})


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name


def test_api_waits_for_healthy_redis_and_postgres(services: dict[str, Any]) -> None:
    assert services["api"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"}}
    for worker in ("worker", "worker-cpu"):
        assert services[worker]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_api_healthcheck_is_the_images(services: dict[str, Any]) -> None:
    """The compose healthchecks repeat the images' own, so both report the same thing."""
    api = stages(DOCKERFILES["api"])[-1]
    worker = stages(DOCKERFILES["worker"])[-1]
    assert services["api"]["healthcheck"]["test"] == ["CMD", *healthcheck_cmd(api)]
    for name in ("worker", "worker-cpu"):
        assert services[name]["healthcheck"]["test"] == ["CMD", *healthcheck_cmd(worker)]


def test_store_and_queue_urls_point_at_the_stack(services: dict[str, Any]) -> None:
    env = services["api"]["environment"]
    assert env["BEAMSTEER_DATABASE_URL"] == (
        f"postgresql://beamsteer:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/beamsteer")
    assert env["BEAMSTEER_REDIS_URL"] == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"
    assert env["BEAMSTEER_HOST"] == "0.0.0.0"
    pg = services["postgres"]["environment"]
    assert (pg["POSTGRES_USER"], pg["POSTGRES_DB"]) == ("beamsteer", "beamsteer")
    for name in ("worker", "worker-cpu"):
        assert services[name]["environment"]["BEAMSTEER_REDIS_URL"] == (
            env["BEAMSTEER_REDIS_URL"])


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert "redis-data:/data" in redis["volumes"]
    assert "pg-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert set(compose["volumes"]) == {"redis-data", "pg-data"}


def test_published_ports_default_to_loopback(services: dict[str, Any]) -> None:
    """No authentication before issue 8: nothing is reachable from the network by default."""
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["redis"]["ports"] == ["127.0.0.1:6379:6379"]
    assert "ports" not in services["postgres"]


def test_gpu_worker_reserves_a_gpu_and_scales(services: dict[str, Any]) -> None:
    deploy = services["worker"]["deploy"]
    assert deploy["replicas"] == "1"  # ${WORKER_REPLICAS:-1}; compose casts it
    devices = deploy["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "profiles" not in services["worker"]


def test_cpu_worker_is_a_profile_on_the_cpu_image(services: dict[str, Any]) -> None:
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert cpu["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert "resources" not in cpu.get("deploy", {})
    assert services["worker"]["build"]["dockerfile"] == "docker/worker.Dockerfile"
    assert services["api"]["build"]["dockerfile"] == "docker/api.Dockerfile"


def _readme_section(heading: str) -> str:
    """One ``## `` section of the README (the deployment guide lives there)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _beamsteer_variables(text: str) -> set[str]:
    return set(re.findall(r"\bBEAMSTEER_([A-Z0-9_]+)", text))


def test_every_beamsteer_variable_is_a_setting() -> None:
    """Compose, the Dockerfiles and the deployment guide name only settings that exist:
    a misspelt variable would be ignored without a word (``extra="ignore"``)."""
    fields = {name.upper() for name in Settings.model_fields}
    texts = {"docker-compose.yml": COMPOSE_FILE.read_text(),
             **{p.name: p.read_text() for p in DOCKERFILES.values()},
             "README.md#deploying": _readme_section("## Deploying with Docker")}
    used = {name: _beamsteer_variables(text) for name, text in texts.items()}
    assert used["docker-compose.yml"] >= {"DATABASE_URL", "REDIS_URL", "HOST"}
    unknown = {name: sorted(v - fields) for name, v in used.items() if v - fields}
    assert not unknown, f"not in server.settings.Settings: {unknown}"


def test_settings_read_the_compose_environment(services: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The api's environment, read by the real Settings, gives the values meant."""
    for key in list(os.environ):
        if key.startswith("BEAMSTEER_"):
            monkeypatch.delenv(key)
    for key, value in services["api"]["environment"].items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.store_url.startswith("postgresql://beamsteer:")
    assert settings.redis_url is not None and settings.redis_url.endswith("@redis:6379/0")
