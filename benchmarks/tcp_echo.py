"""Compare ``netkit tcp-echo`` with its anchors on loopback: round trips and bulk throughput.

Usage::

    python benchmarks/tcp_echo.py [--quick] [--json [PATH]] [--only rtt|bulk|cpu]
                                  [--pin same|split] [--cpu N]

Run it with the Python that has netkit installed (``/tmp/venv/bin/python`` in the dev setup).
Everything runs on 127.0.0.1; every load loop stops after a fixed time *and* a fixed count.

1. **Round trips** -- one connection, closed loop: send 32 bytes, wait for the 32-byte echo,
   repeat for a fixed time. The client is the same for every server: a blocking socket with
   TCP_NODELAY, ``sendall`` and ``recv_into`` a preallocated buffer, in this process (the servers
   are subprocesses). Servers:

   - ``netkit tcp-echo serve`` on uvloop (the default loop) and with ``--loop asyncio``;
   - a plain asyncio-streams echo server (``asyncio.start_server``, ``reader.read(65536)``,
     ``writer.write``, ``await writer.drain()``) on the stock asyncio loop;
   - ``socat TCP-LISTEN:PORT,fork,reuseaddr PIPE``.

   Runs are interleaved (run 1 of every server, then run 2, ...) with the order rotated each
   time, so that noise on the machine spreads over all servers. Besides round trips per second,
   the server's CPU time per round trip is read from ``/proc``, and so is the CPU each side ran
   on: the client's own cost is in every round trip, and on a small VM a wake-up across CPUs
   costs more than the echo itself, so the rate alone can hide the servers' difference.

2. **Bulk client -> server throughput** -- ``iperf3 -c ... -t T -J`` against ``iperf3 -s -1``
   (also with ``-l 256K``, netkit's write size, for information), and netkit's own stream path:
   a sink built from ``netkit.net.server`` (a ``ServerConnection`` that consumes everything,
   served by ``StreamServer`` on uvloop) fed by a sender built from
   ``netkit.net.protocols.open_stream`` + ``StreamProtocol`` writing a 256 KiB memoryview and awaiting
   ``drain()``, each in its own process. Also, for information, the echo throughput of
   ``netkit tcp-echo client -s 1MiB -c N`` against ``netkit tcp-echo serve``.

3. **CPU per message** -- server CPU time per 32-byte round trip with the client (a blocking
   socket in this process) and every server pinned to one CPU (``--cpu N``, default 0), so the
   figure does not depend on where the scheduler puts them: netkit tcp-echo serve (uvloop), the
   asyncio-streams server, socat, and a bare blocking ``recv``/``sendall`` echo as the floor.
   7 rounds of 1 s each (3 of 0.5 s with ``--quick``), interleaved, order rotated; medians,
   min-max and ratios to asyncio streams (``harness.cpu_per_message``).

Targets (issue 2): netkit >= 2x the asyncio-streams server and >= socat in round trips per
second; netkit bulk >= 0.9x iperf3. Issue 14: netkit server CPU per message <= 0.5x asyncio
streams. The script ends with a Markdown block for
``benchmarks/README.md``. socat and iperf3 are installed with apt-get when missing and the script
runs as root; otherwise their rows are skipped with a hint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from harness import (
    HOST,
    PIN_CHOICES,
    START_TIMEOUT_S,
    WARMUP_S,
    CpuRow,
    add_json_option,
    add_placement_options,
    closed_loop,
    connect_blocking,
    cpu_per_message,
    cpu_table,
    ensure_tool,
    family,
    free_port,
    last_cpu,
    listening_port,
    log,
    machine,
    med,
    netkit_command,
    pin,
    ratio_of_medians,
    read_line,
    rotated,
    stop,
    target_line,
    tcp_floor_server,
    wait_connectable,
    write_json,
)

MESSAGE = 32
BULK_CHUNK = 256 * 1024
MAX_BULK_WRITES = 1_000_000  # 256 GiB: a count bound far above a few seconds of loopback

NETKIT_UVLOOP = "netkit tcp-echo serve (uvloop)"
NETKIT_ASYNCIO = "netkit --loop asyncio tcp-echo serve"
ASYNCIO_STREAMS = "asyncio streams (stock loop)"
SOCAT = "socat TCP-LISTEN:…,fork PIPE"
FLOOR = "bare blocking echo (floor)"
CPU_GOAL = 0.5  # issue 14: netkit server CPU per message <= 0.5x asyncio streams


# --- helper processes (this file runs as each of them) -------------------------------------


def asyncio_streams_server() -> None:
    """The anchor: the textbook asyncio-streams echo server on the stock loop."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"event": "listening", "address": f"{HOST}:{port}"}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(serve())  # the plain asyncio loop, no uvloop policy


def netkit_sink(warmup: float) -> None:
    """Receive one connection with netkit's I/O layer, drop the bytes, report MB/s."""
    import asyncio

    from netkit.core.addresses import TCPEndpoint
    from netkit.net import loop_choice, runtime
    from netkit.net.server import ServerConnection, StreamServer, make_listener

    result: dict[str, Any] = {}
    done: list[asyncio.Event] = []  # made inside the running loop

    class SinkConnection(ServerConnection):
        def on_connect(self) -> None:
            super().on_connect()
            self.first: tuple[float, int] | None = None
            self.mark: tuple[float, int] | None = None
            self.last = (0.0, 0)
            asyncio.get_running_loop().call_later(warmup, self._start_measuring)

        def _start_measuring(self) -> None:
            self.mark = (time.perf_counter(), self.bytes_in)

        def data_ready(self) -> None:
            self.rbuf.consume(len(self.rbuf))
            self.last = (time.perf_counter(), self.bytes_in)
            if self.first is None:
                self.first = self.last

        def on_close(self, exc: Exception | None) -> None:
            super().on_close(exc)
            start = self.mark or self.first or self.last
            seconds = self.last[0] - start[0]
            nbytes = self.last[1] - start[1]
            result.update(
                bytes=nbytes,
                seconds=seconds,
                total_bytes=self.bytes_in,
                mb_per_s=nbytes / seconds / 1e6 if seconds > 0 else 0.0,
            )
            done[0].set()

    async def serve() -> None:
        done.append(asyncio.Event())
        server = StreamServer(make_listener(TCPEndpoint(HOST, 0)), SinkConnection)
        server.start()
        print(json.dumps({"event": "listening", "address": server.address}), flush=True)
        try:
            await asyncio.wait_for(done[0].wait(), timeout=120)
        finally:
            server.close_listener()

    runtime.run(serve)
    print(json.dumps({"event": "result", **result, "loop": loop_choice.loop_name()}), flush=True)


def netkit_sender(port: int, seconds: float) -> None:
    """Write a 256 KiB memoryview again and again for ``seconds`` with netkit's StreamProtocol."""
    from netkit.core.addresses import TCPEndpoint
    from netkit.net import runtime
    from netkit.net.connect import open_stream
    from netkit.net.protocols import StreamProtocol

    async def send() -> dict[str, Any]:
        conn = await open_stream(TCPEndpoint(HOST, port), StreamProtocol)
        view = memoryview(bytearray(BULK_CHUNK))
        writes = 0
        start = time.perf_counter()
        deadline = start + seconds
        while writes < MAX_BULK_WRITES and not conn.closed.done():
            conn.write(view)
            await conn.drain()
            writes += 1
            if not writes & 15 and time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
        conn.close()
        await conn.closed
        return {"bytes": conn.bytes_out, "seconds": elapsed, "writes": writes}

    print(json.dumps({"event": "result", **runtime.run(send)}), flush=True)


# --- round trips ---------------------------------------------------------------------------


@dataclass
class Server:
    """A running echo server under test, and its per-run results."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    same_cpu: list[float] = field(default_factory=list)


def start_netkit(loop: str | None) -> Server:
    """``netkit [--loop asyncio] tcp-echo serve 127.0.0.1:0 --json``."""
    cmd = [*netkit_command(), *(["--loop", loop] if loop else [])]
    cmd += ["tcp-echo", "serve", f"{HOST}:0", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    name = NETKIT_ASYNCIO if loop == "asyncio" else NETKIT_UVLOOP
    return Server(name, proc, listening_port(proc))


def start_asyncio_streams() -> Server:
    """This script's asyncio-streams echo server in its own process."""
    cmd = [sys.executable, __file__, "--serve-asyncio"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return Server(ASYNCIO_STREAMS, proc, listening_port(proc))


def start_socat() -> Server:
    """``socat TCP-LISTEN:PORT,fork,reuseaddr PIPE`` on a free port (bound to loopback)."""
    port = free_port()
    cmd = ["socat", f"TCP-LISTEN:{port},bind={HOST},fork,reuseaddr", "PIPE"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_connectable(port)
    return Server(SOCAT, proc, port)


def start_floor() -> Server:
    """The bare blocking echo (harness.tcp_floor_server) in its own process: the floor."""
    cmd = [sys.executable, __file__, "--serve-floor"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return Server(FLOOR, proc, listening_port(proc))


def round_trips(server: Server, seconds: float) -> tuple[float, float, float]:
    """One closed-loop run on a new connection.

    Returns:
        round trips per second; server CPU microseconds per round trip; the share of samples in
        which client and server last ran on the same CPU.
    """
    with connect_blocking(server.port) as sock:
        placement = [0, 0]  # same, samples
        workers: list[int] = []  # looked up once the warm-up is over and socat has forked

        def sample() -> None:
            if not workers:  # socat's child for this connection, else the server
                workers.append(family(server.proc.pid)[-1])
            with contextlib.suppress(OSError):
                placement[0] += last_cpu("self") == last_cpu(workers[0])
                placement[1] += 1

        res = closed_loop(sock, b"x" * MESSAGE, MESSAGE, seconds, server.proc.pid, sample)
    return res.rate, res.server_us, placement[0] / max(placement[1], 1)


def bench_round_trips(runs: int, seconds: float, socat_ok: bool, pinning: str) -> list[Server]:
    """Start every server once, then run them in turn, ``runs`` times, order rotated."""
    starters: list[Callable[[], Server]] = [
        lambda: start_netkit(None),
        lambda: start_netkit("asyncio"),
        start_asyncio_streams,
    ]
    if socat_ok:
        starters.append(start_socat)
    servers: list[Server] = []
    cpus = PIN_CHOICES[pinning]
    try:
        for starter in starters:
            servers.append(starter())
        if cpus is not None:
            os.sched_setaffinity(0, cpus[0])
            for server in servers:
                pin(server.proc.pid, cpus[1])
        for run in range(runs):
            for server in rotated(servers, run):
                rate, cpu, same = round_trips(server, seconds)
                server.rates.append(rate)
                server.cpu_us.append(cpu)
                server.same_cpu.append(same)
                log(
                    f"  rtt run {run + 1}/{runs} {server.name:38} {rate:9.0f}/s "
                    f"{cpu:6.1f} µs CPU  same CPU {same:4.0%}"
                )
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        for server in servers:
            stop(server.proc)
    return servers


def bench_cpu(rounds: int, seconds: float, socat_ok: bool, cpu: int) -> list[CpuRow]:
    """Server CPU per 32 B round trip, client and servers pinned to ``cpu``, rounds interleaved."""
    starters: list[Callable[[], Server]] = [lambda: start_netkit(None), start_asyncio_streams]
    if socat_ok:
        starters.append(start_socat)
    starters.append(start_floor)
    servers: list[Server] = []
    try:
        for starter in starters:
            servers.append(starter())
        request = b"x" * MESSAGE
        rows = [
            CpuRow(s.name, s.proc.pid, partial(connect_blocking, s.port), request, MESSAGE)
            for s in servers
        ]
        cpu_per_message(rows, rounds, seconds, cpu)
    finally:
        for server in servers:
            stop(server.proc)
    return rows


# --- bulk throughput -----------------------------------------------------------------------


def iperf3_run(seconds: float, *extra: str) -> float:
    """One iperf3 client->server test; MB/s received (``end.sum_received.bits_per_second``)."""
    port = free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-p", str(port), "-B", HOST, "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        while b"listening" not in read_line(server, START_TIMEOUT_S):
            pass
        out = subprocess.run(
            ["iperf3", "-c", HOST, "-p", str(port), "-t", f"{seconds:g}", "-J", *extra],
            capture_output=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 8 / 1e6
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)  # -1: it exits by itself after the one test
        stop(server)


def netkit_bulk_run(seconds: float) -> float:
    """One netkit sender -> netkit sink test; MB/s counted by the sink after its warm-up."""
    sink = subprocess.Popen(
        [sys.executable, __file__, "--netkit-sink", str(WARMUP_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = listening_port(sink)
        sent = subprocess.run(
            [sys.executable, __file__, "--netkit-send", str(port), str(seconds + WARMUP_S)],
            capture_output=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
        result = json.loads(read_line(sink, 30))
        sender = json.loads(sent)
        if sender["bytes"] != result["total_bytes"]:
            raise RuntimeError(f"sink got {result['total_bytes']} of {sender['bytes']} bytes sent")
        return float(result["mb_per_s"])
    finally:
        stop(sink)


def echo_client_run(port: int, count: int) -> float:
    """``netkit tcp-echo client -s 1MiB -c N``: MB/s of payload echoed (sum of the RTTs)."""
    cmd = [*netkit_command(), "tcp-echo", "client", f"{HOST}:{port}"]
    cmd += ["-s", "1MiB", "-c", str(count), "--json", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, timeout=120, check=True).stdout
    for line in out.splitlines():
        event = json.loads(line)
        if event["event"] == "summary":
            rtt = event["rtt"]
            seconds = float(rtt["avg_ms"]) * int(rtt["count"]) / 1000
            return float(event["bytes"]) / seconds / 1e6
    raise RuntimeError("no summary from netkit tcp-echo client")


@dataclass
class BulkResults:
    """MB/s per run."""

    netkit: list[float] = field(default_factory=list)
    iperf3: list[float] = field(default_factory=list)
    iperf3_256k: list[float] = field(default_factory=list)
    echo: list[float] = field(default_factory=list)


def bench_bulk(runs: int, seconds: float, echo_count: int, iperf_ok: bool) -> BulkResults:
    """netkit sender->sink and iperf3, interleaved run by run; then the echo client."""
    res = BulkResults()
    tests: list[tuple[str, Callable[[], float], list[float]]] = [
        ("netkit stream path", lambda: netkit_bulk_run(seconds), res.netkit)
    ]
    if iperf_ok:
        tests.append(("iperf3", lambda: iperf3_run(seconds), res.iperf3))
        tests.append(("iperf3 -l 256K", lambda: iperf3_run(seconds, "-l", "256K"), res.iperf3_256k))
    for run in range(runs):
        for name, func, results in rotated(tests, run):
            results.append(func())
            log(f"  bulk run {run + 1}/{runs} {name:24} {results[-1]:9.0f} MB/s")
    server = start_netkit(None)
    try:
        for run in range(runs):
            res.echo.append(echo_client_run(server.port, echo_count))
            log(f"  echo run {run + 1}/{runs} netkit tcp-echo client  {res.echo[-1]:9.0f} MB/s")
    finally:
        stop(server.proc)
    return res


# --- report --------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    servers: list[Server],
    bulk: BulkResults | None,
    cpu_rows: list[CpuRow],
) -> tuple[str, dict[str, Any]]:
    """The Markdown block for benchmarks/README.md, and the raw numbers."""
    info = machine()
    flags = (" --quick" if args.quick else "") + (
        f" --pin {args.pin}" if args.pin != "none" else ""
    )
    flags += f" --only {args.only}" if args.only != "all" else ""
    lines = [
        f"Date: {info['date']}  ",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, {info['loop']}  ",
        f"Command: `python benchmarks/tcp_echo.py{flags}`",
        "",
        "| Benchmark | Server / tool | Runs | Median | Server CPU per round trip | Ratio |",
        "|---|---|---:|---:|---:|---|",
    ]
    targets: list[tuple[str, bool | None]] = []
    ratios: dict[str, float] = {}
    by = {s.name: s for s in servers}
    nk = by.get(NETKIT_UVLOOP)
    for s in servers:
        cells = []
        if nk is not None and s is not nk:
            ratios[f"rate netkit/{s.name}"] = r = ratio_of_medians(nk.rates, s.rates)
            ratios[f"cpu netkit/{s.name}"] = c = ratio_of_medians(nk.cpu_us, s.cpu_us)
            cells.append(f"netkit/this: {r:.2f}x the rate, {c:.2f}x the CPU")
        on_same = sum(share >= 0.5 for share in s.same_cpu)
        lines.append(
            f"| 32 B round trips | {s.name} | {len(s.rates)} | {med(s.rates):,.0f} /s | "
            f"{med(s.cpu_us):.1f} µs | {'; '.join(cells) or 'netkit'} "
            f"(same CPU as the client in {on_same}/{len(s.rates)} runs) |"
        )
    if nk is not None:
        if ASYNCIO_STREAMS in by:
            r = ratios[f"rate netkit/{ASYNCIO_STREAMS}"]
            targets.append((f"netkit >= 2x asyncio streams in round trips/s: {r:.2f}x", r >= 2.0))
        if SOCAT in by:
            r = ratios[f"rate netkit/{SOCAT}"]
            targets.append((f"netkit >= socat in round trips/s: {r:.2f}x", r >= 1.0))
        else:
            targets.append(("netkit >= socat in round trips/s: not measured (no socat)", None))
    if bulk is not None:
        r = ratio_of_medians(bulk.netkit, bulk.iperf3)
        ratios["bulk netkit/iperf3"] = r
        lines.append(
            "| Bulk client→server | netkit stream path (StreamProtocol sender → StreamServer "
            f"sink, 256 KiB writes) | {len(bulk.netkit)} | {med(bulk.netkit):,.0f} MB/s | | "
            + (f"netkit/iperf3: {r:.2f}x |" if bulk.iperf3 else "iperf3 missing |")
        )
        if bulk.iperf3:
            r256 = ratio_of_medians(bulk.netkit, bulk.iperf3_256k)
            ratios["bulk netkit/iperf3 -l 256K"] = r256
            lines.append(
                f"| Bulk client→server | iperf3 -c -t {args.bulk_seconds:g} -J (128 KiB writes) "
                f"| {len(bulk.iperf3)} | {med(bulk.iperf3):,.0f} MB/s | | reference |"
            )
            lines.append(
                f"| Bulk client→server | iperf3 -c -t {args.bulk_seconds:g} -J -l 256K "
                f"| {len(bulk.iperf3_256k)} | {med(bulk.iperf3_256k):,.0f} MB/s | | "
                f"netkit/this: {r256:.2f}x (information) |"
            )
            targets.append((f"netkit bulk >= 0.9x iperf3: {r:.2f}x", r >= 0.9))
        else:
            targets.append(("netkit bulk >= 0.9x iperf3: not measured (no iperf3)", None))
        lines.append(
            "| Echo throughput (both directions) | netkit tcp-echo client -s 1MiB "
            f"-c {args.echo_count} → netkit tcp-echo serve | {len(bulk.echo)} | "
            f"{med(bulk.echo):,.0f} MB/s echoed | | information |"
        )
    lines.append("")
    if servers:
        lines.append(
            "Round trips: one connection per run, send 32 B, wait for the 32 B echo, repeat for "
            f"{args.rtt_seconds:g} s; the same Python client (blocking socket, TCP_NODELAY, "
            "sendall + recv_into) for every server; runs interleaved, order rotated. Ratios are "
            "ratios of medians. Server CPU = user+sys time of the server process (and its "
            "children) per round trip, from /proc. CPU placement: "
            + ("not pinned." if args.pin == "none" else f"pinned ({args.pin}).")
        )
        shares = [share for s in servers for share in s.same_cpu]
        mixed = any(x >= 0.5 for x in shares) and any(x < 0.5 for x in shares)
        if args.pin == "none" and mixed:
            lines.append(
                "**Placement was mixed**: in some runs client and server shared a CPU, in others "
                "not, and on a small VM that alone changes the rate several-fold, so these "
                "unpinned ratios depend on where the scheduler put each run. Compare with "
                "`--only rtt --pin same` (CPU cost) and `--pin split` (cross-CPU wake-ups)."
            )
    if bulk is not None:
        lines.append(
            "Bulk: MB/s = 10^6 bytes/s received, median of runs interleaved with iperf3; the "
            f"netkit sink skips its first {WARMUP_S:g} s. Echo throughput = payload bytes / sum "
            "of the client's round-trip times (each byte crosses loopback twice)."
        )
    lines.append("")
    for text, ok in targets:
        lines.append(target_line(text, ok))
    cpu_raw = None
    if cpu_rows:
        goal = (NETKIT_UVLOOP, CPU_GOAL)
        cpu_lines, cpu_raw = cpu_table(cpu_rows, ASYNCIO_STREAMS, goal, args.cpu)
        # Only the CPU part ran: the header lines, then its table.
        lines = [*lines[:3], "", *cpu_lines] if args.only == "cpu" else [*lines, "", *cpu_lines]
    raw = {
        "machine": info,
        "settings": vars(args),
        "round_trips": {
            s.name: {
                "rates_per_s": s.rates,
                "server_cpu_us": s.cpu_us,
                "same_cpu_share": s.same_cpu,
            }
            for s in servers
        },
        "bulk_mb_per_s": None if bulk is None else vars(bulk),
        "cpu_per_message": cpu_raw,
        "ratios": ratios,
        "targets": dict(targets),
    }
    return "\n".join(lines), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    add_json_option(parser)
    parser.add_argument(
        "--only", choices=["all", "rtt", "bulk", "cpu"], default="all", help="which part to run"
    )
    add_placement_options(parser, "round trips only")
    # Internal modes: this file is also each helper process.
    parser.add_argument("--serve-asyncio", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--netkit-sink", type=float, metavar="WARMUP", help=argparse.SUPPRESS)
    parser.add_argument("--netkit-send", nargs=2, metavar=("PORT", "S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_asyncio:
        return asyncio_streams_server()
    if args.serve_floor:
        return tcp_floor_server()
    if args.netkit_sink is not None:
        return netkit_sink(args.netkit_sink)
    if args.netkit_send:
        return netkit_sender(int(args.netkit_send[0]), float(args.netkit_send[1]))
    del args.serve_asyncio, args.serve_floor, args.netkit_sink, args.netkit_send

    args.rtt_runs, args.rtt_seconds = (2, 1.0) if args.quick else (5, 3.0)
    args.bulk_runs, args.bulk_seconds = (2, 1.0) if args.quick else (5, 3.0)
    args.echo_count = 16 if args.quick else 64
    args.cpu_rounds, args.cpu_seconds = (3, 0.5) if args.quick else (7, 1.0)
    socat_ok = args.only != "bulk" and ensure_tool("socat", "socat")
    iperf_ok = args.only in ("all", "bulk") and ensure_tool("iperf3", "iperf3")
    servers: list[Server] = []
    bulk = None
    if args.only in ("all", "rtt"):
        log(f"round trips: {args.rtt_runs} runs x {args.rtt_seconds:g} s per server")
        servers = bench_round_trips(args.rtt_runs, args.rtt_seconds, socat_ok, args.pin)
    if args.only in ("all", "bulk"):
        log(f"bulk: {args.bulk_runs} runs x {args.bulk_seconds:g} s")
        bulk = bench_bulk(args.bulk_runs, args.bulk_seconds, args.echo_count, iperf_ok)
    cpu_rows: list[CpuRow] = []
    if args.only in ("all", "cpu"):
        log(f"CPU per message: {args.cpu_rounds} rounds x {args.cpu_seconds:g} s, CPU {args.cpu}")
        cpu_rows = bench_cpu(args.cpu_rounds, args.cpu_seconds, socat_ok, args.cpu)
    table, raw = report(args, servers, bulk, cpu_rows)
    print(table)
    write_json(raw, args.json)


if __name__ == "__main__":
    main()
