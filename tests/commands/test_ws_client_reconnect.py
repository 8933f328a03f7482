"""ws-client --reconnect, --proxy and -L end to end: the CLI as a subprocess against
``netkit ws-server``, a CONNECT proxy and a redirecting HTTP server written here (threads on
loopback), all real sockets."""

from __future__ import annotations

import base64
import contextlib
import itertools
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.commands.conftest import (
    NETKIT,
    ServerProcess,
    assert_one_line_error,
    json_lines,
    run_netkit,
)
from tests.commands.test_ws_client import LibServer, Seen
from tests.net.conftest import ThreadListener

pytestmark = pytest.mark.timeout(60)


RECONNECT = ("--reconnect", "--reconnect-delay", "50ms", "--reconnect-max-delay", "200ms")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- reconnect -------------------------------------------------------------------------------


def test_reconnect_across_a_server_restart_on_the_same_port(netkit_server: Any) -> None:
    server = netkit_server("ws-server", "127.0.0.1:0")
    port = server.address.rpartition(":")[2]
    client = client_process(f"ws://127.0.0.1:{port}/", "--count", "2", *RECONNECT)
    stdin = client.proc.stdin
    assert stdin is not None
    try:
        client.wait_for("open")
        stdin.write(b"one\n")
        stdin.flush()
        assert client.wait_for("received")["text"] == "one"
        assert server.stop() == 0  # ws-server says 1001 going away to its client
        closed = client.wait_for("reconnect")
        assert (closed["attempt"], closed["reason"]) == (1, "closed")
        assert "1001" in closed["error"]
        refused = client.wait_for("reconnect")  # nobody listens while it is down
        assert (refused["attempt"], refused["reason"]) == (2, "refused")
        assert 0 < refused["delay_s"] <= 0.2
        netkit_server("ws-server", f"127.0.0.1:{port}")
        client.wait_for("open")
        stdin.write(b"two\n")
        stdin.close()
        assert client.wait_exit() == 0, client.stderr_text()
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
            client.wait_exit()
    received = [e["text"] for e in client.events if e["event"] == "received"]
    sent = [e["text"] for e in client.events if e["event"] == "sent"]
    assert received == ["one", "two"] and sent == ["one", "two"]  # "one" acknowledged: not resent


def client_process(*args: str, stdin: int = subprocess.PIPE) -> ServerProcess:
    """``netkit ws-client ARGS --json`` running, its events read as they come."""
    proc = subprocess.Popen(
        [*NETKIT, "ws-client", *args, "--json"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return ServerProcess(proc, {})


def test_reconnect_waits_out_a_full_server(netkit_server: Any) -> None:
    # ws-server at --max-connections answers 503: "unavailable", tried again until a slot frees.
    server = netkit_server("ws-server", "127.0.0.1:0", "--max-connections", "1")
    url = f"ws://{server.address}/"
    holder = client_process(url)
    waiter: ServerProcess | None = None
    try:
        holder.wait_for("open")
        waiter = client_process(url, "hi", "--count", "1", *RECONNECT, stdin=subprocess.DEVNULL)
        event = waiter.wait_for("reconnect")
        assert (event["reason"], event["attempt"]) == ("unavailable", 1)
        assert "503" in event["error"]
        assert holder.proc.stdin is not None
        holder.proc.stdin.close()  # the holder leaves: its slot frees
        assert holder.wait_exit() == 0
        assert waiter.wait_exit() == 0, waiter.stderr_text()
        assert [e["text"] for e in waiter.events if e["event"] == "received"] == ["hi"]
    finally:
        for client in (holder, waiter):
            if client is not None and client.proc.poll() is None:
                client.proc.kill()
                client.wait_exit()


def test_reconnect_attempts_used_up_exit_like_a_plain_failure() -> None:
    url = f"ws://127.0.0.1:{free_port()}/"
    plain = run_netkit("ws-client", url, "hi")
    assert plain.returncode == 3
    tried = run_netkit(
        "ws-client", url, "hi", "--json", "--reconnect-attempts", "3", "--reconnect-delay", "10ms"
    )
    assert tried.returncode == 3, tried.stderr
    assert_one_line_error(tried.stderr)
    events = [e for e in json_lines(tried.stdout) if e["event"] == "reconnect"]
    assert [e["attempt"] for e in events] == [1, 2, 3]
    assert {e["reason"] for e in events} == {"refused"}
    assert {e["max_attempts"] for e in events} == {3}
    assert all(0.005 <= e["delay_s"] <= 0.04 for e in events)  # jittered, doubling, 10ms first
    human = run_netkit(
        "ws-client", url, "hi", "--reconnect-attempts", "1", "--reconnect-delay", "10ms"
    )
    assert human.returncode == 3
    lines = human.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in human.stderr
    assert (
        lines[0].startswith("reconnecting in 0.0")
        and "(attempt 1 of 1): connection refused" in lines[0]
    )
    assert lines[1].startswith("netkit: error: connection refused")


def test_reconnect_does_not_retry_what_another_try_cannot_cure(netkit_server: Any) -> None:
    server = netkit_server("ws-server", "ws://127.0.0.1:0/only")
    port = server.address.rpartition(":")[2]
    result = run_netkit("ws-client", f"ws://127.0.0.1:{port}/other", "hi", "--reconnect", "--json")
    assert result.returncode == 7  # 404: the same answer every time
    assert not [e for e in json_lines(result.stdout) if e["event"] == "reconnect"]


def drop_first_on_b() -> Callable[[Any, Seen], Awaitable[None]]:
    """Echo, but drop the first connection (no close frame) when "b" arrives, unanswered."""
    connections = itertools.count()

    async def handler(ws: Any, seen: Seen) -> None:
        first = next(connections) == 0
        async for message in ws:
            seen.messages.append(message)
            if first and message == "b":
                ws.transport.abort()
                return
            # Once the client's close has arrived send() raises: keep reading what came before.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(message)

    return handler


@pytest.mark.parametrize(
    ("policy", "second", "resent", "dropped"),
    [("none", ["c"], 0, 1), ("unacknowledged", ["b", "c"], 1, 0), ("all", ["a", "b", "c"], 2, 0)],
)
def test_resend_policy_after_a_drop(
    policy: str, second: list[str], resent: int, dropped: int
) -> None:
    # "a" is acknowledged by its echo, "b" is not: the server drops the connection on it.
    server = LibServer(drop_first_on_b())
    client = client_process(server.url(), "--resend", policy, *RECONNECT)
    stdin = client.proc.stdin
    assert stdin is not None
    try:
        client.wait_for("open")
        stdin.write(b"a\n")
        stdin.flush()
        assert client.wait_for("received")["text"] == "a"
        stdin.write(b"b\n")
        stdin.flush()
        event = client.wait_for("reconnect")
        assert (event["reason"], event["resent"], event["unacknowledged_dropped"]) == (
            "dropped",
            resent,
            dropped,
        )
        client.wait_for("open")
        stdin.write(b"c\n")
        stdin.close()
        assert client.wait_exit() == 0, client.stderr_text()
        assert server.connection(0).messages == ["a", "b"]
        assert server.connection(1).messages == second
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
            client.wait_exit()
        server.stop()


# --- an HTTP CONNECT proxy ------------------------------------------------------------------


class ConnectProxy(ThreadListener):
    """A minimal HTTP CONNECT proxy in threads: optional basic auth, a filter on targets."""

    def __init__(
        self, *, credentials: str | None = None, allow: Callable[[str], bool] | None = None
    ):
        self.credentials = credentials
        self.allow = allow or (lambda target: True)
        self.requests: list[tuple[str, str | None]] = []
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve_tunnel, args=(conn,), daemon=True).start()

    def _serve_tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(1)  # one byte at a time: nothing after the head is taken
                if not chunk:
                    return
                head += chunk
            lines = head.decode().split("\r\n")
            target = lines[0].split(" ")[1]
            auth = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in lines[1:]
                    if line.lower().startswith("proxy-authorization:")
                ),
                None,
            )
            self.requests.append((target, auth))
            if (
                self.credentials is not None
                and auth != "Basic " + base64.b64encode(self.credentials.encode()).decode()
            ):
                conn.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n"
                )
                return
            if not self.allow(target):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port))) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pump = threading.Thread(target=self._pump, args=(upstream, conn), daemon=True)
                pump.start()
                self._pump(conn, upstream)
                pump.join(10)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., ConnectProxy]]:
    made: list[ConnectProxy] = []

    def make(**kwargs: Any) -> ConnectProxy:
        made.append(ConnectProxy(**kwargs))
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()


def test_proxy_tunnels_ws_with_basic_auth(netkit_server: Any, proxy_factory: Any) -> None:
    server = netkit_server("ws-server", "127.0.0.1:0")
    proxy = proxy_factory(credentials="al ice:s3cret")
    url = proxy.url.replace("http://", "http://al%20ice:s3cret@")
    result = run_netkit("ws-client", f"ws://{server.address}/", "through", "--proxy", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "through\n"
    assert proxy.requests[0][0] == server.address


def test_proxy_tunnels_tls_to_the_server(
    netkit_server: Any, proxy_factory: Any, tls_files: Any
) -> None:
    server = netkit_server(
        "ws-server", "127.0.0.1:0", "--cert", tls_files["chain"], "--key", tls_files["key"]
    )
    proxy = proxy_factory()
    port = server.address.rpartition(":")[2]
    result = run_netkit(
        "ws-client",
        f"wss://localhost:{port}/",
        "secret",
        "--proxy",
        proxy.url,
        "--cacert",
        tls_files["ca"],
        "--json",
    )
    assert result.returncode == 0, result.stderr
    opened = next(e for e in json_lines(result.stdout) if e["event"] == "open")
    assert opened["tls"] is True
    assert proxy.requests == [(f"localhost:{port}", None)]


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"credentials": "u:p"}, "407 Proxy Authentication Required"),
        ({"allow": lambda t: False}, "403 Forbidden"),
    ],
)
def test_proxy_refusal_is_a_clear_exit_3(
    proxy_factory: Any, kwargs: dict[str, Any], said: str
) -> None:
    proxy = proxy_factory(**kwargs)
    result = run_netkit("ws-client", "ws://127.0.0.1:9/", "x", "--proxy", proxy.url, "--reconnect")
    assert result.returncode == 3
    assert f"refused CONNECT to 127.0.0.1:9: {said}" in result.stderr
    assert "--proxy" in result.stderr or "403" in said  # the 407 hint names the flag
    assert "Traceback" not in result.stderr
    assert len(proxy.requests) == 1  # a refusal is not retried


def test_proxy_down_names_the_proxy() -> None:
    result = run_netkit(
        "ws-client", "ws://127.0.0.1:9/", "x", "--proxy", f"http://127.0.0.1:{free_port()}"
    )
    assert result.returncode == 3
    assert_one_line_error(result.stderr)
    assert "proxy" in result.stderr


# --- redirects -------------------------------------------------------------------------------


class Redirector(ThreadListener):
    """An HTTP server answering each path with a redirect from ``routes`` (path -> Location)."""

    def __init__(self, routes: dict[str, str], status: int = 302):
        self.routes = routes
        self.status = status
        self.seen: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                head += chunk
            path = head.split(b" ")[1].decode()
            self.seen.append(path)
            location = self.routes[path].replace("PORT", str(self.port))
            conn.sendall(
                f"HTTP/1.1 {self.status} Moved\r\nLocation: {location}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )


def test_location_follows_redirects_to_the_server(netkit_server: Any) -> None:
    server = netkit_server("ws-server", "ws://127.0.0.1:0/echo")
    redirector = Redirector({"/a": "/b", "/b": f"http://{server.address}/echo"}, status=307)
    try:
        url = f"ws://127.0.0.1:{redirector.port}/a"
        refused = run_netkit("ws-client", url, "x")
        assert refused.returncode == 7 and "307" in refused.stderr
        result = run_netkit("ws-client", url, "hello", "-L", "--json")
        assert result.returncode == 0, result.stderr
        events = json_lines(result.stdout)
        hops = [(e["status"], e["location"]) for e in events if e["event"] == "redirect"]
        assert hops == [
            (307, f"ws://127.0.0.1:{redirector.port}/b"),
            (307, f"ws://{server.address}/echo"),
        ]
        assert next(e for e in events if e["event"] == "received")["text"] == "hello"
        assert (
            next(e for e in events if e["event"] == "open")["url"] == f"ws://{server.address}/echo"
        )
    finally:
        redirector.stop()


def test_location_stops_a_redirect_loop() -> None:
    redirector = Redirector({"/a": "/b", "/b": "ws://127.0.0.1:PORT/a"})
    try:
        result = run_netkit("ws-client", f"ws://127.0.0.1:{redirector.port}/a", "x", "-L")
        assert result.returncode == 7
        assert_one_line_error(result.stderr)
        assert "redirect loop" in result.stderr
        assert redirector.seen == ["/a", "/b"]
        limited = run_netkit(
            "ws-client", f"ws://127.0.0.1:{redirector.port}/a", "x", "-L", "--max-redirects", "0"
        )
        assert limited.returncode == 7 and "more than 0 redirects" in limited.stderr
        assert "--max-redirects" in limited.stderr
    finally:
        redirector.stop()


def test_script_through_a_proxy_and_not_with_reconnect(
    netkit_server: Any, proxy_factory: Any, tmp_path: Any
) -> None:
    script = tmp_path / "talk.yaml"
    script.write_text('steps:\n  - send: "hi"\n  - expect: "^hi$"\n')
    server = netkit_server("ws-server", "127.0.0.1:0")
    proxy = proxy_factory()
    url = f"ws://{server.address}/"
    result = run_netkit("ws-client", url, "--script", str(script), "--proxy", proxy.url)
    assert result.returncode == 0, result.stderr
    assert [target for target, _ in proxy.requests] == [server.address]
    refused = run_netkit("ws-client", url, "--script", str(script), "--reconnect")
    assert refused.returncode == 2
    assert "--script cannot be used with --reconnect" in refused.stderr
