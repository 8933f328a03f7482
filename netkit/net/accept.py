"""The accept loop every server shares (stream servers and relays).

asyncio's own server logs through ``logging`` when it runs out of file descriptors, and uvloop
accepts and drops clients; this one reports through the command's events instead: on EMFILE,
ENFILE, ENOBUFS or ENOMEM it reports once, stops accepting (clients wait in the backlog, they
are not reset), keeps serving the connections it has, and tries again after a back-off that
doubles up to a second. The first successful accept after that is reported too.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from netkit.net.sockets import describe

OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
BATCH = 64  # accepts per readiness callback, so one busy listener cannot starve the loop
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class Acceptor:
    """Accepts connections on a listening socket and hands each to ``on_connection``.

    Args:
        sock: a non-blocking listening socket.
        on_connection: receives each accepted (non-blocking) socket and the peer's address.
        on_event: receives (event, fields): ``accept_paused`` and ``accept_resumed``.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_connection: Callable[[socket.socket, str], None],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.sock = sock
        self.on_connection = on_connection
        self.on_event = on_event or (lambda _e, _f: None)
        self.loop = asyncio.get_running_loop()
        self.accepting = False
        self.paused_by_error = False
        self.errors = 0
        self._backoff = FIRST_BACKOFF
        self._retry: asyncio.TimerHandle | None = None
        self._unix = sock.family == socket.AF_UNIX

    def start(self) -> None:
        """Start accepting."""
        if not self.accepting and self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.accepting = True

    def stop(self) -> None:
        """Stop accepting (the socket stays open)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.accepting:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False

    def _accept(self) -> None:
        for _ in range(BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                self._recovered()  # nothing waiting, and no resource error: back to normal
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                continue  # ECONNABORTED and the like: that client is already gone
            self._recovered()
            conn.setblocking(False)
            peer = "unix:(client)" if self._unix or not addr else describe(addr)
            self.on_connection(conn, peer)

    def _recovered(self) -> None:
        if self.paused_by_error:
            self.paused_by_error = False
            self._backoff = FIRST_BACKOFF
            self.on_event("accept_resumed", {"errors": self.errors})

    def pause_for(self, exc: OSError) -> None:
        """Out of resources elsewhere (e.g. opening an upstream): pause accepting too."""
        if self.accepting:
            self._pause(exc)

    def _pause(self, exc: OSError) -> None:
        self.errors += 1
        if not self.paused_by_error:
            self.paused_by_error = True
            self.on_event(
                "accept_paused",
                {"error": exc.strerror or str(exc), "errno": exc.errno, "retry_s": self._backoff},
            )
        self.stop()
        self._retry = self.loop.call_later(self._backoff, self._resume)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _resume(self) -> None:
        self._retry = None
        self.start()
        self._accept()  # try now: with an empty backlog no readiness event would tell us
