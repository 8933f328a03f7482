"""The backend pool: every backend's state, and the policies that pick a primary, else a backup.

The set of backends can change while the pool serves (the runtime API, a reload of
``--backends-file``), through the pool's operations, each of which rebuilds the policies:
:meth:`BackendPool.add` (a newcomer ramps up under slow start), :meth:`BackendPool.remove`
(no new connection; the current ones finish, then it is forgotten), :meth:`BackendPool.set_weight`
and :meth:`BackendPool.configure` (weight, maxconn, role), and :meth:`BackendPool.apply`: all of
them at once to match a new list of backends (a reload), returning the :class:`PoolChange`.
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from netkit.core.balance.backends import Backend
from netkit.core.balance.policies import make_policy
from netkit.core.balance.state import AdminState, BackendState, OnError
from netkit.errors import ConfigError


@dataclass
class PoolChange:
    """What one :meth:`BackendPool.apply` changed, as backend names.

    Attributes:
        added: backends that joined.
        removed: backends taken out (their connections finish).
        changed: backends whose weight, maxconn or role changed (``name: "weight 1 -> 3"``).
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        """The JSON fields of a reload event."""
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def describe_change(old: Backend, new: Backend) -> str:
    """How ``new`` differs from ``old`` (the same endpoint): ``weight 1 -> 3, maxconn - -> 10``."""
    parts = []
    for name in ("weight", "maxconn", "backup"):
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            shown = ["-" if v is None else str(v).lower() for v in (before, after)]
            parts.append(f"{name} {shown[0]} -> {shown[1]}")
    return ", ".join(parts)


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
        on_error: OnError | str = OnError.MARK_DOWN,
        seed: int | None = None,
    ) -> None:
        if not backends:
            raise ConfigError("no backends given")
        self.algorithm = algorithm
        self._health = (rise, fall)
        self.slowstart, self.on_error = slowstart, on_error
        self.states = [self._new_state(b) for b in backends]
        self.retired: list[BackendState] = []  # removed, with connections still running
        self.rng = random.Random(seed)
        self._rebuild()

    def _new_state(self, backend: Backend) -> BackendState:
        rise, fall = self._health
        return BackendState(
            backend, rise=rise, fall=fall, slowstart=self.slowstart, on_error=self.on_error
        )

    def _rebuild(self) -> None:
        # The policies over the tiers as they are now (after a backend or a weight changed).
        self.primary = make_policy(
            self.algorithm, [s for s in self.states if not s.backend.backup], self.rng
        )
        self.backup = make_policy(
            self.algorithm, [s for s in self.states if s.backend.backup], self.rng
        )

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
        if self.all_full(exclude):
            return "every backend is full (maxconn reached)"
        return "no backend available"

    def state(self, name: str) -> BackendState:
        """The state of the backend called ``name`` (its endpoint string), removed ones
        whose connections still run included.

        Raises:
            KeyError: no such backend.
        """
        for state in (*self.states, *self.retired):
            if state.name == name:
                return state
        raise KeyError(name)

    # --- changes while running (the runtime API, a reload) ---------------------------------

    def add(self, backend: Backend, now: float) -> BackendState:
        """Add ``backend``: up (provisionally, as at start) and, with slow start, ramping up
        from ``now``.

        Raises:
            ConfigError: a backend with that endpoint is in the pool.
        """
        if any(s.backend.endpoint == backend.endpoint for s in self.states):
            raise ConfigError(f"backend {backend.name} is already in the pool")
        # One removed but still finishing its connections comes back with its counters
        # (else two states would answer to one name).
        state = next((s for s in self.retired if s.name == backend.name), None)
        if state is not None:
            self.retired.remove(state)
            state.backend, state.removed = backend, False
        else:
            state = self._new_state(backend)
        if state.slowstart > 0:
            state.up_since = now
        self.states.append(state)
        self._rebuild()
        return state

    def remove(self, name: str) -> BackendState:
        """Take the backend called ``name`` out: no new connection goes to it, its current
        ones finish (it stays in :attr:`retired` until they have).

        Raises:
            KeyError: no such backend.
            ConfigError: it is the last primary backend.
        """
        state = self.state(name)
        if state.removed:
            raise KeyError(name)
        if not state.backend.backup and sum(not s.backend.backup for s in self.states) == 1:
            raise ConfigError(f"backend {name} is the last primary: add another one first")
        self._retire(state)
        self._rebuild()
        return state

    def _retire(self, state: BackendState) -> None:
        # Out of the policies' reach (the caller rebuilds them), kept while it has connections.
        self.states.remove(state)
        state.removed = True
        if state.active:
            self.retired.append(state)

    def set_weight(self, name: str, weight: int) -> BackendState:
        """Give the backend called ``name`` a new weight (new connections follow it).

        Raises:
            KeyError: no such backend.
            ConfigError: the weight is out of range.
        """
        state = self.state(name)
        state.backend = replace(state.backend, weight=weight)
        self._rebuild()  # the hash ring's points follow the weight
        return state

    def configure(self, backend: Backend) -> str:
        """Give the backend at ``backend.endpoint`` this configuration (weight, maxconn,
        role); returns what changed, in words (empty when nothing did).

        Raises:
            KeyError: no such backend.
            ConfigError: the change would leave no primary.
        """
        state = self.state(backend.name)
        if state.removed:
            raise KeyError(backend.name)
        change = describe_change(state.backend, backend)
        if backend.backup and not any(not s.backend.backup for s in self.states if s is not state):
            raise ConfigError(f"backend {backend.name} is the last primary: it cannot be a backup")
        if change:
            state.backend = backend
            self._rebuild()
        return change

    def apply(self, backends: Sequence[Backend], now: float) -> PoolChange:
        """Make the pool serve ``backends`` (from :func:`parse_backends`: valid as a whole):
        newcomers are added, backends left out are removed (their connections finish),
        changed ones are reconfigured; the order becomes ``backends``' order.
        """
        change = PoolChange()
        wanted = {b.name: b for b in backends}
        for gone in [s for s in self.states if s.name not in wanted]:
            self._retire(gone)
            change.removed.append(gone.name)
        current = {s.name: s for s in self.states}
        for backend in backends:
            kept = current.get(backend.name)
            if kept is None:
                change.added.append(backend.name)
                self.add(backend, now)
            elif words := describe_change(kept.backend, backend):
                change.changed[backend.name] = words
                kept.backend = backend
        order = {name: at for at, name in enumerate(wanted)}
        self.states.sort(key=lambda s: order[s.name])
        self._rebuild()
        return change

    def all_full(self, exclude: Container[BackendState] = ()) -> bool:
        """True when some backend is up and ready (not excluded) and every such backend is
        full: a client should wait in the queue for a slot rather than be refused."""
        left = [s for s in self.states if s not in exclude and s.up and s.admin is AdminState.READY]
        return bool(left) and all(s.full for s in left)

    def room(self) -> float:
        """How many more connections the backends can take now: the free ``maxconn`` slots
        of every usable backend (infinite when one has no ``maxconn``)."""
        free = 0.0
        for state in self.states:
            if state.usable:
                maxconn = state.backend.maxconn
                free += float("inf") if maxconn is None else maxconn - state.active
        return free

    def settle(self, state: BackendState) -> None:
        """Forget ``state`` if it was removed and has no connection left (after a connect to
        it failed: :meth:`ended` covers the connections that were made)."""
        if state.removed and not state.active and state in self.retired:
            self.retired.remove(state)

    def ended(self, name: str, bytes_up: int, bytes_down: int) -> BackendState | None:
        """A connection to ``name`` ended; returns its backend when that was the last
        connection of a backend draining or removed (it is then drained)."""
        state = self.state(name)
        state.connection_ended(bytes_up, bytes_down)
        if state.active or not (state.removed or state.admin is not AdminState.READY):
            return None
        if state in self.retired:
            self.retired.remove(state)
        return state

    @property
    def up_count(self) -> int:
        """How many backends are up."""
        return sum(1 for s in self.states if s.up)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """One :meth:`BackendState.as_dict` row per backend, in command-line order."""
        return [s.as_dict(now) for s in self.states]
