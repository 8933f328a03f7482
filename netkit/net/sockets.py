"""Listeners and connectors for TCP, UDP and Unix-domain sockets, and OSError translation.

Raw sockets are made here, set up completely and handed to the event loop; a socket whose set-up
fails is closed before the error propagates. Every ``OSError`` leaves this module as a
:mod:`netkit.errors` exception that names the address.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import ssl
import stat
from dataclasses import dataclass

from netkit.core.addresses import TCPEndpoint, UDPEndpoint, UnixEndpoint
from netkit.errors import (
    BindError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    ResourceExhausted,
    Setting,
    TLSError,
    Words,
    words,
)
from netkit.net.tls import CACERT, CERT, INSECURE, KEY, SNI

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


def apply_options(sock: socket.socket, options: SocketOptions) -> None:
    """Apply :class:`SocketOptions` to a socket; TCP-only options are skipped for others."""
    if options.sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.sndbuf)
    if options.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.rcvbuf)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        # Unix sockets refuse these options; they are meaningless there anyway.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(options.nodelay))
        if options.keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


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


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_EMAIL_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = frozenset({62, 63, 64})


# TLS alerts a server sends when it refuses us (RFC 8446 6.2, RFC 5246 7.2), by OpenSSL's
# reason name: (what the server said, in words; what to do). TLS 1.3 servers verify the client
# certificate after our side of the handshake is done, so their alert arrives on the first
# read: callers translate errors from then on too, not only from connecting.
_CERT_AND_KEY = ("pass ", CERT, " FILE and ", KEY, " FILE")
_CLIENT_CERT_HINT = (*_CERT_AND_KEY, " with a certificate the server's CA issued")
_TLS_ALERTS: dict[str, tuple[Words, Words | None]] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "the server requires a client certificate (alert: certificate required)",
        _CERT_AND_KEY,
    ),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the server refused the handshake (alert: handshake failure): it wants a client "
        "certificate, or shares no cipher or version with us",
        _CLIENT_CERT_HINT,
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        "the server does not trust the CA of our client certificate (alert: unknown ca)",
        _CLIENT_CERT_HINT,
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": (
        "the server rejected our client certificate (alert: bad certificate)",
        _CLIENT_CERT_HINT,
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (
        "the server rejected our client certificate (alert: certificate unknown)",
        _CLIENT_CERT_HINT,
    ),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        "the server does not accept our client certificate's type (alert: unsupported certificate)",
        _CLIENT_CERT_HINT,
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        "the server says our client certificate has expired (alert: certificate expired)",
        None,
    ),
    "SSLV3_ALERT_CERTIFICATE_REVOKED": (
        "the server says our client certificate was revoked (alert: certificate revoked)",
        None,
    ),
    "TLSV1_ALERT_ACCESS_DENIED": ("the server denied access (alert: access denied)", None),
    "TLSV1_ALERT_DECRYPT_ERROR": (
        (
            "the server could not verify our client certificate's signature (alert: decrypt "
            "error): is ",
            KEY,
            " the certificate's key?",
        ),
        None,
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "the server supports none of our TLS versions (alert: protocol version)",
        None,
    ),
    "TLSV1_UNRECOGNIZED_NAME": (
        "the server does not serve the name we asked for (alert: unrecognized name)",
        ("check the host name, or pass ", SNI, " NAME"),
    ),
}


def translate_connect_error(exc: BaseException, target: str) -> NetkitError:
    """Turn an exception from connecting to ``target`` into a netkit error."""
    if isinstance(exc, NetkitError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NAME_MISMATCH:
            # Trusted, but issued for another name: --cacert or --insecure is not the cure.
            return TLSError(
                f"TLS certificate of {target} is for another name: {exc.verify_message}",
                hint=("pass ", SNI, " NAME to check it against the name it was issued for"),
            )
        return TLSError(
            f"TLS certificate of {target} not trusted: {exc.verify_message}",
            hint=("pass ", CACERT, " FILE to trust its CA, or ", INSECURE, " to skip verification"),
        )
    if isinstance(exc, ssl.SSLError):
        alert = _TLS_ALERTS.get(getattr(exc, "reason", None) or "")
        if alert is not None:
            return TLSError(words(f"TLS handshake with {target} failed: ", alert[0]), hint=alert[1])
        # ssl.py raises some SSLErrors itself, without OpenSSL's ``reason``.
        return TLSError(
            f"TLS handshake with {target} failed: {getattr(exc, 'reason', None) or exc}"
        )
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve {target}: {exc.strerror}")
    if isinstance(exc, TimeoutError):
        return OperationTimeout(f"timed out connecting to {target}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection refused by {target}{_unix_refusal(target)}")
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return ConnectionLost(f"connection to {target} was reset")
    if isinstance(exc, FileNotFoundError):
        return ConnectError(f"no socket at {target}")
    if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
        return ResourceExhausted(f"cannot connect to {target}: {exc.strerror or exc}")
    if isinstance(exc, OSError):
        return ConnectError(f"cannot connect to {target}: {exc.strerror or exc}")
    return ConnectError(f"cannot connect to {target}: {exc}")


def _unix_refusal(target: str) -> str:
    """Why a Unix socket path refused: the kernel says ECONNREFUSED for a directory too."""
    if not target.startswith("unix:") or target.startswith("unix:@"):
        return ""
    path = target.removeprefix("unix://") if target.startswith("unix://") else target[5:]
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISDIR(mode):
        return " (it is a directory, not a socket)"
    if not stat.S_ISSOCK(mode):
        return " (it is not a socket)"
    return " (no server listens on that socket file)"


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
