"""The bridging modes of ws-server and ws-client, as the commands call them.

* ``ws-server --to ENDPOINT``: :func:`serve_to` (each WebSocket client relayed to a TCP or
  Unix endpoint);
* ``ws-client URL --listen ENDPOINT``: :func:`serve_listen` (each client of a TCP or Unix
  listener relayed to the URL);
* ``ws-client URL --stdio``: :func:`run_stdio` (stdin and stdout relayed to the URL).

The servers run through :func:`~netkit.commands.serving.run_server` like every other server
command (listening, events, drain, summary); their summary is the relay's words with the
stream server's totals (:data:`BRIDGE`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.markup import escape

from netkit.commands.options import ServerFlags, client_tls
from netkit.commands.serving import BuildServer, Presentation, run_server
from netkit.console import Output
from netkit.core.addresses import TCPEndpoint, UnixEndpoint, parse_stream_endpoint
from netkit.core.flow import RelayRecord
from netkit.core.units import format_size
from netkit.core.ws.ending import CLEAN_CLOSE, Ending, Outcome, describe_close, verdict
from netkit.core.ws.expect import Expectation
from netkit.errors import PeerProtocolError, UsageError
from netkit.net import runtime
from netkit.net.server import ServerConnection, StreamServer
from netkit.net.sockets import SocketOptions
from netkit.net.tls import client_context
from netkit.net.ws_bridge import Bridge, BridgeClient, WSTarget
from netkit.net.ws_bridge_serve import BridgeStats, ListenerSide, StreamTarget
from netkit.net.ws_stdio import StdioStream
from netkit.status import ExitStatus


def bridge_summary(s: dict[str, Any]) -> str:
    """The summary line of a bridging server."""
    return (
        f"bridged {s['connections']} connection(s): {format_size(s['bytes_up'])} up, "
        f"{format_size(s['bytes_down'])} down"
        + (f", {s['upstream_failures']} upstream failure(s)" if s["upstream_failures"] else "")
        + (f", {s['rejected']} rejected" if s["rejected"] else "")
        + (f", {s['denied']} denied" if s.get("denied") else "")
        + (f", {s['undelivered_bytes']} bytes undelivered" if s["undelivered_bytes"] else "")
        + (f", {s['aborted_at_drain']} cut at drain" if s["aborted_at_drain"] else "")
    )


BRIDGE = Presentation(bridge_summary, BridgeStats)


def build_bridge(factory: Callable[[], ServerConnection]) -> BuildServer:
    """Builds a stream server counting as a bridge (:class:`BridgeStats`)."""
    return lambda sock, *, listen, **common: StreamServer(
        sock, factory, stats=BridgeStats(), **common
    )


def bridge_target(
    to: str, tls: bool, cacert: Path | None, insecure: bool, sni: str | None
) -> StreamTarget:
    """Where ``ws-server --to`` relays clients, with TLS as the upstream flags say."""
    endpoint = parse_stream_endpoint(to)
    options = client_tls(tls, cacert, None, None, insecure, sni)
    host = endpoint.host if isinstance(endpoint, TCPEndpoint) else "localhost"
    return StreamTarget(
        endpoint,
        ssl_context=client_context(options) if options.enabled else None,
        server_hostname=sni or host,
    )


def serve_to(
    out: Output,
    *,
    endpoint: TCPEndpoint | UnixEndpoint,
    factory: Callable[[], ServerConnection],
    flags: ServerFlags,
    options: SocketOptions,
    details: dict[str, Any],
    url: Callable[[str, bool], str],
) -> ExitStatus:
    """Run ``ws-server --to``: ``factory`` makes :class:`~netkit.net.ws_bridge_serve.
    BridgeConnection` s (each holds two descriptors: the client and its upstream)."""
    return run_server(
        out,
        name="ws-server",
        endpoint=endpoint,
        build=build_bridge(factory),
        flags=flags,
        presentation=BRIDGE,
        per_connection=2,
        options=options,
        details=details,
        url=url,
    )


def serve_listen(out: Output, listen: TCPEndpoint | UnixEndpoint, target: WSTarget) -> ExitStatus:
    """Run ``ws-client URL --listen ENDPOINT`` until SIGINT/SIGTERM (loopback unless told)."""
    return run_server(
        out,
        name="ws-client",
        endpoint=listen,
        build=build_bridge(lambda: ListenerSide(target)),
        flags=ServerFlags(),
        presentation=BRIDGE,
        per_connection=2,
        details={"to": str(target.url)},
    )


def run_stdio(out: Output, target: WSTarget, *, close_timeout: float | None) -> None:
    """Run ``ws-client URL --stdio``: stdin's bytes go as binary messages, messages' bytes
    come out on stdout, until both are over.

    Raises:
        ConnectError, TLSError, OperationTimeout, UpgradeRefused ...: opening failed.
        ConnectionLost, PeerProtocolError, OperationTimeout: the connection ended badly (the
            verdict of :func:`~netkit.core.ws.ending.verdict`, as ws-client's other modes).
    """

    async def main() -> tuple[Bridge, BridgeClient]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bridge = Bridge(
            RelayRecord(1, "stdio", upstream=str(target.url)),
            ws_is_client=False,
            on_done=lambda _: done.set_result(None),
        )
        conn = await target.dial(bridge)
        try:
            stdio = StdioStream(bridge)
            bridge.attach_stream(stdio)
            stdio.start()
            await done
            await conn.closed
        finally:
            conn.abort()
        return bridge, conn

    bridge, conn = runtime.run(main)
    ending = Ending(
        Outcome.CLOSED,
        str(target.url),
        connection_error=conn.error,
        initiated_close=conn.initiated_close,
        close_answered=conn.ws.close_received is not None,
        close_timed_out=conn.close_timed_out,
        close_timeout=close_timeout,
        close_code=conn.close_code,
        close_reason=conn.close_reason,
    )
    error = verdict(ending, Expectation())
    if error is None and conn.close_code is not None and conn.close_code not in CLEAN_CLOSE:
        # Even in answer to our close: 1011 says the far end of the bridge failed.
        error = PeerProtocolError(
            f"{target.url} closed the connection with "
            f"{describe_close(conn.close_code, conn.close_reason)}",
            close_code=None,
        )
    if error is not None:
        raise error
    up, down = bridge.record.up, bridge.record.down
    out.err.print(
        escape(
            f"closed: {describe_close(conn.close_code, conn.close_reason)}; "
            f"{up.delivered} bytes sent, {down.delivered} received"
        )
    )


def bridge_mode(
    out: Output,
    target: WSTarget,
    listen: str | None,
    stdio: bool,
    close_timeout: float | None,
    others: dict[str, bool],
) -> NoReturn:
    """Run ws-client's bridge (``--listen`` or ``--stdio``) and exit with its status.

    Args:
        others: the options a bridge cannot take, by name, and whether each was given.

    Raises:
        UsageError: both bridges, or one with messages, checks or ``--json`` (for stdio).
    """
    mode = "--stdio" if stdio else "--listen"
    if listen is not None and stdio:
        raise UsageError("--listen and --stdio are two different bridges: use one")
    given = [name for name, on in others.items() if on]
    if given:
        raise UsageError(f"{mode} relays bytes both ways: it cannot be used with {given[0]}")
    if listen is not None:
        raise typer.Exit(serve_listen(out, parse_stream_endpoint(listen), target))
    if out.json:
        raise UsageError(
            "--stdio writes the messages' bytes to stdout: it cannot be used with --json"
        )
    run_stdio(out, target, close_timeout=close_timeout)
    raise typer.Exit(ExitStatus.SUCCESS)
