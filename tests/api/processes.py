"""``beamsteer serve`` in a process of its own, for tests that kill or multiply it."""

from __future__ import annotations

from pathlib import Path

from server.live import ServeProcess


class ServerProcess(ServeProcess):
    """:class:`~server.live.ServeProcess` with the tests' defaults: the store at
    ``database_url``, torch threads as the environment says, no expiry sweeps during a
    test, and a log of its own (several may share ``data_dir``)."""

    def __init__(self, database_url: str, data_dir: Path, **env: str) -> None:
        super().__init__(data_dir, torch_threads=None, database_url=database_url,
                         env={"BEAMSTEER_EXPIRY_INTERVAL_S": "3600", **env},
                         start_timeout=90, stop_timeout=20)
        self.log = self.data_dir / f"server-{self.port}.log"
