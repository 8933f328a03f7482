"""A JSON API over HTTP/1.1 on netkit's server lifecycle; httptools parses the requests.

:class:`ApiConnection` is a :class:`~netkit.net.server.ServerConnection` (so a
:class:`~netkit.net.server.StreamServer` accepts, caps, drains and counts API clients as it
does any other): httptools (the C llhttp parser uvicorn uses) reads the requests, an async
handler answers each one, in the order they came (pipelined requests wait their turn), and
keep-alive follows HTTP/1.1. A request that does not parse gets 400 and the connection closes;
a body over :data:`MAX_BODY` gets 413; a handler's :class:`~netkit.core.http_api.ApiError`
becomes its status and toxiproxy's error body, and anything else it raises a 500 with the
error's text: one client's bad request never ends the server or another client's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import httptools

from netkit.core.addresses import UnixEndpoint
from netkit.core.http_api import ApiError, Request, Response
from netkit.net.idle import IdleTimer
from netkit.net.server import EventHook, ServerConnection, StreamServer

MAX_BODY: Final = 1 << 20
"""The largest request body accepted (a populate of thousands of proxies fits)."""
MAX_PENDING: Final = 16
"""Pipelined requests queued on one connection before it stops reading."""
MAX_HEAD: Final = 64 * 1024
"""The most bytes a request's line and headers may take (httptools has no limit of its own)."""
IDLE_TIMEOUT: Final = 60.0
"""Seconds a client may keep a connection without a request (toxiproxy's IdleTimeout)."""

ApiHandler = Callable[[Request], Awaitable[Response]]
"""Answers one request."""


class ApiConnection(ServerConnection):
    """One API client: requests parsed by httptools, answered in order by ``handler``.

    Browsers are refused (403), as toxiproxy refuses them: a page the user visits could
    otherwise drive a loopback API with a simple POST.
    """

    pause_reading_on_backpressure = False  # answers are not views of the receive buffer

    def __init__(self, handler: ApiHandler, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__(max_buffer=64 * 1024)
        self.handler = handler
        self.idle_timeout = idle_timeout
        self._idle: IdleTimer | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._too_large = False
        self._head = 0  # bytes read since the last request head was complete
        self._in_head = True
        self._pending: deque[tuple[Request | Response, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        """httptools: a request begins."""
        self._url, self._headers, self._body, self._too_large = b"", {}, bytearray(), False
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        """httptools: (part of) the request target."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header line (a repeated header keeps its last value)."""
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        """httptools: the head is complete."""
        self._in_head, self._head = False, 0
        # A body announced over the limit is refused before it is sent (chunked bodies are
        # counted as they come).
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            self._too_large = True
            self._queue(ApiError(f"body over {MAX_BODY} bytes", 413).response(), False)

    def on_body(self, body: bytes) -> None:
        """httptools: (part of) the body, de-chunked."""
        if len(self._body) + len(body) > MAX_BODY:
            self._too_large = True
        elif not self._too_large:
            self._body += body

    def on_message_complete(self) -> None:
        """httptools: the request is complete: queue it to be answered in turn."""
        keep_alive = self._parser.should_keep_alive()
        item: Request | Response
        if self._too_large:
            item, keep_alive = ApiError(f"body over {MAX_BODY} bytes", 413).response(), False
        elif self._headers.get("user-agent", "").startswith("Mozilla/"):
            item = ApiError("User agent not allowed", 403).response()
        else:
            url = httptools.parse_url(self._url)
            item = Request(
                self._parser.get_method().decode("ascii"),
                url.path.decode("latin-1"),
                (url.query or b"").decode("latin-1"),
                self._headers,
                bytes(self._body),
            )
        self._queue(item, keep_alive)

    # --- the connection -----------------------------------------------------------------

    def on_connect(self) -> None:
        super().on_connect()
        # A client that holds a connection without asking is closed, as toxiproxy does.
        self._idle = IdleTimer(self.idle_timeout, self._idled)

    def _idled(self) -> None:
        if self._busy:  # a request still being answered is not idleness
            self._idle = IdleTimer(self.idle_timeout, self._idled)
        else:
            self.close()

    def data_ready(self) -> None:
        if self._idle is not None:
            self._idle.touch()
        data = self.rbuf.take()
        if self._closing:
            return
        if self._in_head:
            self._head += len(data)
            if self._head > MAX_HEAD:
                self._queue(ApiError(f"request head over {MAX_HEAD} bytes", 431).response(), False)
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._queue(ApiError("protocol upgrades are not supported", 400).response(), False)
        except httptools.HttpParserError as exc:
            self._queue(ApiError(f"malformed HTTP request: {exc}", 400).response(), False)

    def _queue(self, item: Request | Response, keep_alive: bool) -> None:
        if self._closing:
            return
        if not keep_alive:
            self._closing = True  # nothing after a request that ends the connection
        self._pending.append((item, keep_alive))
        if len(self._pending) >= MAX_PENDING and self.transport is not None:
            self.transport.pause_reading()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._answer_all())

    async def _answer_all(self) -> None:
        while self._pending and not self.closed.done():
            item, keep_alive = self._pending.popleft()
            response = item if isinstance(item, Response) else await self._answer(item)
            if self.transport is None or self.transport.is_closing():
                return
            self.write(response.serialize(keep_alive=keep_alive))
            if self._idle is not None:
                self._idle.touch()
            if not keep_alive:
                self.close()
                return
            if len(self._pending) < MAX_PENDING // 2:
                self.transport.resume_reading()
        if self._closing and not self.closed.done():
            self.close()  # the client half-closed, or the server drains: all is answered

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except ApiError as exc:
            return exc.response()
        except Exception as exc:  # a bug answers 500 and the server goes on serving
            return ApiError(f"{type(exc).__name__}: {exc}", 500).response()

    @property
    def _busy(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def on_eof(self) -> bool | None:
        # Answer what was asked before the client half-closed, then close.
        self._closing = True
        return self._busy or None

    def begin_drain(self) -> None:
        self._closing = True
        if not self._busy:
            self.close()

    def on_close(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._busy:
            assert self._worker is not None
            self._worker.cancel()
        super().on_close(exc)


def api_connection(handler: ApiHandler) -> Callable[[], ApiConnection]:
    """The connection factory for a :class:`~netkit.net.server.StreamServer` serving ``handler``."""
    return lambda: ApiConnection(handler)


@contextlib.asynccontextmanager
async def serving_api(
    sock: socket.socket, handler: ApiHandler, *, on_event: EventHook | None = None
) -> AsyncIterator[StreamServer]:
    """Serve ``handler`` on ``sock`` while inside (beside a command's own server, in its
    loop); drain the API's clients on the way out.

    Args:
        on_event: the API server's own events (clients connecting, refused).
    """
    name = sock.getsockname() if sock.family == socket.AF_UNIX else None
    unix = UnixEndpoint(name) if isinstance(name, str) and name else None  # removed at the end
    server = StreamServer(sock, api_connection(handler), on_event=on_event, unix_endpoint=unix)
    server.start()
    try:
        yield server
    finally:
        server.close_listener()
        await server.drain(1.0)
        await server.close()
