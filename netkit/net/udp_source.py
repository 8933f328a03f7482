"""The sending side of a sink (``udp-echo serve --mode sink``) for reverse bitrate tests
(``netkit bench udp://... -b RATE --reverse``, as ``iperf3 -u -R``): :class:`ReverseSources`
answers REVERSE and STOP requests (:mod:`netkit.core.bench.bitrate`) and runs one paced
:class:`ReverseSource` per client.

A sink only sends to an address that proved it receives there: the first REVERSE is answered
with a cookie derived from the address, and only a REVERSE that carries it starts a test (a
forged source address never sees its cookie). A test goes on only while its client resends
the REVERSE (every :data:`KEEPALIVE_S` at most), stops after :data:`MAX_SECONDS` whatever the
client says, and at most :data:`MAX_SOURCES` run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections import OrderedDict
from typing import Any

from netkit.core.bench.bitrate import PACING_TIMER_S, Control, ControlKind, cookie_for
from netkit.core.bench.plan import Pacing
from netkit.core.probe import HEADER_SIZE, make_probe
from netkit.net.datagram import MAX_UDP_PAYLOAD
from netkit.net.sockets import describe

perf_ns = time.perf_counter_ns

# A test stops when its client has not resent its REVERSE for this long.
KEEPALIVE_S = 1.0
# ... and after this long whatever the client says.
MAX_SECONDS = 600.0
# Tests a sink runs at once; more are answered UNKNOWN.
MAX_SOURCES = 16
# Finished tests whose count a sink keeps, to answer a resent STOP.
MAX_FINISHED = 1024
# Datagrams sent at most in one go when a test is behind its schedule.
MAX_BURST = 1024


class ReverseSource:
    """One reverse test: probes paced at ``bitrate`` to ``addr`` until stopped.

    Attributes:
        sent: data datagrams sent, or dropped on purpose (``drop_every``): the count the
            client is told, so that its loss is exact.
        done: set when the test ended (stopped, idle, or too long).
    """

    def __init__(
        self,
        sock: socket.socket,
        addr: tuple[Any, ...],
        token: int,
        pacing: Pacing,
        size: int,
        drop_every: int,
    ) -> None:
        self.sock = sock
        self.addr = addr
        self.token = token
        self.pacing = pacing
        self.size = size
        self.drop_every = drop_every
        self.sent = 0
        self.dropped = 0
        self.alive_ns = perf_ns()
        self.done = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def keep_alive(self) -> None:
        """The client resent its REVERSE: the test goes on."""
        self.alive_ns = perf_ns()

    def stop(self) -> None:
        """End the test now."""
        self._task.cancel()
        self.done.set()

    async def _run(self) -> None:
        start = perf_ns()
        keepalive_ns, limit_ns = int(KEEPALIVE_S * 1e9), start + int(MAX_SECONDS * 1e9)
        try:
            while (now := perf_ns()) < limit_ns and now - self.alive_ns < keepalive_ns:
                due = min(self.pacing.due_by(start, now) - self.sent, MAX_BURST)
                blocked = False
                for _ in range(max(0, due)):
                    if not self._send_one():
                        blocked = True
                        break
                wait = (self.pacing.due_at(start, self.sent) - perf_ns()) / 1e9
                if blocked or wait > 0:  # a full buffer: a moment, then on
                    await asyncio.sleep(max(wait, PACING_TIMER_S))
                else:
                    await asyncio.sleep(0)
        finally:
            self.done.set()

    def _send_one(self) -> bool:
        seq = self.sent
        if self.drop_every and (seq + 1) % self.drop_every == 0:
            self.sent += 1
            self.dropped += 1
            return True
        try:
            self.sock.sendto(make_probe(seq, perf_ns(), self.size), self.addr)
        except OSError:
            return False  # a full buffer, or the client went: try again on the next round
        self.sent += 1
        return True


class ReverseSources:
    """The reverse tests of one sink: REVERSE and STOP requests in, answers out.

    Args:
        sock: the sink's socket (answers and test datagrams leave from it).
        drop_every: skip sending every Nth datagram of each test (counted as sent).
    """

    def __init__(self, sock: socket.socket, drop_every: int = 0) -> None:
        self.sock = sock
        self.drop_every = drop_every
        self.running: dict[tuple[Any, ...], ReverseSource] = {}
        self.finished: OrderedDict[tuple[Any, ...], tuple[int, int]] = OrderedDict()
        self._secret = secrets.token_bytes(16)

    def request(self, control: Control, addr: tuple[Any, ...]) -> Control:
        """The answer to a REVERSE or STOP from ``addr``."""
        token = control.token
        if control.kind is ControlKind.STOP:
            return self._stop(token, addr)
        cookie = cookie_for(self._secret, describe(addr), token)
        if control.cookie != cookie:
            return Control(ControlKind.COOKIE, token, cookie=cookie)
        source = self.running.get(addr)
        if source is not None and source.token == token and not source.done.is_set():
            source.keep_alive()
            return Control(ControlKind.STARTED, token)
        self._reap()
        finished = self.finished.get(addr)
        if finished is not None and finished[0] == token:
            return Control(ControlKind.UNKNOWN, token)  # over: a late REVERSE never restarts it
        size = control.size
        if len(self.running) >= MAX_SOURCES or not HEADER_SIZE <= size <= MAX_UDP_PAYLOAD:
            return Control(ControlKind.UNKNOWN, token)
        if source is not None:
            self._finish(addr, source)
        pacing = Pacing.for_connection(max(1, control.bitrate) / (size * 8), 0, 1)
        self.running[addr] = ReverseSource(self.sock, addr, token, pacing, size, self.drop_every)
        return Control(ControlKind.STARTED, token)

    def _stop(self, token: int, addr: tuple[Any, ...]) -> Control:
        source = self.running.get(addr)
        if source is not None and source.token == token:
            self._finish(addr, source)
        known = self.finished.get(addr)
        if known is None or known[0] != token:
            return Control(ControlKind.UNKNOWN, token)
        return Control(ControlKind.STOPPED, token, sent=known[1])

    def _finish(self, addr: tuple[Any, ...], source: ReverseSource) -> None:
        source.stop()
        self.running.pop(addr, None)
        self.finished[addr] = (source.token, source.sent)
        self.finished.move_to_end(addr)
        while len(self.finished) > MAX_FINISHED:
            self.finished.popitem(last=False)

    def _reap(self) -> None:
        """Forget the tests that ended on their own (idle or too long), keeping their count."""
        for addr, source in list(self.running.items()):
            if source.done.is_set():
                self._finish(addr, source)

    def close(self) -> None:
        """Stop every test."""
        for source in self.running.values():
            with contextlib.suppress(Exception):
                source.stop()
        self.running.clear()
