"""Tests for netkit.core.addresses: every accepted endpoint form, round trips, every bad case."""

from __future__ import annotations

import dataclasses

import pytest

from netkit.core.addresses import (
    LOOPBACK_V4,
    MAX_UNIX_PATH,
    WSURL,
    TCPEndpoint,
    UDPEndpoint,
    UnixEndpoint,
    encode_resource,
    is_loopback_host,
    parse_datagram_endpoint,
    parse_endpoint,
    parse_host_port,
    parse_stream_endpoint,
    parse_ws_url,
)
from netkit.errors import EndpointError, UsageError

# --- accepted forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7007", TCPEndpoint("127.0.0.1", 7007)),
        ("localhost:80", TCPEndpoint("localhost", 80)),
        ("example.test:443", TCPEndpoint("example.test", 443)),
        (":7007", TCPEndpoint(LOOPBACK_V4, 7007)),
        (":0", TCPEndpoint("127.0.0.1", 0)),
        ("7007", TCPEndpoint("127.0.0.1", 7007)),
        ("0", TCPEndpoint("127.0.0.1", 0)),
        ("65535", TCPEndpoint("127.0.0.1", 65535)),
        ("[::1]:7007", TCPEndpoint("::1", 7007)),
        ("[fe80::1%lo]:80", TCPEndpoint("fe80::1%lo", 80)),
        ("  localhost:80  ", TCPEndpoint("localhost", 80)),
        ("tcp://localhost:80", TCPEndpoint("localhost", 80)),
        ("tcp://localhost:80/", TCPEndpoint("localhost", 80)),
        ("TCP://[::1]:9", TCPEndpoint("::1", 9)),
        ("tcp://:9", TCPEndpoint("127.0.0.1", 9)),
        ("udp://localhost:53", UDPEndpoint("localhost", 53)),
        ("udp://[::1]:53", UDPEndpoint("::1", 53)),
        ("unix:/run/netkit.sock", UnixEndpoint("/run/netkit.sock")),
        ("unix:relative.sock", UnixEndpoint("relative.sock")),
        ("UNIX:/run/x.sock", UnixEndpoint("/run/x.sock")),
        ("unix:///run/x.sock", UnixEndpoint("/run/x.sock")),
        ("unix:@netkit", UnixEndpoint("netkit", abstract=True)),
    ],
)
def test_parse_endpoint_accepted_forms(text: str, expected: object) -> None:
    assert parse_endpoint(text) == expected


def test_bare_host_port_is_udp_when_default_is_udp() -> None:
    assert parse_endpoint("localhost:53", default="udp") == UDPEndpoint("localhost", 53)
    assert parse_endpoint("53", default="udp") == UDPEndpoint("127.0.0.1", 53)
    # An explicit scheme wins over the default.
    assert parse_endpoint("tcp://h:1", default="udp") == TCPEndpoint("h", 1)


def test_parse_host_port_direct() -> None:
    assert parse_host_port("h:1") == ("h", 1)
    assert parse_host_port(":1") == ("127.0.0.1", 1)
    assert parse_host_port("1") == ("127.0.0.1", 1)
    assert parse_host_port("[::1]:1") == ("::1", 1)


def test_unix_abstract_address_has_leading_nul() -> None:
    assert UnixEndpoint("name", abstract=True).address == "\0name"
    assert UnixEndpoint("/p.sock").address == "/p.sock"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ws://example.test", WSURL(False, "example.test", 80, "/")),
        ("ws://example.test/", WSURL(False, "example.test", 80, "/")),
        ("ws://example.test:8080/chat", WSURL(False, "example.test", 8080, "/chat")),
        ("ws://example.test/chat?room=1&x=y", WSURL(False, "example.test", 80, "/chat?room=1&x=y")),
        ("ws://example.test?room=1", WSURL(False, "example.test", 80, "/?room=1")),
        ("wss://example.test", WSURL(True, "example.test", 443, "/")),
        ("wss://example.test:8443/a/b", WSURL(True, "example.test", 8443, "/a/b")),
        ("WS://Example.TEST/", WSURL(False, "example.test", 80, "/")),
        ("ws://[::1]:9000/", WSURL(False, "::1", 9000, "/")),
        ("ws://127.0.0.1:0/", WSURL(False, "127.0.0.1", 0, "/")),
        (
            "ws://alice:s3cret@example.test/",
            WSURL(False, "example.test", 80, "/", user="alice", password="s3cret"),
        ),
        (
            "wss://al%40ice:p%3Ass@example.test:444/",
            WSURL(True, "example.test", 444, "/", user="al@ice", password="p:ss"),
        ),
        ("ws://bob@example.test/", WSURL(False, "example.test", 80, "/", user="bob")),
        (
            "ws+unix:///run/ws.sock:/resource?q=1",
            WSURL(False, "localhost", 0, "/resource?q=1", unix_path="/run/ws.sock"),
        ),
        ("ws+unix:///run/ws.sock", WSURL(False, "localhost", 0, "/", unix_path="/run/ws.sock")),
        ("ws+unix:///run/ws.sock:", WSURL(False, "localhost", 0, "/", unix_path="/run/ws.sock")),
        ("wss+unix:///run/ws.sock:/x", WSURL(True, "localhost", 0, "/x", unix_path="/run/ws.sock")),
        (
            "ws+unix://@netkit:/chat",
            WSURL(False, "localhost", 0, "/chat", unix_path="netkit", unix_abstract=True),
        ),
    ],
)
def test_parse_ws_urls(text: str, expected: WSURL) -> None:
    assert parse_endpoint(text) == expected
    assert parse_ws_url(text) == expected


def test_ws_transport() -> None:
    assert parse_ws_url("ws://h:81/").transport == TCPEndpoint("h", 81)
    assert parse_ws_url("ws+unix:///s.sock:/r").transport == UnixEndpoint("/s.sock")
    abstract = UnixEndpoint("s", abstract=True)
    assert parse_ws_url("ws+unix://@s:/r").transport == abstract


@pytest.mark.parametrize(
    ("text", "header"),
    [
        ("ws://example.test/", "example.test"),
        ("ws://example.test:80/", "example.test"),
        ("ws://example.test:8080/", "example.test:8080"),
        ("ws://example.test:443/", "example.test:443"),
        ("wss://example.test/", "example.test"),
        ("wss://example.test:443/", "example.test"),
        ("wss://example.test:80/", "example.test:80"),
        ("ws://[::1]/", "[::1]"),
        ("ws://[::1]:8080/", "[::1]:8080"),
        ("ws+unix:///run/ws.sock:/x", "localhost"),
    ],
)
def test_host_header(text: str, header: str) -> None:
    assert parse_ws_url(text).host_header == header


# --- str() round trips -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:7007",
        "localhost:0",
        ":80",
        "80",
        "[::1]:7007",
        "tcp://h:1",
        "udp://h:53",
        "udp://[::1]:53",
        "unix:/run/x.sock",
        "unix:rel.sock",
        "unix:@abstract-name",
        "ws://h",
        "ws://h:8080/a/b?c=d&e",
        "wss://h",
        "wss://[::1]:8443/x",
        "ws+unix:///run/ws.sock:/r?x=1",
        "ws+unix:///run/ws.sock",
        "wss+unix:///run/ws.sock:/",
        "ws+unix://@abstract-name:/r",
    ],
)
def test_str_round_trips(text: str) -> None:
    endpoint = parse_endpoint(text)
    assert parse_endpoint(str(endpoint)) == endpoint


def test_str_forms() -> None:
    assert str(TCPEndpoint("::1", 80)) == "[::1]:80"
    assert str(TCPEndpoint("h", 80)) == "h:80"
    assert str(UDPEndpoint("h", 53)) == "udp://h:53"
    assert str(UnixEndpoint("n", abstract=True)) == "unix:@n"
    assert str(parse_ws_url("ws://h")) == "ws://h:80/"
    assert str(parse_ws_url("ws+unix:///s.sock")) == "ws+unix:///s.sock:/"


@pytest.mark.parametrize(
    ("text", "resource"),
    [
        ("ws://h/a b/é?x=ü", "/a%20b/%C3%A9?x=%C3%BC"),  # the example
        ("ws://h/already%20encoded/%C3%A9?q=%41", "/already%20encoded/%C3%A9?q=%41"),
        ("ws://h/p;a=1:b@c+$,/&=?q=1&r=a/b:c@d+$,;", "/p;a=1:b@c+$,/&=?q=1&r=a/b:c@d+$,;"),
        ('ws://h/<"`{}>?<"\'`{}>', "/%3C%22%60%7B%7D%3E?%3C%22%27`{}%3E"),  # WHATWG sets
        ("ws://h/100%?x=%", "/100%?x=%"),  # a lone % is kept, as browsers do
        ("ws://h/ü", "/%C3%BC"),
        ("ws+unix:///run/ws.sock:/a b?c=ü", "/a%20b?c=%C3%BC"),
        ("ws://h/\udcff", "/%FF"),  # a command-line byte that was not UTF-8
    ],
)
def test_ws_resource_is_percent_encoded(text: str, resource: str) -> None:
    url = parse_ws_url(text)
    assert url.resource == resource
    assert encode_resource(resource) == resource  # encoding twice changes nothing
    assert str(url).endswith(resource)


def test_str_round_trip_of_udp_keeps_udp_under_tcp_default() -> None:
    endpoint = UDPEndpoint("h", 9)
    assert parse_endpoint(str(endpoint)) == endpoint


@pytest.mark.parametrize(
    "text", ["ws://alice:s3cret@h:81/x", "wss://alice:s3cret@h/", "ws://alice@h/"]
)
def test_str_omits_credentials(text: str) -> None:
    url = parse_ws_url(text)
    assert url.user == "alice"
    printed = str(url)
    assert "alice" not in printed
    assert "s3cret" not in printed
    assert "@" not in printed
    assert parse_endpoint(printed) == dataclasses.replace(url, user=None, password=None)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"^empty endpoint"),
        ("   ", r"^empty endpoint"),
        ("localhost", r"has no port \(expected HOST:PORT\)"),
        ("localhost:", r"has no port"),
        ("[::1]", r"has no port \(expected \[::1\]:PORT\)"),
        ("[::1]:", r"has no port"),
        ("[::1]x80", r"has no port"),
        ("localhost:http", r"port 'http' is not a number"),
        ("localhost:-1", r"port '-1' is not a number"),
        ("localhost:+1", r"port '\+1' is not a number"),
        ("localhost:8 0", r"port '8 0' is not a number"),
        ("localhost:65536", r"port 65536 is out of range \(0-65535\)"),
        ("99999", r"port 99999 is out of range"),
        ("::1:80", r"put IPv6 addresses in brackets"),
        ("::1", r"put IPv6 addresses in brackets"),
        ("[::1:80", r"missing '\]' after the IPv6 address"),
        ("[zz::1]:80", r"'zz::1' is not an IPv6 address"),
        ("[127.0.0.1]:80", r"'127.0.0.1' is not an IPv6 address"),
        ("my host:80", r"'my host' is not a host name or address"),
        ("a/b:80", r"is not a host name or address"),
        ("user@host:80", r"is not a host name or address"),
        ("unix:", r"names no socket path \(expected unix:/path\)"),
        ("unix:@", r"names no socket path"),
        ("unix://", r"names no socket path"),
        ("unix:/a\0b", r"cannot contain NUL"),
        ("unix:@a\0b", r"cannot contain NUL"),
        ("unix:/" + "a" * MAX_UNIX_PATH, r"socket path is 108 bytes, the limit is 107"),
        ("unix:/" + "é" * 54, r"socket path is 109 bytes, the limit is 107"),
        ("http://example.test/", r"unknown scheme 'http' \(known: tcp, udp, unix, ws, wss"),
        ("sctp://h:1", r"unknown scheme 'sctp'"),
        ("tcp://h", r"has no port"),
        ("tcp://h:x", r"port 'x' is not a number"),
        ("udp://[::1", r"missing '\]'"),
        ("udp://udp://127.0.0.1:7", r"'udp://' where HOST:PORT should be \(a scheme twice\?\)"),
        ("tcp://tcp://[::1]:7", r"'tcp://' where HOST:PORT should be"),
        ("tcp://http://h:80", r"'http://' where HOST:PORT should be"),
        ("ws://", r"has no host \(expected ws://HOST/\.\.\.\)"),
        ("wss:///path", r"has no host \(expected wss://HOST"),
        ("ws://:80/", r"has no host"),
        ("ws://h/#frag", r"cannot have a #fragment"),
        ("ws://h:99999/", r"the port is not a number in 0-65535"),
        ("ws://h:abc/", r"the port is not a number in 0-65535"),
        ("ws://h:-1/", r"the port is not a number in 0-65535"),
        ("ws+unix://", r"names no socket path"),
        ("ws+unix:///" + "a" * MAX_UNIX_PATH + ":/", r"the limit is 107"),
    ],
)
def test_bad_endpoints(text: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message) as info:
        parse_endpoint(text)
    assert isinstance(info.value, UsageError)
    # Every message is one line a user can read.
    assert "\n" not in str(info.value)


def test_message_quotes_the_whole_input() -> None:
    with pytest.raises(EndpointError, match=r"^endpoint 'tcp://h:x': port 'x'"):
        parse_endpoint("tcp://h:x")


def test_unix_path_at_the_limit_is_accepted() -> None:
    path = "/" + "a" * (MAX_UNIX_PATH - 1)
    assert len(path) == 107
    assert parse_endpoint("unix:" + path) == UnixEndpoint(path)


def test_abstract_name_limit_counts_the_leading_nul() -> None:
    name = "a" * 106
    assert parse_endpoint("unix:@" + name) == UnixEndpoint(name, abstract=True)
    with pytest.raises(EndpointError, match="the limit is 107"):
        parse_endpoint("unix:@" + "a" * 108)


def test_abstract_name_of_107_bytes_is_accepted() -> None:
    name = "a" * 107
    assert parse_endpoint("unix:@" + name) == UnixEndpoint(name, abstract=True)


@pytest.mark.parametrize("text", ["localhost:²", "²", "[::1]:²"])
def test_non_ascii_digit_port_is_an_endpoint_error(text: str) -> None:
    with pytest.raises(EndpointError, match="is not a number"):
        parse_endpoint(text)


# --- kind-specific parsers ---------------------------------------------------------------


def test_parse_stream_endpoint() -> None:
    assert parse_stream_endpoint("h:1") == TCPEndpoint("h", 1)
    assert parse_stream_endpoint("tcp://h:1") == TCPEndpoint("h", 1)
    assert parse_stream_endpoint("unix:/s") == UnixEndpoint("/s")
    assert parse_stream_endpoint("unix:@s") == UnixEndpoint("s", abstract=True)


@pytest.mark.parametrize("text", ["udp://h:1", "ws://h/", "wss://h/", "ws+unix:///s.sock"])
def test_parse_stream_endpoint_rejects_other_kinds(text: str) -> None:
    with pytest.raises(EndpointError, match="expected HOST:PORT or unix:/path here"):
        parse_stream_endpoint(text)


def test_parse_stream_endpoint_passes_parse_errors_through() -> None:
    with pytest.raises(EndpointError, match="has no port"):
        parse_stream_endpoint("h")


def test_parse_datagram_endpoint() -> None:
    assert parse_datagram_endpoint("h:1") == UDPEndpoint("h", 1)
    assert parse_datagram_endpoint(":1") == UDPEndpoint("127.0.0.1", 1)
    assert parse_datagram_endpoint("udp://[::1]:1") == UDPEndpoint("::1", 1)


@pytest.mark.parametrize("text", ["tcp://h:1", "unix:/s", "unix:@s", "ws://h/"])
def test_parse_datagram_endpoint_rejects_other_kinds(text: str) -> None:
    with pytest.raises(EndpointError, match=r"expected HOST:PORT or udp://HOST:PORT here"):
        parse_datagram_endpoint(text)


@pytest.mark.parametrize("text", ["h:1", "tcp://h:1", "udp://h:1", "unix:/s", "unix:@s"])
def test_parse_ws_url_rejects_other_kinds(text: str) -> None:
    with pytest.raises(EndpointError, match=r"expected a ws://, wss:// or ws\+unix:// URL"):
        parse_ws_url(text)


# --- is_loopback_host --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.1.2.3", "::1", "::1%lo"]
)
def test_is_loopback_host_true(host: str) -> None:
    assert is_loopback_host(host) is True


@pytest.mark.parametrize(
    "host",
    ["example.test", "localhost.example", "10.0.0.1", "0.0.0.0", "::", "fe80::1%lo", "", "[::1]"],
)
def test_is_loopback_host_false(host: str) -> None:
    assert is_loopback_host(host) is False
