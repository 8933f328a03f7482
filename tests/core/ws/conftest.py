"""Shared fixtures for the WebSocket codec tests: a client and a server protocol in memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import Event
from netkit.core.ws.frames import Side
from netkit.core.ws.protocol import Protocol


class ConnectionPair:
    """A client and a server :class:`Protocol` wired back to back (after h11's ConnectionPair).

    ``send(side)`` moves everything ``side`` has queued to the other side and returns the
    events the other side produced.
    """

    def __init__(self, deflate: DeflateParams | None = None, max_size: int | None = 1 << 20):
        self.client = Protocol(Side.CLIENT, deflate=deflate, max_size=max_size)
        self.server = Protocol(Side.SERVER, deflate=deflate, max_size=max_size)

    def peer(self, proto: Protocol) -> Protocol:
        return self.server if proto is self.client else self.client

    def send(self, proto: Protocol) -> list[Event]:
        other = self.peer(proto)
        for buf in proto.data_to_send():
            other.receive_data(buf)
        return other.events_received()

    def wire(self, proto: Protocol) -> bytes:
        """Return (and drain) what ``proto`` would send, joined, for assertions on bytes."""
        return b"".join(bytes(b) for b in proto.data_to_send())


@pytest.fixture
def pair() -> ConnectionPair:
    return ConnectionPair()


@pytest.fixture
def make_pair() -> Callable[..., ConnectionPair]:
    return ConnectionPair
