"""A PostgreSQL cluster and a redis-server of a test's own, which it may kill and restart.

The shared servers of ``tests/conftest.py`` must never be stopped; these are started from
the binaries (``initdb``/``pg_ctl``, ``redis-server``) on free ports, with their data and
sockets in a temporary directory, and removed afterwards. PostgreSQL refuses to run as
root, so as root (CI, these VMs) its commands run as the ``postgres`` user via
``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from server.live import free_port


class Unavailable(RuntimeError):
    """The binaries or the user a private server needs are not on this machine."""


def _pg_bindir() -> Path:
    """``$BEAMSTEER_TEST_PG_BINDIR``, the newest ``/usr/lib/postgresql/*/bin``, or the
    directory of ``pg_ctl`` on the PATH."""
    candidates = [os.environ.get("BEAMSTEER_TEST_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit()
                         else 0, reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for c in candidates:
        if c and all((Path(c) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    raise Unavailable("no PostgreSQL binaries (initdb, pg_ctl, postgres): install "
                      "postgresql or set BEAMSTEER_TEST_PG_BINDIR")


class PrivatePostgres:
    """``initdb`` into a temporary directory, then ``start()``/``stop()`` at will.

    Trust authentication on 127.0.0.1 and a socket directory of its own; ``fsync`` stays
    on, so what a commit acknowledged survives ``stop("immediate")`` (a crash).
    """

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self._as_postgres: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("PostgreSQL refuses to run as root and there is no "
                                  "'postgres' user to run it as") from None
            if shutil.which("runuser") is None:
                raise Unavailable("running PostgreSQL as 'postgres' needs runuser")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        # Not pytest's tmp_path: its parents are private to root, and postgres must enter.
        self.root = Path(tempfile.mkdtemp(prefix="beamsteer-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.sockets.mkdir()
        if owner is not None:
            for p in (self.root, self.sockets):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        self.port = free_port()
        self.log = self.root / "postgres.log"
        # --no-sync: the cluster is thrown away after the test; commits still fsync.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-instructions", "--no-sync")

    def _run(self, binary: str, *args: str, timeout: float = 60) -> None:
        cmd = [*self._as_postgres, str(self.bindir / binary), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{binary} failed ({done.returncode}): "
                               f"{done.stdout[-1000:]}{done.stderr[-1000:]}{log}")

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start (or restart after a stop) on the same port; returns once it accepts."""
        # syncfs: after a crash, PostgreSQL first syncs its data directory; file by file
        # (the default) that took 4 s here, one syncfs() call a fraction of that.
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=100 -c recovery_init_sync_method=syncfs")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start", timeout=90)

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` kills every backend at once (a crash: recovery at the next start);
        ``fast`` rolls back open transactions and shuts down cleanly."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        """Create a database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the server if it runs and remove its files."""
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        # In the background: freeing a used cluster's files took seconds here (a disk
        # mounted with "discard"), and nothing waits for it.
        subprocess.run(["sh", "-c", 'rm -rf "$1" >/dev/null 2>&1 &', "sh", str(self.root)],
                       check=False)


def redis_binary() -> str:
    """``$BEAMSTEER_TEST_REDIS_SERVER`` or ``redis-server`` on the PATH."""
    found = os.environ.get("BEAMSTEER_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise Unavailable("no redis-server binary: install redis-server or set "
                          "BEAMSTEER_TEST_REDIS_SERVER")
    return found


class PrivateRedis:
    """A ``redis-server`` on a free port that a test may ``kill()`` and ``start()`` again.

    Args:
        aof: Keep an append-only file (``appendfsync always``) so that what Redis
            acknowledged survives a kill, as docker-compose's Redis does; without it
            (the default) a restart comes back empty.
    """

    def __init__(self, *, aof: bool = False) -> None:
        self.binary = redis_binary()
        self.aof = aof
        self.root = Path(tempfile.mkdtemp(prefix="beamsteer-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start on the same port (and data directory); returns once it answers PING."""
        import redis

        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.aof
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", str(self.root), "--logfile", str(self.root / "redis.log"),
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start: "
                                       + (self.root / "redis.log").read_text()[-2000:])
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        """Kill it and remove its files."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
