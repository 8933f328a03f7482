"""ws-server --chaos end to end: each fault against netkit's own ws-client and against the
websockets library's client, over real sockets; the same seed gives the same fault events."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from tests.commands.conftest import NETKIT, json_lines, run_netkit
from tests.commands.test_ws_server import run


def chaos_server(netkit_server: Any, *specs: str, seed: int = 7, more: tuple[str, ...] = ()) -> Any:
    args = [a for spec in specs for a in ("--chaos", spec)]
    return netkit_server("ws-server", "127.0.0.1:0", *args, "--seed", str(seed), *more)


def faults(server: Any) -> list[dict[str, Any]]:
    """The server's fault events, without what changes from run to run."""
    return [
        {k: v for k, v in e.items() if k not in ("event", "ts", "peer")}
        for e in server.events
        if e["event"] == "fault"
    ]


def client_events(proc: subprocess.CompletedProcess[str]) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in json_lines(proc.stdout):
        by_name.setdefault(event["event"], []).append(event)
    return by_name


class InteractiveClient:
    """A netkit ws-client fed line by line on stdin, its --json events read as they come."""

    def __init__(self, url: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*NETKIT, "ws-client", url, "--json", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, name: str, **fields: Any) -> dict[str, Any]:
        """Read events until one called ``name`` with ``fields`` (bounded by the test timeout)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["event"] == name and fields.items() <= event.items():
                return event
        raise EOFError(f"ws-client ended before a {name} event: {self.proc.stderr.read()}")  # type: ignore[union-attr]

    def finish(self, timeout: float = 10) -> tuple[int, list[dict[str, Any]], str]:
        """Close stdin (the input ends); the exit code, the remaining events and stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, json_lines(out), err


# --- netkit's own client ------------------------------------------------------------------


def test_fragments_and_interleaved_pings_reach_netkit_client_whole(netkit_server):
    server = chaos_server(netkit_server, "fragment=7", "interleave=2")
    messages = ["héllo wörld, ünïcode", "x" * 5000, "short"]
    proc = run_netkit("ws-client", server.listening["url"], "--json", *messages)
    assert proc.returncode == 0, proc.stderr
    events = client_events(proc)
    assert [e["text"] for e in events["received"]] == messages
    assert events["close"][0]["code"] == 1000 and events["close"][0]["clean"] is True
    assert server.stop() == 0
    assert faults(server) == [
        f | {"message": n}
        for n in (1, 2, 3)
        for f in ({"fault": "fragment", "frames": 7}, {"fault": "interleave", "pings": 2})
    ]
    assert server.event("close")["messages_out"] == 3


@pytest.mark.parametrize("cut", ["fin", "reset"])
def test_connection_cut_without_close_frame_is_1006_exit_3(netkit_server, cut):
    server = chaos_server(netkit_server, f"{cut}=2")
    client = InteractiveClient(server.listening["url"])
    client.send("one")
    client.wait_for("received", text="one")
    client.send("two")  # the second message cuts the connection
    close = client.wait_for("close")
    assert close["code"] == 1006 and close["clean"] is False and close["sent_code"] is None
    rc, _, err = client.finish()
    assert rc == 3 and "lost without a close frame (1006)" in err
    assert server.stop() == 0
    assert faults(server) == [{"fault": cut, "after_messages": 2, "message": 2}]


def test_oversized_frame_fails_netkit_client_with_1009(netkit_server):
    server = chaos_server(netkit_server, "oversize=2MiB")
    client = InteractiveClient(server.listening["url"])
    client.send("hello")
    close = client.wait_for("close")
    assert close["sent_code"] == 1009 and close["initiator"] == "client"
    rc, _, err = client.finish()
    assert rc == 7 and "exceeds the 1048576-byte limit" in err
    # A client whose limit is larger takes the frame as an ordinary message (RFC 6455 allows it).
    proc = run_netkit("ws-client", server.listening["url"], "--json", "--max-size", "4MiB", "hi")
    assert proc.returncode == 0, proc.stderr
    received = client_events(proc)["received"]
    assert [(e["type"], e["bytes"]) for e in received] == [("binary", 2 << 20)]
    assert server.stop() == 0
    assert faults(server) == [{"fault": "oversize", "bytes": 2 << 20, "message": 1}] * 2


def test_missing_pongs_end_netkit_client_at_its_ping_timeout(netkit_server):
    server = chaos_server(netkit_server, "no-pong")
    client = InteractiveClient(
        server.listening["url"], "--ping-interval", "0.2s", "--ping-timeout", "0.3s"
    )
    client.send("hello")
    client.wait_for("received", text="hello")
    close = client.wait_for("close")
    assert close["sent_code"] == 1011
    rc, _, _ = client.finish()
    assert rc == 4
    server.stop()
    assert faults(server)[0] == {"fault": "no-pong", "ping": 1}


def test_late_pongs_are_waited_for(netkit_server):
    server = chaos_server(netkit_server, "late-pong=300ms")
    client = InteractiveClient(
        server.listening["url"], "--ping-interval", "0.2s", "--ping-timeout", "3s"
    )
    pong = client.wait_for("pong", keepalive=True)
    assert pong["rtt_ms"] >= 250
    client.send("still here")
    client.wait_for("received", text="still here")
    rc, events, _ = client.finish()
    assert rc == 0 and events[-1]["close_code"] == 1000
    server.stop()
    assert faults(server)[0] == {"fault": "late-pong", "delay_ms": 300.0, "ping": 1}


def test_slow_reads_delay_netkit_client_without_losing_a_message(netkit_server):
    server = chaos_server(netkit_server, "slow-read=500ms")
    client = InteractiveClient(server.listening["url"])
    client.send("one")
    first = client.wait_for("received", text="one")
    client.send("two")
    second = client.wait_for("received", text="two")
    # The server stopped reading for 500 ms after "one" arrived, so "two" waited.
    assert second["ts"] - first["ts"] >= 0.4
    rc, _, _ = client.finish()
    assert rc == 0
    server.stop()
    assert faults(server)[:2] == [
        {"fault": "slow-read", "pause_ms": 500.0, "message": n} for n in (1, 2)
    ]


# --- the websockets library's client -------------------------------------------------------


def test_websockets_client_reassembles_fragments_and_answers_pings(netkit_server):
    server = chaos_server(netkit_server, "fragment=5", "interleave=1")
    big = bytes(range(256)) * 400

    async def client() -> None:
        async with connect(server.listening["url"], max_size=None) as ws:
            for message in ("ünïcode ∑ split", big, "", b""):
                await ws.send(message)
                assert await ws.recv() == message

    run(client())
    assert server.stop() == 0
    assert len([e for e in server.events if e["event"] == "pong"]) == 4 * 4
    assert server.event("close")["code"] == 1000


@pytest.mark.parametrize(
    ("spec", "event", "echoes"),
    [
        ("fin=1", {"fault": "fin", "after_messages": 1, "message": 1}, []),
        ("reset=1", {"fault": "reset", "after_messages": 1, "message": 1}, []),
        ("fin=300ms", {"fault": "fin", "after_ms": 300.0}, ["hello"]),
    ],
)
def test_websockets_client_sees_1006_when_the_connection_is_cut(netkit_server, spec, event, echoes):
    server = chaos_server(netkit_server, spec)

    async def client() -> tuple[list[Any], ConnectionClosedError]:
        received = []
        async with connect(server.listening["url"]) as ws:
            await ws.send("hello")
            with pytest.raises(ConnectionClosedError) as caught:
                for _ in range(2):
                    received.append(await ws.recv())
            assert ws.close_code == 1006
            return received, caught.value

    received, closed = run(client())
    assert received == echoes
    assert closed.rcvd is None and closed.sent is None
    assert server.stop() == 0
    assert faults(server) == [event]


def test_websockets_client_fails_an_oversized_frame_with_1009(netkit_server):
    server = chaos_server(netkit_server, "oversize")

    async def client(max_size: int | None) -> Any:
        async with connect(server.listening["url"], max_size=max_size) as ws:
            await ws.send("hello")
            return await ws.recv()

    with pytest.raises(ConnectionClosedError) as caught:
        run(client(1 << 20))
    assert caught.value.sent is not None and caught.value.sent.code == 1009
    assert run(client(None)) == bytes((1 << 20) + 1)
    assert server.stop() == 0


def test_websockets_client_keepalive_closes_1011_without_pongs(netkit_server):
    server = chaos_server(netkit_server, "no-pong")

    async def client() -> ConnectionClosedError:
        async with connect(server.listening["url"], ping_interval=0.2, ping_timeout=0.3) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
            return caught.value

    closed = run(client())
    assert closed.sent is not None and closed.sent.code == 1011
    server.stop()
    assert faults(server)[0] == {"fault": "no-pong", "ping": 1}


def test_websockets_client_survives_late_pongs_and_slow_reads(netkit_server):
    server = chaos_server(
        netkit_server, "late-pong=200ms", "slow-read=200ms", more=("--max-size", "16MiB")
    )
    big = bytes(8 << 20)  # more than the socket buffers hold while the server is not reading

    async def client() -> float:
        async with connect(server.listening["url"], max_size=None) as ws:
            latency = await (await ws.ping())
            await ws.send("small")
            await ws.send(big)
            assert await ws.recv() == "small"
            assert await ws.recv() == big
            return float(latency)

    assert run(client()) >= 0.15
    assert server.stop() == 0
    kinds = [f["fault"] for f in faults(server)]
    assert kinds.count("late-pong") == 1 and kinds.count("slow-read") == 2


# --- repeatable runs ------------------------------------------------------------------------


def test_same_seed_same_fault_events(netkit_server):
    specs = ("fragment=3,p=0.5", "interleave=1,p=0.5", "oversize=10,p=0.2", "slow-read=1ms,p=0.3")
    messages = [f"message {n}" for n in range(20)]

    async def client(url: str) -> None:
        async with connect(url) as ws:
            for message in messages:
                await ws.send(message)
                await ws.recv()

    def trace(seed: int) -> list[dict[str, Any]]:
        server = chaos_server(netkit_server, *specs, seed=seed)
        for _ in range(2):  # two connections: the draws depend on the connection's number
            run(client(server.listening["url"]))
        assert server.stop() == 0
        assert server.listening["seed"] == seed
        return faults(server)

    first = trace(42)
    assert {f["fault"] for f in first} == {"fragment", "interleave", "oversize", "slow-read"}
    assert first == trace(42)
