"""What every benchmark script shares: processes, /proc readings, pinning, medians, reports.

The scripts in this folder import it as ``harness`` (each runs as ``python benchmarks/X.py``, so
this folder is on ``sys.path``). Each script keeps only what it measures; here live:

- **processes**: ``netkit_command``, ``free_port``, ``read_line`` / ``listening_port`` (a
  server's first JSON line), ``wait_connectable``, ``stop`` (SIGTERM, then SIGKILL),
  ``ensure_tool`` (apt-get an anchor when missing and root);
- **/proc**: ``family`` (a process and its descendants), ``proc_stat``, ``cpu_seconds`` (user +
  sys), ``last_cpu``, ``vm_rss`` / ``rss_kib``, ``pin`` (``sched_setaffinity`` on every thread);
- **figures and reports**: ``med``, ``ratio_of_medians``, ``machine`` / ``cpu_model`` (what the
  numbers were measured on), ``target_line``, ``add_json_option`` / ``write_json``;
- **CPU per message**: ``tcp_floor_server`` (a bare blocking echo, the floor),
  ``CpuRow`` / ``cpu_per_message`` (client and server pinned to one CPU, a blocking client in
  this process, server CPU from /proc, rounds interleaved) and ``cpu_table``, used by
  ``tcp_echo.py`` and ``ws.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
WARMUP_S = 0.3
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the results."""
    print(msg, file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------


def netkit_command() -> list[str]:
    """``netkit`` next to this Python when it is there, else ``python -m netkit``."""
    script = Path(sys.executable).parent / "netkit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "netkit"]


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or ``SOCK_DGRAM``: UDP) port the kernel just handed out (bound to 0, closed)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line of the process's stdout, within ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no output line from {proc.args!r} within {timeout:g}s")
        chunk = os.read(fd, 1)  # byte by byte: nothing may be read past the line
        if not chunk:
            raise RuntimeError(f"{proc.args!r} exited before printing a line")
        line += chunk
    return line


def listening_port(proc: subprocess.Popen[bytes]) -> int:
    """The port from the ``{"event":"listening","address":"HOST:PORT"}`` first line."""
    event = json.loads(read_line(proc, START_TIMEOUT_S))
    if event.get("event") != "listening":
        raise RuntimeError(f"unexpected first line from {proc.args!r}: {event}")
    return int(str(event["address"]).rsplit(":", 1)[1])


def wait_connectable(port: int, timeout: float = START_TIMEOUT_S) -> None:
    """Poll until something accepts on ``port`` (for servers that print no readiness line)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then wait; SIGKILL only if it will not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def ensure_tool(name: str, package: str) -> bool:
    """Make ``name`` available: already there, or apt-get install when we are root."""
    if shutil.which(name):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"{name} not found: installing {package} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", package]

        def apt(cmd: list[str]) -> int:
            out = subprocess.DEVNULL
            return subprocess.run(cmd, stdout=out, stderr=out, env=env, timeout=300).returncode

        try:
            if apt(install) != 0:
                apt(["apt-get", "update", "-q"])  # stale or empty package lists
                apt(install)
        except subprocess.TimeoutExpired:
            pass
        if shutil.which(name):
            return True
    log(f"{name} not found: its rows are skipped. Install it with: sudo apt-get install {package}")
    return False


# --- /proc ---------------------------------------------------------------------------------


def family(pid: int) -> list[int]:
    """``pid`` and all its live descendants (socat forks one child per client)."""
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        i += 1
    return pids


def proc_stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (``state`` is index 0)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU time of ``pid`` (all threads) and its live descendants.

    ``reaped`` adds what the children ``pid`` already waited for used (cutime, cstime): right
    for a whole run, wrong across a window in which a child may be reaped.
    """
    total = 0.0
    for i, p in enumerate(family(pid)):
        with contextlib.suppress(OSError):
            fields = proc_stat(p)
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
            if reaped and i == 0:
                total += (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime
    return total


def last_cpu(pid: int | str) -> int:
    """The CPU ``pid`` last ran on (``processor`` in /proc/PID/stat)."""
    return int(proc_stat(pid)[36])


def vm_rss(pid: int) -> int | None:
    """Resident set size (``VmRSS``) of ``pid`` alone, in bytes; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None  # a zombie has no VmRSS line


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants, in KiB."""
    return sum((vm_rss(p) or 0) // 1024 for p in family(pid))


def pin(pid: int, cpus: set[int]) -> None:
    """Restrict every thread of ``pid`` and its children (and later ones, which inherit it)."""
    for p in family(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)


# --- figures -------------------------------------------------------------------------------


def med(xs: Sequence[float]) -> float:
    """The median, NaN for no runs."""
    return statistics.median(xs) if xs else float("nan")


def rotated(items: Sequence[T], run: int) -> list[T]:
    """``items`` starting at ``run % len(items)``: the order of run ``run`` of interleaved runs
    (run 1 of every tool, then run 2, ...), so that noise on the machine spreads over all."""
    k = run % len(items)
    return [*items[k:], *items[:k]]


def ratio_of_medians(a: Sequence[float], b: Sequence[float]) -> float:
    """median(a) / median(b), NaN when either has no runs."""
    return med(a) / med(b) if a and b else float("nan")


PIN_CHOICES: dict[str, tuple[set[int], set[int]] | None] = {
    "none": None,
    "same": ({0}, {0}),  # (client CPUs, server CPUs)
    "split": ({0}, {1}),
}


def add_placement_options(parser: argparse.ArgumentParser, pin_scope: str) -> None:
    """``--pin none|same|split`` (for ``pin_scope``) and ``--cpu N`` (the CPU per message part)."""
    parser.add_argument(
        "--pin",
        choices=sorted(PIN_CHOICES),
        default="none",
        help=f"{pin_scope}: none (default), same (client and servers on CPU 0), "
        "split (client on CPU 0, servers on CPU 1)",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=0,
        metavar="N",
        help="CPU per message part: the CPU that client and servers are pinned to (default 0)",
    )


def target_line(text: str, ok: bool | None) -> str:
    """One Markdown line of a target and its verdict (None: not measured)."""
    return f"- Target {text}: **{'n/a' if ok is None else 'met' if ok else 'NOT met'}**"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json [PATH]``: the raw numbers as JSON too (see :func:`write_json`)."""
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the raw numbers as JSON (to PATH, or to stdout after the table)",
    )


def write_json(raw: Any, dest: str | None) -> None:
    """The raw numbers to stdout (``dest`` "-"), to a file, or nowhere (None)."""
    if dest == "-":
        print(json.dumps(raw, indent=2))
    elif dest:
        Path(dest).write_text(json.dumps(raw, indent=2) + "\n")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" when it is not there)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine(**versions: str) -> dict[str, str]:
    """What the numbers were measured on; ``versions``: more ``key="distribution"`` pairs."""
    from importlib.metadata import PackageNotFoundError, version

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%a %d %b %Y %H:%M:%S UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit or "?",
    }
    for key, dist in {"uvloop": "uvloop", **versions}.items():
        try:
            info[key] = version(dist)
        except PackageNotFoundError:
            info[key] = "not installed"
    info["loop"] = f"uvloop {info['uvloop']} (netkit's default loop)"
    return info


# --- CPU per message: client and server on one CPU -----------------------------------------

MAX_ROUND_TRIPS = 10_000_000  # count bound on one closed loop, far above a few seconds


def tcp_floor_server() -> None:
    """The floor: echo each connection in turn with blocking recv/sendall, no event loop.

    Prints the ``listening`` JSON line, stops on SIGTERM.
    """
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt  # out of a blocking accept or recv

    signal.signal(signal.SIGTERM, on_term)
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]
        print(json.dumps({"event": "listening", "address": f"{HOST}:{port}",
                          "url": f"tcp://{HOST}:{port}"}), flush=True)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            while not stopping:
                conn, _ = listener.accept()
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with contextlib.suppress(ConnectionError):
                        while data := conn.recv(65536):
                            conn.sendall(data)


@dataclass
class CpuRow:
    """One server in the CPU-per-message comparison, and its per-round figures.

    ``open_conn`` returns a connected blocking socket ready for round trips (after any
    handshake); each round trip sends ``request`` and reads ``reply_len`` bytes.
    """

    name: str
    pid: int
    open_conn: Callable[[], socket.socket]
    request: bytes
    reply_len: int
    close_bytes: bytes = b""  # sent before closing (a WebSocket close frame)
    server_us: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def connect_blocking(port: int) -> socket.socket:
    """A blocking TCP_NODELAY connection to 127.0.0.1:port; a hung server times recv out."""
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.settimeout(None)  # blocking: no poll() before each call
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
    return sock


@dataclass
class LoopResult:
    """What one closed loop measured."""

    count: int  # round trips in the measured window
    seconds: float
    server_cpu: float  # seconds of user+sys of the server (and its children)
    client_cpu: float  # seconds of this process

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.count * 1e6

    @property
    def client_us(self) -> float:
        return self.client_cpu / self.count * 1e6


def closed_loop(
    sock: socket.socket,
    request: bytes,
    reply_len: int,
    seconds: float,
    server_pid: int,
    sample: Callable[[], None] | None = None,
) -> LoopResult:
    """Round trips on a blocking socket: send ``request``, read ``reply_len`` bytes, repeat.

    A warm-up of WARMUP_S, then ``seconds`` measured. The clock, /proc (and ``sample``) are read
    every 256 round trips, so the loop itself stays two syscalls long.
    """
    buf = bytearray(max(reply_len, 1))
    view = memoryview(buf)
    sendall, recv_into = sock.sendall, sock.recv_into

    def one_round_trip() -> None:
        sendall(request)
        got = recv_into(buf, reply_len)
        while got < reply_len:  # rare: the reply came back in pieces
            if (n := recv_into(view[got:], reply_len - got)) == 0:
                raise ConnectionError(f"{sock.getpeername()} closed the connection")
            got += n

    warm_until = time.perf_counter() + WARMUP_S
    while time.perf_counter() < warm_until:
        for _ in range(64):
            one_round_trip()
    count = 0
    cpu0, own0 = cpu_seconds(server_pid), time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while count < MAX_ROUND_TRIPS:
        for _ in range(256):
            one_round_trip()
        count += 256
        if sample is not None:
            sample()
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    server, own = cpu_seconds(server_pid) - cpu0, time.process_time() - own0
    return LoopResult(count, elapsed, server, own)


def cpu_round(row: CpuRow, seconds: float) -> None:
    """One round of ``row`` on a new connection; appends its per-message figures."""
    with row.open_conn() as sock:
        res = closed_loop(sock, row.request, row.reply_len, seconds, row.pid)
        if row.close_bytes:
            with contextlib.suppress(OSError):
                sock.sendall(row.close_bytes)
                while sock.recv(4096):
                    pass
    row.server_us.append(res.server_us)
    row.client_us.append(res.client_us)
    row.rates.append(res.rate)


def cpu_per_message(rows: list[CpuRow], rounds: int, seconds: float, cpu: int) -> None:
    """Pin this process (the client) and every server to ``cpu``; ``rounds`` interleaved rounds.

    Round 1 of every server, then round 2, ..., the order rotated each time, so that noise on
    the machine spreads over all servers. The affinity of this process is restored after.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        for row in rows:
            pin(row.pid, {cpu})
        for r in range(rounds):
            for row in rotated(rows, r):
                cpu_round(row, seconds)
                log(
                    f"  cpu round {r + 1}/{rounds} {row.name:40} server {row.server_us[-1]:6.1f} "
                    f"µs  client {row.client_us[-1]:6.1f} µs  {row.rates[-1]:9.0f}/s"
                )
    finally:
        os.sched_setaffinity(0, before)


def cpu_table(
    rows: list[CpuRow], reference: str, goal: tuple[str, float] | None, cpu: int
) -> tuple[list[str], dict[str, Any]]:
    """The Markdown lines of the CPU-per-message comparison, and its raw figures.

    Ratios are of median server CPU, each row over the ``reference`` row; ``goal`` is
    ``(row name, at most this ratio)``.
    """
    ref = next((r for r in rows if r.name == reference), None)
    lines = [
        f"CPU per message: client (a blocking socket in the script) and server pinned to CPU "
        f"{cpu}; server CPU = user+sys from /proc/PID/stat over the measured window, per round "
        "trip; medians of rounds interleaved with the order rotated.",
        "",
        "| Server | Rounds | Server CPU / msg (median, min–max) | Client CPU / msg | Rate | "
        f"Server CPU vs {reference} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    raw: dict[str, Any] = {"cpu": cpu, "rows": {}, "ratios": {}}
    for row in rows:
        ratio = ratio_of_medians(row.server_us, ref.server_us) if ref else float("nan")
        raw["rows"][row.name] = {
            "server_cpu_us": row.server_us,
            "client_cpu_us": row.client_us,
            "rates_per_s": row.rates,
        }
        raw["ratios"][row.name] = ratio
        spread = f"{min(row.server_us):.1f}–{max(row.server_us):.1f}" if row.server_us else "–"
        lines.append(
            f"| {row.name} | {len(row.server_us)} | {med(row.server_us):.1f} µs ({spread}) | "
            f"{med(row.client_us):.1f} µs | {med(row.rates):,.0f} /s | "
            + ("reference |" if row is ref else f"{ratio:.2f}x |")
        )
    if goal is not None:
        name, most = goal
        ratio = raw["ratios"].get(name, float("nan"))
        ok = ratio <= most if ratio == ratio else None
        text = f"{name} server CPU per message <= {most:g}x {reference}: {ratio:.2f}x"
        lines += ["", target_line(text, ok)]
        raw["target"] = {"text": f"{name} <= {most:g}x {reference}", "ratio": ratio, "met": ok}
    return lines, raw
