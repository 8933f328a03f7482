"""Endpoint syntax shared by every subcommand.

Accepted forms (``parse_endpoint``)::

    HOST:PORT            127.0.0.1:7007, localhost:80, example.test:443
    :PORT  or  PORT      loopback (127.0.0.1) - servers never listen on every interface by accident
    [IPV6]:PORT          [::1]:7007
    unix:/path           a Unix-domain socket file
    unix:@name           a Linux abstract-namespace socket
    tcp://HOST:PORT      the same as HOST:PORT, for TCP
    udp://HOST:PORT      the same as HOST:PORT, for UDP
    ws://HOST[:PORT][/resource]         WebSocket, port 80 by default
    wss://HOST[:PORT][/resource]        WebSocket over TLS, port 443 by default
    ws+unix:///path/to.sock[:/resource] WebSocket over a Unix socket (the Node ``ws`` convention)
    ws+unix://@name[:/resource]         the same over an abstract socket, named as in unix:@name

HTTP URLs (``parse_http_url``, for ``netkit bench``) take the same forms with ``http://``,
``https://``, ``http+unix://`` and ``https+unix://``.

Each parses to a frozen dataclass; ``str()`` of any of them gives back a string that parses to
the same value, except that ``user:pass@`` credentials are never printed.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import ClassVar

from netkit.errors import EndpointError

LOOPBACK_V4 = "127.0.0.1"
# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_UNIX_PATH = 107


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class TCPEndpoint:
    """A TCP host and port. ``host`` is a name or an IP literal (IPv6 without brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        # A host literally called "unix" would read back as a unix: path: say tcp:// then.
        prefix = "tcp://" if self.host.lower() == "unix" else ""
        return f"{prefix}{_format_host(self.host)}:{self.port}"


@dataclass(frozen=True)
class UDPEndpoint:
    """A UDP host and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"udp://{_format_host(self.host)}:{self.port}"


@dataclass(frozen=True)
class UnixEndpoint:
    """A Unix-domain socket: a file path, or an abstract name (Linux) when ``abstract``."""

    path: str
    abstract: bool = False

    @property
    def address(self) -> str:
        """The address to pass to ``bind``/``connect`` (a leading NUL for abstract names)."""
        return "\0" + self.path if self.abstract else self.path

    def __str__(self) -> str:
        if self.abstract:
            return f"unix:@{self.path}"
        # "unix://..." is the URL form: a path starting with // needs it to survive a round trip.
        return f"unix://{self.path}" if self.path.startswith("//") else f"unix:{self.path}"


@dataclass(frozen=True)
class _HostURL:
    """What WebSocket and HTTP URLs share: where to connect, the ``Host`` header, the text.

    Attributes:
        secure: ``wss://`` / ``https://`` (TLS).
        host: host name for TCP, also sent in the ``Host`` header.
        port: TCP port (80 / 443 by default).
        resource: path and query string sent in the request line (``/`` at least).
        unix_path: for ``ws+unix://`` / ``http+unix://``, the socket file (or abstract name);
            ``host`` is then ``localhost``.
        unix_abstract: ``unix_path`` is a Linux abstract socket name (``ws+unix://@name:/``).
    """

    SCHEMES: ClassVar[tuple[str, str]]  # (plain, TLS)

    secure: bool
    host: str
    port: int
    resource: str = "/"
    unix_path: str | None = None
    unix_abstract: bool = False

    @property
    def transport(self) -> TCPEndpoint | UnixEndpoint:
        """The endpoint the connection is made to."""
        if self.unix_path is not None:
            return UnixEndpoint(self.unix_path, abstract=self.unix_abstract)
        return TCPEndpoint(self.host, self.port)

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the port is left out when it is the scheme's default."""
        default = 443 if self.secure else 80
        host = _format_host(self.host)
        return host if self.port == default or self.unix_path else f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = self.SCHEMES[self.secure]
        if self.unix_path is not None:
            at = "@" if self.unix_abstract else ""
            return f"{scheme}+unix://{at}{self.unix_path}:{self.resource}"
        return f"{scheme}://{_format_host(self.host)}:{self.port}{self.resource}"


@dataclass(frozen=True)
class WSURL(_HostURL):
    """A WebSocket URL (``ws://``, ``wss://``, ``ws+unix://``), with its credentials if any.

    Attributes:
        user, password: from ``user:pass@`` in the URL, for HTTP Basic authentication.
    """

    SCHEMES: ClassVar[tuple[str, str]] = ("ws", "wss")

    user: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class HTTPURL(_HostURL):
    """An HTTP URL (``http://``, ``https://``, ``http+unix://``): the fields :class:`WSURL` has
    but credentials (a load test sends its own ``Authorization`` header with ``-H``)."""

    SCHEMES: ClassVar[tuple[str, str]] = ("http", "https")


Endpoint = TCPEndpoint | UDPEndpoint | UnixEndpoint | WSURL


def _parse_port(text: str, whole: str) -> int:
    if not text:
        raise EndpointError(f"endpoint {whole!r} has no port (expected HOST:PORT)")
    if not (text.isascii() and text.isdigit()):
        raise EndpointError(f"endpoint {whole!r}: port {text!r} is not a number")
    digits = text.lstrip("0") or "0"
    # Bounded before int(): Python refuses to convert strings of more than 4300 digits.
    port = int(digits) if len(digits) <= 5 else 65536
    if port > 65535:
        raise EndpointError(f"endpoint {whole!r}: port {port} is out of range (0-65535)")
    return port


def _check_host(host: str, whole: str) -> str:
    if any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise EndpointError(f"endpoint {whole!r}: {host!r} is not a host name or address")
    return host


def parse_host_port(text: str, *, whole: str | None = None) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``PORT`` into ``(host, port)``.

    An empty host means loopback (127.0.0.1), so that ``:0`` is a safe default for servers.

    Raises:
        EndpointError: with a message that says what is wrong.
    """
    whole = text if whole is None else whole
    if not text:
        raise EndpointError("empty endpoint (expected HOST:PORT, unix:/path or a URL)")
    if text.isdigit():  # a bare port; _parse_port rejects non-ASCII digits
        return LOOPBACK_V4, _parse_port(text, whole)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise EndpointError(f"endpoint {whole!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise EndpointError(f"endpoint {whole!r}: {host!r} is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise EndpointError(f"endpoint {whole!r} has no port (expected [{host}]:PORT)")
        return host, _parse_port(rest[1:], whole)
    if "://" in text:
        # udp://udp://H:P: without this, the colons read as an IPv6 address without brackets.
        inner = text.partition("://")[0]
        raise EndpointError(
            f"endpoint {whole!r}: {inner + '://'!r} where HOST:PORT should be (a scheme twice?)"
        )
    if text.count(":") > 1:
        raise EndpointError(f"endpoint {whole!r}: put IPv6 addresses in brackets, as in [::1]:7007")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise EndpointError(f"endpoint {whole!r} has no port (expected HOST:PORT)")
    return _check_host(host, whole) or LOOPBACK_V4, _parse_port(port_text, whole)


def _parse_unix(path: str, whole: str) -> UnixEndpoint:
    abstract = path.startswith("@")
    name = path[1:] if abstract else path
    if not name:
        raise EndpointError(f"endpoint {whole!r} names no socket path (expected unix:/path)")
    if "\0" in name:
        raise EndpointError(f"endpoint {whole!r}: a socket path cannot contain NUL")
    # A path needs a terminating NUL within sun_path's 108 bytes; an abstract name has a
    # leading NUL instead: either way 107 bytes of name.
    size = len(name.encode())
    if size > MAX_UNIX_PATH:
        raise EndpointError(
            f"endpoint {whole!r}: socket path is {size} bytes, the limit is {MAX_UNIX_PATH}"
        )
    return UnixEndpoint(name, abstract=abstract)


def _parse_ws(text: str) -> WSURL:
    # Also parses http(s):// and http(s)+unix:// for parse_http_url (the same grammar).
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    secure = scheme.startswith(("wss", "https"))
    if scheme.endswith("+unix"):
        # ws+unix:///path/to.sock:/resource - the socket path ends at the first ':'; an
        # abstract name is written as in unix:@name (ws+unix://@name:/resource), as ws-server
        # advertises it.
        sock, sep, resource = rest.partition(":")
        endpoint = _parse_unix(sock, text)
        resource = encode_resource(resource or "/" if sep else "/", text)
        return WSURL(
            secure, "localhost", 0, resource, endpoint.path, unix_abstract=endpoint.abstract
        )
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:
        raise EndpointError(f"endpoint {text!r}: {exc}") from None
    if not parts.hostname:
        raise EndpointError(f"endpoint {text!r} has no host (expected {scheme}://HOST/...)")
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("[") and not re.fullmatch(r"\[[^\]]*\](:[0-9]*)?", hostport):
        # urlsplit reads "[::1]x" and "[::1]]" as host ::1 and drops the rest: refuse them.
        raise EndpointError(f"endpoint {text!r}: only :PORT may follow the ] of an IPv6 host")
    try:
        port = parts.port
    except ValueError:
        raise EndpointError(f"endpoint {text!r}: the port is not a number in 0-65535") from None
    if parts.fragment and scheme.startswith("ws"):
        raise EndpointError(f"endpoint {text!r}: WebSocket URLs cannot have a #fragment")
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WSURL(
        secure=secure,
        host=_check_host(parts.hostname, text),
        port=port if port is not None else (443 if secure else 80),
        resource=encode_resource(resource, text),
        user=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password is not None else None,
    )


# The WHATWG URL standard's percent-encode sets, what browsers (and websocat, through the url
# crate) apply: C0 controls, DEL and every non-ASCII byte, plus these. '%' is kept, so an
# already-encoded %XX goes out as it came; reserved characters (/ ? = & ; : @ + $ ,) too.
_PATH_ENCODED = frozenset(b' "#<>?`{}')
_QUERY_ENCODED = frozenset(b" \"#<>'")  # the special-query set (ws and wss are special)


def _percent_encode(text: str, encoded: frozenset[int], whole: str) -> str:
    if text.isascii() and text.isprintable() and not encoded.intersection(text.encode()):
        return text  # the common case: nothing to do
    try:
        # surrogateescape: bytes of a command line that were not UTF-8 go out as they came.
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise EndpointError(f"endpoint {whole!r}: the path is not valid text") from None
    return "".join(f"%{b:02X}" if b <= 0x20 or b >= 0x7F or b in encoded else chr(b) for b in data)


def encode_resource(resource: str, whole: str = "") -> str:
    """Percent-encode a request target (path and query) as browsers do before sending it.

    ``/a b/é?x=ü`` becomes ``/a%20b/%C3%A9?x=%C3%BC``: UTF-8, then the WHATWG URL
    standard's path and query percent-encode sets. ``%XX`` and reserved characters are kept.

    Raises:
        EndpointError: text that cannot be UTF-8 (a lone surrogate); ``whole`` names the URL.
    """
    path, sep, query = resource.partition("?")
    whole = whole or resource
    return (
        _percent_encode(path, _PATH_ENCODED, whole)
        + sep
        + _percent_encode(query, _QUERY_ENCODED, whole)
    )


_WS_SCHEMES = ("ws", "wss", "ws+unix", "wss+unix")
_SCHEMES = ("tcp", "udp", "unix", *_WS_SCHEMES)


def parse_endpoint(text: str, *, default: str = "tcp") -> Endpoint:
    """Parse any endpoint string into its dataclass.

    Args:
        text: the endpoint as the user typed it.
        default: what a bare ``HOST:PORT`` means: ``"tcp"`` or ``"udp"``.

    Raises:
        EndpointError: with one line saying what is wrong.
    """
    text = text.strip()
    low = text.lower()
    if low.startswith("unix:") and not low.startswith("unix://"):
        return _parse_unix(text[5:], text)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        if scheme in _WS_SCHEMES:
            return _parse_ws(text)
        if scheme == "unix":
            return _parse_unix(rest, text)
        if scheme in ("tcp", "udp"):
            host, port = parse_host_port(rest.rstrip("/"), whole=text)
            return TCPEndpoint(host, port) if scheme == "tcp" else UDPEndpoint(host, port)
        raise EndpointError(
            f"endpoint {text!r}: unknown scheme {scheme!r} (known: {', '.join(_SCHEMES)})"
        )
    host, port = parse_host_port(text)
    return UDPEndpoint(host, port) if default == "udp" else TCPEndpoint(host, port)


def parse_stream_endpoint(text: str) -> TCPEndpoint | UnixEndpoint:
    """Parse an endpoint for a byte stream: TCP or a Unix socket.

    Raises:
        EndpointError: for UDP or WebSocket endpoints, and anything that does not parse.
    """
    endpoint = parse_endpoint(text)
    if not isinstance(endpoint, TCPEndpoint | UnixEndpoint):
        raise EndpointError(f"endpoint {text!r}: expected HOST:PORT or unix:/path here")
    return endpoint


def parse_datagram_endpoint(text: str) -> UDPEndpoint:
    """Parse an endpoint for UDP: ``HOST:PORT`` or ``udp://HOST:PORT``.

    Raises:
        EndpointError: for any other kind of endpoint, and anything that does not parse.
    """
    endpoint = parse_endpoint(text, default="udp")
    if not isinstance(endpoint, UDPEndpoint):
        raise EndpointError(f"endpoint {text!r}: expected HOST:PORT or udp://HOST:PORT here")
    return endpoint


_HTTP_SCHEMES = ("http", "https", "http+unix", "https+unix")


def parse_http_url(text: str) -> HTTPURL:
    """Parse an HTTP URL (``http://``, ``https://``, ``http+unix:///path.sock:/resource``);
    a ``#fragment`` is dropped, as clients do (it is never sent).

    Raises:
        EndpointError: for any other scheme, and anything that does not parse.
    """
    text = text.strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in _HTTP_SCHEMES:
        raise EndpointError(
            f"endpoint {text!r}: expected an HTTP URL ({', '.join(s + '://' for s in _HTTP_SCHEMES)})"
        )
    url = _parse_ws(text)
    if url.user is not None:
        raise EndpointError(
            f"endpoint {text!r}: give credentials as a header (-H 'Authorization: ...'),"
            " not in the URL"
        )
    return HTTPURL(url.secure, url.host, url.port, url.resource, url.unix_path, url.unix_abstract)


def is_http_url(text: str) -> bool:
    """True when ``text`` names an HTTP URL (its scheme is one :func:`parse_http_url` takes)."""
    return text.strip().partition("://")[0].lower() in _HTTP_SCHEMES and "://" in text


def parse_ws_url(text: str) -> WSURL:
    """Parse a WebSocket URL (``ws://``, ``wss://``, ``ws+unix://``).

    Raises:
        EndpointError: for any other kind of endpoint, and anything that does not parse.
    """
    scheme = text.strip().partition("://")[0].lower() if "://" in text else ""
    if scheme not in _WS_SCHEMES:
        # Name only the schemes this caller takes; for http(s):// say which one is meant.
        hint = {"http": " (use ws:// for http://)", "https": " (use wss:// for https://)"}
        raise EndpointError(
            f"endpoint {text!r}: expected a ws://, wss:// or ws+unix:// URL here"
            + hint.get(scheme, "")
        )
    endpoint = parse_endpoint(text)
    assert isinstance(endpoint, WSURL)
    return endpoint


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else, names included."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
