"""``beamsteer`` client commands, run in a subprocess against the live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients import Client
from tests.clients.conftest import SPEC, LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]

# Each command is a new Python process: run them over one backend (the client layer they
# share is tested over both in test_client.py).
pytestmark = pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in this process (the same code; a process costs ~1 s here)."""
    from clients.cli.main import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def cli(*args: str, url: str | None = None, cwd: Path = ROOT,
        **popen: object) -> subprocess.CompletedProcess[str]:
    """The command line in a subprocess, as a shell runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if url is not None:
        env["BEAMSTEER_URL"] = url
    return subprocess.run([sys.executable, "-m", "clients.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, **popen)  # type: ignore


def test_create_show_suggest_measure_export(live_server: LiveServer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    url = live_server.url
    r = cli("experiments", "list", url=url)  # a real process; the env var names the server
    assert r.returncode == 0 and r.stdout.startswith("ID"), r.stderr
    (tmp_path / "spec.yaml").write_text(
        "name: cli-film\n"
        "parameters:\n"
        "  - {name: x, lower: 0, upper: 10, units: mm, speed: 2}\n"
        "  - {name: y, lower: -5, upper: 5, units: mm}\n"
        "outputs: [{name: intensity}]\n")
    r = run(capsys, "experiments", "create", "--spec", str(tmp_path / "spec.yaml"), "-q",
            "--url", url)
    assert r.returncode == 0, r.stderr
    eid = r.stdout.strip()

    r = run(capsys, "experiments", "list", "--url", url)
    assert r.returncode == 0 and eid in r.stdout and "cli-film" in r.stdout
    assert r.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    r = run(capsys, "experiments", "show", eid, "--url", url, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["spec"]["parameters"][0]["speed"] == 2

    r = run(capsys, "suggest", eid, "-n", "2", "--json", "--url", url)
    assert r.returncode == 0, r.stderr
    sugs = json.loads(r.stdout)
    assert len(sugs) == 2
    r = run(capsys, "suggest", eid, "--url", url)
    assert r.returncode == 0 and "POSITION" in r.stdout

    p = sugs[0]["position"]
    args = ("measure", eid, "--position", f"x={p['x']},y={p['y']}", "--value",
            "intensity=3.1", "--suggestion", sugs[0]["id"], "--key", "cli-1")
    r = run(capsys, *args, "--url", url)
    assert r.returncode == 0 and "stored 1 measurement" in r.stdout, r.stderr
    r = run(capsys, *args, "--url", url)  # the same command again stores nothing new
    assert r.returncode == 0 and "already stored" in r.stdout

    batch = [{"position": {"x": 1, "y": 1}, "values": {"intensity": 1.0}, "key": "b1"},
             {"position": {"x": 2, "y": 1}, "values": {"intensity": 2.0}}]
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    r = run(capsys, "measure", eid, "--file", str(tmp_path / "batch.json"), "--url", url)
    assert r.returncode == 0 and "stored 2" in r.stdout, r.stderr

    out = tmp_path / "m.csv"
    r = run(capsys, "export", eid, "--format", "csv", "-o", str(out), "--url", url)
    assert r.returncode == 0, r.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("seq,x,y,intensity") and len(rows) == 4
    r = run(capsys, "export", eid, "--format", "json", "--url", url)
    assert [m["key"] for m in json.loads(r.stdout)][:2] == ["cli-1", "b1"]

    # what export wrote reads back in: the same file sent again stores nothing new
    r = run(capsys, "measure", eid, "--file", str(out), "--url", url)
    assert r.returncode == 0 and "stored 0 measurements (3 already stored" in r.stdout, r.stderr

    with Client(url) as c:  # the first fit runs in the background
        err = c.wait_for_fit(eid).map_error
    assert err is not None
    r = run(capsys, "experiments", "show", eid, "--url", url)
    assert r.returncode == 0 and (f"estimated map error of intensity: {err.rms_std:.4g} rms, "
                                  f"{err.relative:.2%} of the measured range (on 3 points)"
                                  ) in r.stdout, r.stdout

    r = run(capsys, "experiments", "close", eid, "--url", url)
    assert r.returncode == 0 and "closed" in r.stdout


def test_exit_codes(live_server: LiveServer, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    url = live_server.url
    with Client(url) as c:
        eid = c.create_experiment(SPEC).id
    r = cli("measure", eid, "--position", "x=11,y=0", "--value", "intensity=1", url=url)
    assert r.returncode == 1 and "position.x" in r.stderr  # refused: names the field
    r = run(capsys, "experiments", "show", "nope", "--url", url)
    assert r.returncode == 1 and "404" in r.stderr
    r = run(capsys, "measure", eid, "--position", "x=one", "--value", "intensity=1", "--url", url)
    assert r.returncode == 2 and "not a number" in r.stderr
    r = run(capsys, "--url", url, "--json", "experiments", "show", eid)  # options first
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == eid
    r = run(capsys, "measure", eid, "--position", "x=1,y=0", "--value", "intensity=nan",
            "--url", url)
    assert r.returncode == 1 and "refused (not sent)" in r.stderr and "finite" in r.stderr
    r = run(capsys, "experiments", "create", "--spec", str(tmp_path / "missing.json"))
    assert r.returncode == 2
    assert cli("suggest", url=url).returncode == 2  # argparse: missing ID
    r = cli("experiments", "list", url=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3 and "no reply" in r.stderr


def test_watch(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(live_server.url) as c:
        eid = c.create_experiment(SPEC).id
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BEAMSTEER_URL": live_server.url}
        proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "watch", eid, "--count",
                                 "3", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            hello = json.loads(proc.stdout.readline())  # connected: now make things happen
            assert hello["type"] == "hello"
            sug = c.suggest(eid, 1)[0]
            c.measure(eid, sug.position, {"intensity": 1.0}, suggestion=sug)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert [json.loads(line)["type"] for line in out.splitlines()] == [
        "suggestions", "measurements"]
    r = run(capsys, "watch", eid, "--count", "1", "--url", live_server.url)
    assert r.returncode == 0 and f"following {eid}" in r.stdout
    t0 = time.monotonic()
    r = run(capsys, "watch", eid, "--idle", "0.3", "--url", live_server.url)
    assert r.returncode == 0 and time.monotonic() - t0 < 30
