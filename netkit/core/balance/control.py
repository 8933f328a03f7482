"""The runtime operations on a running pool, as data: list, enable, disable, drain, set weight,
add and remove a backend (HAProxy's ``set server state``, ``set server weight``, ``add server``,
``del server``).

:class:`PoolControl` takes each operation's JSON body (as ``lb --api`` receives it), applies it
to a :class:`~netkit.core.balance.pool.BackendPool` and hands back the backend's row and the
events the change makes, each ``(name, fields)``; a request it cannot honour raises
:class:`~netkit.core.http_api.ApiError` with the status to answer (400 a bad body, 404 no such
backend, 409 a conflict). The HTTP side is :mod:`netkit.net.lb_api`.

* ``ready`` (enable): takes new connections again while up.
* ``maint`` (disable): no new connection from the next one on, not checked; current ones finish.
* ``drain``: no new connection, current ones finish, still checked; ``backend_drained`` is the
  event once the last one has ended (at once when there is none).
* remove: as drain, and the backend leaves the pool (its connections still finish).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netkit.core.balance.backends import MAX_WEIGHT, parse_backend
from netkit.core.balance.pool import BackendPool
from netkit.core.balance.state import AdminState, BackendState
from netkit.core.http_api import ApiError
from netkit.errors import ConfigError, NetkitError

Event = tuple[str, dict[str, Any]]
"""An event's name and fields."""

_STATES = {"ready": AdminState.READY, "drain": AdminState.DRAIN, "maint": AdminState.MAINT}
_CHANGE_KEYS = ("state", "enabled", "weight")


@dataclass(frozen=True)
class BackendChange:
    """What a ``PATCH /backends/{backend}`` asks: an admin state and/or a weight.

    Attributes:
        admin: the new admin state, or None to keep it.
        weight: the new weight, or None to keep it.
    """

    admin: AdminState | None = None
    weight: int | None = None

    @classmethod
    def parse(cls, body: Any) -> BackendChange:
        """The change a JSON body asks: ``{"state": "ready"|"drain"|"maint"}`` (or
        ``{"enabled": true|false}``, toxiproxy's word: ready or maint) and/or ``{"weight": N}``.

        Raises:
            ApiError: 400, a body that asks nothing or something unknown.
        """
        if not isinstance(body, dict) or not body:
            raise ApiError(f"a JSON object with {', '.join(_CHANGE_KEYS)} is expected", 400)
        unknown = [k for k in body if k not in _CHANGE_KEYS]
        if unknown:
            raise ApiError(f"unknown field {unknown[0]!r} (known: {', '.join(_CHANGE_KEYS)})", 400)
        if "state" in body and "enabled" in body:
            raise ApiError("give state or enabled, not both", 400)
        admin = None
        if "state" in body:
            admin = _STATES.get(body["state"]) if isinstance(body["state"], str) else None
            if admin is None:
                raise ApiError(f"state must be one of {', '.join(_STATES)}", 400)
        elif "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise ApiError("enabled must be true or false", 400)
            admin = AdminState.READY if body["enabled"] else AdminState.MAINT
        weight = body.get("weight")
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT
        ):
            raise ApiError(f"weight must be a whole number from 1 to {MAX_WEIGHT}", 400)
        return cls(admin, weight)


class PoolControl:
    """The runtime operations on ``pool``; each returns the backend's row and its events."""

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    def backends(self, now: float) -> list[dict[str, Any]]:
        """Every backend's row (:meth:`BackendPool.snapshot`), removed ones still
        finishing their connections excluded."""
        return self.pool.snapshot(now)

    def find(self, name: str) -> BackendState:
        """The backend called ``name`` (its endpoint).

        Raises:
            ApiError: 404, no such backend in the pool.
        """
        for state in self.pool.states:
            if state.name == name:
                return state
        raise ApiError(f"backend {name} not found", 404)

    def change(self, name: str, body: Any, now: float) -> tuple[dict[str, Any], list[Event]]:
        """``PATCH /backends/{name}``: a new admin state and/or weight.

        Raises:
            ApiError: 404, no such backend; 400, a bad body.
        """
        state = self.find(name)
        asked = BackendChange.parse(body)
        events: list[Event] = []
        if asked.weight is not None and asked.weight != state.backend.weight:
            previous = state.backend.weight
            self.pool.set_weight(name, asked.weight)
            events.append(
                ("backend_weight", {"backend": name, "weight": asked.weight, "previous": previous})
            )
        if asked.admin is not None and asked.admin is not state.admin:
            previous_admin, state.admin = state.admin, asked.admin
            events.append(
                (
                    "backend_state",
                    {
                        "backend": name,
                        "admin": str(asked.admin),
                        "previous": str(previous_admin),
                        "active": state.active,
                    },
                )
            )
            if asked.admin is not AdminState.READY and not state.active:
                events.append(drained(state))
        return state.as_dict(now), events

    def add(self, body: Any, now: float) -> tuple[dict[str, Any], list[Event]]:
        """``POST /backends`` with ``{"backend": "HOST:PORT[,weight=N][,maxconn=N][,backup]"}``.

        Raises:
            ApiError: 400, a bad body or backend; 409, the backend is in the pool already.
        """
        text = body.get("backend") if isinstance(body, dict) else None
        if not isinstance(text, str) or set(body) != {"backend"}:
            raise ApiError('a JSON object {"backend": "HOST:PORT[,weight=N]..."} is expected', 400)
        try:
            backend = parse_backend(text)
        except NetkitError as exc:
            raise ApiError(str(exc), 400) from None
        try:
            state = self.pool.add(backend, now)
        except ConfigError as exc:
            raise ApiError(str(exc), 409) from None
        return state.as_dict(now), [
            ("backend_added", {"backend": state.name, "spec": str(backend)})
        ]

    def remove(self, name: str, now: float) -> tuple[dict[str, Any], list[Event]]:
        """``DELETE /backends/{name}``: out of the pool; its connections finish.

        Raises:
            ApiError: 404, no such backend; 409, it is the last primary.
        """
        state = self.find(name)
        try:
            self.pool.remove(name)
        except ConfigError as exc:
            raise ApiError(str(exc), 409) from None
        events: list[Event] = [("backend_removed", {"backend": name, "active": state.active})]
        if not state.active:
            events.append(drained(state))
        return state.as_dict(now), events


def drained(state: BackendState) -> Event:
    """The event of a draining, disabled or removed backend whose last connection ended."""
    return (
        "backend_drained",
        {"backend": state.name, "admin": str(state.admin), "removed": state.removed},
    )
