"""The flags of the control server beside ``lb`` and ``proxy`` (``--metrics``, ``lb --api``),
turned into its listener and what runs beside the relay (:mod:`netkit.net.control`).

The listener is made at once, so that the ``listening`` event can say where it is; the
control module (and prometheus_client with it) is imported only when a flag asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from netkit.commands.serving import Companion, together
from netkit.core.addresses import parse_stream_endpoint
from netkit.errors import UsageError
from netkit.net.server import make_listener
from netkit.net.sockets import listener_address

RelaysOf = Callable[[], Iterable[tuple[str, Any]]]


def control_servers(
    details: dict[str, Any],
    *,
    name: str,
    metrics: str | None,
    api: str | None = None,
    workers: int = 1,
    relays: RelaysOf | None = None,
) -> Companion | None:
    """The control servers ``--metrics`` and ``--api`` ask for, listening now (their addresses
    go into ``details``, the ``listening`` event's fields); None when neither is given.

    Args:
        name: the relay's name in the metrics (``lb``, or proxy's ``--name``).
        api: lb's runtime API (the backends' routes, and the metrics' too).
        relays: the relays the metrics cover, when not just the command's own server.

    Raises:
        UsageError: with ``--workers``: each worker has its own counters and pool.
    """
    asked = [flag for flag, value in (("--metrics", metrics), ("--api", api)) if value]
    if not asked:
        return None
    if workers > 1:
        raise UsageError(
            f"{' and '.join(asked)} serve one process's counters and backends: drop --workers"
        )
    from netkit.net.control import control_companion

    beside: list[Companion] = []
    for flag, text, control in (("metrics", metrics, False), ("api", api, True)):
        if text is not None:
            sock = make_listener(parse_stream_endpoint(text))
            details[flag] = listener_address(sock)
            beside.append(control_companion(sock, name=name, relays=relays, control=control))
    return together(*beside)
