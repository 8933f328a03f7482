"""``--record`` and ``--replay``'s I/O (netkit.net.ws_record, netkit.net.ws_replay) in process,
against netkit's own WebSocket servers on loopback: what a recording connection writes, and a
replay of it against the same server and against a server in another mode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import parse_ws_url
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.recording import Kind, Recorded
from netkit.core.ws.replay import DiffKind, ReplayCheck, ReplayPlan
from netkit.core.ws.server import ServerHandshake
from netkit.net.ws import WSTimeouts
from netkit.net.ws_client import WebSocketClientConnection, connect_ws
from netkit.net.ws_record import RecordFile, RecordingClientConnection, read_recording
from netkit.net.ws_replay import Replay
from netkit.net.ws_server import Mode, ModeConnection, Room

if TYPE_CHECKING:
    from conftest import Runner, Serve

pytestmark = pytest.mark.timeout(30)

NO_PINGS = WSTimeouts(ping_interval=None, close=5.0)


def server_factory(mode: Mode) -> Any:
    room = Room()
    return lambda: ModeConnection(
        ServerHandshake(),
        mode=mode,
        room=room,
        log=None,
        log_messages=False,
        max_size=1 << 20,
        timeouts=NO_PINGS,
    )


async def dial(h: Any, record: RecordFile | None = None) -> WebSocketClientConnection:
    url = parse_ws_url(f"ws://127.0.0.1:{h.endpoint.port}/")
    handshake = ClientHandshake(url.host_header, url.resource)

    def factory() -> WebSocketClientConnection:
        if record is None:
            return WebSocketClientConnection(handshake, timeouts=NO_PINGS)
        return RecordingClientConnection(handshake, timeouts=NO_PINGS, record=record)

    return await connect_ws(url, factory, ssl_context=None, timeout=5)


class View:
    """A ReplayView that keeps what it was shown."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, bytes]] = []

    def sent(self, data: bytes, text: bool) -> None:
        self.shown.append(("sent", data))

    def received(self, is_text: bool, data: bytes) -> None:
        self.shown.append(("received", data))


async def record_session(h: Any, path: Path) -> None:
    """Text, binary, a ping, then close 4000: the client's side of a session, recorded."""
    record = RecordFile(path, "ws://test/", ())
    conn = await dial(h, record)
    conn.send("hello", text=True)
    conn.send(b"\x00\x01", text=False)
    assert await conn.receive() == (True, b"hello")
    assert await conn.receive() == (False, b"\x00\x01")
    assert await conn.ping(b"p1") is not None
    await conn.close_and_wait(4000, "done")
    record.close()


def test_a_recording_connection_writes_every_event(run: Runner, serve: Serve, tmp_path: Path):
    path = tmp_path / "rec.jsonl"

    async def main() -> None:
        async with serve(server_factory(Mode.ECHO)) as h:
            await record_session(h, path)

    run(main())
    rec = read_recording(path)
    assert rec.url == "ws://test/" and rec.subprotocols == ()
    timeless = [
        Recorded(0, e.kind, e.sent, e.text, e.data, e.keepalive, e.code, e.reason, e.initiator)
        for e in rec.events
    ]
    assert timeless == [
        Recorded(0, Kind.OPEN),
        Recorded(0, Kind.SENT, sent=True, text=True, data=b"hello"),
        Recorded(0, Kind.SENT, sent=True, data=b"\x00\x01"),
        Recorded(0, Kind.RECEIVED, text=True, data=b"hello"),
        Recorded(0, Kind.RECEIVED, data=b"\x00\x01"),
        Recorded(0, Kind.PING, sent=True, data=b"p1"),
        Recorded(0, Kind.PONG, data=b"p1"),
        Recorded(0, Kind.CLOSE, sent=True, code=4000, reason="done"),
        Recorded(0, Kind.CLOSE, code=4000),  # netkit's server answers with the code alone
        Recorded(0, Kind.CLOSED, code=4000, initiator="client"),
    ]
    times = [e.t for e in rec.events]
    assert times == sorted(times) and times[0] < 0.5


def test_replay_against_the_same_and_another_server(run: Runner, serve: Serve, tmp_path: Path):
    path = tmp_path / "rec.jsonl"

    async def replay(h: Any, plan: ReplayPlan) -> tuple[Any, View]:
        view = View()
        conn = await dial(h)
        result = await Replay(conn, ReplayCheck(plan), view, speed=None, wait=0.3).run()
        return result, view

    async def main() -> None:
        async with serve(server_factory(Mode.ECHO)) as h:
            await record_session(h, path)
            plan = ReplayPlan.from_recording(read_recording(path))
            result, view = await replay(h, plan)
            assert result.differences == [] and (result.sent, result.received) == (2, 2)
            assert result.close.code == 4000 and result.close.initiator == "client"
            assert [s for s in view.shown if s[0] == "sent"] == [
                ("sent", b"hello"),
                ("sent", b"\x00\x01"),
            ]
        async with serve(server_factory(Mode.SINK)) as h:
            result, view = await replay(h, plan)
            assert [(d.kind, d.index) for d in result.differences] == [
                (DiffKind.MISSING, 1),
                (DiffKind.MISSING, 2),
            ]
            assert view.shown == [("sent", b"hello"), ("sent", b"\x00\x01")]

    run(main())
