"""What an application reads and writes on a WebSocket connection, either side:
:class:`MessageInbox` keeps received messages for :meth:`~MessageInbox.receive`, and gives
``send``, ``ping`` (a future for the round-trip time) and ``close_and_wait``.

ws-client's session and the public API's ``WebSocket`` (client connections and the
connections a ``ws_server`` handler gets) read through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from netkit.core.ws.events import Message
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.protocol import State
from netkit.errors import PeerProtocolError
from netkit.net.ws import WebSocketConnection
from netkit.net.zerocopy import Buffer

_OPEN = State.OPEN


class MessageInbox(WebSocketConnection):
    """A WebSocket connection whose messages wait in :attr:`inbox` until read.

    Attributes:
        inbox: ``(is_text, data)`` per received message (:meth:`receive` also says when the
            connection is over).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self._ended = False  # on_closed ran: nothing more will be put in the inbox
        self._wakeup: asyncio.Future[None] | None = None

    def on_message(self, message: Message) -> None:
        # Kept for later: the view is only valid during this call, so this is a copy.
        self.inbox.put_nowait((bool(message.text), bytes(message.data)))
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        self._ended = True
        self._wake()
        if self._pings is not None:
            self._pings.clear()

    async def receive(self) -> tuple[bool, bytes] | None:
        """Wait for the next message, ``(is_text, data)``; None once the connection is closed."""
        while self.inbox.empty():
            if self._ended:
                return None
            self._wakeup = self._loop.create_future()
            await self._wakeup
        return self.inbox.get_nowait()

    def send(self, data: Buffer | str, *, text: bool | None = None) -> bool:
        """Send one message (as :meth:`send_message`); False when no longer OPEN (not sent)."""
        if self.ws.state is not _OPEN:
            return False
        self.send_message(data, text=text)
        return True

    def ping(self, payload: bytes = b"") -> asyncio.Future[float | None]:
        """Send a ping (4 random bytes when ``payload`` is empty).

        Returns:
            A future for the round-trip time in seconds, resolved when the matching pong
            arrives; None if the connection closes first or was not open.
        """
        waiter: asyncio.Future[float | None] = self._loop.create_future()

        def answered(rtt: float | None) -> None:
            if not waiter.done():
                waiter.set_result(rtt)

        if not self.send_ping(payload, answered):
            waiter.set_result(None)
        return waiter

    async def close_and_wait(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait until the connection is gone.

        The closing timeout (:attr:`WSTimeouts.close`) bounds the wait: the connection is
        dropped when the peer does not finish the handshake in time.
        """
        self.start_close(code, reason)
        # Shielded: a caller cancelled while waiting must not cancel the shared future.
        await asyncio.shield(self.closed)
