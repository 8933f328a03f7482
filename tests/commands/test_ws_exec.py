"""ws-server --exec end to end: the CLI as a subprocess, real processes behind it, the
websockets library as the client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.commands.conftest import assert_one_line_error, run_netkit
from tests.commands.test_ws_server import run


def running_in_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` still running (zombies are dead: a member whose parent
    died first waits for PID 1 to reap it, which this container's init does lazily)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        state, _ppid, group = stat.rpartition(")")[2].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(pgid: int, timeout: float = 5.0) -> bool:
    """Wait until nothing of group ``pgid`` runs. The server reports its leader reaped; the
    rest of a pipeline got the same signal but dies on its own schedule, with no event to
    wait for, so this polls (bounded)."""
    deadline = time.monotonic() + timeout
    while running_in_group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_sed_pipeline_answers_each_line_and_each_client_has_its_own(netkit_server):
    server = netkit_server("ws-server", ":0", "--exec", "sed -u 's/^/> /' | sed -u 's/$/ </'")
    url = server.listening["url"]

    async def two_clients() -> list[list[str | bytes]]:
        async with connect(url) as a, connect(url) as b:
            await a.send("hello")
            await b.send("other")
            await a.send("wörld")
            return [[await a.recv(), await a.recv()], [await b.recv()]]

    assert run(two_clients()) == [["> hello <", "> wörld <"], ["> other <"]]
    assert server.stop() == 0
    pids = [e["pid"] for e in server.events if e["event"] == "exec"]
    assert len(set(pids)) == 2
    assert all(wait_gone(pid) for pid in pids)


def test_exit_0_closes_with_1000_and_a_failure_with_1011_and_its_status(netkit_server):
    ok = netkit_server("ws-server", ":0", "--exec", "read line; echo got $line; echo done")
    failing = netkit_server(
        "ws-server", ":0", "--exec", "echo partial; echo 'oops: disk full' >&2; exit 3"
    )

    async def session(url: str, send: str | None) -> tuple[list[str | bytes], int, str]:
        received: list[str | bytes] = []
        async with connect(url) as ws:
            if send is not None:
                await ws.send(send)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    received.append(await ws.recv())
        assert closed.value.rcvd is not None
        return received, closed.value.rcvd.code, closed.value.rcvd.reason

    assert run(session(ok.listening["url"], "x")) == (["got x", "done"], 1000, "")
    assert run(session(failing.listening["url"], None)) == (["partial"], 1011, "exit status 3")
    exited = failing.wait_for("exit")
    assert (exited["status"], exited["client_gone"]) == (3, False)
    stderr = failing.event("stderr")
    assert stderr["line"] == "oops: disk full"  # logged, never sent (received has no such line)
    assert ok.stop() == 0 and failing.stop() == 0


def test_websocketds_environment_variables(netkit_server):
    fields = [
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "REQUEST_URI",
        "QUERY_STRING",
        "PATH_INFO",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_SOFTWARE",
        "HTTP_X_TOKEN",
        "HTTP_USER_AGENT",
        "GATEWAY_INTERFACE",
    ]
    script = "; ".join(f'echo "{name}=${name}"' for name in fields)
    script += '; echo "HOME=${HOME-unset}"; echo "HTTP_PROXY=${HTTP_PROXY-unset}"'
    server = netkit_server("ws-server", ":0", "--exec", script)
    url = server.listening["url"] + "app/x?a=1&b=two"

    async def environment() -> tuple[dict[str, str], int]:
        headers = {"X-Token": "s3cret", "Proxy": "http://evil.example/"}
        async with connect(url, additional_headers=headers, user_agent_header="probe/1") as ws:
            port = ws.local_address[1]
            lines = [str(await ws.recv()) for _ in range(len(fields) + 2)]
        return dict(line.split("=", 1) for line in lines), port

    env, client_port = run(environment())
    host, _, port = server.address.rpartition(":")
    assert env == {
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": str(client_port),
        "REQUEST_URI": "/app/x?a=1&b=two",
        "QUERY_STRING": "a=1&b=two",
        "PATH_INFO": "/app/x",
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "SERVER_SOFTWARE": env["SERVER_SOFTWARE"],
        "HTTP_X_TOKEN": "s3cret",
        "HTTP_USER_AGENT": "probe/1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "HOME": "unset",  # the server's own environment stays out, PATH aside
        "HTTP_PROXY": "unset",  # httpoxy
    }
    assert env["SERVER_SOFTWARE"].startswith("netkit/")
    assert server.stop() == 0


def test_tls_sets_https_and_a_unix_socket_client_has_no_address(netkit_server, tmp_path):
    script = 'echo "[$HTTPS] [$REMOTE_ADDR] [$REMOTE_PORT] [$SERVER_NAME:$SERVER_PORT]"'
    secure = netkit_server("ws-server", "wss://127.0.0.1:0/", "--tls-self-signed", "--exec", script)
    path = tmp_path / "ws.sock"
    local = netkit_server("ws-server", f"unix:{path}", "--exec", script)
    ctx = ssl.create_default_context(cafile=secure.listening["ca_file"])

    async def both() -> tuple[str | bytes, int, str | bytes]:
        async with connect(secure.listening["url"], ssl=ctx) as ws:
            over_tls, port = await ws.recv(), ws.local_address[1]
        async with unix_connect(str(path), "ws://example.com/") as ws:
            over_unix = await ws.recv()
        return over_tls, port, over_unix

    over_tls, port, over_unix = run(both())
    _, _, server_port = secure.address.rpartition(":")
    assert over_tls == f"[on] [127.0.0.1] [{port}] [127.0.0.1:{server_port}]"
    assert over_unix == "[] [] [] [example.com:80]"
    assert secure.stop() == 0 and local.stop() == 0


def test_max_connections_caps_processes_with_503(netkit_server):
    server = netkit_server("ws-server", ":0", "--exec", "cat", "--max-connections", "1")
    url = server.listening["url"]

    async def over_the_cap() -> int:
        async with connect(url) as first:
            await first.send("one")
            assert await first.recv() == "one"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
        return refused.value.response.status_code

    assert run(over_the_cap()) == 503
    server.wait_for("disconnected")  # once the first process is reaped, room for another

    async def again() -> str | bytes:
        async with connect(url) as ws:
            await ws.send("two")
            return await ws.recv()

    assert run(again()) == "two"
    assert server.stop() == 0
    assert [e["status"] for e in server.events if e["event"] == "rejected"] == [503]


def test_a_client_that_goes_gets_its_process_terminated(netkit_server):
    server = netkit_server("ws-server", ":0", "--exec", "echo $$; exec sleep 60")

    async def vanish() -> int:
        async with connect(server.listening["url"]) as ws:
            pid = int(await ws.recv())
            ws.transport.abort()  # no close frame: the TCP connection just drops
        return pid

    pid = run(vanish())
    exited = server.wait_for("exit")
    assert (exited["pid"], exited["status"], exited["reason"]) == (pid, -15, "killed by SIGTERM")
    assert exited["client_gone"] is True
    assert not running_in_group(pid)  # the leader itself: reaped before the event
    assert server.stop() == 0


def test_a_process_that_ignores_term_is_killed_with_its_children(netkit_server):
    script = "trap '' TERM; echo $$; while :; do sleep 0.05; done"
    server = netkit_server("ws-server", ":0", "--exec", script, "--kill-after", "300ms")

    async def leave() -> int:
        async with connect(server.listening["url"]) as ws:
            return int(await ws.recv())

    pid = run(leave())
    exited = server.wait_for("exit")
    assert (exited["pid"], exited["reason"]) == (pid, "killed by SIGKILL")
    sent = [e["signal"] for e in server.events if e["event"] == "signal"]
    assert sent == ["SIGTERM", "SIGKILL"]
    assert wait_gone(pid)  # the sleeps went with the shell: the whole group was signalled
    assert server.stop() == 0


def test_a_process_still_running_when_the_drain_ends_is_killed(netkit_server):
    # A client that never answers the server's 1001 keeps its connection open until the
    # drain times out; the process ignores SIGTERM: it must not outlive the server.
    script = "trap '' TERM; echo $$; while :; do sleep 0.05; done"
    server = netkit_server("ws-server", ":0", "--exec", script, "--drain-timeout", "500ms")
    host, _, port = server.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET / HTTP/1.1\r\nHost: {server.address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        pid = server.wait_for("exec")["pid"]
        assert server.stop() == 0
    assert wait_gone(pid)
    assert [e["signal"] for e in server.events if e["event"] == "signal"][-1] == "SIGKILL"
    assert server.event("summary")["aborted_at_drain"] == 1


def test_binary_mode_carries_every_byte_both_ways(netkit_server):
    server = netkit_server("ws-server", ":0", "--exec", "cat", "--binary", "--max-size", "4MiB")
    payload = os.urandom(3 << 20)

    async def round_trip() -> tuple[bytes, set[type]]:
        async with connect(server.listening["url"], max_size=None) as ws:
            got = bytearray()
            kinds: set[type] = set()

            async def read() -> None:
                while len(got) < len(payload):
                    message = await ws.recv()
                    kinds.add(type(message))
                    got.extend(message if isinstance(message, bytes) else message.encode())

            reader = asyncio.create_task(read())
            for i in range(0, len(payload), 256 << 10):
                await ws.send(payload[i : i + (256 << 10)])
            await reader
        return bytes(got), kinds

    got, kinds = run(round_trip(), timeout=30)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert kinds == {bytes}
    assert server.stop() == 0


def test_a_line_that_is_not_utf8_comes_as_a_binary_message(netkit_server):
    server = netkit_server("ws-server", ":0", "--exec", r"printf 'caf\351\nok\n'; sleep 5")

    async def read_two() -> list[str | bytes]:
        async with connect(server.listening["url"]) as ws:
            return [await ws.recv(), await ws.recv()]

    assert run(read_two()) == [b"caf\xe9", "ok"]
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--binary"], "--binary needs --exec"),
        (["--exec", "cat", "--mode", "broadcast"], "--exec and --mode broadcast"),
    ],
)
def test_exec_flag_misuse_is_a_usage_error(args, message):
    result = run_netkit("ws-server", ":0", *args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert message in result.stderr
