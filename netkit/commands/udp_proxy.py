"""``netkit proxy udp://LISTEN udp://UPSTREAM``: the UDP relay's flags and its presentation.

``proxy`` hands a command line with ``udp://`` endpoints here (:func:`serve`); the relay
itself is :class:`~netkit.net.udp_relay.UDPRelayServer`, run by the one server presenter
(:func:`~netkit.commands.serving.run_server`). The datagram fault flags are
:class:`DatagramFlags`, one group that :func:`datagram_flags` splices into ``proxy``'s
options; a TCP relay refuses them, and a UDP relay refuses the flags that only streams take.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

import typer

from netkit.commands import options as opt
from netkit.commands.serving import Companion, Presentation, run_server
from netkit.console import Output
from netkit.core.addresses import UDPEndpoint, parse_endpoint
from netkit.core.datagram_faults import DATAGRAM_ONLY, check_transport
from netkit.core.faults import SYNTAX, Fault
from netkit.core.timeline import BOUNDS, TimedFault, Timeline
from netkit.core.units import format_size
from netkit.errors import ConfigError
from netkit.net.sockets import SocketOptions
from netkit.net.udp_relay import (
    MAX_FLOWS,
    RECEIVE_BUFFER,
    UDPRelayOptions,
    UDPRelayServer,
    UDPRelayStats,
    resolve_upstream,
)

PANEL = f"Datagram faults (UDP only; {SYNTAX}{BOUNDS})"


def _kind(name: str) -> type[Fault]:
    # The datagram fault class for a flag name or a DatagramFlags field (burst_loss).
    return next(k for k in DATAGRAM_ONLY if k.name == name.replace("_", "-"))


def _option(name: str) -> Any:
    # The flag and its help come from the fault's class.
    kind = _kind(name)
    return typer.Option(kind.option(), help=kind.help, rich_help_panel=PANEL)


@dataclass(frozen=True)
class DatagramFlags:
    """The datagram fault flags of ``proxy`` (UDP relays only), each repeatable."""

    drop_first: Annotated[list[str] | None, _option("drop-first")] = None
    loss: Annotated[list[str] | None, _option("loss")] = None
    burst_loss: Annotated[list[str] | None, _option("burst-loss")] = None
    corrupt: Annotated[list[str] | None, _option("corrupt")] = None
    truncate: Annotated[list[str] | None, _option("truncate")] = None
    duplicate: Annotated[list[str] | None, _option("duplicate")] = None
    rate: Annotated[list[str] | None, _option("rate")] = None
    reorder: Annotated[list[str] | None, _option("reorder")] = None

    def faults(self) -> list[Fault]:
        """The faults the flags give, in flag order (time bounds aside).

        Raises:
            ConfigError: a bad value.
        """
        return [t.fault for t in self.timed()]

    def timed(self) -> list[TimedFault]:
        """The faults the flags give, in flag order, with their ``for=`` / ``after=``.

        Raises:
            ConfigError: a bad value.
        """
        return [
            TimedFault.parse(_kind(f.name).name, value)
            for f in fields(self)
            for value in getattr(self, f.name) or ()
        ]


Command = TypeVar("Command", bound=Callable[..., Any])


def datagram_flags(command: Command) -> Command:
    """Give ``command`` the datagram fault flags in place of its ``datagram`` parameter."""
    return opt.flag_group(DatagramFlags, "datagram")(command)


def is_udp(listen: str, upstream: str) -> bool:
    """True when either endpoint is ``udp://`` (both must be, or :func:`serve` says so)."""
    return any(text.strip().lower().startswith("udp://") for text in (listen, upstream))


def udp_summary(s: dict[str, Any]) -> str:
    """The summary line of a UDP relay."""
    return (
        f"relayed {s['flows']} flow(s): {s['datagrams_up']} datagram(s) up "
        f"({format_size(s['bytes_up'])}), {s['datagrams_down']} down "
        f"({format_size(s['bytes_down'])})"
        + (f", {s['faults_injected']} fault(s) injected" if s["faults_injected"] else "")
        + (f", {s['rejected']} datagram(s) turned away" if s["rejected"] else "")
        + (f", {s['denied']} datagram(s) denied" if s.get("denied") else "")
        + (f", {s['cut_at_drain']} flow(s) cut at drain" if s["cut_at_drain"] else "")
    )


UDP_RELAY = Presentation(udp_summary, UDPRelayStats)


def _refuse_stream_flags(given: dict[str, bool], server: opt.ServerFlags) -> None:
    # Flags a stream relay takes and a UDP relay cannot honour: said, not ignored.
    if server.workers > 1:
        given["--workers"] = True
    if server.socket_mode != opt.SOCKET_MODE:
        given["--socket-mode"] = True
    for flag, value in (
        ("--cert", server.cert),
        ("--key", server.key),
        ("--tls-self-signed", server.tls_self_signed),
        ("--client-ca", server.client_ca),
    ):
        given[flag] = bool(value)
    for flag, is_given in given.items():
        if is_given:
            raise ConfigError(f"{flag} does not apply to a UDP relay (udp://LISTEN udp://UPSTREAM)")


def serve(
    out: Output,
    listen: str,
    upstream: str,
    *,
    faults: list[Fault],
    seed: int | None,
    idle_timeout: float | None,
    server: opt.ServerFlags,
    stream_flags: dict[str, bool],
    timeline: Timeline | None = None,
    bounded: list[TimedFault] | None = None,
    beside: Companion | None = None,
) -> None:
    """Run the UDP relay until a stop signal, and exit with its code.

    Args:
        faults: every fault flag's fault (stream faults other than latency are refused).
        stream_flags: the stream-only flags, each with whether it was given (refused if so).
        timeline: the ``--timeline`` (its steps are checked for UDP here).
        bounded: the fault flags with ``for=`` / ``after=`` (checked for UDP here).
        beside: what runs beside the relay (the timeline's driver).

    Raises:
        ConfigError: a flag a UDP relay does not take, or an endpoint that is not UDP.
        typer.Exit: with the exit code, once the relay has stopped.
    """
    listen_at = parse_endpoint(listen, default="udp")
    target = parse_endpoint(upstream, default="udp")
    for text, endpoint in ((listen, listen_at), (upstream, target)):
        if not isinstance(endpoint, UDPEndpoint):
            raise ConfigError(
                f"endpoint {text!r}: a UDP relay relays UDP to UDP (udp://HOST:PORT on both sides)"
            )
    assert isinstance(listen_at, UDPEndpoint) and isinstance(target, UDPEndpoint)
    check_transport([*faults, *(t.fault for t in bounded or ())], "udp")
    if timeline is not None:
        timeline.check("udp")
    _refuse_stream_flags(dict(stream_flags), server)
    upstream_address = resolve_upstream(target)
    chosen = seed if seed is not None else random.SystemRandom().getrandbits(32)
    max_flows = server.max_connections or MAX_FLOWS
    options = UDPRelayOptions(idle_timeout=idle_timeout, faults=faults, seed=chosen)
    code = run_server(
        out,
        name="proxy",
        endpoint=listen_at,
        build=lambda sock, *, on_event, **_: UDPRelayServer(
            sock, upstream_address, options, max_flows=max_flows, on_event=on_event
        ),
        flags=server,
        presentation=UDP_RELAY,
        details={
            "upstream": str(target),
            "faults": [f.as_dict() for f in faults] + [t.as_dict() for t in bounded or ()],
            "seed": chosen,
            "idle_timeout_s": idle_timeout,
            "max_flows": max_flows,
        },
        options=SocketOptions(rcvbuf=RECEIVE_BUFFER),
        url=lambda bound, _tls: f"udp://{bound}",
        fields=lambda _tls: {"timeline": timeline.as_dict()} if timeline is not None else {},
        companion=beside,
    )
    raise typer.Exit(code)
