"""The server side of a WebSocket connection, sans-I/O (RFC 6455 4.2, then sections 5-7).

:class:`ServerHandshake` is the policy (paths, origins, subprotocols, compression, the health
path); it reads a request and decides the answer (:class:`Accepted`, :class:`HealthCheck`,
:class:`Rejected`). :class:`ServerProtocol` runs it and then speaks WebSocket::

    proto = ServerProtocol(ServerHandshake(paths={"/chat"}, origins=parse_origins(["*"])))
    proto.receive_data(data)
    for event in proto.events_received(): ...  # Accepted/HealthCheck/Rejected, then Message ...
    send(proto.data_to_send())
    if proto.answered: the HTTP answer is out (no upgrade): close once the client read it
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from netkit.core.addresses import WSURL, TCPEndpoint, UnixEndpoint, parse_endpoint
from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.deflate import (
    DeflateParams,
    ExtensionParams,
    accept_offer,
)
from netkit.core.ws.events import Accepted, HealthCheck, Rejected, Request
from netkit.core.ws.frames import Side
from netkit.core.ws.handshake import WS_VERSION, accept_key, valid_key
from netkit.core.ws.http import (
    Headers,
    HeadTooLarge,
    InvalidHandshake,
    http_response,
    not_a_request,
    parse_extension_header,
    read_head,
    tls_hint,
)
from netkit.core.ws.protocol import Protocol, State
from netkit.errors import ConfigError, EndpointError, LocalProtocolError, Setting, Words, words

PATH, ORIGIN = Setting("path"), Setting("origin")

# --- Server side -------------------------------------------------------------------------


ServerResult = Accepted | HealthCheck | Rejected

_REASONS: Final = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
# The methods a WebSocket endpoint (and /health) answers; others get 405 with this Allow.
ALLOWED_METHODS: Final = ("GET", "HEAD")


def _reject(
    status: int,
    message: str,
    request: Request | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Rejected:
    body = f"{status} {_REASONS[status]}: {message}\n".encode()
    response = http_response(
        status,
        _REASONS[status],
        [*headers, ("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
        body,
    )
    return Rejected(status, message, response, request)


def unavailable(message: str) -> Rejected:
    """The answer to a client the server cannot take now: 503 with ``Retry-After: 1``.

    Sent when the server is over its connection limit or shutting down, as websocketd and
    HAProxy answer, rather than a bare TCP close the client cannot tell from a crash.
    """
    return _reject(503, message, headers=[("Retry-After", "1")])


def head_only(result: ServerResult) -> ServerResult:
    """The answer to a ``HEAD`` request: the same head as for ``GET``, without the body.

    ``Content-Length`` stays that of the ``GET`` answer (RFC 9110 9.3.2).
    """
    if isinstance(result, Accepted):
        raise LocalProtocolError("a HEAD request is never upgraded")
    head, _, _ = result.response.partition(b"\r\n\r\n")
    return dataclasses.replace(result, response=head + b"\r\n\r\n")


def resource_path(text: str, *, option: Words = PATH) -> str:
    """A path to serve WebSocket on, as the request target will carry it: ``chat`` -> ``/chat``.

    A missing leading slash is added, as nginx's ``location`` and websocketd do.

    Raises:
        ConfigError: the path holds a query, a fragment, spaces or control characters (a
            request path is compared without its query, so such a path would never match).
    """
    if any(ch in "?#" or ch.isspace() or not ch.isprintable() for ch in text):
        raise ConfigError(
            words(
                option,
                f" {text!r}: give a path without spaces, query (?) or fragment (#), e.g. /chat",
            )
        )
    return text if text.startswith("/") else "/" + text


def listen_address(text: str) -> tuple[TCPEndpoint | UnixEndpoint, bool, str | None]:
    """Where a server given ``text`` listens, whether it asked for TLS, and the path it named.

    ``text`` is an endpoint (``HOST:PORT``, ``unix:/path``) or a URL (``ws://HOST:PORT/chat``,
    ``wss://...``, ``ws+unix:///path.sock:/chat``); a URL's path (without its query) is the
    one path to serve, none when it is ``/``.

    Raises:
        EndpointError: ``text`` is neither (a UDP endpoint, say).
    """
    endpoint = parse_endpoint(text)
    if isinstance(endpoint, WSURL):
        path = endpoint.resource.partition("?")[0]
        return endpoint.transport, endpoint.secure, None if path == "/" else path
    if isinstance(endpoint, TCPEndpoint | UnixEndpoint):
        return endpoint, False, None
    raise EndpointError(f"endpoint {text!r}: expected HOST:PORT, unix:/path or a ws:// URL here")


def server_url(address: str, secure: bool, resource: str = "/") -> str:
    """The URL clients use to reach a server listening on ``address`` (``HOST:PORT`` or
    ``unix:/path``), e.g. ``ws://127.0.0.1:8765/chat`` or ``ws+unix:///tmp/s.sock:/chat``."""
    scheme = "wss" if secure else "ws"
    if address.startswith("unix:"):
        return f"{scheme}+unix://{address[5:]}:{resource}"
    return f"{scheme}://{address}{resource}"


_ORIGIN_RE: Final = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9._~%-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)
_DEFAULT_PORTS: Final = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def parse_origin(text: str, *, option: Words = ORIGIN) -> str | None:
    """One allowed ``Origin``, as a browser sends it (RFC 6454 6.2); ``none`` for no header.

    Browsers send ``scheme://host[:port]`` in lower case without the default port, or
    ``null`` for an opaque origin; the value is normalised to that, so that it compares
    equal to what they send.

    Returns:
        The origin, or None for ``none`` (a client that sends no Origin: not a browser).

    Raises:
        ConfigError: no browser sends such an Origin (a path, a missing scheme ...).
    """
    if text.lower() == "none":
        return None
    if text == "null":
        return text
    match = _ORIGIN_RE.fullmatch(text)
    if match is None or int(match["port"] or 0) > 65535:
        raise ConfigError(
            words(
                option,
                f" {text!r}: browsers send an origin as scheme://host[:port] "
                "(no path, e.g. https://example.com); or give '*' (any) or 'none' (no Origin "
                "header)",
            )
        )
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{int(port)}"
    return f"{scheme}://{host}"


def parse_origins(values: Sequence[str], *, option: Words = ORIGIN) -> set[str | None] | None:
    """The ``origins`` of a :class:`ServerHandshake` from ``--origin`` values.

    ``*`` admits every client (no check at all, as when no value is given); ``none`` admits
    clients that send no Origin (websockets' ``origins=[None]``); other values must be origins
    a browser can send (:func:`parse_origin`).

    Returns:
        The allowed origins (None among them for ``none``), or None for no check.
    """
    if not values or "*" in values:
        return None
    return {parse_origin(value, option=option) for value in values}


@dataclass
class ServerHandshake:
    """Reads a client's upgrade request and decides the answer (4.2).

    Subprotocols are chosen by the server's preference, as websockets does: the first of
    ``subprotocols`` that the client offered, whatever the client's order. No overlap means no
    subprotocol (the connection still opens; the client decides whether to go on).

    Args:
        paths: accepted request paths (query ignored), None for any (else 404).
        origins: accepted ``Origin`` values, None for any (else 403); include None in the
            collection to accept requests without an Origin header.
        subprotocols: subprotocols we speak, in our order of preference.
        deflate: permessage-deflate preferences, or None to refuse compression.
        health_path: a plain ``GET`` of this path without Upgrade gets :class:`HealthCheck`;
            None disables it.
        extra_headers: more header lines for the 101 response.
    """

    paths: Collection[str] | None = None
    origins: Collection[str | None] | None = None
    subprotocols: Sequence[str] = ()
    deflate: DeflateParams | None = None
    health_path: str | None = "/health"
    extra_headers: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def receive_request(self, buf: ReceiveBuffer) -> ServerResult | None:
        """Read the request from ``buf`` and decide; None while the request is incomplete.

        On success the request head is consumed; frames the client sent early stay in ``buf``.

        Returns:
            :class:`Accepted`, :class:`HealthCheck` or :class:`Rejected` (each with the bytes
            to send), or None.
        """
        if not_a_request(buf):
            # E.g. a TLS ClientHello (16 03 01 ...) sent to a plain server: answered at once,
            # not when a line end comes (it may never come).
            return _reject(400, "not an HTTP request" + tls_hint(buf))
        try:
            head = read_head(buf)
        except HeadTooLarge as exc:
            # Header section: 431 (RFC 6585 5), as Node's http server answers; a request
            # line too long stays 400. The limits are websockets'.
            return _reject(431 if exc.in_headers else 400, f"request head: {exc}")
        except InvalidHandshake as exc:
            return _reject(400, str(exc))
        if head is None:
            return None
        start, headers = head
        parts = start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _reject(400, f"not an HTTP request line: {start[:80]!r}")
        method, target, version = parts
        request = Request(method, target, version, headers)
        try:
            return self._decide(request)
        except InvalidHandshake as exc:
            return _reject(400, str(exc), request)

    def _decide(self, request: Request) -> ServerResult:
        headers = request.headers
        health = self.health_path is not None and request.path == self.health_path
        if request.method not in ALLOWED_METHODS:
            if not health and self.paths is not None and request.path not in self.paths:
                return _reject(404, f"no WebSocket endpoint at {request.path}", request)
            # RFC 9110 15.5.6: the method is known but not served here; Allow says which are.
            return _reject(
                405,
                f"method {request.method} not allowed on {request.path}",
                request,
                [("Allow", ", ".join(ALLOWED_METHODS))],
            )
        if request.version not in ("HTTP/1.1", "HTTP/1.0"):
            return _reject(400, f"unsupported {request.version}", request)
        if request.method == "HEAD":
            # Answered as GET without a body; a HEAD request is never upgraded.
            try:
                return head_only(self._answer(request, health, upgrade=[]))
            except InvalidHandshake as exc:
                return head_only(_reject(400, str(exc), request))
        return self._answer(request, health, [t.lower() for t in headers.tokens("Upgrade")])

    def _answer(self, request: Request, health: bool, upgrade: list[str]) -> ServerResult:
        headers = request.headers
        if health and not upgrade:
            return HealthCheck(
                request,
                http_response(
                    200,
                    "OK",
                    [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
                    b"ok\n",
                ),
            )
        if self.paths is not None and request.path not in self.paths:
            return _reject(404, f"no WebSocket endpoint at {request.path}", request)
        # 4.2.1: the client's request, points 2-6.
        if request.version != "HTTP/1.1":
            return _reject(400, "WebSocket needs HTTP/1.1", request)
        if "websocket" not in upgrade:
            # RFC 7231 6.5.15: 426 names the protocol to upgrade to.
            return _reject(426, "missing Upgrade: websocket", request, [("Upgrade", "websocket")])
        if "upgrade" not in (t.lower() for t in headers.tokens("Connection")):
            return _reject(400, "missing Connection: Upgrade", request)
        if headers.get("Host") is None:
            return _reject(400, "missing Host header", request)
        version = headers.get("Sec-WebSocket-Version")
        if version != WS_VERSION:
            # 4.4: say which versions we speak.
            return _reject(
                426,
                f"unsupported Sec-WebSocket-Version {version!r}",
                request,
                [("Sec-WebSocket-Version", WS_VERSION)],
            )
        key = headers.get("Sec-WebSocket-Key")
        if key is None or not valid_key(key):
            return _reject(400, f"invalid Sec-WebSocket-Key {key!r}", request)
        if self.origins is not None:
            origin = headers.get("Origin")
            if origin not in self.origins:
                return _reject(403, f"origin {origin!r} not allowed", request)
        subprotocol = self._select_subprotocol(headers)
        deflate = self._select_deflate(headers)
        response_headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
        if subprotocol is not None:
            response_headers.append(("Sec-WebSocket-Protocol", subprotocol))
        if deflate is not None:
            response_headers.append(("Sec-WebSocket-Extensions", deflate.response()))
        response_headers.extend(self.extra_headers)
        response = http_response(101, "Switching Protocols", response_headers)
        return Accepted(request, response, subprotocol, deflate)

    def _select_subprotocol(self, headers: Headers) -> str | None:
        offered = set(headers.tokens("Sec-WebSocket-Protocol"))
        for proto in self.subprotocols:
            if proto in offered:
                return proto
        return None

    def _select_deflate(self, headers: Headers) -> DeflateParams | None:
        if self.deflate is None:
            return None
        offers: list[tuple[str, ExtensionParams]] = list(
            parse_extension_header(headers.get_all("Sec-WebSocket-Extensions"))
        )
        return accept_offer(offers, self.deflate)


class ServerProtocol(Protocol):
    """A server connection: the client's request answered by a policy, then frames.

    Starts CONNECTING. The bytes received are the request until it is complete; its answer
    is the first event and its bytes the first :meth:`data_to_send`. :class:`Accepted` opens
    the connection (frames the client sent right behind the request stay buffered and are
    parsed then); after :class:`HealthCheck` or :class:`Rejected` the connection stays
    CONNECTING with :attr:`answered` set, and whatever the client still sends is dropped:
    the I/O layer closes once the client has read the answer.

    Args:
        policy: paths, origins, subprotocols, compression, health path.
        options: ``max_size``, ``buffer`` (the I/O layer's pooled one), ``keys``,
            ``auto_pong``, as for :class:`~netkit.core.ws.protocol.Protocol`.

    Attributes:
        answered: an HTTP answer other than 101 was queued: close after sending it.
        upgraded: the upgrade was accepted (101 queued); stays True after the close.

    The client's request is in the event that answers it (:class:`Accepted` ...), not kept
    here: a connection lives long and its request head is of no use after the upgrade (kept,
    it was 1.3 KiB of every idle connection's 5.6 KiB).
    """

    __slots__ = ("answered", "policy", "upgraded")

    def __init__(self, policy: ServerHandshake, **options: Any) -> None:
        super().__init__(Side.SERVER, state=State.CONNECTING, **options)
        self.policy = policy
        self.answered = False
        self.upgraded = False

    def turn_away(self, reason: str) -> None:
        """Answer 503 with ``Retry-After: 1`` (:func:`unavailable`): over the connection
        limit, or shutting down. The :class:`Rejected` event is queued as any answer is."""
        if self.state is not State.CONNECTING or self.answered:
            raise LocalProtocolError("the opening handshake was already answered")
        self._answer(unavailable(reason))

    def _handshake(self) -> None:
        if self.answered:
            # Answered without an upgrade: what the client still sends is of no use.
            self._buffer.consume(len(self._buffer))
            return
        result = self.policy.receive_request(self._buffer)
        if result is not None:
            self._answer(result)

    def _answer(self, result: ServerResult) -> None:
        self._events.append(result)
        self._output.append(result.response)
        if isinstance(result, Accepted):
            self.upgraded = True
            self.open(deflate=result.deflate)
        else:
            self.answered = True
            self._buffer.consume(len(self._buffer))
