"""``netkit bench --scenario stream`` with iperf3's modes from the command line, against
``netkit tcp-echo serve --mode stream`` (and a plain echo server, which is refused for
reverse and bidir): exit codes, the summary's per-direction figures, thresholds, merge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.commands.conftest import ServerProcess, assert_one_line_error, json_lines, run_netkit

SHORT = ("--scenario", "stream", "-d", "0.3s", "-w", "1", "-c", "2", "--json")


def summary(stdout: str) -> dict[str, Any]:
    (record,) = [e for e in json_lines(stdout) if e["event"] == "summary"]
    return record


def test_reverse_and_bidir_report_each_direction(netkit_server: Any, tmp_path: Path) -> None:
    server: ServerProcess = netkit_server("tcp-echo", "serve", "127.0.0.1:0", "--mode", "stream")
    assert server.listening["mode"] == "stream"
    proc = run_netkit("bench", server.address, *SHORT, "-R", "--fail-if", "reverse_mb_s<1")
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["direction"] == "reverse" and s["ok"]
    assert list(s["directions"]) == ["reverse"]
    rev = s["directions"]["reverse"]
    assert rev["sender_bytes"] == rev["receiver_bytes"] == s["bytes_received"] > 0

    runs = []
    for name in ("a", "b"):
        proc = run_netkit("bench", server.address, *SHORT, "--bidir")
        assert proc.returncode == 0, proc.stderr
        s = summary(proc.stdout)
        fwd, rev = s["directions"]["forward"], s["directions"]["reverse"]
        assert fwd["sender_bytes"] == fwd["receiver_bytes"] == s["peer_received"] > 0
        assert rev["sender_bytes"] == rev["receiver_bytes"] == s["peer_sent"] > 0
        (tmp_path / f"{name}.json").write_text(proc.stdout)
        runs.append(s)
    # bench merge adds the servers' counts, direction by direction.
    proc = run_netkit(
        "bench", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    merged = summary(proc.stdout)
    assert merged["direction"] == "bidir"
    assert merged["peer_received"] == sum(r["peer_received"] for r in runs)
    assert merged["directions"]["reverse"]["sender_bytes"] == sum(r["peer_sent"] for r in runs)
    # A gate on a direction the run did not measure fails it: no figure is no pass.
    proc = run_netkit("bench", server.address, *SHORT, "--fail-if", "reverse_mb_s<1")
    assert proc.returncode == 1
    assert "reverse_mb_s = not measured" in proc.stderr + proc.stdout


def test_an_echo_server_is_refused_with_exit_7(netkit_server: Any) -> None:
    echo: ServerProcess = netkit_server("tcp-echo", "serve", "127.0.0.1:0")
    proc = run_netkit("bench", echo.address, *SHORT, "--reverse")
    assert proc.returncode == 7
    assert_one_line_error(proc.stderr)
    assert "echo server" in proc.stderr and "--mode stream" in proc.stderr
    # Forward still writes to it, as before; the receiver's figure is unknown, not made up.
    proc = run_netkit("bench", echo.address, *SHORT)
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["directions"]["forward"]["receiver_bytes"] is None and s["bytes_sent"] > 0


def test_bad_combinations_are_usage_errors() -> None:
    for args in (
        ("bench", "127.0.0.1:9", "--reverse", "--bidir", "--scenario", "stream"),
        ("bench", "127.0.0.1:9", "--reverse"),  # echo scenario
        ("bench", "udp://127.0.0.1:9", "--scenario", "stream", "--bidir"),
        ("tcp-echo", "serve", "127.0.0.1:0", "--framed", "--mode", "stream"),
    ):
        proc = run_netkit(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_one_line_error(proc.stderr)
