"""``netkit ws-server``: a WebSocket server (echo, broadcast, sink) on TCP, TLS or Unix sockets."""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from click.core import ParameterSource

from netkit.commands import options as opt
from netkit.commands.serving import build_stream, run_server
from netkit.commands.ws_bridge import bridge_target, serve_to
from netkit.console import Output
from netkit.core.units import parse_size
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.server import (
    ServerHandshake,
    listen_address,
    parse_origins,
    resource_path,
    server_url,
)
from netkit.errors import ConfigError, UsageError
from netkit.net.server import ServerConnection
from netkit.net.ws import WSTimeouts
from netkit.net.ws_bridge_serve import BridgeConnection
from netkit.net.ws_server import Mode, ModeConnection, Room

NAME = "ws-server"
HELP = "WebSocket server: echo, broadcast (chat room) or sink, on TCP, TLS or Unix sockets."

DEFAULT_ENDPOINT = "127.0.0.1:8765"


@opt.server_flags
def ws_server(
    endpoint: Annotated[
        str,
        typer.Argument(
            help="Where to listen: HOST:PORT, :PORT, [::1]:PORT, unix:/path, ws://HOST:PORT/path, wss://..., ws+unix:///path.sock."
        ),
    ] = DEFAULT_ENDPOINT,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            "-m",
            click_type=click.Choice([m.value for m in Mode]),
            help="echo: send each message back; broadcast: to every other client (a chat room); sink: read and discard.",
        ),
    ] = "echo",
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="Accept upgrades only on this path (repeatable; 404 otherwise); chat means /chat.",
        ),
    ] = None,
    subprotocol: Annotated[
        list[str] | None,
        typer.Option(
            "--subprotocol", help="Subprotocols we speak, in order of preference (repeatable)."
        ),
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="Allowed Origin, as browsers send it: scheme://host[:port] (repeatable; 403 "
            "otherwise). '*' admits any; 'none' admits clients that send no Origin.",
        ),
    ] = None,
    max_size: Annotated[
        str, typer.Option("--max-size", help="Largest message accepted (1009 beyond).")
    ] = "1MiB",
    compress: Annotated[
        bool, typer.Option("--compress", help="Accept permessage-deflate (RFC 7692).")
    ] = False,
    ping_interval: opt.PingInterval = opt.PING_INTERVAL,
    ping_timeout: opt.PingTimeout = opt.PING_TIMEOUT,
    handshake_timeout: Annotated[
        str,
        typer.Option(
            "--handshake-timeout",
            help="Close connections that do not finish the opening handshake in time.",
        ),
    ] = "10s",
    close_timeout: Annotated[
        str,
        typer.Option(
            "--close-timeout", help="How long to wait for the peer's part of the closing handshake."
        ),
    ] = "10s",
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Bridge: relay each client to this TCP or Unix endpoint (HOST:PORT, "
            "unix:/path), binary messages <-> bytes; its EOF closes with 1000, a reset with "
            "1011, and a close from the client shuts down its writing side.",
        ),
    ] = None,
    upstream_tls: opt.UpstreamTLS = False,
    cacert: opt.UpstreamCACert = None,
    insecure: opt.UpstreamInsecure = False,
    sni: opt.UpstreamSNI = None,
    server: opt.ServerFlags = opt.ServerFlags(),
    sndbuf: opt.SendBuffer = None,
    rcvbuf: opt.RecvBuffer = None,
    keepalive: opt.KeepAlive = False,
    json: opt.Json = False,
) -> None:
    """Serve WebSocket clients until SIGINT/SIGTERM; GET /health answers 200 ok.

    On SIGTERM every client gets close 1001 (going away) and the server waits for the closing
    handshakes, up to --drain-timeout. --json logs every connection's open and close (with
    codes), and every message, ping and pong.

    A client over --max-connections, or still in its opening handshake at shutdown, gets
    503 with Retry-After: 1 (as websocketd and HAProxy answer); methods other than GET and
    HEAD get 405. Each refusal is a rejected event, counted in the summary.
    """
    out = Output(json)
    where, wants_tls, url_path = listen_address(endpoint)
    if wants_tls and not server.tls.enabled:
        raise ConfigError("wss:// needs --cert/--key or --tls-self-signed")
    handling = Mode(mode)
    if handling.single_process and server.workers > 1:
        raise ConfigError(f"--mode {mode} needs a single process: every client must share the room")
    paths = [resource_path(p) for p in path or ([] if url_path is None else [url_path])] or None
    limit = parse_size(max_size, option="--max-size")
    if limit <= 0:
        raise ConfigError("--max-size must be at least 1 byte")
    ping_every, ping_wait = opt.pings(ping_interval, ping_timeout)
    timeouts = WSTimeouts(
        open=opt.duration_or_off(handshake_timeout, "--handshake-timeout"),
        close=opt.duration_or_off(close_timeout, "--close-timeout"),
        ping_interval=ping_every,
        ping_timeout=ping_wait,
    )
    handshake = ServerHandshake(
        paths=paths,
        origins=parse_origins(origin or ()),
        subprotocols=tuple(subprotocol or ()),
        deflate=DeflateParams() if compress else None,
    )
    room = Room()

    def log(event: str, fields: dict[str, Any]) -> None:
        if event == "close" and "error" in fields and not out.json:
            out.warn(f"{fields['peer']}: closed with {fields['sent_code']}: {fields['error']}")
        out.event(event, None, **fields)

    def url(address: str, secure: bool) -> str:
        return server_url(address, secure, paths[0] if paths else "/")

    if to is not None:
        if click.get_current_context().get_parameter_source("mode") is not ParameterSource.DEFAULT:
            raise UsageError("--to relays every message to ENDPOINT: it cannot be used with --mode")
        target = bridge_target(to, upstream_tls, cacert, insecure, sni)
        code = serve_to(
            out,
            endpoint=where,
            factory=lambda: BridgeConnection(
                handshake, target, max_size=limit, timeouts=timeouts, on_event=log
            ),
            flags=server,
            options=opt.socket_options(sndbuf, rcvbuf, keepalive),
            details={"to": str(target.endpoint), "upstream_tls": target.ssl_context is not None},
            url=url,
        )
        raise typer.Exit(code)
    elif upstream_tls or cacert is not None or insecure or sni is not None:
        raise UsageError("--upstream-tls, --cacert, --insecure and --sni need --to")

    def factory() -> ServerConnection:
        return ModeConnection(
            handshake,
            mode=handling,
            room=room,
            log=log,
            log_messages=out.json,
            max_size=limit,
            timeouts=timeouts,
            message_logger=lambda peer: out.prepared_event("message", ("type", "size"), peer=peer),
        )

    code = run_server(
        out,
        name="ws-server",
        endpoint=where,
        build=build_stream(factory),
        flags=server,
        options=opt.socket_options(sndbuf, rcvbuf, keepalive),
        details={"mode": mode, "compress": compress, "max_size": limit},
        url=url,
    )
    raise typer.Exit(code)
