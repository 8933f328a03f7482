"""netkit's own echo server for ``netkit bench`` without a target: :class:`EmbeddedEchoServer`
runs the shared :class:`~netkit.net.server.StreamServer` in forked worker processes."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from typing import Any

from netkit.core.addresses import TCPEndpoint
from netkit.errors import (
    ConnectError,
)
from netkit.net import runtime
from netkit.net.echo import EchoConnection
from netkit.net.server import Server, StreamServer, make_listener, serve_until_signal
from netkit.net.sockets import (
    listener_address,
    raise_nofile_limit,
)
from netkit.net.streamtest import StreamTestConnection
from netkit.net.workers import describe_exit, fork_worker

perf_ns = time.perf_counter_ns

# --- the embedded echo server ------------------------------------------------------------------


class EmbeddedEchoServer:
    """netkit's own TCP echo server (:class:`~netkit.net.server.StreamServer` serving
    :class:`~netkit.net.echo.EchoConnection`) on 127.0.0.1, for ``netkit bench`` without a
    target. No CLI is involved: the listeners are made here, then ``workers`` forked children
    (:func:`~netkit.net.workers.fork_worker`) serve them, one event loop each, sharing the port
    with SO_REUSEPORT as ``tcp-echo serve --workers N`` does.

    Processes rather than a thread of this one: the server must not share this process's GIL
    with the load it is measured under, it keeps one core per worker, and the bench workers
    fork after it starts, which is only safe from a process with one thread and no event loop.
    Call :meth:`start` before any event loop exists in this process.

    Args:
        workers: how many server processes.
        stream: serve stream tests (``tcp-echo serve --mode stream``) instead of echo.
        drain_timeout: how long :meth:`stop` lets open connections finish.
    """

    def __init__(
        self, *, workers: int = 1, drain_timeout: float = 10.0, stream: bool = False
    ) -> None:
        self.workers = workers
        self.stream = stream  # serve stream tests (tcp-echo serve --mode stream) instead
        self.drain_timeout = drain_timeout
        self.pids: list[int] = []
        self.address = ""

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and return the address it listens on, once every worker serves.

        Raises:
            ConnectError: a worker did not start (why is in the message).
        """
        raise_nofile_limit()
        first = make_listener(TCPEndpoint("127.0.0.1", 0), reuse_port=self.workers > 1)
        socks = [first]
        bound = TCPEndpoint("127.0.0.1", first.getsockname()[1])
        socks += [make_listener(bound, reuse_port=True) for _ in range(self.workers - 1)]
        self.address = listener_address(first)
        ready_fd, ready_w = os.pipe()
        summary_fds: list[int] = []

        def serve(index: int) -> tuple[int, dict[str, Any]]:
            os.close(ready_fd)
            for other, sock in enumerate(socks):
                if other != index:
                    sock.close()

            def listening(_: Server) -> None:
                os.write(ready_w, b"1")
                os.close(ready_w)

            async def main() -> dict[str, Any]:
                factory = StreamTestConnection if self.stream else EchoConnection
                server = StreamServer(socks[index], factory)
                await serve_until_signal(
                    server, drain_timeout=self.drain_timeout, on_listening=listening
                )
                return server.stats.as_dict()

            return 0, runtime.run(main)

        try:
            for index in range(self.workers):
                pid, summary_fd = fork_worker(index, serve, close=summary_fds)
                self.pids.append(pid)
                summary_fds.append(summary_fd)
        finally:
            os.close(ready_w)
            for sock in socks:  # the workers hold them now; bench's own workers must not
                sock.close()
            for fd in summary_fds:
                os.close(fd)
        try:
            self._wait_ready(ready_fd, timeout)
        finally:
            os.close(ready_fd)
        return self.address

    def _wait_ready(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < self.workers:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.stop()
                raise ConnectError(f"the embedded echo server did not start within {timeout:g}s")
            chunk = os.read(fd, 64)
            if not chunk:  # every worker has closed its end: one ended before serving
                codes = self.stop()
                why = next((describe_exit(c) for c in codes if c), "ended before serving")
                raise ConnectError(f"the embedded echo server {why}")
            ready += len(chunk)

    def stop(self) -> list[int]:
        """Stop the workers (SIGTERM; SIGKILL when they have not ended ``drain_timeout`` + 1 s
        later) and return how each ended (``-N``: killed by signal N)."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + 1.0
        codes = []
        for pid in self.pids:
            codes.append(_reap(pid, deadline))
        self.pids = []
        return codes

    def __enter__(self) -> EmbeddedEchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reap(pid: int, deadline: float) -> int:
    """Wait for child ``pid`` until ``deadline`` (monotonic), then SIGKILL it; its exit code."""
    with contextlib.suppress(OSError, AttributeError):  # a pidfd: readable once the child ends
        fd = os.pidfd_open(pid)
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.01)  # no pidfd (Linux before 5.3): poll
