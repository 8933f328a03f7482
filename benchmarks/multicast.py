"""Compare ``netkit multicast send/listen`` with a bare Python socket loop and iperf2 on lo.

Usage::

    python benchmarks/multicast.py [--quick] [--runs N] [--count N] [--size BYTES] [--json [PATH]]

Run it with the Python that has netkit installed (``/tmp/venv/bin/python`` in the dev setup).
Everything stays on ``lo``: every sender is pinned to it (``IP_MULTICAST_IF`` by index for
netkit and the bare loop; iperf2's client binds 127.0.0.1, which makes the kernel route its
multicast out of lo), TTL 1. Every load loop is bounded by a datagram count and a timeout.

Each pair sends ``--count`` datagrams of ``--size`` bytes (default 200 000 x 64 B) as fast as
it can to one group on lo, received by one listener of the same kind:

- **netkit**: ``netkit multicast send GROUP:PORT -c N -s SIZE -i 0 -q --json`` into
  ``netkit multicast listen GROUP:PORT -q`` (stopped with SIGTERM once the sender is done and
  the receiver went quiet; its summary gives the count received);
- **bare Python**: a ``sendto`` loop on a blocking socket into a ``recv_into`` loop on a
  preallocated buffer, both in subprocesses of this script (``--role``);
- **iperf2**: ``iperf -c GROUP -u -B 127.0.0.1 -T 1 -l SIZE -b 10000000pps -n N*SIZE`` into
  ``iperf -s -u -B GROUP%lo -l SIZE -y C``; iperf2 is installed with ``apt-get install -y iperf``
  when missing and the script runs as root, else its row is skipped.

Reported per tool (medians of ``--runs`` interleaved runs, order rotated): datagrams/s sent
(count / sender time), datagrams/s received (received / sender time), and the loss at that
rate. The receiver is the bottleneck on loopback, so "received" and "loss" are the figures that
compare the tools' receive paths; "sent" compares their send paths. The script ends with a
Markdown block for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import cpu_model, ensure_tool, free_port, log, netkit_command, rotated

GROUP = "239.77.200.1"
NETKIT = netkit_command()
START_TIMEOUT_S = 10.0
QUIET_S = 0.5  # a receiver that got nothing for this long after the sender finished is done
RUN_TIMEOUT_S = 60.0


# --- the bare Python loops (this file runs as each of them) ----------------------------------


def bare_receiver(port: int, count: int) -> None:
    """Join on lo, ``recv_into`` until ``count`` datagrams or QUIET_S of silence after the first."""
    index = socket.if_nametoindex("lo")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((GROUP, port))
    mreqn = socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0") + struct.pack("=i", index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    buf = bytearray(65536)
    print(json.dumps({"event": "listening"}), flush=True)
    received = 0
    sock.settimeout(RUN_TIMEOUT_S)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while received < count and time.monotonic() < deadline:
        try:
            sock.recv_into(buf)
        except TimeoutError:
            break
        received += 1
        if received == 1:
            sock.settimeout(QUIET_S)
    print(json.dumps({"event": "result", "received": received}), flush=True)


def bare_sender(port: int, count: int, size: int) -> None:
    """A blocking ``sendto`` loop pinned to lo."""
    index = socket.if_nametoindex("lo")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    mreqn = socket.inet_aton("0.0.0.0") * 2 + struct.pack("=i", index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    payload = bytes(size)
    target = (GROUP, port)
    start = time.perf_counter()
    for _ in range(count):
        sock.sendto(payload, target)
    seconds = time.perf_counter() - start
    print(json.dumps({"event": "result", "sent": count, "seconds": seconds}), flush=True)


# --- one run of each pair ---------------------------------------------------------------------


def _wait_line(proc: subprocess.Popen[str], needle: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if needle in line:
            return line
    proc.kill()
    raise RuntimeError(f"{proc.args!r} did not start: {proc.stderr.read() if proc.stderr else ''}")


def _stop_when_quiet(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    """Give the receiver QUIET_S to drain its queue, then stop it and return its stdout."""
    time.sleep(QUIET_S)  # not synchronisation: the measured tail the receiver may still read
    if proc.poll() is None:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    return out


def run_netkit(count: int, size: int) -> dict[str, float]:
    port = free_port(socket.SOCK_DGRAM)
    target = f"{GROUP}:{port}"
    listener = subprocess.Popen(
        [*NETKIT, "multicast", "listen", target, "-q", "-t", str(RUN_TIMEOUT_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_line(listener, "listening on")
        sent = subprocess.run(
            [*NETKIT, "multicast", "send", target, "-c", str(count), "-s", str(size), "-i", "0",
             "-q", "--json"],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True,
        )  # fmt: skip
        summary = json.loads(sent.stdout.splitlines()[-1])
        out = _stop_when_quiet(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    received = 0
    for line in out.splitlines():
        if line.startswith("received "):
            received = int(line.split()[1])
    return {"sent": summary["sent"], "seconds": summary["seconds"], "received": received}


def run_bare(count: int, size: int) -> dict[str, float]:
    port = free_port(socket.SOCK_DGRAM)
    me = [sys.executable, __file__, "--role"]
    receiver = subprocess.Popen(
        [*me, "bare-recv", str(port), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_line(receiver, "listening")
        sent = subprocess.run(
            [*me, "bare-send", str(port), str(count), str(size)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True,
        )  # fmt: skip
        result = json.loads(sent.stdout.splitlines()[-1])
        out, _ = receiver.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    received = json.loads(out.splitlines()[-1])["received"]
    return {"sent": result["sent"], "seconds": result["seconds"], "received": received}


def run_iperf(count: int, size: int) -> dict[str, float]:
    port = free_port(socket.SOCK_DGRAM)
    server = subprocess.Popen(
        ["iperf", "-s", "-u", "-B", f"{GROUP}%lo", "-p", str(port), "-l", str(size), "-y", "C"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)  # iperf2 prints nothing when it is ready; give it time to join
        client = subprocess.run(
            ["iperf", "-c", GROUP, "-u", "-p", str(port), "-B", "127.0.0.1", "-T", "1",
             "-l", str(size), "-b", "10000000pps", "-n", str(count * size), "-y", "C"],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True,
        )  # fmt: skip
        out = _stop_when_quiet(server, signal.SIGINT)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    # CSV: date,src,sport,dst,dport,id,interval,bytes,bits/s[,jitter,lost,total,pct,ooo]
    sent_row = client.stdout.strip().splitlines()[-1].split(",")
    sent_bytes, bps = int(sent_row[7]), float(sent_row[8])
    rows = [line.split(",") for line in out.strip().splitlines() if line.count(",") >= 12]
    lost, total = (int(rows[-1][10]), int(rows[-1][11])) if rows else (0, 0)
    return {
        "sent": sent_bytes // size,
        "seconds": sent_bytes * 8 / bps if bps else 0.0,
        "received": max(0, total - lost),
    }


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of 50 000 datagrams")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--json", nargs="?", const="-", help="raw per-run results (to PATH or stdout)"
    )
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "bare-recv":
            bare_receiver(int(rest[0]), int(rest[1]))
        elif role == "bare-send":
            bare_sender(int(rest[0]), int(rest[1]), int(rest[2]))
        return
    runs, count = (2, 50_000) if args.quick else (args.runs, args.count)
    tools: dict[str, Callable[[int, int], dict[str, float]]] = {
        "netkit multicast send → listen": run_netkit,
        "bare Python sendto → recv_into": run_bare,
    }
    if ensure_tool("iperf", "iperf"):  # iperf2
        tools["iperf2 -c → -s (UDP, multicast)"] = run_iperf
    results: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
    names = list(tools)
    for run in range(runs):
        for name in rotated(names, run):
            with contextlib.suppress(subprocess.CalledProcessError, RuntimeError, IndexError) as _:
                r = tools[name](count, args.size)
                r["sent_per_s"] = r["sent"] / r["seconds"] if r["seconds"] else 0.0
                r["received_per_s"] = r["received"] / r["seconds"] if r["seconds"] else 0.0
                r["loss_percent"] = (
                    100 * (r["sent"] - r["received"]) / r["sent"] if r["sent"] else 0.0
                )
                results[name].append(r)
                log(
                    f"run {run + 1}/{runs} {name}: sent {r['sent_per_s']:,.0f}/s, received "
                    f"{r['received_per_s']:,.0f}/s, loss {r['loss_percent']:.1f}%"
                )
    if args.json:
        blob = json.dumps(results, indent=2)
        if args.json == "-":
            print(blob)
        else:
            Path(args.json).write_text(blob)

    def med(name: str, key: str) -> float:
        values = [r[key] for r in results[name]]
        return statistics.median(values) if values else float("nan")

    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = cpu_model()
    lines = [
        "## `multicast.py`",
        "",
        f"{date}; {os.cpu_count()} CPU(s) {cpu}; Linux {platform.release()}; Python "
        f"{platform.python_version()}; {count:,} datagrams of {args.size} B to {GROUP} on lo, "
        f"TTL 1; medians of {runs} interleaved runs.",
        "",
        "| sender → receiver | sent datagrams/s | received datagrams/s | loss at that rate | runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {med(name, 'sent_per_s'):,.0f} | {med(name, 'received_per_s'):,.0f} | "
            f"{med(name, 'loss_percent'):.1f}% | {len(results[name])} |"
        )
    lines.append("")
    nk = names[0]
    for other in names[1:]:
        lines.append(
            f"- netkit / {other.split(' ')[0]}: sent {med(nk, 'sent_per_s') / med(other, 'sent_per_s'):.2f}x, "
            f"received {med(nk, 'received_per_s') / med(other, 'received_per_s'):.2f}x"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
