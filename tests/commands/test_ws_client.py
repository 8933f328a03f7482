"""ws-client end to end: the CLI as a subprocess against the websockets library's server (run
in a thread of the test process, so the test can see what the server received) and against
``netkit ws-server``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from netkit.commands.ws_view import hex_summary
from tests.commands.conftest import NETKIT, assert_one_line_error, json_lines, run_netkit
from tests.net.conftest import ThreadListener
from tests.net.test_ws import SlowTLSServer

pytestmark = pytest.mark.timeout(60)


# --- a websockets server in a thread -------------------------------------------------------


@dataclass
class Seen:
    """What the server saw of one connection."""

    path: str
    request_headers: Any
    response_headers: Any
    subprotocol: str | None
    messages: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[ServerConnection, Seen], Awaitable[None]]


async def echo(ws: ServerConnection, seen: Seen) -> None:
    async for message in ws:
        seen.messages.append(message)
        # Once the client's close has arrived, send() raises; the messages that came before
        # the close are still to be recorded, so keep reading rather than end the handler.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(message)


class LibServer:
    """``websockets.asyncio.server`` on loopback TCP or a Unix socket, in a daemon thread."""

    def __init__(self, handler: Handler, *, unix_path: Path | None = None, **kwargs: Any):
        self.handler = handler
        self.unix_path = unix_path
        self.kwargs = kwargs
        self.seen: list[Seen] = []
        self._seen_changed = threading.Condition()
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "websockets server did not start"
        if self._error is not None:
            raise self._error

    def url(self, path: str = "/", scheme: str = "ws", host: str = "127.0.0.1") -> str:
        if self.unix_path is not None:
            return f"{scheme}+unix://{self.unix_path}:{path}"
        return f"{scheme}://{host}:{self.port}{path}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test through __init__
            self._error = exc
            self._ready.set()

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None and ws.response is not None
        seen = Seen(ws.request.path, ws.request.headers, ws.response.headers, ws.subprotocol)
        with self._seen_changed:
            self.seen.append(seen)
            self._seen_changed.notify_all()
        try:
            await self.handler(ws, seen)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            seen.close_code, seen.close_reason = ws.close_code, ws.close_reason
            seen.done.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.unix_path is not None:
            server = await unix_serve(self._handle, str(self.unix_path), **self.kwargs)
        else:
            server = await serve(self._handle, "127.0.0.1", 0, **self.kwargs)
        async with server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def connection(self, index: int = 0, timeout: float = 10) -> Seen:
        """The ``index``-th connection, once its handler is over and the close is known."""
        deadline = time.monotonic() + timeout
        with self._seen_changed:
            arrived = self._seen_changed.wait_for(lambda: len(self.seen) > index, timeout)
        assert arrived, "no such connection"
        assert self.seen[index].done.wait(max(0.0, deadline - time.monotonic()))
        return self.seen[index]

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def lib_server() -> Iterator[Callable[..., LibServer]]:
    started: list[LibServer] = []

    def start(handler: Handler = echo, **kwargs: Any) -> LibServer:
        server = LibServer(handler, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run_with_stdin(*args: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    """``run_netkit`` with raw bytes on stdin (it takes text)."""
    result = subprocess.run([*NETKIT, *args], input=stdin, capture_output=True, timeout=20)
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def run_with_open_stdin(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """``run_netkit`` with a stdin that never ends: the input does not end the session."""
    read_end, write_end = os.pipe()
    try:
        return subprocess.run(
            [*NETKIT, *args], stdin=read_end, capture_output=True, text=True, timeout=timeout
        )
    finally:
        os.close(read_end)
        os.close(write_end)


def events_named(stdout: str, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(stdout) if e["event"] == name]


# --- basics --------------------------------------------------------------------------------


def test_echo_json_events(lib_server):
    server = lib_server()
    result = run_netkit(
        "ws-client", server.url("/chat?room=1"), "hello", "wörld", "-c", "2", "--json"
    )
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert [e["event"] for e in events] == [
        "open", "sent", "sent", "received", "received", "close", "summary",
    ]  # fmt: skip
    opened = events[0]
    assert opened["url"] == server.url("/chat?room=1") and opened["status"] == 101
    assert opened["subprotocol"] is None and opened["extensions"] == [] and opened["tls"] is False
    assert ["Upgrade", "websocket"] in opened["headers"]
    assert events[1] == {**events[1], "type": "text", "bytes": 5, "text": "hello"}
    assert events[4] == {**events[4], "type": "text", "bytes": 6, "text": "wörld"}
    assert all(isinstance(e["ts"], float) for e in events)
    close = events[5]
    assert close["code"] == 1000 and close["reason"] == "" and close["initiator"] == "client"
    assert close["clean"] is True
    summary = events[6]
    assert summary["sent"] == 2 and summary["received"] == 2 and summary["bytes_received"] == 11
    seen = server.connection()
    assert seen.path == "/chat?room=1"
    assert seen.messages == ["hello", "wörld"]
    assert seen.close_code == 1000


def test_human_output_and_close_report(lib_server):
    server = lib_server()
    result = run_netkit("ws-client", server.url(), "one", "two", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\ntwo\n"
    assert result.stderr.strip() == "closed: 1000 (normal closure)"


@pytest.mark.parametrize("compress", [True, False])
def test_permessage_deflate_offer(lib_server, tmp_path, compress):
    server = lib_server(max_size=None)
    big = "abc" * 100_000  # 300 kB, compresses well
    (tmp_path / "big.txt").write_text(big)
    args = ["ws-client", server.url(), "-f", str(tmp_path / "big.txt"), "-c", "1", "--json"]
    result = run_netkit(*args, *(["--compress"] if compress else []))
    assert result.returncode == 0, result.stderr
    (opened,) = events_named(result.stdout, "open")
    (received,) = events_named(result.stdout, "received")
    assert received["text"] == big
    seen = server.connection()
    negotiated = seen.response_headers.get("Sec-WebSocket-Extensions")
    if compress:
        assert "permessage-deflate" in seen.request_headers["Sec-WebSocket-Extensions"]
        assert negotiated is not None and negotiated.startswith("permessage-deflate")
        assert opened["extensions"] and opened["extensions"][0].startswith("permessage-deflate")
    else:
        assert "Sec-WebSocket-Extensions" not in seen.request_headers
        assert negotiated is None and opened["extensions"] == []
    assert seen.messages == [big]


def test_headers_subprotocol_origin_and_basic_auth(lib_server):
    server = lib_server(subprotocols=["superchat", "chat"])
    url = server.url("/private").replace("ws://", "ws://alice:s%40cret@")
    result = run_netkit(
        "ws-client", url, "hi", "-c", "1", "--json",
        "-H", "X-Trace: 42", "--header", "X-Other:  spaced value ",
        "--subprotocol", "chat", "--subprotocol", "superchat",
        "--origin", "https://example.test",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = server.connection()
    headers = seen.request_headers
    assert headers["X-Trace"] == "42" and headers["X-Other"] == "spaced value"
    assert headers["Origin"] == "https://example.test"
    assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"alice:s@cret"
    assert seen.subprotocol == "superchat"  # the server's preference
    (opened,) = events_named(result.stdout, "open")
    assert opened["subprotocol"] == "superchat"


def test_host_header_override_is_not_duplicated(lib_server):
    server = lib_server()
    result = run_netkit("ws-client", server.url(), "x", "-c", "1", "-H", "Host: example.test")
    assert result.returncode == 0, result.stderr
    assert server.connection().request_headers.get_all("Host") == ["example.test"]


# --- TLS and Unix sockets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(lib_server, ca, tmp_path) -> tuple[LibServer, str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return lib_server(ssl=ctx), str(ca_file)


def test_wss_verified_with_cacert(tls_server):
    server, ca_file = tls_server
    for host in ("localhost", "127.0.0.1"):
        url = server.url("/", "wss", host)
        result = run_netkit("ws-client", url, "secret", "-c", "1", "--cacert", ca_file, "--json")
        assert result.returncode == 0, result.stderr
        (opened,) = events_named(result.stdout, "open")
        assert opened["tls"] is True
        assert events_named(result.stdout, "received")[0]["text"] == "secret"


def test_wss_untrusted_fails_with_5_and_insecure_works(tls_server):
    server, _ = tls_server
    url = server.url("/", "wss", "localhost")
    refused = run_netkit("ws-client", url, "x", "-c", "1")
    assert refused.returncode == 5, refused.stderr
    assert_one_line_error(refused.stderr)
    assert "not trusted" in refused.stderr
    insecure = run_netkit("ws-client", url, "x", "-c", "1", "--insecure")
    assert insecure.returncode == 0, insecure.stderr
    assert insecure.stdout == "x\n"


def test_wrong_sni_fails_verification(tls_server):
    server, ca_file = tls_server
    url = server.url("/", "wss", "127.0.0.1")
    result = run_netkit("ws-client", url, "x", "-c", "1", "--cacert", ca_file, "--sni", "other")
    assert result.returncode == 5, result.stderr
    assert_one_line_error(result.stderr)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_refused_by_mtls_server_exits_5(ca, tmp_path, version):
    # A server that requires a client certificate and says so with a TLS alert (Python's ssl,
    # as openssl s_server); under TLS 1.3 the alert comes during the upgrade.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    certs = {}
    for name, issuer in (("trusted", ca), ("untrusted", trustme.CA())):
        leaf = issuer.issue_cert("client.test")
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        certs[name] = [
            "--cert",
            str(tmp_path / f"{name}.pem"),
            "--key",
            str(tmp_path / f"{name}.key"),
        ]
    server = SlowTLSServer(ctx, tls_delay=0, upgrade_delay=0)
    url = f"wss://127.0.0.1:{server.port}/"
    try:
        no_cert = run_netkit("ws-client", url, "--cacert", str(ca_file), "--json")
        untrusted = run_netkit("ws-client", url, "--cacert", str(ca_file), *certs["untrusted"])
        # The control: with a certificate it trusts, TLS and the upgrade succeed (this server
        # never answers a close frame, so the closing timeout ends the run).
        trusted = run_netkit(
            "ws-client", url, "--cacert", str(ca_file), *certs["trusted"],
            "--close-timeout", "200ms",
        )  # fmt: skip
    finally:
        server.stop()
    assert no_cert.returncode == 5, no_cert.stderr
    assert_one_line_error(no_cert.stderr)
    alert = "certificate required" if version == "1.3" else "handshake failure"
    assert f"TLS handshake with 127.0.0.1:{server.port} failed" in no_cert.stderr
    assert f"(alert: {alert})" in no_cert.stderr
    assert events_named(no_cert.stdout, "error")[0]["exit_code"] == 5
    assert untrusted.returncode == 5, untrusted.stderr
    assert_one_line_error(untrusted.stderr)
    assert "does not trust the CA of our client certificate (alert: unknown ca)" in untrusted.stderr
    assert trusted.returncode == 4, trusted.stderr
    assert "did not answer our close frame" in trusted.stderr


def test_netkit_ws_server_refusing_a_client_without_certificate_is_exit_5(netkit_server, tls_files):
    # Both ends netkit: ws-server sends the TLS alert (its MemoryBIO layer) and ws-client names it.
    files = tls_files
    server = netkit_server(
        "ws-server", "127.0.0.1:0", "--cert", files["chain"], "--key", files["key"],
        "--client-ca", files["ca"],
    )  # fmt: skip
    refused = run_netkit("ws-client", server.listening["url"], "--cacert", files["ca"], "x")
    admitted = run_netkit(
        "ws-client", server.listening["url"], "--cacert", files["ca"],
        "--cert", files["chain"], "--key", files["key"], "x", "-c", "1",
    )  # fmt: skip
    assert refused.returncode == 5, refused.stderr
    assert_one_line_error(refused.stderr)
    assert "requires a client certificate" in refused.stderr
    assert (admitted.returncode, admitted.stdout.strip()) == (0, "x"), admitted.stderr


def test_tls_options_need_wss(lib_server, tmp_path):
    server = lib_server()
    result = run_netkit("ws-client", server.url(), "x", "--insecure")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "wss://" in result.stderr


def test_unix_socket(lib_server, tmp_path):
    server = lib_server(unix_path=tmp_path / "ws.sock")
    result = run_netkit("ws-client", server.url("/over/unix"), "via unix", "-c", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "via unix\n"
    seen = server.connection()
    assert seen.path == "/over/unix" and seen.request_headers["Host"] == "localhost"


def test_retry_waits_for_the_server(lib_server, tmp_path):
    sock = tmp_path / "late.sock"
    client = subprocess.Popen(
        [*NETKIT, "ws-client", f"ws+unix://{sock}:/", "late", "-c", "1", "--retry", "20s"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The client is retrying (the socket does not exist yet) until this server starts.
        lib_server(unix_path=sock)
        stdout, stderr = client.communicate(timeout=25)
    finally:
        client.kill()
        client.wait()
    assert client.returncode == 0, stderr
    assert stdout == "late\n"


# --- what to send --------------------------------------------------------------------------


def test_binary_file_and_stdin_lines(lib_server, tmp_path):
    server = lib_server()
    payload = tmp_path / "payload.json"
    payload.write_text('{"a": [1, 2]}\n')
    result = run_netkit(
        "ws-client", server.url(), "arg", "--file", str(payload), "-c", "4", "--json",
        input=b"line one\r\nline two",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert server.connection(0).messages == ["arg", '{"a": [1, 2]}\n', "line one", "line two"]
    assert [e["text"] for e in events_named(result.stdout, "sent")] == [
        "arg", '{"a": [1, 2]}\n', "line one", "line two",
    ]  # fmt: skip

    binary = run_with_stdin("ws-client", server.url(), "abc", "-b", "-c", "2", stdin=b"\x00\xff\n")
    assert binary.returncode == 0, binary.stderr
    assert server.connection(1).messages == [b"abc", b"\x00\xff"]
    assert binary.stdout == "[binary, 3 bytes] 61 62 63\n[binary, 2 bytes] 00 ff\n"


def test_binary_messages_are_in_json_events_as_base64(lib_server):
    server = lib_server()
    result = run_with_stdin(
        "ws-client", server.url(), "abc", "-b", "-c", "2", "--json", stdin=b"\x00\xff\n"
    )
    assert result.returncode == 0, result.stderr
    for name in ("sent", "received"):
        events = events_named(result.stdout, name)
        assert [base64.b64decode(e["data"]) for e in events] == [b"abc", b"\x00\xff"], name
        assert all(e["type"] == "binary" and e["encoding"] == "base64" for e in events)
        assert [e["bytes"] for e in events] == [3, 2] and all("text" not in e for e in events)


def test_url_path_and_query_are_percent_encoded(lib_server):
    # As browsers and websocat: UTF-8, then percent-encoded; %XX and reserved characters kept.
    server = lib_server()
    result = run_netkit("ws-client", server.url("/a b/é?x=ü&y=%41/b"), "hi", "-c", "1", "--json")
    assert result.returncode == 0, result.stderr
    # websockets keeps the request target of the request line as it came, undecoded.
    assert server.connection().path == "/a%20b/%C3%A9?x=%C3%BC&y=%41/b"
    (opened,) = events_named(result.stdout, "open")
    assert opened["url"].endswith("/a%20b/%C3%A9?x=%C3%BC&y=%41/b")


def test_raw_binary_output(lib_server, tmp_path):
    server = lib_server()
    blob = bytes(range(256)) * 4
    data = tmp_path / "blob.bin"
    data.write_bytes(blob)
    result = subprocess.run(
        [*NETKIT, "ws-client", server.url(), "--file", str(data), "--binary", "--raw", "-c", "1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == blob
    assert server.connection().messages == [blob]


def test_bad_input_is_a_usage_error(lib_server, tmp_path):
    server = lib_server()
    not_text = tmp_path / "latin1.txt"
    not_text.write_bytes(b"caf\xe9")
    for args in (
        ["--file", str(not_text)],
        ["--file", str(tmp_path / "missing")],
        ["-H", "no colon"],
        ["-H", "Sec-WebSocket-Key: x"],
        ["--subprotocol", "two words"],
        ["--close-code", "1006"],
        ["--expect", "("],
        ["--raw", "--json"],
        ["--max-size", "0"],
    ):
        result = run_netkit("ws-client", server.url(), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert_one_line_error(result.stderr)
    assert server.seen == []  # none of them connected


def test_stdin_line_that_is_not_utf8(lib_server):
    server = lib_server()
    result = run_with_stdin("ws-client", server.url(), "ok", stdin=b"fine\nbad \xff\nnever\n")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert "line 2 of standard input" in result.stderr
    seen = server.connection()
    assert seen.messages == ["ok", "fine"] and seen.close_code == 1000


# --- when to stop --------------------------------------------------------------------------


async def push_three(ws: ServerConnection, seen: Seen) -> None:
    for text in ("first", "second", "third"):
        await ws.send(text)
    async for message in ws:
        seen.messages.append(message)


def test_count_closes_with_close_code(lib_server):
    server = lib_server(push_three)
    result = run_netkit(
        "ws-client", server.url(), "-c", "2", "--close-code", "4001", "--close-reason", "done",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\nsecond\n"
    seen = server.connection()
    assert (seen.close_code, seen.close_reason) == (4001, "done")
    assert '4001 (application) "done"' in result.stderr


def test_count_not_reached_before_clean_close(lib_server):
    async def two_then_close(ws: ServerConnection, seen: Seen) -> None:
        await ws.send("a")
        await ws.send("b")
        await ws.close(1000, "bye")

    server = lib_server(two_then_close)
    result = run_netkit("ws-client", server.url(), "-c", "3", "--json")
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "--count 3: 2 messages received" in result.stderr and "1000" in result.stderr
    (close,) = events_named(result.stdout, "close")
    assert close == {**close, "code": 1000, "reason": "bye", "initiator": "server"}
    (error,) = events_named(result.stdout, "error")
    assert error["exit_code"] == 1


def test_expect_match_exits_early(lib_server):
    server = lib_server(push_three)
    result = run_netkit("ws-client", server.url(), "--expect", "^sec", "--json")
    assert result.returncode == 0, result.stderr
    texts = [e["text"] for e in events_named(result.stdout, "received")]
    assert texts[-1] == "second"
    assert server.connection().close_code == 1000


def test_expect_with_count_fails_after_n_messages(lib_server):
    server = lib_server(push_three)
    result = run_netkit("ws-client", server.url(), "--expect", "third", "-c", "2")
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "in the first 2" in result.stderr
    assert server.connection().close_code == 1000  # closed by us, politely


def test_expect_times_out_with_1(lib_server):
    server = lib_server()
    started = time.monotonic()
    result = run_netkit("ws-client", server.url(), "ping", "--expect", "pong", "--timeout", "0.5s")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "no message matched --expect 'pong' (1 message received) within 0.5s" in result.stderr
    assert result.stdout == "ping\n"
    assert 0.5 <= elapsed < 10
    assert server.connection().close_code == 1000


def test_repeated_expect_waits_for_each_pattern_in_order(lib_server):
    server = lib_server(push_three)  # sends first, second, third, then keeps listening
    ordered = run_netkit(
        "ws-client", server.url(), "--expect", "^first", "--expect", "^third", "--json",
    )  # fmt: skip
    assert ordered.returncode == 0, ordered.stderr
    texts = [e["text"] for e in events_named(ordered.stdout, "received")]
    assert texts == ["first", "second", "third"]
    # The same pattern twice needs two messages: each pattern is waited for.
    twice = run_netkit("ws-client", server.url(), "-e", "^[a-z]", "-e", "^[a-z]", "--json")
    assert twice.returncode == 0, twice.stderr
    assert [e["text"] for e in events_named(twice.stdout, "received")] == ["first", "second"]
    # Out of order: "first" came before "second", so it is never matched after it.
    wrong = run_netkit("ws-client", server.url(), "-e", "^second", "-e", "^first", "-t", "1s")
    assert wrong.returncode == 1, wrong.stderr
    assert_one_line_error(wrong.stderr)
    assert "no message matched --expect '^first' (pattern 2 of 2)" in wrong.stderr


def test_plain_mode_timeout_is_4(lib_server):
    server = lib_server()
    result = run_with_open_stdin(
        "ws-client", server.url(), "echo me", "--timeout", "300ms", "--json"
    )
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result.stderr)
    assert "did not close" in result.stderr
    assert [e["text"] for e in events_named(result.stdout, "received")] == ["echo me"]
    assert server.connection().close_code == 1000


def test_plain_mode_server_closes_cleanly(lib_server):
    async def reply_and_close(ws: ServerConnection, seen: Seen) -> None:
        seen.messages.append(await ws.recv())
        await ws.send("bye now")
        await ws.close(1001, "going away")

    server = lib_server(reply_and_close)
    result = run_with_open_stdin("ws-client", server.url(), "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "bye now\n"
    assert result.stderr.strip() == 'closed: 1001 (going away) "going away"'


# --- failures ------------------------------------------------------------------------------


def test_server_closing_with_1008(lib_server):
    async def policy(ws: ServerConnection, seen: Seen) -> None:
        seen.messages.append(await ws.recv())
        await ws.close(1008, "policy")

    server = lib_server(policy)
    for extra in ([], ["--expect", "never"]):  # a broken connection wins over an expectation
        result = run_with_open_stdin("ws-client", server.url(), "hi", "--json", *extra)
        assert result.returncode == 7, result.stderr
        assert_one_line_error(result.stderr)
        assert '1008 (policy violation) "policy"' in result.stderr
        (close,) = events_named(result.stdout, "close")
        assert close == {**close, "code": 1008, "reason": "policy", "initiator": "server"}
        assert events_named(result.stdout, "error")[0]["exit_code"] == 7


def test_refused_upgrade_reports_the_status(lib_server):
    def forbid(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(http.HTTPStatus.FORBIDDEN, "go away\n")

    server = lib_server(process_request=forbid)
    result = run_netkit("ws-client", server.url(), "x", "--json")
    assert result.returncode == 7, result.stderr
    assert_one_line_error(result.stderr)
    assert "upgrade refused: 403 Forbidden" in result.stderr
    assert events_named(result.stdout, "error")[0]["message"].startswith("upgrade refused: 403")


def test_dropped_connection_is_3(lib_server):
    async def drop(ws: ServerConnection, seen: Seen) -> None:
        seen.messages.append(await ws.recv())
        ws.transport.abort()

    server = lib_server(drop)
    result = run_with_open_stdin("ws-client", server.url(), "x", "--json")
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert "1006" in result.stderr
    (close,) = events_named(result.stdout, "close")
    assert close["code"] == 1006 and close["clean"] is False


def test_message_over_max_size_is_closed_with_1009(lib_server):
    async def big(ws: ServerConnection, seen: Seen) -> None:
        await ws.send("x" * 5000)
        async for message in ws:
            seen.messages.append(message)

    server = lib_server(big)
    result = run_netkit("ws-client", server.url(), "--max-size", "4KiB", "-c", "1")
    assert result.returncode == 7, result.stderr
    assert_one_line_error(result.stderr)
    assert server.connection().close_code == 1009


def test_bad_url_and_refused_connection():
    for url in ("http://127.0.0.1:1/", "ws://", "ws://host:99999/", "127.0.0.1:80"):
        result = run_netkit("ws-client", url, "x")
        assert result.returncode == 2, (url, result.stderr)
        assert_one_line_error(result.stderr)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once this socket is closed
    result = run_netkit("ws-client", f"ws://127.0.0.1:{port}/", "x")
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert "refused" in result.stderr


def test_ctrl_c_closes_with_1001_and_exits_130(lib_server):
    server = lib_server()
    proc = subprocess.Popen(
        [*NETKIT, "ws-client", server.url(), "--json"],
        stdin=subprocess.PIPE,  # left open: the client keeps listening
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the open event (pytest timeout bounds it)
        assert b'"event":"open"' in first
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 130
    rest = json_lines(proc.stdout.read().decode())
    close = next(e for e in rest if e["event"] == "close")
    assert close["code"] == 1001 and close["initiator"] == "client"
    seen = server.connection()
    assert (seen.close_code, seen.close_reason) == (1001, "going away")


# --- output --------------------------------------------------------------------------------


def test_hex_summary():
    assert hex_summary(bytes(20)).endswith("00 ...") and hex_summary(b"") == "[binary, 0 bytes]"
    assert hex_summary(b"hello") == "[binary, 5 bytes] 68 65 6c 6c 6f"


# --- against netkit ws-server --------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_against_netkit_ws_server(netkit_server, compress):
    flags = ["--compress"] if compress else []
    server = netkit_server("ws-server", "ws://127.0.0.1:0/echo", *flags)
    url = server.listening["url"]
    result = run_netkit(
        "ws-client", url, "héllo", "-c", "2", "--json", *flags, input=b"from stdin\n"
    )
    assert result.returncode == 0, result.stderr
    assert [e["text"] for e in events_named(result.stdout, "received")] == ["héllo", "from stdin"]
    (opened,) = events_named(result.stdout, "open")
    assert bool(opened["extensions"]) is compress
    assert server.stop() == 0
    closed = server.event("close")
    assert closed["code"] == 1000 and closed["messages_in"] == 2
    assert server.event("open")["compress"] is compress


def test_netkit_ws_server_refuses_wrong_path(netkit_server):
    server = netkit_server("ws-server", "ws://127.0.0.1:0/only")
    wrong = server.listening["url"].replace("/only", "/other")
    result = run_netkit("ws-client", wrong, "x")
    assert result.returncode == 7, result.stderr
    assert_one_line_error(result.stderr)
    assert "upgrade refused: 404" in result.stderr


def test_keeps_reading_while_its_writes_wait(lib_server, tmp_path):
    # The server reads one message ahead at most (max_queue=1) and stops reading while its
    # echo waits to be written: a client that also stopped reading while its own writes wait
    # would deadlock with it once both directions' socket buffers are full.
    server = lib_server(max_size=None, max_queue=1)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(8 << 20))
    files = [arg for _ in range(8) for arg in ("-f", str(blob))]
    result = subprocess.run(
        [*NETKIT, "ws-client", server.url(), *files, "-b", "--raw", "-c", "8",
         "--max-size", "16MiB", "--ping-interval", "0"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 8 * (8 << 20)
    assert server.connection().close_code == 1000


def test_answers_server_pings(lib_server):
    async def ping_then_report(ws: ServerConnection, seen: Seen) -> None:
        for _ in range(3):
            latency = await asyncio.wait_for(await ws.ping(), 5)
            seen.messages.append(f"rtt {latency:.6f}")
        await ws.send("pings answered")
        async for message in ws:
            seen.messages.append(message)

    server = lib_server(ping_then_report)
    result = run_netkit("ws-client", server.url(), "--expect", "answered", "--timeout", "10s")
    assert result.returncode == 0, result.stderr
    assert len(server.connection().messages) == 3


def test_keepalive_pongs_are_in_json_events(lib_server):
    async def answer_late(ws: ServerConnection, seen: Seen) -> None:
        await asyncio.sleep(0.6)  # a slow reply: the client pings meanwhile
        await ws.send("done")
        async for message in ws:
            seen.messages.append(message)

    server = lib_server(answer_late)
    result = run_netkit(
        "ws-client", server.url(), "--expect", "done", "--ping-interval", "100ms", "--json"
    )
    assert result.returncode == 0, result.stderr
    pongs = events_named(result.stdout, "pong")
    assert len(pongs) >= 2, result.stdout
    assert all(p["keepalive"] is True and 0 < p["rtt_ms"] < 1000 for p in pongs)
    assert result.stdout.index('"pong"') < result.stdout.index('"received"')


class DeafServer:
    """Accepts the upgrade, then ignores every frame; on close it hangs up, or with
    ``hang_up=False`` it keeps the connection open (and silent) until the client drops it."""

    def __init__(self, *, hang_up: bool = True) -> None:
        self.hang_up = hang_up
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.opcodes: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(20)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, data = data.split(b"\r\n\r\n", 1)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            accept = base64.b64encode(hashlib.sha1(key + guid).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            while True:
                # Client frames here are short: 2 header bytes, 4 mask bytes, payload < 126.
                while len(data) < 2 or len(data) < 6 + (data[1] & 0x7F):
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                opcode, size = data[0] & 0x0F, data[1] & 0x7F
                self.opcodes.append(opcode)
                data = data[6 + size :]
                if opcode == 0x8:
                    while not self.hang_up and conn.recv(4096):
                        pass  # never answer, never hang up: wait for the client to drop it
                    return  # hang up without answering the close

    def stop(self) -> None:
        self.sock.close()
        self.thread.join(10)


def test_unanswered_ping_is_4():
    server = DeafServer()
    try:
        result = run_with_open_stdin(
            "ws-client", f"ws://127.0.0.1:{server.port}/", "--json",
            "--ping-interval", "100ms", "--ping-timeout", "200ms",
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result.stderr)
    assert "no pong" in result.stderr
    assert server.opcodes[0] == 0x9 and server.opcodes[-1] == 0x8  # pings, then our close


class StuckServer(ThreadListener):
    """Accepts TCP connections and never sends a byte: no TLS, no HTTP answer."""

    def __init__(self) -> None:
        self.conns: list[socket.socket] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        self.conns.append(conn)

    def stop(self) -> None:
        super().stop()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def stuck_server() -> Iterator[StuckServer]:
    server = StuckServer()
    yield server
    server.stop()


# --- item 4: ending a run in a script ------------------------------------------------------


def test_end_of_stdin_closes_and_exits_0(lib_server):
    # websocat's rule: end of input sends close 1000, prints what still arrives, exits.
    server = lib_server(push_three)  # its three messages come before its answer to our close
    started = time.monotonic()
    result = run_netkit("ws-client", server.url(), input=b"hi\nthere\n", timeout=8)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\nsecond\nthird\n"
    assert result.stderr.strip() == "closed: 1000 (normal closure)"
    assert elapsed < 5
    seen = server.connection()
    assert seen.messages == ["hi", "there"] and seen.close_code == 1000


def test_a_send_only_run_exits_0(lib_server):
    async def sink(ws: ServerConnection, seen: Seen) -> None:
        async for message in ws:
            seen.messages.append(message)

    server = lib_server(sink)
    result = run_netkit("ws-client", server.url(), "one", "two", "--json", timeout=8)
    assert result.returncode == 0, result.stderr
    (close,) = events_named(result.stdout, "close")
    assert close == {**close, "code": 1000, "initiator": "client", "clean": True}
    assert events_named(result.stdout, "received") == []
    seen = server.connection()
    assert seen.messages == ["one", "two"] and seen.close_code == 1000


@pytest.mark.parametrize("hang_up", [True, False])
def test_our_close_unanswered_is_not_a_success(hang_up):
    server = DeafServer(hang_up=hang_up)
    try:
        started = time.monotonic()
        result = run_netkit(
            "ws-client", f"ws://127.0.0.1:{server.port}/", "hi", "--close-timeout", "500ms",
            "--json", timeout=10,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert_one_line_error(result.stderr)
    (close,) = events_named(result.stdout, "close")
    assert close["clean"] is False and close["code"] == 1006
    if hang_up:  # dropped before answering: a lost connection
        assert result.returncode == 3, result.stderr
        assert "lost before the server answered our close (1006)" in result.stderr
    else:  # never answered: the closing timeout passed
        assert result.returncode == 4, result.stderr
        assert "did not answer our close frame within 0.5s" in result.stderr
        assert 0.5 <= elapsed < 5
    assert server.opcodes == [0x1, 0x8]


def test_default_deadlines_end_a_run_that_would_wait_for_ever(lib_server):
    # --count 2 and one reply, no --timeout: replies get 10 s once the input ended.
    server = lib_server()
    started = time.monotonic()
    result = run_netkit("ws-client", server.url(), "only one", "--count", "2", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    assert "--count 2: 1 message received within 10s after the input ended" in result.stderr
    assert result.stdout == "only one\n"
    assert 10 <= elapsed < 20
    assert server.connection().close_code == 1000  # closed by us, politely
    help_text = run_netkit("ws-client", "--help").stdout
    for default in ("--open-timeout 10s", "--close-timeout 10s", "10s for replies"):
        assert default in " ".join(help_text.split()), default


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_timeout_and_open_timeout_bound_the_opening(stuck_server, scheme):
    # The server accepts and never answers: neither the TLS handshake nor the upgrade ends.
    url = f"{scheme}://127.0.0.1:{stuck_server.port}/"
    tls = ["--insecure"] if scheme == "wss" else []
    for args, message in (
        (["-t", "1s"], "was not open within 1s (--timeout)"),
        (["--open-timeout", "500ms"], "timed out"),
    ):
        started = time.monotonic()
        result = run_netkit("ws-client", url, "x", *tls, *args, timeout=8)
        elapsed = time.monotonic() - started
        assert result.returncode == 4, (args, result.stderr)
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert elapsed < 4, (args, elapsed)  # not the fixed 10 s opening of before


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "http://127.0.0.1:1/",
            "expected a ws://, wss:// or ws+unix:// URL here (use ws:// for http://)",
        ),
        ("tcp://127.0.0.1:1", "expected a ws://, wss:// or ws+unix:// URL here"),
    ],
)
def test_a_url_of_another_kind_names_only_the_schemes_ws_client_takes(url, says):
    result = run_netkit("ws-client", url, "x")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert says in result.stderr and "udp" not in result.stderr


def test_a_directory_named_as_the_socket_is_called_a_directory(tmp_path):
    result = run_netkit("ws-client", f"ws+unix://{tmp_path}:/", "x", "-t", "10s")
    assert result.returncode == 3
    assert_one_line_error(result.stderr)
    assert "it is a directory, not a socket" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-H", "a b: c"], "--header 'a b': the name is not an HTTP token"),
        (["-H", "Upgrade: h2c"], "--header Upgrade: netkit sets this header itself"),
        (["--subprotocol", "a b"], "--subprotocol 'a b' is not a valid token"),
        (["--origin", "https://a\nb"], "--origin cannot contain a line break"),
    ],
)
def test_bad_handshake_flags_are_usage_errors_naming_the_flag(flags, message):
    # The checks live in core/ws/client.py, which names settings; the command line shows flags.
    result = run_netkit("ws-client", "ws://127.0.0.1:1/", *flags)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert message in result.stderr
