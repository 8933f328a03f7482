"""Fixtures for the I/O layer: event loops (asyncio and uvloop) and trustme certificates."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import resource
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from netkit.core.ws.handshake import accept_key

T = TypeVar("T")

# Every coroutine a test runs is bounded by this; pytest-timeout (60 s) is the backstop.
ASYNC_TEST_TIMEOUT = 10.0

Runner = Callable[[Coroutine[Any, Any, T]], T]
# serve(factory, **options) -> an async context manager yielding a ServerHarness
Serve = Callable[..., Any]


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop  # type: ignore[no-any-return]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    """Run a coroutine to completion on a fresh loop of each kind, bounded in time."""
    factory = _uvloop_factory() if request.param == "uvloop" else None

    def run(coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(ASYNC_TEST_TIMEOUT):
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    return run


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate for every loopback name."""
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files on disk, as a user would pass them on the command line."""

    ca: Path
    cert: Path
    key: Path
    chain: Path  # key and certificate in one file


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert) -> TLSFiles:
    """The CA, the server certificate and key, each in its own file (and a combined one)."""
    files = TLSFiles(
        ca=tmp_path / "ca.pem",
        cert=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        chain=tmp_path / "chain.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    for blob in server_cert.cert_chain_pems:
        blob.write_to_path(str(files.cert), append=True)
    server_cert.private_key_pem.write_to_path(str(files.key))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(files.chain))
    return files


@pytest.fixture
def server_ssl(ca: trustme.CA, server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server context with the trustme certificate (built without netkit, for reference)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the trustme CA (built without netkit, for reference)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


@dataclass(frozen=True)
class HandshakeResult:
    """What the client saw of a completed handshake."""

    version: str | None
    data: bytes
    peer_cert: dict[str, Any] | None


Handshake = Callable[..., HandshakeResult]


@pytest.fixture
def tls_handshake() -> Handshake:
    """Run a real TLS handshake over a socketpair; the server side runs in a thread.

    Returns the client's view (version, a few bytes the server sent, the peer certificate);
    the client's ``ssl.SSLError`` propagates when the handshake fails.
    """
    import threading

    def handshake(
        server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext,
        server_hostname: str | None = "localhost",
    ) -> HandshakeResult:
        import socket

        a, b = socket.socketpair()
        a.settimeout(5)
        b.settimeout(5)

        def serve() -> None:
            try:
                with server_ctx.wrap_socket(a, server_side=True) as s:
                    s.sendall(b"ok")
                    s.recv(1)  # wait for the client to close
            except (OSError, ValueError):
                pass  # the client's exception is what the test checks
            finally:
                a.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
                data = b""
                while len(data) < 2:
                    chunk = c.recv(2 - len(data))
                    if not chunk:
                        break
                    data += chunk
                return HandshakeResult(c.version(), data, c.getpeercert())
        finally:
            b.close()
            thread.join(5)
            assert not thread.is_alive()

    return handshake


def ipv6_loopback_available() -> bool:
    """True when ::1 can be bound (there are CI containers without IPv6)."""
    import socket

    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def ipv6() -> None:
    """Skip the test when IPv6 loopback is unavailable."""
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available here")


def switching_protocols(head: bytes) -> bytes:
    """A server's 101 answer to the upgrade request ``head`` (for servers written by hand)."""
    key = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )


# --- a stream server running inside the test's event loop --------------------------------


class ThreadListener:
    """A loopback listener whose thread hands each accepted connection to :meth:`handle`,
    one at a time; :meth:`stop` ends it."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.sock.close()
        self.thread.join(10)


class EventLog:
    """The events a server reported through ``on_event``, and a way to wait for them.

    Attributes:
        events: every (name, fields) reported, in order.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def record(self, name: str, fields: dict[str, Any]) -> None:
        self.events.append((name, fields))
        self._changed.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        """The fields of every event called ``name``, in order."""
        return [fields for event, fields in self.events if event == name]

    async def wait_events(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events called ``name`` were reported."""
        while len(self.named(name)) < count:
            self._changed.clear()
            await self._changed.wait()
        return self.named(name)


class ServerHarness(EventLog):
    """A StreamServer listening on loopback (or a Unix socket), with clients that are cleaned up.

    Attributes:
        server: the running :class:`netkit.net.server.StreamServer`.
        endpoint: where clients connect.
        events: every (name, fields) the server reported through ``on_event``.
    """

    def __init__(self, server: Any, endpoint: Any) -> None:
        super().__init__()
        self.server = server
        self.endpoint = endpoint
        self.clients: list[Any] = []

    async def connect(self, factory: Any = None, **kwargs: Any) -> Any:
        """Open a client connection to the server (an EchoClientConnection by default)."""
        from netkit.net.connect import open_stream
        from netkit.net.echo import EchoClientConnection

        conn = await open_stream(self.endpoint, factory or EchoClientConnection, **kwargs)
        self.clients.append(conn)
        return conn


@pytest.fixture
def serve() -> Serve:
    """``async with serve(factory, **server_options) as harness:`` runs a StreamServer.

    Options: ``endpoint`` (default 127.0.0.1:0), ``listener_options`` (SocketOptions), and
    anything StreamServer takes. On exit every client is aborted and the server drained.
    """
    import contextlib

    from netkit.core.addresses import TCPEndpoint, UnixEndpoint
    from netkit.net.server import StreamServer, make_listener
    from netkit.net.sockets import SocketOptions

    @contextlib.asynccontextmanager
    async def serve(
        factory: Callable[[], Any],
        *,
        endpoint: Any = None,
        listener_options: SocketOptions | None = None,
        **server_options: Any,
    ) -> Any:
        endpoint = endpoint or TCPEndpoint("127.0.0.1", 0)
        sock = make_listener(endpoint, options=listener_options or SocketOptions())
        if isinstance(endpoint, UnixEndpoint):
            server_options.setdefault("unix_endpoint", endpoint)
            target = endpoint
        else:
            host, port = sock.getsockname()[:2]
            target = TCPEndpoint(host, port)
        server = StreamServer(sock, factory, **server_options)
        harness = ServerHarness(server, target)
        user_hook = server.on_event

        def on_event(name: str, fields: dict[str, Any]) -> None:
            harness.record(name, fields)
            if user_hook is not None:
                user_hook(name, fields)

        server.on_event = on_event
        server.start()
        try:
            yield harness
        finally:
            for client in harness.clients:
                client.abort()
            pending = [c.closed for c in harness.clients if not c.closed.done()]
            if pending:
                await asyncio.wait(pending, timeout=2)
            if not server.draining:
                await server.drain(0)
            server.close_listener()

    return serve


# --- running out of descriptors ------------------------------------------------------------


@contextlib.contextmanager
def descriptor_limit(free: int) -> Iterator[None]:
    """Lower this process's RLIMIT_NOFILE so that only ``free`` more descriptors can be opened.

    The soft limit is a bound on descriptor numbers, so it is set just above the ``free``-th
    unused number; the old limit is restored on exit (descriptors opened meanwhile stay).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    gc.collect()  # sockets of earlier tests waiting for the collector would free numbers later
    used = {int(name) for name in os.listdir("/proc/self/fd")}
    used -= {fd for fd in used if not _is_open(fd)}  # the listing's own, closed by now
    limit, left = 0, free
    while left or limit in used:
        if limit not in used:
            left -= 1
        limit += 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def hog_descriptors() -> list[int]:
    """Open descriptors until the process has none left; close them to give them back."""
    fds: list[int] = []
    while True:
        try:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                return fds
            raise
