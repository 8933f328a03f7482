"""ws-server end to end: the CLI as a subprocess; the websockets library and raw sockets as peers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.commands.conftest import assert_one_line_error, run_netkit

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 15) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def test_echo_text_binary_and_large(netkit_server):
    server = netkit_server("ws-server", "127.0.0.1:0")
    url = server.listening["url"]
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/")

    async def client() -> None:
        async with connect(url, max_size=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff" * 10)
            assert await ws.recv() == b"\x00\xff" * 10
            big = os.urandom(1 << 20)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag", "mented"])  # one message in several frames
            assert await ws.recv() == "fragmented"

    run(client())
    assert server.stop() == 0
    opened = server.event("open")
    assert opened["path"] == "/" and opened["compress"] is False
    closed = server.event("close")
    assert closed["code"] == 1000 and closed["messages_in"] == 4 and closed["messages_out"] == 4
    sizes = [e["size"] for e in server.events if e["event"] == "message"]
    assert sizes == [6, 20, 1 << 20, 10]


def test_tls_self_signed_and_wss_url(netkit_server):
    server = netkit_server("ws-server", "wss://127.0.0.1:0/", "--tls-self-signed")
    url = server.listening["url"]
    assert url.startswith("wss://")
    ctx = ssl.create_default_context(cafile=server.listening["ca_file"])

    async def client() -> str:
        async with connect(url, ssl=ctx) as ws:
            await ws.send("secure")
            return str(await ws.recv())

    assert run(client()) == "secure"


def test_wss_without_certificate_is_a_usage_error():
    result = run_netkit("ws-server", "wss://127.0.0.1:0/")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "--tls-self-signed" in result.stderr


def test_unix_socket(netkit_server, tmp_path):
    path = tmp_path / "ws.sock"
    server = netkit_server("ws-server", f"unix:{path}")
    assert server.listening["url"] == f"ws+unix://{path}:/"

    async def client() -> str:
        async with unix_connect(str(path), "ws://localhost/") as ws:
            await ws.send("over unix")
            return str(await ws.recv())

    assert run(client()) == "over unix"
    assert server.stop() == 0
    assert not path.exists()


def test_the_url_advertised_for_an_abstract_socket_is_one_ws_client_takes(netkit_server):
    name = f"netkit-test-{uuid.uuid4().hex}"
    server = netkit_server("ws-server", f"unix:@{name}")
    assert server.listening["url"] == f"ws+unix://@{name}:/"
    result = run_netkit(
        "ws-client", server.listening["url"], "over abstract", "-c", "1", "-t", "10s"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "over abstract"), result.stderr


@pytest.mark.parametrize("server_compress", [True, False])
def test_permessage_deflate_negotiation(netkit_server, server_compress):
    args = ["ws-server", ":0"] + (["--compress"] if server_compress else [])
    server = netkit_server(*args)

    async def client() -> list[Any]:
        async with connect(server.listening["url"], compression="deflate") as ws:
            text = "compress me " * 500
            await ws.send(text)
            assert await ws.recv() == text
            return list(ws.protocol.extensions)

    extensions = run(client())
    assert bool(extensions) is server_compress
    server.stop()
    assert server.event("open")["compress"] is server_compress
    received = server.event("disconnected")["bytes_in"]
    if server_compress:
        assert received < 1000, "6000 bytes of text went over the wire compressed"


def test_broadcast_three_clients(netkit_server):
    server = netkit_server("ws-server", ":0", "--mode", "broadcast")
    url = server.listening["url"]

    async def chat() -> tuple[str, str, bool]:
        async with connect(url) as a, connect(url) as b, connect(url) as c:
            for ws in (a, b, c):  # every member is in the room once its echo-free ping returns
                await (await ws.ping())
            await a.send("hi from a")
            got_b, got_c = await b.recv(), await c.recv()
            await c.send("hi from c")
            assert await a.recv() == "hi from c"
            assert await b.recv() == "hi from c"
            try:
                async with asyncio.timeout(0.3):
                    await a.recv()
                a_heard_itself = True
            except TimeoutError:
                a_heard_itself = False
            return str(got_b), str(got_c), a_heard_itself

    got_b, got_c, a_heard_itself = run(chat())
    assert got_b == got_c == "hi from a"
    assert not a_heard_itself


def test_broadcast_needs_one_worker():
    result = run_netkit("ws-server", ":0", "--mode", "broadcast", "--workers", "2")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)


def test_sink_reads_and_discards(netkit_server):
    server = netkit_server("ws-server", ":0", "--mode", "sink")

    async def client() -> None:
        async with connect(server.listening["url"]) as ws:
            for i in range(5):
                await ws.send(f"m{i}")
            await (await ws.ping())  # ordered after the messages: all were read

    run(client())
    server.stop()
    closed = server.event("close")
    assert closed["messages_in"] == 5 and closed["messages_out"] == 0


def http_request(address: str, request: bytes) -> bytes:
    with socket.create_connection(host_port(address), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_health_endpoint(netkit_server):
    server = netkit_server("ws-server", ":0")
    response = http_request(server.address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"ok") or b"\r\n\r\nok" in response


def test_not_http_is_400_and_wrong_version_is_426(netkit_server):
    server = netkit_server("ws-server", ":0")
    garbage = http_request(server.address, b"\x16\x03\x01 this is not http\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    key = base64.b64encode(os.urandom(16))
    wrong = http_request(
        server.address,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    assert wrong.startswith(b"HTTP/1.1 426 ")
    assert b"sec-websocket-version: 13" in wrong.lower()


def test_path_origin_and_subprotocol(netkit_server):
    server = netkit_server(
        "ws-server", "ws://127.0.0.1:0/chat", "--origin", "http://good.test",
        "--subprotocol", "v2", "--subprotocol", "v1",
    )  # fmt: skip
    url = server.listening["url"]
    assert url.endswith("/chat")
    base = url.rsplit("/", 1)[0]

    async def attempts() -> tuple[int, int, str | None]:
        with pytest.raises(InvalidStatus) as wrong_path:
            async with connect(base + "/other", origin="http://good.test"):
                pass
        with pytest.raises(InvalidStatus) as bad_origin:
            async with connect(url, origin="http://evil.test"):
                pass
        async with connect(url, origin="http://good.test", subprotocols=["v1", "v2"]) as ws:
            chosen = ws.subprotocol
            await ws.send("ok")
            assert await ws.recv() == "ok"
        return (
            wrong_path.value.response.status_code,
            bad_origin.value.response.status_code,
            chosen,
        )

    not_found, forbidden, chosen = run(attempts())
    assert (not_found, forbidden) == (404, 403)
    assert chosen == "v2", "the server's preference wins, as in the websockets library"


def test_max_size_closes_with_1009(netkit_server):
    server = netkit_server("ws-server", ":0", "--max-size", "1KiB")

    async def client() -> int | None:
        async with connect(server.listening["url"]) as ws:
            await ws.send("x" * 1024)
            assert await ws.recv() == "x" * 1024
            await ws.send("x" * 1025)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(client()) == 1009


def test_1009_comes_from_the_header_before_the_payload_is_buffered(netkit_server):
    server = netkit_server("ws-server", ":0", "--max-size", "1KiB")
    size = 8 << 20
    with socket.create_connection(host_port(server.address), timeout=10) as sock:
        upgrade(sock)
        # Masked binary frame with a zero key (payload as is), 64-bit length.
        sock.sendall(b"\x82\xff" + struct.pack("!Q", size) + bytes(4))
        sender = threading.Thread(target=lambda: _quietly(sock.sendall, bytes(size)), daemon=True)
        sender.start()
        # The server answers 1009 from the header alone, while the 8 MiB are still on their way
        # (it never buffers them: its limit is 1 KiB).
        assert read_close_code(sock) == 1009


def _quietly(send, data) -> None:
    with contextlib.suppress(OSError):
        send(data)


def upgrade(sock: socket.socket) -> None:
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 ")


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def read_close_code(sock: socket.socket) -> int:
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4096)
        assert chunk, "closed without a close frame"
        data += chunk
    assert data[0] == 0x88, f"expected a close frame, got {data[:2]!r}"
    return int(struct.unpack("!H", data[2:4])[0])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x05hello", 1002),  # unmasked frame from a client
        (b"\xc1\x80abcd", 1002),  # RSV1 without an extension
        (b"\x83\x80abcd", 1002),  # unknown opcode 3
        (b"\x81\x82" + bytes(4) + b"\xc3\x28", 1007),  # invalid UTF-8 (mask of zeros)
    ],
)
def test_bad_peer_is_closed_and_others_keep_working(netkit_server, frame, code):
    server = netkit_server("ws-server", ":0")
    with socket.create_connection(host_port(server.address), timeout=10) as bad:
        upgrade(bad)
        bad.sendall(frame)
        assert read_close_code(bad) == code

    async def good_client() -> str:
        async with connect(server.listening["url"]) as ws:
            await ws.send("still here")
            return str(await ws.recv())

    assert run(good_client()) == "still here"


def test_handshake_timeout_closes_silent_connections(netkit_server):
    server = netkit_server("ws-server", ":0", "--handshake-timeout", "300ms")
    with socket.create_connection(host_port(server.address), timeout=10) as silent:
        silent.sendall(b"GET / HTTP/1.1\r\n")  # and never finishes
        assert silent.recv(1) == b"", "the server hangs up on an unfinished handshake"


def test_sigterm_sends_1001_and_waits_for_the_close(netkit_server):
    server = netkit_server("ws-server", ":0")

    async def client() -> tuple[int | None, str | None]:
        async with connect(server.listening["url"]) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            rcvd = closed.value.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, None)

    code, reason = run(client())
    assert code == 1001 and reason
    assert server.wait_exit() == 0
    summary = server.event("summary")
    assert summary["aborted_at_drain"] == 0


# --- issue 13: split handshakes, bytes that are not HTTP, Autobahn strictness ---------------


def test_split_request_and_client_hello_are_answered_not_reset(netkit_server):
    # Items 1 and 2, through the CLI: two writes 50 ms apart (a deliberate delay, so that
    # the request arrives in two reads), then a TLS ClientHello to the plain server.
    server = netkit_server("ws-server", ":0")
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for split in (2, 20, 100):
        with socket.create_connection(host_port(server.address), timeout=10) as sock:
            sock.sendall(request[:split])
            time.sleep(0.05)
            sock.sendall(request[split:])
            assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    with socket.create_connection(host_port(server.address), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        answer = read_to_eof(sock)
        assert answer.startswith(b"HTTP/1.1 400 ")
    assert server.wait_for("rejected")["status"] == 400


def test_valid_message_is_echoed_before_the_bad_frame_closes(netkit_server):
    # Item 25 (a), Autobahn 3.2: a text message, a frame with RSV2, a ping, in one write.
    server = netkit_server("ws-server", ":0")
    hello = b"Hello, world!"
    frames = (
        b"\x81\x8d" + bytes(4) + hello + b"\xa1\x8d" + bytes(4) + hello + b"\x89\x80" + bytes(4)
    )
    with socket.create_connection(host_port(server.address), timeout=10) as sock:
        upgrade(sock)
        sock.sendall(frames)
        data = read_to_eof(sock)
    assert data.startswith(b"\x81\x0d" + hello), data
    close = data[2 + len(hello) :]
    assert close[:1] == b"\x88" and struct.unpack("!H", close[2:4])[0] == 1002
    assert len(close) == 2 + close[1], "nothing after the close frame: no pong"


def test_a_message_and_a_close_in_one_write_get_the_echo_then_the_close(netkit_server):
    # Autobahn 7.1.6: the close frame came in the same read as the message before it, and
    # the echo was dropped (only the close reply went out).
    server = netkit_server("ws-server", ":0")
    hello = b"Hello, world!"
    frames = b"\x81\x8d" + bytes(4) + hello + b"\x88\x82" + bytes(4) + struct.pack("!H", 1000)
    with socket.create_connection(host_port(server.address), timeout=10) as sock:
        upgrade(sock)
        sock.sendall(frames)
        data = read_to_eof(sock)
    assert data == b"\x81\x0d" + hello + b"\x88\x02" + struct.pack("!H", 1000), data


def test_invalid_utf8_closes_before_the_frame_is_complete(netkit_server):
    # Item 25 (b), Autobahn 6.4.3: the rest of the frame is never sent.
    server = netkit_server("ws-server", ":0")
    part1 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
    part2 = b"\xf4\x90\x80\x80"
    with socket.create_connection(host_port(server.address), timeout=10) as sock:
        upgrade(sock)
        sock.sendall(b"\x81\x95" + bytes(4) + part1)  # 21 bytes declared, 11 sent
        time.sleep(0.05)
        sock.sendall(part2)
        sock.settimeout(10)  # the frame never completes: no close means no fail-fast
        assert read_close_code(sock) == 1007


# --- issue 13 item 7: paths, origins, refusals ---------------------------------------------


def test_path_without_a_slash_is_normalised(netkit_server):
    # Was advertised as ws://127.0.0.1:PORTchat, and every request got 404.
    server = netkit_server("ws-server", "127.0.0.1:0", "--path", "chat")
    assert server.listening["url"] == f"ws://{server.address}/chat"

    async def client() -> str:
        async with connect(server.listening["url"]) as ws:
            await ws.send("hi")
            return str(await ws.recv())

    assert run(client()) == "hi"
    bad = run_netkit("ws-server", "127.0.0.1:0", "--path", "/chat?room=1")
    assert bad.returncode == 2
    assert_one_line_error(bad.stderr)
    assert "--path '/chat?room=1'" in bad.stderr


def test_star_admits_any_origin_and_none_admits_clients_without_one(netkit_server):
    # '*' was taken literally (every client got 403); clients without Origin could not get in.
    star = netkit_server("ws-server", ":0", "--origin", "*")
    listed = netkit_server(
        "ws-server", ":0", "--origin", "HTTPS://App.test:443", "--origin", "none"
    )

    async def status(url: str, origin: str | None) -> int:
        try:
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send("x")
                assert await ws.recv() == "x"
        except InvalidStatus as exc:
            return int(exc.response.status_code)
        return 101

    async def attempts() -> list[int]:
        return [
            await status(star.listening["url"], "https://anything.test"),
            await status(star.listening["url"], None),
            await status(listed.listening["url"], "https://app.test"),  # as browsers send it
            await status(listed.listening["url"], None),
            await status(listed.listening["url"], "https://evil.test"),
        ]

    assert run(attempts()) == [101, 101, 101, 101, 403]


@pytest.mark.parametrize("origin", ["example.com", "https://example.com/", "https://*.test"])
def test_an_origin_no_browser_sends_is_a_usage_error(origin):
    result = run_netkit("ws-server", ":0", "--origin", origin)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert f"--origin {origin!r}" in result.stderr and "scheme://host[:port]" in result.stderr


def test_over_max_connections_clients_get_503_and_refusals_are_counted(netkit_server):
    # Was a bare TCP close, no event, and "rejected: 0" in the summary after HTTP 4xx answers.
    server = netkit_server("ws-server", ":0", "--path", "/chat", "--max-connections", "1")
    url = server.listening["url"]

    async def attempts() -> tuple[int, str | None, int]:
        async with connect(url) as first:
            with pytest.raises(InvalidStatus) as over:
                async with connect(url):
                    pass
            await first.send("still here")
            assert await first.recv() == "still here"
        with pytest.raises(InvalidStatus) as wrong_path:
            async with connect(url.replace("/chat", "/other")):
                pass
        busy, missing = over.value.response, wrong_path.value.response
        return busy.status_code, busy.headers.get("Retry-After"), missing.status_code

    assert run(attempts()) == (503, "1", 404)
    assert server.stop() == 0
    refused = [e for e in server.events if e["event"] == "rejected"]
    assert [(e["status"], e["reason"]) for e in refused] == [
        (503, "at the connection limit (1)"),
        (404, "no WebSocket endpoint at /other"),
    ]
    assert server.event("summary")["rejected"] == 2


def test_post_health_is_405_and_head_has_no_body(netkit_server):
    # POST /health answered 400; 405 with Allow is what HTTP servers say (RFC 9110 15.5.6).
    server = netkit_server("ws-server", ":0")
    post = http_request(server.address, b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = post.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: GET, HEAD\r\n" in head
    assert body == b"405 Method Not Allowed: method POST not allowed on /health\n"
    head_request = http_request(server.address, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head_request.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head_request.endswith(b"Content-Length: 3\r\n\r\n")


def test_refusals_are_warnings_in_human_output(tmp_path):
    # Without --json each refusal is one warning line on stderr, with the status.
    import subprocess

    from tests.commands.conftest import NETKIT

    sock = tmp_path / "ws.sock"
    proc = subprocess.Popen(
        [*NETKIT, "ws-server", f"unix:{sock}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(sock))
            client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 405 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert b"refused with 405: method POST not allowed on /\n" in stderr


def test_broadcast_needs_one_process() -> None:
    """The room lives in one process's memory: broadcast with --workers is refused."""
    refused = run_netkit("ws-server", "127.0.0.1:0", "--mode", "broadcast", "--workers", "2")
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr)
    assert "--mode broadcast needs a single process" in refused.stderr
