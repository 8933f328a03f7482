"""Echo over streams: the server connection (raw or length-prefixed) and a verifying client."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from netkit.core.buffers import DEFAULT_MAX_FRAME, LengthPrefixedFramer, frame_header
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    Setting,
)
from netkit.net.idle import IdleTimer
from netkit.net.protocols import StreamProtocol
from netkit.net.server import ServerConnection


class EchoConnection(ServerConnection):
    """Raw echo: every byte received is written back, straight from the receive buffer."""

    def __init__(self, *, idle_timeout: float | None = None, max_buffer: int = 1 << 20) -> None:
        super().__init__(max_buffer=max_buffer)
        self.idle_timeout = idle_timeout
        self._idle: IdleTimer | None = None

    def on_connect(self) -> None:
        super().on_connect()
        if self.idle_timeout:
            self._idle = IdleTimer(self.idle_timeout, self.close)

    def data_ready(self) -> None:
        if self._idle is not None:
            self._idle.touch()
        self.write(self.rbuf.take())

    def on_close(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        super().on_close(exc)


MAX_FRAME = Setting("max_frame")
FRAME_LIMIT = DEFAULT_MAX_FRAME * 64  # 1 GiB: a frame is buffered whole


def check_max_frame(size: int) -> int:
    """``size`` if it is a usable largest frame for :class:`FramedEchoConnection`.

    Raises:
        ConfigError: below 1 byte or over the 1 GiB limit.
    """
    if not 1 <= size <= FRAME_LIMIT:
        raise ConfigError((MAX_FRAME, f" {size} bytes: give 1 byte to 1 GiB"))
    return size


class FramedEchoConnection(EchoConnection):
    """Length-prefixed echo: whole frames are echoed, header and payload written separately."""

    def __init__(self, *, max_frame: int, idle_timeout: float | None = None) -> None:
        super().__init__(max_buffer=max_frame + 4, idle_timeout=idle_timeout)
        self.framer = LengthPrefixedFramer(max_frame)
        self._draining = False

    def data_ready(self) -> None:
        if self._idle is not None:
            self._idle.touch()
        for payload in self.framer.frames(self.rbuf):
            self.write(frame_header(len(payload)), payload)
        if self._draining and not len(self.rbuf):
            self.close()

    def begin_drain(self) -> None:
        """Close now if between frames, else right after the frame in flight is echoed."""
        self._draining = True
        if not len(self.rbuf):
            self.close()


# --- client ------------------------------------------------------------------------------


@dataclass
class EchoResult:
    """Outcome of one echoed message."""

    seq: int
    size: int
    rtt: float


class EchoClientConnection(StreamProtocol):
    """Sends one message at a time and verifies the echo byte by byte as it arrives."""

    # It must keep reading its echo while its own large write is still buffered.
    pause_reading_on_backpressure = False

    def __init__(self) -> None:
        super().__init__()
        self._expected: bytes = b""
        self._pos = 0
        self._waiter: asyncio.Future[None] | None = None
        self.eof = False

    def expect(self, expected: bytes) -> asyncio.Future[None]:
        """Start waiting for ``expected``; the future resolves when all of it has arrived."""
        self._expected, self._pos = expected, 0
        self._waiter = asyncio.get_running_loop().create_future()
        if len(self.rbuf):
            self.data_ready()
        return self._waiter

    def data_ready(self) -> None:
        view = self.rbuf.view()
        if self._waiter is None or self._waiter.done():
            extra = len(view)
            self.rbuf.consume(extra)
            raise CheckFailed(f"{extra} unexpected bytes arrived from {self.peer}")
        want = self._expected[self._pos : self._pos + len(view)]
        got = view[: len(want)]
        if got != want:
            offset = self._pos + next(i for i in range(len(want)) if got[i] != want[i])
            self._waiter.set_exception(
                CheckFailed(f"echo from {self.peer} differs at byte {offset}")
            )
            self.rbuf.consume(len(view))
            return
        self._pos += len(want)
        self.rbuf.consume(len(want))
        if self._pos == len(self._expected):
            self._waiter.set_result(None)
            if len(self.rbuf):
                self.data_ready()

    def on_eof(self) -> bool | None:
        self.eof = True
        return None

    def on_close(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            got = self._pos
            self._waiter.set_exception(
                self.error
                or ConnectionLost(
                    f"{self.peer} closed the connection after echoing {got} of "
                    f"{len(self._expected)} bytes"
                )
            )


async def echo_once(
    conn: EchoClientConnection, seq: int, payload: bytes, *, framed: bool, timeout: float
) -> EchoResult:
    """Send one message and wait for its verified echo.

    Raises:
        CheckFailed: the echo differs.
        ConnectionLost: the server closed or reset the connection first.
        OperationTimeout: no complete echo within ``timeout``.
    """
    header = frame_header(len(payload)) if framed else b""
    waiter = conn.expect(header + payload if framed else payload)
    start = time.perf_counter()
    if framed:
        conn.write(header, payload)
    else:
        conn.write(payload)
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        raise OperationTimeout(
            f"no complete echo of message {seq} from {conn.peer} within {timeout:g}s"
        ) from None
    except NetkitError:
        raise
    return EchoResult(seq, len(payload), time.perf_counter() - start)
