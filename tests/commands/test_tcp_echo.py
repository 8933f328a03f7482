"""tcp-echo end to end: the CLI as a subprocess, real sockets on loopback and in tmp dirs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.commands.conftest import NETKIT, assert_one_line_error, json_lines, run_netkit


def test_raw_echo_verifies_messages(netkit_server):
    server = netkit_server("tcp-echo", "serve", "127.0.0.1:0")
    assert server.listening["transport"] == "tcp"
    assert server.address.startswith("127.0.0.1:") and not server.address.endswith(":0")
    result = run_netkit("tcp-echo", "client", server.address, "hello", "wörld", "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    echoes = [e for e in events if e["event"] == "echo"]
    assert [e["bytes"] for e in echoes] == [5, 6]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["verified"] == 2
    assert summary["rtt"]["count"] == 2 and summary["rtt"]["max_ms"] >= summary["rtt"]["min_ms"]
    assert server.stop() == 0
    done = server.event("summary")
    assert done["connections"] == 1 and done["bytes_in"] == 11 and done["bytes_out"] == 11


def test_generated_large_messages_and_stdin(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0")
    big = run_netkit("tcp-echo", "client", server.address, "-c", "3", "-s", "1MiB", "-q")
    assert big.returncode == 0, big.stderr
    assert "3/3 echoes verified" in big.stdout
    piped = run_netkit("tcp-echo", "client", server.address, "-", "--json", input=b"one\ntwo\n")
    assert piped.returncode == 0, piped.stderr
    assert [e["bytes"] for e in json_lines(piped.stdout) if e["event"] == "echo"] == [4, 4]


def test_ipv6_loopback(netkit_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    server = netkit_server("tcp-echo", "serve", "[::1]:0")
    assert server.address.startswith("[::1]:")
    result = run_netkit("tcp-echo", "client", server.address, "-c", "2")
    assert result.returncode == 0, result.stderr


def test_tls_echo_verifies_server(netkit_server, tls_files):
    server = netkit_server(
        "tcp-echo", "serve", ":0", "--cert", tls_files["chain"], "--key", tls_files["key"]
    )
    assert server.listening["transport"] == "tls"
    ok = run_netkit("tcp-echo", "client", server.address, "--cacert", tls_files["ca"], "-c", "3")
    assert ok.returncode == 0, ok.stderr
    untrusted = run_netkit("tcp-echo", "client", server.address, "--tls", "-c", "1")
    assert untrusted.returncode == 5
    assert_one_line_error(untrusted.stderr)
    assert "not trusted" in untrusted.stderr
    # net/ names the settings; the command line shows their flags.
    assert "(pass --cacert FILE to trust its CA, or --insecure to skip verification)" in (
        untrusted.stderr
    )
    assert ok.stderr == ""
    insecure = run_netkit("tcp-echo", "client", server.address, "--insecure", "-c", "1")
    assert insecure.returncode == 0, insecure.stderr
    # Skipping verification is said on stderr, once, in every output mode (#13 item 23).
    for result in (
        insecure,
        run_netkit("tcp-echo", "client", server.address, "-k", "-c", "1", "--json"),
    ):
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("netkit: warning: --insecure: certificates are not verified")


def test_tls_name_mismatch_suggests_sni(netkit_server, tls_files):
    server = netkit_server(
        "tcp-echo", "serve", ":0", "--cert", tls_files["chain"], "--key", tls_files["key"]
    )
    port = server.address.rsplit(":", 1)[1]
    result = run_netkit(
        "tcp-echo", "client", f"127.0.0.1:{port}", "--cacert", tls_files["ca"], "--sni", "x.test"
    )
    assert result.returncode == 5
    assert_one_line_error(result.stderr)
    assert "is for another name" in result.stderr and "--sni" in result.stderr
    assert "--insecure" not in result.stderr


def test_certificate_without_key_names_the_file(tls_files):
    result = run_netkit("tcp-echo", "serve", ":0", "--cert", tls_files["chain"])
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "holds no private key: pass --key FILE" in result.stderr
    assert "PEM lib" not in result.stderr


def test_tls_self_signed_prints_ca_file(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0", "--tls-self-signed")
    ca_file = server.listening["ca_file"]
    assert Path(ca_file).is_file()
    result = run_netkit("tcp-echo", "client", server.address, "--cacert", ca_file, "-c", "2")
    assert result.returncode == 0, result.stderr
    assert server.stop() == 0
    assert not Path(ca_file).exists(), "the throwaway CA is removed at exit"


def test_missing_cert_file_is_a_usage_error(tmp_path):
    result = run_netkit("tcp-echo", "serve", ":0", "--cert", str(tmp_path / "nope.pem"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "nope.pem" in result.stderr


def test_unix_socket_echo_mode_and_cleanup(netkit_server, tmp_path):
    path = tmp_path / "echo.sock"
    server = netkit_server("tcp-echo", "serve", f"unix:{path}", "--socket-mode", "600")
    assert server.address == f"unix:{path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    result = run_netkit("tcp-echo", "client", f"unix:{path}", "-c", "5", "-s", "4KiB")
    assert result.returncode == 0, result.stderr
    assert server.stop() == 0
    assert not path.exists(), "the socket file is removed on exit"


def test_unix_default_mode_and_stale_socket_replaced(netkit_server, tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves the file behind, as a crashed server would
    netkit_server("tcp-echo", "serve", f"unix:{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert run_netkit("tcp-echo", "client", f"unix:{path}", "x").returncode == 0


def test_exiting_unix_server_spares_the_socket_of_the_server_that_replaced_it(
    netkit_server, tmp_path
):
    path = tmp_path / "shared.sock"
    a = netkit_server("tcp-echo", "serve", f"unix:{path}")
    path.unlink()  # removed by hand while A runs
    b = netkit_server("tcp-echo", "serve", f"unix:{path}")
    assert a.stop() == 0
    assert stat.S_ISSOCK(path.lstat().st_mode), "A's exit removed B's socket"
    result = run_netkit("tcp-echo", "client", f"unix:{path}", "still-here")
    assert result.returncode == 0, result.stderr
    assert b.stop() == 0
    assert not path.exists()


def test_unix_server_refuses_a_path_where_a_live_server_listens(netkit_server, tmp_path):
    path = tmp_path / "live.sock"
    live = netkit_server("tcp-echo", "serve", f"unix:{path}")
    result = run_netkit("tcp-echo", "serve", f"unix:{path}")
    assert result.returncode == 6
    assert_one_line_error(result.stderr)
    assert "another server is listening" in result.stderr
    assert run_netkit("tcp-echo", "client", f"unix:{path}", "x").returncode == 0
    assert live.stop() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux")
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_abstract_unix_socket_echo(netkit_server, loop):
    # uvloop's create_unix_connection refused "\0name" with EINVAL (#13 item 21).
    name = f"unix:@netkit-echo-{uuid.uuid4().hex}"
    server = netkit_server("--loop", loop, "tcp-echo", "serve", name)
    assert server.address == name
    result = run_netkit("--loop", loop, "tcp-echo", "client", name, "abstract", "--json")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout)[-1]["verified"] == 1
    assert server.stop() == 0


def test_unix_path_that_is_a_file_is_never_clobbered(tmp_path):
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    result = run_netkit("tcp-echo", "serve", f"unix:{path}")
    assert result.returncode == 6
    assert_one_line_error(result.stderr)
    assert "not a socket" in result.stderr
    assert path.read_text() == "keep me"


def test_framed_mode(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0", "--framed", "--max-frame", "64KiB")
    ok = run_netkit("tcp-echo", "client", server.address, "--framed", "-c", "5", "-s", "60000")
    assert ok.returncode == 0, ok.stderr
    # A frame over the limit closes that connection; the server goes on serving others.
    too_big = run_netkit("tcp-echo", "client", server.address, "--framed", "-s", "70000", "-c", "1")
    assert too_big.returncode == 3
    assert_one_line_error(too_big.stderr)
    again = run_netkit("tcp-echo", "client", server.address, "--framed", "-c", "2")
    assert again.returncode == 0, again.stderr
    assert server.stop() == 0
    assert server.event("summary")["errors"] == 1


def test_workers_share_the_port(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0", "--workers", "2")
    assert server.listening["workers"] == 2
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    if children.exists():
        assert len(children.read_text().split()) == 2
    for _ in range(8):
        result = run_netkit("tcp-echo", "client", server.address, "-c", "2", "-q")
        assert result.returncode == 0, result.stderr
    assert server.stop() == 0
    summary = server.event("summary")
    assert summary["connections"] == 8
    assert summary["bytes_in"] == 8 * 2 * 64


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=10)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_sigterm_drain_finishes_in_flight_echo(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0", "--drain-timeout", "20s")
    with _connect(server.address) as sock:
        sock.sendall(b"hello ")
        assert _recv_exactly(sock, 6) == b"hello "
        server.wait_for("connected")
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_for("draining")["active"] == 1
        # The listener is closed: a new client is refused ...
        with pytest.raises(ConnectionRefusedError):
            _connect(server.address)
        # ... while the connection in flight is still served.
        sock.sendall(b"world")
        assert _recv_exactly(sock, 5) == b"world"
    assert server.wait_exit() == 0
    summary = server.event("summary")
    assert summary["bytes_out"] == 11 and summary["aborted_at_drain"] == 0


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
def test_sighup_and_sigusr1_drain_like_sigterm(netkit_server, sig, workers):
    # Every server shares the lifecycle: HAProxy's soft-stop signals drain as SIGTERM does.
    server = netkit_server(
        "tcp-echo", "serve", ":0", "--drain-timeout", "20s", "--workers", workers
    )
    with _connect(server.address) as sock:
        sock.sendall(b"hello ")
        assert _recv_exactly(sock, 6) == b"hello "
        server.wait_for("connected")
        server.proc.send_signal(sig)
        if workers == "1":
            assert server.wait_for("draining")["active"] == 1
        sock.sendall(b"world")
        assert _recv_exactly(sock, 5) == b"world"
    assert server.wait_exit() == 0
    summary = server.event("summary")
    assert summary["bytes_out"] == 11 and summary["aborted_at_drain"] == 0


def test_sigterm_drain_framed_closes_after_the_frame(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0", "--framed")
    with _connect(server.address) as sock:
        sock.sendall(struct.pack("!I", 10) + b"01234")  # half a frame in flight
        server.wait_for("connected")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("draining")
        sock.sendall(b"56789")
        assert _recv_exactly(sock, 14) == struct.pack("!I", 10) + b"0123456789"
        assert sock.recv(1) == b"", "the server closes between frames while draining"
    assert server.wait_exit() == 0


def test_sigint_is_quiet_and_130(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0")
    assert server.stop(signal.SIGINT) == 130
    assert server.proc.stderr is not None
    assert "Traceback" not in server.proc.stderr.read().decode()


def test_max_connections_rejects_extra_clients(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0", "--max-connections", "1")
    with _connect(server.address) as first:
        first.sendall(b"x")
        assert _recv_exactly(first, 1) == b"x"
        second = run_netkit("tcp-echo", "client", server.address, "hi")
        assert second.returncode == 3
        assert_one_line_error(second.stderr)
    assert server.stop() == 0
    assert server.event("summary")["rejected"] == 1


def test_bad_endpoint_is_exit_2():
    result = run_netkit("tcp-echo", "client", "localhost:http")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "'http' is not a number" in result.stderr


def test_unknown_option_is_exit_2():
    result = run_netkit("tcp-echo", "serve", "--no-such-flag")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)


def test_port_in_use_is_exit_6():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_netkit("tcp-echo", "serve", f"127.0.0.1:{port}")
    assert result.returncode == 6
    assert_one_line_error(result.stderr)
    assert "already in use" in result.stderr and str(port) in result.stderr


def test_connection_refused_is_exit_3():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        result = run_netkit("tcp-echo", "client", f"127.0.0.1:{port}", "x")
    assert result.returncode == 3
    assert_one_line_error(result.stderr)
    assert "refused" in result.stderr


@pytest.fixture
def corrupting_server() -> Iterator[str]:
    """An 'echo' server that flips one byte: the client must notice."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data[:-1] + bytes([data[-1] ^ 1]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_mismatch_is_exit_1(corrupting_server):
    result = run_netkit("tcp-echo", "client", corrupting_server, "abcdef")
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "differs at byte 5" in result.stderr


def test_silent_server_is_timeout_exit_4():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = run_netkit("tcp-echo", "client", address, "x", "--timeout", "300ms")
    assert result.returncode == 4
    assert_one_line_error(result.stderr)


def test_retry_waits_for_a_starting_server(netkit_server, tmp_path):
    path = tmp_path / "later.sock"
    client = subprocess.Popen(
        [
            *NETKIT,
            "tcp-echo",
            "client",
            f"unix:{path}",
            "x",
            "--retry",
            "20s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        netkit_server("tcp-echo", "serve", f"unix:{path}")
        assert client.wait(timeout=30) == 0
    finally:
        if client.poll() is None:
            client.kill()
        client.communicate()


def test_help_lists_only_working_commands():
    import click
    import typer

    from netkit.cli import app

    result = run_netkit("--help")
    assert result.returncode == 0 and "Commands" in result.stdout
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    listed = set(root.list_commands(click.Context(root)))
    assert listed == {
        "tcp-echo", "udp-echo", "multicast", "ws-server", "ws-client", "proxy", "lb", "bench",
    }  # fmt: skip
    for name in listed:
        assert name in result.stdout


def test_version():
    result = run_netkit("--version")
    assert result.returncode == 0 and result.stdout.startswith("netkit ")


def test_python_dash_m_and_loop_choice(netkit_server):
    server = netkit_server("--loop", "asyncio", "tcp-echo", "serve", ":0")
    assert server.listening["loop"] == "asyncio"
    result = run_netkit("--loop", "asyncio", "tcp-echo", "client", server.address, "-c", "2")
    assert result.returncode == 0, result.stderr


def test_stdout_closed_early_is_not_an_error(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0")
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that already exited
    proc = subprocess.run(
        [
            *NETKIT,
            "tcp-echo",
            "client",
            server.address,
            "-c",
            "3",
        ],
        stdout=write_end,
        stderr=subprocess.PIPE,
        timeout=20,
    )
    os.close(write_end)
    assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "command",
    [["tcp-echo", "serve"], ["ws-server"], ["proxy"], ["lb"]],
    ids=["tcp-echo", "ws-server", "proxy", "lb"],
)
def test_mtls_servers_tell_openssl_a_certificate_is_required(netkit_server, tmp_path, command):
    # openssl s_server answers a client without a certificate with an alert, and s_client
    # says "certificate required"; netkit's TLS servers used to close without a word.
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca = trustme.CA()
    ca_file = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    upstream = netkit_server("tcp-echo", "serve", ":0")
    target = [upstream.address] if command[0] in ("proxy", "lb") else []
    server = netkit_server(
        *command, "127.0.0.1:0", *target, "--tls-self-signed", "--client-ca", str(ca_file)
    )
    result = subprocess.run(
        [openssl, "s_client", "-connect", server.address, "-servername", "localhost", "-ign_eof"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "certificate required" in result.stdout + result.stderr, result.stderr
