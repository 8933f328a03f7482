"""End-to-end tests of ``netkit bench --stages`` over real sockets: the arrival rate a server
sees per stage (within 5% of the schedule), ramping connections reaching each stage's count,
per-stage thresholds crossed and held, ``--json`` progress with the current stage, ``bench
merge`` of staged results, and conflicting options refused (exit 2)."""

from __future__ import annotations

import bisect
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netkit.core.bench.stages import parse_stages
from netkit.status import ExitStatus
from tests.commands.conftest import assert_one_line_error, json_lines, run_netkit

pytestmark = pytest.mark.timeout(90)


def summary(stdout: str) -> dict[str, Any]:
    (record,) = [e for e in json_lines(stdout) if e["event"] == "summary"]
    return record


class Recorder:
    """What a test echo server saw: bytes received with their arrival time, and each
    connection's opening and closing time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[float, int]] = []
        self.spans: list[list[float]] = []  # [opened, closed] (closed: inf while open)

    def open_at(self, t: float) -> float:
        """Connections open at wall-clock time ``t``."""
        with self.lock:
            return sum(1 for opened, closed in self.spans if opened <= t < closed)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            span = [time.time(), float("inf")]
            with rec.lock:
                rec.spans.append(span)
            sock: socket.socket = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    now = time.time()
                    with rec.lock:
                        rec.received.append((now, len(data)))
                    sock.sendall(data)
            span[1] = time.time()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


def test_arrival_rate_per_stage_within_5_percent(echo_server: tuple[str, Recorder]) -> None:
    address, rec = echo_server
    text = "1s:400/s, 1s:400/s, 1s:800/s, 1s:0/s"  # 200, 400, 600 and 400 requests due
    stages = parse_stages(text)
    result = run_netkit(
        "bench", address, "--stages", text, "-c", "4", "--workers", "2", "--json", timeout=60
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stderr
    s = summary(result.stdout)
    assert s["errors"]["total"] == 0
    start = s["started_at"]
    times = [t for t, _ in rec.received]
    sizes = [n for _, n in rec.received]
    for i, stage in enumerate(s["stages"]):
        begin, end = stages.bounds(i)
        lo = bisect.bisect_left(times, start + begin)
        hi = bisect.bisect_left(times, start + end)
        arrived = sum(sizes[lo:hi]) / 64  # 64-byte requests, as the server saw them
        due = stages.due_until(end) - stages.due_until(begin)
        assert arrived == pytest.approx(due, rel=0.05), (i + 1, arrived, due)
        # The run's own per-stage figures: the requests due, answered, at that rate.
        assert stage["intended"] == round(due)
        assert stage["requests"] == pytest.approx(due, rel=0.05)
        assert stage["rps"] == pytest.approx(due / stage["duration_s"], rel=0.05)
        assert stage["latency_ms"] is not None
    assert s["requests"] == sum(st["requests"] for st in s["stages"])
    progress = [e for e in json_lines(result.stdout) if e["event"] == "progress"]
    assert progress and all(e["stages"] == 4 and "target_rps" in e for e in progress)


def test_ramping_connections_reach_each_stage_count(echo_server: tuple[str, Recorder]) -> None:
    address, rec = echo_server
    text = "0.5s:2, 0.8s:2, 0.3s:5, 0.8s:5, 0.2s:1, 0.8s:1"
    stages = parse_stages(text)
    result = run_netkit("bench", address, "--stages", text, "--workers", "2", "--json")
    assert result.returncode == ExitStatus.SUCCESS, result.stderr
    s = summary(result.stdout)
    assert s["connections"] == 5
    # Retired connections close without an error, and each hold stage ran at its count.
    assert s["errors"]["total"] == 0
    for index, count in ((1, 2), (3, 5), (5, 1)):
        begin, end = stages.bounds(index)
        for frac in (0.5, 0.7, 0.9):  # some slack for a busy machine to open and close
            at = s["started_at"] + begin + frac * (end - begin)
            assert rec.open_at(at) == count, (index + 1, frac)
        assert s["stages"][index]["requests"] > 0
    progress = [e for e in json_lines(result.stdout) if e["event"] == "progress"]
    assert progress and all("target_connections" in e and "stage" in e for e in progress)


def test_stage_threshold_crossed_then_held(tmp_path: Path) -> None:
    base = ("bench", "--stages", "0.5s:200/s, 0.5s:200/s", "-c", "2", "--workers", "1")
    crossed = run_netkit(*base, "--json", "--fail-if", "p99[stage=2]>1us")
    assert crossed.returncode == ExitStatus.CHECK_FAILED, crossed.stderr
    assert "p99 in stage 2" in crossed.stderr
    first = summary(crossed.stdout)
    assert [c["crossed"] for c in first["thresholds"]] == [True]
    held = run_netkit(
        *base, "--json", "--fail-if", "p99[stage=2]>10s", "--fail-if", "errors{stage:*}>0"
    )
    assert held.returncode == ExitStatus.SUCCESS, held.stderr
    second = summary(held.stdout)
    # bench merge adds the stages of both runs, exactly, and judges them again.
    (tmp_path / "a.json").write_text(crossed.stdout)
    (tmp_path / "b.json").write_text(held.stdout)
    merged = run_netkit(
        "bench", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json",
        "--fail-if", "requests[stage=1]<1",
    )  # fmt: skip
    assert merged.returncode == ExitStatus.SUCCESS, merged.stderr
    m = summary(merged.stdout)
    for i in range(2):
        assert m["stages"][i]["requests"] == (
            first["stages"][i]["requests"] + second["stages"][i]["requests"]
        )
        assert m["stages"][i]["histogram"]["encoded"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--stages", "1s:10/s, 1s:5"), "mixes rates"),
        (("--stages", "1s:10/s", "--rate", "100"), "--rate or --stages"),
        (("--stages", "1s:10/s", "--duration", "5s"), "--duration or --stages"),
        (("--stages", "1s:5", "-c", "16"), "up to 5"),
        (("--stages", "1s:10/s", "--fail-if", "p99[stage=3]>1ms"), "there are 1 stage"),
        (("--fail-if", "p99[stage=1]>1ms"), "needs --stages"),
    ],
)
def test_conflicting_stage_options_are_usage_errors(args: tuple[str, ...], words: str) -> None:
    result = run_netkit("bench", "127.0.0.1:9", *args)
    assert result.returncode == ExitStatus.USAGE, result.stderr
    assert_one_line_error(result.stderr)
    assert words in result.stderr
