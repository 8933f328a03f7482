"""``netkit udp-echo``: a UDP echo server, and a client that measures loss, RTT and jitter."""

from __future__ import annotations

import socket
from typing import Annotated, Any

import click
import typer
from rich.markup import escape

from netkit.commands import options as opt
from netkit.console import Output
from netkit.core.access import AccessList
from netkit.core.addresses import parse_datagram_endpoint
from netkit.core.probe import HEADER_SIZE
from netkit.core.units import format_size, parse_duration, parse_size
from netkit.errors import CheckFailed, ConfigError
from netkit.net import loop_choice, runtime
from netkit.net.datagram import MAX_UDP_PAYLOAD, UDPEchoServer, UDPProber, check_max_size
from netkit.net.sockets import create_udp_socket, listener_address
from netkit.net.udp_sink import UDPSinkServer, receiver_options
from netkit.status import ExitStatus

app = typer.Typer(
    name="udp-echo",
    help="UDP echo server, and a client that measures loss, duplicates, reordering, RTT and jitter.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def serve(
    endpoint: Annotated[
        str, typer.Argument(help="Where to listen: HOST:PORT, :PORT (loopback), [::1]:PORT.")
    ] = "127.0.0.1:7007",
    max_size: Annotated[
        str, typer.Option("--max-size", help="Largest datagram echoed; larger ones are dropped.")
    ] = "65507",
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            click_type=click.Choice(["echo", "sink"]),
            help="echo: send every datagram back; sink: receive UDP bitrate tests (netkit bench udp://... --bitrate), count each sender's datagrams and report loss, duplicates, reordering and jitter to it; nothing is echoed.",
        ),
    ] = "echo",
    drop_every: Annotated[
        int,
        typer.Option(
            "--drop-every",
            min=0,
            help="Drop every Nth datagram (fault injection for testing clients); in sink mode, every Nth data datagram of each sender.",
        ),
    ] = 0,
    sndbuf: opt.SendBuffer = None,
    rcvbuf: opt.RecvBuffer = None,
    allow: opt.Allow = None,
    deny: opt.Deny = None,
    allow_file: opt.AllowFile = None,
    deny_file: opt.DenyFile = None,
    json: opt.Json = False,
) -> None:
    """Echo every datagram back to its sender until SIGINT/SIGTERM (--mode sink: count
    UDP bitrate tests and report to each sender what arrived, echoing nothing).

    Datagrams from port 0, from ports below 1024 (where echo and chargen services live) or
    from the server's own port are counted and not answered: a forged source cannot make it
    echo to itself, to another echo server on its port, or to a well-known service (another
    echo server on some other high port can still be aimed at it, as with any echo). The first 10,000 senders are reported (one "peer" event each); later ones
    are answered but not listed. Byte counts are the datagrams' real sizes, even those
    dropped for being over --max-size. A sink asks for a 4 MiB receive buffer unless --rcvbuf
    says otherwise (the kernel caps it at net.core.rmem_max), and keeps the counts of up to 1,024 senders (a
    few KiB each, whatever they send), forgetting the one heard from least recently first;
    a datagram that is neither a test's nor its control is counted as malformed and
    ignored. With --allow/--deny, a datagram from a denied source
    is counted (denied) and not answered; each such source is reported once.
    """
    out = Output(json)
    where = parse_datagram_endpoint(endpoint)
    access = opt.access_list(allow, deny, allow_file, deny_file)
    limit = check_max_size(parse_size(max_size, option="--max-size"))
    options = opt.socket_options(sndbuf, rcvbuf, False)
    if mode == "sink":
        options = receiver_options(options)
    sock, _ = create_udp_socket(where, bind=True, options=options)
    address = listener_address(sock)

    async def main() -> tuple[bool, dict[str, object]]:
        server = _server(mode, sock, limit, drop_every, access, out)
        server.start()
        # "address" is bare HOST:PORT as for every server; "url" names the transport too,
        # for commands whose bare HOST:PORT means TCP (bench).
        fields = {
            "address": address,
            "transport": "udp",
            "url": f"udp://{address}",
            "loop": loop_choice.loop_name(),
        }
        human = f"[bold]udp-echo[/] ({mode}) listening on [cyan]udp://{escape(address)}[/] ({loop_choice.loop_name()})"
        if drop_every:
            human += f", dropping every {drop_every}th datagram"
        out.event(
            "listening",
            human + "\n[dim]Ctrl-C or SIGTERM to stop[/]",
            drop_every=drop_every,
            mode=mode,
            **fields,
            **(access.as_dict() if access else {}),
        )
        async with runtime.run_until_signal() as shutdown:
            try:
                await shutdown.requested.wait()
            finally:
                server.stop()
        return shutdown.interrupted, server.stats.as_dict()

    try:
        interrupted, stats = runtime.run(main)
    finally:
        sock.close()
    out.event("summary", _summary(mode, stats), mode=mode, **stats)
    raise typer.Exit(ExitStatus.INTERRUPTED if interrupted else ExitStatus.SUCCESS)


def _server(
    mode: str,
    sock: socket.socket,
    limit: int,
    drop_every: int,
    access: AccessList | None,
    out: Output,
) -> UDPEchoServer | UDPSinkServer:
    """The echo server, or the sink, that ``--mode`` asks for, reporting through ``out``."""

    def denied(peer: str, rule: str | None) -> None:
        out.event("denied", f"{peer}: denied ({rule})", peer=peer, rule=rule)

    if mode == "sink":
        return UDPSinkServer(
            sock,
            drop_every=drop_every,
            access=access,
            on_denied=denied,
            on_start=lambda peer: out.event("start", None, peer=peer),
        )
    return UDPEchoServer(
        sock,
        max_size=limit,
        drop_every=drop_every,
        on_peer=lambda peer: out.event("peer", None, peer=peer),
        on_peer_table_full=lambda cap: out.event(
            "peer_table_full",
            f"{cap} peers seen: later senders are answered but not listed",
            max_peers=cap,
        ),
        access=access,
        on_denied=denied,
    )


def _summary(mode: str, stats: dict[str, Any]) -> str:
    """The summary line people read."""
    if mode == "sink":
        return (
            f"counted {stats['counted']} of {stats['datagrams_in']} datagram(s) in"
            f" {stats['starts']} test(s), {stats['reports']} report(s) sent,"
            f" {format_size(int(stats['bytes_in']))} in"
            + (f", {stats['malformed']} malformed" if stats["malformed"] else "")
            + (f", {stats['unstarted']} before a start" if stats["unstarted"] else "")
            + (f", {stats['denied']} denied" if stats["denied"] else "")
            + (
                f", {stats['dropped_on_purpose']} dropped on purpose"
                if stats["dropped_on_purpose"]
                else ""
            )
        )
    return (
        f"echoed {stats['datagrams_out']} of {stats['datagrams_in']} datagram(s) from "
        f"{stats['peers']}{'+' if stats['peer_table_full'] else ''} peer(s), "
        f"{format_size(int(stats['bytes_in']))} in"
        + (
            f", {stats['refused_source']} not answered (source port below 1024 or our own)"
            if stats["refused_source"]
            else ""
        )
        + (f", {stats['denied']} denied" if stats["denied"] else "")
        + (f", {stats['oversize']} over --max-size" if stats["oversize"] else "")
        + (
            f", {stats['dropped_on_purpose']} dropped on purpose"
            if stats["dropped_on_purpose"]
            else ""
        )
    )


@app.command()
def client(
    endpoint: Annotated[
        str, typer.Argument(help="UDP echo server: HOST:PORT, [::1]:PORT, udp://...")
    ],
    count: Annotated[
        int, typer.Option("--count", "-c", min=1, max=10_000_000, help="Datagrams to send.")
    ] = 10,
    interval: Annotated[
        str, typer.Option("--interval", "-i", help="Time between datagrams.")
    ] = "10ms",
    size: Annotated[
        str,
        typer.Option(
            "--size", "-s", help=f"Datagram size (at least {HEADER_SIZE}: sequence and timestamp)."
        ),
    ] = "64",
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout", "-t", help="How long to wait for late replies after the last send."
        ),
    ] = "1s",
    max_loss: Annotated[
        float,
        typer.Option(
            "--max-loss", min=0, max=100, help="Exit 1 when loss exceeds this percentage."
        ),
    ] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    sndbuf: opt.SendBuffer = None,
    rcvbuf: opt.RecvBuffer = None,
    json: opt.Json = False,
) -> None:
    """Send sequenced datagrams and report loss, duplicates, reordering, RTT and jitter (RFC 3550).

    Exit 0 when loss is within --max-loss and every reply was intact, 1 otherwise, 3 when
    nothing listens on the port.
    """
    out = Output(json)
    where = parse_datagram_endpoint(endpoint)
    nbytes = parse_size(size, option="--size")
    if not HEADER_SIZE <= nbytes <= MAX_UDP_PAYLOAD:
        raise ConfigError(f"--size {size!r}: must be {HEADER_SIZE} to {MAX_UDP_PAYLOAD} bytes")
    pause = parse_duration(interval, option="--interval")
    wait = parse_duration(timeout, option="--timeout")
    sock, _ = create_udp_socket(
        where, bind=False, options=opt.socket_options(sndbuf, rcvbuf, False)
    )

    def on_reply(seq: int, n: int, rtt: float, kind: str) -> None:
        note = "" if kind == "ok" else f" ({kind})"
        out.event(
            "reply",
            None if quiet else f"seq={seq} {n} bytes rtt={rtt * 1000:.3f} ms{note}",
            seq=seq,
            bytes=n,
            rtt_ms=round(rtt * 1000, 3),
            kind=kind,
        )

    async def main() -> dict[str, object]:
        prober = UDPProber(sock, size=nbytes, on_reply=on_reply)
        report = await prober.run(count, pause, wait)
        return report.as_dict()

    try:
        summary = runtime.run(main)
    finally:
        sock.close()
    rtt: dict[str, float] = summary["rtt"]  # type: ignore[assignment]
    human = (
        f"{summary['sent']} sent, {summary['received']} received, {summary['loss_percent']}% loss, "
        f"{summary['duplicates']} duplicate(s), {summary['reordered']} reordered"
    )
    if rtt.get("count"):
        human += (
            f"\nrtt min/avg/p99/max = {rtt['min_ms']}/{rtt['avg_ms']}/{rtt['p99_ms']}/"
            f"{rtt['max_ms']} ms, jitter {summary['jitter_ms']} ms"
        )
    out.event("summary", human, address=str(where), **summary)
    loss = float(summary["loss_percent"])  # type: ignore[arg-type]
    if loss > max_loss:
        raise CheckFailed(f"loss {loss}% exceeds --max-loss {max_loss}%")
    if summary["corrupt"]:
        raise CheckFailed(f"{summary['corrupt']} reply datagram(s) came back corrupted")
    raise typer.Exit(ExitStatus.SUCCESS)
