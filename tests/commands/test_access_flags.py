"""--allow/--deny/--allow-file/--deny-file on the server commands, as a user runs them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.commands.conftest import assert_one_line_error, run_netkit


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _turned_away(address: str, source: str) -> None:
    host, port = _host_port(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        try:
            sock.connect((host, port))
            sock.sendall(b"hello")
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass  # reset at accept: what a denied client sees


def _echoed(address: str, source: str) -> bytes:
    with socket.create_connection(_host_port(address), timeout=10, source_address=(source, 0)) as s:
        s.sendall(b"ping")
        return s.recv(100)


@pytest.mark.parametrize(
    "command",
    [
        ["tcp-echo", "serve", "127.0.0.1:0"],
        ["ws-server", "127.0.0.1:0"],
        ["proxy", "127.0.0.1:0", "127.0.0.1:9"],
        ["lb", "127.0.0.1:0", "127.0.0.1:9"],
        ["udp-echo", "serve", "127.0.0.1:0"],
        ["proxy", "udp://127.0.0.1:0", "udp://127.0.0.1:9"],
    ],
)
def test_a_bad_rule_is_a_one_line_usage_error(command: list[str]) -> None:
    result = run_netkit(*command, "--deny", "10.1.2.3/8")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--deny '10.1.2.3/8': host bits are set; the network is 10.0.0.0/8" in result.stderr


def test_rules_on_a_unix_socket_are_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    result = run_netkit("tcp-echo", "serve", f"unix:{path}", "--allow", "127.0.0.1")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--allow/--deny" in result.stderr and "Unix socket" in result.stderr
    assert not path.exists()


def test_tcp_echo_denies_reports_and_counts(netkit_server) -> None:
    server = netkit_server("tcp-echo", "serve", "127.0.0.1:0", "--deny", "127.0.0.2")
    assert (server.listening["allow"], server.listening["deny"]) == ([], ["127.0.0.2/32"])
    _turned_away(server.address, "127.0.0.2")
    denied = server.wait_for("denied")
    assert denied["peer"].startswith("127.0.0.2:") and denied["rule"] == "deny 127.0.0.2/32"
    assert _echoed(server.address, "127.0.0.1") == b"ping"
    assert server.stop() == 0
    summary = server.event("summary")
    assert (summary["denied"], summary["connections"]) == (1, 1)


def test_rules_files_and_flags_add_up(netkit_server, tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("# loopback only\n127.0.0.0/8  # v4\n::1\n")
    deny = tmp_path / "deny.txt"
    deny.write_text("127.0.0.2\n")
    server = netkit_server(
        "proxy", "127.0.0.1:0", "127.0.0.1:9",
        "--allow-file", str(allow), "--deny-file", str(deny), "--deny", "127.0.0.3",
    )  # fmt: skip
    assert server.listening["allow"] == ["127.0.0.0/8", "::1/128"]
    assert server.listening["deny"] == ["127.0.0.3/32", "127.0.0.2/32"]
    _turned_away(server.address, "127.0.0.2")
    assert server.wait_for("denied")["client"].startswith("127.0.0.2:")
    assert server.stop() == 0
    assert server.event("summary")["denied"] == 1


def test_a_missing_rules_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_netkit("lb", "127.0.0.1:0", "127.0.0.1:9", "--deny-file", str(tmp_path / "no"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--deny-file" in result.stderr


def test_udp_echo_does_not_answer_a_denied_source(netkit_server) -> None:
    server = netkit_server("udp-echo", "serve", "127.0.0.1:0", "--allow", "127.0.0.1")
    host, port = _host_port(server.address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as denied:
        denied.bind(("127.0.0.2", 0))
        denied.sendto(b"let me in", (host, port))
        event = server.wait_for("denied")
        assert event["rule"] == "no allow rule matches"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as allowed:
        allowed.settimeout(10)
        allowed.sendto(b"hello", (host, port))
        assert allowed.recv(100) == b"hello"
    assert server.stop() == 0
    summary = server.event("summary")
    assert (summary["denied"], summary["datagrams_out"]) == (1, 1)
