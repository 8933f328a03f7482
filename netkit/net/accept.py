"""The accept loop every server shares (stream servers and relays).

asyncio's own server logs through ``logging`` when it runs out of file descriptors, and uvloop
accepts and drops clients; this one reports through the command's events instead: on EMFILE,
ENFILE, ENOBUFS or ENOMEM it reports once, stops accepting (clients wait in the backlog, they
are not reset), keeps serving the connections it has, and tries again when one of them closes
(:meth:`Acceptor.wake`) or after a back-off that doubles up to a second. The first successful
accept after that is reported too.

A server whose clients need more descriptors than the accepted socket (a relay opens its
upstream) passes ``before_accept``: it is asked before every accept, and while it says no the
acceptor pauses the same way. :class:`DescriptorReserve` is what a relay answers with: HAProxy
sizes ``maxconn`` from its descriptor limit so that every client it accepts can open its
server side; a reserve held at run time gives the same promise under any limit.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from netkit.net.sockets import OUT_OF_RESOURCES, describe

BATCH = 64  # accepts per readiness callback, so one busy listener cannot starve the loop
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class Acceptor:
    """Accepts connections on a listening socket and hands each to ``on_connection``.

    Args:
        sock: a non-blocking listening socket.
        on_connection: receives each accepted (non-blocking) socket and the peer's address.
        on_event: receives (event, fields): ``accept_paused`` and ``accept_resumed``.
        before_accept: asked before each accept; an OSError (out of resources) pauses
            accepting, None lets it go on.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_connection: Callable[[socket.socket, str], None],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        *,
        before_accept: Callable[[], OSError | None] | None = None,
    ) -> None:
        self.sock = sock
        self.on_connection = on_connection
        self.on_event = on_event or (lambda _e, _f: None)
        self.before_accept = before_accept
        self.loop = asyncio.get_running_loop()
        self.accepting = False
        self.paused_by_error = False
        self.errors = 0
        self._backoff = FIRST_BACKOFF
        self._retry: asyncio.TimerHandle | None = None
        self._unix = sock.family == socket.AF_UNIX
        # What an accepted socket is, as plain ints (the socket module's properties make
        # enums of them at each access).
        self._family, self._type, self._proto = int(sock.family), int(sock.type), sock.proto

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
            if self.before_accept is not None and (short := self.before_accept()) is not None:
                self._pause(short)
                return
            try:
                # The socket's own accept, without socket.accept()'s enum look-ups.
                fd, addr = self.sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                self._recovered()  # nothing waiting, and no resource error: back to normal
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                continue  # ECONNABORTED and the like: that client is already gone
            self._recovered()
            conn = socket.socket(self._family, self._type, self._proto, fd)
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

    def wake(self) -> None:
        """A connection closed: if paused for lack of resources, try again now."""
        if self.paused_by_error and self._retry is not None:
            self._retry.cancel()
            self._resume()

    def _resume(self) -> None:
        self._retry = None
        self.start()
        self._accept()  # try now: with an empty backlog no readiness event would tell us


class DescriptorReserve:
    """Descriptors held back so that a client already accepted can open what it needs.

    The reserve is filled before an accept (:meth:`fill`) and spent, one descriptor at a time,
    by a socket or pipe that could not be opened otherwise (:meth:`spend`): the slot is freed
    and taken again with no await in between, so nothing else can take it.
    """

    SLACK = 8
    """Descriptors held beyond what is asked, at most."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def __len__(self) -> int:
        return len(self._fds)

    def fill(self, count: int) -> OSError | None:
        """Hold ``count`` descriptors; returns the error when the process cannot.

        Descriptors held beyond ``count`` + :attr:`SLACK` (a burst of clients that has since
        connected) are given back: the reserve keeps little more than the next accept needs,
        without opening and closing one descriptor per client as clients come and go.
        """
        while len(self._fds) > count + self.SLACK:
            os.close(self._fds.pop())
        while len(self._fds) < count:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    return exc
                raise
        return None

    def spend(self, count: int = 1) -> bool:
        """Free ``count`` held descriptors for the caller to reuse at once; False if short."""
        if len(self._fds) < count:
            return False
        for _ in range(count):
            os.close(self._fds.pop())
        return True

    def close(self) -> None:
        """Give every held descriptor back."""
        while self._fds:
            os.close(self._fds.pop())
