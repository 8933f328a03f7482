"""Compare ``netkit bench udp://... -b`` with ``iperf3 -u -b`` on loopback (issue 18 item 2).

Usage::

    flock /work/bench.lock python benchmarks/udp_bitrate.py [--bitrate 1G] [--runs N]
        [--seconds S] [--size BYTES] [--json [PATH]]

Each round runs both tools at the same target bitrate, datagram size and duration, one stream,
on 127.0.0.1, with the order of the two rotated from round to round (so that noise on the
machine spreads over both):

- **netkit**: ``netkit udp-echo serve --mode sink`` (a fresh one each round) and
  ``netkit bench udp://... -b RATE -s SIZE -d S -c 1 -w 1 --json``; the figures are the
  sink's, from the summary's ``datagrams``.
- **iperf3**: ``iperf3 -s -1`` and ``iperf3 -c ... -u -b RATE -l SIZE -t S --json``; the
  figures are the server's, from the client's ``end.sum_received``. The sink asks for a 4 MiB
  receive buffer by default and iperf3 does not, so iperf3 also runs with ``-w 4M`` (both
  ends' socket buffers), a third tool in each round.

For each: the bitrate received, datagrams sent, loss (%), jitter (ms, RFC 3550 at the
receiver), and the CPU each side used per datagram sent: the client's from its rusage as
``wait4`` returns it (user + system, the process and the children it reaped: bench's worker)
less that of an idle run of the same command (1 s at 10 kbit/s: start-up and imports), the
server's from /proc from when it listened to its end.
Figures are medians over the rounds. Goal (issue 18): at a 1 Gbit/s target, netkit's loss and
jitter within iperf3's on the same run. The script ends with a Markdown block for
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HOST,
    add_json_option,
    cpu_seconds,
    free_port,
    listening_port,
    log,
    machine,
    med,
    netkit_command,
    read_line,
    rotated,
    target_line,
    write_json,
)

IPERF3 = "/usr/bin/iperf3"
NETKIT = "netkit bench -b"
IPERF = "iperf3 -u -b"
IPERF_BUFFER = "iperf3 -u -b -w 4M"
TOOLS = (NETKIT, IPERF, IPERF_BUFFER)
RUN_TIMEOUT_S = 60.0  # bound on one client run beyond its duration


@dataclass
class Round:
    """One tool's figures in one round."""

    tool: str
    bitrate: float  # bits/s received
    sent: int
    loss_pct: float
    jitter_ms: float
    client_cpu_s: float  # the client's CPU seconds, start-up included
    server_cpu_s: float  # the server's, from when it listened


def run_to_end(args: list[str], timeout: float) -> tuple[bytes, float]:
    """Run ``args``; its stdout and the CPU seconds it (and the children it reaped) used."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = _communicate(proc, timeout)
    cpu = _wait4(proc)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{args!r} failed ({proc.returncode}): {err.decode(errors='replace')}")
    return out, cpu


def _communicate(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    try:
        # read both pipes to their end without reaping the process (wait4 reaps it)
        sel = selectors.DefaultSelector()
        chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream.fileno(), selectors.EVENT_READ)
        deadline = timeout
        while sel.get_map():
            events = sel.select(deadline)
            if not events:
                raise TimeoutError(f"{proc.args!r} did not finish in {timeout:g}s")
            for key, _ in events:
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
        return b"".join(chunks[proc.stdout.fileno()]), b"".join(chunks[proc.stderr.fileno()])
    except BaseException:
        proc.kill()
        raise


def _wait4(proc: subprocess.Popen[bytes]) -> float:
    """Reap ``proc`` with wait4: user + system CPU of it and the children it reaped."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def stop_server(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM a server, read what it prints, reap it; its CPU seconds."""
    # no poll(): it would reap the process before wait4 reads its rusage (a zombie takes
    # the signal harmlessly)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    _communicate(proc, 15.0)
    return _wait4(proc)


def netkit_round(bitrate: str, size: int, seconds: float, reverse: bool = False) -> Round:
    sink = subprocess.Popen(
        [*netkit_command(), "udp-echo", "serve", f"{HOST}:0", "--mode", "sink", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = listening_port(sink)
        before = cpu_seconds(sink.pid)
        out, client_cpu = run_to_end(
            [*netkit_command(), "bench", f"udp://{HOST}:{port}", "-b", bitrate, "-s", str(size),
             "-d", f"{seconds}s", "-c", "1", "-w", "1", "--json", *(["-R"] if reverse else [])],
            seconds + RUN_TIMEOUT_S,
        )  # fmt: skip
    finally:
        sink_cpu = stop_server(sink) - before
    summary = next(e for e in map(json.loads, out.splitlines()) if e.get("event") == "summary")
    d = summary["datagrams"]
    sent = max(1, int(d["sent"]))
    return Round(NETKIT, float(d["bitrate"]), sent, float(d["loss_pct"]), float(d["jitter_ms"]),
                 client_cpu, sink_cpu)  # fmt: skip


def iperf_round(
    bitrate: str, size: int, seconds: float, window: str | None = None, reverse: bool = False
) -> Round:
    port = free_port()
    server = subprocess.Popen(
        [IPERF3, "-s", "-1", "-B", HOST, "-p", str(port), "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        read_line(server, 10.0)  # the separator line iperf3 prints when it listens
        before = cpu_seconds(server.pid)
        out, client_cpu = run_to_end(
            [IPERF3, "-c", HOST, "-p", str(port), "-u", "-b", bitrate, "-l", str(size),
             "-t", f"{seconds:g}", "--json", *(["-w", window] if window else []),
             *(["-R"] if reverse else [])],
            seconds + RUN_TIMEOUT_S,
        )  # fmt: skip
    finally:
        server_cpu = stop_server(server) - before
    got = json.loads(out)["end"]["sum_received"]
    sent = max(1, int(got["packets"]))
    return Round(IPERF_BUFFER if window else IPERF, float(got["bits_per_second"]), sent, float(got["lost_percent"]),
                 float(got["jitter_ms"]), client_cpu, server_cpu)  # fmt: skip


def report(
    rounds: list[Round], idle: dict[str, Round], args: argparse.Namespace, info: dict[str, str]
) -> None:
    """The Markdown block: medians per tool and the verdict. CPU per datagram is the
    client's CPU less what the same command used for a one-second run at 10 kbit/s (start-up,
    imports), and the server's from when it listened, over the datagrams sent."""
    by: dict[str, list[Round]] = {tool: [] for tool in TOOLS}
    for r in rounds:
        by[r.tool].append(r)

    def m(tool: str, field: str) -> float:
        if field == "client_us":
            base = idle[tool].client_cpu_s
            return med([(r.client_cpu_s - base) / r.sent * 1e6 for r in by[tool]])
        if field == "server_us":
            return med([r.server_cpu_s / r.sent * 1e6 for r in by[tool]])
        return med([getattr(r, field) for r in by[tool]])

    print(f"UDP bitrate{' reversed (the servers send)' if args.reverse else ''} at a"
          f" {args.bitrate} target, {args.size}-byte datagrams, one stream, "
          f"{args.seconds:g} s rounds, {args.runs} rounds per tool alternating, medians; "
          f"{info['date']}, {info['nproc']} x {info['cpu']}, Linux {info['kernel']}, Python "
          f"{info['python']}, {info['loop']}, iperf3 {info['iperf3']}, commit {info['commit']}")  # fmt: skip
    print()
    sender, receiver = ("server", "client") if args.reverse else ("client", "server")
    print(f"| tool | received Mbit/s | sent | loss % | jitter ms | sender ({sender}) CPU"
          f" us/datagram | receiver ({receiver}) CPU us/datagram |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tool in TOOLS:
        print(f"| `{tool}` | {m(tool, 'bitrate') / 1e6:,.1f} | {m(tool, 'sent'):,.0f} | "
              f"{m(tool, 'loss_pct'):.3f} | {m(tool, 'jitter_ms'):.4f} | "
              f"{m(tool, 'client_us' if not args.reverse else 'server_us'):.2f} | "
              f"{m(tool, 'server_us' if not args.reverse else 'client_us'):.2f} |")  # fmt: skip
    print()
    for anchor in (IPERF, IPERF_BUFFER):
        for field, what in (("loss_pct", "loss"), ("jitter_ms", "jitter")):
            ok = m(NETKIT, field) <= m(anchor, field)
            print(target_line(f"netkit's {what} within `{anchor}`'s on the same run", ok))
    print()
    print("Per round (tool: Mbit/s received, loss %, jitter ms):")
    for i, r in enumerate(rounds):
        print(f"- {i // len(TOOLS) + 1} {r.tool}: {r.bitrate / 1e6:,.1f}, {r.loss_pct:.3f}, "
              f"{r.jitter_ms:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bitrate", default="1G", help="target, as both tools read it (1G)")
    parser.add_argument("--size", type=int, default=1460, help="bytes per datagram (1460)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round (3)")
    parser.add_argument("--runs", type=int, default=3, help="rounds per tool (3)")
    parser.add_argument(
        "--reverse", action="store_true", help="the servers send (bench -R, iperf3 -R)"
    )
    add_json_option(parser)
    args = parser.parse_args()
    if not shutil.which(IPERF3):
        sys.exit(f"{IPERF3} is missing: apt-get install iperf3")
    version = subprocess.run([IPERF3, "--version"], capture_output=True, text=True).stdout
    info = machine()
    info["iperf3"] = version.split()[1] if version else "?"
    rounds: list[Round] = []
    idle: dict[str, Round] = {}
    rev = args.reverse
    tools = [
        (NETKIT, lambda b, n, t: netkit_round(b, n, t, reverse=rev)),
        (IPERF, lambda b, n, t: iperf_round(b, n, t, reverse=rev)),
        (IPERF_BUFFER, lambda b, n, t: iperf_round(b, n, t, window="4M", reverse=rev)),
    ]
    for name, fn in tools:
        log(f"idle run: {name}")
        idle[name] = fn("10K", args.size, 1.0)
    for run in range(args.runs):
        for name, fn in rotated(tools, run):
            log(f"round {run + 1}: {name}")
            rounds.append(fn(args.bitrate, args.size, args.seconds))
            log(f"  {asdict(rounds[-1])}")
    report(rounds, idle, args, info)
    raw = {"machine": info, "rounds": [asdict(r) for r in rounds]}
    write_json({**raw, "idle": {k: asdict(v) for k, v in idle.items()}}, args.json)


if __name__ == "__main__":
    main()
