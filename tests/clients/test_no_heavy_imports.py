"""``import clients`` (the client and the CLI) stays light enough for a beamline machine:
no torch, no GP libraries, no server stack (after tiled's test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "gpytorch", "botorch", "fastapi", "sqlalchemy", "starlette", "uvicorn",
         "numpy", "pandas", "bluesky", "ophyd")
ROOT = Path(__file__).resolve().parents[2]


def test_client_and_cli_import_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "import clients, clients.http, clients.cli.main\n"
        "import importlib\n"
        "for name in clients.cli.main._COMMANDS:\n"
        "    if name.startswith('clients.'):\n"
        "        importlib.import_module(name)\n"
        "clients.cli.main.build_parser()\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT, env=env)
