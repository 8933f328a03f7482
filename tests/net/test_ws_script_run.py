"""ScriptRun in-process, on asyncio and uvloop, against netkit's own WebSocket server (the
public ``ws_server`` with a handler) on loopback: captures carried between steps, messages no
step read reported at the end, and how a server's close during a step fails it."""

from __future__ import annotations

import netkit
from netkit.core.addresses import parse_ws_url
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.script import ScriptFormat, parse_script
from netkit.core.ws.script_report import ScriptReport, StepResult, StepStatus
from netkit.errors import CheckFailed, PeerProtocolError
from netkit.net.ws_client import WebSocketClientConnection, connect_ws
from netkit.net.ws_script import ScriptRun


class View:
    """A ScriptView that keeps everything it is shown."""

    def __init__(self) -> None:
        self.sends: list[tuple[bytes, bool]] = []
        self.receipts: list[tuple[bool, bytes]] = []
        self.steps: list[StepResult] = []

    def sent(self, data: bytes, text: bool) -> None:
        self.sends.append((data, text))

    def received(self, is_text: bool, data: bytes) -> None:
        self.receipts.append((is_text, data))

    def step(self, result: StepResult) -> None:
        self.steps.append(result)


async def run_script(url: str, text: str) -> tuple[ScriptReport, View, WebSocketClientConnection]:
    target = parse_ws_url(url)
    conn = await connect_ws(
        target,
        lambda: WebSocketClientConnection(ClientHandshake.from_url(target)),
        ssl_context=None,
    )
    script = parse_script(text, source="t.yaml", fmt=ScriptFormat.YAML)
    view = View()
    try:
        report = await ScriptRun(conn, script, view, url).run()
    finally:
        conn.abort()
    return report, view, conn


async def announcer(ws: netkit.WebSocket) -> None:
    """Sends a ticket, then answers "use T" with "used T" and two more messages."""
    await ws.send("ticket=T-9")
    async for message in ws:
        if message == "bye":
            await ws.close(4000, "see you")
            return
        if message == "end":
            return  # close 1000
        await ws.send(f"used {str(message).removeprefix('use ')}")
        await ws.send("extra 1")
        await ws.send("extra 2")


SCRIPT = """\
steps:
  - expect: 'ticket=(?P<ticket>T-\\d+)'
  - send: 'use ${ticket}'
  - expect: {text: 'used ${ticket}'}
  - wait: 50ms
"""


def test_captures_and_messages_no_step_read(run):
    async def main() -> None:
        async with netkit.ws_server(handler=announcer) as server:
            report, view, conn = await run_script(server.url, SCRIPT)
        assert report.error is None and report.passed == 4
        assert view.sends == [(b"use T-9", True)]
        # Read by steps: the ticket and the answer; reported at the end: what no step read.
        assert view.receipts == [
            (True, b"ticket=T-9"),
            (True, b"used T-9"),
            (True, b"extra 1"),
            (True, b"extra 2"),
        ]
        assert [r.status for r in view.steps] == [StepStatus.PASSED] * 4
        assert conn.close_code == 1000 and conn.initiated_close

    run(main())


def test_a_server_close_during_an_expect_fails_the_step_by_its_code(run):
    async def main() -> None:
        async with netkit.ws_server(handler=announcer) as server:
            clean, _, _ = await run_script(
                server.url, "steps:\n  - expect: ticket\n  - send: end\n  - expect: never\n"
            )
            error_code, _, _ = await run_script(
                server.url,
                "steps:\n  - expect: ticket\n  - send: bye\n  - name: n\n    expect: x\n",
            )
        assert isinstance(clean.error, CheckFailed)
        assert str(clean.error).startswith("step 3 (expect): ")
        assert str(clean.error).endswith("with 1000 (normal closure) while waiting for a message")
        assert isinstance(error_code.error, PeerProtocolError)
        assert str(error_code.error).endswith(
            'closed the connection with 4000 (application) "see you"'
        )
        assert [r.status for r in error_code.results] == [StepStatus.PASSED] * 2 + [
            StepStatus.FAILED
        ]

    run(main())
