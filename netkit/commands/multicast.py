"""``netkit multicast``: send, listen, ping (omping-style) and a one-command self-test.

Multicast never follows the default route: every sender names its interface (``lo`` unless
``--interface`` says otherwise) and the TTL/hop limit is 1 unless ``--ttl`` says otherwise.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from netkit.commands import options as opt
from netkit.console import Output
from netkit.core.multicast.groups import (
    Group,
    check_interface_family,
    parse_broadcast,
    parse_group,
    split_sources,
)
from netkit.core.multicast.ping import PING_HEADER_SIZE, PingPeer, PingSession
from netkit.core.multicast.selftest import SelftestTally
from netkit.core.multicast.traffic import MAX_PAYLOAD, Arrival, SendPlan, probe_sizes
from netkit.core.probe import HEADER_SIZE
from netkit.core.units import parse_duration, parse_size
from netkit.errors import CheckFailed, ConfigError
from netkit.net import runtime
from netkit.net.multicast.datagrams import Listener, send_all, wall_ns
from netkit.net.multicast.interfaces import Interface, resolve_interface
from netkit.net.multicast.ping import open_ping_sockets, run_ping
from netkit.net.multicast.selftest import run_selftest_family
from netkit.net.multicast.sockets import group_sockaddr, open_receivers, open_sender, send_error
from netkit.status import ExitStatus

T = TypeVar("T")

app = typer.Typer(
    name="multicast",
    help="Multicast send, listen, ping and self-test: ASM and SSM, IPv4 and IPv6.",
    no_args_is_help=True,
    add_completion=False,
)

Interface_ = Annotated[
    str,
    typer.Option(
        "--interface",
        "-I",
        help="Interface by name or address. Default lo: pass a real interface explicitly "
        "(multicast never follows the default route).",
    ),
]
TTL = Annotated[
    int,
    typer.Option(
        "--ttl", "--hops", min=0, max=255, help="IPv4 TTL / IPv6 hop limit (1: this link only)."
    ),
]
Loop = Annotated[
    bool,
    typer.Option("--loop/--no-loop", help="Deliver copies to listeners on this host too."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")]


def _interface(text: str, groups: list[Group]) -> Interface:
    iface = resolve_interface(text)
    for group in groups:
        check_interface_family(iface.given, group)
    return iface


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def _until_signal(work: Coroutine[Any, Any, T]) -> tuple[T | None, int | None]:
    """Run ``work`` until it finishes or SIGINT/SIGTERM; returns (result, exit status or None)."""
    async with runtime.run_until_signal() as shutdown:
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(shutdown.requested.wait())
        try:
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
    if task.done():
        return task.result(), None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None, ExitStatus.INTERRUPTED if shutdown.interrupted else ExitStatus.SUCCESS


def _stdin_lines() -> list[bytes]:
    return [line.rstrip(b"\r\n") for line in sys.stdin.buffer]


@app.command()
def send(
    group: Annotated[
        str,
        typer.Argument(
            help="GROUP:PORT (239.1.2.3:5000, \\[ff15::1]:5000); with --broadcast ADDRESS:PORT."
        ),
    ],
    messages: Annotated[
        list[str] | None,
        typer.Argument(
            help="Messages, one datagram each; '-' reads lines from stdin. None: generated probes."
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", "-c", min=1, max=100_000_000, help="Generated datagrams.")
    ] = 10,
    interval: Annotated[
        str,
        typer.Option("--interval", "-i", help="Time between datagrams (0: as fast as possible)."),
    ] = "100ms",
    size: Annotated[
        str,
        typer.Option("--size", "-s", help=f"Generated datagram size (at least {HEADER_SIZE})."),
    ] = "64",
    ttl: TTL = 1,
    loop: Loop = True,
    interface: Interface_ = "lo",
    source_port: Annotated[
        int, typer.Option("--source-port", min=0, max=65535, help="Send from this UDP port.")
    ] = 0,
    broadcast: Annotated[
        bool,
        typer.Option(
            "--broadcast", help="Send to an IPv4 broadcast address (SO_BROADCAST) instead."
        ),
    ] = False,
    quiet: Quiet = False,
    sndbuf: opt.SendBuffer = None,
    json: opt.Json = False,
) -> None:
    """Send datagrams to a group: MESSAGES, stdin lines, or --count generated probes.

    Generated datagrams carry a sequence number and a wall-clock send time, so `multicast
    listen` reports loss, duplicates, reordering and one-way delay. The interface defaults
    to lo and the TTL to 1.
    """
    out = Output(json)
    target = parse_broadcast(group) if broadcast else parse_group(group)
    if target.port == 0:
        raise ConfigError(f"{group!r}: a destination needs a port other than 0")
    iface = _interface(interface, [target])
    pause = parse_duration(interval, option="--interval")
    payloads: list[bytes] | None = None
    if messages == ["-"]:
        payloads = _stdin_lines()
    elif messages:
        payloads = [m.encode() for m in messages]
    nbytes = parse_size(size, option="--size")
    sizes = probe_sizes(target.version)
    if nbytes not in sizes:
        raise ConfigError(f"--size {size!r}: must be {sizes[0]} to {sizes[-1]} bytes")
    plan = SendPlan.build(target.version, payloads, count, nbytes)
    sock = open_sender(
        target.version,
        iface,
        ttl=ttl,
        loop=loop,
        source_port=source_port,
        bind_address=iface.address_for(target.version),
        broadcast=broadcast,
        sndbuf=parse_size(sndbuf, option="--sndbuf") if sndbuf else None,
    )
    where = f"udp://{target}"

    def on_sent(index: int, n: int) -> None:
        if not quiet:
            out.event("sent", f"sent #{index} {n} bytes to {escape(where)}", seq=index, bytes=n)

    async def main() -> tuple[int, int]:
        return await send_all(
            sock,
            group_sockaddr(target, iface),
            plan.total,
            plan.maker(wall_ns),
            interval=pause,
            on_sent=on_sent,
            describe_error=lambda exc: send_error(exc, target, iface),
        )

    started = time.monotonic()
    try:
        result, status = runtime.run(lambda: _until_signal(main()))
        local = sock.getsockname()
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    sent, total = result if result is not None else (0, 0)
    rate = sent / elapsed if elapsed > 0 else 0.0
    out.event(
        "summary",
        f"sent {sent} datagram(s), {total} bytes to {escape(where)} via {iface.name} "
        f"(ttl {ttl}) in {elapsed:.3f} s",
        group=str(target),
        interface=iface.name,
        source=f"{local[0]}:{local[1]}" if target.version == 4 else f"[{local[0]}]:{local[1]}",
        ttl=ttl,
        broadcast=broadcast,
        sent=sent,
        bytes=total,
        seconds=round(elapsed, 6),
        datagrams_per_s=round(rate, 1),
    )
    raise typer.Exit(status if status is not None else ExitStatus.SUCCESS)


def _arrival_text(a: Arrival) -> str:
    text = f"{escape(a.source)} -> {escape(a.group)} {a.size} bytes"
    if a.seq is not None:
        text += f" seq={a.seq}"
        if a.delay_s is not None:
            text += f" delay={a.delay_s * 1000:.3f} ms"
        if a.kind != "ok":
            text += f" ({a.kind})"
    return text


@app.command()
def listen(
    groups: Annotated[
        list[str], typer.Argument(help="GROUP:PORT to join, one or more (IPv4 and IPv6 mixed).")
    ],
    interface: Interface_ = "lo",
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source", "-S", help="Source-specific join: accept only this sender (repeatable)."
        ),
    ] = None,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            "-c",
            min=0,
            help="Stop after N datagrams; exit 1 if fewer arrive in --timeout.",
        ),
    ] = 0,
    timeout: Annotated[
        str | None, typer.Option("--timeout", "-t", help="Stop listening after this long.")
    ] = None,
    quiet: Quiet = False,
    rcvbuf: opt.RecvBuffer = None,
    json: opt.Json = False,
) -> None:
    """Join groups and print each datagram; per-source statistics on exit.

    Each datagram is printed with its source, group and size, and for netkit probes with its
    sequence number and one-way delay (wall clocks: on one host, or hosts synchronised by NTP).

    Exit 0 on SIGTERM, after --timeout, or when --count datagrams arrived; 1 when --count was
    not reached within --timeout; 130 on Ctrl-C.
    """
    out = Output(json)
    parsed = [parse_group(g) for g in groups]
    plan = split_sources(source or [], parsed)
    iface = _interface(interface, parsed)
    wait = parse_duration(timeout, option="--timeout") if timeout is not None else None
    buf = parse_size(rcvbuf, option="--rcvbuf") if rcvbuf else None
    sockets = open_receivers(parsed, iface, plan, rcvbuf=buf)

    def on_arrival(arrival: Arrival) -> None:
        out.event(
            "datagram",
            None if quiet else _arrival_text(arrival),
            source=arrival.source,
            group=arrival.group,
            bytes=arrival.size,
            seq=arrival.seq,
            delay_ms=_ms(arrival.delay_s),
            kind=arrival.kind,
        )

    listener = Listener(sockets, on_arrival)
    names = [str(g) for g, _ in sockets]
    sources = sorted({s for group_sources in plan.values() for s in group_sources})

    async def main() -> tuple[bool, int | None]:
        async with runtime.run_until_signal() as shutdown:
            # Printed once the signal handlers are in: a stop right after it is always graceful.
            out.event(
                "listening",
                f"[bold]multicast[/] listening on {escape(', '.join(names))} via {iface.name}"
                + (f", sources {escape(', '.join(sources))}" if sources else "")
                + "\n[dim]Ctrl-C or SIGTERM to stop[/]",
                groups=names,
                interface=iface.name,
                sources=sources,
            )
            got = await listener.run(count=count, timeout=wait, stop=shutdown.requested)
        if shutdown.requested.is_set():
            return got, ExitStatus.INTERRUPTED if shutdown.interrupted else ExitStatus.SUCCESS
        return got, None

    started = time.monotonic()
    try:
        got, status = runtime.run(main)
    finally:
        for _, sock in sockets:
            sock.close()
    per_source = listener.ledger.as_list()
    out.event(
        "summary",
        _ledger_text(listener.ledger.total, per_source),
        received=listener.ledger.total,
        count=count or None,
        seconds=round(time.monotonic() - started, 6),
        sources=per_source,
    )
    if status is not None:
        raise typer.Exit(status)
    if not got:
        raise CheckFailed(
            f"received {listener.ledger.total} of {count} datagram(s) within --timeout {timeout}"
        )
    raise typer.Exit(ExitStatus.SUCCESS)


def _ledger_text(total: int, per_source: list[dict[str, Any]]) -> str:
    lines = [f"received {total} datagram(s) from {len(per_source)} source(s)"]
    for s in per_source:
        line = f"  {escape(s['source'])} -> {escape(s['group'])}: {s['datagrams']} datagram(s)"
        if s["probes"]:
            line += (
                f", {s['lost']} lost ({s['loss_percent']}%), {s['duplicates']} duplicate(s), "
                f"{s['reordered']} reordered"
            )
            if s["delay"].get("count"):
                d = s["delay"]
                line += f", delay min/avg/max {d['min_ms']}/{d['avg_ms']}/{d['max_ms']} ms"
        lines.append(line)
    return "\n".join(lines)


def _peer_text(p: dict[str, Any]) -> str:
    lines = []
    for path in ("unicast", "multicast"):
        r = p[path]
        rtt = r["rtt"]
        line = (
            f"{escape(p['peer']):>24} : {path:>9}, xmt/rcv/%loss = {r['sent']}/{r['received']}/"
            f"{r['loss_percent']}%"
        )
        if r["duplicates"]:
            line += f" ({r['duplicates']} dup)"
        if rtt.get("count"):
            line += (
                f", min/avg/max/std-dev = {rtt['min_ms']}/{rtt['avg_ms']}/{rtt['max_ms']}/"
                f"{rtt['stddev_ms']} ms"
            )
        lines.append(line)
    return "\n".join(lines)


@app.command()
def ping(
    group: Annotated[
        str, typer.Argument(help="GROUP:PORT every instance uses (port 0: pick one, print it).")
    ],
    interface: Interface_ = "lo",
    count: Annotated[
        int, typer.Option("--count", "-c", min=1, max=10_000_000, help="Probes to send.")
    ] = 10,
    interval: Annotated[
        str, typer.Option("--interval", "-i", help="Time between probes.")
    ] = "100ms",
    size: Annotated[str, typer.Option("--size", "-s", help="Probe size (at least 40).")] = "40",
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            "-t",
            help="After the last probe, how long to wait for replies and for the other instances to finish.",
        ),
    ] = "3s",
    peers: Annotated[
        int,
        typer.Option(
            "--peers", min=0, help="Exit 1 unless at least this many other instances answered."
        ),
    ] = 1,
    max_loss: Annotated[
        float,
        typer.Option(
            "--max-loss",
            min=0,
            max=100,
            help="Exit 1 when any peer's loss exceeds this percentage.",
        ),
    ] = 0.0,
    ttl: TTL = 1,
    loop: Loop = True,
    quiet: Quiet = False,
    allow: opt.Allow = None,
    deny: opt.Deny = None,
    allow_file: opt.AllowFile = None,
    deny_file: opt.DenyFile = None,
    json: opt.Json = False,
) -> None:
    """Probe the group and answer the others; per-peer loss and RTT, like omping.

    Run it on several hosts (or several times on one host). Each instance sends sequenced
    probes to the group and answers the others' probes twice, by multicast and by unicast; it
    reports per peer the multicast and unicast loss, duplicates and RTT min/avg/max/std-dev.

    Only probes sent after a peer was first heard count towards its loss, so instances may
    start a little apart. Exit 0 when --peers answered within --max-loss, 1 otherwise.
    With --allow/--deny, an instance at a denied address is neither answered nor counted as
    a peer (reported once, counted in the summary's denied).
    """
    out = Output(json)
    access = opt.access_list(allow, deny, allow_file, deny_file)
    target = parse_group(group)
    iface = _interface(interface, [target])
    pause = parse_duration(interval, option="--interval")
    wait = parse_duration(timeout, option="--timeout")
    nbytes = parse_size(size, option="--size")
    limit = MAX_PAYLOAD[target.version]
    if not PING_HEADER_SIZE <= nbytes <= limit:
        raise ConfigError(f"--size {size!r}: must be {PING_HEADER_SIZE} to {limit} bytes")
    sockets = open_ping_sockets(target, iface, ttl=ttl, loop=loop)
    port = sockets.multicast.getsockname()[1]
    sockets.group = Group(target.address, port, target.version)
    session = PingSession(secrets.randbits(64) | 1, nbytes)
    local = sockets.unicast.getsockname()
    me = f"[{local[0]}]:{local[1]}" if target.version == 6 else f"{local[0]}:{local[1]}"

    def on_peer(peer: PingPeer) -> None:
        out.event(
            "peer",
            None if quiet else f"peer {escape(peer.address)} joined (id {peer.peer_id:016x})",
            peer=peer.address,
            peer_id=f"{peer.peer_id:016x}",
        )

    def on_denied(source: str, rule: str | None) -> None:
        out.event("denied", None if quiet else f"{source}: denied ({rule})", peer=source, rule=rule)

    async def main() -> tuple[int | None, int]:
        async with runtime.run_until_signal() as shutdown:
            out.event(
                "listening",
                f"[bold]multicast ping[/] {escape(str(sockets.group))} via {iface.name} from {escape(me)}, "
                f"{count} probe(s) every {interval}",
                group=str(sockets.group),
                interface=iface.name,
                address=me,
                id=f"{session.instance_id:016x}",
                **(access.as_dict() if access else {}),
            )
            denied = await run_ping(
                session, sockets, count=count, interval=pause, timeout=wait,
                stop=shutdown.requested, on_peer=on_peer, access=access, on_denied=on_denied,
            )  # fmt: skip
        if shutdown.requested.is_set():
            return ExitStatus.INTERRUPTED if shutdown.interrupted else ExitStatus.SUCCESS, denied
        return None, denied

    try:
        status, denied = runtime.run(main)
    finally:
        sockets.close()
    report = session.report()
    human = "\n".join(_peer_text(p) for p in report) or "no other instance answered"
    human += f"\n{denied} datagram(s) denied" if denied else ""
    out.event(
        "summary", human, group=str(sockets.group), sent=session.sent, peers=report, denied=denied
    )
    if status is not None:
        raise typer.Exit(status)
    if len(report) < peers:
        raise CheckFailed(
            f"{len(report)} other instance(s) answered on {sockets.group}, expected {peers}"
        )
    worst = session.worst_loss()
    if worst > max_loss:
        raise CheckFailed(f"loss {worst}% exceeds --max-loss {max_loss}%")
    raise typer.Exit(ExitStatus.SUCCESS)


def _case_text(version: int, case: dict[str, Any]) -> str:
    mark = "[green]pass[/]" if case["passed"] else f"[red]FAIL[/] ({escape(case['reason'])})"
    src = f" source {case['source']}" if case["source"] else ""
    join_ms = case["join_ms"] if case["join_ms"] is not None else "-"
    return (
        f"IPv{version} {case['mode']:<9} {escape(case['group'])}{escape(src)}: "
        f"join→first {join_ms} ms, {case['received']} received, {case['lost']} lost, "
        f"{case['duplicates']} dup, {case['reordered']} reordered  {mark}"
    )


@app.command()
def selftest(
    interface: Interface_ = "lo",
    family: Annotated[
        str,
        typer.Option(
            "--family", help="4, 6 or all (all: a family this interface cannot carry is skipped)."
        ),
    ] = "all",
    count: Annotated[
        int, typer.Option("--count", "-c", min=10, max=100_000, help="Probes per family.")
    ] = 200,
    interval: Annotated[str, typer.Option("--interval", "-i", help="Time between probes.")] = "2ms",
    receivers: Annotated[
        int, typer.Option("--receivers", min=1, max=32, help="ASM receivers per family.")
    ] = 2,
    timeout: Annotated[
        str, typer.Option("--timeout", "-t", help="How long to wait for the last datagrams.")
    ] = "2s",
    max_loss: Annotated[
        float,
        typer.Option("--max-loss", min=0, max=100, help="Loss a receiver may see, in percent."),
    ] = 0.0,
    json: opt.Json = False,
) -> None:
    """Check multicast on this host: one sender, several receivers (ASM and SSM, IPv4 and IPv6).

    Receivers join while the stream flows; each reports join→first-datagram latency, loss,
    duplicates and reordering. An SSM receiver joined to a source that never sends must
    receive nothing. Exit 0 only when every receiver passed.
    """
    out = Output(json)
    if family not in ("4", "6", "all"):
        raise ConfigError(f"--family {family!r}: choose 4, 6 or all")
    versions = [4, 6] if family == "all" else [int(family)]
    iface = resolve_interface(interface)
    pause = parse_duration(interval, option="--interval")
    wait = parse_duration(timeout, option="--timeout")
    salt = secrets.randbits(16)

    async def main() -> list[tuple[int, list[dict[str, Any]], str | None]]:
        results = []
        for version in versions:
            cases, skipped = await run_selftest_family(
                version, iface, count=count, interval=pause, timeout=wait,
                receivers=receivers, max_loss=max_loss, salt=salt,
            )  # fmt: skip
            results.append((version, cases, skipped))
        return results

    results, status = runtime.run(lambda: _until_signal(main()))
    if status is not None:
        raise typer.Exit(status)
    tally = SelftestTally()
    for version, cases, skipped in results or []:
        if skipped is not None:
            tally.skip(version)
            out.event(
                "skipped",
                f"[yellow]IPv{version} skipped[/]: {escape(skipped)}",
                family=f"ipv{version}",
                interface=iface.name,
                reason=skipped,
            )
            continue
        for case in cases:
            tally.add(case)
            out.event("case", _case_text(version, case), interface=iface.name, **case)
    out.event(
        "summary",
        f"{tally.passed} passed, {tally.failed} failed"
        + (f", IPv{'/'.join(map(str, tally.skipped))} skipped" if tally.skipped else ""),
        interface=iface.name,
        passed=tally.passed,
        failed=tally.failed,
        skipped=[f"ipv{v}" for v in tally.skipped],
    )
    failure = tally.failure(versions, iface.name)
    if failure is not None:
        raise CheckFailed(failure)
    raise typer.Exit(ExitStatus.SUCCESS)
