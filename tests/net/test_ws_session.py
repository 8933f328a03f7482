"""ws-client's session (netkit.net.ws_session) in process, against netkit's own WebSocket echo
server on loopback: what it sends and receives, when it stops, and its verdict."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import WSURL, parse_ws_url
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.expect import Expectation
from netkit.core.ws.server import ServerHandshake
from netkit.errors import CheckFailed
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import EchoClientConnection, WebSocketClientConnection, connect_ws
from netkit.net.ws_server import HandlerConnection, Mode, ModeConnection, Room
from netkit.net.ws_session import Outgoing, Session, Settings

if TYPE_CHECKING:
    from conftest import Runner, Serve

pytestmark = pytest.mark.timeout(30)


@dataclass
class RecordingView:
    """A SessionView that writes down what it was shown."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def opened(self, session: Session) -> None:
        self.events.append(("opened", None))

    def sent(self, data: bytes, text: bool) -> None:
        self.events.append(("sent", data))

    def received(self, is_text: bool, data: bytes) -> None:
        self.events.append(("received", data))

    def pong(self, rtt: float, *, keepalive: bool) -> None:
        self.events.append(("pong", keepalive))

    def prompt(self) -> None:
        self.events.append(("prompt", None))

    def line_entered(self) -> None:
        self.events.append(("line", None))

    def notice(self, line: str) -> None:
        self.events.append(("notice", line))

    def closed(self, session: Session, *, clean_exit: bool) -> None:
        self.events.append(("closed", clean_exit))


def echo_factory() -> Any:
    room = Room()
    return lambda: ModeConnection(
        ServerHandshake(),
        mode=Mode.ECHO,
        room=room,
        log=None,
        log_messages=False,
        max_size=1 << 20,
        timeouts=WSTimeouts(ping_interval=None),
    )


def settings(url: WSURL, messages: list[bytes], expectation: Expectation) -> Settings:
    return Settings(
        url=url,
        outgoing=[Outgoing(m, True) for m in messages],
        binary=False,
        expectation=expectation,
        timeout=None,
        close_timeout=5.0,
        close_code=None,
        close_reason="",
        read_stdin=False,
        interactive=False,
    )


async def open_session(h: Any, s: Settings, deadline: float | None = None) -> Session:
    url = s.url
    connection = EchoClientConnection if s.echo else WebSocketClientConnection
    conn = await connect_ws(
        url,
        lambda: connection(
            ClientHandshake(url.host_header, url.resource), timeouts=WSTimeouts(ping_interval=None)
        ),
        ssl_context=None,
        timeout=5,
    )
    return Session(conn, s, RecordingView(), deadline=deadline)


def url_of(h: Any) -> WSURL:
    return parse_ws_url(f"ws://127.0.0.1:{h.endpoint.port}/")


def test_input_ended_closes_after_the_echoes_arrive(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(echo_factory()) as h:
            session = await open_session(h, settings(url_of(h), [b"a", b"b"], Expectation()))
            await session.run()  # returns: success
            view = session.view
            assert isinstance(view, RecordingView)
            assert view.events[0] == ("opened", None) and view.events[-1] == ("closed", True)
            middle = view.events[1:-1]
            assert [e for e in middle if e[0] == "sent"] == [("sent", b"a"), ("sent", b"b")]
            assert [e for e in middle if e[0] == "received"] == [
                ("received", b"a"),
                ("received", b"b"),
            ]
            assert session.conn.initiated_close and session.conn.close_code == 1000
            assert (session.sent_count, session.sent_bytes, session.received_bytes) == (2, 2, 2)

    run(main())


def test_a_satisfied_expectation_stops_the_session(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(echo_factory()) as h:
            expect = Expectation(patterns=(re.compile("^two$"),))
            s = settings(url_of(h), [b"one", b"two", b"three"], expect)
            session = await open_session(h, s)
            await session.run()
            assert expect.matched == 1 and expect.received == 2

    run(main())


def test_an_unmet_count_fails_when_the_deadline_passes(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(echo_factory()) as h:
            s = settings(url_of(h), [b"x", b"y"], Expectation(count=3))
            s.timeout = 0.5
            deadline = asyncio.get_running_loop().time() + 0.5
            session = await open_session(h, s, deadline)
            with pytest.raises(CheckFailed) as info:
                await session.run()
            assert str(info.value) == "count 3: 2 messages received within 0.5s"
            view = session.view
            assert isinstance(view, RecordingView) and view.events[-1] == ("closed", False)

    run(main())


def test_echo_sends_each_message_back_until_the_server_closes(run: Runner, serve: Serve) -> None:
    echoed: list[tuple[bool, bytes] | None] = []

    async def drive(conn: Any) -> None:
        for data, text in ((b"t", True), (b"\x00\xff", False), (b"x" * 100_000, True)):
            conn.send(data, text=text)
            echoed.append(await conn.receive())
        await conn.close_and_wait(1000, "done")

    tasks: set[asyncio.Task[None]] = set()

    def factory() -> Any:
        return HandlerConnection(
            ServerHandshake(), drive, tasks=tasks, on_error=echoed.append, max_size=1 << 20,
            timeouts=WSTimeouts(ping_interval=None),
        )  # fmt: skip

    async def main() -> None:
        async with serve(factory) as h:
            s = settings(url_of(h), [], Expectation())
            s.echo = True  # no input of its own: the end of it must not close the connection
            session = await open_session(h, s)
            await session.run()  # returns: the server closed with 1000
            assert echoed == [(True, b"t"), (False, b"\x00\xff"), (True, b"x" * 100_000)]
            view = session.view
            assert isinstance(view, RecordingView)
            assert [kind for kind, _ in view.events[1:-1]] == ["received", "sent"] * 3
            assert session.conn.close_initiator == "server" and session.conn.close_code == 1000
            assert session.sent_count == 3 and session.sent_bytes == session.received_bytes

    run(main())
