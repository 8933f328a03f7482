"""Pings in flight and the pongs that answer them (RFC 6455 5.5.2, 5.5.3), sans-I/O.

One :class:`PingTracker` per connection serves the keepalive and the application's own
pings alike: each ping is remembered by its payload with the time it was sent and what to
call with the round-trip time when its pong arrives (or with None if the connection closes
first). A pong matches the ping with the same payload (5.5.3: the same application data).
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["PingTracker"]

Answered = Callable[[float | None], None]


class PingTracker:
    """The pings sent and not yet answered, by payload.

    Attributes:
        last_rtt: the round-trip time of the last ping answered, or None.
    """

    __slots__ = ("_sent", "last_rtt")

    def __init__(self) -> None:
        self._sent: dict[bytes, tuple[float, Answered | None]] = {}
        self.last_rtt: float | None = None

    def __len__(self) -> int:
        return len(self._sent)

    def new_payload(self) -> bytes:
        """Four random bytes that no ping in flight carries."""
        while True:
            payload = os.urandom(4)
            if payload not in self._sent:
                return payload

    def sent(self, payload: bytes, at: float, answered: Answered | None = None) -> None:
        """Remember a ping sent at time ``at``; ``answered`` gets the round-trip time."""
        self._sent[payload] = (at, answered)

    def pong(self, payload: bytes, at: float) -> float | None:
        """A pong arrived at time ``at``: the round-trip time of its ping, or None if none
        matches. The ping's ``answered`` is called with it."""
        entry = self._sent.pop(payload, None)
        if entry is None:
            return None
        rtt = self.last_rtt = at - entry[0]
        if entry[1] is not None:
            entry[1](rtt)
        return rtt

    def clear(self) -> None:
        """The connection closed: every ping in flight is answered with None."""
        sent, self._sent = self._sent, {}
        for _, answered in sent.values():
            if answered is not None:
                answered(None)
