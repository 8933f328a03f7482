"""``--accept-proxy-protocol`` end to end: HAProxy's send-proxy / send-proxy-v2 in front of
netkit proxy and lb (subprocesses), garbage headers, and the flags.

HAProxy is a test dependency: ``.ci/run`` installs it (root); without it the HAProxy tests
skip and say so. It listens on a socket this test bound (``bind fd@N``), so there is no
start-up race to wait out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netkit.core.proxy_protocol import ProxyHeader, decode
from tests.commands.conftest import assert_one_line_error, run_netkit
from tests.commands.test_proxy import connect, host_port, recv_all, thread_server

__all__ = ["thread_server"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(60)

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
)
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (.ci/run installs it: apt-get install haproxy)",
)

HAPROXY_CONFIG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind fd@{fd}
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    default_backend netkit
backend netkit
    server n1 {server} {send}
"""


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    """Start HAProxy in TCP mode relaying to a server with ``send``; returns its address."""
    started: list[subprocess.Popen[bytes]] = []

    def start(server: str, send: str) -> str:
        assert HAPROXY is not None
        listener = socket.create_server(("127.0.0.1", 0))
        fd = listener.fileno()
        config = tmp_path / f"haproxy{len(started)}.cfg"
        config.write_text(HAPROXY_CONFIG.format(fd=fd, server=server, send=send))
        proc = subprocess.Popen(
            [HAPROXY, "-f", str(config), "-db"],
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        listener.close()  # HAProxy holds its own copy
        return address

    yield start
    for proc in started:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def header_reader(headers: list[tuple[ProxyHeader, bytes]]) -> Callable[[socket.socket], None]:
    """An upstream that reads to EOF, keeps the PROXY header it got and the rest, says ok
    (a connection without a header, such as a health check, is closed)."""

    def handle(conn: socket.socket) -> None:
        data = recv_all(conn)
        found = decode(data) if data else None  # lb's health checks send nothing
        if found is None:
            return
        header, size = found
        headers.append((header, data[size:]))
        conn.sendall(b"ok")

    return handle


def ask(address: str, payload: bytes) -> tuple[bytes, tuple[str, int]]:
    """Send ``payload``, half-close, read the reply; also return the client's own address."""
    with connect(address) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return recv_all(sock), sock.getsockname()[:2]


@needs_haproxy
@pytest.mark.parametrize(
    ("send", "accept", "onward"),
    [
        ("send-proxy", "v1", "v2"),
        ("send-proxy-v2", "v2", "v1"),
        ("send-proxy-v2 proxy-v2-options crc32c,unique-id", "any", "v2"),
    ],
    ids=["v1", "v2", "v2-crc32c-tlvs"],
)
def test_haproxy_in_front_the_real_client_is_reported_and_sent_onward(
    netkit_server, thread_server, haproxy, send, accept, onward
):
    headers: list[tuple[ProxyHeader, bytes]] = []
    upstream = thread_server(header_reader(headers))
    proxy = netkit_server(
        "proxy", ":0", upstream, "--accept-proxy-protocol", accept, "--proxy-protocol", onward
    )
    front = haproxy(proxy.address, send)
    payload = os.urandom(100_000)
    reply, client = ask(front, payload)
    closed = proxy.wait_for("closed")
    assert reply == b"ok"
    header, rest = headers[0]
    assert rest == payload  # every byte after the header, in order
    assert header.version == int(onward[1])
    assert header.source == client  # the real client, not HAProxy
    assert header.destination == host_port(front)  # where the client connected
    assert closed["client"] == f"{client[0]}:{client[1]}"
    assert closed["via"] != closed["client"] and closed["bytes_up"] == len(payload)


@needs_haproxy
def test_haproxy_in_front_of_lb_the_real_client_is_reported(netkit_server, thread_server, haproxy):
    headers: list[tuple[ProxyHeader, bytes]] = []
    backend = thread_server(header_reader(headers))
    lb = netkit_server(
        "lb", ":0", backend, "--algorithm", "source", "--accept-proxy-protocol", "any",
        "--proxy-protocol", "v1", "--check-interval", "1h",
    )  # fmt: skip
    front = haproxy(lb.address, "send-proxy-v2")
    reply, client = ask(front, b"hello")
    closed = lb.wait_for("closed")
    # The health check sends its own header too (HAProxy's default with send-proxy), no data.
    traffic = [(header, rest) for header, rest in headers if rest]
    assert reply == b"ok" and traffic[0][1] == b"hello"
    assert traffic[0][0].source == client and closed["client"] == f"{client[0]}:{client[1]}"


@needs_haproxy
def test_a_header_of_the_wrong_version_is_rejected(netkit_server, thread_server, haproxy):
    headers: list[tuple[ProxyHeader, bytes]] = []
    proxy = netkit_server(
        "proxy", ":0", thread_server(header_reader(headers)), "--accept-proxy-protocol", "v1"
    )
    reply, _ = ask(haproxy(proxy.address, "send-proxy-v2"), b"hello")
    rejected = proxy.wait_for("proxy_header_rejected")
    assert reply == b"" and headers == []
    assert "no PROXY header (v1 expected)" in rejected["reason"]


def test_garbage_closes_that_client_and_the_others_are_served(netkit_server, thread_server):
    headers: list[tuple[ProxyHeader, bytes]] = []
    proxy = netkit_server(
        "proxy", ":0", thread_server(header_reader(headers)), "--accept-proxy-protocol", "any",
        "--proxy-header-timeout", "300ms", "--proxy-protocol", "v2",
    )  # fmt: skip
    with connect(proxy.address) as slow:  # says nothing: closed at the timeout
        with connect(proxy.address) as liar:
            liar.sendall(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n")  # LF without CR
            with contextlib.suppress(ConnectionResetError):
                assert recv_all(liar) == b""
        reasons = {proxy.wait_for("proxy_header_rejected")["reason"]}
        reply, _ = ask(proxy.address, b"PROXY TCP6 2001:db8::1 2001:db8::2 7 8\r\nhi")
        assert reply == b"ok" and headers[0][0].source == ("2001:db8::1", 7)
        reasons.add(proxy.wait_for("proxy_header_rejected")["reason"])
        with contextlib.suppress(ConnectionResetError):
            assert recv_all(slow) == b""
    assert any("lone CR or LF" in r for r in reasons)
    assert any("within 0.3s (0 bytes came)" in r for r in reasons)
    proxy.stop()
    assert proxy.event("summary")["proxy_headers_rejected"] == 2


def test_the_flags_are_checked_and_shown(netkit_server):
    bad = run_netkit("proxy", ":0", "127.0.0.1:9", "--accept-proxy-protocol", "v3")
    assert bad.returncode == 2 and "v3" in bad.stderr
    zero = run_netkit(
        "lb", ":0", "127.0.0.1:9", "--accept-proxy-protocol", "v1", "--proxy-header-timeout", "0"
    )
    assert zero.returncode == 2
    assert_one_line_error(zero.stderr)
    assert "--proxy-header-timeout" in zero.stderr
    udp = run_netkit(
        "proxy", "udp://127.0.0.1:0", "udp://127.0.0.1:9", "--accept-proxy-protocol", "v2"
    )
    assert udp.returncode == 2 and "--accept-proxy-protocol" in udp.stderr
    proxy = netkit_server("proxy", ":0", "127.0.0.1:9", "--accept-proxy-protocol", "v2")
    assert proxy.listening["accept_proxy_protocol"] == "v2"


def test_the_summary_line_says_how_many_clients_had_no_valid_header():
    from netkit.commands.serving import relay_summary
    from netkit.net.relay import RelayStats

    line = relay_summary(RelayStats(accepted=3, bad_proxy_headers=2).as_dict())
    assert "2 client(s) without a valid PROXY header" in line
    assert "PROXY" not in relay_summary(RelayStats(accepted=3).as_dict())


@needs_haproxy
def test_haproxys_health_checks_are_accepted_as_local_connections(
    netkit_server, thread_server, haproxy
):
    # check-send-proxy with send-proxy-v2: each check opens with a LOCAL header, which the
    # spec says to accept with the connection's own addresses.
    proxy = netkit_server(
        "proxy", ":0", thread_server(header_reader([])), "--accept-proxy-protocol", "v2"
    )
    haproxy(proxy.address, "send-proxy-v2 check check-send-proxy inter 100ms")
    closed = proxy.wait_for("closed")
    assert closed["client"].startswith("127.0.0.1:") and "via" not in closed
    assert not closed["end"].startswith("proxy header rejected"), closed
    assert all(e["event"] != "proxy_header_rejected" for e in proxy.events)
