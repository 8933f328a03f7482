"""``netkit tcp-echo``: a TCP/Unix echo server, and a client that verifies and times echoes."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Annotated

import click
import typer
from rich.markup import escape

from netkit.commands import options as opt
from netkit.console import Output
from netkit.core.addresses import parse_stream_endpoint
from netkit.core.probe import make_probe
from netkit.core.stats import RTTSummary
from netkit.core.units import format_size, parse_duration, parse_size
from netkit.errors import ConfigError
from netkit.net import runtime
from netkit.net.connect import open_stream
from netkit.net.echo import (
    EchoClientConnection,
    EchoConnection,
    FramedEchoConnection,
    check_max_frame,
    echo_once,
)
from netkit.net.server import ServerConnection
from netkit.net.streamtest import StreamTestConnection
from netkit.net.tls import client_context
from netkit.status import ExitStatus

app = typer.Typer(
    name="tcp-echo",
    help="TCP / Unix-socket echo server, and a client that verifies and times the echo.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_ENDPOINT = "127.0.0.1:7007"


@app.command()
@opt.server_flags
def serve(
    endpoint: Annotated[
        str,
        typer.Argument(
            help="Where to listen: HOST:PORT, :PORT (loopback), [::1]:PORT, unix:/path."
        ),
    ] = DEFAULT_ENDPOINT,
    framed: Annotated[
        bool,
        typer.Option(
            "--framed", help="Echo whole length-prefixed frames (4-byte big-endian length)."
        ),
    ] = False,
    max_frame: Annotated[
        str, typer.Option("--max-frame", help="Largest frame accepted with --framed.")
    ] = "16MiB",
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            click_type=click.Choice(["echo", "stream"]),
            help="echo: write every byte back. stream: iperf3's server for 'netkit bench"
            " --scenario stream': each connection is a sink, a source or both, as the client"
            " asks (forward, --reverse, --bidir), and ends with the server's byte counts.",
        ),
    ] = "echo",
    idle_timeout: opt.IdleTimeout = None,
    server: opt.ServerFlags = opt.ServerFlags(),
    sndbuf: opt.SendBuffer = None,
    rcvbuf: opt.RecvBuffer = None,
    keepalive: opt.KeepAlive = False,
    json: opt.Json = False,
) -> None:
    """Echo every byte (or every frame) back to the sender until SIGINT/SIGTERM/SIGHUP/SIGUSR1.

    With --mode stream, serve iperf3-style stream tests instead ('netkit bench --scenario
    stream', with --reverse or --bidir): the client sends 'NETKIT-STREAM/1 forward' (or
    reverse, bidir) and a newline, the server answers 'NETKIT-STREAM/1 ok', the data flows,
    and at the client's half-close the server stops sending, writes a 32-byte record
    ('NKSTRES1', bytes received, bytes sent, nanoseconds: big-endian 64-bit) and closes.
    """
    # The server lifecycle (and the relay it shares with proxy) loads only for serve: a
    # client run starts without it (issue 18 item 4).
    from netkit.commands.serving import build_stream, run_server

    out = Output(json)
    where = parse_stream_endpoint(endpoint)
    frame_limit = check_max_frame(parse_size(max_frame, option="--max-frame"))
    idle = opt.duration(idle_timeout, "--idle-timeout")
    if framed and mode == "stream":
        raise ConfigError("--framed is an echo mode: give --framed or --mode stream, not both")

    def factory() -> ServerConnection:
        if mode == "stream":
            return StreamTestConnection(idle_timeout=idle)
        if framed:
            return FramedEchoConnection(max_frame=frame_limit, idle_timeout=idle)
        return EchoConnection(idle_timeout=idle)

    code = run_server(
        out,
        name="tcp-echo",
        endpoint=where,
        build=build_stream(factory),
        flags=server,
        options=opt.socket_options(sndbuf, rcvbuf, keepalive),
        details={"mode": mode if mode == "stream" else "framed" if framed else "raw"},
    )
    raise typer.Exit(code)


def _messages(messages: list[str], count: int | None, size: str | None) -> list[bytes]:
    if messages == ["-"]:
        lines = sys.stdin.buffer.read().splitlines(keepends=True)
        if not lines:
            raise ConfigError("no messages: standard input was empty")
        return lines
    if messages:
        if count is not None or size is not None:
            raise ConfigError("give MESSAGE arguments or --count/--size, not both")
        return [m.encode() for m in messages]
    n = 10 if count is None else count
    nbytes = parse_size(size, option="--size") if size is not None else 64
    return [make_probe(i, time.time_ns(), nbytes)[:nbytes] for i in range(n)]


@app.command()
def client(
    endpoint: Annotated[
        str, typer.Argument(help="Echo server: HOST:PORT, [::1]:PORT or unix:/path.")
    ],
    messages: Annotated[
        list[str] | None,
        typer.Argument(
            help="Messages to send, as given; '-' reads lines from stdin. Default: generated."
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", "-c", min=1, help="Generated messages to send (default: 10)."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option("--size", "-s", help="Size of each generated message (default: 64)."),
    ] = None,
    interval: Annotated[
        str, typer.Option("--interval", "-i", help="Pause between messages.")
    ] = "0",
    framed: Annotated[
        bool, typer.Option("--framed", help="Send length-prefixed frames (for serve --framed).")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", "-t", help="Time allowed to connect, and for each echo.")
    ] = "5s",
    retry: opt.Retry = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    tls: opt.UseTLS = False,
    cacert: opt.CACert = None,
    cert: opt.ClientCert = None,
    key: opt.ClientKey = None,
    insecure: opt.Insecure = False,
    sni: opt.SNI = None,
    sndbuf: opt.SendBuffer = None,
    rcvbuf: opt.RecvBuffer = None,
    json: opt.Json = False,
) -> None:
    """Send messages, verify every echoed byte, and report round-trip times.

    Exit 0 when every echo matched, 1 on a mismatch, 3 when the connection failed, 4 on timeout.
    """
    out = Output(json)
    where = parse_stream_endpoint(endpoint)
    payloads = _messages(messages or [], count, size)
    wait = parse_duration(timeout, option="--timeout")
    pause = parse_duration(interval, option="--interval")
    retry_for = opt.retry(retry)
    tls_opts = opt.client_tls(tls, cacert, cert, key, insecure, sni)
    ctx = client_context(tls_opts) if tls_opts.enabled else None
    sockopts = opt.socket_options(sndbuf, rcvbuf, False)
    rtts = RTTSummary()

    async def main() -> None:
        conn = await open_stream(
            where,
            EchoClientConnection,
            ssl_context=ctx,
            server_hostname=tls_opts.server_hostname,
            timeout=wait,
            retry_for=retry_for,
            options=sockopts,
        )
        assert isinstance(conn, EchoClientConnection)
        out.event(
            "connected",
            None
            if quiet
            else f"connected to [cyan]{escape(str(where))}[/]" + (" (TLS)" if ctx else ""),
            address=str(where),
            tls=ctx is not None,
        )
        try:
            for seq, payload in enumerate(payloads):
                if seq and pause:
                    await asyncio.sleep(pause)
                result = await echo_once(conn, seq, payload, framed=framed, timeout=wait)
                rtts.add(result.rtt)
                out.event(
                    "echo",
                    None if quiet else f"{result.size} bytes echoed in {result.rtt * 1000:.3f} ms",
                    seq=seq,
                    bytes=result.size,
                    rtt_ms=round(result.rtt * 1000, 3),
                    ok=True,
                )
        finally:
            conn.close()
            summary = rtts.as_dict()
            total = sum(len(p) for p in payloads[: len(rtts)])
            human = f"{len(rtts)}/{len(payloads)} echoes verified, {format_size(total)}"
            if len(rtts):
                human += (
                    f"; rtt min/avg/p50/p99/max = {summary['min_ms']}/{summary['avg_ms']}/"
                    f"{summary['p50_ms']}/{summary['p99_ms']}/{summary['max_ms']} ms"
                )
            out.event(
                "summary",
                human,
                sent=len(payloads),
                verified=len(rtts),
                bytes=total,
                rtt=summary,
            )

    runtime.run(main)
    raise typer.Exit(ExitStatus.SUCCESS)
