"""lb to backends over TLS, and its richer checks, end to end: the CLI as a subprocess in front
of real loopback backends (netkit tcp-echo serve with trustme certificates, netkit proxy
--accept-proxy-protocol, an in-test HTTP server)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.commands.conftest import ServerProcess, assert_one_line_error, run_netkit
from tests.commands.test_lb import NamedBackend, host_port, who
from tests.net.conftest import ThreadListener


def echo(address: str, payload: bytes) -> bytes:
    with socket.create_connection(host_port(address), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def health_of(lb: ServerProcess, backend: str, timeout: float = 10) -> dict[str, Any]:
    """The next health event about ``backend``."""
    deadline = time.monotonic() + timeout
    while True:
        event = lb.wait_for("health", max(0.01, deadline - time.monotonic()))
        if event["backend"] == backend:
            return event


def pem(tmp_path: Path, name: str, blob: trustme.Blob) -> str:
    path = tmp_path / name
    blob.write_to_path(str(path))
    return str(path)


def test_tls_backends_verified_and_served_untrusted_marked_down(netkit_server, tls_files, tmp_path):
    trusted = netkit_server(
        "tcp-echo", "serve", "127.0.0.1:0", "--cert", tls_files["chain"], "--key", tls_files["key"]
    )
    stranger = trustme.CA().issue_cert("127.0.0.1")
    untrusted = netkit_server(
        "tcp-echo", "serve", "127.0.0.1:0", "--cert",
        pem(tmp_path, "other.pem", stranger.private_key_and_cert_chain_pem),
    )  # fmt: skip
    lb = netkit_server(
        "lb", ":0", trusted.address, untrusted.address, "--backend-tls", "--cacert",
        tls_files["ca"], "--check-interval", "50ms", "--check-timeout", "5s",
    )  # fmt: skip
    assert lb.listening["backend_tls"] == [trusted.address, untrusted.address]
    assert lb.listening["splice"] is False
    down = health_of(lb, untrusted.address)
    assert (down["new"], down["source"]) == ("down", "check")
    assert f"TLS certificate of {untrusted.address} not trusted" in down["reason"]
    assert "check_ms" in down
    payloads = [bytes([i]) * 50_000 for i in range(6)]
    assert [echo(lb.address, p) for p in payloads] == payloads  # all on the trusted one
    assert lb.stop() == 0
    totals = {row["backend"]: row["total"] for row in lb.event("summary")["backends"]}
    assert totals == {trusted.address: 6, untrusted.address: 0}

    # Only the untrusted backend: a clean refusal, and the event says why.
    alone = netkit_server(
        "lb", ":0", untrusted.address, "--backend-tls", "--cacert", tls_files["ca"],
        "--check-interval", "1h",
    )  # fmt: skip
    assert "not trusted" in health_of(alone, untrusted.address)["reason"]
    with (
        socket.create_connection(host_port(alone.address), timeout=10) as sock,
        pytest.raises(ConnectionResetError),
    ):
        sock.recv(1)
    assert "no backend" in alone.wait_for("upstream_failed")["error"]


def test_mutual_tls_to_a_backend_that_requires_a_client_certificate(
    netkit_server, ca, tls_files, tmp_path
):
    backend = netkit_server(
        "tcp-echo", "serve", "127.0.0.1:0", "--cert", tls_files["chain"], "--key",
        tls_files["key"], "--client-ca", tls_files["ca"],
    )  # fmt: skip
    client = pem(tmp_path, "lb-client.pem", ca.issue_cert("lb").private_key_and_cert_chain_pem)
    # The probe waits for the echo: over TLS 1.3 a missing client certificate is refused
    # only after the client's side of the handshake, so connecting alone would pass.
    probe = (
        "--check-send",
        "ping\\n",
        "--check-expect",
        "^ping",
        "--check-interval",
        "50ms",
        "--check-timeout",
        "5s",
    )
    with_cert = netkit_server(
        "lb", ":0", f"{backend.address},tls", "--cacert", tls_files["ca"],
        "--backend-cert", client, *probe,
    )  # fmt: skip
    without = netkit_server(
        "lb", ":0", f"{backend.address},tls", "--cacert", tls_files["ca"], *probe
    )
    down = health_of(without, backend.address)
    assert down["new"] == "down" and down["source"] == "check"
    assert echo(with_cert.address, b"secret" * 1000) == b"secret" * 1000
    assert with_cert.stop() == 0
    assert not [e for e in with_cert.events if e["event"] == "health"], "it stayed up"


def test_half_a_backend_client_certificate_is_a_usage_error(tls_files):
    result = run_netkit("lb", ":0", "127.0.0.1:1", "--backend-key", tls_files["key"])
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--backend-key needs --backend-cert" in result.stderr
    result = run_netkit("lb", ":0", "127.0.0.1:1", "--backend-cert", tls_files["chain"])
    assert result.returncode == 2 and "--backend-key" in result.stderr
    result = run_netkit("lb", ":0", "127.0.0.1:1", "--check", "http:/", "--check-send", "x")
    assert result.returncode == 2 and "--check-send is for TCP checks" in result.stderr


class FlippingHTTP(ThreadListener):
    """An HTTP server answering every request with :attr:`status` (the test flips it)."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []
        super().__init__()
        self.address = f"127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                self.paths.append(request.split(b" ")[1].decode())
                conn.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
            except OSError:
                pass


def test_http_check_down_on_500_and_up_on_200(netkit_server):
    web = FlippingHTTP()
    try:
        lb = netkit_server(
            "lb", ":0", web.address, "--check", "http:/healthz", "--check-expect", "2xx",
            "--check-interval", "30ms", "--check-timeout", "5s", "--rise", "1", "--fall", "1",
        )  # fmt: skip
        web.status = 500
        down = health_of(lb, web.address)
        assert (down["new"], down["status"]) == ("down", 500)
        assert "HTTP 500 from GET /healthz (expected 2xx)" in down["reason"]
        web.status = 200
        up = health_of(lb, web.address)
        assert (up["new"], up["status"]) == ("up", 200) and up["check_ms"] > 0
        assert set(web.paths) == {"/healthz"}
    finally:
        web.stop()


def test_check_send_proxy_is_read_by_a_backend_that_requires_the_header(netkit_server):
    named = NamedBackend("b1")
    try:
        check_send_proxy(netkit_server, named)
    finally:
        named.close()


def check_send_proxy(netkit_server, named: NamedBackend) -> None:
    # netkit proxy in front of the backend admits only connections that start with a v1 header
    # (and connects onward only then): the backend's name reaches only such checks.
    guarded = netkit_server("proxy", ":0", named.address, "--accept-proxy-protocol", "v1")
    probe = (
        "--check-send",
        "hi\\n",
        "--check-expect",
        "^b1",
        "--check-interval",
        "50ms",
        "--check-timeout",
        "5s",
        "--fall",
        "1",
    )
    sends = netkit_server(
        "lb", ":0", guarded.address, "--check-send-proxy", "--proxy-protocol", "v1", *probe
    )
    plain = netkit_server("lb", ":0", guarded.address, *probe)
    v2 = netkit_server("lb", ":0", guarded.address, "--proxy-protocol", "v2", *probe)
    for lb in (plain, v2):  # no header, or the other version: refused, so the check fails
        down = health_of(lb, guarded.address)
        assert down["new"] == "down"
        assert f"connection to {guarded.address} was reset" in down["reason"]
    seen = set()
    while seen != {"plain", "v2"}:  # each lb's checks refused, for their own reason
        reason = guarded.wait_for("proxy_header_rejected")["reason"]
        seen.add("plain" if "got b'hi" in reason else "v2" if "got b'\\r\\n" in reason else "?")
    assert who(sends.address) == "b1"  # its checks pass: it stays up, and serves
    assert sends.stop() == 0
    assert not [e for e in sends.events if e["event"] == "health"]
    assert sends.listening["check_send_proxy"] == 1 and v2.listening["check_send_proxy"] == 2


class TurncoatTLS(ThreadListener):
    """A TLS echo backend whose first connection (lb's first check) gets a trusted
    certificate, and every later one a certificate from another CA."""

    def __init__(self, trusted: ssl.SSLContext, other: ssl.SSLContext) -> None:
        self.contexts = [trusted, other]
        self.served = 0
        self.checked = threading.Event()  # the first handshake (the check's) is done
        super().__init__()
        self.address = f"127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        ctx = self.contexts[min(self.served, 1)]
        self.served += 1
        threading.Thread(target=self._echo, args=(conn, ctx), daemon=True).start()

    def _echo(self, conn: socket.socket, ctx: ssl.SSLContext) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
            self.checked.set()
            while data := tls.recv(65536):
                tls.sendall(data)


def test_a_backend_whose_handshake_fails_for_a_client_is_ejected_and_the_client_served(
    netkit_server, ca, tls_files
):
    trusted = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(trusted)
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(other)
    turncoat = TurncoatTLS(trusted, other)
    good = netkit_server(
        "tcp-echo", "serve", "127.0.0.1:0", "--cert", tls_files["chain"], "--key", tls_files["key"]
    )
    try:
        lb = netkit_server(
            "lb", ":0", turncoat.address, f"{good.address},backup", "--backend-tls",
            "--cacert", tls_files["ca"], "--check-interval", "1h",
        )  # fmt: skip
        assert turncoat.checked.wait(10), "the first check's handshake"
        # The first client meets the changed certificate: the backend is ejected, and the
        # client served by the next one (HAProxy's retry on a failed handshake), not reset.
        assert echo(lb.address, b"first") == b"first"
        down = lb.wait_for("health")
        assert (down["backend"], down["new"], down["source"]) == (
            turncoat.address,
            "down",
            "traffic",
        )
        assert f"TLS certificate of {turncoat.address} not trusted" in down["reason"]
        assert [echo(lb.address, b"after") for _ in range(4)] == [b"after"] * 4
        assert lb.stop() == 0
        summary = lb.event("summary")
        assert not any(e["event"] == "upstream_failed" for e in lb.events)
        totals = {row["backend"]: row["total"] for row in summary["backends"]}
        assert totals[good.address] == 5
    finally:
        turncoat.stop()


def test_proxy_shares_the_group_mutual_tls_to_its_upstream(netkit_server, ca, tls_files, tmp_path):
    backend = netkit_server(
        "tcp-echo", "serve", "127.0.0.1:0", "--cert", tls_files["chain"], "--key",
        tls_files["key"], "--client-ca", tls_files["ca"],
    )  # fmt: skip
    client = pem(
        tmp_path, "proxy-client.pem", ca.issue_cert("proxy").private_key_and_cert_chain_pem
    )
    front = netkit_server(
        "proxy", ":0", backend.address, "--cacert", tls_files["ca"], "--upstream-cert", client
    )
    assert front.listening["upstream_tls"] is True
    assert echo(front.address, b"mutual" * 500) == b"mutual" * 500
    result = run_netkit("proxy", ":0", "127.0.0.1:1", "--upstream-key", tls_files["key"])
    assert result.returncode == 2 and "--upstream-key needs --upstream-cert" in result.stderr


def test_proxy_header_goes_in_clear_before_tls_for_checks_and_traffic(netkit_server, tls_files):
    # netkit proxy with a TLS listener and --accept-proxy-protocol reads the header first, in
    # clear, then the TLS handshake (as HAProxy's accept-proxy with ssl does).
    echo_server = netkit_server("tcp-echo", "serve", "127.0.0.1:0")
    guarded = netkit_server(
        "proxy", "127.0.0.1:0", echo_server.address, "--accept-proxy-protocol", "v2",
        "--cert", tls_files["chain"], "--key", tls_files["key"],
    )  # fmt: skip
    lb = netkit_server(
        "lb", ":0", guarded.address, "--backend-tls", "--cacert", tls_files["ca"],
        "--proxy-protocol", "v2", "--check-interval", "50ms", "--check-timeout", "5s",
        "--fall", "1",
    )  # fmt: skip
    assert echo(lb.address, b"through" * 1000) == b"through" * 1000
    closed = guarded.wait_for("closed")
    while closed["bytes_up"] == 0:  # checks close without data; find the client's relay
        closed = guarded.wait_for("closed")
    assert closed["bytes_up"] == 7000 and closed["via"] != closed["client"]
    assert lb.stop() == 0
    assert not [e for e in lb.events if e["event"] == "health"], "checks passed throughout"
    assert not [e for e in guarded.events if e["event"] == "proxy_header_rejected"]
