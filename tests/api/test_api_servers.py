"""netkit.echo_server and netkit.udp_echo_server over real loopback and Unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from pathlib import Path

import pytest
import trustme

import netkit
from netkit import BindError, ConfigError, EndpointError, ServerTLS


async def _echo(host: str | None, port: int | None, data: bytes, **kw: object) -> bytes:
    reader, writer = await asyncio.open_connection(host, port, **kw)  # type: ignore[arg-type]
    writer.write(data)
    got = await reader.readexactly(len(data))
    writer.close()
    await writer.wait_closed()
    return got


def test_echo_server_on_port_zero_echoes_and_counts(run) -> None:
    async def main() -> dict[str, object]:
        async with netkit.echo_server() as server:
            assert server.host == "127.0.0.1" and server.port and server.port > 0
            assert server.address == f"127.0.0.1:{server.port}" and not server.tls
            assert await _echo(server.host, server.port, b"hello" * 1000) == b"hello" * 1000
        # The drain at the end of the block waited for the client's close: all is counted.
        stats = server.stats
        assert server.active == 0
        # After the block the port is closed: nobody is listening there any more.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        return stats

    stats = run(main())
    assert stats["connections"] == 1 and stats["bytes_in"] == stats["bytes_out"] == 5000


def test_framed_echo_server_returns_whole_frames(run) -> None:
    async def main() -> bytes:
        async with netkit.echo_server(framed=True, max_frame=1024) as server:
            frame = struct.pack("!I", 3) + b"abc"
            return await _echo(server.host, server.port, frame + frame)

    assert run(main()) == (struct.pack("!I", 3) + b"abc") * 2


def test_echo_server_on_a_unix_socket_removes_its_file(run, tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"

    async def main() -> bytes:
        async with netkit.echo_server(f"unix:{path}") as server:
            assert server.path == str(path) and server.port is None
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"unix")
            got = await reader.readexactly(4)
            writer.close()
            return got

    assert run(main()) == b"unix"
    assert not path.exists()


def test_self_signed_tls_echo_server(run) -> None:
    async def main() -> bytes:
        async with netkit.echo_server(tls=True) as server:
            assert server.tls and server.ca_file is not None and server.ca_file.exists()
            ctx = server.client_ssl_context()
            return await _echo(
                server.host, server.port, b"secret", ssl=ctx, server_hostname="localhost"
            )

    assert run(main()) == b"secret"


def test_tls_from_certificate_files(run, tmp_path: Path) -> None:
    ca = trustme.CA()
    chain = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(chain))
    client = ssl.create_default_context()
    ca.configure_trust(client)

    async def main() -> bytes:
        async with netkit.echo_server(tls=ServerTLS(cert=chain)) as server:
            return await _echo(server.host, server.port, b"files", ssl=client)

    assert run(main()) == b"files"


@pytest.mark.parametrize(
    ("make_tls", "words"),
    [
        (lambda p: ServerTLS(cert=p / "missing.pem"), "cannot read certificate file"),
        (lambda p: "yes", r"give True \(self-signed\)"),
    ],
)
def test_bad_tls_settings_are_usage_errors(run, tmp_path: Path, make_tls, words: str) -> None:
    async def main() -> None:
        async with netkit.echo_server(tls=make_tls(tmp_path)):
            raise AssertionError("the server must not start")

    with pytest.raises(ConfigError, match=words):
        run(main())


def test_half_a_tls_configuration_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(netkit.UsageError, match="key needs cert"):
        ServerTLS(key=tmp_path / "key.pem")


def test_client_context_needs_a_self_signed_server(run) -> None:
    async def main() -> None:
        async with netkit.echo_server() as server:
            server.client_ssl_context()

    with pytest.raises(ConfigError, match="tls=True"):
        run(main())


def test_bad_endpoint_frame_limit_and_taken_port(run) -> None:
    async def main() -> None:
        with pytest.raises(EndpointError):
            async with netkit.echo_server("nowhere:port"):
                pass
        with pytest.raises(ConfigError, match="max_frame"):
            async with netkit.echo_server(framed=True, max_frame=0):
                pass
        async with netkit.echo_server() as first:
            with pytest.raises(BindError, match="already in use"):
                async with netkit.echo_server(first.address):
                    pass

    run(main())


def test_udp_echo_server(run) -> None:
    async def main() -> tuple[bytes, dict[str, object]]:
        async with netkit.udp_echo_server() as server:
            assert server.port and server.address == f"127.0.0.1:{server.port}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", server.port))
                sock.send(b"ping")
                got = await asyncio.get_running_loop().sock_recv(sock, 100)
            finally:
                sock.close()
            return got, server.stats

    got, stats = run(main())
    assert got == b"ping" and stats["datagrams_out"] == 1 and stats["peers"] == 1


def test_udp_echo_server_refuses_a_bad_size(run) -> None:
    async def main() -> None:
        async with netkit.udp_echo_server(max_size=70000):
            pass

    with pytest.raises(ConfigError, match="UDP payloads are 1 to 65507"):
        run(main())


def test_connection_limit_and_events(run) -> None:
    events: list[str] = []

    async def main() -> dict[str, object]:
        async with netkit.echo_server(
            max_connections=1, on_event=lambda name, fields: events.append(name)
        ) as server:
            r1, w1 = await asyncio.open_connection(server.host, server.port)
            w1.write(b"a")
            assert await r1.readexactly(1) == b"a"  # the first client is served
            r2, w2 = await asyncio.open_connection(server.host, server.port)
            with contextlib.suppress(ConnectionResetError):  # reset, or EOF: turned away
                assert await r2.read(1) == b""
            w2.close()
            w1.close()
        return server.stats

    stats = run(main())
    assert stats["rejected"] == 1 and stats["connections"] == 1
    assert events[:1] == ["connected"] and "rejected" in events and "disconnected" in events
