"""Property tests of the opening handshake parsers against arbitrary and almost-valid input.

Requests and responses are built from a grammar that knows the headers that matter (Upgrade,
Connection, the Sec-WebSocket-* family, permessage-deflate parameters) and then damaged at
random, so the properties reach every branch of the decision, not only the first line check:

- the server never raises: it answers every request, or waits for more;
- the client raises nothing but :class:`InvalidHandshake` (a :class:`PeerProtocolError`);
- neither answer depends on how the bytes were split into reads;
- a client's request is accepted by a server that accepts everything, and both sides agree on
  the subprotocol and the permessage-deflate parameters.
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.deflate import DeflateParams, InvalidExtension, accept_offer, accept_response
from netkit.core.ws.events import Accepted, HandshakeResponse, Rejected
from netkit.core.ws.events import HealthCheck as Health
from netkit.core.ws.handshake import accept_key
from netkit.core.ws.http import InvalidHandshake, UpgradeRefused, parse_extension_header
from netkit.core.ws.server import ServerHandshake
from netkit.errors import PeerProtocolError

# NETKIT_FUZZ_EXAMPLES=5000 runs every property longer, to hunt rather than to check.
EXAMPLES = int(os.environ.get("NETKIT_FUZZ_EXAMPLES", "0")) or 60
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def cuts_for(data: st.DataObject, size: int) -> list[int]:
    return data.draw(st.lists(st.integers(0, size), max_size=6), label="cuts")


# --- grammar ----------------------------------------------------------------------------------

tokens = st.from_regex(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,10}", fullmatch=True)
subprotocol_names = st.sampled_from(["chat", "superchat", "v2.json", "mqtt"])
good_bits = st.sampled_from(["8", "9", "12", "15", '"10"'])
bad_bits = st.sampled_from(["0", "7", "16", "08", "1x", '"1', "", '"\\1\\0"'])
flags = ["server_no_context_takeover", "client_no_context_takeover"]
windows = ["server_max_window_bits", "client_max_window_bits"]


@st.composite
def deflate_param(draw: st.DrawFn) -> str:
    """One parameter, usually well formed (RFC 7692 7.1), sometimes not."""
    name = draw(st.sampled_from([*flags, *windows]))
    if rarely(draw, 6):
        name = draw(st.sampled_from([name.upper(), "x_unknown"]) | tokens)
    if name in flags:
        value = draw(bad_bits | tokens) if rarely(draw, 6) else None
    elif name == "client_max_window_bits" and draw(st.booleans()):
        value = None  # bare: "I can honour a limit" (7.1.2.2)
    else:
        value = draw(bad_bits | tokens) if rarely(draw, 6) else draw(good_bits)
    return name if value is None else f"{name}={value}"


@st.composite
def extension_values(draw: st.DrawFn) -> str:
    """A Sec-WebSocket-Extensions value: mostly permessage-deflate offers, some malformed."""
    elements = []
    for _ in range(draw(st.integers(0, 3))):
        name = "permessage-deflate"
        if rarely(draw, 4):
            name = draw(st.sampled_from(["PerMessage-Deflate", "x-webkit-deflate-frame"]) | tokens)
        params = draw(st.lists(deflate_param(), max_size=4))
        elements.append(draw(st.sampled_from(["; ", ";", " ; "])).join([name, *params]))
    value = draw(st.sampled_from([", ", ",", " ,, "])).join(elements)
    return draw(st.text(max_size=30)) if rarely(draw, 10) else value


@st.composite
def damaged(draw: st.DrawFn, head: bytes) -> bytes:
    """``head`` with a few bytes flipped, dropped or inserted, and perhaps an early frame after."""
    data = bytearray(head)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2]))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif action == "drop" and data:
            del data[pos]
        else:
            data[pos:pos] = draw(
                st.sampled_from([b"\r", b"\n", b":", b",", b'"', b"\x00", b"\xff"])
            )
    early_frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    return bytes(data) + draw(st.sampled_from([b"", early_frame]))


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws (False is what Hypothesis shrinks towards)."""
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


def usually(draw: st.DrawFn, good: str, bad: st.SearchStrategy[str], one_in: int = 8) -> str:
    """``good``, or about once in ``one_in`` draws something drawn from ``bad``."""
    return draw(bad) if rarely(draw, one_in) else good


def spelled(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name, name.lower(), name.upper()]))


junk_lines = st.one_of(
    st.tuples(tokens, st.text(max_size=20)).map(lambda nv: f"{nv[0]}: {nv[1]}"),
    st.text(max_size=30),  # anything at all: continuation lines, bare colons, non-ASCII
    st.integers(8180, 8200).map(lambda n: "X-Long: " + "a" * n),  # around MAX_LINE
)


@st.composite
def head(
    draw: st.DrawFn, start: str, required: list[tuple[str, str]], optional: list[tuple[str, str]]
) -> bytes:
    """An HTTP head: each required header is usually there, optional ones sometimes, in any
    order, with a junk line now and then; then damaged a little (see :func:`damaged`)."""
    lines = [f"{spelled(draw, n)}: {v}" for n, v in required if not rarely(draw, 20)]
    lines += [f"{spelled(draw, n)}: {v}" for n, v in optional if draw(st.booleans())]
    lines += draw(st.lists(junk_lines, max_size=2)) if rarely(draw, 5) else []
    lines = list(draw(st.permutations(lines)))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    text = eol.join([start, *lines]) + eol + eol
    return draw(damaged(text.encode("utf-8", "surrogatepass")))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = usually(draw, "GET", st.sampled_from(["POST", "get", "GET "]))
    target = draw(st.sampled_from(["/", "/chat", "/chat", "/health", "/chat?x=1", "*", "/a b"]))
    version = usually(draw, "HTTP/1.1", st.sampled_from(["HTTP/1.0", "HTTP/2", "FTP/1"]))
    start = usually(draw, f"{method} {target} {version}", st.text(max_size=30), one_in=10)
    bad_key = st.one_of(
        st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=30)
    )
    good_key = base64.b64encode(draw(st.binary(min_size=16, max_size=16))).decode()
    required = [
        ("Host", usually(draw, "example.test", st.sampled_from(["127.0.0.1:80", ""]))),
        (
            "Upgrade",
            usually(draw, "websocket", st.sampled_from(["WebSocket", "h2c, websocket", "h2c", ""])),
        ),
        (
            "Connection",
            usually(draw, "Upgrade", st.sampled_from(["keep-alive, upgrade", "close", ""])),
        ),
        ("Sec-WebSocket-Key", usually(draw, good_key, bad_key)),
        ("Sec-WebSocket-Version", usually(draw, "13", st.sampled_from(["8", "13, 8", ""]))),
    ]
    optional = [
        ("Origin", draw(st.sampled_from(["http://ok.test", "http://evil.test", ""]))),
        (
            "Sec-WebSocket-Protocol",
            ", ".join(draw(st.lists(subprotocol_names | tokens, max_size=3))),
        ),
        ("Sec-WebSocket-Extensions", draw(extension_values())),
        ("Sec-WebSocket-Extensions", draw(extension_values())),
    ]
    return draw(head(f"{start}", required, optional))


@st.composite
def server_configs(draw: st.DrawFn) -> ServerHandshake:
    return ServerHandshake(
        paths=draw(st.sampled_from([None, {"/chat"}, {"/", "/chat"}])),
        origins=draw(st.sampled_from([None, {"http://ok.test"}, {"http://ok.test", None}])),
        subprotocols=draw(st.lists(subprotocol_names, unique=True, max_size=3)),
        deflate=draw(st.none() | deflate_configs()),
        health_path=draw(st.sampled_from(["/health", None])),
    )


def deflate_configs() -> st.SearchStrategy[DeflateParams]:
    bits = st.none() | st.integers(8, 15)
    return st.builds(
        DeflateParams,
        server_no_context_takeover=st.booleans(),
        client_no_context_takeover=st.booleans(),
        server_max_window_bits=bits,
        client_max_window_bits=bits,
    )


# --- server -----------------------------------------------------------------------------------


@dataclass
class ServerOutcome:
    kind: str | None
    status: int | None
    response: bytes | None
    left: bytes


def serve_chunks(server: ServerHandshake, chunks: list[bytes]) -> ServerOutcome:
    """Feed reads one at a time until the server decides; it must never raise."""
    buf = ReceiveBuffer()
    result = None
    for chunk in chunks:
        buf.extend(chunk)
        if result is None:
            result = server.receive_request(buf)
    left = bytes(buf.view())
    if result is None:
        return ServerOutcome(None, None, None, left)
    status = result.status_code if isinstance(result, Rejected) else None
    return ServerOutcome(type(result).__name__, status, result.response, left)


def check_server_result(server: ServerHandshake, request: bytes) -> None:
    result = server.receive_request(_buffer(request))
    if result is None:
        return
    if isinstance(result, Rejected):
        assert result.status_code in (400, 403, 404, 405, 426, 431)
        assert result.response.startswith(f"HTTP/1.1 {result.status_code} ".encode())
        assert b"\r\nConnection: close\r\n" in result.response
        return
    assert result.request.method == "GET"
    if isinstance(result, Health):
        assert result.request.path == server.health_path
        assert result.response.startswith(b"HTTP/1.1 200 OK\r\n")
        return
    assert isinstance(result, Accepted)
    headers = result.request.headers
    assert result.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert result.response.endswith(b"\r\n\r\n")
    key = headers.get("Sec-WebSocket-Key")
    assert key is not None
    assert f"\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n".encode() in result.response
    if server.paths is not None:
        assert result.request.path in server.paths
    if server.origins is not None:
        assert headers.get("Origin") in server.origins
    if result.subprotocol is not None:
        assert result.subprotocol in server.subprotocols
        assert result.subprotocol in headers.tokens("Sec-WebSocket-Protocol")
    if result.deflate is not None:
        assert server.deflate is not None
        offers = headers.get_all("Sec-WebSocket-Extensions")
        assert any("permessage-deflate" in offer.lower() for offer in offers)


def _buffer(data: bytes) -> ReceiveBuffer:
    buf = ReceiveBuffer()
    buf.extend(data)
    return buf


@FUZZ
@given(requests(), server_configs(), st.data())
def test_server_answers_any_request_the_same_however_it_is_split(
    request: bytes, server: ServerHandshake, data: st.DataObject
) -> None:
    whole = serve_chunks(server, [request])
    assert serve_chunks(server, split(request, cuts_for(data, len(request)))) == whole
    check_server_result(server, request)


@settings(max_examples=max(EXAMPLES, 100), deadline=None)
@given(st.binary(max_size=200), server_configs())
def test_server_never_raises_on_random_bytes(request: bytes, server: ServerHandshake) -> None:
    check_server_result(server, request)


# --- client and server together -------------------------------------------------------------


@st.composite
def clients(draw: st.DrawFn) -> ClientHandshake:
    return ClientHandshake(
        draw(st.sampled_from(["example.test", "127.0.0.1:7007", "[::1]:80", "ünï.test"])),
        draw(st.sampled_from(["/", "/chat", "/chat?room=1", "/health"])),
        origin=draw(st.sampled_from([None, "http://ok.test", "http://evil.test"])),
        subprotocols=draw(st.lists(subprotocol_names, unique=True, max_size=3)),
        deflate=draw(st.none() | deflate_configs()),
        extra_headers=draw(
            st.lists(st.tuples(tokens, st.from_regex(r"[ -~]{0,20}", fullmatch=True)), max_size=3)
        ),
        user=draw(st.none() | st.text(max_size=8)),
        password=draw(st.none() | st.text(max_size=8)),
    )


@FUZZ
@given(clients(), server_configs(), st.data())
def test_client_and_server_agree_or_the_client_sees_the_refusal(
    client: ClientHandshake, server: ServerHandshake, data: st.DataObject
) -> None:
    request = client.request()
    result = serve_chunks(server, split(request, cuts_for(data, len(request))))
    assert result.kind is not None and result.response is not None
    assert result.left == b""
    decided = server.receive_request(_buffer(request))
    response = result.response + b"\x81\x00"  # an early frame must stay in the buffer
    buf = ReceiveBuffer()
    answer: HandshakeResponse | None = None
    try:
        for chunk in split(response, cuts_for(data, len(response))):
            buf.extend(chunk)
            if answer is None:
                answer = client.receive_response(buf)
    except UpgradeRefused as exc:
        assert isinstance(decided, Rejected)
        assert exc.status_code == decided.status_code
        return
    assert isinstance(decided, Accepted), decided
    assert answer is not None
    assert bytes(buf.view()) == b"\x81\x00"
    assert answer.subprotocol == decided.subprotocol
    if server.subprotocols and client.subprotocols:
        # Server preference wins (websockets' rule); no overlap means no subprotocol.
        overlap = [p for p in server.subprotocols if p in client.subprotocols]
        assert answer.subprotocol == (overlap[0] if overlap else None)
    agreed = (answer.deflate, decided.deflate)
    if client.deflate is None or server.deflate is None:
        assert agreed == (None, None)
    else:
        fields = [
            (
                d.server_no_context_takeover,
                d.client_no_context_takeover,
                d.server_max_window_bits,
                d.client_max_window_bits,
            )
            if d is not None
            else None
            for d in agreed
        ]
        assert fields[0] == fields[1]


# --- client on hostile responses ------------------------------------------------------------


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = usually(
        draw,
        "HTTP/1.1 101 Switching Protocols",
        st.sampled_from(["HTTP/1.0 101", "HTTP/1.1 403 Forbidden", "HTTP/1.1 1010 x", "HTTP/2 101"])
        | st.text(max_size=25),
    )
    required = [
        ("Upgrade", usually(draw, "websocket", st.sampled_from(["WebSocket", "h2c", ""]))),
        ("Connection", usually(draw, "Upgrade", st.sampled_from(["keep-alive, upgrade", "close"]))),
        (
            "Sec-WebSocket-Accept",
            usually(draw, accept_key(KEY), st.sampled_from([accept_key("x"), ""])),
        ),
    ]
    optional = [
        (
            "Sec-WebSocket-Protocol",
            ", ".join(draw(st.lists(subprotocol_names | tokens, max_size=2))),
        ),
        ("Sec-WebSocket-Extensions", draw(extension_values())),
    ]
    return draw(head(status, required, optional))


def client_chunks(client: ClientHandshake, chunks: list[bytes]) -> tuple[object, ...]:
    buf = ReceiveBuffer()
    try:
        for chunk in chunks:
            buf.extend(chunk)
            if (answer := client.receive_response(buf)) is not None:
                return ("ok", answer.subprotocol, answer.deflate)
    except UpgradeRefused as exc:
        assert 0 <= exc.status_code <= 999
        return ("refused", exc.status_code, exc.reason)
    except InvalidHandshake as exc:
        assert exc.close_code is None  # no WebSocket connection yet: nothing to close
        return ("invalid", str(exc))
    return ("incomplete",)


@FUZZ
@given(
    responses(),
    st.lists(subprotocol_names, unique=True, max_size=2),
    st.none() | deflate_configs(),
    st.data(),
)
def test_client_raises_only_invalid_handshake_however_the_response_is_split(
    response: bytes, subprotocols: list[str], deflate: DeflateParams | None, data: st.DataObject
) -> None:
    client = ClientHandshake("example.test", subprotocols=subprotocols, deflate=deflate, key=KEY)
    whole = client_chunks(client, [response])
    assert client_chunks(client, split(response, cuts_for(data, len(response)))) == whole
    if whole[0] == "ok":
        assert whole[1] is None or whole[1] in subprotocols
        assert whole[2] is None or deflate is not None


# --- extension negotiation --------------------------------------------------------------------


@settings(max_examples=max(EXAMPLES, 100), deadline=None)
@given(st.lists(extension_values(), max_size=3), deflate_configs(), deflate_configs())
def test_extension_headers_parse_or_raise_invalid_handshake_and_never_break_negotiation(
    values: list[str], config: DeflateParams, offer: DeflateParams
) -> None:
    try:
        parsed = parse_extension_header(values)
    except InvalidHandshake:
        return
    agreed = accept_offer(parsed, config)  # invalid offers are declined, never raised
    if agreed is not None:
        # The server's answer serializes to a header that a client offering exactly that
        # reads back as the same agreement.
        ((name, params),) = parse_extension_header([agreed.response()])
        assert name == "permessage-deflate"
        same_offer = DeflateParams(
            server_no_context_takeover=agreed.server_no_context_takeover,
            server_max_window_bits=agreed.server_max_window_bits,
            client_max_window_bits=agreed.client_max_window_bits,
        )
        back = accept_response(params, same_offer)
        assert (back.server_no_context_takeover, back.client_no_context_takeover) == (
            agreed.server_no_context_takeover,
            agreed.client_no_context_takeover,
        )
        assert (back.server_max_window_bits, back.client_max_window_bits) == (
            agreed.server_max_window_bits,
            agreed.client_max_window_bits,
        )
    for _name, params in parsed:
        try:
            accept_response(params, offer)
        except InvalidExtension as exc:
            assert isinstance(exc, PeerProtocolError)
