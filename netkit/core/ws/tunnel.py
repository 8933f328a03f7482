"""HTTP CONNECT tunnels (RFC 9110 9.3.6) as ws-client's ``--proxy`` uses them, sans I/O.

:func:`parse_proxy_url` reads ``http://[user:pass@]host:port``; :func:`connect_request` is the
request (with ``Proxy-Authorization: Basic`` when the URL has credentials, as wscat sends it);
:func:`read_connect_answer` reads the proxy's answer head out of a receive buffer and
:func:`check_answer` turns anything but 2xx into :class:`ProxyRefused`, which says what the
status means for the user. After a 2xx the socket is a tunnel to the target: TLS for
``wss://`` runs through it, end to end.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass

from netkit.core.addresses import TCPEndpoint
from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.http import Headers, HeadTooLarge, InvalidHandshake, not_a_response, read_head
from netkit.errors import ConfigError, ConnectError, PeerProtocolError, Setting, Words

PROXY = Setting("proxy")


@dataclass(frozen=True)
class ProxyURL:
    """An HTTP proxy: where it listens and the credentials for ``Proxy-Authorization``."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None

    @property
    def endpoint(self) -> TCPEndpoint:
        """Where the proxy listens."""
        return TCPEndpoint(self.host, self.port)

    def __str__(self) -> str:  # never the credentials
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy_url(text: str) -> ProxyURL:
    """Parse ``http://[user:pass@]host:port`` (the port is required: proxies listen on 3128,
    8080 and others, and a guessed one fails far from its cause).

    Raises:
        ConfigError: another scheme, no host, no port or a bad one, a path.
    """
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() != "http":
        raise ConfigError((PROXY, f" {text!r}: only http:// proxies (HTTP CONNECT) are supported"))
    try:
        port = parts.port
    except ValueError:
        raise ConfigError((PROXY, f" {text!r}: the port is not a number 0-65535")) from None
    if not parts.hostname:
        raise ConfigError((PROXY, f" {text!r} names no host"))
    if port is None:
        raise ConfigError((PROXY, f" {text!r} names no port (http://HOST:PORT)"))
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError((PROXY, f" {text!r}: a proxy URL has no path"))
    user = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return ProxyURL(parts.hostname, port, user, password)


def authority(target: TCPEndpoint) -> str:
    """``host:port`` as the CONNECT request line names it (IPv6 in brackets)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def connect_request(proxy: ProxyURL, target: TCPEndpoint) -> bytes:
    """The CONNECT request for a tunnel to ``target``."""
    name = authority(target)
    lines = [f"CONNECT {name} HTTP/1.1", f"Host: {name}"]
    if proxy.user is not None:
        secret = f"{proxy.user}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(secret).decode('ascii')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class ConnectAnswer:
    """The proxy's answer to CONNECT."""

    status: int
    reason: str
    headers: Headers


def read_connect_answer(buf: ReceiveBuffer, proxy: ProxyURL) -> ConnectAnswer | None:
    """The answer head, consumed from ``buf``; None while it is incomplete.

    Raises:
        PeerProtocolError: not an HTTP answer, or a malformed one.
    """
    if not_a_response(buf):
        raise PeerProtocolError(f"proxy {proxy} did not answer CONNECT with HTTP", close_code=None)
    try:
        head = read_head(buf)
    except (HeadTooLarge, InvalidHandshake) as exc:
        raise PeerProtocolError(
            f"proxy {proxy}: bad answer to CONNECT: {exc}", close_code=None
        ) from None
    if head is None:
        return None
    start, headers = head
    match = re.fullmatch(r"HTTP/1\.[01] ([0-9]{3})(?: (.*))?", start)
    if match is None:
        raise PeerProtocolError(
            f"proxy {proxy}: invalid status line {start[:80]!r}", close_code=None
        )
    return ConnectAnswer(int(match.group(1)), match.group(2) or "", headers)


class ProxyRefused(ConnectError):
    """The proxy answered CONNECT with something other than 2xx (exit status 3).

    Attributes:
        status_code: the proxy's status (407, 403, 502 ...).
    """

    def __init__(self, message: Words, status_code: int, *, hint: Words | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


def check_answer(answer: ConnectAnswer, proxy: ProxyURL, target: TCPEndpoint) -> None:
    """Accept a 2xx answer; refuse anything else with what it means.

    Raises:
        ProxyRefused: the status is not 2xx.
    """
    if 200 <= answer.status < 300:
        return
    said = f"proxy {proxy} refused CONNECT to {authority(target)}: {answer.status} {answer.reason}"
    hint: Words | None = None
    if answer.status == 407:
        hint = (
            ("the proxy did not accept the user and password in ", PROXY)
            if proxy.user is not None
            else ("the proxy wants credentials: http://USER:PASS@HOST:PORT in ", PROXY)
        )
    elif answer.status == 403:
        hint = "the proxy does not allow tunnels to this host or port"
    elif answer.status in (502, 503, 504):
        hint = "the proxy could not reach the target"
    raise ProxyRefused(said.rstrip(), answer.status, hint=hint)
