"""The idle timeout every connection netkit serves shares: tcp-echo's and the relay's.

Idle means no data for ``timeout`` seconds (for a relay: silent both ways, nginx stream's
``proxy_timeout``); the owner then closes gracefully with a FIN, not a reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def _nothing() -> None:
    pass


class IdleTimer:
    """Calls ``on_idle`` once ``timeout`` seconds pass without :meth:`touch`.

    One timer per connection, re-armed lazily: activity only stores a timestamp, and the
    timer, when it fires early, sleeps for what is left.

    Args:
        timeout: seconds of silence allowed.
        on_idle: called once, when they have passed.
        since: loop time the silence started (default: now).
        loop: the running loop, when the caller has it at hand.
    """

    def __init__(
        self,
        timeout: float,
        on_idle: Callable[[], None],
        *,
        since: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.timeout = timeout
        self.on_idle = on_idle
        self.loop = loop or asyncio.get_running_loop()
        self.last = self.loop.time() if since is None else since
        self.handle = self.loop.call_at(self.last + timeout, self._check)

    def touch(self) -> None:
        """Record activity."""
        self.last = self.loop.time()

    def _check(self) -> None:
        remaining = self.last + self.timeout - self.loop.time()
        if remaining > 0:
            self.handle = self.loop.call_later(remaining, self._check)
        else:
            self.on_idle()

    def cancel(self) -> None:
        """Stop the timer (and let go of ``on_idle``: no reference cycle through it)."""
        self.handle.cancel()
        self.on_idle = _nothing
