"""ws-client ``--reconnect`` as pure logic: when to reconnect, how long to wait, what to send
again.

* :class:`ReconnectPlan`: jittered exponential back-off with a cap
  (:class:`~netkit.core.backoff.Backoff`) and a limit on attempts; the count and the delay
  start again once a connection opens.
* :class:`Reason`: why a connection is tried again, decided by :func:`open_reason` (opening
  failed) and :func:`session_reason` (an open connection ended). A failure that another try
  cannot cure (a TLS error, a 4xx answer, a protocol violation, a check that failed, our own
  close) is not retried: it ends the run with its usual exit status.
* :class:`Ledger`: what became of each input message. A sent message is *acknowledged* once a
  message from the server arrives after it (its reply, or the reply to a later one); pongs do
  not count. After a drop, :class:`ResendPolicy` decides what is sent again: nothing
  (``none``: at most once, the default), the unacknowledged messages (``unacknowledged``: at
  least once), or everything sent so far (``all``: for servers that keep state per
  connection, subscriptions say). Messages never sent are always sent on the next connection.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from netkit.core.backoff import Backoff
from netkit.core.ws.ending import Ending, Outcome
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.http import UpgradeRefused
from netkit.errors import ConfigError, ConnectError, ConnectionLost, OperationTimeout

T = TypeVar("T")

# Close codes by which a server says "come back later" (RFC 6455 7.4.1, IANA registry).
RETRY_CLOSE = frozenset(
    {
        CloseCode.GOING_AWAY,  # 1001: shutting down (ws-server sends it when it stops)
        CloseCode.INTERNAL_ERROR,  # 1011
        1012,  # service restart
        1013,  # try again later
        1014,  # bad gateway
    }
)
# Upgrade answers worth another try: too many requests, the server or a gateway unavailable.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class Reason(enum.Enum):
    """Why a connection is tried again (the ``reason`` of a ``reconnect`` event)."""

    REFUSED = "refused"  # connecting failed: refused, unreachable, no socket, proxy 5xx
    TIMEOUT = "timeout"  # not open within the opening deadline
    UNAVAILABLE = "unavailable"  # the upgrade was answered 429 or 5xx
    DROPPED = "dropped"  # the connection broke without a close frame (1006, reset, keepalive)
    CLOSED = "closed"  # the server closed with a "come back" code (1001, 1011-1014)


def open_reason(error: BaseException) -> Reason | None:
    """Why opening is tried again after ``error``, or None if another try cannot help."""
    if isinstance(error, UpgradeRefused):
        return Reason.UNAVAILABLE if error.status_code in RETRY_STATUS else None
    status = getattr(error, "status_code", None)  # a proxy's answer to CONNECT
    if isinstance(error, ConnectError):
        return Reason.REFUSED if status is None or status >= 500 else None
    if isinstance(error, OperationTimeout):
        return Reason.TIMEOUT
    if isinstance(error, ConnectionLost):
        return Reason.DROPPED
    return None


def session_reason(end: Ending) -> Reason | None:
    """Why a connection that was open is tried again, or None: the run ends as it would
    without ``--reconnect`` (we closed, the expectation settled, the deadline passed, the
    server closed with 1000 or broke the protocol)."""
    if end.send_error is not None or end.outcome is not Outcome.CLOSED or end.initiated_close:
        return None
    if end.protocol_error is not None:
        return None
    if end.connection_error is not None:
        broke = isinstance(end.connection_error, ConnectionLost | OperationTimeout)
        return Reason.DROPPED if broke else None
    if end.close_code is None or end.close_code == CloseCode.ABNORMAL_CLOSURE:
        return Reason.DROPPED
    return Reason.CLOSED if end.close_code in RETRY_CLOSE else None


@dataclass
class ReconnectPlan:
    """How often and how soon to reconnect.

    Args:
        first: the first delay, in seconds; each next one doubles, up to ``cap``.
        cap: the longest delay.
        attempts: how many tries after a failure before giving up (None: no limit); counted
            again from 0 once a connection opens.
        jitter: the fraction of each delay drawn at random (0.5: between half and all of it).
        seed: seeds the jitter (None: not repeatable).
    """

    first: float = 0.5
    cap: float = 30.0
    attempts: int | None = None
    jitter: float = 0.5
    seed: int | None = None
    attempt: int = field(default=0, init=False)  # tries since the last open connection

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first:
            raise ConfigError("the reconnect delay must be positive and at most its cap")
        if self.attempts is not None and self.attempts < 0:
            raise ConfigError("the number of reconnect attempts cannot be negative")
        self._backoff = Backoff(
            self.first, self.cap, jitter=self.jitter, rng=random.Random(self.seed)
        )

    def next_delay(self) -> float | None:
        """Count one more try and return how long to wait before it; None: none is left."""
        if self.attempts is not None and self.attempt >= self.attempts:
            return None
        self.attempt += 1
        return self._backoff.next()

    def opened(self) -> None:
        """A connection opened: the count and the delays start again."""
        self.attempt = 0
        self._backoff.reset()


class ResendPolicy(enum.Enum):
    """What is sent again on a new connection (``--resend``)."""

    NONE = "none"
    UNACKNOWLEDGED = "unacknowledged"
    ALL = "all"


@dataclass(frozen=True)
class Rewind:
    """What a reconnection does with the messages sent so far."""

    resent: int  # sent again first, in their order
    dropped: int  # unacknowledged, not sent again (``none``): they may be lost


class Ledger(Generic[T]):
    """The input messages of a reconnecting run: still to send, sent, acknowledged."""

    def __init__(self, policy: ResendPolicy = ResendPolicy.NONE) -> None:
        self.policy = policy
        self._pending: deque[T] = deque()  # to send before any new input
        self._unacknowledged: list[T] = []
        self._acknowledged: list[T] = []  # kept for ``all`` only

    def take(self) -> T | None:
        """The next message to send again (or not sent yet), if any."""
        return self._pending.popleft() if self._pending else None

    def unsent(self, item: T) -> None:
        """``item`` was taken but could not be sent (the connection was closing)."""
        self._pending.appendleft(item)

    def sent(self, item: T) -> None:
        """``item`` went out on the current connection."""
        self._unacknowledged.append(item)

    def acknowledged(self) -> None:
        """A message arrived: everything sent before it is acknowledged."""
        if self.policy is ResendPolicy.ALL:
            self._acknowledged += self._unacknowledged
        self._unacknowledged.clear()

    def rewind(self) -> Rewind:
        """A new connection is coming: queue what the policy sends again."""
        unacknowledged = self._unacknowledged
        again: list[T] = []
        if self.policy is ResendPolicy.ALL:
            again = self._acknowledged + unacknowledged
        elif self.policy is ResendPolicy.UNACKNOWLEDGED:
            again = unacknowledged
        self._pending.extendleft(reversed(again))
        self._acknowledged, self._unacknowledged = [], []
        dropped = len(unacknowledged) if self.policy is ResendPolicy.NONE else 0
        return Rewind(resent=len(again), dropped=dropped)
