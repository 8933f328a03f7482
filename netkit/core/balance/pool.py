"""The backend pool: every backend's state, and the policies that pick a primary, else a backup.

The set of backends can change while the pool serves (a reload of ``--backends-file``, the
runtime API), through the pool's operations, each of which rebuilds the policies at once:

- :meth:`BackendPool.add`: a new backend joins, ramping up over ``slowstart`` when it is set
  (as HAProxy's ``slowstart`` does for a server that comes back).
- :meth:`BackendPool.remove`: the backend *drains*: it takes no new connection, its current
  connections finish, and the pool forgets it once the last one has ended
  (:meth:`BackendPool.settle`).
- :meth:`BackendPool.set_weight` / :meth:`BackendPool.configure`: a changed weight (or maxconn,
  or backup role) applies to the next choice.
- :meth:`BackendPool.set_draining`: drain a backend that stays in the pool (HAProxy's ``set
  server state drain``), or take it back (``ready``).
- :meth:`BackendPool.apply`: all of the above at once, to match a new list of backends (a
  reload); it returns the :class:`PoolChange`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from netkit.core.balance.backends import Backend
from netkit.core.balance.policies import make_policy
from netkit.core.balance.state import BackendState, OnError
from netkit.errors import ConfigError


@dataclass
class PoolChange:
    """What one :meth:`BackendPool.apply` changed, as backend names.

    Attributes:
        added: backends that joined.
        removed: backends that now drain, to be forgotten once idle.
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
        self._settings: dict[str, Any] = {
            "rise": rise,
            "fall": fall,
            "slowstart": slowstart,
            "on_error": on_error,
        }
        self.states = [BackendState(b, **self._settings) for b in backends]
        self.retiring: list[BackendState] = []
        """Removed backends still finishing their connections (no new ones)."""
        self._rng = random.Random(seed)
        self._rebuild()

    def _rebuild(self) -> None:
        # The policies over the current states (a new ring for ``source``, fresh scores).
        tiers = (
            [s for s in self.states if not s.backend.backup],
            [s for s in self.states if s.backend.backup],
        )
        self.primary = make_policy(self.algorithm, tiers[0], self._rng)
        self.backup = make_policy(self.algorithm, tiers[1], self._rng)

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

    def all_full(self, exclude: Container[BackendState] = ()) -> bool:
        """True when some backend is up (not draining, not excluded) and every such backend
        is full: a client should wait in the queue for a slot rather than be refused."""
        left = [s for s in self.states if s not in exclude and s.up and not s.draining]
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
        """The state of the backend called ``name`` (its endpoint string).

        Raises:
            KeyError: no such backend.
        """
        for state in self.states:
            if state.name == name:
                return state
        for state in self.retiring:
            if state.name == name:
                return state
        raise KeyError(name)

    def _current(self, name: str) -> BackendState:
        # A backend in the pool (not one being removed), or a ConfigError naming it.
        for state in self.states:
            if state.name == name:
                return state
        raise ConfigError(f"no backend {name} in the pool")

    # --- changes while serving ---------------------------------------------------------

    def add(self, backend: Backend, now: float) -> BackendState:
        """Add ``backend``; with ``slowstart`` set it ramps up from ``now``.

        A backend still draining after :meth:`remove` comes back with its counters (and the
        new configuration).

        Raises:
            ConfigError: a backend with that endpoint is already in the pool.
        """
        if any(s.name == backend.name for s in self.states):
            raise ConfigError(f"backend {backend.name} is already in the pool")
        state: BackendState | None = next(
            (s for s in self.retiring if s.name == backend.name), None
        )
        if state is not None:
            self.retiring.remove(state)
            state.backend, state.draining = backend, False
        else:
            state = BackendState(backend, **self._settings)
        if state.slowstart > 0:
            state.up_since = now  # a newcomer ramps up as a recovered backend does
        self.states.append(state)
        self._rebuild()
        return state

    def remove(self, name: str) -> BackendState:
        """Take backend ``name`` out: no new connection goes to it, its current ones finish;
        the pool forgets it once they have (:meth:`settle`).

        Raises:
            ConfigError: no such backend, or it is the last primary.
        """
        state = self._current(name)
        if not state.backend.backup and not any(
            not s.backend.backup for s in self.states if s is not state
        ):
            raise ConfigError(f"backend {name} is the last primary: it cannot be removed")
        self._retire(state)
        self._rebuild()
        return state

    def _retire(self, state: BackendState) -> None:
        # Out of the policies' reach (the caller rebuilds them), kept until idle.
        self.states.remove(state)
        state.draining = True
        self.retiring.append(state)
        self.settle(state)

    def settle(self, state: BackendState) -> bool:
        """Forget ``state`` if it was removed and has no connection left; True if forgotten.

        Call it whenever one of its connections ends (or a connect to it fails).
        """
        if state.active == 0 and state in self.retiring:
            self.retiring.remove(state)
            return True
        return False

    def configure(self, backend: Backend) -> str:
        """Give the backend at ``backend.endpoint`` this configuration (weight, maxconn,
        role); returns what changed, in words (empty when nothing did).

        Raises:
            ConfigError: no such backend, or the change would leave no primary.
        """
        state = self._current(backend.name)
        change = describe_change(state.backend, backend)
        if backend.backup and not any(not s.backend.backup for s in self.states if s is not state):
            raise ConfigError(f"backend {backend.name} is the last primary: it cannot be a backup")
        if change:
            state.backend = backend
            self._rebuild()
        return change

    def set_weight(self, name: str, weight: int) -> str:
        """Give backend ``name`` this weight from its next choice on; returns the change.

        Raises:
            ConfigError: no such backend, or a weight out of range.
        """
        return self.configure(dataclasses.replace(self._current(name).backend, weight=weight))

    def set_draining(self, name: str, draining: bool) -> None:
        """Drain backend ``name`` (no new connections, current ones finish, it stays in the
        pool), or make it take connections again.

        Raises:
            ConfigError: no such backend.
        """
        self._current(name).draining = draining

    def apply(self, backends: Sequence[Backend], now: float) -> PoolChange:
        """Make the pool serve ``backends`` (from :func:`parse_backends`: valid as a whole):
        newcomers are added, backends left out are removed (they drain), changed ones are
        reconfigured; the order becomes ``backends``' order.
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

    @property
    def up_count(self) -> int:
        """How many backends are up."""
        return sum(1 for s in self.states if s.up)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """One :meth:`BackendState.as_dict` row per backend, in command-line order, then the
        removed backends still draining."""
        return [s.as_dict(now) for s in (*self.states, *self.retiring)]
