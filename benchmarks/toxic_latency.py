"""The latency a toxiproxy latency toxic adds through ``netkit proxy --api`` (issue 15).

Usage::

    python benchmarks/toxic_latency.py [--count 1000] [--latency 100] [--connections 20]
        [--loop auto|uvloop|asyncio] [--json [PATH]]

``netkit proxy --api 127.0.0.1:0`` (toxiproxy-server's drop-in) is started with a ``netkit
tcp-echo serve`` upstream; a proxy is created over the API, as a toxiproxy client does. Round
trips (64 bytes out, the echo back, timed with ``perf_counter_ns``) are measured first without
a toxic (the baseline), then with ``{"type": "latency", "attributes": {"latency": 100}}`` on
the downstream stream, ``--count`` of each, spread over ``--connections`` connections that
each run theirs one after another (so the run takes count / connections × latency, not
count × latency), all driven by one thread and a selector. The connections are opened (and a
first round trip made on each) before the timing starts, and the toxic is added while they are
open: it reaches them at once, as toxiproxy's does. Each connection's first round trip after
the add (its move from the splice path to the buffered one) is reported on its own line, and
the ``--count`` round trips are timed after it. The latency added by the toxic is each round trip minus the baseline's
median; its percentiles are reported.

Target (issue 15): the added latency is 100 ms ± 2 ms at p99 over 1,000 round trips; the
script checks every percentile from p1 to p99 against it. Everything runs on 127.0.0.1 and
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HOST,
    add_json_option,
    listening_port,
    log,
    machine,
    netkit_command,
    stop,
    target_line,
    write_json,
)

MESSAGE = b"x" * 64
ROUND_TRIP_TIMEOUT_S = 5.0


def api_call(api: int, method: str, path: str, body: Any = None) -> Any:
    """One request to the toxiproxy API; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{HOST}:{api}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def open_connections(port: int, connections: int) -> list[socket.socket]:
    """``connections`` connections through the proxy, each with one round trip done (not
    timed: what is timed is the relay, not the proxy connecting to its upstream)."""
    socks = []
    for _ in range(connections):
        sock = socket.create_connection((HOST, port), timeout=ROUND_TRIP_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
        sock.sendall(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the proxy closed a connection")
            got += len(chunk)
    return socks


def measure(socks: list[socket.socket], count: int) -> list[float]:
    """``count`` round trips spread over ``socks``, in milliseconds.

    One thread and a selector drive every connection (threads would add their scheduling to
    the figures): each sends its next message as soon as its echo is back, until ``count``
    round trips are done.
    """
    times: list[float] = []
    sent_at: dict[socket.socket, int] = {}
    pending: dict[socket.socket, int] = {}
    deadline = time.monotonic() + count * ROUND_TRIP_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        for sock in socks[:count]:
            selector.register(sock, selectors.EVENT_READ)
            sent_at[sock], pending[sock] = time.perf_counter_ns(), len(MESSAGE)
            sock.send(MESSAGE)  # 64 bytes into an empty send buffer: all of it
        started = len(sent_at)
        while len(times) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(times)} of {count} round trips in time")
            for key, _ in selector.select(timeout=ROUND_TRIP_TIMEOUT_S):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                now = time.perf_counter_ns()
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the proxy closed a connection")
                pending[sock] -= len(data)
                if pending[sock] > 0:
                    continue
                times.append((now - sent_at[sock]) / 1e6)
                if started < count:
                    started += 1
                    sent_at[sock], pending[sock] = time.perf_counter_ns(), len(MESSAGE)
                    sock.send(MESSAGE)
    return times


def percentiles(values: list[float]) -> dict[str, float]:
    """min, p1, p50, p99, max of ``values`` (milliseconds, 3 decimals)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    picked = {"min": min(values), "p1": cuts[0], "p50": cuts[49], "p99": cuts[98]}
    return {k: round(v, 3) for k, v in (picked | {"max": max(values)}).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="round trips per phase")
    parser.add_argument("--latency", type=int, default=100, help="the toxic's latency, ms")
    parser.add_argument("--connections", type=int, default=20, help="connections in parallel")
    parser.add_argument("--tolerance", type=float, default=2.0, help="allowed error, ms")
    parser.add_argument(
        "--loop", choices=["auto", "uvloop", "asyncio"], default="auto", help="the proxy's loop"
    )
    add_json_option(parser)
    args = parser.parse_args()
    netkit = netkit_command()
    echo = subprocess.Popen(
        [*netkit, "tcp-echo", "serve", f"{HOST}:0", "--json"], stdout=subprocess.PIPE
    )
    api_proc = subprocess.Popen(
        [*netkit, "--loop", args.loop, "proxy", "--api", f"{HOST}:0", "--json"],
        stdout=subprocess.PIPE,
    )
    try:
        echo_port, api = listening_port(echo), listening_port(api_proc)
        proxy = api_call(
            api, "POST", "/proxies", {"name": "bench", "upstream": f"{HOST}:{echo_port}"}
        )
        port = int(proxy["listen"].rpartition(":")[2])
        socks = open_connections(port, args.connections)
        try:
            log(f"baseline: {args.count} round trips")
            baseline = measure(socks, args.count)
            # Added while the connections are open: it reaches them, as toxiproxy's does.
            toxic = {
                "type": "latency",
                "stream": "downstream",
                "attributes": {"latency": args.latency},
            }
            api_call(api, "POST", "/proxies/bench/toxics", toxic)
            # Each connection's first round trip after the add is reported apart: it includes
            # the connection's move from the splice path to the buffered one.
            first = measure(socks, len(socks))
            log(f"with a {args.latency} ms latency toxic: {args.count} round trips")
            with_toxic = measure(socks, args.count)
        finally:
            for sock in socks:
                sock.close()
    finally:
        stop(api_proc)
        stop(echo)
    floor = statistics.median(baseline)
    added = [t - floor for t in with_toxic]
    result = {
        "machine": machine(),
        "count": args.count,
        "connections": args.connections,
        "latency_ms": args.latency,
        "loop": args.loop,
        "baseline_ms": percentiles(baseline),
        "added_ms": percentiles(added),
        "first_after_add_ms": percentiles([t - floor for t in first]),
    }
    low, high = args.latency - args.tolerance, args.latency + args.tolerance
    result["within_tolerance"] = round(sum(low <= a <= high for a in added) / len(added), 4)
    shown = result["added_ms"]
    ok = low <= shown["p1"] and shown["p99"] <= high
    print(f"baseline round trip: {result['baseline_ms']}")
    print(f"added by the toxic:  {shown}")
    print(f"first round trip of each connection after the add: {result['first_after_add_ms']}")
    print(f"within {low:g}..{high:g} ms: {result['within_tolerance']:.1%} of round trips")
    print(target_line(f"added latency {low:g}..{high:g} ms from p1 to p99", ok))
    write_json(result, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
