"""Compare ``netkit ws-server --exec cat`` with websocketd serving ``cat``: 32-byte lines.

Usage::

    python benchmarks/ws_exec.py [--quick] [--rounds N] [--seconds S] [--json [PATH]]

Both servers run ``cat`` for each connection, as websocketd's documentation does:

- ``netkit ws-server 127.0.0.1:PORT --exec cat --ping-interval 0`` (uvloop, no --json: like
  websocketd at ``--loglevel error``, it writes nothing per message);
- ``websocketd --address 127.0.0.1 --port PORT --loglevel error cat`` (the Debian package,
  installed with apt-get when missing and root).

The client is the same for both: a blocking socket in this process (after a raw opening
handshake) that sends masked 32-byte text frames and reads the 34-byte text frames of the
lines ``cat`` gives back; the first exchange of every round is checked byte for byte. Tests:

a. **ping-pong**: one message in flight (send, wait for the line back, repeat): messages per
   second, the latency of client -> server -> cat -> server -> client.
b. **pipelined**: 64 messages written at once, then the 64 lines read back, repeated:
   messages per second when the server can batch (one pipe write for many lines, one socket
   write for many messages).

Each round opens a new connection (so a new ``cat``), warms up for 0.3 s, then measures
``--seconds``; rounds are interleaved (round 1 of both servers, then round 2, ...) with the
order rotated. The server's CPU time (user+sys of the server and its ``cat``, from /proc)
per message is reported beside the rate. Goal (issue 17): netkit >= 1.0x websocketd's
messages per second. The script ends with a Markdown block for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from harness import (
    add_json_option,
    closed_loop,
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
WINDOWS = {"pingpong": 1, "pipelined": 64}
TITLES = {
    "pingpong": "a. 32 B lines, ping-pong (1 in flight)",
    "pipelined": "b. 32 B lines, pipelined (64 in flight)",
}
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
    request = masked_frame(TEXT, LINE) * window
    expected = REPLY * window
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
        result = closed_loop(sock, request, len(expected), seconds, target.proc.pid)
    messages = result.count * window
    target.rates.setdefault(test, []).append(messages / result.seconds)
    target.cpu_us.setdefault(test, []).append(result.server_cpu / messages * 1e6)


def report(targets: list[Target], info: dict[str, str], rounds: int, seconds: float) -> str:
    """The Markdown block for benchmarks/README.md."""
    netkit, websocketd = targets
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
        a, b = netkit.rates[test], websocketd.rates[test]
        lines.append(
            f"| {title} | {med(a):,.0f} ({min(a):,.0f}–{max(a):,.0f}) | "
            f"{med(b):,.0f} ({min(b):,.0f}–{max(b):,.0f}) | {ratio_of_medians(a, b):.2f}x | "
            f"{med(netkit.cpu_us[test]):.1f} µs | {med(websocketd.cpu_us[test]):.1f} µs |"
        )
    lines.append("")
    for test, title in TITLES.items():
        ratio = ratio_of_medians(netkit.rates[test], websocketd.rates[test])
        lines.append(target_line(f"{title}: {ratio:.2f}x (goal >= {GOAL:.1f}x)", ratio >= GOAL))
    return "\n".join(lines)


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
    if shutil.which("websocketd") is None:
        sys.exit("websocketd is not installed: apt-get install websocketd")
    targets = [start(NETKIT), start(WEBSOCKETD)]
    try:
        for r in range(rounds):
            for test in WINDOWS:
                for target in rotated(targets, r):
                    one_round(target, test, seconds)
                    log(
                        f"  round {r + 1}/{rounds} {test:9} {target.name:13} "
                        f"{target.rates[test][-1]:9,.0f} msg/s  "
                        f"{target.cpu_us[test][-1]:6.1f} µs CPU/msg"
                    )
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
    }
    write_json(raw, args.json)


if __name__ == "__main__":
    main()
