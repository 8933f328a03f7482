"""Compare ``netkit proxy udp://`` with ``socat UDP-LISTEN:...,fork`` on loopback (issue 16).

Usage::

    python benchmarks/udp_proxy.py [--quick] [--runs N] [--seconds S] [--json [PATH]]

It needs socat (installed with apt-get when missing and the script runs as root; otherwise
its rows are skipped with a hint). Everything runs on 127.0.0.1; every loop stops after a fixed
time *and* a fixed count. For 64-byte and 1,400-byte datagrams, in one run:

1. **Saturation** -- one sender process (this script) sends datagrams from one socket as fast
   as it can for S seconds, through the relay, to a sink process (this script too) that counts
   them. *Rate* is the datagrams the sink received per second; *loss* is the share of those
   sent that never arrived (dropped by the relay, or by a socket buffer it did not empty in
   time). The relays: ``netkit proxy udp://... udp://...`` (no faults; ``--json`` for its
   listening line, then one event per flow), ``socat -b 65536 UDP4-LISTEN:P,bind=127.0.0.1,fork,reuseaddr
   UDP4:127.0.0.1:SINK`` (and, for information, the same with ``rcvbuf=4194304`` on both
   sockets, the receive buffer netkit asks for), and no relay at all (the sender and sink
   alone: the ceiling).
2. **Loss below the rate** -- the same, the sender paced (a burst every millisecond) at 90% of
   socat's median saturation rate for that size: how much each relay loses at a rate socat
   sustains.

Each flow is warmed up first (socat forks its child on the first datagram) and measured after.
Runs are interleaved (run 1 of every relay, then run 2, ...) with the order rotated; figures are
medians. Goal (issue 16): netkit's rate at least socat's, and no loss below it. The script ends
with a Markdown block for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HOST,
    START_TIMEOUT_S,
    add_json_option,
    ensure_tool,
    family,
    free_port,
    listening_port,
    log,
    machine,
    med,
    netkit_command,
    read_line,
    rotated,
    stop,
    target_line,
    write_json,
)

SIZES = (64, 1400)
RECEIVE_BUFFER = 4 << 20  # what netkit's UDP relay asks for (netkit.net.udp_relay)
WARMUP = 500  # datagrams that open the flow before a run is measured
MAX_SENDS = 50_000_000  # count bound on one sender, far above what a few seconds allow
SINK_BUFFER = 8 << 20  # the sink's receive buffer: the sink is never the one that drops
SO_RCVBUFFORCE = 33
PR_SET_CHILD_SUBREAPER = 36
SETTLE_S = 0.5  # after the sender stops, time for datagrams still queued to arrive
PACED_SHARE = 0.9  # part 2 paces at this share of socat's saturation rate

DIRECT = "no relay (sender -> sink)"
NETKIT = "netkit proxy udp://"
SOCAT = "socat UDP-LISTEN,fork"
SOCAT_BUFFER = "socat UDP-LISTEN,fork,rcvbuf=4MiB"


# --- helper processes (this file runs as each of them) -------------------------------------


def sink() -> None:
    """Count datagrams on a UDP port; print the port, then the count for every stdin line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # SO_RCVBUFFORCE (33 on Linux, not in the socket module): past rmem_max, as root
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SINK_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SINK_BUFFER)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)
    buf = bytearray(65536)
    count = 0
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([sock, stdin], [], [], 60)
        if not readable:
            return  # nobody asked for a minute: the harness is gone
        if sock in readable:
            for _ in range(10_000):
                try:
                    sock.recv_into(buf)
                except BlockingIOError:
                    break
                count += 1
        if stdin in readable:
            if not sys.stdin.readline():
                return
            print(count, flush=True)


def sender(port: int, size: int, seconds: float, rate: float) -> None:
    """Warm the flow up, print ``warm``, wait for a stdin line, then send for ``seconds`` (as
    fast as possible when ``rate`` is 0, else paced) and print how many were sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((HOST, port))
    payload = bytes(size)
    for _ in range(WARMUP):
        sock.send(payload)
        time.sleep(0.0002)
    print("warm", flush=True)
    sys.stdin.readline()
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    tick = 0.001
    per_tick = rate * tick
    while sent < MAX_SENDS:
        now = time.perf_counter()
        if now >= end:
            break
        if rate:
            due = int((now - start) / tick + 1) * per_tick  # what should be out by this tick
            burst = max(0, int(due) - sent)
            pause = tick - (now - start) % tick
        else:
            burst, pause = 1000, 0.0
        for _ in range(burst):
            try:
                sock.send(payload)
                sent += 1
            except OSError:
                pass  # ENOBUFS, ECONNREFUSED from an earlier ICMP: not sent
        if pause:
            time.sleep(pause)
    print(sent, flush=True)


# --- one measurement ------------------------------------------------------------------------


@dataclass
class Relay:
    """A running relay (or none) in front of the sink: where the sender sends."""

    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        if self.proc is None:
            return
        children = family(self.proc.pid)[1:]  # socat's forked child, one per flow
        stop(self.proc)
        for pid in children:
            reap(pid)


def reap(pid: int) -> None:
    """End an orphan handed to us (this process is its subreaper: see main) and wait for it."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.01)


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--sink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    return proc, int(read_line(proc, START_TIMEOUT_S))


def sink_count(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdin is not None
    proc.stdin.write(b"?\n")
    proc.stdin.flush()
    return int(read_line(proc, START_TIMEOUT_S))


def start_netkit(sink_port: int) -> Relay:
    cmd = [*netkit_command(), "proxy", f"udp://{HOST}:0", f"udp://{HOST}:{sink_port}", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    port = listening_port(proc)
    # Events (one per flow) go to a pipe nobody reads: a few lines, far below its capacity.
    return Relay(NETKIT, port, proc)


def start_socat(sink_port: int, *, rcvbuf: int = 0) -> Relay:
    port = free_port(socket.SOCK_DGRAM)
    buffer = f",rcvbuf={rcvbuf}" if rcvbuf else ""
    cmd = [
        "socat", "-b", "65536",
        f"UDP4-LISTEN:{port},bind={HOST},fork,reuseaddr{buffer}",
        f"UDP4:{HOST}:{sink_port}{buffer}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # socat prints nothing when it is ready; the warm-up covers the rest
    return Relay(SOCAT_BUFFER if rcvbuf else SOCAT, port, proc)


@dataclass
class Run:
    """One run: datagrams sent and received in ``seconds``."""

    sent: int
    received: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.received / self.seconds

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else float("nan")


def measure(
    sink_proc: subprocess.Popen[bytes], port: int, size: int, seconds: float, rate: float
) -> Run:
    """One sender run through ``port``: counted at the sink, after the warm-up."""
    cmd = [sys.executable, __file__, "--sender", str(port), str(size), str(seconds), str(rate)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert read_line(proc, START_TIMEOUT_S).strip() == b"warm"
        time.sleep(SETTLE_S)  # the warm-up's datagrams are all in
        before = sink_count(sink_proc)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        sent = int(read_line(proc, seconds + START_TIMEOUT_S))
        time.sleep(SETTLE_S)
        received = sink_count(sink_proc) - before
    finally:
        stop(proc)
    return Run(sent, received, seconds)


@dataclass
class Results:
    """Every run, by part, size and relay."""

    saturation: dict[int, dict[str, list[Run]]] = field(default_factory=dict)
    paced: dict[int, dict[str, list[Run]]] = field(default_factory=dict)
    paced_rate: dict[int, float] = field(default_factory=dict)


def run_part(
    starters: list[tuple[str, Callable[[int], Relay]]],
    sizes: tuple[int, ...],
    runs: int,
    seconds: float,
    rate_for: Callable[[int], float],
) -> dict[int, dict[str, list[Run]]]:
    """Interleaved runs of every relay for every size; a fresh sink and relay per run."""
    out: dict[int, dict[str, list[Run]]] = {size: {} for size in sizes}
    for run in range(runs):
        for size in sizes:
            for name, start in rotated(starters, run):
                sink_proc, sink_port = start_sink()
                relay = start(sink_port)
                try:
                    result = measure(sink_proc, relay.port, size, seconds, rate_for(size))
                finally:
                    relay.close()
                    stop(sink_proc)
                out[size].setdefault(name, []).append(result)
                log(
                    f"  run {run + 1} {size:>5} B {name}: {result.rate:,.0f}/s, loss {result.loss:.2%}"
                )
    return out


# --- the report ------------------------------------------------------------------------------


def report(results: Results, info: dict[str, str], runs: int, seconds: float) -> str:
    lines = [
        f"### UDP relay (issue 16), {info['date']}",
        "",
        f"{info['nproc']} CPU ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}, "
        f"{info['loop']}, socat {info.get('socat', '?')}, commit {info['commit']}; medians of "
        f"{runs} interleaved runs of {seconds:g} s each, one sender process, one flow.",
        "",
        "| size | path | saturation: received/s | loss | paced at 90% of socat's rate: rate | loss |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    ok_rate, ok_loss = True, True
    for size, by_relay in results.saturation.items():
        for name, runs_ in by_relay.items():
            paced = results.paced.get(size, {}).get(name, [])
            paced_rate = results.paced_rate.get(size)
            paced_cells = (
                f"{paced_rate:,.0f}/s | {med([r.loss for r in paced]):.3%}"
                if paced and paced_rate
                else "- | -"
            )
            lines.append(
                f"| {size} B | {name} | {med([r.rate for r in runs_]):,.0f} | "
                f"{med([r.loss for r in runs_]):.2%} | {paced_cells} |"
            )
        if NETKIT in by_relay and SOCAT in by_relay:
            netkit_rate = med([r.rate for r in by_relay[NETKIT]])
            socat_rate = med([r.rate for r in by_relay[SOCAT]])
            ok_rate &= netkit_rate >= socat_rate
            paced = results.paced.get(size, {}).get(NETKIT, [])
            ok_loss &= bool(paced) and med([r.loss for r in paced]) <= 0.001
            lines.append(f"|  | netkit / socat | {netkit_rate / socat_rate:.2f}x |  |  |  |")
    have_socat = any(SOCAT in r for r in results.saturation.values())
    lines += [
        "",
        target_line(
            "netkit's saturation rate >= socat's, each size", ok_rate if have_socat else None
        ),
        target_line(
            "netkit loses nothing (<= 0.1%) at 90% of socat's rate", ok_loss if have_socat else None
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of 1 s")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a run (default 2)")
    add_json_option(parser)
    # Internal modes: this file is also each helper process.
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sender", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return sink()
    if args.sender:
        port, size, seconds, rate = args.sender
        return sender(int(port), int(size), float(seconds), float(rate))
    if args.quick:
        args.runs, args.seconds = 2, 1.0
    # socat's forked children outlive their parent: become their subreaper, to reap them.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    has_socat = ensure_tool("socat", "socat")
    starters: list[tuple[str, Callable[[int], Relay]]] = [
        (DIRECT, lambda port: Relay(DIRECT, port)),
        (NETKIT, start_netkit),
    ]
    if has_socat:
        starters.append((SOCAT, start_socat))
        # netkit asks for 4 MiB receive buffers; socat with the same, for information.
        starters.append((SOCAT_BUFFER, lambda port: start_socat(port, rcvbuf=RECEIVE_BUFFER)))
    results = Results()
    log(f"saturation: {args.runs} runs x {args.seconds:g} s per path and size")
    results.saturation = run_part(starters, SIZES, args.runs, args.seconds, lambda _size: 0.0)
    if has_socat:
        for size in SIZES:
            results.paced_rate[size] = PACED_SHARE * med(
                [r.rate for r in results.saturation[size][SOCAT]]
            )
        log(f"paced at {PACED_SHARE:.0%} of socat's rate: {args.runs} runs x {args.seconds:g} s")
        relays = [s for s in starters if s[0] != DIRECT]
        results.paced = run_part(
            relays, SIZES, args.runs, args.seconds, results.paced_rate.__getitem__
        )
    info = machine()
    info["socat"] = socat_version() if has_socat else "not installed"
    print(report(results, info, args.runs, args.seconds))
    raw = {
        "machine": info,
        "saturation": {
            s: {n: [vars(r) for r in rs] for n, rs in d.items()}
            for s, d in results.saturation.items()
        },
        "paced_rate": results.paced_rate,
        "paced": {
            s: {n: [vars(r) for r in rs] for n, rs in d.items()} for s, d in results.paced.items()
        },
    }
    write_json(raw, args.json)


def socat_version() -> str:
    out = subprocess.run(["socat", "-V"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("socat version"):
            return line.split()[2]
    return "?"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
