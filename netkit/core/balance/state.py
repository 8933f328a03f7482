"""What the balancer knows about one backend at run time: counters, connect times, health
and the slow-start ramp.

* ``exclude`` (see :mod:`~netkit.core.balance.pool`) lets the caller retry on the next backend
  after a connect failure, so a client is never handed a backend that just refused it.
* Passive ejection (HAProxy's ``observe layer4``): a failed connect from real traffic marks the
  backend down at once with ``on_error="mark-down"`` (the default, HAProxy's ``on-error
  mark-down``), or counts as one failed check with ``on_error="fail-check"``; with
  ``on_error="ignore"`` it is only counted (for running without active checks). Only active
  checks bring a backend back up, so run them whenever passive ejection is on.
* Slow start: when a backend comes back *up* after being down, its effective weight grows
  linearly from 1% to 100% of its weight over ``slowstart`` seconds. Backends that are up from
  the start get their full weight at once (as in HAProxy). ``source`` hashing ignores the
  ramp: moving keys gradually would defeat the point of hashing.
"""

from __future__ import annotations

import bisect
from collections import deque
from enum import StrEnum
from typing import Any, Literal

from netkit.core.balance.backends import Backend
from netkit.core.balance.health import HealthEvent, HealthState, HealthStatus
from netkit.core.stats import percentile
from netkit.errors import ConfigError

SLOWSTART_FLOOR = 0.01  # a backend in slow start never weighs less than 1% of its weight
CONNECT_TIME_WINDOW = 1024  # connect times kept per backend for p50/p99
CONNECT_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the connect-time histogram every backend keeps (``--metrics``)."""


class AdminState(StrEnum):
    """What the operator set a backend to (HAProxy's ``set server state``), apart from health."""

    READY = "ready"
    """Takes new connections while up."""
    DRAIN = "drain"
    """Takes no new connection; current ones finish; still checked."""
    MAINT = "maint"
    """Disabled: takes no new connection and is not checked; current ones finish."""


class OnError(StrEnum):
    """What a failed connect from real traffic does to its backend (HAProxy's ``on-error``)."""

    MARK_DOWN = "mark-down"
    """Down at once (passive ejection)."""
    FAIL_CHECK = "fail-check"
    """Counts as one failed health check."""
    IGNORE = "ignore"
    """Only counted."""

    @classmethod
    def parse(cls, value: str) -> OnError:
        """The member called ``value``.

        Raises:
            ConfigError: no such member.
        """
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(cls)
            raise ConfigError(f"on-error {value!r} is not one of {known}") from None

    def apply(self, health: HealthState, why: str) -> str | None:
        """Put a failed connect into ``health``; returns why its state changed, or None."""
        if self is OnError.IGNORE:
            return None
        if self is OnError.MARK_DOWN:
            return health.mark_down(why)
        return health.failed(why)


# --- connect times -----------------------------------------------------------------------


class ConnectTimes:
    """Connect times of one backend: exact p50/p99 over the most recent ``window`` connects.

    A sliding window rather than all of history, so the live table shows how the backend is
    doing now; count, min and max cover every connect.
    """

    def __init__(self, window: int = CONNECT_TIME_WINDOW) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self.buckets = [0] * len(CONNECT_TIME_BUCKETS)  # not cumulative: one bucket per connect
        self.sum = 0.0
        self.count = 0
        self.min = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one connect time."""
        if not self.count or seconds < self.min:
            self.min = seconds
        self.max = max(self.max, seconds)
        self.count += 1
        self.sum += seconds
        at = bisect.bisect_left(CONNECT_TIME_BUCKETS, seconds)
        if at < len(self.buckets):
            self.buckets[at] += 1
        self._recent.append(seconds)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100) of the window, in seconds; 0.0 when empty."""
        return percentile(sorted(self._recent), q)

    def as_dict(self) -> dict[str, Any]:
        """count, p50/p99 (of the window), min/max (of all), in milliseconds."""
        values = sorted(self._recent)
        return {
            "connects": self.count,
            "connect_p50_ms": round(percentile(values, 50) * 1000, 3),
            "connect_p99_ms": round(percentile(values, 99) * 1000, 3),
            "connect_min_ms": round(self.min * 1000, 3),
            "connect_max_ms": round(self.max * 1000, 3),
        }


# --- runtime state of a backend ----------------------------------------------------------


class BackendState:
    """What the balancer knows about one backend at run time.

    The caller drives the counters around each client connection::

        state.connect_started()                 # counts toward maxconn and leastconn
        state.connect_succeeded(seconds)         # or: event = state.connect_failed(reason, now)
                                                 # or: state.connect_abandoned() (our fault)
        state.connection_ended(bytes_up, bytes_down)

    Attributes:
        backend: the configuration.
        health: the rise/fall machine.
        active: connections open or being opened.
        total: connections made.
        failed: connects that failed (refused, timed out...).
        bytes_up, bytes_down: client to backend, backend to client, over ended connections.
        connect_times: recent connect times.
        up_since: ``now`` of the last down-to-up change (None if never down).
        last_check: the result of the last active check, for the live table.
        last_check_ok: whether that check passed (None before the first).
        changes: up/down changes so far.
        admin: what the operator set (ready, drain, maint); health is apart.
        check_ms, check_status: the last check's duration and HTTP status (None: no check
            yet, or no HTTP), as HAProxy's check duration and status.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        rise: int = 2,
        fall: int = 3,
        slowstart: float = 0.0,
        on_error: OnError | str = OnError.MARK_DOWN,
    ) -> None:
        if slowstart < 0:
            raise ConfigError(f"slow start must not be negative (got {slowstart:g}s)")
        self.backend = backend
        self.health = HealthState(rise, fall)
        self.slowstart = slowstart
        self.on_error = OnError.parse(on_error)
        self.active = 0
        self.total = 0
        self.failed = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connect_times = ConnectTimes()
        self.up_since: float | None = None
        self.last_check = ""
        self.last_check_ok: bool | None = None
        self.changes = 0
        self.check_failures = 0
        self.admin = AdminState.READY
        self.removed = False  # taken out of its pool; its connections may still run
        self.check_ms: float | None = None
        self.check_status: int | None = None

    def __repr__(self) -> str:
        return f"<BackendState {self.backend} {self.health.status} active={self.active}>"

    @property
    def name(self) -> str:
        """The backend's name (its endpoint)."""
        return self.backend.name

    @property
    def up(self) -> bool:
        """True while health checks (and traffic) say the backend is alive."""
        return self.health.up

    @property
    def full(self) -> bool:
        """True when the backend has ``maxconn`` connections open or opening."""
        maxconn = self.backend.maxconn
        return maxconn is not None and self.active >= maxconn

    @property
    def usable(self) -> bool:
        """Up, ready and not full: may be handed a new connection."""
        return self.health.up and self.admin is AdminState.READY and not self.full

    def effective_weight(self, now: float) -> float:
        """The weight now: the configured weight, ramped after coming back up (slow start)."""
        weight = float(self.backend.weight)
        if self.up_since is None or self.slowstart <= 0:
            return weight
        elapsed = now - self.up_since
        if elapsed >= self.slowstart:
            return weight
        return weight * max(elapsed / self.slowstart, SLOWSTART_FLOOR)

    # --- traffic ---------------------------------------------------------------------

    def connect_started(self) -> None:
        """A connect to this backend began: it counts as active from now on."""
        self.active += 1

    def connect_succeeded(self, seconds: float) -> None:
        """The connect that began finished after ``seconds``."""
        self.total += 1
        self.connect_times.add(seconds)

    def connect_failed(self, reason: str, now: float) -> HealthEvent | None:
        """The connect that began failed (passive health check).

        Returns:
            The down event when this failure took the backend down, else None.
        """
        self.active = max(0, self.active - 1)
        self.failed += 1
        why = self.on_error.apply(self.health, f"connect failed: {reason}")
        return self._event(why, HealthStatus.UP, "traffic", now)

    def connect_abandoned(self) -> None:
        """The connect that began could not even start here (out of descriptors or memory).

        A local resource error says nothing about the backend: it is neither a failure nor a
        connection, so only the active count is given back.
        """
        self.active = max(0, self.active - 1)

    def connection_ended(self, bytes_up: int = 0, bytes_down: int = 0) -> None:
        """A connection that was made has ended, having relayed these bytes each way."""
        self.active = max(0, self.active - 1)
        self.bytes_up += bytes_up
        self.bytes_down += bytes_down

    # --- active checks ---------------------------------------------------------------

    def check_passed(self, now: float, detail: str = "check passed") -> HealthEvent | None:
        """An active check passed. Returns the up event when the backend came back up."""
        self.last_check = detail
        return self._event(self.health.passed(), HealthStatus.DOWN, "check", now)

    def check_failed(self, reason: str, now: float) -> HealthEvent | None:
        """An active check failed because of ``reason``. Returns the down event, if any."""
        self.last_check = reason
        return self._event(self.health.failed(reason), HealthStatus.UP, "check", now)

    def check_ended(self, ok: bool) -> None:
        """An active check ended, passed when ``ok`` (counted for the metrics)."""
        self.last_check_ok = ok
        self.check_failures += not ok

    def check_skipped(self, reason: str) -> None:
        """An active check could not run here (a local resource error): no verdict.

        HAProxy does the same with a check it cannot start for lack of resources: the
        backend keeps its state and its rise/fall counts.
        """
        self.last_check = f"check skipped: {reason}"

    def _event(
        self,
        why: str | None,
        old: HealthStatus,
        source: Literal["check", "traffic"],
        now: float,
    ) -> HealthEvent | None:
        if why is None:
            return None
        new = self.health.status
        self.changes += 1
        if new is HealthStatus.UP:
            self.up_since = now
        return HealthEvent(self.name, old, new, why, source, now)

    def as_dict(self, now: float) -> dict[str, Any]:
        """A row of the live table / the JSON summary."""
        return {
            "backend": self.name,
            "role": "backup" if self.backend.backup else "primary",
            "state": str(self.health.status),
            "admin": str(self.admin),
            "weight": self.backend.weight,
            "effective_weight": round(self.effective_weight(now), 3),
            "maxconn": self.backend.maxconn,
            "active": self.active,
            "total": self.total,
            "failed": self.failed,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            **self.connect_times.as_dict(),
            "last_check": self.last_check,
            "check_ms": self.check_ms,
            "check_status": self.check_status,
        }
