"""Tests for netkit.core.ws.server and netkit.core.ws.client: the two sides' protocols, the
opening handshake included, paired in memory (after h11's ConnectionPair), and the ping
tracker of netkit.core.ws.pings."""

from __future__ import annotations

import pytest

from netkit.core.addresses import parse_endpoint, parse_ws_url
from netkit.core.ws.client import ClientHandshake, ClientProtocol
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import (
    Accepted,
    CloseReceived,
    ConnectionClosed,
    Event,
    HandshakeResponse,
    HealthCheck,
    Message,
    Rejected,
)
from netkit.core.ws.http import UpgradeRefused
from netkit.core.ws.pings import PingTracker
from netkit.core.ws.protocol import Protocol, State
from netkit.core.ws.server import ServerHandshake, ServerProtocol, listen_address, server_url
from netkit.errors import ConfigError, EndpointError, LocalProtocolError

URL = parse_ws_url("ws://user:pw@example.test:8080/chat?room=1")


class SidesPair:
    """A :class:`ClientProtocol` and a :class:`ServerProtocol` back to back, from the request on."""

    def __init__(
        self,
        policy: ServerHandshake | None = None,
        handshake: ClientHandshake | None = None,
    ) -> None:
        self.client = ClientProtocol(handshake or ClientHandshake.from_url(URL))
        self.server = ServerProtocol(policy or ServerHandshake())

    def send(self, proto: Protocol) -> list[Event]:
        other = self.server if proto is self.client else self.client
        for buf in proto.data_to_send():
            other.receive_data(buf)
        return other.events_received()

    def open(self) -> tuple[list[Event], list[Event]]:
        self.client.send_request()
        return self.send(self.client), self.send(self.server)


def test_the_opening_handshake_opens_both_sides() -> None:
    pair = SidesPair(ServerHandshake(subprotocols=("chat",), deflate=DeflateParams()))
    pair.client.handshake = ClientHandshake.from_url(URL, subprotocols=["chat"], compress=True)
    on_server, on_client = pair.open()
    (accepted,) = on_server
    assert isinstance(accepted, Accepted)
    assert accepted.request.target == "/chat?room=1" and accepted.subprotocol == "chat"
    (response,) = on_client
    assert isinstance(response, HandshakeResponse) and response.subprotocol == "chat"
    assert pair.client.state is State.OPEN and pair.server.state is State.OPEN
    assert pair.client.deflate is not None and pair.server.deflate is not None
    pair.client.send_text("hello")
    (message,) = pair.send(pair.client)
    assert isinstance(message, Message) and message.as_text() == "hello"


def test_frames_right_behind_the_request_are_parsed_once_open() -> None:
    pair = SidesPair()
    pair.client.send_request()
    (request,) = pair.client.data_to_send()
    # A masked "hi" (zero key) in the same read as the request head.
    pair.server.receive_data(bytes(request) + b"\x81\x82\x00\x00\x00\x00hi")
    accepted, message = pair.server.events_received()
    assert isinstance(accepted, Accepted)
    assert isinstance(message, Message) and bytes(message.data) == b"hi"


def test_frames_right_behind_the_101_are_parsed_once_open() -> None:
    pair = SidesPair()
    pair.client.send_request()
    pair.send(pair.client)
    (response,) = pair.server.data_to_send()
    pair.client.receive_data(bytes(response) + b"\x82\x02ok")
    opened, message = pair.client.events_received()
    assert isinstance(opened, HandshakeResponse)
    assert isinstance(message, Message) and bytes(message.data) == b"ok"


def test_a_refused_request_is_answered_and_what_follows_is_dropped() -> None:
    pair = SidesPair(ServerHandshake(paths={"/other"}))
    pair.client.send_request()
    (rejected,) = pair.send(pair.client)
    assert isinstance(rejected, Rejected) and rejected.status_code == 404
    assert pair.server.answered and pair.server.state is State.CONNECTING
    assert b"".join(bytes(b) for b in pair.server.data_to_send()) == rejected.response
    pair.server.receive_data(b"more bytes from the client")
    assert pair.server.events_received() == []
    assert len(pair.server.buffer) == 0
    pair.server.receive_eof()
    (closed,) = pair.server.events_received()
    assert isinstance(closed, ConnectionClosed) and closed.code == 1006


def test_the_client_raises_on_a_refusal() -> None:
    pair = SidesPair(ServerHandshake(paths={"/other"}))
    pair.client.send_request()
    pair.send(pair.client)
    with pytest.raises(UpgradeRefused) as refused:
        pair.send(pair.server)
    assert refused.value.status_code == 404
    assert pair.client.state is State.CONNECTING


def test_the_health_path_is_answered_without_upgrade() -> None:
    server = ServerProtocol(ServerHandshake())
    server.receive_data(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    (health,) = server.events_received()
    assert isinstance(health, HealthCheck)
    assert b"".join(bytes(b) for b in server.data_to_send()).endswith(b"\r\n\r\nok\n")
    assert server.answered


def test_turn_away_answers_503_once() -> None:
    server = ServerProtocol(ServerHandshake())
    server.turn_away("at the connection limit (1)")
    (rejected,) = server.events_received()
    assert isinstance(rejected, Rejected) and rejected.status_code == 503
    sent = b"".join(bytes(b) for b in server.data_to_send())
    assert sent.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in sent
    with pytest.raises(LocalProtocolError):
        server.turn_away("again")


def test_a_closing_handshake_between_the_sides() -> None:
    pair = SidesPair()
    pair.open()
    pair.client.send_close(1000, "bye")
    (received,) = pair.send(pair.client)
    assert received == CloseReceived(1000, "bye")
    assert pair.server.should_close_transport()
    (echo,) = pair.send(pair.server)
    assert echo == CloseReceived(1000, "")


def test_from_url_takes_host_resource_and_credentials() -> None:
    request = ClientHandshake.from_url(URL).request()
    assert request.startswith(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.test:8080\r\n")
    assert b"\r\nAuthorization: Basic dXNlcjpwdw==\r\n" in request


def test_from_url_lets_host_and_origin_replace_the_defaults() -> None:
    handshake = ClientHandshake.from_url(
        URL, headers=[("Host", "other.test"), ("Origin", "https://a.test"), ("X-A", "1")]
    )
    assert handshake.host == "other.test" and handshake.origin == "https://a.test"
    assert handshake.extra_headers == (("X-A", "1"),)


@pytest.mark.parametrize(
    ("headers", "subprotocols", "origin", "why"),
    [
        ([("Bad Name", "v")], [], None, "not an HTTP token"),
        ([("X-A", "a\r\nb")], [], None, "line break"),
        ([("Upgrade", "h2c")], [], None, "sets this header itself"),
        ([("Authorization", "Bearer t")], [], None, "pick one"),
        ([], ["not a token"], None, "not a valid token"),
        ([], [], "https://a\n", "line break"),
    ],
)
def test_from_url_refuses_what_would_break_the_request(
    headers: list[tuple[str, str]], subprotocols: list[str], origin: str | None, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        ClientHandshake.from_url(URL, headers=headers, subprotocols=subprotocols, origin=origin)


def test_listen_address_splits_a_url() -> None:
    endpoint, secure, path = listen_address("wss://127.0.0.1:9000/chat?x=1")
    assert endpoint == parse_endpoint("127.0.0.1:9000") and secure and path == "/chat"
    assert listen_address("ws://127.0.0.1:9000/")[2] is None
    assert listen_address("127.0.0.1:9000") == (parse_endpoint("127.0.0.1:9000"), False, None)
    with pytest.raises(EndpointError):
        listen_address("udp:127.0.0.1:9000")


def test_server_url() -> None:
    assert server_url("127.0.0.1:8765", False, "/chat") == "ws://127.0.0.1:8765/chat"
    assert server_url("unix:/tmp/s.sock", True) == "wss+unix:///tmp/s.sock:/"


def test_ping_tracker_matches_pongs_by_payload() -> None:
    tracker = PingTracker()
    answers: list[tuple[str, float | None]] = []
    first = tracker.new_payload()
    tracker.sent(first, 1.0, lambda rtt: answers.append(("first", rtt)))
    tracker.sent(b"mine", 2.0, lambda rtt: answers.append(("mine", rtt)))
    assert len(first) == 4 and len(tracker) == 2
    assert tracker.pong(b"unknown", 3.0) is None
    assert tracker.pong(b"mine", 2.5) == 0.5
    assert tracker.pong(b"mine", 2.6) is None  # answered once
    tracker.clear()
    assert answers == [("mine", 0.5), ("first", None)]
    assert len(tracker) == 0
