"""Run the service under uvicorn on a free loopback port, in a background thread.

For tests and benchmarks that need a real server over HTTP and websocket in this process.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

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
