"""``beamsteer serve`` in a process of its own, for tests that kill or multiply it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.live import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``beamsteer serve`` in its own process."""

    def __init__(self, database_url: str, data_dir: Path, **env: str) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.env = env  # extra environment, e.g. BEAMSTEER_REDIS_URL
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BEAMSTEER_EXPIRY_INTERVAL_S": "3600",
               **self.env}
        log = self.data_dir / f"server-{self.port}.log"
        with open(log, "ab") as err:  # a file, not a pipe: an unread pipe would block logging
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clients.cli", "serve", "--port", str(self.port),
                 "--database-url", self.database_url, "--data-dir", str(self.data_dir),
                 "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
