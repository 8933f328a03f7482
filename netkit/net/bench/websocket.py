"""``netkit bench`` drivers for WebSocket: :class:`WSEcho` compares each echoed message with
the payload; :class:`WSBulk` sends binary messages as fast as the peer reads them."""

from __future__ import annotations

import time

from netkit.core.addresses import WSURL
from netkit.core.bench.plan import LoadPlan
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.events import Message
from netkit.core.ws.protocol import State
from netkit.errors import (
    CheckFailed,
)
from netkit.net.bench.engine import BulkSender, Payload, RequestEngine, Run, Slot, report_close
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection

perf_ns = time.perf_counter_ns


def close_code_error(conn: WebSocketClientConnection) -> tuple[str, str]:
    """(message, kind) for a WebSocket closed by the peer: kind ``closed:CODE``."""
    reason = f": {conn.close_reason}" if conn.close_reason else ""
    return (
        f"{conn.peer} closed the connection with code {conn.close_code}{reason}",
        f"closed:{conn.close_code}",
    )


# --- WebSocket echo -----------------------------------------------------------------------


def _ws_timeouts(plan: LoadPlan) -> WSTimeouts:
    """The load generator's WebSocket timeouts: the plan's for opening, no keepalive pings."""
    return WSTimeouts(open=plan.timeout, close=2.0, ping_interval=None, ping_timeout=None)


def _init_ws_driver(
    conn: WebSocketClientConnection, run: Run, payload: Payload, url: WSURL
) -> None:
    """The connection half of a WebSocket driver's ``__init__`` (echo and bulk alike)."""
    WebSocketClientConnection.__init__(
        conn,
        ClientHandshake.from_url(url),
        max_size=max(payload.size, 1 << 20),
        timeouts=_ws_timeouts(run.plan),
    )


class WSEcho(RequestEngine, WebSocketClientConnection):
    """Echo requests as binary WebSocket messages; each reply is compared with the payload."""

    def __init__(self, run: Run, slot: Slot, payload: Payload, url: WSURL) -> None:
        _init_ws_driver(self, run, payload, url)
        self.init_engine(run, slot)
        self.payload = payload
        self._replies = 0
        self._finishing = False
        self._close_counted = False

    def on_open(self) -> None:
        self.start_requests()

    def on_close_received(self, code: int, reason: str) -> None:
        # The server closed first, mid-run: that is the error, counted now, whenever (or
        # however) the TCP connection ends after it.
        if not self._finishing and not self._close_counted:
            self._close_counted = True
            self._complete_replies()  # echoes that arrived before the close frame count
            cause = close_code_error(self)
            report_close(self.run, cause)
            self.lose_in_flight(cause)

    def transmit(self, n: int) -> None:
        if self.transport is None or self.transport.is_closing() or self.ws.state is not State.OPEN:
            # Failed, or the server is closing (no data after a close frame, RFC 6455 5.5.1):
            # on_close accounts for these requests.
            return
        data = self.payload.data
        for _ in range(n):
            self.ws.send_binary(data)
        self.messages_out += n
        self.flush()
        if self.run.recording:
            self.run.result.bytes_sent += n * len(data)

    def on_message(self, message: Message) -> None:
        if message.data != self.payload.data:
            raise CheckFailed(f"echo from {self.peer} differs from what was sent")
        self._replies += 1

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self._complete_replies()

    def _complete_replies(self) -> None:
        if self._replies:
            n, self._replies = self._replies, 0
            if self.run.recording:
                self.run.result.bytes_received += n * self.payload.size
            self.completed(n)

    def on_close(self, exc: Exception | None) -> None:
        super().on_close(exc)
        cause = self.error or exc or close_code_error(self)
        if not self._close_counted:
            self.report_close(cause)
        self.lose_in_flight(cause)

    def finish(self) -> None:
        """Start the closing handshake at the end of the run."""
        self._finishing = True
        self.stop_timer()
        self.start_close()


class WSBulk(BulkSender, WebSocketClientConnection):
    """Bulk binary messages over WebSocket (to ``ws-server --mode sink`` or an echo)."""

    def __init__(self, run: Run, slot: Slot, payload: Payload, url: WSURL) -> None:
        _init_ws_driver(self, run, payload, url)
        self.run, self.slot, self.chunk = run, slot, payload.data
        self.piece_size = len(self.chunk)  # one message is one write
        self._task = None

    def on_open(self) -> None:
        self.start_bulk()

    def send_chunk(self, n: int) -> None:
        self.send_message(self.chunk)

    def on_message(self, message: Message) -> None:
        if self.run.recording:
            self.run.result.bytes_received += len(message.data)

    def on_close(self, exc: Exception | None) -> None:
        super().on_close(exc)
        self.stop_bulk()
        report_close(self.run, self.error or exc or close_code_error(self))

    def finish(self) -> None:
        """Close at the end of the run."""
        self.stop_bulk()
        self.start_close()
