"""The splice path of the relay: socket → pipe → socket with ``os.splice`` (Linux).

Used for plain TCP/Unix on both sides with no data faults. Each direction copies its first
:data:`SPLICE_AFTER` bytes through Python (``recv``/``send``: a short exchange costs no pipe
and no splice calls), then splices, and from then on the payload never enters Python
(HAProxy's ``splice-auto``). Each direction is driven by readiness callbacks (the loop's
:class:`~netkit.net.poller.Poller`) and, splicing, takes a pipe from the shared
:data:`PIPES` pool only while bytes are in flight. A direction stops reading while its
destination cannot take more (bounded memory), passes a FIN on as ``shutdown(SHUT_WR)`` once
its pipe is empty, and counts every byte in its :class:`~netkit.core.flow.Flow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable

from netkit.core.flow import Flow, RelayRecord
from netkit.net.accept import DescriptorReserve
from netkit.net.poller import poller_for
from netkit.net.sockets import OUT_OF_RESOURCES, force_rst, unsent_bytes

SPLICE_AVAILABLE = hasattr(os, "splice")
PIPE_SIZE = 1 << 20
PIPE_RETRY_S = 0.05  # out of descriptors for a pipe: read again after this long
SPLICE_AFTER = 64 * 1024
"""Bytes each direction copies through Python before it splices (HAProxy's ``splice-auto``:
a short exchange costs no pipe; a pipe pays off once a connection carries bulk)."""
COPY_CHUNK = 64 * 1024


class PipePool:
    """Pipes for splice, shared by every relay in the process (HAProxy keeps one too).

    A direction takes a pipe only while bytes are in flight and gives it back once drained,
    so idle relays hold no pipe: ten thousand open relays do not cost forty thousand
    descriptors.
    """

    def __init__(self, max_free: int = 64) -> None:
        self.max_free = max_free
        self._free: list[tuple[int, int]] = []

    def acquire(self, reserve: DescriptorReserve | None = None) -> tuple[int, int]:
        """A (read fd, write fd) pair, non-blocking; raises OSError when out of descriptors.

        Out of descriptors, two held in ``reserve`` are spent on the pipe.
        """
        if self._free:
            return self._free.pop()
        try:
            rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in OUT_OF_RESOURCES or reserve is None or not reserve.spend(2):
                raise
            rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return rfd, wfd

    def release(self, pipe: tuple[int, int]) -> None:
        """Give back an empty pipe."""
        if len(self._free) < self.max_free:
            self._free.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        """Close a pipe (one that may hold bytes)."""
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __len__(self) -> int:
        """Free pipes kept for reuse."""
        return len(self._free)


PIPES = PipePool()


class _SpliceDirection:
    """src → dst for one direction, driven by readiness callbacks: copied through Python for
    its first :data:`SPLICE_AFTER` bytes (``recv``/``send``), through a pipe after that."""

    FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

    def __init__(
        self, relay: SpliceRelay, src: socket.socket, dst: socket.socket, flow: Flow
    ) -> None:
        self.relay, self.src, self.dst, self.flow = relay, src, dst, flow
        self.poll = relay.poll
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.pipe: tuple[int, int] | None = None
        self.copied: memoryview | None = None  # bytes copied in, not all sent on yet
        self.spliced = 0  # bytes taken in through the pipe (the rest were copied)
        self.reading = False
        self.writing = False
        self.done = False
        self.retry: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading:
            self.poll.add_reader(self.src_fd, self._readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.poll.remove_reader(self.src_fd)
            self.reading = False

    def _readable(self) -> None:
        # Nothing is held here (reading stops while bytes wait for dst), so moving from
        # copying to splicing never reorders: the next bytes are still in src's socket.
        if self.flow.received < self.relay.splice_after:
            # Copied through Python (inline: this runs for every short exchange).
            try:
                data = self.src.recv(COPY_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self.relay.failed(exc, from_client=self.flow.up)
                return
            if data and self.copied is None:
                # Straight on when dst takes it all (the usual case); else as held bytes.
                try:
                    sent = self.dst.send(data)
                except OSError:
                    sent = 0  # _flush sends again, and meets the error as it always did
                if sent == len(data):
                    self.flow.passed(sent)
                    return
                self.copied = memoryview(data)[sent:]
                self.flow.took(len(data), held=True)
                if sent:
                    self.flow.gave(sent, held=True)
                self._flush()
                return
            if data:
                self.copied = memoryview(data)
            self._took(len(data))
            return
        if self.pipe is None:
            try:
                self.pipe = PIPES.acquire(self.relay.reserve)
            except OSError as exc:
                # Out of descriptors: the bytes wait in the kernel; try again shortly.
                self._read_off()
                self.relay.out_of_pipes(exc)
                self.retry = self.relay.loop.call_later(PIPE_RETRY_S, self._read_on)
                return
        try:
            n = os.splice(self.src_fd, self.pipe[1], PIPE_SIZE, flags=self.FLAGS)
        except BlockingIOError:
            self._give_back()
            return
        except OSError as exc:
            self.relay.failed(exc, from_client=self.flow.up)
            return
        self.spliced += n
        self._took(n)

    def _took(self, n: int) -> None:
        if n:
            self.flow.took(n, held=True)
            self._flush()
            return
        self.flow.eof = True
        self._flush()
        # Stop reading (EOF stays readable) unless the relay has just ended: then the
        # socket is closed, which takes it out of the poller for free.
        self._read_off()

    def _flush(self) -> None:
        flow = self.flow
        while flow.held:
            try:
                if self.copied is not None:
                    n = self.dst.send(self.copied)
                else:
                    assert self.pipe is not None
                    n = os.splice(self.pipe[0], self.dst_fd, flow.held, flags=self.FLAGS)
            except BlockingIOError:
                # dst is full: stop reading src until what is held has gone (bounded memory).
                self._read_off()
                if not self.writing:
                    self.poll.add_writer(self.dst_fd, self._flush)
                    self.writing = True
                return
            except OSError as exc:
                self.relay.failed(exc, from_client=not flow.up)
                return
            flow.gave(n, held=True)
            if self.copied is not None:
                self.copied = self.copied[n:]
        self.copied = None
        if self.pipe is not None:
            self._give_back()
        if self.writing:
            self.poll.remove_writer(self.dst_fd)
            self.writing = False
        if flow.eof:
            if not self.done:
                self.done = True
                self.relay.half_closed(self)
        elif not self.reading:
            self._read_on()

    def _give_back(self) -> None:
        if self.pipe is not None and not self.flow.held:
            PIPES.release(self.pipe)
            self.pipe = None

    def _quiet(self) -> None:
        # No more callbacks on our sockets.
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self._read_off()
        if self.writing:
            self.poll.remove_writer(self.dst_fd)
            self.writing = False

    def hand_over(self) -> bytes:
        """Stop, and take the bytes held (still counted as held): they go first."""
        self._quiet()
        if self.copied is not None:
            data, self.copied = bytes(self.copied), None
            return data
        if self.pipe is None:
            return b""
        # A copy: these bytes now leave through a transport. The pipe holds exactly
        # flow.held bytes (at most PIPE_SIZE), and nothing else reads it.
        chunks = []
        left = self.flow.held
        while left:
            chunk = os.read(self.pipe[0], left)
            chunks.append(chunk)
            left -= len(chunk)
        PIPES.release(self.pipe)
        self.pipe = None
        return b"".join(chunks)

    def stop(self) -> None:
        """Stop for good: the sockets are about to be closed (which takes them out of the
        poller's set, so they are forgotten rather than unregistered)."""
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self.reading = self.writing = False
        self.poll.closing(self.src_fd)  # (each direction's source: both sockets)
        self.copied = None
        if self.pipe is not None:
            # Bytes still in it were not delivered (and are counted so): never reuse it.
            PipePool.discard(self.pipe)
            self.pipe = None


class SpliceRelay:
    """Relays two connected, non-blocking sockets with ``os.splice``.

    Each direction copies its first ``splice_after`` bytes with ``recv``/``send`` and splices
    the rest (a short exchange never takes a pipe). Readiness comes from the loop's
    :class:`~netkit.net.poller.Poller` (fewer syscalls per socket than ``add_reader``).

    Args:
        client, upstream: the two sockets; the relay owns them and closes both at the end.
        record: where the bytes are counted (its flows) and the end reason is written.
        slow_close: (client→upstream, upstream→client) delays before a FIN is passed on.
        on_exhausted: told when no descriptor was left for a pipe.
        on_end: called once the relay has ended (after :attr:`done` resolves; not when it
            hands over), at once rather than a loop turn later as ``done``'s callbacks are.
        reserve: descriptors a pipe may be made of when the process is out of them.
        splice_after: bytes each direction copies before it splices (0: splice from the
            first byte).
        loop: the running loop, when the caller has it at hand.
    """

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        record: RelayRecord,
        *,
        slow_close: tuple[float, float] = (0.0, 0.0),
        on_exhausted: Callable[[OSError], None] | None = None,
        on_end: Callable[[], None] | None = None,
        reserve: DescriptorReserve | None = None,
        splice_after: int = SPLICE_AFTER,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.poll = poller_for(self.loop)
        self.splice_after = splice_after
        self.client, self.upstream, self.record = client, upstream, record
        self.slow_close = slow_close
        self.on_exhausted = on_exhausted
        self.on_end = on_end
        self.reserve = reserve
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.created = self.loop.time()
        self.began = time.perf_counter()  # for ages (loop.time() is 1 ms coarse under uvloop)
        self.handed_over: tuple[bytes, bytes] | None = None
        self._closing: list[asyncio.TimerHandle] = []
        self.directions = (
            _SpliceDirection(self, client, upstream, record.up),
            _SpliceDirection(self, upstream, client, record.down),
        )
        record.path = "splice"

    @property
    def age(self) -> float:
        """Seconds since the relay was set up."""
        return time.perf_counter() - self.began

    def start(self) -> None:
        """Start moving bytes both ways."""
        for direction in self.directions:
            direction.start()

    def out_of_pipes(self, exc: OSError) -> None:
        """No descriptor for a pipe: tell the server, which stops accepting for a while."""
        if self.on_exhausted is not None:
            self.on_exhausted(exc)

    def half_closed(self, direction: _SpliceDirection) -> None:
        """One direction saw EOF and delivered everything: pass the FIN on."""
        delay = self.slow_close[0 if direction is self.directions[0] else 1]
        if delay:
            self._closing.append(self.loop.call_later(delay, self._shutdown, direction))
        else:
            self._shutdown(direction)

    def _shutdown(self, direction: _SpliceDirection) -> None:
        direction.flow.fin_sent = True
        # Not contextlib.suppress: three calls more, twice per connection.
        try:  # noqa: SIM105
            direction.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        up, down = self.directions
        if up.done and down.done:
            self.finish("closed")

    def hand_over(self) -> bool:
        """Stop splicing and leave both sockets open, for a relay that takes over.

        :attr:`handed_over` gets the bytes each pipe held, (client → upstream, upstream →
        client), still counted as held: the next relay must send them first. A FIN seen and
        not yet passed on (slow close) is left to it too (the flow says which). :attr:`done`
        resolves. False when the relay had already ended.
        """
        if self.done.done():
            return False
        for timer in self._closing:
            timer.cancel()
        try:
            up, down = (direction.hand_over() for direction in self.directions)
        except OSError as exc:  # a pipe that cannot be read: what it held is lost, say so
            self.abort(f"error: {exc.strerror or exc}")
            return False
        self.handed_over = (up, down)
        self.done.set_result(None)
        return True

    @property
    def relaying(self) -> bool:
        """False once handed over: the sockets wait for the relay that takes over."""
        return self.handed_over is None

    def abandon(self, reason: str) -> None:
        """Nothing took over after :meth:`hand_over`: reset both sockets and record ``reason``.

        The bytes handed over were not delivered, and stay counted so.
        """
        for sock in (self.client, self.upstream):
            if sock.fileno() >= 0:
                force_rst(sock)
                sock.close()
        self.record.end = reason

    def failed(self, exc: OSError, *, from_client: bool) -> None:
        """A socket error: reset the other side too and end."""
        who = "client" if from_client else "upstream"
        reason = (
            "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE) else (exc.strerror or str(exc))
        )
        self._reset(self.upstream if from_client else self.client)
        self.finish(f"{reason} by {who}")

    def abort(self, reason: str) -> None:
        """End now with RST on both sides."""
        self._reset(self.client)
        self._reset(self.upstream)
        self.finish(reason)

    def close(self, reason: str) -> None:
        """End now with a FIN on both sides (an idle relay has nothing in flight)."""
        self.finish(reason)

    def _reset(self, sock: socket.socket) -> None:
        # What the kernel still holds for the peer is lost with the RST: not delivered.
        toward = self.record.up if sock is self.upstream else self.record.down
        toward.lost(unsent_bytes(sock))
        force_rst(sock)

    def finish(self, reason: str) -> None:
        """Stop, close both sockets, resolve :attr:`done`."""
        if self.done.done():
            return
        for direction in self.directions:
            direction.stop()
        self.client.close()
        self.upstream.close()
        self.record.end = reason
        self.done.set_result(None)
        for direction in self.directions:
            # Stopped for good: no reference cycle left to wait for the garbage collector
            # (thousands of relays a second end; freed at once they cost no collections).
            del direction.relay
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end()
