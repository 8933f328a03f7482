"""The balancing policies, each choosing a usable backend among one tier (primaries or backups):
smooth weighted round robin, least connections, random with two choices, consistent hashing.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Container, Sequence
from typing import ClassVar

from netkit.core.balance.state import BackendState
from netkit.errors import ConfigError

ALGORITHMS = ("roundrobin", "leastconn", "random", "source")
"""The ``--algorithm`` names, default first."""


VNODES_PER_WEIGHT = 160  # hash-ring points per unit of weight (ketama's 160 per server)


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
    hashes_clients: ClassVar[bool] = False
    """True when :meth:`choose` uses its ``client_key`` (else it may be given "")."""

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
    hashes_clients = True

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
