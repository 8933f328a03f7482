"""The bridges end to end through the CLI: ``ws-server --to``, ``ws-client --listen`` and
``ws-client --stdio``, with real sockets (TCP, Unix, TLS from trustme) and the test as the
byte-stream peer at either end: every byte both ways (hashes compared), half-close, and the
mapping of ends to close codes and back."""

from __future__ import annotations

import hashlib
import queue
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netkit.cli import main
from tests.commands.conftest import (
    NETKIT,
    ServerProcess,
    assert_one_line_error,
    run_netkit,
    start_netkit,
)

MB = 1 << 20
BIG = 50 * MB
CHUNK = 256 * 1024


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def pattern(seed: int, size: int) -> bytes:
    """``size`` bytes that differ at every offset (a lost or reordered chunk changes the hash)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += struct.pack("!Q", counter) + block[8:]
        counter += 1
    return bytes(out[:size])


class Received:
    """What one end read until EOF: the hash, the size, and how the stream ended."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.end = ""  # "eof" or "reset"
        self.done = threading.Event()

    def read_all(self, sock: socket.socket) -> None:
        try:
            while chunk := sock.recv(CHUNK):
                self.hash.update(chunk)
                self.size += len(chunk)
            self.end = "eof"
        except (ConnectionResetError, ConnectionAbortedError):
            self.end = "reset"
        finally:
            self.done.set()


def send_all_then_fin(sock: socket.socket, data: bytes) -> None:
    """Send ``data``, then shutdown write: a FIN after the last byte."""
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        sock.sendall(view[start : start + CHUNK])
    sock.shutdown(socket.SHUT_WR)


class Upstream:
    """A byte-stream server (TCP or Unix) in a thread, accepting one connection, which
    ``serve`` handles (the listener is ready when the object is made)."""

    def __init__(self, serve: Callable[[socket.socket], None], unix: Path | None = None) -> None:
        if unix is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(unix))
            self.endpoint = f"unix:{unix}"
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.listener.listen(4)
        self.listener.settimeout(20)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self.thread.start()

    def _run(self, serve: Callable[[socket.socket], None]) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(20)
            with conn:
                serve(conn)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the upstream never finished"
        if self.error is not None:
            raise self.error


def exchange(sock: socket.socket, outgoing: bytes, received: Received) -> None:
    """Send ``outgoing`` (then FIN) while reading everything until the peer's end."""
    reader = threading.Thread(target=received.read_all, args=(sock,), daemon=True)
    reader.start()
    send_all_then_fin(sock, outgoing)
    reader.join(timeout=30)
    assert not reader.is_alive(), "the peer never ended its stream"


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def run_stdio(url: str, data: bytes, *extra: str, timeout: float = 60) -> tuple[int, bytes, str]:
    """``netkit ws-client URL --stdio``: ``data`` on stdin; exit code, stdout and stderr."""
    proc = subprocess.run(
        [*NETKIT, "ws-client", url, "--stdio", *extra],
        input=data,
        capture_output=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def closed_event(server: Any) -> dict[str, Any]:
    """The bridge's ``closed`` event (waits for it)."""
    return server.wait_for("closed", timeout=30)


class Job:
    """One upstream connection's handler, run when the bridge connects."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.serve = serve
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(20)
            with conn:
                self.serve(conn)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        assert self.done.wait(30), "the upstream never finished"
        if self.error is not None:
            raise self.error


class Switchboard:
    """A TCP upstream for a whole module: each connection is handed to the next :class:`Job`
    a test queued (the bridges under test are started once, not per test)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.jobs: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed: the module is done
            try:
                job = self.jobs.get(timeout=30)
            except queue.Empty:
                conn.close()
                continue
            threading.Thread(target=job.run, args=(conn,), daemon=True).start()

    def expect(self, serve: Callable[[socket.socket], None]) -> Job:
        job = Job(serve)
        self.jobs.put(job)
        return job


@dataclass
class Chain:
    """``ws-server --to`` the switchboard, and ``ws-client --listen`` to that server."""

    upstream: Switchboard
    server: ServerProcess
    listener: ServerProcess

    def fresh(self) -> Chain:
        """Drop events left from an earlier test (each test waits for its own)."""
        for proc in (self.server, self.listener):
            while not proc._queue.empty():
                proc.read_event(0.01)
        return self


@pytest.fixture(scope="module")
def module_chain() -> Iterator[Chain]:
    upstream = Switchboard()
    started: list[ServerProcess] = []
    try:
        started.append(start_netkit("ws-server", "127.0.0.1:0", "--to", upstream.endpoint))
        url = f"ws://{started[0].address}/"
        started.append(start_netkit("ws-client", url, "--listen", "127.0.0.1:0"))
        yield Chain(upstream, started[0], started[1])
    finally:
        for server in started:
            server.stop()
            for stream in (server.proc.stdout, server.proc.stderr):
                if stream is not None:
                    stream.close()
        upstream.listener.close()


@pytest.fixture
def chain(module_chain: Chain) -> Chain:
    return module_chain.fresh()


# --- every byte, both ways ------------------------------------------------------------------


def test_stdio_to_tcp_50mb_both_ways_over_tls(netkit_server, tls_files):
    # stdin → ws-client --stdio → wss:// → ws-server --to TCP → the upstream, and back.
    up_data, down_data = pattern(1, BIG), pattern(2, BIG)
    got = Received()
    upstream = Upstream(lambda conn: exchange(conn, down_data, got))
    server = netkit_server(
        "ws-server", "wss://127.0.0.1:0/", "--cert", tls_files["chain"], "--key",
        tls_files["key"], "--to", upstream.endpoint, "--max-size", "1MiB",
    )  # fmt: skip
    url = f"wss://localhost:{host_port(server.address)[1]}/"
    code, out, err = run_stdio(url, up_data, "--cacert", tls_files["ca"])
    upstream.join()
    if code:  # DEBUG
        server.stop()
        print(
            "DEBUG",
            err,
            len(out),
            got.size,
            got.end,
            [e for e in server.events if e["event"] in ("closed", "disconnected")],
        )
    assert code == 0, err
    assert got.end == "eof" and got.size == BIG
    assert got.hash.hexdigest() == hashlib.sha256(up_data).hexdigest()
    assert len(out) == BIG and hashlib.sha256(out).digest() == hashlib.sha256(down_data).digest()
    closed = closed_event(server)
    assert (closed["bytes_up"], closed["bytes_down"]) == (BIG, BIG)
    assert "undelivered" not in closed
    assert f"{BIG} bytes sent, {BIG} received" in err
    server.stop()
    summary = server.event("summary")
    assert (summary["bytes_up"], summary["bytes_down"], summary["undelivered_bytes"]) == (
        BIG,
        BIG,
        0,
    )


def test_listener_to_unix_50mb_both_ways_over_tls(netkit_server, tls_files, tmp_path):
    # A TCP client → ws-client --listen → wss:// → ws-server --to unix:... → the upstream.
    up_data, down_data = pattern(3, BIG), pattern(4, BIG)
    at_upstream, at_client = Received(), Received()
    upstream = Upstream(lambda conn: exchange(conn, down_data, at_upstream), tmp_path / "up.sock")
    server = netkit_server(
        "ws-server", "wss://127.0.0.1:0/", "--cert", tls_files["chain"], "--key",
        tls_files["key"], "--to", upstream.endpoint,
    )  # fmt: skip
    url = f"wss://localhost:{host_port(server.address)[1]}/"
    listener = netkit_server(
        "ws-client", url, "--listen", "127.0.0.1:0", "--cacert", tls_files["ca"]
    )
    with socket.create_connection(host_port(listener.address), timeout=20) as client:
        exchange(client, up_data, at_client)
    upstream.join()
    assert at_upstream.end == at_client.end == "eof"
    assert at_upstream.size == at_client.size == BIG
    assert at_upstream.hash.digest() == hashlib.sha256(up_data).digest()
    assert at_client.hash.digest() == hashlib.sha256(down_data).digest()
    for bridge in (server, listener):
        closed = closed_event(bridge)
        assert (closed["bytes_up"], closed["bytes_down"]) == (BIG, BIG), closed
        assert "undelivered" not in closed


def test_stdio_to_a_tls_upstream(netkit_server, tls_files):
    # --upstream-tls: the bridge verifies the upstream's certificate (trustme's CA) and
    # speaks TLS to it; its FIN is close_notify, read as the end of the request.
    up_data, down_data = pattern(6, 4 * MB), pattern(7, 4 * MB)
    got = Received()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_files["chain"], tls_files["key"])

    def speak_then_listen(conn: socket.socket) -> None:
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(down_data)
            got.read_all(tls)

    upstream = Upstream(speak_then_listen)
    server = netkit_server(
        "ws-server", "127.0.0.1:0", "--to", upstream.endpoint, "--upstream-tls",
        "--cacert", tls_files["ca"],
    )  # fmt: skip
    code, out, err = run_stdio(f"ws://{server.address}/", up_data)
    upstream.join()
    assert code == 0, err
    assert out == down_data
    assert got.end == "eof" and got.hash.digest() == hashlib.sha256(up_data).digest()
    closed = closed_event(server)
    assert (closed["bytes_up"], closed["bytes_down"]) == (len(up_data), len(down_data))


# --- half-close -----------------------------------------------------------------------------


def answer_after_eof(conn: socket.socket) -> None:
    """Read the request until EOF, then answer it and close: netcat's `printf ... | nc`."""
    request = Received()
    request.read_all(conn)
    conn.sendall(b"answer to " + hashlib.sha256(str(request.size).encode()).hexdigest().encode())
    conn.shutdown(socket.SHUT_WR)


def test_stdin_eof_is_a_half_close_the_answer_still_arrives(chain):
    upstream, server = chain.upstream.expect(answer_after_eof), chain.server
    code, out, err = run_stdio(f"ws://{server.address}/", b"x" * 1000)
    upstream.join()
    assert code == 0, err
    assert out == b"answer to " + hashlib.sha256(b"1000").hexdigest().encode()
    closed = closed_event(server)
    assert closed["end"] == "client closed with 1000"
    assert closed["ws_close_received"] == closed["ws_close_sent"] == 1000
    assert "undelivered" not in closed


def test_half_close_through_both_bridges(chain):
    # TCP client FIN → close 1000 → upstream FIN; its answer after that → back to the client.
    upstream, server, listener = (
        chain.upstream.expect(answer_after_eof),
        chain.server,
        chain.listener,
    )
    answer = Received()
    with socket.create_connection(host_port(listener.address), timeout=20) as client:
        exchange(client, b"y" * 5000, answer)
    upstream.join()
    assert answer.end == "eof"
    expected = b"answer to " + hashlib.sha256(b"5000").hexdigest().encode()
    assert answer.size == len(expected)
    assert answer.hash.digest() == hashlib.sha256(expected).digest()
    assert closed_event(listener)["end"] == "client sent EOF"
    assert closed_event(server)["end"] == "client closed with 1000"


def test_upstream_eof_first_the_client_may_still_send(chain):
    # The upstream sends and shuts down its writing side, then reads to the end: close 1000
    # reaches the client, whose bytes sent before its close still arrive.
    got = Received()

    def speak_first(conn: socket.socket) -> None:
        send_all_then_fin(conn, b"hello from upstream")
        got.read_all(conn)

    upstream, server, listener = chain.upstream.expect(speak_first), chain.server, chain.listener
    heard = Received()
    with socket.create_connection(host_port(listener.address), timeout=20) as client:
        reader = threading.Thread(target=heard.read_all, args=(client,), daemon=True)
        reader.start()
        assert heard.done.wait(20)  # the FIN arrived: the upstream is done sending
        send_all_then_fin(client, b"late but delivered")
    upstream.join()
    assert heard.end == "eof" and heard.size == len(b"hello from upstream")
    assert got.end == "eof" and got.hash.digest() == hashlib.sha256(b"late but delivered").digest()
    closed = closed_event(server)
    assert closed["ws_close_sent"] == 1000 and closed["end"] == "upstream sent EOF"
    assert closed_event(listener)["ws_close_received"] == 1000


# --- close codes ----------------------------------------------------------------------------


def test_upstream_reset_closes_with_1011(chain):
    def read_then_reset(conn: socket.socket) -> None:
        assert conn.recv(100)
        reset(conn)

    upstream, server = chain.upstream.expect(read_then_reset), chain.server
    proc = subprocess.Popen(
        [*NETKIT, "ws-client", f"ws://{server.address}/", "--stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"one message")
    proc.stdin.flush()  # stdin stays open: the reset, not our EOF, ends it
    try:
        assert proc.wait(timeout=20) == 7
    finally:
        proc.stdin.close()
        proc.wait(timeout=5)
    assert proc.stdout is not None and proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    upstream.join()
    assert b"1011" in err
    closed = closed_event(server)
    assert closed["ws_close_sent"] == 1011 and closed["end"] == "reset by upstream"


def test_a_client_reset_reaches_the_websocket_server_as_1011(netkit_server):
    echo = netkit_server("ws-server", "127.0.0.1:0")
    listener = netkit_server("ws-client", f"ws://{echo.address}/", "--listen", "127.0.0.1:0")
    with socket.create_connection(host_port(listener.address), timeout=20) as client:
        client.sendall(b"ping")
        assert client.recv(100) == b"ping"  # the echo came back: the bridge is open
        reset(client)
    close = echo.wait_for("close", timeout=20)
    assert close["code"] == 1011
    assert closed_event(listener)["end"] == "reset by client"


def test_a_websocket_close_with_another_code_is_a_reset(chain):
    # (1000 is a FIN: the half-close tests above read the upstream's EOF after it.)
    close_code, end = 4000, "reset"
    got = Received()
    upstream, server = chain.upstream.expect(got.read_all), chain.server
    result = run_netkit(
        "ws-client", f"ws://{server.address}/", "hello", "--close-code", str(close_code),
        "--timeout", "2s",
    )  # fmt: skip
    upstream.join()
    assert got.end == end, result.stderr
    closed = closed_event(server)
    assert closed["ws_close_received"] == close_code


def test_an_unreachable_upstream_closes_with_1011(netkit_server, tmp_path):
    server = netkit_server("ws-server", "127.0.0.1:0", "--to", f"unix:{tmp_path / 'none.sock'}")
    code, _, err = run_stdio(f"ws://{server.address}/", b"lost")
    assert code == 7 and "1011" in err, err
    failed = server.wait_for("upstream_failed")
    assert "no socket at" in failed["error"]
    closed = closed_event(server)
    # The 4 bytes, if the client sent them before our close reached it, were not delivered.
    assert closed["ws_close_sent"] == 1011 and closed["bytes_up"] == 0
    assert closed.get("undelivered", {"up": 0})["up"] in (0, 4)


def test_an_unreachable_websocket_resets_the_client(netkit_server, tmp_path):
    listener = netkit_server(
        "ws-client", f"ws+unix://{tmp_path / 'none.sock'}:/", "--listen", "127.0.0.1:0"
    )
    got = Received()
    try:
        with socket.create_connection(host_port(listener.address), timeout=20) as client:
            got.read_all(client)
    except ConnectionResetError:
        got.end = "reset"  # the reset arrived before connect() returned (a loaded machine)
    assert got.end in ("reset", "eof") and got.size == 0
    assert listener.wait_for("upstream_failed")["upstream"].startswith("ws+unix://")


# --- usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("ws-server", ":0", "--to", "127.0.0.1:1", "--mode", "sink"),
        ("ws-server", ":0", "--upstream-tls"),
        ("ws-client", "ws://127.0.0.1:1/", "--listen", ":0", "hello"),
        ("ws-client", "ws://127.0.0.1:1/", "--stdio", "--json"),
    ],
)
def test_bridge_usage_errors(args, capsys):
    assert main(list(args)) == 2
    assert_one_line_error(capsys.readouterr().err)


def test_stdio_reads_a_regular_file(chain, tmp_path):
    # Not a pipe: an event loop cannot watch a file, the reader thread reads it all the same.
    data = pattern(5, 3 * MB)
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    got = Received()
    upstream, server = chain.upstream.expect(lambda conn: exchange(conn, b"", got)), chain.server
    with path.open("rb") as stdin:
        proc = subprocess.run(
            [*NETKIT, "ws-client", f"ws://{server.address}/", "--stdio"],
            stdin=stdin,
            capture_output=True,
            timeout=30,
        )
    upstream.join()
    assert proc.returncode == 0, proc.stderr
    assert got.size == len(data) and got.hash.digest() == hashlib.sha256(data).digest()
    assert closed_event(server)["bytes_up"] == len(data)
