"""``netkit proxy``: an L4 relay (TCP/Unix/TLS on either side) with fault injection."""

from __future__ import annotations

import json as pyjson
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from netkit.commands import options as opt
from netkit.commands import udp_proxy
from netkit.commands.control import control_servers
from netkit.commands.serving import RELAY, build_relay, build_stream, run_server, together
from netkit.commands.timeline_flags import TimelineFlags, timeline_flags
from netkit.commands.upstream_tls import UpstreamTLSFlags, upstream_tls_flags
from netkit.console import Output
from netkit.core.addresses import parse_stream_endpoint
from netkit.core.datagram_faults import check_transport
from netkit.core.faults import SYNTAX, fault_kind
from netkit.core.http_api import ApiError
from netkit.core.timeline import BOUNDS, parse_timed_faults, split_bounded
from netkit.core.toxiproxy import ProxySpec, parse_populate
from netkit.core.units import parse_duration
from netkit.errors import ConfigError, UsageError
from netkit.net.http_api import api_connection
from netkit.net.proxy_registry import ProxyRegistry
from netkit.net.relay import RelayOptions, RelayServer
from netkit.net.server import make_listener
from netkit.net.sockets import listener_address
from netkit.net.timeline import companion as timeline_companion
from netkit.net.tls import client_context
from netkit.net.toxiproxy import ToxiproxyApi, companion
from netkit.net.upstreams import FixedUpstream

NAME = "proxy"
HELP = (
    "L4 relay: TCP, Unix sockets and TLS on either side, with fault injection for testing clients."
)
FAULTS = f"Faults ({SYNTAX}{BOUNDS})"
API = "Control API (toxiproxy)"


def _fault_option(name: str) -> typer.models.OptionInfo:
    # The flag and its help come from the fault's class (netkit.core.faults.FAULTS).
    kind = fault_kind(name)
    option: typer.models.OptionInfo = typer.Option(
        kind.option(), help=kind.help, rich_help_panel=FAULTS
    )
    return option


app = typer.Typer(add_completion=False)
"""The command, for :mod:`netkit.cli` (which loads this module only when it is run)."""


@app.command(NAME, help=HELP)
@opt.server_flags
@udp_proxy.datagram_flags
@opt.proxy_accept_flags
@timeline_flags
@upstream_tls_flags
def proxy(
    listen: Annotated[
        str | None,
        typer.Argument(
            help="Where to listen: HOST:PORT, :PORT, [::1]:PORT, unix:/path, udp://HOST:PORT"
            " (none with --api: proxies come from the API)."
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Argument(
            help="Where to relay to: HOST:PORT, [::1]:PORT, unix:/path, udp://HOST:PORT."
        ),
    ] = None,
    to_upstream: UpstreamTLSFlags = UpstreamTLSFlags(),
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
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="HOST:PORT",
            help="Serve toxiproxy's HTTP API on HOST:PORT (loopback unless a host is given;"
            " :0 picks a port): toxiproxy clients add, change and remove faults while it runs.",
            rich_help_panel=API,
        ),
    ] = None,
    name: Annotated[
        str,
        typer.Option(
            "--name", help="The API's name for the LISTEN → UPSTREAM proxy.", rich_help_panel=API
        ),
    ] = "proxy",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Create the proxies of this JSON file at start-up (toxiproxy-server's -config"
            " format: [{name, listen, upstream, enabled}]).",
            rich_help_panel=API,
        ),
    ] = None,
    metrics: opt.Metrics = None,
    datagram: udp_proxy.DatagramFlags = udp_proxy.DatagramFlags(),
    timeline: TimelineFlags = TimelineFlags(),
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

    With --api, toxiproxy's clients control a TCP or Unix proxy while it runs, and can create
    more; --api without LISTEN and UPSTREAM starts with no proxy, as toxiproxy-server does.
    """
    out = Output(json)
    _check_api_usage(listen, upstream, api, config, server)
    timed = parse_timed_faults(
        {
            "latency": latency, "bandwidth": bandwidth, "slice": slice_, "limit-data": limit_data,
            "reset-after": reset_after, "blackhole-after": blackhole_after,
            "slow-close": slow_close, "accept-delay": accept_delay, "refuse": refuse,
        }
    )  # fmt: skip
    faults, bounded = split_bounded(timed + datagram.timed())
    steps = timeline.parse()
    idle = opt.idle_timeout(idle_timeout)
    if listen is not None and upstream is not None and udp_proxy.is_udp(listen, upstream):
        if api is not None or metrics is not None:
            flag = "--api" if api is not None else "--metrics"
            raise UsageError(f"{flag} covers TCP and Unix-socket proxies, not a UDP relay")
        udp_proxy.serve(
            out, listen, upstream, faults=faults, seed=seed, timeline=steps, bounded=bounded,
            idle_timeout=idle, server=server, beside=timeline_companion(steps, bounded),
            stream_flags=to_upstream.flags_given() | {
                "--proxy-protocol": proxy_protocol is not None, "--no-splice": not splice,
                "--accept-proxy-protocol": accept.accept_proxy_protocol is not None,
            },
        )  # fmt: skip
    check_transport([*faults, *(t.fault for t in bounded)], "tcp")
    if steps is not None:
        steps.check("tcp")
    listen_at = parse_stream_endpoint(listen) if listen is not None else None
    target = parse_stream_endpoint(upstream) if upstream is not None else None
    up_tls = to_upstream.client_tls()
    upstream_ssl = client_context(up_tls) if up_tls.enabled else None
    sni = to_upstream.onward_sni
    timeout = parse_duration(connect_timeout, option="--connect-timeout", positive=True)
    options = RelayOptions(
        upstream_tls=upstream_ssl,
        upstream_sni=sni or (getattr(target, "host", None) or "localhost"),
        splice=splice,
        proxy_protocol=opt.proxy_protocol_version(proxy_protocol),
        **accept.relay_options(),
        idle_timeout=idle,
        faults=faults,
        seed=seed,
    )
    if listen_at is None or target is None:  # toxiproxy-server: proxies come from the API
        if faults or bounded or steps is not None or seed is not None:
            raise UsageError(
                "fault flags, --timeline and --seed apply to LISTEN → UPSTREAM: give both"
            )
        assert api is not None
        raise typer.Exit(_serve_api(out, api, config, options, timeout, server, metrics))
    details = {
        "upstream": str(target),
        "upstream_tls": upstream_ssl is not None,
        "proxy_protocol": proxy_protocol,
        "accept_proxy_protocol": accept.accept_proxy_protocol,
        "faults": [f.as_dict() for f in faults] + [t.as_dict() for t in bounded],
        "seed": seed,
        "idle_timeout_s": idle,
    }
    beside = None
    relays = None
    if api is not None:
        api_sock = make_listener(parse_stream_endpoint(api))  # now: the listening event says where
        details |= {"api": listener_address(api_sock), "name": name}
        registry = ProxyRegistry(replace(options, faults=[]), connect_timeout=timeout)
        initial = ProxySpec(name, str(listen_at), str(target), seed=seed)
        beside = companion(registry, api=api_sock, adopt=initial, populate=_config(config))
        relays = _registry_relays(registry)
    watch = control_servers(
        details, name=name, metrics=metrics, relays=relays, workers=server.workers
    )
    beside = together(beside, timeline_companion(steps, bounded), watch.companion)
    code = run_server(
        out,
        name="proxy",
        endpoint=listen_at,
        build=build_relay(FixedUpstream(target, timeout=timeout), options),
        flags=server,
        presentation=RELAY,
        per_connection=2,  # two sockets; pipes come from a pool, only while bytes are in flight
        options=opt.socket_options(None, None, False),
        details=details,
        fields=lambda secure: (
            {"splice": options.can_splice(client_tls=secure)}
            | ({"timeline": steps.as_dict()} if steps is not None else {})
        ),
        companion=beside,
        supervise=watch.supervise,
    )
    raise typer.Exit(code)


def _check_api_usage(
    listen: str | None,
    upstream: str | None,
    api: str | None,
    config: Path | None,
    server: opt.ServerFlags,
) -> None:
    # LISTEN and UPSTREAM go together; without them, --api is needed; --api's own flags.
    if (listen is None) != (upstream is None):
        raise UsageError("give LISTEN and UPSTREAM, or neither (with --api)")
    if listen is None and api is None:
        raise UsageError(
            "give LISTEN and UPSTREAM", hint="or --api HOST:PORT to create proxies through the API"
        )
    if api is None and config is not None:
        raise UsageError("--config needs --api (it creates proxies the API manages)")
    if api is not None and server.workers > 1:
        raise UsageError("--api runs in one process: drop --workers")


def _serve_api(
    out: Output,
    api: str,
    config: Path | None,
    options: RelayOptions,
    timeout: float,
    server: opt.ServerFlags,
    metrics: str | None,
) -> int:
    # The drop-in for toxiproxy-server: the API is the server, with no proxy until asked.
    registry = ProxyRegistry(replace(options, faults=[]), connect_timeout=timeout)
    proxies = _config(config)
    details: dict[str, Any] = {"proxies": [p.name for p in proxies]}
    watch = control_servers(
        details, name="proxy", metrics=metrics, relays=_registry_relays(registry)
    )
    return run_server(
        out,
        name="proxy API",
        endpoint=parse_stream_endpoint(api),
        build=build_stream(api_connection(ToxiproxyApi(registry))),
        flags=server,
        details=details,
        url=lambda address, tls: f"{'https' if tls else 'http'}://{address}",
        companion=together(companion(registry, populate=proxies), watch.companion),
    )


def _registry_relays(registry: ProxyRegistry) -> Callable[[], list[tuple[str, RelayServer]]]:
    # The metrics of every proxy the API manages, by name, as they are at each scrape.
    return lambda: [(p.spec.name, p.server) for p in registry]


def _config(path: Path | None) -> list[ProxySpec]:
    return read_config(path) if path is not None else []


def read_config(path: Path) -> list[ProxySpec]:
    """The proxies of a ``--config`` file (toxiproxy's populate JSON).

    Raises:
        ConfigError: the file cannot be read or holds no list of proxies.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    try:
        return parse_populate(pyjson.loads(text))
    except ValueError as exc:
        raise ConfigError(f"--config {path}: not JSON ({exc})") from None
    except ApiError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
