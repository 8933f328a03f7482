"""The WebSocket opening handshake (RFC 6455 section 4), both sides, sans-I/O.

Client::

    hs = ClientHandshake("example.test", "/chat", subprotocols=["chat"])
    send(hs.request())
    while (response := hs.receive_response(buf)) is None:   # buf: a ReceiveBuffer
        read more into buf
    # response.subprotocol, response.deflate; frames that followed the 101 stay in buf

Server::

    hs = ServerHandshake(paths={resource_path("chat")}, origins=parse_origins(["*"]))
    while (result := hs.receive_request(buf)) is None:
        read more into buf
    send(result.response)
    # Accepted: go on with the WebSocket protocol; HealthCheck / Rejected: close after sending

HTTP heads and headers are read and written by :mod:`netkit.core.ws.http`; the
protocols that run these handshakes are :mod:`netkit.core.ws.server` and
:mod:`netkit.core.ws.client`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.deflate import (
    EXTENSION_NAME,
    DeflateParams,
    ExtensionParams,
    InvalidExtension,
    accept_offer,
    accept_response,
)
from netkit.core.ws.http import (
    Headers,
    HeadTooLarge,
    InvalidHandshake,
    UpgradeRefused,
    http_response,
    is_token,
    not_a_request,
    not_a_response,
    parse_extension_header,
    read_head,
    tls_hint,
)
from netkit.errors import ConfigError, LocalProtocolError

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_VERSION: Final = "13"


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (4.2.2 step 5.4)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """Return a fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded (4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _valid_key(key: str) -> bool:
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return False
    return len(raw) == 16


# --- Client side -------------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeResponse:
    """A server's accepted (101) response, checked against our request.

    Attributes:
        status_code: always 101.
        reason: the reason phrase.
        headers: the response headers.
        subprotocol: the subprotocol the server chose among ours, or None.
        deflate: the agreed permessage-deflate parameters, or None if not in use.
    """

    status_code: int
    reason: str
    headers: Headers
    subprotocol: str | None = None
    deflate: DeflateParams | None = None


class ClientHandshake:
    """Builds a client's upgrade request and checks the server's response (4.1).

    Args:
        host: the ``Host`` header value (``host[:port]``).
        resource: the request target (path and query), ``/`` by default.
        origin: the ``Origin`` header, if any.
        subprotocols: subprotocols to offer, in our order of preference.
        deflate: permessage-deflate parameters to offer, or None not to offer it.
        extra_headers: more header lines to send.
        user: user name for HTTP Basic authentication.
        password: password for HTTP Basic authentication (empty if None and ``user`` is set).
        key: the ``Sec-WebSocket-Key`` to use (random by default; tests fix it).

    Attributes:
        key: the ``Sec-WebSocket-Key`` sent.
    """

    def __init__(
        self,
        host: str,
        resource: str = "/",
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        deflate: DeflateParams | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        user: str | None = None,
        password: str | None = None,
        key: str | None = None,
    ) -> None:
        if not resource.startswith("/"):
            raise LocalProtocolError(f"resource {resource!r} must start with '/'")
        for proto in subprotocols:
            if not is_token(proto):
                raise LocalProtocolError(f"subprotocol {proto!r} is not an HTTP token")
        self.host = host
        self.resource = resource
        self.origin = origin
        self.subprotocols = tuple(subprotocols)
        self.deflate = deflate
        self.extra_headers = tuple(extra_headers)
        self.user = user
        self.password = password
        self.key = key if key is not None else generate_key()

    def request(self) -> bytes:
        """Serialize the upgrade request (4.1)."""
        headers = [
            ("Host", self.host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Version", WS_VERSION),
        ]
        if self.origin is not None:
            headers.append(("Origin", self.origin))
        if self.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(self.subprotocols)))
        if self.deflate is not None:
            headers.append(("Sec-WebSocket-Extensions", self.deflate.offer()))
        if self.user is not None:
            credentials = f"{self.user}:{self.password or ''}".encode()
            headers.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
        headers.extend(self.extra_headers)
        lines = [f"GET {self.resource} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise LocalProtocolError(f"line break in request line {line!r}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def receive_response(self, buf: ReceiveBuffer) -> HandshakeResponse | None:
        """Read and check the server's response; None while it is incomplete.

        On success the response head is consumed and any bytes after it (early frames) are
        left in ``buf``.

        Raises:
            UpgradeRefused: the status is not 101 (carries status code and reason).
            InvalidHandshake: the response is malformed or disagrees with our request.
        """
        if not_a_response(buf):
            raise InvalidHandshake("not an HTTP response" + tls_hint(buf))
        try:
            head = read_head(buf)
        except HeadTooLarge as exc:
            raise InvalidHandshake(f"response head: {exc}") from exc
        if head is None:
            return None
        start, headers = head
        version, _, rest = start.partition(" ")
        code_text, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or not re.fullmatch(r"[0-9]{3}", code_text):
            raise InvalidHandshake(f"invalid status line {start[:80]!r}")
        status = int(code_text)
        if status != 101:
            raise UpgradeRefused(status, reason, headers)
        # 4.1 (client requirements on the response), points 2-6.
        if "websocket" not in (t.lower() for t in headers.tokens("Upgrade")):
            raise InvalidHandshake("response without Upgrade: websocket")
        if "upgrade" not in (t.lower() for t in headers.tokens("Connection")):
            raise InvalidHandshake("response without Connection: Upgrade")
        if headers.get("Sec-WebSocket-Accept") != accept_key(self.key):
            raise InvalidHandshake("wrong or missing Sec-WebSocket-Accept")
        subprotocol = self._check_subprotocol(headers)
        deflate = self._check_extensions(headers)
        return HandshakeResponse(status, reason, headers, subprotocol, deflate)

    def _check_subprotocol(self, headers: Headers) -> str | None:
        chosen = headers.tokens("Sec-WebSocket-Protocol")
        if not chosen:
            return None
        if len(chosen) > 1:
            raise InvalidHandshake("server chose more than one subprotocol")
        if chosen[0] not in self.subprotocols:
            raise InvalidHandshake(
                f"server chose subprotocol {chosen[0]!r}, which we did not offer"
            )
        return chosen[0]

    def _check_extensions(self, headers: Headers) -> DeflateParams | None:
        accepted = parse_extension_header(headers.get_all("Sec-WebSocket-Extensions"))
        agreed: DeflateParams | None = None
        for name, params in accepted:
            # 9.1: the server may only answer with extensions we offered, each once.
            if name.lower() != EXTENSION_NAME or self.deflate is None or agreed is not None:
                raise InvalidHandshake(f"server accepted extension {name!r}, not offered")
            try:
                agreed = accept_response(params, self.deflate)
            except InvalidExtension as exc:
                raise InvalidHandshake(f"permessage-deflate: {exc}") from exc
        return agreed


# --- Server side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A parsed HTTP request head.

    Attributes:
        method: e.g. ``GET``.
        target: the request target as sent (path and query).
        version: e.g. ``HTTP/1.1``.
        headers: the request headers.
    """

    method: str
    target: str
    version: str
    headers: Headers

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


@dataclass(frozen=True)
class Accepted:
    """The upgrade is accepted: send ``response``, then speak WebSocket.

    Attributes:
        request: the client's request.
        response: the 101 response to send.
        subprotocol: the chosen subprotocol, or None.
        deflate: the agreed permessage-deflate parameters, or None.
    """

    request: Request
    response: bytes
    subprotocol: str | None = None
    deflate: DeflateParams | None = None


@dataclass(frozen=True)
class HealthCheck:
    """A plain ``GET`` of the health path without Upgrade: send ``response`` (200) and close.

    Attributes:
        request: the client's request.
        response: the ``200 OK`` response with body ``ok``.
    """

    request: Request
    response: bytes


@dataclass(frozen=True)
class Rejected:
    """The request cannot be upgraded: send ``response`` and close.

    Attributes:
        status_code: 400, 403, 404, 405, 426, 431, or 503 (:func:`unavailable`).
        message: why, for logs.
        response: the HTTP response to send.
        request: the request, or None if it did not parse.
    """

    status_code: int
    message: str
    response: bytes
    request: Request | None = None


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


def resource_path(text: str, *, option: str = "--path") -> str:
    """A path to serve WebSocket on, as the request target will carry it: ``chat`` -> ``/chat``.

    A missing leading slash is added, as nginx's ``location`` and websocketd do.

    Raises:
        ConfigError: the path holds a query, a fragment, spaces or control characters (a
            request path is compared without its query, so such a path would never match).
    """
    if any(ch in "?#" or ch.isspace() or not ch.isprintable() for ch in text):
        raise ConfigError(
            f"{option} {text!r}: give a path without spaces, query (?) or fragment (#), e.g. /chat"
        )
    return text if text.startswith("/") else "/" + text


_ORIGIN_RE: Final = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9._~%-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)
_DEFAULT_PORTS: Final = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def parse_origin(text: str, *, option: str = "--origin") -> str | None:
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
            f"{option} {text!r}: browsers send an origin as scheme://host[:port] "
            "(no path, e.g. https://example.com); or give '*' (any) or 'none' (no Origin header)"
        )
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{int(port)}"
    return f"{scheme}://{host}"


def parse_origins(values: Sequence[str], *, option: str = "--origin") -> set[str | None] | None:
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
        if key is None or not _valid_key(key):
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
