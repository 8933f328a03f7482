"""net/ws_reconnect.py and net/ws_dial.py in-process: the input kept across connections, and
the reconnect loop giving up (or not retrying) on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from netkit.core.addresses import parse_ws_url
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.expect import Expectation
from netkit.core.ws.http import UpgradeRefused
from netkit.core.ws.reconnect import Reason, ReconnectPlan, ResendPolicy
from netkit.core.ws.tunnel import ProxyURL
from netkit.errors import ConfigError, ConnectError
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.ws_dial import Dialer, tls_per_url
from netkit.net.ws_reconnect import ReconnectAttempt, ResumableInput, run_reconnecting
from netkit.net.ws_session import Outgoing, Session, Settings

pytestmark = pytest.mark.timeout(20)


def settings(url: str, *messages: str) -> Settings:
    return Settings(
        url=parse_ws_url(url),
        outgoing=[Outgoing(m.encode(), True) for m in messages],
        binary=False,
        expectation=Expectation(None, ()),
        timeout=None,
        close_timeout=1.0,
        close_code=None,
        close_reason="",
        read_stdin=False,
        interactive=False,
    )


def dialer(url: str) -> Dialer:
    target = parse_ws_url(url)
    return Dialer(
        target,
        lambda to: WebSocketClientConnection(ClientHandshake.from_url(to)),
        tls_per_url(None),
        timeout=2.0,
    )


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}/"


def test_resumable_input_gives_back_what_was_not_sent_then_ends(run) -> None:
    async def main() -> None:
        feed = ResumableInput(settings("ws://h/", "a", "b"), ResendPolicy.UNACKNOWLEDGED)
        a = await feed.next()
        assert a is not None and a.data == b"a"
        feed.sent(a)
        b = await feed.next()
        assert b is not None
        feed.unsent(b)  # the connection was closing
        assert feed.ledger.rewind().resent == 1  # "a": sent, never acknowledged
        assert [(await feed.next()), (await feed.next())] == [a, b]
        assert await feed.next() is None
        assert await feed.next() is None  # stays ended
        feed.close()

    run(main())


def test_run_reconnecting_gives_up_with_the_last_error(run) -> None:
    url = refused_url()
    attempts: list[ReconnectAttempt] = []

    async def main() -> None:
        feed = ResumableInput(settings(url, "x"), ResendPolicy.NONE)
        plan = ReconnectPlan(first=0.001, cap=0.004, attempts=3, seed=1)
        await run_reconnecting(
            dialer(url),
            plan,
            lambda conn, given: Session(conn, settings(url), NotUsed(), feed=given),
            feed,
            on_retry=attempts.append,
        )

    with pytest.raises(ConnectError, match="refused"):
        run(main())
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert {a.reason for a in attempts} == {Reason.REFUSED}
    assert all(0.0005 <= a.delay <= 0.004 for a in attempts)


def test_run_reconnecting_does_not_retry_a_refused_upgrade(run) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/"
    attempts: list[ReconnectAttempt] = []

    async def main() -> None:
        async def answer_404() -> None:
            loop = asyncio.get_running_loop()
            listener.setblocking(False)
            conn, _ = await loop.sock_accept(listener)
            await loop.sock_recv(conn, 4096)
            await loop.sock_sendall(conn, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            conn.close()

        server = asyncio.create_task(answer_404())
        feed = ResumableInput(settings(url), ResendPolicy.NONE)
        try:
            await run_reconnecting(
                dialer(url),
                ReconnectPlan(first=0.001, cap=0.002),
                lambda conn, given: Session(conn, settings(url), NotUsed(), feed=given),
                feed,
                on_retry=attempts.append,
            )
        finally:
            await server

    try:
        with pytest.raises(UpgradeRefused):
            run(main())
    finally:
        listener.close()
    assert attempts == []


def test_dialer_refuses_a_proxy_for_a_unix_url() -> None:
    with pytest.raises(ConfigError, match="ws\\+unix"):
        Dialer(
            parse_ws_url("ws+unix:///tmp/x.sock"),
            lambda to: WebSocketClientConnection(ClientHandshake.from_url(to)),
            tls_per_url(None),
            proxy=ProxyURL("127.0.0.1", 3128),
        )


class NotUsed:
    """A session view for runs that never open a connection."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"no session should have run ({name})")
