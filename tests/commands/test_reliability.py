"""Reliability under resource pressure: out of file descriptors, many connections, slow peers."""

from __future__ import annotations

import resource
import select
import socket
import subprocess
import time

import pytest

from tests.commands.conftest import NETKIT, ServerProcess


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def echo_ok(sock: socket.socket, data: bytes = b"ping") -> bool:
    try:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(len(data) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == data
    except (TimeoutError, OSError):
        return False


def start_limited(*args: str, nofile: int) -> ServerProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [*NETKIT, *args, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )
    server = ServerProcess(proc, {})
    server.listening = server.wait_for("listening")
    return server


def health_ok(address: tuple[str, int]) -> bool:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("command", [["tcp-echo", "serve", ":0"], ["ws-server", ":0"]])
def test_out_of_descriptors_pauses_accepting_and_recovers(command):
    server = start_limited(*command, nofile=64)
    address = host_port(server.address)
    clients: list[socket.socket] = []
    try:
        # More connections than the server has descriptors for (they wait in the backlog).
        for _ in range(80):
            clients.append(socket.create_connection(address, timeout=10))
        paused = server.wait_for("accept_paused", timeout=15)
        assert paused["errno"] in (23, 24)  # ENFILE / EMFILE
        if command[0] == "tcp-echo":
            assert echo_ok(clients[0], b"still served"), "connections it has are still served"
        for sock in clients[:40]:  # free descriptors: it accepts again by itself
            sock.close()
        server.wait_for("accept_resumed", timeout=15)
        if command[0] == "tcp-echo":
            fresh = socket.create_connection(address, timeout=10)
            clients.append(fresh)
            assert echo_ok(fresh, b"in at last")
        else:
            for sock in clients[40:]:  # the rest are unfinished handshakes: let them go
                sock.close()
            assert health_ok(address)
    finally:
        for sock in clients:
            sock.close()
        rc = server.stop()
    assert rc == 0
    assert server.event("summary")["accept_errors"] >= 1


def test_proxy_out_of_descriptors_pauses_and_recovers(netkit_server):
    upstream = netkit_server("tcp-echo", "serve", ":0")
    proxy = start_limited("proxy", ":0", upstream.address, nofile=64)
    clients: list[socket.socket] = []
    try:
        address = host_port(proxy.address)
        for _ in range(80):
            sock = socket.create_connection(address, timeout=10)
            sock.settimeout(0.5)
            clients.append(sock)
            if not echo_ok(sock):
                break
        proxy.wait_for("accept_paused", timeout=15)
        assert echo_ok(clients[0], b"still relayed")
        for sock in clients[:10]:
            sock.close()
        proxy.wait_for("accept_resumed", timeout=15)
        # The stalled client's "ping" was held, not lost: it arrives first, then the new bytes.
        waiting = clients[-1]
        waiting.settimeout(10)
        waiting.sendall(b"in at last")
        got = b""
        while len(got) < len(b"pingin at last"):
            chunk = waiting.recv(64)
            assert chunk, f"closed after {got!r}"
            got += chunk
        assert got == b"pingin at last"
    finally:
        for sock in clients:
            sock.close()
        proxy.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["proxy", "lb"])
def test_a_descriptor_storm_is_served_in_turn_then_a_fresh_client(netkit_server, command):
    # 100 clients at once against 64 descriptors: the relay accepts only the clients it can
    # relay (a reserve keeps a descriptor for each upstream), the rest wait in the backlog
    # and are served as others leave, as HAProxy's maxconn queue does; lb's health checks,
    # short of descriptors, are skipped and never take the backend down.
    upstream = netkit_server("tcp-echo", "serve", ":0")
    extra = ["--check-interval", "0.1s"] if command == "lb" else []
    relay = start_limited(command, ":0", upstream.address, *extra, nofile=64)
    address = host_port(relay.address)
    clients = [socket.create_connection(address, timeout=10) for _ in range(100)]
    served = 0
    try:
        for i, sock in enumerate(clients):
            sock.sendall(b"client %03d" % i)
        for i, sock in enumerate(clients):
            sock.settimeout(5)
            if not reads(sock, b"client %03d" % i):
                break
            served += 1
            sock.close()
        assert served == 100
        started = time.perf_counter()
        with socket.create_connection(address, timeout=5) as fresh:
            assert echo_ok(fresh, b"fresh")
        fresh_s = time.perf_counter() - started
        assert fresh_s < 2.0
    finally:
        for sock in clients:
            sock.close()
        rc = relay.stop()
    assert rc == 0
    assert relay.event("summary")["connections"] == 101
    if command == "lb":
        downs = [e for e in relay.events if e["event"] == "health" and e.get("new") == "down"]
        assert downs == []


def reads(sock: socket.socket, expected: bytes) -> bool:
    got = b""
    try:
        while len(got) < len(expected):
            chunk = sock.recv(len(expected) - len(got))
            if not chunk:
                return False
            got += chunk
    except OSError:
        return False
    return got == expected


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_many(address: tuple[str, int], count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        socks.append(socket.create_connection(address, timeout=10))
    return socks


@pytest.mark.parametrize("kind", ["tcp-echo", "ws-server", "proxy"])
def test_a_thousand_open_connections_and_a_fresh_client_is_served(netkit_server, kind):
    if kind == "proxy":
        upstream = netkit_server("tcp-echo", "serve", ":0")
        server = netkit_server("proxy", ":0", upstream.address)
    elif kind == "ws-server":
        server = netkit_server(
            "ws-server", ":0", "--ping-interval", "0", "--handshake-timeout", "60s"
        )
    else:
        server = netkit_server("tcp-echo", "serve", ":0")
    address = host_port(server.address)
    held = open_many(address, 1000)
    try:
        if kind == "ws-server":
            assert health_ok(address)
        else:
            with socket.create_connection(address, timeout=10) as fresh:
                assert echo_ok(fresh, b"fresh client")
            assert echo_ok(held[0], b"and the first one"), "the oldest connection is still served"
            assert echo_ok(held[-1], b"and the last one")
    finally:
        for sock in held:
            sock.close()


def test_unfinished_handshakes_do_not_block_a_new_client(netkit_server):
    server = netkit_server("ws-server", ":0", "--handshake-timeout", "30s")
    address = host_port(server.address)
    stuck = open_many(address, 500)
    try:
        for i, sock in enumerate(stuck):  # half a request line each, one byte at a time
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n"[: 1 + i % 20])
        assert health_ok(address), "a new client is served while 500 handshakes hang"
    finally:
        for sock in stuck:
            sock.close()


def test_a_client_that_never_reads_does_not_grow_the_echo_server(netkit_server):
    server = netkit_server("tcp-echo", "serve", ":0")
    before = rss(server.proc.pid)
    with socket.create_connection(host_port(server.address), timeout=10) as sock:
        sock.setblocking(False)
        sent = 0
        chunk = b"e" * (1 << 16)
        while sent < (256 << 20):
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], 0.5)
                if not writable:
                    break  # the server stopped reading us: flow control
        grown = rss(server.proc.pid) - before
    assert 1 << 20 < sent < 256 << 20
    assert grown < 16 << 20, f"echo server grew by {grown >> 20} MiB"


def test_broadcast_drops_a_member_that_does_not_read(netkit_server):
    from websockets.sync.client import connect as sync_connect

    server = netkit_server("ws-server", ":0", "--mode", "broadcast", "--ping-interval", "0")
    url = server.listening["url"]
    address = host_port(server.address)
    with socket.create_connection(address, timeout=10) as lazy:
        # A raw member that completes the handshake and then never reads.
        key = b"dGhlIHNhbXBsZSBub25jZQ=="
        lazy.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += lazy.recv(1024)
        server.wait_for("open")
        with sync_connect(url, max_size=None) as talker:
            server.wait_for("open")
            payload = b"b" * (256 << 10)
            before = rss(server.proc.pid)
            for _ in range(200):  # 50 MiB through the room: far more than a socket buffers
                talker.send(payload)
                try:
                    event = server.read_event(timeout=0.01)
                except TimeoutError:
                    continue
                if event["event"] == "slow_client":
                    break
            else:
                event = server.wait_for("slow_client", timeout=10)
            assert event["event"] == "slow_client"
            grown = rss(server.proc.pid) - before
    assert grown < 48 << 20, f"broadcast server grew by {grown >> 20} MiB"


@pytest.mark.parametrize(("command", "needed"), [(["tcp-echo", "serve"], 1064), (["proxy"], 2064)])
def test_too_low_open_files_limit_is_reported_with_the_number_needed(
    netkit_server, command, needed
):
    extra = [netkit_server("tcp-echo", "serve", ":0").address] if command == ["proxy"] else []
    server = start_limited(*command, ":0", *extra, "--max-connections", "1000", nofile=256)
    assert server.listening["max_open_files"] == 256
    server.stop()
    assert server.proc.stderr is not None
    warning = server.proc.stderr.read().decode()
    assert "open-files limit is 256" in warning and f"ulimit -n {needed}" in warning
