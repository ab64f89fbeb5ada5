"""Small helpers of the fault and load tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], bool | Awaitable[bool]], what: str,
                timeout: float = 30.0, every: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


class FreezableProxy:
    """A TCP proxy from a free loopback port to ``target`` whose traffic can be frozen.

    Frozen, no byte moves in either direction, yet every connection stays open and new
    ones are accepted: what a stopped server (SIGSTOP: its kernel still completes
    handshakes and acknowledges data) or a black-holed network looks like to a client.
    Bytes and end-of-file that arrive meanwhile are held and, on :meth:`thaw`, passed on
    in order (a stopped server that resumes reads what was sent to it).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._trigger: tuple[bytes, bytes] | None = None  # (pattern, after)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    def freeze(self) -> None:
        self._flowing.clear()

    def freeze_on(self, pattern: bytes, *, after: bytes | None = None) -> None:
        """Freeze when a client sends ``pattern`` (e.g. ``b"COMMIT"``) on a connection that
        has sent ``after`` (e.g. a measurement's key, a bound parameter; default: any
        connection); the bytes with ``pattern`` are held with the rest. SQL text is sent
        until psycopg prepares a statement (its 5th run on a connection): trigger on the
        first runs, or on parameters."""
        self._trigger = (pattern, pattern if after is None else after)

    def thaw(self) -> None:
        self._trigger = None
        self._flowing.set()

    def close(self) -> None:
        """Thaw, stop accepting and close every connection."""
        self.thaw()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst, to_server in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, to_server),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        armed = False
        try:
            while data := src.recv(65536):
                trigger = self._trigger if to_server else None
                if trigger is not None:
                    armed = armed or trigger[1] in data
                    if armed and trigger[0] in data:
                        self._trigger = None
                        self.freeze()
                self._flowing.wait()
                dst.sendall(data)
            self._flowing.wait()
            dst.shutdown(socket.SHUT_WR)  # pass the end-of-file on
        except OSError:  # a side reset or the proxy closed: end both
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
