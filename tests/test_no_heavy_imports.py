"""The steering core imports no transport or storage library (after tiled's test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("fastapi", "sqlalchemy", "redis", "httpx", "starlette")


def test_steering_imports_no_transport_or_storage() -> None:
    code = (
        "import sys\n"
        "import server.steering, server.steering.engine\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=root, env=env)
