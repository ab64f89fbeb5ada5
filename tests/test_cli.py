"""The command line: help texts list what an operator needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clients.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_serve_help_lists_the_knobs() -> None:
    r = _run("serve", "--help")
    assert r.returncode == 0, r.stderr
    for opt in ("--host", "--port", "--data-dir", "--database-url", "--redis-url",
                "--log-level"):
        assert opt in r.stdout


def test_top_level_help_and_version() -> None:
    r = _run("--help")
    assert r.returncode == 0 and "serve" in r.stdout
    v = _run("--version")
    assert v.returncode == 0 and v.stdout.startswith("beamsteer ")
    assert _run().returncode == 2
