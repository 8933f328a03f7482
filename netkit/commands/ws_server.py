"""``netkit ws-server``: a WebSocket server (echo, broadcast, sink) on TCP, TLS or Unix sockets."""

from __future__ import annotations

import itertools
import random
from typing import Annotated, Any

import click
import typer
from click.core import ParameterSource
from rich.markup import escape

from netkit.commands import options as opt
from netkit.commands.serving import build_stream, run_server
from netkit.commands.ws_bridge import bridge_target, serve_to
from netkit.console import Output
from netkit.core.units import parse_size
from netkit.core.ws.chaos import CHAOS_FAULTS, SYNTAX, parse_chaos_specs
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.program import Framing, Program
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
from netkit.net.ws_chaos import ChaosConnection
from netkit.net.ws_exec import ProgramConnection
from netkit.net.ws_server import Mode, ModeConnection, Room

NAME = "ws-server"
HELP = "WebSocket server: echo, broadcast (chat room) or sink, on TCP, TLS or Unix sockets."

DEFAULT_ENDPOINT = "127.0.0.1:8765"


app = typer.Typer(add_completion=False)
"""The command, for :mod:`netkit.cli` (which loads this module only when it is run)."""


@app.command(NAME, help=HELP)
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
    exec_: Annotated[
        str | None,
        typer.Option(
            "--exec",
            help="Serve each client with its own process, as websocketd does: /bin/sh -c CMD, "
            "each message a line on its stdin, each line of its stdout a text message, its "
            "stderr logged; CGI variables (REMOTE_ADDR, QUERY_STRING, HTTP_* ...) in its "
            "environment. It ending closes the connection (1000, or 1011 with its exit status).",
        ),
    ] = None,
    binary: Annotated[
        bool,
        typer.Option(
            "--binary",
            help="With --exec: messages go to stdin raw (no newline added), each chunk of "
            "stdout is a binary message.",
        ),
    ] = False,
    kill_after: Annotated[
        str,
        typer.Option(
            "--kill-after",
            help="With --exec: when the client goes, its process gets SIGTERM, then SIGKILL "
            "this long after.",
        ),
    ] = "2s",
    chaos: Annotated[
        list[str] | None,
        typer.Option(
            "--chaos",
            metavar="SPEC",
            help=f"A fault for testing clients, {SYNTAX} (repeatable): "
            + "; ".join(f"{kind.name}: {kind.help}" for kind in CHAOS_FAULTS)
            + ". p is drawn per message, ping or connection; each fault applied is a fault event.",
            rich_help_panel="Chaos",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed for --chaos draws (repeatable runs; the listening event shows the one used).",
            rich_help_panel="Chaos",
        ),
    ] = None,
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

    With --exec, --max-connections caps the processes too: a connection counts until its
    process is reaped.
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
    program = exec_program(exec_, binary=binary, kill_after=kill_after, mode=handling, limit=limit)
    faults = parse_chaos_specs(chaos or ())
    if faults and server.workers > 1:
        raise ConfigError("--chaos needs a single process: its draws number the connections")
    if seed is not None and not faults:
        raise ConfigError("--seed applies to --chaos: give both")
    chaos_seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    numbers = itertools.count(1)
    if program is not None and faults:
        raise UsageError("--exec and --chaos cannot be combined: the process answers, not netkit")

    def log(event: str, fields: dict[str, Any]) -> None:
        if event == "close" and "error" in fields and not out.json:
            out.warn(f"{fields['peer']}: closed with {fields['sent_code']}: {fields['error']}")
        line = _fault_line(fields) if event == "fault" else program_line(event, fields)
        out.event(event, line, **fields)

    def url(address: str, secure: bool) -> str:
        return server_url(address, secure, paths[0] if paths else "/")

    if to is not None:
        if click.get_current_context().get_parameter_source("mode") is not ParameterSource.DEFAULT:
            raise UsageError("--to relays every message to ENDPOINT: it cannot be used with --mode")
        if program is not None or faults:
            raise UsageError("--to relays every message to ENDPOINT: not with --exec or --chaos")
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
        if program is not None:
            return ProgramConnection(
                handshake,
                program=program,
                log=log,
                log_messages=out.json,
                max_size=limit,
                timeouts=timeouts,
                secure=server.tls.enabled,
            )
        options: dict[str, Any] = {
            "mode": handling,
            "room": room,
            "log": log,
            "log_messages": out.json,
            "max_size": limit,
            "timeouts": timeouts,
            "message_logger": lambda peer: out.prepared_event(
                "message", ("type", "size"), peer=peer
            ),
        }
        if faults:
            chaotic: dict[str, Any] = {
                "chaos": faults,
                "seed": chaos_seed,
                "numbers": numbers.__next__,
            }
            return ChaosConnection(handshake, **chaotic, **options)
        return ModeConnection(handshake, **options)

    code = run_server(
        out,
        name="ws-server",
        endpoint=where,
        build=build_stream(factory),
        flags=server,
        options=opt.socket_options(sndbuf, rcvbuf, keepalive),
        # The faults as given for the human line; as objects in the JSON event (fields win).
        details={"mode": "exec" if program else mode, "compress": compress, "max_size": limit}
        | ({"chaos": " ".join(chaos or ()), "seed": chaos_seed} if faults else {}),
        fields=lambda secure: {"chaos": [f.as_dict() for f in faults]} if faults else {},
        per_connection=4 if program else 1,  # the socket and the process's three pipes
        url=url,
    )
    raise typer.Exit(code)


def exec_program(
    command: str | None, *, binary: bool, kill_after: str, mode: Mode, limit: int
) -> Program | None:
    """What --exec runs (None without it), its flags checked."""
    if command is None:
        if binary:
            raise UsageError("--binary needs --exec")
        return None
    if not command.strip():
        raise UsageError("--exec needs a command")
    if mode is not Mode.ECHO:
        raise UsageError(f"--exec and --mode {mode.value} cannot be combined: the process answers")
    return Program(
        command,
        framing=Framing.BINARY if binary else Framing.LINES,
        kill_after=opt.duration_or_off(kill_after, "--kill-after") or 0.0,
        max_line=limit,
    )


def program_line(event: str, fields: dict[str, Any]) -> str | None:
    """The human line of an --exec process's event (None for the others: not shown)."""
    peer, pid = fields.get("peer"), fields.get("pid")
    if event == "stderr":
        return escape(f"{peer} [{pid}] {fields['line']}")
    if event == "exit" and fields["status"] != 0 and not fields["client_gone"]:
        return escape(f"{peer} [{pid}] {fields['reason']}")
    if event == "exec_failed":
        return escape(f"{peer}: {fields['error']}")
    return None


def _fault_line(fields: dict[str, Any]) -> str:
    """The human line of a ``--chaos`` fault event: ``PEER: fragment frames=8 message=3``."""
    details = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("peer", "fault"))
    return escape(f"{fields['peer']}: {fields['fault']} {details}".rstrip())
