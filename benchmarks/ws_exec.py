"""Compare ``netkit ws-server --exec cat`` with websocketd serving ``cat``: 32-byte lines.

Usage::

    python benchmarks/ws_exec.py [--quick] [--rounds N] [--seconds S] [--json [PATH]]

Both servers run ``cat`` for each connection, as websocketd's documentation does:

- ``netkit ws-server 127.0.0.1:PORT --exec cat --ping-interval 0`` (uvloop, no --json: like
  websocketd at ``--loglevel error``, it writes nothing per message);
- ``websocketd --address 127.0.0.1 --port PORT --loglevel error cat`` (the Debian package;
  installed with apt-get when missing and root, as ``.ci/run`` does).

The client is the same for both: a blocking socket in this process (after a raw opening
handshake) that sends masked 32-byte text frames and reads the 34-byte text frames of the
lines ``cat`` gives back; the first exchange of every round is checked byte for byte. Tests:

a. **ping-pong**: one message in flight (send, wait for the line back, repeat): messages per
   second, the latency of client -> server -> cat -> server -> client.
b. **pipelined**: 64 messages written at once, then the 64 lines read back, repeated:
   messages per second when the server can batch (one pipe write for many lines, one socket
   write for many messages).
c. **streamed, 1,024 in flight**: a thread writes messages (256 frames per ``sendall``) while
   the main thread reads the lines back, the sender waiting whenever 1,024 are unanswered:
   messages per second received, with client, server and ``cat`` all busy at once.
d. **streamed, no limit**: the same with no limit but TCP's and the pipes' flow control. A
   round in which nothing comes back for 2 s while the client is still sending counts as a
   stall (reported with the messages received before it), not as a rate: websocketd 0.4.1
   forwards both directions in one goroutine (``PipeEndpoints`` in libwebsocketd/endpoint.go),
   so once ``cat``'s stdin pipe is full it stops reading ``cat``'s stdout, and ``cat``
   blocks writing it (fixed upstream after 0.4.1: one goroutine per direction).

Each round opens a new connection (so a new ``cat``), warms up for 0.3 s, then measures
``--seconds``; rounds are interleaved (round 1 of both servers, then round 2, ...) with the
order rotated. The server's CPU time (user+sys of the server and its ``cat``, from /proc)
per message is reported beside the rate. Goal (issue 17): netkit >= 1.0x websocketd's
messages per second. The script ends with a Markdown block for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness import (
    WARMUP_S,
    add_json_option,
    closed_loop,
    cpu_seconds,
    ensure_tool,
    free_port,
    log,
    machine,
    med,
    netkit_command,
    ratio_of_medians,
    rotated,
    stop,
    target_line,
    wait_connectable,
    write_json,
)
from ws import masked_frame, ws_connect_blocking

LINE = b"0123456789abcdef0123456789abcdef"  # 32 bytes; the server adds no newline back
TEXT = 0x1
REPLY = bytes([0x81, len(LINE)]) + LINE  # the text frame a server sends for the line
FRAME_IN = 6 + len(LINE)  # the masked frame a client sends for it
# Messages in flight; the last two are sent by a thread, 256 frames per sendall, while the
# lines are read back (None: no limit but flow control's).
WINDOWS: dict[str, int | None] = {
    "pingpong": 1,
    "pipelined": 64,
    "windowed": 1024,
    "streamed": None,
}
TITLES = {
    "pingpong": "a. 32 B lines, ping-pong (1 in flight)",
    "pipelined": "b. 32 B lines, pipelined (64 in flight)",
    "windowed": "c. 32 B lines, streamed, 1,024 in flight",
    "streamed": "d. 32 B lines, streamed, no limit",
}
STREAM_BATCH = 256  # frames per sendall when streaming
STALL_S = 2.0  # nothing back for this long while sending: the server is stuck
MAX_STREAMED = 50_000_000  # count bound on the messages one streamed round sends
GOAL = 1.0  # issue 17: --exec's messages per second >= 1.0x websocketd's

NETKIT = "netkit --exec"
WEBSOCKETD = "websocketd"


@dataclass
class Target:
    """One server under test and what its rounds measured."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    stalls: dict[str, list[int]] = field(default_factory=dict)  # messages before each stall


def start(name: str) -> Target:
    """Start ``name`` on a free port, serving ``cat``; return once it accepts."""
    port = free_port()
    if name == NETKIT:
        cmd = [
            *netkit_command(),
            "ws-server",
            f"127.0.0.1:{port}",
            "--exec",
            "cat",
            "--ping-interval",
            "0",
        ]
    else:
        cmd = ["websocketd", "--address=127.0.0.1", f"--port={port}", "--loglevel=error", "cat"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_connectable(port)
    return Target(name, proc, f"ws://127.0.0.1:{port}/")


def one_round(target: Target, test: str, seconds: float) -> None:
    """A new connection (a new ``cat``): check one exchange, then measure ``test``."""
    window = WINDOWS[test]
    batch = window if window is not None and window <= 64 else STREAM_BATCH
    request = masked_frame(TEXT, LINE) * batch
    expected = REPLY * batch
    with contextlib.closing(ws_connect_blocking(target.url)) as sock:
        sock.sendall(request)
        got = b""
        while len(got) < len(expected):
            chunk = sock.recv(len(expected) - len(got))
            if not chunk:
                raise ConnectionError(f"{target.name} closed the connection")
            got += chunk
        if got != expected:
            raise AssertionError(f"{target.name} answered {got[:40]!r}, not {expected[:40]!r}")
        if batch == window:
            result = closed_loop(sock, request, len(expected), seconds, target.proc.pid)
            messages, elapsed = result.count * batch, result.seconds
            server_cpu = result.server_cpu
        else:
            try:
                messages, elapsed, server_cpu = streamed(
                    sock, request, seconds, target.proc.pid, window
                )
            except Stalled as stall:
                target.stalls.setdefault(test, []).append(stall.messages)
                return
    target.rates.setdefault(test, []).append(messages / elapsed)
    target.cpu_us.setdefault(test, []).append(server_cpu / messages * 1e6)


class Stalled(Exception):
    """Nothing came back for STALL_S while messages were still being sent."""

    def __init__(self, messages: int) -> None:
        super().__init__(f"stalled after {messages} messages")
        self.messages = messages


def streamed(
    sock: socket.socket, request: bytes, seconds: float, pid: int, window: int | None
) -> tuple[int, float, float]:
    """A thread writes ``request`` over and over while this one reads the lines coming back,
    with at most ``window`` messages in flight (None: as many as flow control lets through);
    after a warm-up, the messages received in ``seconds``, the time, and the server's CPU.

    Raises:
        Stalled: nothing came back for STALL_S.
    """
    stop_sending = threading.Event()
    per_request = len(request) // FRAME_IN
    reply_bytes = per_request * len(REPLY)
    credit = threading.Semaphore(max(1, (window or 0) // per_request))

    def send() -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while not stop_sending.is_set() and sent < MAX_STREAMED:
                if window is not None and not credit.acquire(timeout=STALL_S):
                    continue
                sock.sendall(request)
                sent += per_request

    sock.settimeout(STALL_S)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    buf = bytearray(1 << 16)
    received = credited = 0

    def receive() -> None:
        nonlocal received, credited
        try:
            n = sock.recv_into(buf)
        except TimeoutError:
            raise Stalled(received // len(REPLY)) from None
        if n == 0:
            raise ConnectionError("the server closed the connection")
        received += n
        while received - credited >= reply_bytes:  # a request's lines are back: send one more
            credited += reply_bytes
            credit.release()

    try:
        warm_until = time.perf_counter() + WARMUP_S
        while time.perf_counter() < warm_until:
            receive()
        start_bytes = received
        cpu0 = cpu_seconds(pid)
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            receive()
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(pid) - cpu0
    finally:
        stop_sending.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender
        sender.join(timeout=10)
    return (received - start_bytes) // len(REPLY), elapsed, cpu


def report(targets: list[Target], info: dict[str, str], rounds: int, seconds: float) -> str:
    """The Markdown block for benchmarks/README.md."""
    netkit, websocketd = targets
    assert netkit.name == NETKIT and websocketd.name == WEBSOCKETD
    lines = [
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), kernel "
        f"{info['kernel']}, Python {info['python']}, {info['loop']}, websocketd "
        f"{info['websocketd']}, commit {info['commit']}; {rounds} interleaved rounds of "
        f"{seconds:g} s per server and test (a new connection and a new cat each), medians.",
        "",
        "| Test | netkit --exec msg/s (min–max) | websocketd msg/s (min–max) | Ratio | "
        "Server+cat CPU / msg, netkit | websocketd |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for test, title in TITLES.items():
        a, b = netkit.rates.get(test, []), websocketd.rates.get(test, [])
        ratio = ratio_of_medians(a, b)
        lines.append(
            f"| {title} | {cell(netkit, test)} | {cell(websocketd, test)} | "
            f"{f'{ratio:.2f}x' if a and b else 'n/a'} | {cpu_cell(netkit, test)} | "
            f"{cpu_cell(websocketd, test)} |"
        )
    lines.append("")
    for test, title in TITLES.items():
        a, b = netkit.rates.get(test, []), websocketd.rates.get(test, [])
        if a and b:
            ratio = ratio_of_medians(a, b)
            lines.append(target_line(f"{title}: {ratio:.2f}x (goal >= {GOAL:.1f}x)", ratio >= GOAL))
        elif test in websocketd.stalls and not netkit.stalls.get(test):
            lines.append(target_line(f"{title}: websocketd stalled, netkit did not", True))
        else:
            lines.append(target_line(f"{title}: netkit stalled", False))
    return "\n".join(lines)


def cell(target: Target, test: str) -> str:
    """Median messages/s (min–max), and the rounds that stalled."""
    rates, stalls = target.rates.get(test, []), target.stalls.get(test, [])
    parts = []
    if rates:
        parts.append(f"{med(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f})")
    if stalls:
        after = ", ".join(f"{n:,}" for n in stalls)
        parts.append(
            f"stalled in {len(stalls)} of {len(stalls) + len(rates)} rounds (after {after} messages)"
        )
    return "; ".join(parts)


def cpu_cell(target: Target, test: str) -> str:
    """Median server+cat CPU per message, or a dash."""
    cpu = target.cpu_us.get(test)
    return f"{med(cpu):.1f} µs" if cpu else "–"


def websocketd_version() -> str:
    """What ``dpkg-query`` says of the websocketd package, else its ``--version``."""
    query = ["dpkg-query", "-W", "-f", "${Version}", "websocketd"]
    with contextlib.suppress(OSError):
        done = subprocess.run(query, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout:
            return done.stdout
    done = subprocess.run(["websocketd", "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    add_json_option(parser)
    args = parser.parse_args()
    rounds, seconds = (3, 1.0) if args.quick else (args.rounds, args.seconds)
    if not ensure_tool("websocketd", "websocketd"):
        sys.exit("websocketd is not installed: apt-get install websocketd")
    targets = [start(NETKIT), start(WEBSOCKETD)]
    try:
        for r in range(rounds):
            for test in WINDOWS:
                for target in rotated(targets, r):
                    rounds_done = len(target.rates.get(test, []))
                    one_round(target, test, seconds)
                    if len(target.rates.get(test, [])) > rounds_done:
                        figures = (
                            f"{target.rates[test][-1]:9,.0f} msg/s  "
                            f"{target.cpu_us[test][-1]:6.1f} µs CPU/msg"
                        )
                    else:
                        figures = f"stalled after {target.stalls[test][-1]:,} messages"
                    log(f"  round {r + 1}/{rounds} {test:9} {target.name:13} {figures}")
    finally:
        for target in targets:
            stop(target.proc)
    info = machine()
    info["websocketd"] = websocketd_version()
    print(report(targets, info, rounds, seconds))
    raw: dict[str, Any] = {
        "machine": info,
        "rates": {t.name: t.rates for t in targets},
        "cpu_us": {t.name: t.cpu_us for t in targets},
        "stalls": {t.name: t.stalls for t in targets},
    }
    write_json(raw, args.json)


if __name__ == "__main__":
    main()
