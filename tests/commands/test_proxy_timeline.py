"""``netkit proxy --timeline`` and the fault flags' ``for=`` end to end: the CLI as a
subprocess, TCP and UDP on loopback, its JSON events."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.commands.conftest import assert_one_line_error, run_netkit


def round_trip(address: str) -> float:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        started = time.perf_counter()
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        return time.perf_counter() - started


def test_a_tcp_timeline_changes_the_faults_on_time_with_json_events(netkit_server):
    echo = netkit_server("tcp-echo", "serve", "127.0.0.1:0")
    proxy = netkit_server(
        "proxy", "127.0.0.1:0", echo.address,
        "--timeline", "0s latency=150ms,down; 400ms clear", "--latency", "20ms,up,for=10s",
    )  # fmt: skip
    listening = proxy.listening
    assert listening["timeline"]["steps"][0]["faults"][0]["latency_ms"] == 150
    assert listening["faults"][0]["for_s"] == 10
    first = proxy.wait_for("timeline_step")
    assert (first["index"], first["at_s"], first["cycle"]) == (0, 0, 0)
    assert first["faults"][0]["name"] == "timeline_latency_downstream"
    assert round_trip(proxy.address) >= 0.170  # 150 ms down, 20 ms up
    second = proxy.wait_for("timeline_step")
    assert second["index"] == 1 and second["faults"] == []
    assert 0.4 <= second["elapsed_s"] < 0.45
    assert proxy.wait_for("timeline_end")["cycles"] == 1
    assert 0.020 <= round_trip(proxy.address) < 0.120  # the flag's latency stays
    assert proxy.stop() == 0
    removed = [e["name"] for e in proxy.events if e["event"] == "fault_removed"]
    assert removed == ["timeline_latency_downstream"]


def test_a_udp_timeline_repeats_and_for_removes_a_flag_s_fault(netkit_server):
    echo = netkit_server("udp-echo", "serve", "127.0.0.1:0")
    proxy = netkit_server(
        "proxy", "udp://127.0.0.1:0", f"udp://{echo.address}", "--loss", "100%,for=200ms",
        "--timeline", "0s duplicate=1; 100ms clear", "--timeline-repeat", "2",
    )  # fmt: skip
    assert proxy.wait_for("timeline_end")["cycles"] == 3
    steps = [e for e in proxy.events if e["event"] == "timeline_step"]
    assert [(e["index"], e["cycle"]) for e in steps] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
        (0, 2),
        (1, 2),
    ]
    assert len([e for e in proxy.events if e["event"] == "timeline_repeat"]) == 2
    removed = [e["name"] for e in proxy.events if e["event"] == "fault_removed"]
    assert removed.count("loss") == 1 and removed.count("timeline_duplicate") == 3
    assert proxy.stop() == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ["--timeline", "0s latency=50ms; 10s resett"],
            "--timeline: timeline step 2 ('10s resett'): 'resett' is no fault",
        ),
        (
            ["--timeline", "0s loss=5%"],
            "timeline step 1 (at 0s): --loss applies to UDP relays only",
        ),
        (["--timeline-repeat", "2"], "--timeline-repeat repeats a --timeline"),
        (
            ["--timeline", "0s clear; 1s clear", "--timeline-repeat", "often"],
            "--timeline-repeat 'often'",
        ),
        (["--latency", "50ms,for=soon"], "--latency '50ms,for=soon': for="),
    ],
)
def test_a_bad_timeline_is_a_one_line_usage_error(flags: list[str], says: str) -> None:
    result = run_netkit("proxy", "127.0.0.1:0", "127.0.0.1:9", *flags)
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert says in result.stderr, result.stderr


def test_api_and_timeline_run_together_and_the_api_starts_another(netkit_server):
    echo = netkit_server("tcp-echo", "serve", "127.0.0.1:0")
    proxy = netkit_server(
        "proxy", "127.0.0.1:0", echo.address, "--api", "127.0.0.1:0",
        "--timeline", "0s latency=5ms; 300ms clear",
    )  # fmt: skip
    api = f"http://{proxy.listening['api']}"
    assert proxy.wait_for("timeline_step")["index"] == 0
    with urllib.request.urlopen(f"{api}/proxies/proxy/toxics", timeout=5) as answer:
        assert [t["name"] for t in json.load(answer)] == ["timeline_latency"]
    proxy.wait_for("timeline_end")
    body = json.dumps({"timeline": "0s loss=5%"}).encode()
    request = urllib.request.Request(f"{api}/proxies/proxy/timeline", body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400  # a datagram fault on a TCP proxy, said at once
    body = json.dumps({"timeline": "0s + latency=1ms,up; 100ms clear"}).encode()
    request = urllib.request.Request(f"{api}/proxies/proxy/timeline", body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.load(answer)["running"] is True
    assert proxy.wait_for("timeline_end")["cycles"] == 1
    assert proxy.stop() == 0


def test_a_timeline_without_listen_and_upstream_is_refused() -> None:
    result = run_netkit("proxy", "--api", "127.0.0.1:0", "--timeline", "0s latency=5ms")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--timeline and --seed apply to LISTEN → UPSTREAM" in result.stderr
