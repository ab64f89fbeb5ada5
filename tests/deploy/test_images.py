"""The Dockerfiles: stages, user, healthchecks, and entrypoints that are real commands.

No image is built here (no Docker engine). What the images run is checked by running the
same thing outside them: the entrypoint's argv through the real CLI parser and as a
process, the HEALTHCHECK command against it, and the package build from the files the
build context (.dockerignore) lets through.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from clients.cli.main import build_parser
from tests.deploy.files import (
    DOCKERFILES,
    ROOT,
    Stage,
    dockerignore,
    exec_form,
    healthcheck_cmd,
    in_build_context,
    interpolate,
    load_compose,
    stages,
)

SECRETS = {"POSTGRES_PASSWORD": "pg-secret-1", "REDIS_PASSWORD": "redis-secret-2"}


def _image(name: str) -> Stage:
    return stages(DOCKERFILES[name])[-1]


def _image_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def _argv(name: str) -> list[str]:
    """What the image runs with no arguments: ENTRYPOINT + CMD."""
    stage = _image(name)
    return (exec_form(stage.last("ENTRYPOINT")) or []) + (exec_form(stage.last("CMD")) or [])


def _parse(argv: list[str]) -> Any:
    """Parse a ``beamsteer ...`` argv with the real CLI; SystemExit when it is not one."""
    assert argv[0] == "beamsteer", argv
    return build_parser().parse_args(argv[1:])


@pytest.mark.parametrize("name", ["api", "worker"])
def test_multi_stage_non_root_with_healthcheck(name: str) -> None:
    all_stages = stages(DOCKERFILES[name])
    assert len(all_stages) >= 2 and all_stages[0].name == "build"
    image = all_stages[-1]
    user = image.last("USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    assert healthcheck_cmd(image)[0] == "python"
    assert any("--from=build /opt/venv /opt/venv" in c for c in image.all("COPY"))
    # Both build the package from the same sources, weights included (not editable).
    build = all_stages[0]
    copied = {c.split()[0] for c in build.all("COPY")}
    assert copied >= {"pyproject.toml", "server", "models", "clients"}
    installs = [r for r in build.all("RUN") if '"/src[${EXTRAS}]"' in r]
    assert len(installs) == 1 and " -e " not in installs[0]


def test_api_image_has_pinned_cpu_torch() -> None:
    runs = [r for r in stages(DOCKERFILES["api"])[0].all("RUN") if "torch" in r]
    assert runs[0] == ("pip install --index-url https://download.pytorch.org/whl/cpu "
                       "torch==2.13.0")
    assert "torch.__version__ == '2.13.0+cpu'" in runs[1]


def test_worker_image_is_built_on_cuda_torch() -> None:
    text = DOCKERFILES["worker"].read_text()
    assert "ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda" in text
    assert all(s.base == "${TORCH_IMAGE}" for s in stages(DOCKERFILES["worker"]))
    assert "--system-site-packages" in text  # use the base's torch, never a second one


def test_no_unpinned_torch_install() -> None:
    for path in DOCKERFILES.values():
        for stage in stages(path):
            for run in stage.all("RUN"):
                words = run.split()
                assert "torch" not in words, f"{path.name}: unpinned torch in {run!r}"


def test_api_entrypoint_is_beamsteer_serve() -> None:
    assert _argv("api") == ["beamsteer", "serve"]
    assert _parse(_argv("api")).func.__name__ == "serve"


def test_worker_entrypoint_is_beamsteer_worker() -> None:
    assert _argv("worker") == ["beamsteer", "worker", "--device", "auto"]
    _parse(_argv("worker"))


def _service_argv(service: dict[str, Any]) -> list[str]:
    """What a compose service runs: its entrypoint/command, else its image's."""
    image = "worker" if service["build"]["dockerfile"].endswith("worker.Dockerfile") else "api"
    stage = _image(image)
    entrypoint = service.get("entrypoint", exec_form(stage.last("ENTRYPOINT")))
    command = service.get("command", exec_form(stage.last("CMD")) or [])
    return [*entrypoint, *command]


@pytest.mark.parametrize("name", [
    "api",
    "worker",
    "worker-cpu",
])
def test_compose_service_runs_a_beamsteer_command(name: str) -> None:
    service = interpolate(load_compose(), SECRETS)["services"][name]
    argv = _service_argv(service)
    assert argv[0] == "beamsteer"
    _parse(argv)


@pytest.mark.parametrize("command", [
    "serve", "db", "keys", "worker",
])
def test_subcommand_help_exits_zero(command: str) -> None:
    r = subprocess.run([sys.executable, "-m", "clients.cli", command, "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthcheck(stage: Stage, env: dict[str, str]) -> int:
    cmd = healthcheck_cmd(stage)
    cmd = [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.slow
def test_api_entrypoint_serves_and_passes_its_healthcheck(postgres_url: str,
                                                          tmp_path: Path) -> None:
    """The image's entrypoint, with the image's and the compose file's environment, on a
    real PostgreSQL: it migrates, serves, and the image's HEALTHCHECK goes from failing to
    passing. Only what cannot work outside the stack is changed: the database URL, loopback
    instead of all interfaces, a free port, no Redis (the in-process queue)."""
    image = _image("api")
    compose_env = interpolate(load_compose(), SECRETS)["services"]["api"]["environment"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMSTEER_")}
    env.update({k: v for k, v in _image_env(image).items() if k.startswith("BEAMSTEER_")})
    env.update(compose_env)
    port = _free_port()
    env.update(BEAMSTEER_DATABASE_URL=postgres_url, BEAMSTEER_HOST="127.0.0.1",
               BEAMSTEER_PORT=str(port), BEAMSTEER_DATA_DIR=str(tmp_path),
               PYTHONPATH=str(ROOT))
    env.pop("BEAMSTEER_REDIS_URL")
    assert _healthcheck(image, env) != 0  # nothing listens yet

    argv = _argv("api")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", *argv[1:]], env=env,
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while _healthcheck(image, env) != 0:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises it (exit status -SIGTERM).
    text = (tmp_path / "serve.log").read_text()
    assert proc.returncode in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text
    assert "Context impl" not in text  # Alembic's narration stays out of the service log


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                         check=True, timeout=30).stdout.decode()
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


def test_build_context_has_the_package_and_nothing_else() -> None:
    rules = dockerignore()
    context = {p for p in _tracked_files() if in_build_context(p, rules)}
    assert {"pyproject.toml", "README.md"} <= context
    top = {p.split("/")[0] for p in context}
    assert top == {"pyproject.toml", "README.md", "server", "models", "clients"}
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in context)
    for name in ("api", "worker"):  # everything the Dockerfiles COPY is there
        for copy in stages(DOCKERFILES[name])[0].all("COPY"):
            for source in copy.split()[:-1]:
                assert any(p == source or p.startswith(source + "/") for p in context), source


@pytest.mark.slow
def test_package_built_from_the_context_ships_weights_and_migrations(tmp_path: Path) -> None:
    """What ``pip install /src[server]`` in the images installs: a wheel of the build
    context. A probe ``.pt`` stands for the trained weights (models/**/*.pt)."""
    rules = dockerignore()
    src = tmp_path / "src"
    files = [p for p in _tracked_files() if in_build_context(p, rules)]
    for p in files:
        (src / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / p, src / p)
    probe = "models/_probe/net.pt"
    (src / probe).parent.mkdir(parents=True)
    (src / probe).write_bytes(b"weights")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("beamsteer-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    weights = [p for p in files if p.startswith("models/") and p.endswith(".pt")] + [probe]
    migrations = [p for p in files
                  if p.startswith("server/store/migrations/") and p.endswith(".py")]
    assert "server/store/migrations/versions/0001_initial_schema.py" in migrations
    missing = sorted(set(weights + migrations) - shipped)
    assert not missing, f"not in the wheel: {missing}"
