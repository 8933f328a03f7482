"""Tests for netkit.net.sockets: listeners, Unix socket files, options, bind error translation."""

from __future__ import annotations

import errno
import os
import resource
import socket
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from netkit.core.addresses import TCPEndpoint, UDPEndpoint, UnixEndpoint
from netkit.errors import (
    BindError,
    ConfigError,
    LocalError,
)
from netkit.net.sockets import (
    SocketOptions,
    apply_options,
    create_tcp_listener,
    create_udp_socket,
    create_unix_listener,
    describe,
    listener_address,
    parse_socket_mode,
    raise_nofile_limit,
    translate_bind_error,
    unlink_unix_listener,
)

if TYPE_CHECKING:
    pass


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def accept_one(listener: socket.socket) -> socket.socket:
    """Accept one connection on a non-blocking listener, waiting at most 5 s."""
    listener.settimeout(5)
    conn, _ = listener.accept()
    conn.settimeout(5)
    return conn


def exchange(listener: socket.socket, family: int, address: object) -> None:
    """Connect to ``listener`` and check bytes flow both ways."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(address)
        with accept_one(listener) as server:
            client.sendall(b"ping")
            assert server.recv(4) == b"ping"
            server.sendall(b"pong")
            assert client.recv(4) == b"pong"


# --- TCP listeners -----------------------------------------------------------------------


def test_tcp_listener_ipv4_accepts() -> None:
    listener = create_tcp_listener(TCPEndpoint("127.0.0.1", 0))
    with listener:
        assert listener.family == socket.AF_INET
        assert listener.getblocking() is False
        host, port = listener.getsockname()
        assert host == "127.0.0.1"
        assert port != 0
        assert listener_address(listener) == f"127.0.0.1:{port}"
        exchange(listener, socket.AF_INET, ("127.0.0.1", port))


@pytest.mark.usefixtures("ipv6")
def test_tcp_listener_ipv6_accepts() -> None:
    listener = create_tcp_listener(TCPEndpoint("::1", 0))
    with listener:
        assert listener.family == socket.AF_INET6
        assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = listener.getsockname()[1]
        assert listener_address(listener) == f"[::1]:{port}"
        exchange(listener, socket.AF_INET6, ("::1", port))


def test_tcp_listener_sets_reuseaddr_and_options() -> None:
    options = SocketOptions(nodelay=True, keepalive=True)
    with create_tcp_listener(TCPEndpoint("127.0.0.1", 0), options=options) as listener:
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_tcp_address_in_use_is_a_bind_error() -> None:
    with create_tcp_listener(TCPEndpoint("127.0.0.1", 0)) as first:
        port = first.getsockname()[1]
        with pytest.raises(BindError, match=f"127.0.0.1:{port}: address already in use") as info:
            create_tcp_listener(TCPEndpoint("127.0.0.1", port))
        assert isinstance(info.value, LocalError)
        assert info.value.hint is not None and ":0" in info.value.hint
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EADDRINUSE
        # The first listener is untouched.
        exchange(first, socket.AF_INET, ("127.0.0.1", port))


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_tcp_reuse_port_lets_two_listeners_share_a_port() -> None:
    first = create_tcp_listener(TCPEndpoint("127.0.0.1", 0), reuse_port=True)
    with first:
        port = first.getsockname()[1]
        with create_tcp_listener(TCPEndpoint("127.0.0.1", port), reuse_port=True) as second:
            assert second.getsockname()[1] == port
            assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


# --- Unix listeners ----------------------------------------------------------------------


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.sock"
    assert len(str(path).encode()) <= 107, "tmp_path too long for a socket path"
    return path


def file_mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_unix_listener_default_mode_is_0660(sock_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    with create_unix_listener(UnixEndpoint(str(sock_path))) as listener:
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        assert file_mode(sock_path) == 0o660
        assert listener.getblocking() is False
        assert listener_address(listener) == f"unix:{sock_path}"
        exchange(listener, socket.AF_UNIX, str(sock_path))
    # The process umask is restored.
    now = os.umask(umask)
    os.umask(now)
    assert now == umask


@pytest.mark.parametrize("mode", [0o600, 0o666, 0o640])
def test_unix_listener_explicit_mode(sock_path: Path, mode: int) -> None:
    with create_unix_listener(UnixEndpoint(str(sock_path)), mode=mode):
        assert file_mode(sock_path) == mode


def test_unix_listener_mode_none_keeps_the_restrictive_bind_mode(sock_path: Path) -> None:
    with create_unix_listener(UnixEndpoint(str(sock_path)), mode=None):
        assert file_mode(sock_path) == 0o600


def test_unix_listener_removes_a_stale_socket(sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # a server that died without unlinking its file
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    with create_unix_listener(UnixEndpoint(str(sock_path))) as listener:
        exchange(listener, socket.AF_UNIX, str(sock_path))


def test_unix_listener_refuses_to_clobber_a_regular_file(sock_path: Path) -> None:
    sock_path.write_text("precious")
    with pytest.raises(BindError, match="the path exists and is not a socket"):
        create_unix_listener(UnixEndpoint(str(sock_path)))
    assert sock_path.is_file()
    assert sock_path.read_text() == "precious"


def test_unix_listener_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    with pytest.raises(BindError, match="is not a socket"):
        create_unix_listener(UnixEndpoint(str(directory)))
    assert directory.is_dir()


def test_unix_listener_refuses_when_another_server_is_live(sock_path: Path) -> None:
    with create_unix_listener(UnixEndpoint(str(sock_path))) as live:
        with pytest.raises(BindError, match="another server is listening there"):
            create_unix_listener(UnixEndpoint(str(sock_path)))
        # The live server keeps its file and still accepts (after the probe connection).
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        probe = accept_one(live)
        probe.close()
        exchange(live, socket.AF_UNIX, str(sock_path))


def test_unix_listener_missing_directory_is_a_bind_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.sock"
    with pytest.raises(BindError, match=f"cannot listen on unix:{path}"):
        create_unix_listener(UnixEndpoint(str(path)))


@linux_only
def test_abstract_unix_listener() -> None:
    name = f"netkit-test-{uuid.uuid4().hex}"
    endpoint = UnixEndpoint(name, abstract=True)
    with create_unix_listener(endpoint) as listener:
        assert listener_address(listener) == f"unix:@{name}"
        exchange(listener, socket.AF_UNIX, "\0" + name)
        # Abstract sockets have no file to unlink, and a second bind is refused.
        unlink_unix_listener(endpoint)
        with pytest.raises(BindError, match="address already in use"):
            create_unix_listener(endpoint)


def test_unlink_unix_listener_removes_only_sockets(tmp_path: Path, sock_path: Path) -> None:
    listener = create_unix_listener(UnixEndpoint(str(sock_path)))
    listener.close()
    assert sock_path.exists()
    unlink_unix_listener(UnixEndpoint(str(sock_path)))
    assert not sock_path.exists()
    # Missing: nothing to do, no error.
    unlink_unix_listener(UnixEndpoint(str(sock_path)))
    regular = tmp_path / "regular"
    regular.write_text("keep")
    unlink_unix_listener(UnixEndpoint(str(regular)))
    assert regular.read_text() == "keep"
    # Abstract endpoints whose name matches a file leave the file alone.
    unlink_unix_listener(UnixEndpoint(str(regular), abstract=True))
    assert regular.exists()


def test_unlink_unix_listener_spares_a_socket_another_server_bound_since(sock_path: Path) -> None:
    # A binds; its file is removed by hand and B (another process: a socket bound outside
    # this module) binds the same path; A exits.
    endpoint = UnixEndpoint(str(sock_path))
    a = create_unix_listener(endpoint)
    sock_path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as b:
        b.bind(str(sock_path))
        b.listen()
        a.close()
        unlink_unix_listener(endpoint)  # A's cleanup on exit
        assert stat.S_ISSOCK(sock_path.lstat().st_mode), "B's socket file was removed"
        exchange(b, socket.AF_UNIX, str(sock_path))  # B still serves


def test_unlink_unix_listener_spares_a_socket_renamed_over_ours(
    tmp_path: Path, sock_path: Path
) -> None:
    a = create_unix_listener(UnixEndpoint(str(sock_path)))
    other_path = tmp_path / "other.sock"
    with create_unix_listener(UnixEndpoint(str(other_path))) as b:
        os.rename(other_path, sock_path)  # B's file now sits at A's path
        a.close()
        unlink_unix_listener(UnixEndpoint(str(sock_path)))
        assert sock_path.exists()
        exchange(b, socket.AF_UNIX, str(sock_path))


def test_unlink_unix_listener_leaves_sockets_it_did_not_bind(sock_path: Path) -> None:
    foreign = socket.socket(socket.AF_UNIX)
    foreign.bind(str(sock_path))
    foreign.close()
    unlink_unix_listener(UnixEndpoint(str(sock_path)))
    assert sock_path.exists()


# --- UDP ---------------------------------------------------------------------------------


def test_udp_server_and_client() -> None:
    server, bound = create_udp_socket(UDPEndpoint("127.0.0.1", 0), bind=True)
    with server:
        port = server.getsockname()[1]
        assert bound == ("127.0.0.1", 0)
        client, peer = create_udp_socket(UDPEndpoint("127.0.0.1", port), bind=False)
        with client:
            assert peer == ("127.0.0.1", port)
            assert client.getpeername() == ("127.0.0.1", port)
            client.send(b"datagram")
            server.settimeout(5)
            data, addr = server.recvfrom(100)
            assert data == b"datagram"
            assert addr == client.getsockname()


def test_udp_address_in_use_is_a_bind_error() -> None:
    server, _ = create_udp_socket(UDPEndpoint("127.0.0.1", 0), bind=True)
    with server:
        port = server.getsockname()[1]
        with pytest.raises(BindError, match=f"udp://127.0.0.1:{port}: address already in use"):
            create_udp_socket(UDPEndpoint("127.0.0.1", port), bind=True)


# --- bind error translation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (OSError(errno.EADDRINUSE, "in use"), "cannot listen on T: address already in use"),
        (OSError(errno.EACCES, "denied"), "cannot listen on T: permission denied"),
        (OSError(errno.EPERM, "not permitted"), "cannot listen on T: permission denied"),
        (OSError(errno.EADDRNOTAVAIL, "x"), "cannot listen on T: no such local address"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
         "cannot listen on T: cannot resolve host (Name or service not known)"),
        (OSError(errno.EINVAL, "Invalid argument"), "cannot listen on T: Invalid argument"),
    ],
)  # fmt: skip
def test_translate_bind_error_table(err: OSError, message: str) -> None:
    error = translate_bind_error(err, "T")
    assert isinstance(error, BindError)
    assert str(error) == message


# --- options, limits, modes --------------------------------------------------------------


def test_apply_options_on_tcp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        apply_options(sock, SocketOptions(nodelay=True, keepalive=True, rcvbuf=65536, sndbuf=32768))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        # Linux doubles the requested size for bookkeeping; at least what we asked for.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 32768


def test_apply_options_nodelay_off_and_defaults() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        default_rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        apply_options(sock, SocketOptions(nodelay=False))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == default_rcvbuf
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        apply_options(sock, SocketOptions())
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_apply_options_skips_tcp_options_elsewhere() -> None:
    a, b = socket.socketpair()
    with a, b:
        apply_options(a, SocketOptions(nodelay=True, keepalive=True, rcvbuf=65536))
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        apply_options(udp, SocketOptions(nodelay=True, keepalive=True, sndbuf=65536))
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 65536
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.fixture
def restore_nofile() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_raise_nofile_limit(restore_nofile: tuple[int, int]) -> None:
    soft_before, hard_before = restore_nofile
    # Start from a lowered soft limit so there is something to raise.
    lowered = min(soft_before, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard_before))
    soft, hard = raise_nofile_limit()
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == hard_before
    assert soft >= lowered
    if hard != resource.RLIM_INFINITY:
        assert soft == hard
    # Calling it again changes nothing.
    assert raise_nofile_limit() == (soft, hard)


@pytest.mark.parametrize(
    ("text", "mode"),
    [("660", 0o660), ("0o600", 0o600), ("0600", 0o600), ("777", 0o777), ("0", 0), ("000", 0)],
)
def test_parse_socket_mode(text: str, mode: int) -> None:
    assert parse_socket_mode(text) == mode


@pytest.mark.parametrize("text", ["", "rw", "0o", "689", "0x1ff", "6.6"])
def test_parse_socket_mode_not_octal(text: str) -> None:
    with pytest.raises(ConfigError, match="is not an octal mode such as 660"):
        parse_socket_mode(text)


@pytest.mark.parametrize("text", ["1000", "7777", "-1"])
def test_parse_socket_mode_out_of_range(text: str) -> None:
    with pytest.raises(ConfigError, match=r"is out of range \(000-777\)"):
        parse_socket_mode(text)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 80), "127.0.0.1:80"),
        (("::1", 80, 0, 0), "[::1]:80"),
        ("/run/x.sock", "unix:/run/x.sock"),
        (b"/run/x.sock", "unix:/run/x.sock"),
        ("\0abstract", "unix:@abstract"),
        (b"\0abstract", "unix:@abstract"),
        ("", "unix:(unnamed)"),
        (None, "None"),
    ],
)
def test_describe(address: object, text: str) -> None:
    assert describe(address) == text
