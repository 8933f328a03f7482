"""Tests for netkit.net.health: active checks against real loopback and Unix listeners, the
rise/fall cycle of a backend whose port closes and reopens, send/expect probes, bounded
timeouts and a clean stop, under both the asyncio loop and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.backends import Backend
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.state import BackendState
from netkit.errors import ConfigError
from netkit.net.health import CheckResult, HealthChecker, run_check
from netkit.net.sockets import create_unix_listener
from tests.net.conftest import descriptor_limit, hog_descriptors

if TYPE_CHECKING:
    from conftest import Runner

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
INTERVAL = 0.02


async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A backend that says nothing and closes when the client does."""
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def tcp_backend(handler: Handler = until_eof, port: int = 0) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", port)
    return server, server.sockets[0].getsockname()[1]


async def close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def check_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(("check ", "health "))]


# --- the checker's cycle -----------------------------------------------------------------


def test_a_live_backend_stays_up_and_stop_leaves_nothing_running(run: Runner[None]) -> None:
    async def main() -> None:
        server, port = await tcp_backend()
        state = BackendState(Backend(TCPEndpoint("127.0.0.1", port)))
        results: list[CheckResult] = []
        events: list[HealthEvent] = []
        enough = asyncio.Event()

        def on_check(result: CheckResult) -> None:
            results.append(result)
            if len(results) >= 5:
                enough.set()

        checker = HealthChecker(
            [state], interval=INTERVAL, timeout=2, on_check=on_check, on_event=events.append
        )
        async with checker:
            await enough.wait()
            assert len(check_tasks()) == 2  # the runner and one task for the one backend
        assert check_tasks() == []
        assert checker.checks == len(results) >= 5
        assert all(r.ok and r.backend == f"127.0.0.1:{port}" for r in results)
        assert re.fullmatch(r"connected in \d+\.\d ms", results[0].detail)
        assert events == [] and state.up and not state.health.provisional
        assert state.last_check == results[-1].detail
        await close(server)

    run(main())


def test_closed_port_goes_down_after_fall_and_up_after_rise_on_the_same_port(
    run: Runner[None],
) -> None:
    async def main() -> None:
        server, port = await tcp_backend()
        target = f"127.0.0.1:{port}"
        state = BackendState(Backend(TCPEndpoint("127.0.0.1", port)), rise=2, fall=3, slowstart=5)
        results: list[CheckResult] = []
        events: asyncio.Queue[HealthEvent] = asyncio.Queue()
        passed = asyncio.Event()

        def on_check(result: CheckResult) -> None:
            results.append(result)
            if result.ok:
                passed.set()

        async with HealthChecker(
            [state], interval=INTERVAL, timeout=2, on_check=on_check, on_event=events.put_nowait
        ):
            await passed.wait()
            await close(server)  # the backend dies: the port now refuses
            down = await events.get()
            at_down = len(results)  # on_check runs before on_event
            assert (down.old, down.new, down.source) == ("up", "down", "check")
            assert down.reason == f"3 checks failed in a row, last: connection refused by {target}"
            # exactly `fall` failures after the last pass
            assert [r.ok for r in results[:at_down][-4:]] == [True, False, False, False]
            assert not state.up

            server, _ = await tcp_backend(port=port)  # back on the same port
            up = await events.get()
            at_up = len(results)
            assert (up.old, up.new, up.reason) == ("down", "up", "2 checks passed in a row")
            assert [r.ok for r in results[:at_up][-3:]] == [False, True, True]
            assert state.up and state.up_since == up.at
            assert state.effective_weight(up.at) < 1  # slow start begins
        await close(server)

    run(main())


def test_a_dead_unix_backend_goes_down_on_its_first_check_and_comes_back(
    run: Runner[None], tmp_path: Path
) -> None:
    async def main() -> None:
        path = str(tmp_path / "backend.sock")
        state = BackendState(Backend(UnixEndpoint(path)), rise=2)
        checker = HealthChecker([state], interval=INTERVAL, timeout=1)
        [down] = await checker.check_all()  # starts up, provisionally: one failure is enough
        assert down.reason == f"first check failed: no socket at unix:{path}"
        server = await asyncio.start_unix_server(until_eof, path)
        assert await checker.check_all() == []
        [up] = await checker.check_all()
        assert up.new == "up" and state.up
        await close(server)

    run(main())


def test_check_all_checks_backends_concurrently(run: Runner[None]) -> None:
    async def main() -> None:
        live, live_port = await tcp_backend()
        silent, silent_port = await tcp_backend()  # accepts, never answers the probe
        dead, dead_port = await tcp_backend()
        await close(dead)
        states = [
            BackendState(Backend(TCPEndpoint("127.0.0.1", p)))
            for p in (live_port, silent_port, dead_port)
        ]
        checker = HealthChecker(
            states, interval=1, timeout=0.3, probe=CheckProbe(b"x", re.compile(b"."))
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        events = await checker.check_all()
        assert loop.time() - start < 0.9  # the two slow checks overlapped
        assert [e.backend for e in events] == [
            f"127.0.0.1:{p}" for p in (live_port, silent_port, dead_port)
        ]
        assert "connection refused" in events[2].reason
        assert "no reply matching /./" in events[1].reason
        await close(live)
        await close(silent)

    run(main())


def test_stop_interrupts_a_check_in_progress_and_closes_its_socket(run: Runner[None]) -> None:
    async def main() -> None:
        accepted = asyncio.Event()
        ended = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set()
            await until_eof(reader, writer)
            ended.set()

        server, port = await tcp_backend(silent)
        state = BackendState(Backend(TCPEndpoint("127.0.0.1", port)))
        probe = CheckProbe.parse(None, "never")
        checker = HealthChecker([state], interval=INTERVAL, timeout=30, probe=probe)
        checker.start()
        await accepted.wait()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await checker.stop()
        assert loop.time() - start < 1.0
        await ended.wait()  # the backend saw our side go away
        assert checker.checks == 0 and state.up  # an interrupted check is no result
        assert check_tasks() == []
        await checker.stop()  # twice is harmless
        await close(server)

    run(main())


def test_a_failing_callback_stops_the_checks_and_is_raised(run: Runner[None]) -> None:
    async def main() -> None:
        server, port = await tcp_backend()
        await close(server)

        def boom(event: HealthEvent) -> None:
            raise RuntimeError(f"cannot print {event.backend}")

        state = BackendState(Backend(TCPEndpoint("127.0.0.1", port)))
        checker = HealthChecker([state], interval=INTERVAL, timeout=2, on_event=boom)
        with pytest.raises(RuntimeError, match="cannot print"):
            await checker.run()
        assert check_tasks() == []

    run(main())


def test_a_check_that_hits_our_descriptor_limit_does_not_take_the_backend_down(
    run: Runner[None],
) -> None:
    # "Too many open files" is this process's limit, not the backend's failure (the lb used
    # to mark a healthy backend down and answer "no backend available").
    async def main() -> None:
        server, port = await tcp_backend()
        state = BackendState(Backend(TCPEndpoint("127.0.0.1", port)), fall=1)
        events: list[HealthEvent] = []
        checker = HealthChecker([state], interval=INTERVAL, timeout=2, on_event=events.append)
        with descriptor_limit(8):
            hogged = hog_descriptors()  # and whatever another thread frees meanwhile
            try:
                assert await checker.check(state) is None
            finally:
                for fd in hogged:
                    os.close(fd)
        assert events == [] and state.up and state.health.failures == 0
        assert state.last_check.startswith("check skipped: ")
        assert "Too many open files" in state.last_check
        assert await checker.check(state) is None  # descriptors back: a real check passes
        assert state.up and state.last_check.startswith("connected in ")
        await close(server)

    run(main())


def test_run_check_reports_a_local_resource_error_as_skipped(run: Runner[None]) -> None:
    async def main() -> None:
        server, port = await tcp_backend()
        with descriptor_limit(8):
            hogged = hog_descriptors()
            try:
                result = await run_check(TCPEndpoint("127.0.0.1", port), timeout=2)
            finally:
                for fd in hogged:
                    os.close(fd)
        assert not result.ok and result.skipped
        assert result.as_dict()["skipped"] is True
        await close(server)

    run(main())


def test_checker_rejects_bad_timing() -> None:
    with pytest.raises(ConfigError, match="check_interval must be positive"):
        HealthChecker([], interval=0)
    with pytest.raises(ConfigError, match="check_timeout must be positive"):
        HealthChecker([], timeout=-1)
    assert HealthChecker([], interval=3).timeout == 3  # HAProxy: inter when no timeout check


# --- single checks: connect, send/expect, timeouts ---------------------------------------


def test_connect_check_against_ipv6_loopback(run: Runner[None], ipv6: None) -> None:
    async def main() -> None:
        server = await asyncio.start_server(until_eof, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        result = await run_check(TCPEndpoint("::1", port), timeout=1)
        assert result.ok and result.backend == f"[::1]:{port}"
        await close(server)

    run(main())


def test_send_expect_probe_passes_on_a_matching_reply(run: Runner[None]) -> None:
    async def main() -> None:
        received: list[bytes] = []

        async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.readuntil(b"\n"))
            writer.write(b"+PO")  # in two writes: the match is found across them
            await writer.drain()
            writer.write(b"NG\r\n")
            await until_eof(reader, writer)

        server, port = await tcp_backend(pong)
        probe = CheckProbe.parse(r"PING\r\n", r"^\+PONG\r\n")
        result = await run_check(TCPEndpoint("127.0.0.1", port), timeout=2, probe=probe)
        assert result.ok, result.detail
        assert re.fullmatch(r"reply matched /\^\\\+PONG\\r\\n/ in \d+\.\d ms", result.detail)
        assert received == [b"PING\r\n"]
        await close(server)

    run(main())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux")
def test_abstract_unix_backend_is_checked(run: Runner[None]) -> None:
    # uvloop's create_unix_connection refused "\0name" with EINVAL (#13 item 21).
    async def main() -> None:
        endpoint = UnixEndpoint(f"netkit-health-{uuid.uuid4().hex}", abstract=True)
        server = await asyncio.start_unix_server(until_eof, sock=create_unix_listener(endpoint))
        try:
            result = await run_check(endpoint, timeout=2)
        finally:
            await close(server)
        assert result.ok, result.detail
        assert result.detail.startswith("connected in ")
        gone = await run_check(endpoint, timeout=2)
        assert not gone.ok
        assert gone.detail == f"connection refused by unix:@{endpoint.path}"

    run(main())


def test_expect_without_send_reads_a_banner(run: Runner[None], tmp_path: Path) -> None:
    async def main() -> None:
        async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-netkit\r\n")
            await until_eof(reader, writer)

        path = str(tmp_path / "ssh.sock")
        server = await asyncio.start_unix_server(banner, path)
        ok = await run_check(
            UnixEndpoint(path), timeout=2, probe=CheckProbe.parse(None, r"^SSH-2\.0")
        )
        bad = await run_check(
            UnixEndpoint(path), timeout=0.2, probe=CheckProbe.parse(None, "^HTTP")
        )
        assert ok.ok and not bad.ok
        assert bad.detail == (
            f"no reply matching /^HTTP/ from unix:{path} within 0.2s (got b'SSH-2.0-netkit\\r\\n')"
        )
        await close(server)

    run(main())


def test_send_only_probe_passes_once_sent(run: Runner[None]) -> None:
    async def main() -> None:
        got = asyncio.get_running_loop().create_future()

        async def reader_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.read())
            writer.close()

        server, port = await tcp_backend(reader_only)
        result = await run_check(
            TCPEndpoint("127.0.0.1", port), timeout=1, probe=CheckProbe.parse(r"QUIT\r\n")
        )
        assert result.ok and result.detail.startswith("sent 6 bytes in ")
        assert await got == b"QUIT\r\n"  # sent in full, then closed politely (FIN, not RST)
        await close(server)

    run(main())


def test_wrong_reply_then_close_fails_with_what_was_received(run: Runner[None]) -> None:
    async def main() -> None:
        async def err(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\n")
            writer.write(b"-ERR unknown command\r\n")
            writer.close()

        server, port = await tcp_backend(err)
        probe = CheckProbe.parse(r"PING\r\n", r"^\+PONG")
        result = await run_check(TCPEndpoint("127.0.0.1", port), timeout=2, probe=probe)
        assert not result.ok
        assert result.detail == (
            f"127.0.0.1:{port} closed the connection without a reply matching /^\\+PONG/ "
            "(got b'-ERR unknown command\\r\\n')"
        )
        await close(server)

    run(main())


def test_a_silent_backend_fails_within_the_timeout(run: Runner[None]) -> None:
    async def main() -> None:
        server, port = await tcp_backend()
        probe = CheckProbe.parse(r"PING\r\n", "PONG")
        result = await run_check(TCPEndpoint("127.0.0.1", port), timeout=0.2, probe=probe)
        assert not result.ok
        assert (
            result.detail
            == f"no reply matching /PONG/ from 127.0.0.1:{port} within 0.2s (got nothing)"
        )
        assert 0.19 < result.seconds < 1.0
        await close(server)

    run(main())


def test_a_reply_too_long_to_match_fails_at_max_read(run: Runner[None]) -> None:
    async def main() -> None:
        async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"x" * 5000)
            await until_eof(reader, writer)

        server, port = await tcp_backend(chatty)
        probe = CheckProbe(expect=re.compile(b"never"), max_read=1000)
        result = await run_check(TCPEndpoint("127.0.0.1", port), timeout=2, probe=probe)
        assert not result.ok
        assert result.detail.startswith(
            f"no match for /never/ in the first 1000 bytes from 127.0.0.1:{port} (got b'xxx"
        )
        assert result.seconds < 1.0  # it gave up at once, not at the timeout
        await close(server)

    run(main())


def test_connect_timeout_is_bounded(run: Runner[None]) -> None:
    """A listener whose accept queue is full drops SYNs: the connect hangs until our timeout."""

    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = []
            try:
                for _ in range(3):  # more than the queue holds
                    s = socket.socket()
                    fillers.append(s)
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", port))
                result = await run_check(TCPEndpoint("127.0.0.1", port), timeout=0.3)
            finally:
                for s in fillers:
                    s.close()
        assert not result.ok
        assert result.detail == f"timed out connecting to 127.0.0.1:{port}"
        assert 0.29 < result.seconds < 1.0

    run(main())
