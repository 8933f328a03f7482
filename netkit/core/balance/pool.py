"""The backend pool: every backend's state, and the policies that pick a primary, else a backup."""

from __future__ import annotations

import random
from collections.abc import Container, Sequence
from typing import Any

from netkit.core.balance.backends import Backend
from netkit.core.balance.policies import make_policy
from netkit.core.balance.state import BackendState, OnError
from netkit.errors import ConfigError


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
