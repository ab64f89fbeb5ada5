"""A deadline on every wait for a database server's answer, enforced from outside the wait.

A PostgreSQL that stops answering without closing its connections (its process stopped,
so the kernel still acknowledges every packet; or a network black hole) leaves a client
blocked in ``poll()``/``recv()`` until TCP gives up: for a stopped process on a reachable
host, never. No timeout inside the driver covers that portably (psycopg's own arrived only
in 3.3.x), so one daemon thread per process watches the calls in flight and, when one has
waited past its deadline, shuts its socket down: the blocked wait wakes at once and fails
as on a lost connection. The server side sees the connection close and rolls back what it
had not committed.

The module imports no database library; :mod:`server.store.pg` hooks it into psycopg.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# How often the watchdog looks: a hung call fails at most this long after its deadline.
# Ten wake-ups a second cost nothing measurable; finer adds nothing to deadlines of seconds.
CHECK_EVERY_S = 0.1

_local = threading.local()


@contextmanager
def patience(extra_s: float | None) -> Iterator[None]:
    """Within the block, this thread's database calls may take ``extra_s`` seconds more than
    the store timeout (``None``: as long as they take). For waits that are long by design:
    an advisory lock wait that the server bounds itself (``lock_timeout``), migrations."""
    before: float | None = getattr(_local, "extra_s", 0.0)
    _local.extra_s = None if extra_s is None or before is None else before + extra_s
    try:
        yield
    finally:
        _local.extra_s = before


def call_limit(timeout_s: float | None) -> float | None:
    """How long this thread's next call may wait: ``timeout_s`` plus any :func:`patience`,
    or ``None`` for no limit."""
    extra: float | None = getattr(_local, "extra_s", 0.0)
    if timeout_s is None or extra is None:
        return None
    return timeout_s + extra


class Call:
    """One wait on a socket, registered with the watchdog until it ends."""

    __slots__ = ("deadline", "fd", "killed", "limit_s")

    def __init__(self, fd: int, limit_s: float) -> None:
        # A duplicate, so that the watchdog never shuts down another socket that took a
        # number the driver closed meanwhile: it refers to this connection's socket alone.
        self.fd = os.dup(fd)
        self.limit_s = limit_s
        self.deadline = time.monotonic() + limit_s
        self.killed = False


class Watchdog:
    """Shuts down the socket of any registered call that outlives its deadline."""

    def __init__(self, every_s: float = CHECK_EVERY_S) -> None:
        self.every_s = every_s
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the thread does not survive a fork

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[Call] = set()
        self._thread: threading.Thread | None = None

    def enter(self, fd: int, limit_s: float) -> Call:
        """Register a wait on socket ``fd`` that must end within ``limit_s`` seconds."""
        call = Call(fd, limit_s)
        with self._lock:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="beamsteer-db-watchdog",
                                                daemon=True)
                self._thread.start()
        return call

    def leave(self, call: Call) -> bool:
        """Unregister a call; whether the watchdog shut its socket down."""
        with self._lock:
            self._calls.discard(call)
        os.close(call.fd)  # no longer reachable by the watchdog: closed outside the lock
        return call.killed

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            now = time.monotonic()
            with self._lock:
                for call in self._calls:
                    if not call.killed and now >= call.deadline:
                        call.killed = True
                        _shutdown(call.fd)


def _shutdown(fd: int) -> None:
    """Shut a socket down in both directions (without closing the descriptor): a thread
    blocked on it wakes and reads end-of-file, and the peer sees the connection end."""
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already disconnected
        pass
    finally:
        sock.detach()


WATCHDOG = Watchdog()
