"""Listeners for TCP, UDP and Unix-domain sockets, socket options, and bind-error translation.

Raw sockets are made here, set up completely and handed to the event loop; a socket whose set-up
fails is closed before the error propagates. Every ``OSError`` leaves this module as a
:mod:`netkit.errors` exception that names the address. Outgoing stream connections are made in
:mod:`netkit.net.connect`, which also words connect errors (a UDP client's too).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Any

from netkit.core.addresses import TCPEndpoint, UDPEndpoint, UnixEndpoint
from netkit.errors import (
    BindError,
    ConfigError,
    Setting,
)

DEFAULT_BACKLOG = 1024
# This process or machine ran out of something: not the peer's fault, not a network failure.
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class SocketOptions:
    """Options applied to every socket a command creates.

    Attributes:
        nodelay: TCP_NODELAY (TCP only).
        keepalive: SO_KEEPALIVE (TCP only).
        sndbuf, rcvbuf: SO_SNDBUF / SO_RCVBUF in bytes, or None for the kernel's default.
    """

    nodelay: bool = True
    keepalive: bool = False
    sndbuf: int | None = None
    rcvbuf: int | None = None


def apply_options(sock: socket.socket, options: SocketOptions, *, tcp: bool | None = None) -> None:
    """Apply :class:`SocketOptions` to a socket; TCP-only options are skipped for others.

    ``tcp``: whether it is a TCP socket, when the caller knows (else the socket is asked).
    """
    if options.sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.sndbuf)
    if options.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.rcvbuf)
    if tcp is None:
        tcp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
    if tcp:
        # Unix sockets refuse these options; they are meaningless there anyway.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(options.nodelay))
        if options.keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


_LINGER_RST = struct.pack("ii", 1, 0)
_SIOCOUTQNSD = 0x894B  # linux/sockios.h


def force_rst(sock: Any) -> None:
    """Make ``close()`` send RST instead of FIN (SO_LINGER {on, 0})."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)


def unsent_bytes(sock: Any) -> int:
    """Bytes in a TCP socket's send queue not yet sent to the peer (SIOCOUTQNSD).

    A reset discards them, so a relay that resets a socket has not delivered them; bytes
    already sent are in the peer's receive queue, which it can still read after the RST. A
    Unix socket's queued bytes stay readable by the peer after close: they count as delivered.
    """
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def describe(address: object) -> str:
    """Format a socket address the way endpoints are written (``[::1]:80``, ``unix:/p``)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        address = address.decode(errors="replace")
    if isinstance(address, str):
        if address.startswith("\0"):
            return "unix:@" + address[1:]
        return "unix:" + address if address else "unix:(unnamed)"
    return str(address)


def translate_bind_error(exc: OSError, target: str) -> BindError:
    """Turn an ``OSError`` from creating a listener on ``target`` into a :class:`BindError`."""
    if exc.errno == errno.EADDRINUSE:
        return BindError(
            f"cannot listen on {target}: address already in use",
            hint="pick another port, or :0 to let the kernel choose one",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return BindError(f"cannot listen on {target}: permission denied")
    if exc.errno == errno.EADDRNOTAVAIL:
        return BindError(f"cannot listen on {target}: no such local address")
    if isinstance(exc, socket.gaierror):
        return BindError(f"cannot listen on {target}: cannot resolve host ({exc.strerror})")
    return BindError(f"cannot listen on {target}: {exc.strerror or exc}")


def _resolve(host: str, port: int, type_: int, *, passive: bool) -> list[tuple[int, tuple]]:  # type: ignore[type-arg]
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, type=type_, flags=flags)
    return [(family, addr) for family, _, _, _, addr in infos]


def create_tcp_listener(
    endpoint: TCPEndpoint,
    *,
    reuse_port: bool = False,
    backlog: int = DEFAULT_BACKLOG,
    options: SocketOptions = SocketOptions(),
) -> socket.socket:
    """Create a listening TCP socket (IPv4 or IPv6, from the host's first address).

    Args:
        endpoint: where to listen; port 0 lets the kernel choose.
        reuse_port: SO_REUSEPORT, so several worker processes can share the port.
        backlog: listen() backlog.
        options: socket options inherited by accepted connections.

    Raises:
        BindError: address in use, permission denied, host not local.
    """
    target = str(endpoint)
    try:
        family, addr = _resolve(endpoint.host, endpoint.port, socket.SOCK_STREAM, passive=True)[0]
    except OSError as exc:
        raise translate_bind_error(exc, target) from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # [::]:PORT means IPv6 only; listen on 0.0.0.0 too by naming it separately.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        apply_options(sock, options)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise translate_bind_error(exc, target) from exc
    return sock


# Socket files this process bound: path -> (st_dev, st_ino) taken right after bind().
# Module state because the listener socket cannot tell which file it bound; it survives
# fork, so a worker of a multi-process server can clean up the file its parent bound.
_bound_files: dict[str, tuple[int, int]] = {}


def _file_identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _remove_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(
            f"cannot listen on unix:{path}: the path exists and is not a socket (not removing it)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # Stale: a previous server died without cleaning up. Unless a server bound the path
        # anew while we probed: then the file is another one, and it is not ours to remove.
        with contextlib.suppress(FileNotFoundError):
            if _file_identity(os.lstat(path)) == _file_identity(st):
                os.unlink(path)
        return
    except OSError:
        return  # let bind() report what is wrong
    finally:
        probe.close()
    raise BindError(f"cannot listen on unix:{path}: another server is listening there")


def create_unix_listener(
    endpoint: UnixEndpoint,
    *,
    mode: int | None = 0o660,
    backlog: int = DEFAULT_BACKLOG,
    options: SocketOptions = SocketOptions(),
) -> socket.socket:
    """Create a listening Unix-domain stream socket.

    A stale socket file (nobody listening) is removed; any other existing file is left alone
    and reported. The new socket file gets ``mode`` (abstract sockets have no file).

    Raises:
        BindError: the path exists and is not a stale socket, or bind failed.
    """
    target = str(endpoint)
    if not endpoint.abstract:
        _remove_stale_socket(endpoint.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        apply_options(sock, options)
        if endpoint.abstract:
            sock.bind(endpoint.address)
        else:
            # Bind under a restrictive umask so the file never exists with a looser mode.
            old = os.umask(0o177)
            try:
                sock.bind(endpoint.address)
            finally:
                os.umask(old)
            # Right after bind: the file is ours; remember which file, so exiting never
            # removes a file another server bound at this path since (CPython 3.13's
            # asyncio cleanup_socket keeps st_ino for the same reason).
            _bound_files[endpoint.path] = _file_identity(os.lstat(endpoint.path))
            if mode is not None:
                os.chmod(endpoint.path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise translate_bind_error(exc, target) from exc
    return sock


def create_udp_socket(
    endpoint: UDPEndpoint, *, bind: bool, options: SocketOptions = SocketOptions()
) -> tuple[socket.socket, tuple]:  # type: ignore[type-arg]
    """Create a UDP socket for ``endpoint``: bound to it (server) or aimed at it (client).

    Returns:
        The non-blocking socket and the resolved peer/bind address.

    Raises:
        BindError: (server) the address cannot be bound.
        ConnectError: (client) the host does not resolve.
    """
    # Connect errors are worded where every other connector's are (netkit.net.connect,
    # which imports this module: imported here, not at the top).
    from netkit.net.connect import translate_connect_error

    target = str(endpoint)
    try:
        family, addr = _resolve(endpoint.host, endpoint.port, socket.SOCK_DGRAM, passive=bind)[0]
    except OSError as exc:
        if bind:
            raise translate_bind_error(exc, target) from exc
        raise translate_connect_error(exc, target) from exc
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        apply_options(sock, options)
        if bind:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
        else:
            sock.connect(addr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if bind:
            raise translate_bind_error(exc, target) from exc
        raise translate_connect_error(exc, target) from exc
    return sock, addr


def listener_address(sock: socket.socket) -> str:
    """The address a listener really bound, as an endpoint string (``127.0.0.1:41235``)."""
    return describe(sock.getsockname())


def unlink_unix_listener(endpoint: UnixEndpoint) -> None:
    """Remove the socket file of a listener this process created, if it is still that file.

    Nothing is removed for abstract sockets, for paths this process did not bind, or when the
    file at the path is no longer the one bound (same device and inode): another server may
    have bound the path since, and its socket must survive our exit.
    """
    if endpoint.abstract:
        return
    identity = _bound_files.get(endpoint.path)
    if identity is None:
        return
    with contextlib.suppress(OSError):
        st = os.lstat(endpoint.path)
        if stat.S_ISSOCK(st.st_mode) and _file_identity(st) == identity:
            os.unlink(endpoint.path)
            del _bound_files[endpoint.path]


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit, so thousands of sockets fit.

    Returns:
        The (soft, hard) limits now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# Descriptors a process needs besides its connections: the interpreter, the loop, listeners.
FD_RESERVE = 64


def descriptors_needed(connections: int, per_connection: int) -> int:
    """Open files needed for ``connections`` at ``per_connection`` descriptors each."""
    return connections * per_connection + FD_RESERVE


SOCKET_MODE = Setting("socket_mode")


def parse_socket_mode(text: str) -> int:
    """Parse an octal file mode such as ``660`` or ``0o600``.

    Raises:
        ConfigError: not an octal number in 0..0o777.
    """
    try:
        mode = int(text.removeprefix("0o"), 8)
    except ValueError:
        raise ConfigError((SOCKET_MODE, f" {text!r} is not an octal mode such as 660")) from None
    if not 0 <= mode <= 0o777:
        raise ConfigError((SOCKET_MODE, f" {text!r} is out of range (000-777)"))
    return mode
