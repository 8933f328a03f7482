"""The ceiling of ``netkit bench`` as a load generator, on loopback, against its anchors.

Usage::

    python benchmarks/bench.py [--quick] [--runs N] [--seconds S] [--only stream|echo|ws] [--json [PATH]]

Run it with the Python that has netkit installed. Everything is on 127.0.0.1, every run is
bounded in time (``--duration``) and every helper process is stopped at the end. Three parts,
each run ``--runs`` times, interleaved with its reference, and reported as medians and ratios:

1. **stream vs iperf3** -- ``netkit bench 127.0.0.1:PORT --scenario stream -c 1 -w 1`` into
   ``netkit tcp-echo serve --mode stream`` (which reports what it received at the end of the
   run: ``directions.forward.receiver_mb_per_s``), against ``iperf3 -c`` into ``iperf3 -s``
   (``end.sum_received``). Both sides measure received bytes. Target (issue 5): netkit >= 0.9x
   iperf3. ``benchmarks/stream.py`` also measures reverse.
2. **echo round trips/s** -- ``netkit bench ADDR --workers 2 --pipeline 16 -c 16`` against
   ``netkit tcp-echo serve --workers 2``, 64-byte requests, every echo verified. Target:
   >= 150,000/s. ``--pipeline 1`` is shown for information.
3. **WebSocket echo messages/s** -- ``netkit bench ws://... -c 16 -w 1`` against
   ``netkit ws-server`` (echo), and the same load (16 connections, one 64-byte binary message in
   flight on each, verified) from the ``websockets`` library's clients: its asyncio client
   (16 connections on one loop) and its threading client (16 threads); the faster of the two is
   the reference. Both are one process, like ``-w 1``; ``-w 2`` is shown for information.

The report is a Markdown block for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    HOST,
    add_json_option,
    ensure_tool,
    free_port,
    log,
    machine,
    med,
    netkit_command,
    stop,
    target_line,
    wait_connectable,
    write_json,
)
from tcp_echo import iperf3_run

MESSAGE = 64
CONNECTIONS = 16
MAX_MESSAGES = 50_000_000  # count bound on one websockets-client run, far above a few seconds


def bench_json(args: list[str], seconds: float) -> dict[str, Any]:
    """Run ``netkit bench ... --json`` and return its summary."""
    out = subprocess.run(
        [*netkit_command(), "bench", *args, "--duration", f"{seconds:g}s", "--json"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    (summary,) = [e for e in map(json.loads, out.splitlines()) if e["event"] == "summary"]
    if summary["errors"]["total"]:
        raise RuntimeError(f"netkit bench reported errors: {summary['error_samples']}")
    return summary  # type: ignore[no-any-return]


# --- 1. stream ---------------------------------------------------------------------------------


def netkit_stream_run(seconds: float) -> tuple[float, float]:
    """One ``bench --scenario stream`` run into ``tcp-echo serve --mode stream``: (MB/s the
    server received, as it reported at the end, MB/s bench reports having written)."""
    proc, address = start_echo_server(1, "--mode", "stream")
    try:
        sent = bench_json([address, "--scenario", "stream", "-c", "1", "-w", "1"], seconds)
    finally:
        stop(proc)
    return float(sent["directions"]["forward"]["receiver_mb_per_s"]), float(sent["mb_per_s"])


# --- 2. echo -----------------------------------------------------------------------------------


def start_echo_server(workers: int, *more: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *netkit_command(),
            "tcp-echo",
            "serve",
            f"{HOST}:{port}",
            "--workers",
            str(workers),
            *more,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_connectable(port)
    return proc, f"{HOST}:{port}"


# --- 3. WebSocket --------------------------------------------------------------------------------


def websockets_asyncio_client(url: str, connections: int, seconds: float) -> None:
    """Closed-loop echo load from the websockets asyncio client; prints messages/s."""
    import asyncio

    from websockets.asyncio.client import connect

    payload = bytes(range(MESSAGE))
    counts = [0] * connections

    async def one(i: int, deadline: float) -> None:
        async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
            n = 0
            while time.perf_counter() < deadline and n < MAX_MESSAGES:
                await ws.send(payload)
                if await ws.recv() != payload:
                    raise RuntimeError("echo mismatch")
                n += 1
            counts[i] = n

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, start + seconds) for i in range(connections)))
        return sum(counts) / (time.perf_counter() - start)

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(json.dumps({"rate": asyncio.run(main())}), flush=True)


def websockets_sync_client(url: str, connections: int, seconds: float) -> None:
    """Closed-loop echo load from the websockets threading client; prints messages/s."""
    import threading

    from websockets.sync.client import connect

    payload = bytes(range(MESSAGE))
    counts = [0] * connections
    start = time.perf_counter()
    deadline = start + seconds

    def one(i: int) -> None:
        with connect(url, compression=None, max_size=None) as ws:
            n = 0
            while time.perf_counter() < deadline and n < MAX_MESSAGES:
                ws.send(payload)
                if ws.recv() != payload:
                    raise RuntimeError("echo mismatch")
                n += 1
            counts[i] = n

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    print(json.dumps({"rate": sum(counts) / (time.perf_counter() - start)}), flush=True)


def client_run(mode: str, url: str, seconds: float) -> float:
    out = subprocess.run(
        [sys.executable, __file__, mode, url, str(CONNECTIONS), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return float(json.loads(out.splitlines()[-1])["rate"])


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of 1.5 s each")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    add_json_option(parser)
    parser.add_argument("--only", choices=["all", "stream", "echo", "ws"], default="all")
    parser.add_argument("--ws-asyncio", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--ws-sync", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ws_asyncio:
        url, c, s = args.ws_asyncio
        return websockets_asyncio_client(url, int(c), float(s))
    if args.ws_sync:
        url, c, s = args.ws_sync
        return websockets_sync_client(url, int(c), float(s))
    runs, seconds = (2, 1.5) if args.quick else (args.runs, args.seconds)
    raw: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        raw.setdefault(key, []).append(value)
        log(f"  {key}: {value:,.1f}")

    iperf_ok = args.only in ("all", "stream") and ensure_tool("iperf3", "iperf3")
    log(f"stream: {runs} runs x {seconds:g} s")
    for _ in range(runs if args.only in ("all", "stream") else 0):
        if iperf_ok:
            add("iperf3 MB/s", iperf3_run(seconds))
        sink, sent = netkit_stream_run(seconds)
        add("netkit stream MB/s (sink)", sink)
        add("netkit stream MB/s (bench)", sent)

    log(f"echo: {runs} runs x {seconds:g} s against tcp-echo serve --workers 2")
    server, address = start_echo_server(2)
    try:
        for _ in range(runs if args.only in ("all", "echo") else 0):
            common = [address, "-w", "2", "-c", str(CONNECTIONS)]
            add("echo p16 rps", bench_json([*common, "--pipeline", "16"], seconds)["rps"])
            add("echo p1 rps", bench_json([*common, "--pipeline", "1"], seconds)["rps"])
    finally:
        stop(server)

    log(f"websocket: {runs} runs x {seconds:g} s against ws-server")
    port = free_port()
    ws = subprocess.Popen(
        [*netkit_command(), "ws-server", f"{HOST}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"ws://{HOST}:{port}/"
    try:
        wait_connectable(port)
        for _ in range(runs if args.only in ("all", "ws") else 0):
            common = [url, "-c", str(CONNECTIONS)]
            add("ws netkit w1", bench_json([*common, "-w", "1"], seconds)["rps"])
            add("ws netkit w2", bench_json([*common, "-w", "2"], seconds)["rps"])
            add("ws websockets asyncio", client_run("--ws-asyncio", url, seconds))
            add("ws websockets sync", client_run("--ws-sync", url, seconds))
    finally:
        stop(ws)

    m = {k: med(v) for k, v in raw.items()}
    nan = float("nan")
    for key in ("netkit stream MB/s (sink)", "netkit stream MB/s (bench)", "iperf3 MB/s",
                "echo p16 rps", "echo p1 rps", "ws netkit w1", "ws netkit w2",
                "ws websockets asyncio", "ws websockets sync"):  # fmt: skip
        m.setdefault(key, nan)
    info = machine()
    best_ws = max(m["ws websockets asyncio"], m["ws websockets sync"])
    best_name = "asyncio" if m["ws websockets asyncio"] >= m["ws websockets sync"] else "threading"
    lines = [
        "### bench (issue 5)",
        "",
        f"Date: {info['date']}  ",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, {info['loop']}  ",
        f"Runs: {runs} x {seconds:g} s each, interleaved; medians.",
        "",
        "| Benchmark | Tool | Median | Ratio |",
        "|---|---|---:|---|",
    ]
    if iperf_ok:
        lines += [
            f"| Bulk client→server | iperf3 -c (received) | {m['iperf3 MB/s']:,.0f} MB/s | reference |",
            f"| Bulk client→server | netkit bench --scenario stream -c 1 -w 1 (sink received) | "
            f"{m['netkit stream MB/s (sink)']:,.0f} MB/s | "
            f"{m['netkit stream MB/s (sink)'] / m['iperf3 MB/s']:.2f}x iperf3 |",
        ]
    lines += [
        f"| Bulk client→server | (bench's own sent figure) | {m['netkit stream MB/s (bench)']:,.0f} MB/s | information |",
        f"| 64 B echo, tcp-echo serve --workers 2 | netkit bench -w 2 -c 16 --pipeline 16 | {m['echo p16 rps']:,.0f} /s | target 150,000 /s |",
        f"| 64 B echo, tcp-echo serve --workers 2 | netkit bench -w 2 -c 16 --pipeline 1 | {m['echo p1 rps']:,.0f} /s | information |",
        f"| 64 B WebSocket echo, ws-server | websockets asyncio client, 16 connections | {m['ws websockets asyncio']:,.0f} /s | |",
        f"| 64 B WebSocket echo, ws-server | websockets threading client, 16 threads | {m['ws websockets sync']:,.0f} /s | |",
        f"| 64 B WebSocket echo, ws-server | netkit bench -c 16 -w 1 | {m['ws netkit w1']:,.0f} /s | "
        f"{m['ws netkit w1'] / best_ws:.2f}x websockets ({best_name}) |",
        f"| 64 B WebSocket echo, ws-server | netkit bench -c 16 -w 2 | {m['ws netkit w2']:,.0f} /s | "
        f"{m['ws netkit w2'] / best_ws:.2f}x (information) |",
        "",
    ]
    if iperf_ok:
        r = m["netkit stream MB/s (sink)"] / m["iperf3 MB/s"]
        lines.append(target_line(f"stream >= 0.9x iperf3: {r:.2f}x", r >= 0.9))
    rps = m["echo p16 rps"]
    text = f">= 150,000 echo round trips/s (-w 2 --pipeline 16): {rps:,.0f}/s"
    lines.append(target_line(text, rps >= 150_000))
    print("\n".join(lines))
    write_json(raw, args.json)


if __name__ == "__main__":
    main()
