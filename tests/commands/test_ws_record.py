"""ws-client --record and --replay end to end: the CLI as a subprocess recording a session
against ``netkit ws-server``, then replaying it against the same server (no difference) and
against changed ones (the websockets library's server answering otherwise, a netkit server
in another mode): the difference is found where it is."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from netkit.cli import main
from tests.commands import test_ws_client
from tests.commands.conftest import assert_one_line_error, json_lines, run_netkit
from tests.commands.test_ws_client import Seen

pytestmark = pytest.mark.timeout(60)


lib_server = test_ws_client.lib_server  # the websockets server fixture, shared


# Recordings made for a replay against the websockets library's server use --count: ws-client
# then closes only once the answers are in, so the recording (and the replay, which waits for
# the answers recorded before the close) never closes while that server still has an answer
# to send (websockets drops it when the client's close came first).


def netkit_ws(netkit_server: Any, *args: str) -> str:
    """Start ``netkit ws-server`` on a free port; its URL."""
    server = netkit_server("ws-server", "127.0.0.1:0", "--ping-interval", "0", *args)
    return str(server.listening["url"])


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events(path: Path) -> list[str]:
    return [line.get("event", "header") for line in read_lines(path)]


def replay(url: str, path: Path, *args: str) -> Any:
    return run_netkit("ws-client", url, "--replay", str(path), "--json", *args)


def named(stdout: str, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(stdout) if e["event"] == name]


def test_record_then_replay_against_the_same_server(netkit_server, tmp_path):
    url = netkit_ws(netkit_server, "--subprotocol", "chat")
    rec = tmp_path / "session.jsonl"
    result = run_netkit(
        "ws-client", url, "one", "two", "three", "--subprotocol", "chat", "--record", str(rec)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\ntwo\nthree\n"
    lines = read_lines(rec)
    assert lines[0] == {
        "format": "netkit-ws-recording",
        "version": 1,
        "url": url,
        "subprotocols": ["chat"],
        "started": lines[0]["started"],
    }
    assert lines[1] == {**lines[1], "event": "open", "subprotocol": "chat"}
    # ws-client sends its close once the input ended: answers may come before or after it.
    assert events(rec)[:5] == ["header", "open", "sent", "sent", "sent"]
    assert sorted(events(rec)[5:-1]) == ["close", "close", "received", "received", "received"]
    assert events(rec)[-1] == "closed"
    assert [line.get("text") for line in lines if line.get("event") == "received"] == [
        "one",
        "two",
        "three",
    ]
    closes = [line for line in lines if line.get("event") == "close"]
    assert [(c["direction"], c["code"]) for c in closes] == [("sent", 1000), ("received", 1000)]
    assert lines[-1] == {**lines[-1], "code": 1000, "initiator": "client", "clean": True}
    times = [line["t"] for line in lines[1:]]
    assert times == sorted(times)

    # The replay offers the recorded subprotocols (no --subprotocol): the server picks chat again.
    result = replay(url, rec, "--replay-speed", "max")
    assert result.returncode == 0, result.stdout + result.stderr
    (summary,) = named(result.stdout, "replay")
    assert summary == {**summary, "sent": 3, "received": 3, "differences": 0}
    assert [e["text"] for e in named(result.stdout, "received")] == ["one", "two", "three"]
    result = run_netkit("ws-client", url, "--replay", str(rec))
    assert result.returncode == 0 and "no difference from" in result.stderr


def upper_second(ws: ServerConnection, seen: Seen) -> Any:
    """Echo, but the second message comes back in capitals."""

    async def handle() -> None:
        number = 0
        async for message in ws:
            number += 1
            assert isinstance(message, str)
            await ws.send(message.upper() if number == 2 else message)

    return handle()


def test_replay_against_a_changed_server_finds_the_index(netkit_server, lib_server, tmp_path):
    rec = tmp_path / "session.jsonl"
    url = netkit_ws(netkit_server)
    assert (
        run_netkit("ws-client", url, "a", "b", "c", "-c", "3", "--record", str(rec)).returncode == 0
    )
    changed = lib_server(upper_second)
    result = replay(changed.url(), rec, "--replay-speed", "max")
    assert result.returncode == 1, result.stderr
    (diff,) = named(result.stdout, "difference")
    assert diff == {
        **diff,
        "kind": "changed",
        "index": 2,
        "got_index": 2,
        "expected": {
            "type": "text",
            "bytes": 1,
            "text": "b",
            "after_sent": diff["expected"]["after_sent"],
        },
    }
    assert diff["got"]["text"] == "B"
    (error,) = named(result.stdout, "error")
    assert error["exit_code"] == 1 and "received message 2" in error["message"]
    # Without --json: the differences on stdout, one error line.
    result = run_netkit("ws-client", changed.url(), "--replay", str(rec), "--replay-speed", "max")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == f"replay of {rec}: 1 difference"
    assert (
        "received message 2" in result.stdout and "expected text 'b', got text 'B'" in result.stdout
    )
    assert_one_line_error(result.stderr)


def test_replay_against_a_sink_reports_missing_answers(netkit_server, tmp_path):
    rec = tmp_path / "session.jsonl"
    url = netkit_ws(netkit_server)
    assert run_netkit("ws-client", url, "x", "y", "--record", str(rec)).returncode == 0
    sink = netkit_ws(netkit_server, "--mode", "sink")
    result = replay(sink, rec, "--replay-speed", "max", "--replay-wait", "0.3s")
    assert result.returncode == 1, result.stderr
    diffs = named(result.stdout, "difference")
    assert [(d["kind"], d["index"], d["expected"]["text"]) for d in diffs] == [
        ("missing", 1, "x"),
        ("missing", 2, "y"),
    ]
    assert [e["text"] for e in named(result.stdout, "sent")] == ["x", "y"]
    # --timeout bounds the whole replay: exit 4 when the answers' wait outlasts it.
    result = run_netkit("ws-client", sink, "--replay", str(rec), "--timeout", "0.5s")
    assert result.returncode == 4
    assert_one_line_error(result.stderr)
    assert "the replay did not finish within 0.5s (--timeout)" in result.stderr


def test_binary_messages_record_as_base64_and_replay(netkit_server, lib_server, tmp_path):
    rec = tmp_path / "binary.jsonl"
    url = netkit_ws(netkit_server)
    result = run_netkit(
        "ws-client", url, "-b", "\x01bin", "-c", "1", "--record", str(rec), "--json"
    )
    assert result.returncode == 0, result.stderr
    (received,) = [line for line in read_lines(rec) if line.get("event") == "received"]
    assert received == {
        **received,
        "type": "binary",
        "bytes": 4,
        "data": base64.b64encode(b"\x01bin").decode(),
        "encoding": "base64",
    }
    assert replay(url, rec).returncode == 0

    async def flip(ws: ServerConnection, seen: Seen) -> None:
        async for message in ws:
            assert isinstance(message, bytes)
            await ws.send(message[::-1])

    result = replay(lib_server(flip).url(), rec)
    assert result.returncode == 1
    (diff,) = named(result.stdout, "difference")
    assert diff["kind"] == "changed" and diff["index"] == 1
    assert base64.b64decode(diff["got"]["data"]) == b"nib\x01"
    assert diff["got"]["encoding"] == "base64"


def test_server_close_is_recorded_and_compared(lib_server, tmp_path):
    async def bye(ws: ServerConnection, seen: Seen) -> None:
        await ws.send(f"hello {await ws.recv()}")
        await ws.close(4000, "bye")

    async def other_bye(ws: ServerConnection, seen: Seen) -> None:
        await ws.send(f"hello {await ws.recv()}")
        await ws.close(4001, "later")

    rec = tmp_path / "close.jsonl"
    result = run_netkit("ws-client", lib_server(bye).url(), "you", "-c", "2", "--record", str(rec))
    assert result.returncode == 7  # ws-client's verdict on a 4000 close is unchanged
    last = read_lines(rec)[-1]
    assert last == {**last, "event": "closed", "code": 4000, "reason": "bye", "initiator": "server"}
    assert replay(lib_server(bye).url(), rec).returncode == 0
    result = replay(lib_server(other_bye).url(), rec)
    assert result.returncode == 1
    (diff,) = named(result.stdout, "difference")
    assert diff["kind"] == "close"
    assert diff["expected"] == {"code": 4000, "reason": "bye", "initiator": "server"}
    assert diff["got"] == {"code": 4001, "reason": "later", "initiator": "server"}


def test_ignore_makes_volatile_text_equal(lib_server, tmp_path):
    stamp = iter(range(1000, 2000))

    async def stamped(ws: ServerConnection, seen: Seen) -> None:
        async for message in ws:
            await ws.send(json.dumps({"ts": next(stamp), "echo": message}))

    server = lib_server(stamped)
    rec = tmp_path / "stamped.jsonl"
    assert (
        run_netkit("ws-client", server.url(), "m", "-c", "1", "--record", str(rec)).returncode == 0
    )
    assert replay(server.url(), rec).returncode == 1
    result = replay(server.url(), rec, "--ignore", r'"ts": \d+')
    assert result.returncode == 0, result.stdout


def test_recorded_speed_keeps_the_gaps(netkit_server, tmp_path):
    url = netkit_ws(netkit_server)
    rec = tmp_path / "slow.jsonl"
    rec.write_text(
        '{"format":"netkit-ws-recording","version":1,"url":"ws://x/","subprotocols":[]}\n'
        '{"t":0,"event":"open","subprotocol":null}\n'
        '{"t":0.01,"event":"sent","type":"text","text":"first"}\n'
        '{"t":0.02,"event":"received","type":"text","text":"first"}\n'
        '{"t":0.6,"event":"sent","type":"text","text":"second"}\n'
        '{"t":0.61,"event":"received","type":"text","text":"second"}\n'
        '{"t":0.7,"event":"close","direction":"sent","code":1000,"reason":""}\n'
        '{"t":0.71,"event":"closed","code":1000,"reason":"","initiator":"client","clean":true}\n'
    )
    result = replay(url, rec)
    assert result.returncode == 0, result.stdout
    first, second = named(result.stdout, "sent")
    assert second["ts"] - first["ts"] >= 0.5  # at recorded speed: the 0.59 s gap is kept


def test_malformed_recording_is_a_usage_error(tmp_path):
    rec = tmp_path / "bad.jsonl"
    rec.write_text(
        '{"format":"netkit-ws-recording","version":1,"url":"u"}\n{"t":0,"event":"boom"}\n'
    )
    result = run_netkit("ws-client", "ws://127.0.0.1:9/", "--replay", str(rec))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert f"{rec} line 2: unknown event 'boom'" in result.stderr


# In-process (no interpreter to start): the refusals, each one line and exit 2.
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hello", "--replay", "REC"], "drop MESSAGES"),
        (["--replay", "REC", "--count", "1"], "drop --count"),
        (["--replay", "REC", "--replay-speed", "0"], "--replay-speed '0'"),
        (["--replay", "REC", "--replay-speed", "fast"], "--replay-speed 'fast'"),
        (["--replay", "REC", "--ignore", "("], "--ignore '(' is not a regular expression"),
        (["--ignore", "x"], "--ignore is for --replay"),
        (["--replay-speed", "max", "x"], "--replay-speed is for --replay"),
        (["--replay", "MISSING"], "cannot read --replay"),
        (["--replay", "BAD"], "line 1: not JSON"),
        (["--replay", "EMPTY"], "is empty: no netkit-ws-recording header"),
        (["--record", "/nonexistent/dir/rec.jsonl", "x"], "cannot write --record"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, args, message):
    rec = tmp_path / "ok.jsonl"
    rec.write_text('{"format":"netkit-ws-recording","version":1,"url":"u"}\n')
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    (tmp_path / "empty.jsonl").write_text("")
    paths = {
        "REC": str(rec),
        "MISSING": str(tmp_path / "missing"),
        "BAD": str(tmp_path / "bad.jsonl"),
        "EMPTY": str(tmp_path / "empty.jsonl"),
    }
    status = main(["ws-client", "ws://127.0.0.1:9/", *[paths.get(a, a) for a in args]])
    assert status == 2
    stderr = capsys.readouterr().err
    assert_one_line_error(stderr)
    assert message in stderr


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_pings_and_pongs_are_recorded_and_replayed(netkit_server, lib_server, tmp_path):
    async def pinging(ws: ServerConnection, seen: Seen) -> None:
        async for message in ws:
            await (await ws.ping(b"srv"))  # answered before the echo goes out
            await ws.send(message)

    rec = tmp_path / "pinged.jsonl"
    assert (
        run_netkit(
            "ws-client", lib_server(pinging).url(), "hi", "-c", "1", "--record", str(rec)
        ).returncode
        == 0
    )
    pings = [line for line in read_lines(rec) if line.get("event") == "ping"]
    assert pings == [
        {**pings[0], "direction": "received", "data": b64(b"srv"), "encoding": "base64"}
    ]

    # A ping the user sent is replayed, a keepalive ping is not; the replay is recorded too.
    script = tmp_path / "user-ping.jsonl"
    script.write_text(
        '{"format":"netkit-ws-recording","version":1,"url":"ws://x/","subprotocols":[]}\n'
        '{"t":0,"event":"open","subprotocol":null}\n'
        f'{{"t":0.01,"event":"ping","direction":"sent","data":"{b64(b"ka")}","encoding":"base64","keepalive":true}}\n'
        f'{{"t":0.02,"event":"ping","direction":"sent","data":"{b64(b"user")}","encoding":"base64","keepalive":false}}\n'
        '{"t":0.03,"event":"sent","type":"text","text":"x"}\n'
        '{"t":0.04,"event":"received","type":"text","text":"x"}\n'
        '{"t":0.05,"event":"close","direction":"sent","code":1000,"reason":""}\n'
        '{"t":0.06,"event":"closed","code":1000,"reason":"","initiator":"client","clean":true}\n'
    )
    server = netkit_server("ws-server", "127.0.0.1:0", "--ping-interval", "0")
    again = tmp_path / "again.jsonl"
    result = replay(str(server.listening["url"]), script, "--record", str(again))
    assert result.returncode == 0, result.stdout
    assert server.wait_for("ping")["size"] == 4  # b"user", not b"ka"
    lines = read_lines(again)[1:]
    (ping,) = [line for line in lines if line["event"] == "ping"]
    (pong,) = [line for line in lines if line["event"] == "pong"]  # in any order with the echo
    assert ping == {**ping, "direction": "sent", "data": b64(b"user"), "keepalive": False}
    assert pong == {**pong, "direction": "received", "data": b64(b"user")}
    assert [line["event"] for line in lines if line["event"] in ("open", "closed")] == [
        "open",
        "closed",
    ]
