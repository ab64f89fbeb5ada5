"""Run the service on a free loopback port: under uvicorn in a background thread
(:class:`LiveServer`), or as ``beamsteer serve`` in a child process (:class:`ServeProcess`).

For tests and benchmarks that need a real server over HTTP and websocket. Importing this
module loads no service stack (torch); :class:`LiveServer` does when it is made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
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
        import uvicorn  # here: ServeProcess and free_port need no service stack (torch)

        from server.app import create_app

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
    the block ends, then stops the child (terminate, kill after ``stop_timeout``); tests
    that kill or restart it call :meth:`start`, :meth:`kill` and :meth:`stop` (a restart
    keeps the port). The child inherits this process's environment (BLAS threads, and any
    ``BEAMSTEER_*`` setting, such as ``BEAMSTEER_LOOKAHEAD``) plus ``env``, except that its
    store is ``database_url`` (by default the SQLite file ``data_dir/beamsteer.db``) and its
    torch threads are ``torch_threads`` (unless ``None``). Its log is appended to ``log``
    (default ``data_dir/serve.log``; a file: a pipe that nobody reads would fill during a
    long run and block the child); a child that exits or does not answer ``/health`` within
    ``start_timeout`` seconds is stopped and raises with the log's tail.

    Args:
        data_dir: The server's data directory (its SQLite store, its log).
        torch_threads: ``BEAMSTEER_TORCH_THREADS`` of the child (``None``: inherited).
        database_url: Another store (e.g. PostgreSQL) instead of the SQLite file.
        env: More environment for the child (e.g. ``BEAMSTEER_REDIS_URL``).
        log: The log file (several children may share a data directory).
        log_level: The child's ``--log-level`` (``None``: its settings decide).
        start_timeout: Seconds to wait for the first healthy reply.
        stop_timeout: Seconds a stopping child gets before it is killed.
    """

    def __init__(self, data_dir: Path, torch_threads: int | None = 1, *,
                 database_url: str | None = None, env: Mapping[str, str] | None = None,
                 log: Path | None = None, log_level: str | None = "warning",
                 start_timeout: float = 120, stop_timeout: float = 30) -> None:
        self.data_dir = data_dir.resolve()  # the child runs in it: no relative paths
        self.torch_threads = torch_threads
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'beamsteer.db'}"
        self.env = dict(env or {})
        self.log = log or self.data_dir / "serve.log"
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child and wait until it answers ``/health``.

        Raises:
            RuntimeError: It exited, or did not answer in time (it is stopped then).
        """
        path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, **self.env, "PYTHONPATH": path}
        if self.torch_threads is not None:
            env["BEAMSTEER_TORCH_THREADS"] = str(self.torch_threads)
        args = [sys.executable, "-m", "clients.cli", "serve", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--database-url", self.database_url]
        if self.log_level is not None:
            args += ["--log-level", self.log_level]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, cwd=self.data_dir, stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_healthy()
        except BaseException:  # Ctrl-C while it starts too: never leave it running
            self.stop()
            raise

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

    def kill(self) -> None:
        """SIGKILL the child (a crash: nothing is shut down in order)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop the child if it runs: SIGTERM, then SIGKILL after ``stop_timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
