"""10,000 concurrent connections: tcp-echo, ws-server and proxy (issue 8).

For each server: open N connections from this process (WebSocket ones finish their opening
handshake), record how long it took until every one was accepted and answered, the server's
memory per connection (RSS with N open minus RSS before), and the round trip of a fresh client
while they are all open. All on loopback; bounded by N and a timeout per step.

Run: ``python benchmarks/connections.py [-n 10000] [--runs 3]`` (as root, or with an open-files
limit above 2N+200: the script raises its own and its servers' limits when it can).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from harness import cpu_model, netkit_command, stop, vm_rss

NETKIT = netkit_command()


def raise_limit(n: int) -> None:
    """Raise RLIMIT_NOFILE (soft and, as root, hard) to at least n."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def rss(pid: int) -> int:
    """Resident memory of a running server, in bytes."""
    return vm_rss(pid) or 0


def start(args: list[str], limit: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start a netkit server with --json; return it and its bound address."""
    proc = subprocess.Popen(
        [*NETKIT, *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: raise_limit(limit),
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        proc.kill()
        raise SystemExit(f"{args[0]} did not start")
    line = json.loads(proc.stdout.readline())
    # Read its stdout from now on (an event per connection) so the pipe never fills.
    threading.Thread(target=discard_output, args=(proc,), daemon=True).start()
    return proc, str(line["address"])


def discard_output(proc: subprocess.Popen[bytes]) -> None:
    """Read a server's stdout until it ends (or stop() closes it), so the pipe never fills."""
    with contextlib.suppress(ValueError, OSError):
        for _ in proc.stdout or ():
            pass


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


BATCH = 512
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: "
    + base64.b64encode(b"0123456789abcdef")
    + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def open_all(
    address: tuple[str, int], n: int, websocket: bool
) -> tuple[list[socket.socket], float]:
    """Open n connections; every one is answered (an echo byte or a 101) before returning.

    In batches of BATCH, each answered before the next starts: connecting faster than the
    server accepts overflows the listen queue, and Linux then drops handshakes and retries
    them with exponential back-off, which measures the kernel, not the server.
    """
    started = time.perf_counter()
    socks: list[socket.socket] = []
    want = b"\r\n\r\n" if websocket else b"x"
    for first in range(0, n, BATCH):
        batch = []
        for _ in range(min(BATCH, n - first)):
            sock = socket.create_connection(address, timeout=30)
            sock.sendall(UPGRADE if websocket else b"x")
            batch.append(sock)
        for sock in batch:
            got = b""
            while not got.endswith(want):
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit(f"connection {len(socks)} closed by the server")
                got += chunk
            socks.append(sock)
    return socks, time.perf_counter() - started


def fresh_rtt(address: tuple[str, int], websocket: bool) -> float:
    """Round trip of a new client while everything else is open (ms)."""
    start_t = time.perf_counter()
    with socket.create_connection(address, timeout=30) as sock:
        if websocket:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        else:
            sock.sendall(b"fresh")
            got = b""
            while len(got) < 5:
                got += sock.recv(5)
    return (time.perf_counter() - start_t) * 1000


def measure(
    name: str,
    n: int,
    launch: Callable[[], tuple[list[subprocess.Popen[bytes]], str, subprocess.Popen[bytes]]],
    websocket: bool,
) -> dict[str, Any]:
    procs, address, server = launch()
    try:
        time.sleep(0.3)  # let the server settle before the baseline sample (not synchronisation)
        before = rss(server.pid)
        socks, took = open_all(host_port(address), n, websocket)
        after = rss(server.pid)
        rtt = fresh_rtt(host_port(address), websocket)
        for sock in socks:
            sock.close()
        return {
            "server": name,
            "connections": n,
            "accept_all_s": round(took, 3),
            "rate_per_s": round(n / took),
            "rss_per_connection_kib": round((after - before) / n / 1024, 2),
            "rss_total_mib": round(after / 2**20, 1),
            "fresh_client_ms": round(rtt, 3),
        }
    finally:
        for proc in procs:
            stop(proc, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the raw per-run figures too")
    args = parser.parse_args()
    n = args.connections
    limit = 3 * n + 1024  # a proxy holds two sockets per connection, and needs room to spare
    raise_limit(limit + n)

    def tcp_echo() -> tuple[list[subprocess.Popen[bytes]], str, subprocess.Popen[bytes]]:
        proc, address = start(["tcp-echo", "serve", "127.0.0.1:0"], limit)
        return [proc], address, proc

    def ws_server() -> tuple[list[subprocess.Popen[bytes]], str, subprocess.Popen[bytes]]:
        proc, address = start(
            ["ws-server", "127.0.0.1:0", "--ping-interval", "0", "--handshake-timeout", "120s"],
            limit,
        )
        return [proc], address, proc

    def proxy() -> tuple[list[subprocess.Popen[bytes]], str, subprocess.Popen[bytes]]:
        upstream, up_address = start(["tcp-echo", "serve", "127.0.0.1:0"], limit)
        proc, address = start(["proxy", "127.0.0.1:0", up_address], limit)
        return [proc, upstream], address, proc

    # A relay holds two descriptors; where the hard limit cannot be raised (no CAP_SYS_RESOURCE
    # in a container), the proxy gets the most connections that fit, and the table says so.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    proxy_n = min(n, (hard - 200) // 2)
    counts = {"tcp-echo": n, "ws-server": n, "proxy": proxy_n}
    results: dict[str, list[dict[str, Any]]] = {"tcp-echo": [], "ws-server": [], "proxy": []}
    for run in range(args.runs):
        for name, launch, websocket in (
            ("tcp-echo", tcp_echo, False),
            ("ws-server", ws_server, True),
            ("proxy", proxy, False),
        ):
            figures = measure(name, counts[name], launch, websocket)
            results[name].append(figures)
            print(f"run {run + 1}: {json.dumps(figures)}", file=sys.stderr)

    cpu = cpu_model()
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ")
    print(
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}  "
    )
    print(
        f"{n:,} connections per server, medians of {args.runs} runs; proxy figures are the proxy process alone "
        "(each relay also holds an upstream connection in it).\n"
    )
    if proxy_n < n:
        print(
            f"The hard open-files limit here is {hard:,} and cannot be raised: {n:,} relays need about "
            f"{2 * n + 64:,} descriptors in the proxy, so it was measured with {proxy_n:,}.\n"
        )
    print(
        "| server | connections | time to accept and answer all | connections/s | RSS per connection | RSS total | fresh client while all open |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(r[key] for r in runs))

        print(
            f"| {name} | {counts[name]:,} | {med('accept_all_s'):.2f} s | {med('rate_per_s'):,.0f} | {med('rss_per_connection_kib'):.1f} KiB | "
            f"{med('rss_total_mib'):.0f} MiB | {med('fresh_client_ms'):.2f} ms |"
        )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
