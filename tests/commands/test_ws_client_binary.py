"""ws-client's binary messages as lines (``--hex``, ``--base64``, ``--text-prefix``,
``--binary-prefix``) and its echo mode (``--echo``), end to end: the CLI as a subprocess against
the websockets library's server (in a thread of the test process) and netkit's own
``ws_server``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess

import pytest
from websockets.asyncio.server import ServerConnection

from netkit.api.websocket import WebSocket, ws_server
from tests.commands.conftest import NETKIT, assert_one_line_error, json_lines, run_netkit
from tests.commands.test_ws_client import (  # the websockets server in a thread, and helpers
    Seen,
    events_named,
    lib_server,
    run_with_stdin,
)
from tests.net.conftest import ThreadListener, switching_protocols

pytestmark = pytest.mark.timeout(60)

__all__ = ["lib_server"]  # a fixture, used by name

ALL_BYTES = bytes(range(256))
# Every byte value alone, then all of them in one message, then the empty message.
PAYLOADS = [bytes([b]) for b in range(256)] + [ALL_BYTES, b""]


def _lines(stdout: bytes | str) -> list[bytes]:
    text = stdout.encode() if isinstance(stdout, str) else stdout
    return text.split(b"\n")[:-1]


# --- --hex and --base64 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "encode"),
    [("--hex", bytes.hex), ("--base64", lambda data: base64.b64encode(data).decode())],
)
def test_every_byte_value_round_trips_as_lines(lib_server, flag, encode):
    server = lib_server()
    lines = [encode(p) for p in PAYLOADS]
    stdin = "\n".join(lines[1:]).encode() + b"\n"
    result = run_with_stdin(
        "ws-client", server.url(), lines[0], flag, "-c", str(len(PAYLOADS)), stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == PAYLOADS  # sent as binary messages, decoded
    assert _lines(result.stdout) == [line.encode() for line in lines]  # printed encoded


def test_hex_input_as_people_write_it(lib_server):
    # Capitals and spaces between bytes (what hex_summary and xxd -p print) read back.
    server = lib_server()
    result = run_netkit("ws-client", server.url(), "00 FF 7f", "DEADbeef", "--hex", "-c", "2")
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == [b"\x00\xff\x7f", b"\xde\xad\xbe\xef"]
    assert result.stdout == "00ff7f\ndeadbeef\n"


def test_a_file_is_one_encoded_message(lib_server, tmp_path):
    server = lib_server()
    blob = os.urandom(100_000)
    (tmp_path / "blob.b64").write_bytes(base64.b64encode(blob) + b"\n")
    result = run_netkit(
        "ws-client", server.url(), "--file", str(tmp_path / "blob.b64"), "--base64", "-c", "1"
    )
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == [blob]
    assert base64.b64decode(result.stdout) == blob


def test_text_and_binary_mixed_with_a_text_prefix(lib_server):
    server = lib_server()
    stdin = "T:héllo\n00ff\nT:\nT:T:nested\n".encode()
    result = run_with_stdin(
        "ws-client", server.url(), "--hex", "--text-prefix", "T:", "-c", "4", stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == ["héllo", b"\x00\xff", "", "T:nested"]
    # Printed the way it was read: a run's output is the next run's input.
    assert result.stdout.encode() == stdin
    again = run_with_stdin(
        "ws-client", server.url(), "--hex", "--text-prefix", "T:", "-c", "4", stdin=stdin
    )
    assert server.connection(1).messages == server.connection(0).messages
    assert again.stdout == result.stdout


def test_text_and_binary_mixed_with_a_binary_prefix(lib_server):
    # A mostly-text protocol: lines are text, and the few binary ones say so.
    server = lib_server()
    result = run_netkit(
        "ws-client", server.url(), '{"op": "sub"}', "B AAH/", "aGk=",
        "--base64", "--binary-prefix", "B ", "-c", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == ['{"op": "sub"}', b"\x00\x01\xff", "aGk="]
    assert result.stdout == '{"op": "sub"}\nB AAH/\naGk=\n'


def test_both_prefixes_make_every_line_say_which(lib_server):
    server = lib_server()
    result = run_with_stdin(
        "ws-client", server.url(), "--hex", "--text-prefix", "t ", "--binary-prefix", "b ",
        "-c", "2", stdin=b"t 00\nb 00\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == ["00", b"\x00"]
    assert result.stdout == "t 00\nb 00\n"
    unmarked = run_with_stdin(
        "ws-client", server.url(), "--hex", "--text-prefix", "t ", "--binary-prefix", "b ",
        stdin=b"t fine\n00\n",
    )  # fmt: skip
    assert unmarked.returncode == 2
    assert_one_line_error(unmarked.stderr)
    assert (
        "line 2 of standard input starts with neither --text-prefix nor --binary-prefix"
        in unmarked.stderr
    )


def test_json_events_carry_binary_as_base64_whatever_the_input_encoding(lib_server):
    server = lib_server()
    result = run_with_stdin(
        "ws-client", server.url(), "--hex", "--text-prefix", "T:", "--json", "-c", "2",
        stdin=ALL_BYTES.hex().encode() + b"\nT:text\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("sent", "received"):
        binary, text = events_named(result.stdout, name)
        assert binary["type"] == "binary" and binary["encoding"] == "base64"
        assert binary["bytes"] == 256 and base64.b64decode(binary["data"]) == ALL_BYTES
        assert text == {**text, "type": "text", "text": "text", "bytes": 4}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--hex", "0g"], "message 1 ('0g') is not hex: 'g' at column 2 is not a hex digit"),
        (["--hex", "00", "abc"], "message 2 ('abc') is not hex: 3 hex digits: a byte takes two"),
        (["--base64", "Zm9"], "message 1 ('Zm9') is not base64: incorrect padding"),
        (["--base64", "Zm9v!"], "'!' at column 5 is not a base64 character"),
        (["--hex", "--base64"], "choose one of --hex and --base64"),
        (["--text-prefix", "T"], "--text-prefix needs --hex or --base64"),
        (["--binary-prefix", "B"], "--binary-prefix needs --hex or --base64"),
        (["--hex", "--text-prefix", ""], "--text-prefix must not be empty"),
        (["--hex", "--text-prefix", "a", "--binary-prefix", "ab"], "must not start with one"),
        (["--hex", "--binary"], "--binary cannot be used with --hex"),
        (["--base64", "--raw"], "--raw cannot be used with --base64"),
        (["--echo", "hi"], "--echo sends only what it receives"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(lib_server, args, says):
    server = lib_server()
    result = run_netkit("ws-client", server.url(), *args)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert says in result.stderr
    assert server.seen == []  # refused before connecting


@pytest.mark.parametrize(
    ("flag", "bad", "says"),
    [
        ("--hex", b"0x10", "line 3 of standard input is not hex: 'x' at column 2"),
        ("--base64", b"AA=A", "line 3 of standard input is not base64: discontinuous padding"),
    ],
)
def test_a_bad_stdin_line_stops_the_run_naming_the_line(lib_server, flag, bad, says):
    server = lib_server()
    good = b"00" if flag == "--hex" else b"AA=="
    result = run_with_stdin(
        "ws-client", server.url(), flag, stdin=good + b"\n" + good + b"\n" + bad + b"\nnever\n"
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert says in result.stderr
    seen = server.connection()
    assert seen.messages == [b"\x00", b"\x00"] and seen.close_code == 1000


# --- --echo ---------------------------------------------------------------------------------

BIG = os.urandom(3 << 20)


async def drive_echo(ws: ServerConnection, seen: Seen) -> None:
    """Send text, binary, fragmented and large messages; check each comes back; close."""
    for message, expected in [
        ("hello", "hello"),
        (ALL_BYTES, ALL_BYTES),
        (["frag", "men", "ted"], "fragmented"),  # a text message in three frames
        ([b"\x00", b"\xff" * 1000], b"\x00" + b"\xff" * 1000),  # binary, two frames
        (BIG, BIG),
    ]:
        await ws.send(message)
        seen.messages.append(await ws.recv())
        assert seen.messages[-1] == expected
    await ws.close(1000, "done")


def test_echo_is_driven_by_the_server_until_it_closes(lib_server):
    server = lib_server(drive_echo, max_size=None)
    result = subprocess.run(
        [*NETKIT, "ws-client", server.url(), "--echo", "--max-size", "4MiB", "--hex"],
        stdin=subprocess.DEVNULL,  # the end of stdin does not end an echo client's run
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    seen = server.connection()
    assert [type(m) for m in seen.messages] == [str, bytes, str, bytes, bytes]
    assert seen.close_code == 1000  # our answer to its close
    lines = _lines(result.stdout)
    assert lines[:4] == [b"hello", ALL_BYTES.hex().encode(), b"fragmented", b"00" + b"ff" * 1000]
    assert hashlib.sha256(bytes.fromhex(lines[4].decode())).digest() == hashlib.sha256(BIG).digest()
    assert b"1000" in result.stderr and b"done" in result.stderr


async def two_then_close(ws: ServerConnection, seen: Seen) -> None:
    """Send a text and a binary message, each after the echo of the one before; close."""
    for message in ("one", b"\x00\x01"):
        await ws.send(message)
        seen.messages.append(await ws.recv())
    await ws.close()


def test_echo_json_events(lib_server):
    server = lib_server(two_then_close)
    result = run_netkit("ws-client", server.url(), "--echo", "--json")
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == ["one", b"\x00\x01"]
    events = json_lines(result.stdout)
    assert [e["event"] for e in events] == [
        "open", "received", "sent", "received", "sent", "close", "summary",
    ]  # fmt: skip
    assert events[4] == {**events[4], "type": "binary", "data": "AAE=", "encoding": "base64"}
    assert events[5]["initiator"] == "server" and events[6]["sent"] == 2


def test_echo_exit_code_follows_the_close(lib_server):
    async def one_then_1011(ws: ServerConnection, seen: Seen) -> None:
        await ws.send("x")
        seen.messages.append(await ws.recv())
        await ws.close(1011, "oops")

    server = lib_server(one_then_1011)
    result = run_netkit("ws-client", server.url(), "--echo")
    assert result.returncode == 7, result.stderr
    assert_one_line_error(result.stderr)
    assert "1011" in result.stderr and "oops" in result.stderr
    assert result.stdout == "x\n" and server.connection().messages == ["x"]


def test_echo_driven_by_netkits_own_server():
    got: list[str | bytes] = []

    async def driver(ws: WebSocket) -> None:
        for message in ("hé", b"\x00\xff", "x" * 200_000):
            await ws.send(message)
            got.append(await ws.recv())
        await ws.close(1000, "bye")

    async def main() -> tuple[int, bytes, bytes]:
        async with ws_server(handler=driver) as server:
            proc = await asyncio.create_subprocess_exec(
                *NETKIT, "ws-client", server.url, "--echo", "--base64",
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(20):
                out, err = await proc.communicate()
            assert not server.errors, server.errors
        assert proc.returncode is not None
        return proc.returncode, out, err

    code, out, err = asyncio.run(main())
    assert code == 0, err
    assert got == ["hé", b"\x00\xff", "x" * 200_000]
    assert _lines(out) == ["hé".encode(), b"AP8=", b"x" * 200_000]
    assert b"bye" in err


class MessageThenBadFrame(ThreadListener):
    """Upgrades by hand, then writes a text message and a frame with RSV2 set (Autobahn's
    case 3.2) in one write, and records the frames the client sends back."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += stream.read(1)
            conn.sendall(
                switching_protocols(head)
                + b"\x81\x05hello"  # text "hello"
                + b"\xa1\x00"  # RSV2 without an extension: the client must fail the connection
            )
            while (first := stream.read(2)) and len(first) == 2:
                length = first[1] & 0x7F  # the client's frames here are all short and masked
                mask = stream.read(4)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(stream.read(length)))
                self.frames.append((first[0] & 0x0F, payload))


def test_echo_is_strict_a_message_before_a_bad_frame_is_echoed_first():
    server = MessageThenBadFrame()
    try:
        result = run_netkit("ws-client", f"ws://127.0.0.1:{server.port}/", "--echo")
        server.stop()  # joins the thread: the frames are all in
    finally:
        server.stop()
    assert result.returncode == 7, result.stderr
    assert_one_line_error(result.stderr)
    assert server.frames[0] == (0x1, b"hello")  # the echo left before the bad frame was read
    opcode, payload = server.frames[1]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002


def test_echo_with_record_writes_each_message_then_its_echo(lib_server, tmp_path):
    server = lib_server(two_then_close)
    rec = tmp_path / "echo.jsonl"
    result = run_netkit("ws-client", server.url(), "--echo", "--record", str(rec))
    assert result.returncode == 0, result.stderr
    assert server.connection().messages == ["one", b"\x00\x01"]
    lines = [json.loads(line) for line in rec.read_text().splitlines()[1:]]
    messages = [(e["event"], e.get("text", e.get("data"))) for e in lines if "type" in e]
    assert messages == [
        ("received", "one"), ("sent", "one"), ("received", "AAE="), ("sent", "AAE="),
    ]  # fmt: skip


def test_echo_and_the_encodings_refuse_the_other_modes(lib_server, tmp_path):
    server = lib_server()
    script = tmp_path / "conversation.yaml"
    script.write_text("steps:\n  - send: hi\n")
    recording = tmp_path / "session.jsonl"
    assert run_netkit("ws-client", server.url(), "hi", "--record", str(recording)).returncode == 0
    for args, says in [
        (["--echo", "--script", str(script)], "--echo sends only what it receives"),
        (["--hex", "--script", str(script)], "--script says what to send"),
        (["--echo", "--replay", str(recording)], "drop --echo"),
        (["--base64", "--replay", str(recording)], "drop --hex/--base64"),
        (["--echo", "--reconnect"], "--echo cannot be used with --reconnect"),
        (["--echo", "--stdio"], "--echo"),
        (["--hex", "--listen", "127.0.0.1:0"], "--hex"),
    ]:
        result = run_netkit("ws-client", server.url(), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert_one_line_error(result.stderr)
        assert says in result.stderr, (args, result.stderr)
    assert len(server.seen) == 1  # only the recording run connected
