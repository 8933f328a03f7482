"""Opening handshake (RFC 6455 section 4): request, response, limits and refusals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import Accepted, HandshakeResponse, HealthCheck, Message, Rejected
from netkit.core.ws.frames import Side
from netkit.core.ws.handshake import accept_key
from netkit.core.ws.http import (
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    InvalidHandshake,
    UpgradeRefused,
    parse_extension_header,
)
from netkit.core.ws.protocol import Protocol, State
from netkit.core.ws.server import (
    ServerHandshake,
    head_only,
    parse_origin,
    parse_origins,
    resource_path,
    unavailable,
)
from netkit.errors import ConfigError, LocalProtocolError

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# RFC 6455 section 1.3 / 4.1, written out.
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def buffer_of(data: bytes) -> ReceiveBuffer:
    buf = ReceiveBuffer()
    buf.extend(data)
    return buf


def serve(request: bytes, **kwargs: object) -> Accepted | HealthCheck | Rejected:
    result = ServerHandshake(**kwargs).receive_request(buffer_of(request))  # type: ignore[arg-type]
    assert result is not None
    return result


def rejected(request: bytes, status: int, **kwargs: object) -> Rejected:
    result = serve(request, **kwargs)
    assert isinstance(result, Rejected), result
    assert result.status_code == status, result.message
    assert result.response.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Connection: close\r\n" in result.response
    return result


def request_with(*, drop: str | None = None, **replace: str) -> bytes:
    """The RFC request with one header replaced or dropped."""
    lines = RFC_REQUEST.decode().split("\r\n")
    out = []
    for line in lines:
        name = line.partition(":")[0]
        if name == drop:
            continue
        key = name.replace("-", "_")
        out.append(f"{name}: {replace[key]}" if key in replace else line)
    return "\r\n".join(out).encode()


def test_rfc_accept_key() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_rfc_request_is_accepted_with_rfc_response() -> None:
    result = serve(RFC_REQUEST, subprotocols=["chat"])
    assert isinstance(result, Accepted)
    assert result.subprotocol == "chat"
    assert result.response == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"\r\n"
    )
    assert result.request.path == "/chat"


def test_client_request_bytes() -> None:
    hs = ClientHandshake(
        "server.example.com",
        "/chat",
        origin="http://example.com",
        subprotocols=["chat", "superchat"],
        key=RFC_KEY,
        extra_headers=[("X-Trace", "1")],
        user="user",
        password="pass",
    )
    assert hs.request() == (
        b"GET /chat HTTP/1.1\r\n"
        b"Host: server.example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Origin: http://example.com\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Authorization: Basic dXNlcjpwYXNz\r\n"
        b"X-Trace: 1\r\n"
        b"\r\n"
    )


def test_client_key_is_random_16_bytes() -> None:
    import base64

    keys = {ClientHandshake("h").key for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k)) == 16 for k in keys)


def test_client_refuses_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        ClientHandshake("h", "chat")
    with pytest.raises(LocalProtocolError):
        ClientHandshake("h", subprotocols=["bad proto"])
    with pytest.raises(LocalProtocolError):
        ClientHandshake("h", extra_headers=[("X", "a\r\nInjected: 1")]).request()


def test_full_handshake_with_deflate_and_early_frame() -> None:
    client = ClientHandshake("h", "/ws", subprotocols=["a", "b"], deflate=DeflateParams())
    server = ServerHandshake(paths={"/ws"}, subprotocols=["b", "a"], deflate=DeflateParams())
    sbuf = ReceiveBuffer()
    request = client.request()
    # Byte by byte: None until the head is complete.
    for i, byte in enumerate(request):
        sbuf.extend(bytes([byte]))
        result = server.receive_request(sbuf)
        assert (result is None) == (i < len(request) - 1)
    assert isinstance(result, Accepted)
    assert result.subprotocol == "b"  # the server's preference wins
    assert result.deflate == DeflateParams()
    cbuf = ReceiveBuffer()
    response = result.response + b"\x81\x02hi"  # a frame right behind the 101
    for i in range(len(response)):
        cbuf.extend(response[i : i + 1])
        got = client.receive_response(cbuf)
        if got is not None:
            break
    assert i == len(result.response) - 1
    assert got is not None and got.subprotocol == "b" and got.deflate == DeflateParams()
    cbuf.extend(response[i + 1 :])
    assert bytes(cbuf.view()) == b"\x81\x02hi"  # left for the frame parser


def test_subprotocol_no_overlap_means_none() -> None:
    result = serve(RFC_REQUEST, subprotocols=["mqtt"])
    assert isinstance(result, Accepted) and result.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in result.response


def test_header_names_and_tokens_are_case_insensitive_and_comma_tolerant() -> None:
    request = (
        b"GET / HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\n"
        b"connection: keep-alive, UPGRADE\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"sec-websocket-version: 13\r\nSec-WebSocket-Protocol: x\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n\r\n"
    )
    result = serve(request, subprotocols=["chat"])
    assert isinstance(result, Accepted)
    assert result.subprotocol == "chat"


def test_bare_lf_line_endings_are_accepted() -> None:
    result = serve(RFC_REQUEST.replace(b"\r\n", b"\n"))
    assert isinstance(result, Accepted)


# --- health check --------------------------------------------------------------------------


def test_health_check() -> None:
    result = serve(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(result, HealthCheck)
    assert result.response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert result.response.endswith(b"\r\n\r\nok\n")
    assert b"Content-Length: 3\r\n" in result.response


def test_health_check_disabled_or_other_path() -> None:
    rejected(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 426, health_path=None)
    rejected(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 426)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get"])
def test_other_methods_on_a_known_path_are_405_with_allow(method: bytes) -> None:
    # Was 400 (#13 item 7); RFC 9110 15.5.6: 405 with the methods that are served.
    for request, kwargs in [
        (b"%b /health HTTP/1.1\r\nHost: x\r\n\r\n" % method, {}),
        (RFC_REQUEST.replace(b"GET", method), {}),
        (RFC_REQUEST.replace(b"GET", method), {"paths": {"/chat"}}),
    ]:
        result = rejected(request, 405, **kwargs)
        assert b"\r\nAllow: GET, HEAD\r\n" in result.response
    rejected(RFC_REQUEST.replace(b"GET", b"POST"), 404, paths={"/ws"})  # an unknown path


def test_head_is_answered_as_get_without_a_body() -> None:
    result = serve(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(result, HealthCheck)
    assert result.response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert result.response.endswith(b"Content-Length: 3\r\n\r\n")  # GET's length, no body
    # Never upgraded, even with every upgrade header: 426 as GET without them, no body.
    result = rejected(RFC_REQUEST.replace(b"GET", b"HEAD"), 426)
    assert result.response.endswith(b"\r\n\r\n")
    result = rejected(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n", 404, paths={"/chat"})
    assert result.response.endswith(b"\r\n\r\n")
    with pytest.raises(LocalProtocolError):
        head_only(serve(RFC_REQUEST))


def test_unavailable_is_503_with_retry_after() -> None:
    result = unavailable("at the connection limit (1)")
    assert result.status_code == 503
    head, _, body = result.response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nConnection: close" in head
    assert body == b"503 Service Unavailable: at the connection limit (1)\n"


@pytest.mark.parametrize(
    ("text", "path"), [("chat", "/chat"), ("/chat", "/chat"), ("", "/"), ("a/b", "/a/b")]
)
def test_resource_path_adds_the_leading_slash(text: str, path: str) -> None:
    assert resource_path(text) == path


@pytest.mark.parametrize("text", ["/chat?x=1", "/a#b", "/a b", "/a\tb", "\x00"])
def test_resource_path_that_can_never_match_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^path "):
        resource_path(text)


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("https://example.com", "https://example.com"),
        ("HTTPS://Example.COM", "https://example.com"),  # browsers send lower case
        ("https://example.com:443", "https://example.com"),  # ... and no default port
        ("http://example.com:80", "http://example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        ("null", "null"),  # an opaque origin (a sandboxed frame, a file:// page)
        ("none", None),
        ("None", None),
    ],
)
def test_parse_origin(text: str, origin: str | None) -> None:
    assert parse_origin(text) == origin


@pytest.mark.parametrize(
    "text",
    ["example.com", "https://example.com/", "https://example.com/app", "https://", "*.example.com",
     "https://example.com:99999", "https://a b", "https://*.example.com", ""],
)  # fmt: skip
def test_an_origin_no_browser_sends_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^origin .*scheme://host\[:port\]"):
        parse_origin(text)


def test_parse_origins_star_and_none() -> None:
    assert parse_origins([]) is None
    assert parse_origins(["*"]) is None
    assert parse_origins(["https://a.test", "*"]) is None
    assert parse_origins(["none"]) == {None}
    assert parse_origins(["https://a.test", "none"]) == {"https://a.test", None}
    no_origin = request_with(drop="Origin")
    assert isinstance(serve(no_origin, origins=parse_origins(["none"])), Accepted)
    rejected(RFC_REQUEST, 403, origins=parse_origins(["none"]))
    assert isinstance(serve(RFC_REQUEST, origins=parse_origins(["*"])), Accepted)
    assert isinstance(serve(no_origin, origins=parse_origins(["*"])), Accepted)


def test_wrong_version_is_426_with_supported_version() -> None:
    result = rejected(request_with(Sec_WebSocket_Version="8"), 426)
    assert b"Sec-WebSocket-Version: 13\r\n" in result.response
    rejected(request_with(drop="Sec-WebSocket-Version"), 426)


def test_missing_upgrade_is_426() -> None:
    result = rejected(request_with(drop="Upgrade"), 426)
    assert b"Upgrade: websocket\r\n" in result.response
    rejected(request_with(Upgrade="h2c"), 426)


def test_origin_not_allowed_is_403() -> None:
    rejected(RFC_REQUEST, 403, origins={"https://good.test"})
    rejected(request_with(drop="Origin"), 403, origins={"https://good.test"})
    allowed = serve(request_with(drop="Origin"), origins={"https://good.test", None})
    assert isinstance(allowed, Accepted)
    assert isinstance(serve(RFC_REQUEST, origins={"http://example.com"}), Accepted)


def test_wrong_path_is_404() -> None:
    rejected(RFC_REQUEST, 404, paths={"/ws"})
    ok = serve(RFC_REQUEST.replace(b"/chat", b"/ws?token=1"), paths={"/ws"})
    assert isinstance(ok, Accepted)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"hello\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS ClientHello-ish
        b"GET /chat\r\n\r\n",
        RFC_REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0"),
        RFC_REQUEST.replace(b"HTTP/1.1", b"HTTP/2.0"),
        request_with(drop="Connection"),
        request_with(Connection="keep-alive"),
        request_with(drop="Host"),
        request_with(drop="Sec-WebSocket-Key"),
        request_with(Sec_WebSocket_Key="dG9vIHNob3J0"),  # 9 bytes
        request_with(Sec_WebSocket_Key="not base64!!"),
        RFC_REQUEST.replace(b"Host:", b"Host :"),
        RFC_REQUEST.replace(b"Upgrade: websocket\r\n", b"Upgrade websocket\r\n"),
        RFC_REQUEST.replace(b"Origin:", b" Origin:"),  # obs-fold
        RFC_REQUEST.replace(b"Host: server.example.com", b"Host: a\x00b"),
        RFC_REQUEST.replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    ],
)
def test_invalid_requests_are_400(request_bytes: bytes) -> None:
    rejected(request_bytes, 400)


def test_request_line_too_long() -> None:
    long_target = b"/" + b"a" * MAX_LINE
    # Rejected without waiting for the end of the line.
    buf = buffer_of(b"GET " + long_target)
    result = ServerHandshake().receive_request(buf)
    assert isinstance(result, Rejected) and result.status_code == 400
    assert "too long" in result.message


def test_header_line_too_long() -> None:
    line = b"X-Big: " + b"a" * (MAX_LINE - 7) + b"\r\n"  # exactly MAX_LINE: fine
    assert isinstance(serve(RFC_REQUEST.replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n")), Accepted)
    line = b"X-Big: " + b"a" * (MAX_LINE - 6) + b"\r\n"
    # 431 Request Header Fields Too Large (RFC 6585 5) for the header section.
    rejected(RFC_REQUEST.replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n"), 431)


def test_too_many_headers() -> None:
    base = RFC_REQUEST.count(b"\r\n") - 2  # header lines in the RFC request
    fill = MAX_HEADERS - base
    ok = RFC_REQUEST.replace(b"\r\n\r\n", b"\r\n" + b"X-A: 1\r\n" * fill + b"\r\n")
    assert isinstance(serve(ok), Accepted)
    too_many = RFC_REQUEST.replace(b"\r\n\r\n", b"\r\n" + b"X-A: 1\r\n" * (fill + 1) + b"\r\n")
    result = rejected(too_many, 431)
    assert "too many headers" in result.message


def test_incomplete_request_needs_more() -> None:
    buf = buffer_of(RFC_REQUEST[:-2])
    assert ServerHandshake().receive_request(buf) is None
    assert len(buf) == len(RFC_REQUEST) - 2  # nothing consumed


# --- client checks of the response -------------------------------------------------------


def client_response(response: bytes, **kwargs: object) -> object:
    hs = ClientHandshake("h", key=RFC_KEY, **kwargs)  # type: ignore[arg-type]
    return hs.receive_response(buffer_of(response))


GOOD_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def test_client_accepts_good_response() -> None:
    response = client_response(GOOD_RESPONSE)
    assert response is not None
    assert response.status_code == 101  # type: ignore[attr-defined]


def test_non_101_is_upgrade_refused_with_status() -> None:
    with pytest.raises(UpgradeRefused) as info:
        client_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status_code == 403
    assert info.value.reason == "Forbidden"
    assert str(info.value) == "upgrade refused: 403 Forbidden"
    assert info.value.close_code is None
    assert info.value.headers.get("content-length") == "0"


@pytest.mark.parametrize(
    ("response", "kwargs"),
    [
        (GOOD_RESPONSE.replace(b"s3pP", b"AAAA"), {}),
        (GOOD_RESPONSE.replace(b"Upgrade: websocket\r\n", b""), {}),
        (GOOD_RESPONSE.replace(b"Connection: Upgrade\r\n", b""), {}),
        (GOOD_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"), {}),
        (
            GOOD_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: a, b\r\n\r\n"),
            {"subprotocols": ["a", "b"]},
        ),
        (GOOD_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: x-foo\r\n\r\n"), {}),
        (
            GOOD_RESPONSE.replace(
                b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            ),
            {},
        ),
        (
            GOOD_RESPONSE.replace(
                b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate; foo\r\n\r\n"
            ),
            {"deflate": DeflateParams()},
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", {}),
        (b"HTTP/1.1 1O1 Switching\r\n\r\n", {}),
    ],
)
def test_client_rejects_bad_responses(response: bytes, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidHandshake) as info:
        client_response(response, **kwargs)
    assert not isinstance(info.value, UpgradeRefused)


def test_client_accepts_chosen_subprotocol_and_deflate() -> None:
    response = GOOD_RESPONSE.replace(
        b"\r\n\r\n",
        b"\r\nSec-WebSocket-Protocol: b\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n\r\n",
    )
    got = client_response(response, subprotocols=["a", "b"], deflate=DeflateParams())
    assert got.subprotocol == "b"  # type: ignore[attr-defined]
    assert got.deflate == DeflateParams(server_max_window_bits=10)  # type: ignore[attr-defined]


def test_client_response_incomplete_and_too_long() -> None:
    assert client_response(GOOD_RESPONSE[:-1]) is None
    with pytest.raises(InvalidHandshake):
        client_response(b"HTTP/1.1 101 " + b"x" * (MAX_LINE + 10))


# --- helpers ------------------------------------------------------------------------------


def test_parse_extension_header() -> None:
    assert parse_extension_header(
        [
            'permessage-deflate; client_max_window_bits; server_max_window_bits="10", x-foo',
            "permessage-deflate",
        ]
    ) == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
        ("permessage-deflate", []),
    ]
    with pytest.raises(InvalidHandshake):
        parse_extension_header(["permessage-deflate; a=b c"])
    with pytest.raises(InvalidHandshake):
        parse_extension_header(['permessage-deflate; a="unterminated'])


def test_headers_lookup() -> None:
    headers = Headers([("A", "1"), ("a", "2, 3"), ("B", "x")])
    assert headers.get_all("a") == ["1", "2, 3"]
    assert headers.tokens("A") == ["1", "2", "3"]
    assert "b" in headers and "c" not in headers
    with pytest.raises(InvalidHandshake):
        headers.get("a")


# --- a handshake split across reads (issue 13, items 1 and 2) -----------------------------


def _read_in_two(
    proto: Protocol, first: bytes, second: bytes, step: Callable[[], object]
) -> list[object]:
    """Feed ``first`` then ``second`` as the I/O layer does (read_buffer, commit, step)."""
    results = []
    for part in (first, second):
        view = proto.read_buffer()  # issue 13 item 1: raised on HTTP bytes read as a frame
        view[: len(part)] = part
        proto.buffer.commit(len(part))
        results.append(step())
    return results


@pytest.mark.parametrize("split", range(1, len(RFC_REQUEST)))
def test_request_split_at_every_byte_is_accepted(split: int) -> None:
    server = Protocol(Side.SERVER, state=State.CONNECTING)
    hs = ServerHandshake()
    frame = b"\x81\x82" + bytes(4) + b"hi"  # an early frame after the request
    first, second = _read_in_two(
        server,
        RFC_REQUEST[:split],
        RFC_REQUEST[split:] + frame,
        lambda: hs.receive_request(server.buffer),
    )
    assert first is None
    assert isinstance(second, Accepted)
    server.open()
    assert server.events_received() == [Message(b"hi", text=True)]


@pytest.mark.parametrize("split", range(1, len(GOOD_RESPONSE)))
def test_response_split_at_every_byte_is_accepted(split: int) -> None:
    client = Protocol(Side.CLIENT, state=State.CONNECTING)
    hs = ClientHandshake("h", key=RFC_KEY)
    first, second = _read_in_two(
        client,
        GOOD_RESPONSE[:split],
        GOOD_RESPONSE[split:] + b"\x81\x02hi",
        lambda: hs.receive_response(client.buffer),
    )
    assert first is None
    assert isinstance(second, HandshakeResponse)
    client.open()
    assert client.events_received() == [Message(b"hi", text=True)]


@pytest.mark.parametrize(
    "start",
    [
        b"\x16\x03\x01\x00\x05hello",  # a TLS ClientHello to a plain server (item 2)
        b"\x16",
        b"GE\x16",
        b"GET\x00",
        b"\r\n\x80",
        b"PRI\t* HTTP/2.0",
    ],
)
def test_bytes_that_cannot_start_a_request_are_400_at_once(start: bytes) -> None:
    result = ServerHandshake().receive_request(buffer_of(start))
    assert isinstance(result, Rejected) and result.status_code == 400
    assert "not an HTTP request" in result.message


@pytest.mark.parametrize("start", [b"G", b"GET", b"GET ", b"\r\nGET /x", b"M-SEARCH * HTTP/1.1"])
def test_a_plausible_start_waits_for_more(start: bytes) -> None:
    assert ServerHandshake().receive_request(buffer_of(start)) is None


@pytest.mark.parametrize("start", [b"\x16\x03\x01", b"HTTX", b"<html>", b"SSH-2.0-OpenSSH"])
def test_bytes_that_cannot_start_a_response_fail_at_once(start: bytes) -> None:
    with pytest.raises(InvalidHandshake, match="not an HTTP response"):
        client_response(start)


@pytest.mark.parametrize("start", [b"H", b"HTTP", b"HTTP/1.1 10"])
def test_a_plausible_response_start_waits_for_more(start: bytes) -> None:
    assert client_response(start) is None


def test_endless_empty_lines_before_the_request_are_refused() -> None:
    # RFC 7230 3.5 allows some; without a bound they would fill the buffer.
    assert serve(b"\r\n" * 3 + RFC_REQUEST).__class__ is Accepted
    rejected(b"\r\n" * (MAX_HEADERS + 1), 400)
