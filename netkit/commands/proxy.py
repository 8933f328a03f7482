"""``netkit proxy``: an L4 relay (TCP/Unix/TLS on either side) with fault injection."""

from __future__ import annotations

from typing import Annotated

import typer

from netkit.commands import options as opt
from netkit.commands import udp_proxy
from netkit.commands.serving import RELAY, build_relay, run_server
from netkit.console import Output
from netkit.core.addresses import parse_stream_endpoint
from netkit.core.faults import SYNTAX, fault_kind, parse_faults
from netkit.core.units import parse_duration
from netkit.net.relay import RelayOptions
from netkit.net.tls import client_context
from netkit.net.upstreams import FixedUpstream

NAME = "proxy"
HELP = (
    "L4 relay: TCP, Unix sockets and TLS on either side, with fault injection for testing clients."
)
FAULTS = f"Faults ({SYNTAX})"


def _fault_option(name: str) -> typer.models.OptionInfo:
    # The flag and its help come from the fault's class (netkit.core.faults.FAULTS).
    kind = fault_kind(name)
    option: typer.models.OptionInfo = typer.Option(
        kind.option(), help=kind.help, rich_help_panel=FAULTS
    )
    return option


@opt.server_flags
@udp_proxy.datagram_flags
@opt.proxy_accept_flags
def proxy(
    listen: Annotated[
        str,
        typer.Argument(
            help="Where to listen: HOST:PORT, :PORT, [::1]:PORT, unix:/path, udp://HOST:PORT."
        ),
    ],
    upstream: Annotated[
        str,
        typer.Argument(
            help="Where to relay to: HOST:PORT, [::1]:PORT, unix:/path, udp://HOST:PORT."
        ),
    ],
    upstream_tls: opt.UpstreamTLS = False,
    cacert: opt.UpstreamCACert = None,
    insecure: opt.UpstreamInsecure = False,
    sni: opt.UpstreamSNI = None,
    proxy_protocol: opt.ProxyProtocol = None,
    accept: opt.ProxyAcceptFlags = opt.ProxyAcceptFlags(),
    splice: opt.Splice = True,
    connect_timeout: Annotated[
        str, typer.Option("--connect-timeout", help="Time allowed to connect to the upstream.")
    ] = "10s",
    idle_timeout: opt.RelayIdleTimeout = opt.RELAY_IDLE_TIMEOUT,
    latency: Annotated[list[str] | None, _fault_option("latency")] = None,
    bandwidth: Annotated[list[str] | None, _fault_option("bandwidth")] = None,
    slice_: Annotated[list[str] | None, _fault_option("slice")] = None,
    limit_data: Annotated[list[str] | None, _fault_option("limit-data")] = None,
    reset_after: Annotated[list[str] | None, _fault_option("reset-after")] = None,
    blackhole_after: Annotated[list[str] | None, _fault_option("blackhole-after")] = None,
    slow_close: Annotated[list[str] | None, _fault_option("slow-close")] = None,
    refuse: Annotated[list[str] | None, _fault_option("refuse")] = None,
    accept_delay: Annotated[list[str] | None, _fault_option("accept-delay")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed for fault draws and jitter (repeatable runs).",
            rich_help_panel=FAULTS,
        ),
    ] = None,
    datagram: udp_proxy.DatagramFlags = udp_proxy.DatagramFlags(),
    server: opt.ServerFlags = opt.ServerFlags(),
    json: opt.Json = False,
) -> None:
    """Relay every connection on LISTEN to UPSTREAM until SIGINT/SIGTERM/SIGHUP/SIGUSR1.

    Half-closes pass through; every byte is delivered or the connection's closed event says how
    many were not. Faults apply per connection with their probability; --json logs each one.

    With udp://LISTEN udp://UPSTREAM it relays UDP: one upstream socket per client flow (replies
    go back to the client that caused them), datagrams passed whole; a flow closes after
    --idle-timeout without a datagram either way, and --max-connections caps the flows (1024 by
    default). The datagram faults (and --latency) apply per flow, each injected fault a JSON
    event; --seed repeats a run (the seed used is in the listening event).
    """
    out = Output(json)
    faults = parse_faults(
        {
            "latency": latency, "bandwidth": bandwidth, "slice": slice_, "limit-data": limit_data,
            "reset-after": reset_after, "blackhole-after": blackhole_after,
            "slow-close": slow_close, "accept-delay": accept_delay, "refuse": refuse,
        }
    )  # fmt: skip
    idle = opt.idle_timeout(idle_timeout)
    if udp_proxy.is_udp(listen, upstream):
        udp_proxy.serve(
            out, listen, upstream, faults=faults + datagram.faults(), seed=seed,
            idle_timeout=idle, server=server, stream_flags={
                "--upstream-tls": upstream_tls, "--cacert": cacert is not None,
                "--insecure": insecure, "--sni": sni is not None,
                "--proxy-protocol": proxy_protocol is not None, "--no-splice": not splice,
                "--accept-proxy-protocol": accept.accept_proxy_protocol is not None,
            },
        )  # fmt: skip
    udp_proxy.refuse_for_streams(datagram)
    listen_at = parse_stream_endpoint(listen)
    target = parse_stream_endpoint(upstream)
    up_tls = opt.client_tls(upstream_tls, cacert, None, None, insecure, sni)
    upstream_ssl = client_context(up_tls) if up_tls.enabled else None
    timeout = parse_duration(connect_timeout, option="--connect-timeout", positive=True)
    options = RelayOptions(
        upstream_tls=upstream_ssl,
        upstream_sni=sni or (target.host if hasattr(target, "host") else "localhost"),
        splice=splice,
        proxy_protocol=opt.proxy_protocol_version(proxy_protocol),
        **accept.relay_options(),
        idle_timeout=idle,
        faults=faults,
        seed=seed,
    )
    code = run_server(
        out,
        name="proxy",
        endpoint=listen_at,
        build=build_relay(FixedUpstream(target, timeout=timeout), options),
        flags=server,
        presentation=RELAY,
        per_connection=2,  # two sockets; pipes come from a pool, only while bytes are in flight
        options=opt.socket_options(None, None, False),
        details={
            "upstream": str(target),
            "upstream_tls": upstream_ssl is not None,
            "proxy_protocol": proxy_protocol,
            "accept_proxy_protocol": accept.accept_proxy_protocol,
            "faults": [f.as_dict() for f in faults],
            "seed": seed,
            "idle_timeout_s": idle,
        },
        fields=lambda secure: {"splice": options.can_splice(client_tls=secure)},
    )
    raise typer.Exit(code)
