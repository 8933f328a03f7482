"""The connection queue's rules and counts (HAProxy's ``maxqueue`` and ``timeout queue``).

When every backend a client could go to is full (each at its ``maxconn``), the client waits in
one FIFO queue for the pool instead of being reset; a slot freed anywhere goes to the client
at the head. :class:`QueueCounters` holds the limits and the counts that the live table, the
summary and the metrics show; the waiting itself (futures, deadlines) is
:mod:`netkit.net.backend_queue`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netkit.errors import ConfigError


@dataclass
class QueueCounters:
    """The queue's limits and counts.

    Attributes:
        limit: at most this many clients wait at once (None: no limit but the server's
            ``--max-connections``; 0: no queue, a client that finds every backend full is
            refused at once).
        timeout: seconds a client may wait before it is closed.
        current: clients waiting now.
        max: the most that ever waited at once.
        queued: clients that ever waited.
        timed_out: clients closed after waiting ``timeout``.
        refused: clients refused because the queue was full.
    """

    limit: int | None = None
    timeout: float = 5.0
    current: int = 0
    max: int = 0
    queued: int = 0
    timed_out: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"the queue limit must not be negative (got {self.limit})")
        if self.timeout <= 0:
            raise ConfigError(f"the queue timeout must be positive (got {self.timeout:g}s)")

    @property
    def enabled(self) -> bool:
        """True unless the limit is 0 (no queue)."""
        return self.limit != 0

    def admit(self, *, again: bool = False) -> bool:
        """A client asks to wait: True (counted as waiting) unless the queue is full (then
        counted as refused). A client that waits ``again`` (it was woken, but the slot went
        elsewhere) is always let back in and counted once."""
        if not again:
            if self.limit is not None and self.current >= self.limit:
                self.refused += 1
                return False
            self.queued += 1
        self.current += 1
        self.max = max(self.max, self.current)
        return True

    def left(self, *, timed_out: bool = False) -> None:
        """A waiting client left the queue: served, gone, or timed out."""
        self.current -= 1
        if timed_out:
            self.timed_out += 1

    def as_dict(self) -> dict[str, Any]:
        """The queue's row in the summary and the stats: limits and counts."""
        return {
            "limit": self.limit,
            "timeout_s": self.timeout,
            "current": self.current,
            "max": self.max,
            "queued": self.queued,
            "timed_out": self.timed_out,
            "refused": self.refused,
        }
