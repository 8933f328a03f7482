"""Clients waiting for a backend slot: ``lb``'s FIFO queue (HAProxy's ``maxqueue`` and
``timeout queue``).

:class:`ConnectQueue` holds one future per waiting client, oldest first. Whenever a slot may
have freed (a connection ended, a backend came up or joined, a weight changed), the pool calls
:meth:`ConnectQueue.pump` with the free room, and the clients at the head are woken, one per
free slot; a woken client picks its backend before anything else runs, and clients that
arrive while others wait queue behind them, so the order is first come, first served. The
rules and counts are :class:`netkit.core.balance.queue.QueueCounters`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from netkit.core.balance.queue import QueueCounters
from netkit.errors import ConnectError, OperationTimeout


class ConnectQueue:
    """The waiting clients, oldest first.

    Args:
        counters: the limits and the counts (shown by the pool's snapshot).
    """

    def __init__(self, counters: QueueCounters) -> None:
        self.counters = counters
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # woken, not yet back to choose their backend

    @property
    def waiting(self) -> bool:
        """True while clients wait for a slot (not yet woken)."""
        return bool(self._waiting)

    @property
    def busy(self) -> bool:
        """True while clients wait or are being woken: a new client must queue behind them."""
        return bool(self._waiting) or self._woken > 0

    async def wait(
        self,
        deadline: float,
        *,
        again: bool = False,
        on_queued: Callable[[int], None] | None = None,
    ) -> None:
        """Wait for a free slot until ``deadline`` (loop time); the caller then chooses its
        backend at once (no ``await`` in between). A client waiting ``again`` keeps its place
        at the head. ``on_queued`` is told how many wait (this client too) once it is in.

        Raises:
            ConnectError: the queue is full.
            OperationTimeout: the deadline passed first.
        """
        counters = self.counters
        if not counters.admit(again=again):
            raise ConnectError(
                f"every backend is full and so is the queue ({counters.limit} waiting)"
            )
        waiter = asyncio.get_running_loop().create_future()
        (self._waiting.appendleft if again else self._waiting.append)(waiter)
        if on_queued is not None and not again:
            on_queued(counters.current)
        timed_out = False
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            # The timeout cancels the waiter, unless it was woken just before.
            timed_out = waiter.cancelled()
            if timed_out:
                raise OperationTimeout(
                    f"every backend stayed full for {counters.timeout:g}s in the queue"
                ) from None
        finally:
            counters.left(timed_out=timed_out)
            if waiter.done() and not waiter.cancelled():
                self._woken -= 1  # woken: its turn is now (or it was cancelled meanwhile)
            else:
                self._waiting.remove(waiter)

    def pump(self, room: float) -> None:
        """Wake as many clients at the head as there are free slots (``room``) not already
        promised to a woken client."""
        while self._waiting and self._woken < room:
            self._waiting.popleft().set_result(None)
            self._woken += 1
