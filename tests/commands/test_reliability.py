"""Reliability under resource pressure: out of file descriptors, many connections, slow peers."""

from __future__ import annotations

import resource
import socket
import subprocess

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
