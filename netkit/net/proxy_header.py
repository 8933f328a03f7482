"""Who a relayed connection is from: its socket's peer, or the PROXY header that came first.

With ``--accept-proxy-protocol`` a relay reads a PROXY protocol header (v1, v2 or either) from
each accepted socket before anything else (:func:`read_origin`); the wire format is
:mod:`netkit.core.proxy_protocol`'s :class:`~netkit.core.proxy_protocol.HeaderParser`. The
header is read with ``MSG_PEEK`` and only its own bytes are taken from the socket, so the
payload after it stays there, untouched, for whichever relay takes the socket next (splice,
asyncio transports, a TLS handshake). A header that is missing, malformed or incomplete
when the time allowed runs out is a :class:`~netkit.errors.PeerProtocolError` with the reason.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from netkit.core.proxy_protocol import Accept, HeaderParser, Peer
from netkit.errors import PeerProtocolError
from netkit.net.sockets import describe

HEADER_TIMEOUT = 5.0  # seconds a client has to send its whole header (the spec asks >= 3 s)
READ_CHUNK = 4096  # a peek never asks for more than this: memory follows what arrived


@dataclass(frozen=True)
class Origin:
    """Where a connection comes from and where it was headed, as the relay reports them.

    Attributes:
        client: the client's address as events show it (``10.0.0.1:5000``, ``unix:/p``).
        via: the peer that sent the PROXY header naming ``client``; empty when the client is
            the socket's own peer (no header, or a LOCAL/UNKNOWN one).
        source: the client's address from the PROXY header, or None: the socket's own peer
            (looked up only when a header is sent onward: :meth:`addresses`).
        destination: the address the client connected to, likewise.
    """

    client: str
    via: str = ""
    source: Peer | None = None
    destination: Peer | None = None

    def addresses(self, sock: socket.socket) -> tuple[Peer | None, Peer | None]:
        """(source, destination) for a PROXY header sent onward: the header's, or else the
        socket's own peer and local address (None where they are no IP addresses)."""
        if self.source is not None:
            return self.source, self.destination
        return _peer(sock.getpeername), _peer(sock.getsockname)


def _peer(name: object) -> Peer | None:
    try:
        addr = name() if callable(name) else name
    except OSError:
        return None
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return None


async def read_origin(
    sock: socket.socket, client: str, accept: Accept, timeout: float = HEADER_TIMEOUT
) -> Origin:
    """Read the PROXY header at the start of ``sock`` (non-blocking) and say who it names.

    Takes exactly the header's bytes from the socket; the rest stays there.

    Args:
        sock: an accepted, non-blocking socket.
        client: its peer, as the acceptor described it.
        accept: the header versions accepted.
        timeout: seconds allowed for the whole header.

    Raises:
        PeerProtocolError: no valid header (the reason says why: malformed, another
            version, closed or reset first, not complete in time).
    """
    parser = HeaderParser(accept)
    try:
        async with asyncio.timeout(timeout):
            await _take_header(sock, parser)
    except TimeoutError:
        raise PeerProtocolError(
            f"no complete PROXY header within {timeout:g}s ({parser.received} bytes came)",
            close_code=None,
        ) from None
    header = parser.header
    assert header is not None
    if header.source is None:
        return Origin(client)  # LOCAL, UNKNOWN, AF_UNSPEC: the connection's own endpoints
    return Origin(describe(header.source), client, header.source, header.destination)


async def _take_header(sock: socket.socket, parser: HeaderParser) -> None:
    loop = asyncio.get_running_loop()
    while parser.header is None:
        try:
            data = sock.recv(min(parser.wanted(), READ_CHUNK), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _readable(loop, sock.fileno())
            continue
        except OSError as exc:
            raise PeerProtocolError(
                f"{exc.strerror or exc} before a complete PROXY header", close_code=None
            ) from None
        if not data:
            raise PeerProtocolError(
                f"closed after {parser.received} bytes, before a complete PROXY header",
                close_code=None,
            )
        taken = parser.feed(data)  # raises on bytes that cannot be a header
        if taken:
            sock.recv(taken)  # already in the socket (peeked): returns exactly these


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    waiter = loop.create_future()
    loop.add_reader(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
