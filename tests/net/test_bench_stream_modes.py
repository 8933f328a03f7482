"""iperf3's modes in-process: ``bench --scenario stream`` forward, reverse and bidir against
:class:`~netkit.net.streamtest.StreamTestConnection` on real loopback and Unix sockets, every
count checked exactly against what the server counted; wrong servers refused clearly; a
misbehaving client does not disturb the others."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.bench.plan import LoadPlan
from netkit.core.streamtest import OK_LINE, RESULT_SIZE, Direction, StreamReport, hello
from netkit.errors import OperationTimeout, PeerProtocolError
from netkit.net.bench.worker import Target, run_worker
from netkit.net.echo import EchoConnection
from netkit.net.server import ServerConnection
from netkit.net.streamtest import StreamTestConnection

if TYPE_CHECKING:
    from conftest import Runner, Serve


def plan(**kw: Any) -> LoadPlan:
    kw.setdefault("duration", 0.3)
    kw.setdefault("connections", 2)
    kw.setdefault("total_connections", kw["connections"])
    kw.setdefault("size", 65536)
    return LoadPlan(scenario="stream", **kw)


async def bench(p: LoadPlan, target: Any) -> Any:
    return await run_worker(p, Target(target), handle_signals=False)


class Recorded:
    """A StreamTestConnection factory that keeps every connection it made."""

    def __init__(self) -> None:
        self.conns: list[StreamTestConnection] = []

    def __call__(self) -> StreamTestConnection:
        conn = StreamTestConnection()
        self.conns.append(conn)
        return conn

    def received(self) -> int:
        return sum(c.received for c in self.conns)

    def sent(self) -> int:
        return sum(c.sent for c in self.conns)


@pytest.mark.parametrize("direction", list(Direction))
def test_counts_are_exactly_what_the_server_counted(
    run: Runner[Any], serve: Serve, direction: Direction
) -> None:
    made = Recorded()

    async def main() -> Any:
        async with serve(made) as h:
            return await bench(plan(direction=direction), h.endpoint)

    r = run(main())
    assert not r.errors, r.error_samples
    assert r.direction == direction and len(made.conns) == 2
    assert all(c.direction == direction for c in made.conns)
    # What bench wrote is what the sinks read, and what the sources wrote is what bench read.
    assert r.bytes_sent == r.peer_received == made.received()
    assert r.bytes_received == r.peer_sent == made.sent()
    shown = r.directions()
    if direction.client_sends:
        assert r.bytes_sent > 0
        assert shown["forward"]["receiver_bytes"] == made.received()
        assert shown["forward"]["receiver_mb_per_s"] > 0
    else:
        assert r.bytes_sent == 0 and r.requests == 0 and "forward" not in shown
    if direction.server_sends:
        assert r.bytes_received > 0
        assert shown["reverse"]["sender_bytes"] == made.sent()
    else:
        assert r.bytes_received == 0 and "reverse" not in shown


def test_bidir_over_a_unix_socket_with_a_warmup(
    run: Runner[Any], serve: Serve, tmp_path: Path
) -> None:
    """The warm-up's bytes are not counted, by bench nor in the server's reported figures."""
    made = Recorded()
    where = UnixEndpoint(str(tmp_path / "stream.sock"))

    async def main() -> Any:
        async with serve(made, endpoint=where) as h:
            return await bench(plan(direction="bidir", warmup=0.1), h.endpoint)

    r = run(main())
    assert not r.errors, r.error_samples
    assert 0 < r.bytes_received == r.peer_sent < made.sent()
    assert 0 < r.bytes_sent == r.peer_received < made.received()


@pytest.mark.parametrize("direction", [Direction.REVERSE, Direction.BIDIR])
def test_an_echo_server_is_refused_for_reverse_and_bidir(
    run: Runner[Any], serve: Serve, direction: Direction
) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as h:
            await bench(plan(direction=direction), h.endpoint)

    with pytest.raises(PeerProtocolError, match=r"echo server.*--mode stream"):
        run(main())


def test_forward_to_an_echo_server_writes_as_before(run: Runner[Any], serve: Serve) -> None:
    async def main() -> Any:
        async with serve(EchoConnection) as h:
            return await bench(plan(connections=1), h.endpoint)

    r = run(main())
    assert not r.errors and r.bytes_sent > 0
    assert r.peer_received is None  # an echo server reports nothing
    assert r.directions()["forward"]["receiver_bytes"] is None
    assert 0 < r.bytes_received <= r.bytes_sent  # the echo came back


class Silent(ServerConnection):
    """Accepts and reads, never answers."""

    def data_ready(self) -> None:
        self.rbuf.consume(len(self.rbuf))


def test_a_server_that_never_answers_times_out_with_a_hint(run: Runner[Any], serve: Serve) -> None:
    async def main() -> None:
        async with serve(Silent) as h:
            await bench(plan(timeout=0.2, duration=2.0), h.endpoint)

    with pytest.raises(OperationTimeout, match=r"did not answer.*--mode stream"):
        run(main())


class NoReport(ServerConnection):
    """Answers the hello, sinks, and closes at the client's FIN without the result record."""

    def data_ready(self) -> None:
        view = self.rbuf.view()
        if not getattr(self, "answered", False) and bytes(view).endswith(b"\n"):
            self.answered = True
            self.write(OK_LINE)
        self.rbuf.consume(len(view))


def test_a_missing_result_record_is_an_error(run: Runner[Any], serve: Serve) -> None:
    async def main() -> Any:
        async with serve(NoReport) as h:
            return await bench(plan(connections=1), h.endpoint)

    r = run(main())
    assert r.errors["protocol"] == 1, r.errors
    assert "without its result record" in r.error_samples["protocol"]
    assert r.peer_received is None


def test_the_server_keeps_serving_when_one_client_misbehaves(
    run: Runner[Any], serve: Serve
) -> None:
    made = Recorded()

    async def main() -> Any:
        async with serve(made) as h:
            assert isinstance(h.endpoint, TCPEndpoint)
            loop = asyncio.get_running_loop()
            # A client that sends garbage gets one error line, then the server's close.
            bad = socket.create_connection((h.endpoint.host, h.endpoint.port))
            bad.setblocking(False)
            await loop.sock_sendall(bad, b"GET / HTTP/1.1\r\n\r\n")
            answer = b""
            while chunk := await loop.sock_recv(bad, 4096):
                answer += chunk
            bad.close()
            # One that asks for reverse and resets mid-stream.
            rude = socket.create_connection((h.endpoint.host, h.endpoint.port))
            rude.setblocking(False)
            await loop.sock_sendall(rude, hello(Direction.REVERSE))
            got = await loop.sock_recv(rude, 65536)
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            rude.close()
            # One that says nothing at all stays open during the run.
            mute = socket.create_connection((h.endpoint.host, h.endpoint.port))
            try:
                result = await bench(plan(direction="bidir"), h.endpoint)
            finally:
                mute.close()
            return answer, got, result

    answer, got, r = run(main())
    assert answer.startswith(b"NETKIT-STREAM/1 error not a stream test hello")
    assert got.startswith(OK_LINE)
    assert not r.errors, r.error_samples
    served = [c for c in made.conns if c.direction is Direction.BIDIR]
    assert len(served) == 2
    assert r.bytes_sent == r.peer_received == sum(c.received for c in served) > 0
    assert r.bytes_received == r.peer_sent == sum(c.sent for c in served) > 0


def test_the_server_sends_its_counts_when_it_drains(run: Runner[Any], serve: Serve) -> None:
    """A server shutting down ends each test with its counts: the client learns how much
    arrived, and the early end is an error of the run."""

    async def main() -> tuple[bytes, int]:
        made = Recorded()
        async with serve(made) as h:
            assert isinstance(h.endpoint, TCPEndpoint)
            reader, writer = await asyncio.open_connection(h.endpoint.host, h.endpoint.port)
            writer.write(hello(Direction.FORWARD) + b"x" * 1000)
            assert await reader.readline() == OK_LINE
            while made.received() < 1000:
                await asyncio.sleep(0.01)
            await h.server.drain(5)
            data = await reader.read()
            writer.close()
            return data, made.conns[0].received

    data, received = run(main())
    assert len(data) == RESULT_SIZE and received == 1000
    report = StreamReport.decode(data, "server")
    assert (report.received, report.sent) == (1000, 0)


def test_an_idle_stream_ends_with_the_counts(run: Runner[Any], serve: Serve) -> None:
    """``--idle-timeout``: a client that goes silent gets the server's counts, then the close."""

    async def main() -> bytes:
        async with serve(lambda: StreamTestConnection(idle_timeout=0.2)) as h:
            assert isinstance(h.endpoint, TCPEndpoint)
            reader, writer = await asyncio.open_connection(h.endpoint.host, h.endpoint.port)
            writer.write(hello(Direction.FORWARD) + b"y" * 300)
            assert await reader.readline() == OK_LINE
            data = await reader.read()  # the server closes once idle
            writer.close()
            return data

    report = StreamReport.decode(run(main()), "server")
    assert (report.received, report.sent) == (300, 0)
    assert report.elapsed_ns >= 150_000_000


@pytest.mark.parametrize("direction", [Direction.FORWARD, Direction.BIDIR])
def test_requests_bound_the_writes(run: Runner[Any], serve: Serve, direction: Direction) -> None:
    """``--requests`` with a stream: that many writes in all, then the run ends (it used to
    write until the duration's default)."""
    made = Recorded()

    async def main() -> Any:
        async with serve(made) as h:
            return await bench(
                plan(direction=direction, duration=None, requests=40, size=32768), h.endpoint
            )

    r = run(main())
    assert not r.errors, r.error_samples
    assert r.requests == 40 and r.bytes_sent == 40 * 32768 == r.peer_received == made.received()
    assert r.duration_s < 5


def test_over_tls_the_client_s_receiving_is_counted(
    run: Runner[Any], serve: Serve, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """asyncio cannot half-close TLS: the server's counts never come, so its figures show as
    not reported, while what bench itself received is counted as over TCP."""
    made = Recorded()

    async def main() -> Any:
        async with serve(made, ssl_context=server_ssl) as h:
            target = Target(h.endpoint, client_ssl, "localhost")
            return await run_worker(plan(direction="bidir"), target, handle_signals=False)

    r = run(main())
    assert not r.errors, r.error_samples
    assert r.transport == "tls" and r.bytes_received > 0 and r.bytes_sent > 0
    assert r.peer_received is None and r.peer_sent is None
    ways = r.directions()
    assert ways["reverse"]["receiver_bytes"] == r.bytes_received
    assert ways["forward"]["receiver_bytes"] is None
    assert made.sent() >= r.bytes_received  # what the server wrote, bench read up to its close
