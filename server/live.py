"""Run the service on a free loopback port: under uvicorn in a background thread
(:class:`LiveServer`), or as ``beamsteer serve`` in a child process (:class:`ServeProcess`).

For tests and benchmarks that need a real server over HTTP and websocket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from server.app import create_app
from server.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``with LiveServer(settings) as server:`` serves ``create_app(settings)`` at
    ``server.url`` until the block ends (on ``store`` instead of the settings' store if
    given; closing it is then the caller's)."""

    def __init__(self, settings: Settings, *, store: Any = None) -> None:
        self.settings = settings
        self.app = create_app(settings, store=store)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                log_level="warning", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def service(self) -> Any:
        """The app's steering service (after start-up)."""
        return self.app.state.service


# The folder that holds the ``server`` package: the child imports the same code as this
# process, whatever the working directory or the installed copy.
_ROOT = Path(__file__).resolve().parents[1]


class ServeProcess:
    """``beamsteer serve`` in a child process, on SQLite in ``data_dir``: the server as it
    is deployed, with an interpreter (and GIL) of its own, not shared with its clients.

    ``with ServeProcess(data_dir, torch_threads) as server:`` serves at ``server.url`` until
    the block ends, then stops the child (terminate, kill after 30 s). The child inherits
    this process's environment (BLAS threads, and any ``BEAMSTEER_*`` setting, such as
    ``BEAMSTEER_LOOKAHEAD``), except that its store is ``database_url`` (by default the
    SQLite file ``data_dir/beamsteer.db``) and its torch threads are ``torch_threads``.
    Its log goes to ``data_dir/serve.log`` (a file: a pipe that nobody reads would fill
    during a long run and block the child); a child that exits or does not answer
    ``/health`` within ``start_timeout`` seconds is stopped and raises with the log's tail.

    Args:
        data_dir: The server's data directory (its SQLite store, its log).
        torch_threads: ``BEAMSTEER_TORCH_THREADS`` of the child.
        database_url: Another store (e.g. PostgreSQL) instead of the SQLite file.
        start_timeout: Seconds to wait for the first healthy reply.
    """

    def __init__(self, data_dir: Path, torch_threads: int = 1, *,
                 database_url: str | None = None, start_timeout: float = 120) -> None:
        self.data_dir = data_dir.resolve()  # the child runs in it: no relative paths
        self.torch_threads = torch_threads
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'beamsteer.db'}"
        self.start_timeout = start_timeout
        self.log = self.data_dir / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path,
               "BEAMSTEER_TORCH_THREADS": str(self.torch_threads)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clients.cli", "serve", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), "--database-url", self.database_url,
                 "--log-level", "warning"],
                cwd=self.data_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_healthy()
        except BaseException:  # Ctrl-C while it starts too: never leave it running
            self.__exit__()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"beamsteer serve exited ({self.proc.returncode}): "
                                   f"{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"beamsteer serve did not answer /health within "
                           f"{self.start_timeout:g} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the child's log."""
        return self.log.read_text(errors="replace")[-chars:]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
