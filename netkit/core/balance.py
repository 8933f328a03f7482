"""Load-balancer policies, backend state and health accounting, as pure objects (no I/O).

The pieces, from the command line inward::

    parse_backends(["127.0.0.1:8001,weight=3", "unix:/run/b.sock,backup"])  -> [Backend, ...]
    BackendPool(backends, algorithm="roundrobin", rise=2, fall=3, slowstart=0)
      .states                    one BackendState per backend, in command-line order
      .choose(client_key, now, exclude) -> BackendState | None

    BackendState                 counters (active, total, failed, bytes), connect times,
                                 the rise/fall health machine and the slow-start ramp;
                                 health methods return a HealthEvent when the state changes.

Time is always passed in (``now``, in seconds on any monotonic clock - the I/O layer uses the
event loop's ``loop.time()``); nothing here reads a clock. Randomness comes from a seedable
``random.Random``.

Semantics, HAProxy's where it has them:

* A backend is *usable* when it is up and below its ``maxconn``. Backup backends are chosen
  only when no primary is usable (all down, full, or excluded by the caller). All usable
  backups share the load with the same algorithm (HAProxy's ``option allbackups``).
* ``exclude`` lets the caller retry on the next backend after a connect failure, so a client
  is never handed a backend that just refused it.
* Health: a backend starts *up* (HAProxy's default) but provisionally: until its first check
  passes, one failed check marks it down (HAProxy starts servers with health = rise, so the
  first failure is enough). After that it takes ``fall`` consecutive failed checks to go down
  and, once down, ``rise`` consecutive passed checks to come back.
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
import hashlib
import random
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Container, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from netkit.core.addresses import TCPEndpoint, UnixEndpoint, parse_stream_endpoint
from netkit.core.stats import percentile
from netkit.errors import ConfigError

ALGORITHMS = ("roundrobin", "leastconn", "random", "source")
"""The ``--algorithm`` names, default first."""

MAX_WEIGHT = 256  # HAProxy's limit
VNODES_PER_WEIGHT = 160  # hash-ring points per unit of weight (ketama's 160 per server)
SLOWSTART_FLOOR = 0.01  # a backend in slow start never weighs less than 1% of its weight
CONNECT_TIME_WINDOW = 1024  # connect times kept per backend for p50/p99

OnError = Literal["mark-down", "fail-check", "ignore"]
ON_ERROR: tuple[OnError, ...] = ("mark-down", "fail-check", "ignore")


# --- backends as the user writes them ----------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One backend from the command line.

    Attributes:
        endpoint: where to connect (TCP or a Unix socket).
        weight: relative share of new connections, 1-256.
        backup: used only when no primary backend is usable.
        maxconn: at most this many connections at once (connects in progress count), or None.
    """

    endpoint: TCPEndpoint | UnixEndpoint
    weight: int = 1
    backup: bool = False
    maxconn: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise ConfigError(
                f"backend {self.endpoint}: weight {self.weight} is out of range (1-{MAX_WEIGHT})"
            )
        if self.maxconn is not None and self.maxconn < 1:
            raise ConfigError(f"backend {self.endpoint}: maxconn must be at least 1")

    @property
    def name(self) -> str:
        """The endpoint as a string: the backend's name in events and tables."""
        return str(self.endpoint)

    def __str__(self) -> str:
        options = [f"weight={self.weight}"] if self.weight != 1 else []
        if self.maxconn is not None:
            options.append(f"maxconn={self.maxconn}")
        if self.backup:
            options.append("backup")
        return ",".join([self.name, *options])


_BACKEND_KEYS = ("weight", "maxconn", "backup")


def _parse_count(text: str, key: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"backend {whole!r}: {key}={text!r} is not a whole number")
    return int(text)


def parse_backend(text: str) -> Backend:
    """Parse ``ENDPOINT[,weight=N][,maxconn=N][,backup]``.

    The endpoint is ``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/path`` (it cannot contain a
    comma). Examples: ``127.0.0.1:8001,weight=3``, ``unix:/run/b.sock,backup``,
    ``[::1]:8002,maxconn=100,weight=2``.

    Raises:
        EndpointError: the endpoint does not parse.
        ConfigError: an unknown, repeated or invalid option.
    """
    whole = text.strip()
    endpoint_text, *options = whole.split(",")
    endpoint = parse_stream_endpoint(endpoint_text)
    values: dict[str, str | None] = {}
    for option in options:
        key, sep, value = option.strip().partition("=")
        key = key.strip().lower()
        if not key:
            raise ConfigError(f"backend {whole!r}: empty option (stray comma?)")
        if key not in _BACKEND_KEYS:
            raise ConfigError(
                f"backend {whole!r}: unknown option {key!r} (known: {', '.join(_BACKEND_KEYS)})"
            )
        if key in values:
            raise ConfigError(f"backend {whole!r}: {key} is given twice")
        values[key] = value.strip() if sep else None
    weight, maxconn, backup = 1, None, False
    for key, given in values.items():
        if key == "backup":
            if given not in (None, "true", "yes", "1"):
                raise ConfigError(f"backend {whole!r}: backup takes no value (write ',backup')")
            backup = True
        elif not given:
            raise ConfigError(f"backend {whole!r}: {key} needs a value ({key}=N)")
        elif key == "weight":
            weight = _parse_count(given, key, whole)
        else:
            maxconn = _parse_count(given, key, whole)
    return Backend(endpoint, weight=weight, backup=backup, maxconn=maxconn)


def parse_backends(texts: Sequence[str]) -> list[Backend]:
    """Parse every backend argument; the same endpoint twice, or only backups, is an error.

    Raises:
        EndpointError, ConfigError: as :func:`parse_backend`, and for the cases above.
    """
    backends = [parse_backend(text) for text in texts]
    if not backends:
        raise ConfigError("no backends given")
    seen: set[TCPEndpoint | UnixEndpoint] = set()
    for backend in backends:
        if backend.endpoint in seen:
            raise ConfigError(f"backend {backend.name} is given twice")
        seen.add(backend.endpoint)
    if all(b.backup for b in backends):
        raise ConfigError("every backend is a backup: at least one must be a primary")
    return backends


# --- health ------------------------------------------------------------------------------


class HealthStatus(StrEnum):
    """Whether a backend takes new connections."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class HealthEvent:
    """A backend changed state.

    Attributes:
        backend: the backend's name (its endpoint).
        old, new: the states before and after.
        reason: one line saying why (the last check's result, or the failed connect).
        source: ``"check"`` (an active health check) or ``"traffic"`` (a client's connect).
        at: the ``now`` the change happened at.
    """

    backend: str
    old: HealthStatus
    new: HealthStatus
    reason: str
    source: Literal["check", "traffic"]
    at: float

    def as_dict(self) -> dict[str, Any]:
        """The fields for a JSON event (``at`` is left to the caller's clock)."""
        return {
            "backend": self.backend,
            "old": str(self.old),
            "new": str(self.new),
            "reason": self.reason,
            "source": self.source,
        }

    def __str__(self) -> str:
        return f"{self.backend} is {self.new}: {self.reason}"


class HealthState:
    """HAProxy's rise/fall machine for one backend.

    Up: ``fall`` consecutive failures take it down (a pass resets the count). Down: ``rise``
    consecutive passes bring it up (a failure resets the count). It starts up but provisional:
    the first failure, before any pass, takes it down at once.

    Args:
        rise: consecutive passes to go up (HAProxy's default 2).
        fall: consecutive failures to go down (HAProxy's default 3).
        up: the initial state.
    """

    def __init__(self, rise: int = 2, fall: int = 3, *, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ConfigError(f"rise and fall must be at least 1 (got rise={rise}, fall={fall})")
        self.rise = rise
        self.fall = fall
        self.status = HealthStatus.UP if up else HealthStatus.DOWN
        self.provisional = up
        self.passes = 0  # consecutive, counted while down
        self.failures = 0  # consecutive, counted while up

    @property
    def up(self) -> bool:
        """True while the backend takes new connections."""
        return self.status is HealthStatus.UP

    def passed(self) -> str | None:
        """Record a passed check; returns why it came up, or None when the state is unchanged."""
        self.provisional = False
        if self.up:
            self.failures = 0
            return None
        self.passes += 1
        if self.passes < self.rise:
            return None
        self.status, self.passes = HealthStatus.UP, 0
        return f"{self.rise} check{'s' if self.rise > 1 else ''} passed in a row"

    def failed(self, reason: str) -> str | None:
        """Record a failed check; returns why it went down, or None when the state is unchanged."""
        if not self.up:
            self.passes = 0
            return None
        self.failures += 1
        if self.provisional:
            return self.mark_down(f"first check failed: {reason}")
        if self.failures < self.fall:
            return None
        return self.mark_down(f"{self.fall} checks failed in a row, last: {reason}")

    def mark_down(self, reason: str) -> str | None:
        """Go down at once (passive ejection); returns ``reason``, or None when already down."""
        self.passes = 0
        if not self.up:
            return None
        self.status, self.failures, self.provisional = HealthStatus.DOWN, 0, False
        return reason


# --- connect times -----------------------------------------------------------------------


class ConnectTimes:
    """Connect times of one backend: exact p50/p99 over the most recent ``window`` connects.

    A sliding window rather than all of history, so the live table shows how the backend is
    doing now; count, min and max cover every connect.
    """

    def __init__(self, window: int = CONNECT_TIME_WINDOW) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self.count = 0
        self.min = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one connect time."""
        if not self.count or seconds < self.min:
            self.min = seconds
        self.max = max(self.max, seconds)
        self.count += 1
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
    """

    def __init__(
        self,
        backend: Backend,
        *,
        rise: int = 2,
        fall: int = 3,
        slowstart: float = 0.0,
        on_error: OnError = "mark-down",
    ) -> None:
        if slowstart < 0:
            raise ConfigError(f"slow start must not be negative (got {slowstart:g}s)")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on-error {on_error!r} is not one of {', '.join(ON_ERROR)}")
        self.backend = backend
        self.health = HealthState(rise, fall)
        self.slowstart = slowstart
        self.on_error = on_error
        self.active = 0
        self.total = 0
        self.failed = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connect_times = ConnectTimes()
        self.up_since: float | None = None
        self.last_check = ""

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
        """Up and not full: may be handed a new connection."""
        return self.health.up and not self.full

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
        why = f"connect failed: {reason}"
        if self.on_error == "ignore":
            return None
        if self.on_error == "mark-down":
            return self._event(self.health.mark_down(why), HealthStatus.UP, "traffic", now)
        return self._event(self.health.failed(why), HealthStatus.UP, "traffic", now)

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
        if new is HealthStatus.UP:
            self.up_since = now
        return HealthEvent(self.name, old, new, why, source, now)

    def as_dict(self, now: float) -> dict[str, Any]:
        """A row of the live table / the JSON summary."""
        return {
            "backend": self.name,
            "role": "backup" if self.backend.backup else "primary",
            "state": str(self.health.status),
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
        }


# --- policies ----------------------------------------------------------------------------


def _hash64(data: str) -> int:
    # Stable across runs and processes (unlike hash()), so a key maps to the same backend
    # after a restart.
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class Policy(ABC):
    """Chooses a backend among one tier (the primaries, or the backups).

    Args:
        states: the tier's backends, in command-line order.
        rng: randomness for the policies that need it.
    """

    name: ClassVar[str]

    def __init__(self, states: Sequence[BackendState], rng: random.Random | None = None) -> None:
        self.states = list(states)
        self.rng = rng or random.Random()

    def candidates(self, exclude: Container[BackendState] = ()) -> list[BackendState]:
        """The usable backends that are not excluded, in order."""
        return [s for s in self.states if s.usable and s not in exclude]

    @abstractmethod
    def choose(
        self, client_key: str, now: float, exclude: Container[BackendState] = ()
    ) -> BackendState | None:
        """Pick a usable backend that is not in ``exclude``; None when there is none.

        Args:
            client_key: the client's address (host only); only ``source`` uses it.
            now: the current time, for slow start.
            exclude: backends already tried for this client.
        """


class RoundRobin(Policy):
    """Smooth weighted round robin, as nginx does it.

    Every pick adds each candidate's weight to its running score, picks the highest score
    (the first on ties) and takes the total weight off the winner. Weights 5, 1, 1 give
    ``a a b a c a a``: the heavy backend's turns are spread out, not bunched.
    """

    name = "roundrobin"

    def __init__(self, states: Sequence[BackendState], rng: random.Random | None = None) -> None:
        super().__init__(states, rng)
        self._score: dict[BackendState, float] = dict.fromkeys(self.states, 0.0)

    def choose(
        self, client_key: str, now: float, exclude: Container[BackendState] = ()
    ) -> BackendState | None:
        best: BackendState | None = None
        total = 0.0
        score = self._score
        for state in self.candidates(exclude):
            weight = state.effective_weight(now)
            score[state] += weight
            total += weight
            if best is None or score[state] > score[best]:
                best = state
        if best is not None:
            score[best] -= total
        return best


class LeastConnections(Policy):
    """The backend with the fewest active connections per unit of weight.

    Ties go round robin: the scan starts after the previous pick, and the first of equally
    loaded backends wins.
    """

    name = "leastconn"

    def __init__(self, states: Sequence[BackendState], rng: random.Random | None = None) -> None:
        super().__init__(states, rng)
        self._next = 0

    def choose(
        self, client_key: str, now: float, exclude: Container[BackendState] = ()
    ) -> BackendState | None:
        count = len(self.states)
        best: BackendState | None = None
        best_at, best_weight = 0, 1.0
        for step in range(count):
            at = (self._next + step) % count
            state = self.states[at]
            if not state.usable or state in exclude:
                continue
            weight = state.effective_weight(now)
            # active/weight < best.active/best_weight, without dividing
            if best is None or state.active * best_weight < best.active * weight:
                best, best_at, best_weight = state, at, weight
        if best is not None:
            self._next = (best_at + 1) % count
        return best


class PowerOfTwoChoices(Policy):
    """Random with two choices: draw two backends (weighted), keep the less loaded.

    Load is active connections per unit of weight; on a tie the first draw wins, so with no
    load the picks follow the weights. The more loaded of the two is never picked.
    """

    name = "random"

    def choose(
        self, client_key: str, now: float, exclude: Container[BackendState] = ()
    ) -> BackendState | None:
        candidates = self.candidates(exclude)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        weights = [s.effective_weight(now) for s in candidates]
        i = self.rng.choices(range(len(candidates)), weights)[0]
        first, first_weight = candidates[i], weights[i]
        del candidates[i], weights[i]
        j = self.rng.choices(range(len(candidates)), weights)[0]
        second, second_weight = candidates[j], weights[j]
        if second.active * first_weight < first.active * second_weight:
            return second
        return first


class ConsistentHash(Policy):
    """Consistent hashing of the client address on a ring with virtual nodes.

    Each backend owns ``weight * 160`` points on a 64-bit ring (the points depend only on the
    backend's name); a key goes to the owner of the first point at or after its hash, skipping
    backends that are not usable. So when a backend goes away (down, full, excluded, or left
    off the command line) only the keys it owned move, each to its ring successor.
    """

    name = "source"

    def __init__(self, states: Sequence[BackendState], rng: random.Random | None = None) -> None:
        super().__init__(states, rng)
        points = sorted(
            (_hash64(f"{state.name}#{v}"), at)
            for at, state in enumerate(self.states)
            for v in range(state.backend.weight * VNODES_PER_WEIGHT)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [self.states[at] for _, at in points]

    def choose(
        self, client_key: str, now: float, exclude: Container[BackendState] = ()
    ) -> BackendState | None:
        if not any(s.usable and s not in exclude for s in self.states):
            return None  # else the walk below would go all the way round
        size = len(self._hashes)
        start = bisect.bisect_left(self._hashes, _hash64(client_key))
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner.usable and owner not in exclude:
                return owner
        return None  # pragma: no cover - a candidate exists, so the walk finds it


_POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (RoundRobin, LeastConnections, PowerOfTwoChoices, ConsistentHash)
}


def make_policy(
    algorithm: str, states: Sequence[BackendState], rng: random.Random | None = None
) -> Policy:
    """The policy called ``algorithm`` (one of :data:`ALGORITHMS`) over ``states``.

    Raises:
        ConfigError: an unknown algorithm.
    """
    try:
        cls = _POLICIES[algorithm]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})"
        ) from None
    return cls(states, rng)


# --- the pool ----------------------------------------------------------------------------


class BackendPool:
    """Every backend's state, and the policy that picks among them.

    Args:
        backends: from :func:`parse_backends`.
        algorithm: one of :data:`ALGORITHMS`.
        rise, fall: the health machine's thresholds (HAProxy's defaults 2 and 3).
        slowstart: seconds over which a backend that came back up ramps to its full weight.
        on_error: what a failed connect from traffic does: ``"mark-down"``, ``"fail-check"``
            or ``"ignore"`` (see the module docstring).
        seed: seed for ``random`` (None: unpredictable).

    Raises:
        ConfigError: a bad algorithm, threshold or on_error value.
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        algorithm: str = "roundrobin",
        rise: int = 2,
        fall: int = 3,
        slowstart: float = 0.0,
        on_error: OnError = "mark-down",
        seed: int | None = None,
    ) -> None:
        if not backends:
            raise ConfigError("no backends given")
        self.algorithm = algorithm
        self.states = [
            BackendState(b, rise=rise, fall=fall, slowstart=slowstart, on_error=on_error)
            for b in backends
        ]
        rng = random.Random(seed)
        self.primary = make_policy(algorithm, [s for s in self.states if not s.backend.backup], rng)
        self.backup = make_policy(algorithm, [s for s in self.states if s.backend.backup], rng)

    def choose(
        self, client_key: str = "", now: float = 0.0, exclude: Container[BackendState] = ()
    ) -> BackendState | None:
        """Pick the backend for a new connection: a primary, else a backup, else None.

        Args:
            client_key: the client's address, host only (``source`` hashes it).
            now: the current time (slow start).
            exclude: backends that already failed this client's connect.
        """
        return self.primary.choose(client_key, now, exclude) or self.backup.choose(
            client_key, now, exclude
        )

    def unavailable(self, exclude: Container[BackendState] = ()) -> str:
        """Why :meth:`choose` found no backend, in words: every backend left is full
        (``maxconn``), or none is available (down, or excluded after a failed connect).

        A full pool is not a failure of the backends (HAProxy counts it apart: it queues the
        client instead of marking anything down), so it gets its own reason.
        """
        left = [s for s in self.states if s not in exclude and s.up]
        if left and all(s.full for s in left):
            return "every backend is full (maxconn reached)"
        return "no backend available"

    def state(self, name: str) -> BackendState:
        """The state of the backend called ``name`` (its endpoint string).

        Raises:
            KeyError: no such backend.
        """
        for state in self.states:
            if state.name == name:
                return state
        raise KeyError(name)

    @property
    def up_count(self) -> int:
        """How many backends are up."""
        return sum(1 for s in self.states if s.up)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """One :meth:`BackendState.as_dict` row per backend, in command-line order."""
        return [s.as_dict(now) for s in self.states]


# --- active check probes -----------------------------------------------------------------

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.|$)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}


def parse_escapes(text: str, *, option: str = "--check-send") -> bytes:
    r"""Bytes from text with C-style escapes: ``\r \n \t \0 \\ \xHH``; other text as UTF-8.

    Raises:
        ConfigError: an unknown escape.
    """
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode()
        code = m.group(1)
        if code.startswith("x") and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[code]
        else:
            raise ConfigError(
                f"{option} {text!r}: unknown escape '\\{code}' (known: \\r \\n \\t \\0 \\\\ \\xHH)"
            )
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


@dataclass(frozen=True)
class CheckProbe:
    """What an active check does once connected.

    With neither ``send`` nor ``expect``, connecting is the check. With ``send``, the bytes are
    written; with ``expect``, the check passes when the bytes read so far match the regex
    (a banner can be expected without sending anything).

    Attributes:
        send: bytes to write after connecting.
        expect: a bytes regex searched in what the backend sends back.
        max_read: give up matching after this many bytes.
    """

    send: bytes = b""
    expect: re.Pattern[bytes] | None = None
    max_read: int = 16 * 1024

    @classmethod
    def parse(cls, send: str | None = None, expect: str | None = None) -> CheckProbe:
        r"""Build a probe from ``--check-send`` (escapes as ``PING\r\n``) and ``--check-expect``
        (a regular expression, such as ``^PONG`` or ``\+OK``).

        Raises:
            ConfigError: a bad escape or regular expression.
        """
        pattern = None
        if expect is not None:
            if not expect:
                raise ConfigError("--check-expect must not be empty")
            try:
                pattern = re.compile(expect.encode())
            except re.error as exc:
                raise ConfigError(
                    f"--check-expect {expect!r} is not a regular expression: {exc}"
                ) from None
        return cls(parse_escapes(send) if send else b"", pattern)

    @property
    def reads(self) -> bool:
        """True when the check waits for a reply."""
        return self.expect is not None

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` (everything read so far) matches ``expect``."""
        return self.expect is not None and self.expect.search(data) is not None

    def describe(self) -> str:
        """How the check is described in messages (``/^PONG/``)."""
        return f"/{self.expect.pattern.decode(errors='replace')}/" if self.expect else "connect"
