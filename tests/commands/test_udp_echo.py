"""udp-echo end to end: the CLI as a subprocess, real UDP on loopback."""

from __future__ import annotations

import socket

import pytest

from tests.commands.conftest import assert_one_line_error, json_lines, run_netkit


def test_echo_without_loss(netkit_server):
    server = netkit_server("udp-echo", "serve", "127.0.0.1:0")
    # Bare HOST:PORT as tcp-echo's; the transport and a URL for bench beside it (#13 item 23).
    assert server.address.startswith("127.0.0.1:") and not server.address.endswith(":0")
    assert server.listening["transport"] == "udp"
    assert server.listening["url"] == f"udp://{server.address}"
    result = run_netkit("udp-echo", "client", server.address, "-c", "20", "-i", "1ms", "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    replies = [e for e in events if e["event"] == "reply"]
    assert sorted(e["seq"] for e in replies) == list(range(20))
    summary = events[-1]
    assert summary["event"] == "summary"
    assert (summary["sent"], summary["received"], summary["lost"]) == (20, 20, 0)
    assert summary["rtt"]["count"] == 20 and summary["jitter_ms"] >= 0
    assert server.stop() == 0
    done = server.event("summary")
    assert done["datagrams_in"] == 20 and done["datagrams_out"] == 20 and done["peers"] == 1
    assert done["refused_source"] == 0 and done["peer_table_full"] is False


def test_lossy_server_is_measured_and_fails_the_check(netkit_server):
    server = netkit_server("udp-echo", "serve", ":0", "--drop-every", "3")
    lossy = run_netkit(
        "udp-echo", "client", server.address, "-c", "9", "-i", "1ms", "-t", "300ms", "--json"
    )
    assert lossy.returncode == 1
    summary = next(e for e in json_lines(lossy.stdout) if e["event"] == "summary")
    assert (summary["received"], summary["lost"]) == (6, 3)
    assert summary["loss_percent"] == pytest.approx(33.333, abs=0.01)
    assert "exceeds --max-loss" in lossy.stderr
    tolerated = run_netkit(
        "udp-echo",
        "client",
        server.address,
        "-c",
        "9",
        "-i",
        "1ms",
        "-t",
        "300ms",
        "--max-loss",
        "40",
    )
    assert tolerated.returncode == 0, tolerated.stderr


def test_ipv6(netkit_server):
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    server = netkit_server("udp-echo", "serve", "[::1]:0")
    result = run_netkit("udp-echo", "client", server.address, "-c", "3", "-s", "1400")
    assert result.returncode == 0, result.stderr


def test_nothing_listening_is_exit_3():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_netkit("udp-echo", "client", f"127.0.0.1:{port}", "-c", "3", "-t", "300ms")
    assert result.returncode == 3
    assert_one_line_error(result.stderr)
    assert "nothing listens" in result.stderr


def test_too_small_size_is_exit_2():
    result = run_netkit("udp-echo", "client", "127.0.0.1:9", "--size", "8")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)


def test_stream_endpoint_is_rejected():
    result = run_netkit("udp-echo", "client", "unix:/tmp/x.sock")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
