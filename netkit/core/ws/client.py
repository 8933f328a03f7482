"""The client side of a WebSocket connection, sans-I/O (RFC 6455 4.1, then sections 5-7).

:class:`ClientHandshake` is the upgrade request (built from a ``ws://`` URL by
:meth:`ClientHandshake.from_url`) and the check of the server's answer;
:class:`ClientProtocol` runs it and then speaks WebSocket::

    proto = ClientProtocol(ClientHandshake.from_url(url, subprotocols=["chat"]))
    proto.send_request(); send(proto.data_to_send())
    proto.receive_data(data)        # raises UpgradeRefused / InvalidHandshake
    for event in proto.events_received(): ...  # HandshakeResponse first, then Message, ...
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any, Final

from netkit.core.addresses import WSURL
from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.deflate import (
    EXTENSION_NAME,
    DeflateParams,
    InvalidExtension,
    accept_response,
)
from netkit.core.ws.events import HandshakeResponse
from netkit.core.ws.frames import Side
from netkit.core.ws.handshake import WS_VERSION, accept_key, generate_key
from netkit.core.ws.http import (
    Headers,
    HeadTooLarge,
    InvalidHandshake,
    UpgradeRefused,
    is_token,
    not_a_response,
    parse_extension_header,
    read_head,
    tls_hint,
)
from netkit.core.ws.protocol import Protocol, State
from netkit.errors import ConfigError, LocalProtocolError, Setting, words

HEADER, SUBPROTOCOL, ORIGIN = Setting("header"), Setting("subprotocol"), Setting("origin")

# Headers the handshake itself writes; extra headers may not replace them.
_RESERVED_HEADERS: Final = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


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

    @classmethod
    def from_url(
        cls,
        url: WSURL,
        *,
        headers: Sequence[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        origin: str | None = None,
        compress: bool = False,
    ) -> ClientHandshake:
        """The upgrade request for ``url``: its ``Host``, resource and ``user:pass@`` credentials.

        A ``Host`` or ``Origin`` among ``headers`` replaces the default rather than adding a
        second header line.

        Raises:
            ConfigError: a header that is not ``token: value`` on one line, one that the
                handshake writes itself, credentials given twice, a subprotocol that is not
                a token, an origin with a line break.
        """
        host = url.host_header
        extra: list[tuple[str, str]] = []
        for name, value in headers:
            if not is_token(name):
                raise ConfigError(words(HEADER, f" {name!r}: the name is not an HTTP token"))
            if "\r" in value or "\n" in value:
                raise ConfigError(words(HEADER, f" {name}: a value cannot contain a line break"))
            lname = name.lower()
            if lname in _RESERVED_HEADERS:
                raise ConfigError(words(HEADER, f" {name}: netkit sets this header itself"))
            if lname == "host":
                host = value
            elif lname == "origin":
                origin = value
            elif lname == "authorization" and url.user is not None:
                raise ConfigError("credentials in the URL and an Authorization header: pick one")
            else:
                extra.append((name, value))
        for proto in subprotocols:
            if not is_token(proto):
                raise ConfigError(words(SUBPROTOCOL, f" {proto!r} is not a valid token"))
        if origin is not None and ("\r" in origin or "\n" in origin):
            raise ConfigError(words(ORIGIN, " cannot contain a line break"))
        return cls(
            host,
            url.resource,
            origin=origin,
            subprotocols=subprotocols,
            deflate=DeflateParams() if compress else None,
            extra_headers=extra,
            user=url.user,
            password=url.password,
        )

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


class ClientProtocol(Protocol):
    """A client connection: the upgrade request and the check of its answer, then frames.

    Starts CONNECTING. :meth:`send_request` queues the request; the bytes received are the
    server's answer until it is complete, then frames. A 101 answer that agrees with the
    request opens the connection and is the first event (:class:`HandshakeResponse`);
    frames the server sent right behind it stay buffered and are parsed then.

    Args:
        handshake: the request and what the answer must agree with.
        options: ``max_size``, ``buffer`` (the I/O layer's pooled one), ``keys``,
            ``auto_pong``, as for :class:`~netkit.core.ws.protocol.Protocol`.

    Attributes:
        response: the server's 101 answer, once open.
    """

    __slots__ = ("handshake", "response")

    def __init__(self, handshake: ClientHandshake, **options: Any) -> None:
        super().__init__(Side.CLIENT, state=State.CONNECTING, **options)
        self.handshake = handshake
        self.response: HandshakeResponse | None = None

    def send_request(self) -> None:
        """Queue the upgrade request (4.1); send it with :meth:`data_to_send`."""
        if self.state is not State.CONNECTING:
            raise LocalProtocolError(f"cannot send the upgrade request in state {self.state.name}")
        self._output.append(self.handshake.request())

    def _handshake(self) -> None:
        # Raises UpgradeRefused or InvalidHandshake: there is no connection to close yet.
        response = self.handshake.receive_response(self._buffer)
        if response is None:
            return
        self.response = response
        self._events.append(response)
        self.open(deflate=response.deflate)
