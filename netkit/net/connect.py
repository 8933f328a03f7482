"""Dialling out: every outgoing stream connection netkit makes starts here.

* :func:`connect_raw` opens a connected, non-blocking socket to a TCP or Unix endpoint (each
  resolved address in turn, socket options set before the connect); the relay hands it to
  ``os.splice`` or to a transport.
* :func:`open_stream` builds on it: the socket wrapped in an asyncio transport with a
  :class:`~netkit.net.protocols.StreamProtocol`, TLS and an opening handshake (a WebSocket
  upgrade) under one deadline, retried with back-off while the service is not up yet
  (``--retry``). Health checks, bench drivers, the WebSocket client and tcp-echo's client use it.
* :func:`open_tunnel` dials through an HTTP proxy (CONNECT, ``--proxy``): the socket it returns
  is a tunnel to the target, ready for TLS or plain bytes, as :func:`connect_raw`'s is.
* :func:`translate_connect_error` turns whatever connecting raised into a netkit error that
  names the address, in words a user can act on.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import select
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.backoff import Backoff
from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.http import MAX_HEAD
from netkit.core.ws.tunnel import ProxyURL, check_answer, connect_request, read_connect_answer
from netkit.errors import (
    ConnectError,
    ConnectionLost,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
    ResourceExhausted,
    TLSError,
    Words,
    words,
)
from netkit.net.protocols import StreamProtocol
from netkit.net.sockets import OUT_OF_RESOURCES, SocketOptions, apply_options
from netkit.net.tls import CACERT, CERT, INSECURE, KEY, SNI
from netkit.net.tls_layer import connect_tls

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
            # Trusted, but issued for another name: trusting its CA or not verifying is no cure.
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


# --- connecting ----------------------------------------------------------------------------


Address = tuple[int, Any]
"""A (family, socket address) pair to connect to."""


def literal_addresses(endpoint: TCPEndpoint | UnixEndpoint) -> list[Address] | None:
    """The address of a Unix endpoint or of an IP literal (no resolver needed), else None."""
    if isinstance(endpoint, UnixEndpoint):
        return [(socket.AF_UNIX, endpoint.address)]
    try:
        ip = ipaddress.ip_address(endpoint.host)
    except ValueError:
        return None  # a name (or a scoped IPv6 address): ask the resolver
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return [(family, (endpoint.host, endpoint.port))]


async def resolve(endpoint: TCPEndpoint | UnixEndpoint) -> list[Address]:
    """(family, address) pairs to try in turn; an IP literal needs no resolver round trip.

    Raises:
        socket.gaierror: the name does not resolve.
    """
    found = literal_addresses(endpoint)
    if found is not None:
        return found
    assert isinstance(endpoint, TCPEndpoint)
    resolved = await asyncio.get_running_loop().getaddrinfo(
        endpoint.host, endpoint.port, type=socket.SOCK_STREAM
    )
    return [(family, addr) for family, _, _, _, addr in resolved]


def _new_socket(family: int, target: str) -> socket.socket:
    # Non-blocking from birth (SOCK_NONBLOCK): no ioctl to make it so afterwards.
    try:
        return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    except OSError as exc:
        if exc.errno in OUT_OF_RESOURCES:
            raise ResourceExhausted(f"cannot open a socket to {target}: {exc.strerror}") from exc
        raise


def _connected_now(sock: socket.socket, addr: Any) -> bool:
    # Start a TCP connect; True when it is complete already (on loopback the handshake is
    # done by the time connect() returns EINPROGRESS: one poll(0) sees it, and the socket
    # never has to be registered with the event loop for writing).
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        raise OSError(err, os.strerror(err))
    if err:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        if not poller.poll(0):
            return False
    _check_connected(sock)
    return True


def _check_connected(sock: socket.socket) -> None:
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _connect_finished(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float | None
) -> None:
    # A TCP connect begun (EINPROGRESS) and not complete yet: wait until the socket is
    # writable, by ``deadline``, then say whether it connected. TCP connects here, not
    # through loop.sock_connect: uvloop's resolves the address again on its thread pool
    # every time, a literal IP included (futex and eventfd round trips).
    fd = sock.fileno()
    writable: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _wake, writable)
    try:
        async with asyncio.timeout_at(deadline):
            await writable
    finally:
        loop.remove_writer(fd)
    _check_connected(sock)


Dialled = socket.socket | Coroutine[Any, Any, socket.socket]
"""A connected socket now, or the coroutine that finishes connecting (await it)."""


def dial_now(
    endpoint: TCPEndpoint | UnixEndpoint,
    addresses: list[Address],
    *,
    timeout: float | None,
    options: SocketOptions = SocketOptions(),
    loop: asyncio.AbstractEventLoop | None = None,
) -> Dialled:
    """Connect to ``endpoint`` at ``addresses`` (resolved already), without waiting if it can.

    On loopback a TCP connect is complete when ``connect()`` returns: the connected socket
    is returned at once, and the caller needs no task and no await. Otherwise (the connect
    is in progress, or a Unix socket) a coroutine is returned that finishes it, trying the
    next addresses in turn as :func:`connect_raw` does; await it.

    Raises:
        ConnectError, OperationTimeout, ResourceExhausted: every address failed at once (the
            coroutine raises the same for failures found while waiting).
    """
    loop = loop or asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    target = str(endpoint)
    try:
        return _dial_from(loop, target, iter(addresses), deadline, options, None)
    except OSError as exc:
        raise translate_connect_error(exc, target) from exc


def _dial_from(
    loop: asyncio.AbstractEventLoop,
    target: str,
    addresses: Iterator[Address],
    deadline: float | None,
    options: SocketOptions,
    last: BaseException | None,
) -> Dialled:
    # Each address in turn: a socket connected at once is returned; one that must be waited
    # for is finished by the coroutine returned (which goes on with the rest). Raises the
    # last address's error when all failed at once.
    for family, addr in addresses:
        sock = _new_socket(family, target)
        tcp = family != socket.AF_UNIX
        try:
            apply_options(sock, options, tcp=tcp)
            if tcp and _connected_now(sock, addr):
                return sock
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return _dial_rest(loop, target, sock, addr, addresses, deadline, options)
    raise last or ConnectError(f"cannot resolve {target}")


async def _dial_rest(
    loop: asyncio.AbstractEventLoop,
    target: str,
    sock: socket.socket,
    addr: Any,
    addresses: Iterator[Address],
    deadline: float | None,
    options: SocketOptions,
) -> socket.socket:
    # Finish connecting ``sock`` (begun for TCP, not yet for Unix); when it fails, the
    # remaining addresses are tried as :func:`dial_now` does.
    try:
        try:
            if sock.family == socket.AF_UNIX:
                async with asyncio.timeout_at(deadline):
                    await loop.sock_connect(sock, addr)
            else:
                await _connect_finished(loop, sock, deadline)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            rest = _dial_from(loop, target, addresses, deadline, options, exc)
        except BaseException:
            sock.close()
            raise
        return rest if isinstance(rest, socket.socket) else await rest
    except TimeoutError:
        raise OperationTimeout(f"timed out connecting to {target}") from None
    except OSError as exc:
        raise translate_connect_error(exc, target) from exc


async def connect_raw(
    endpoint: TCPEndpoint | UnixEndpoint,
    *,
    timeout: float | None,
    options: SocketOptions = SocketOptions(),
    addresses: list[Address] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> socket.socket:
    """Open a non-blocking socket connected to ``endpoint`` (each resolved address in turn).

    Args:
        timeout: deadline for resolving and connecting (None: none).
        options: applied before the connect (a receive buffer set later is not advertised).
        addresses: ``endpoint``'s addresses, resolved already (a relay's
            :class:`~netkit.net.resolved.AddressBook`): no resolver is asked.
        loop: the running loop, when the caller has it at hand.

    Raises:
        ConnectError, OperationTimeout, ResourceExhausted: as the failure was.
    """
    loop = loop or asyncio.get_running_loop()
    if addresses is None:
        deadline = loop.time() + (timeout or 0.0)
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve(endpoint)
        except TimeoutError:
            raise OperationTimeout(f"timed out connecting to {endpoint}") from None
        except OSError as exc:
            raise translate_connect_error(exc, str(endpoint)) from exc
        if timeout is not None:
            timeout = max(0.0, deadline - loop.time())
    dialled = dial_now(endpoint, addresses, timeout=timeout, options=options, loop=loop)
    return dialled if isinstance(dialled, socket.socket) else await dialled


async def open_tunnel(
    proxy: ProxyURL, target: TCPEndpoint, *, options: SocketOptions = SocketOptions()
) -> socket.socket:
    """Connect to ``proxy`` and ask it (HTTP CONNECT) for a tunnel to ``target``.

    Returns:
        The connected, non-blocking socket: what is sent on it goes to ``target``.

    Raises:
        ConnectError: the proxy cannot be reached (the message names it as the proxy).
        ProxyRefused: the proxy answered with something other than 2xx (407, 403, 502 ...).
        ConnectionLost: the proxy closed the connection before it answered.
        PeerProtocolError: the answer was not HTTP, or bytes followed it before we spoke.
    """
    loop = asyncio.get_running_loop()
    try:
        sock = await connect_raw(proxy.endpoint, timeout=None, options=options)
    except ConnectError as exc:
        raise type(exc)(f"proxy: {exc}", hint=exc.hint) from exc
    try:
        await loop.sock_sendall(sock, connect_request(proxy, target))
        buf = ReceiveBuffer(MAX_HEAD)
        while (answer := read_connect_answer(buf, proxy)) is None:
            # Reads stop at the answer: the target says nothing before our first bytes (a
            # WebSocket request, a TLS ClientHello), so nothing of it is read here.
            data = await loop.sock_recv(sock, 4096)
            if not data:
                raise ConnectionLost(f"proxy {proxy} closed the connection before answering")
            buf.extend(data)
        check_answer(answer, proxy, target)
        if len(buf):
            raise PeerProtocolError(
                f"proxy {proxy} sent {len(buf)} bytes after its answer, before we spoke",
                close_code=None,
            )
        return sock
    except OSError as exc:
        sock.close()
        raise translate_connect_error(exc, f"proxy {proxy}") from exc
    except BaseException:
        sock.close()
        raise


async def _open_once(
    endpoint: TCPEndpoint | UnixEndpoint,
    factory: Callable[[], StreamProtocol],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    options: SocketOptions,
    proxy: ProxyURL | None = None,
    own_tls: bool = False,
) -> StreamProtocol:
    loop = asyncio.get_running_loop()
    if proxy is not None and isinstance(endpoint, TCPEndpoint):
        sock = await open_tunnel(proxy, endpoint, options=options)
    else:
        sock = await connect_raw(endpoint, timeout=None, options=options)
    try:
        if ssl_context is not None and own_tls:
            host = endpoint.host if isinstance(endpoint, TCPEndpoint) else "localhost"
            verify_as = server_hostname if server_hostname is not None else host
            _, made = await connect_tls(sock, factory, ssl_context, server_hostname=verify_as)
        elif isinstance(endpoint, UnixEndpoint):
            # uvloop's create_unix_connection rejects an abstract name given as a path;
            # handing it the connected socket serves file and abstract names alike.
            name = (server_hostname or "localhost") if ssl_context else None
            _, made = await loop.create_unix_connection(
                factory, sock=sock, ssl=ssl_context, server_hostname=name
            )
        else:
            name = server_hostname if server_hostname is not None else endpoint.host
            _, made = await loop.create_connection(
                factory, sock=sock, ssl=ssl_context, server_hostname=name if ssl_context else None
            )
    except BaseException:
        sock.close()
        raise
    assert isinstance(made, StreamProtocol)
    if made.transport is not None:
        # Once more on the transport's socket: uvloop turns TCP_NODELAY on when it wraps one.
        apply_options(made.transport.get_extra_info("socket"), options)
    return made


async def open_stream(
    endpoint: TCPEndpoint | UnixEndpoint,
    factory: Callable[[], StreamProtocol],
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = 10.0,
    retry_for: float = 0.0,
    options: SocketOptions = SocketOptions(),
    handshake: Callable[[StreamProtocol], Awaitable[None]] | None = None,
    proxy: ProxyURL | None = None,
    own_tls: bool = False,
) -> StreamProtocol:
    """Connect to a TCP or Unix endpoint (optionally TLS) and return the protocol.

    Args:
        timeout: one deadline for an attempt: the TCP (or Unix) connect, the TLS handshake
            and ``handshake`` together, as websockets' ``open_timeout`` bounds its opening
            (None: no deadline).
        retry_for: keep retrying refused connections (or a missing socket file) for this many
            seconds, so a check can wait for a service that is still starting.
        handshake: awaited once connected, under the same deadline (an HTTP upgrade); the
            connection is aborted if it fails.
        proxy: reach a TCP ``endpoint`` through this HTTP proxy (:func:`open_tunnel`).
        own_tls: TLS through netkit's own layer (:mod:`netkit.net.tls_layer`, as the relay's
            upstreams) instead of the event loop's: a protocol that pauses reading keeps
            every decrypted byte when the peer closes meanwhile (the loops' SSL transports
            drop what they had not delivered on the peer's FIN), and it can half-close.

    Raises:
        ConnectError, OperationTimeout, TLSError: as the failure was; or what ``handshake``
            raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    backoff = Backoff()
    while True:
        protocol: StreamProtocol | None = None
        try:
            async with asyncio.timeout(timeout):
                protocol = await _open_once(
                    endpoint, factory, ssl_context, server_hostname, options, proxy, own_tls
                )
                if handshake is not None:
                    await handshake(protocol)
            return protocol
        except BaseException as exc:
            if protocol is not None:
                protocol.abort()
            # What the handshake raised is its own verdict; what connecting raised is
            # translated (connect_raw's errors already are) and may be retried.
            connecting = isinstance(exc, NetkitError) and protocol is None
            if not (connecting or isinstance(exc, OSError | TimeoutError | ssl.SSLError)):
                raise
            if isinstance(exc, TimeoutError) and protocol is not None:
                raise OperationTimeout(
                    f"opening handshake with {endpoint} timed out ({timeout:g}s)"
                ) from exc
            error = translate_connect_error(exc, str(endpoint))
            refused = getattr(error, "status_code", 500) < 500  # a proxy's 4xx stays so
            if (
                isinstance(error, ConnectError)
                and not refused
                and loop.time() + backoff.delay < deadline
            ):
                await asyncio.sleep(backoff.next())  # waiting for a service to come up
                continue
            if error is exc:
                raise
            raise error from exc
