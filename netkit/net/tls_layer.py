"""TLS over an accepted socket with ``ssl.MemoryBIO``: the transport netkit's TLS servers use.

asyncio's and uvloop's SSL transports drop what OpenSSL wrote when a handshake fails: the
alert that says why (``certificate required``, ``unknown CA``...) never reaches the peer, who
sees a bare close. They also cannot half-close: ``write_eof`` is refused, and a peer's
``close_notify`` closes both directions. This layer runs the TLS state machine itself
(``SSLContext.wrap_bio``), so:

* a failed handshake flushes the alert bytes before closing, as ``openssl s_server`` does;
* ``write_eof`` sends ``close_notify`` and keeps reading, and a peer's ``close_notify`` (or
  FIN) is an EOF that leaves our write side open when the protocol asks for it (TLS 1.3
  closes each direction on its own: RFC 8446, 6.1);
* a :class:`asyncio.BufferedProtocol` on top still receives without a copy: records are
  decrypted straight into the buffer its ``get_buffer`` returns.

Ciphertext in and out is copied once each way (into the incoming BIO, out of the outgoing
one), as asyncio's own SSL transport does.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

HANDSHAKE_TIMEOUT = 60.0  # asyncio's default ssl_handshake_timeout
_SCRATCH_SIZE = 256 * 1024
_scratch = threading.local()  # one receive buffer per loop thread, shared by its connections

# Errors that mean "the TLS object needs more ciphertext", not a failure.
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _scratch_buffer() -> memoryview:
    # The loop calls get_buffer, recv_into and buffer_updated in one go, and buffer_updated
    # copies the bytes into the incoming BIO at once: one buffer serves every connection.
    view: memoryview | None = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(_SCRATCH_SIZE))
    return view


class TLSTransport(asyncio.Transport):
    """An application-side TLS transport over a plain one (see the module docstring).

    Made by :func:`accept_tls`; the protocol on top sees an ordinary transport whose
    ``get_extra_info("ssl_object")`` is the :class:`ssl.SSLObject`.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        super().__init__()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._factory = protocol_factory
        self._app: asyncio.BaseProtocol | None = None
        self._raw: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        self._eof_sent = False
        self._eof_wanted = False  # write_eof() waits for decrypted bytes to be read first
        self._eof_seen = False
        self._reading_paused = False
        self._lost = False
        self._error: Exception | None = None  # what _fatal() aborted for

    # --- the plain transport underneath (its protocol is _Ciphertext) ------------------

    def _raw_made(self, raw: asyncio.Transport) -> None:
        self._raw = raw
        self._handshake_step()

    def _ciphertext(self, data: memoryview) -> None:
        self._incoming.write(data)
        if not self.handshake.done():
            self._handshake_step()
        elif self._app is not None:
            self._read_records()

    def _raw_eof(self) -> bool:
        if not self.handshake.done():
            self._handshake_failed(ConnectionResetError("the peer closed during the TLS handshake"))
            return False
        self._incoming.write_eof()
        self._read_records()
        return not self._closing  # keep our write side while the protocol may still write

    def _raw_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("connection lost"))
            return
        if self._app is not None:
            app, self._app = self._app, None
            app.connection_lost(exc or self._error)

    def _raw_pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def _raw_resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def _flush(self) -> None:
        if self._outgoing.pending and self._raw is not None and not self._raw.is_closing():
            # A copy out of the BIO: the TLS records have to leave it for the kernel anyway.
            self._raw.write(self._outgoing.read())

    # --- handshake ------------------------------------------------------------------------

    def _handshake_step(self) -> None:
        try:
            self._ssl.do_handshake()
        except _WANT:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._handshake_failed(exc)
            return
        self._flush()
        self.handshake.set_result(None)
        self._app = self._factory()
        self._app.connection_made(self)
        if self._incoming.pending or self._ssl.pending():
            self._read_records()  # application data that came with the last flight

    def _handshake_failed(self, exc: BaseException) -> None:
        # What OpenSSL wrote (the alert that says why) goes out before the close: this is
        # the point of the layer.
        self._flush()
        if self._raw is not None:
            self._raw.close()
        if not self.handshake.done():
            self.handshake.set_exception(exc)

    # --- receiving ------------------------------------------------------------------------

    def _read_records(self) -> None:
        app = self._app
        while (
            app is not None
            and not self._reading_paused
            and not self._eof_seen
            and not self._closing
        ):
            try:
                if isinstance(app, asyncio.BufferedProtocol):
                    buffer = memoryview(app.get_buffer(-1)).cast("B")
                    if not len(buffer):
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    # Decrypted in place, no copy (with a buffer, read() returns a count).
                    n = cast(int, self._ssl.read(len(buffer), buffer))
                    if n:
                        app.buffer_updated(n)
                else:
                    data = self._ssl.read(_SCRATCH_SIZE)
                    n = len(data)
                    if n:
                        cast(asyncio.Protocol, app).data_received(data)
                if not n:
                    raise ssl.SSLZeroReturnError
            except _WANT:
                if self._incoming.eof:
                    self._peer_eof()  # FIN without close_notify: an EOF all the same
                break
            except ssl.SSLZeroReturnError:
                self._peer_eof()  # close_notify
                break
            except ssl.SSLEOFError:
                self._peer_eof()  # FIN without close_notify: still the end of what it sends
                break
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                break
            app = self._app
        if self._eof_wanted and not self._ssl.pending():
            self._eof_wanted = False
            self._send_close_notify()
        self._flush()  # a read may produce records too (TLS 1.3 key updates, tickets)

    def _peer_eof(self) -> None:
        if self._eof_seen:
            return
        self._eof_seen = True
        eof_received = getattr(self._app, "eof_received", None)
        keep_open = eof_received() if eof_received is not None else False
        if not keep_open:
            self.close()
        elif self._eof_sent and self._raw is not None:
            self._raw.close()  # both directions are done

    def _fatal(self, exc: BaseException) -> None:
        # The abort below reports no error: keep this one for connection_lost, so a bad
        # record is never taken for a clean close.
        self._error = exc if isinstance(exc, Exception) else ConnectionAbortedError(str(exc))
        if self._raw is not None:
            self._raw.abort()

    # --- asyncio.Transport ----------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``ssl_object``, ``peercert``, ``cipher``, ``sslcontext``; the rest from the socket."""
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if name == "sslcontext":
            return self._ssl.context
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Send ``close_notify`` after what is buffered, then close the connection."""
        if self._closing:
            return
        self._closing = True
        self._send_close_notify()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof_sent or self._eof_wanted or self._lost:
            return
        try:
            self._ssl.write(data)
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)
            return
        self._flush()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._closing or self._eof_sent or self._eof_wanted or self._lost:
            return
        try:
            for data in list_of_data:
                self._ssl.write(data)  # each part into the TLS object: no join
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)
            return
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: send ``close_notify`` and keep reading (RFC 8446, 6.1)."""
        if self._closing or self._eof_sent or self._eof_wanted:
            return
        if self._send_close_notify() and self._eof_seen and self._raw is not None:
            self._raw.close()  # both directions are done

    def _send_close_notify(self) -> bool:
        """Send ``close_notify`` now, or once the decrypted bytes are read; True when sent."""
        if self._eof_sent or not self.handshake.done() or self._lost:
            return False
        if self._ssl.pending() and not self._closing:
            # unwrap() would discard the decrypted bytes not yet read: send it once they are.
            self._eof_wanted = True
            return False
        self._eof_sent = True
        # unwrap() calls SSL_shutdown twice, and the second call reads (and drops) whatever
        # records wait in the incoming BIO, looking for the peer's close_notify: keep them
        # out of its reach, and give them back for SSL_read.
        waiting = self._incoming.read()
        try:
            self._ssl.unwrap()
        except _WANT:
            pass  # sent; the peer's close_notify is not waited for
        except (ssl.SSLError, OSError):
            pass  # the connection is going anyway
        if waiting:
            self._incoming.write(waiting)
        self._flush()
        return True

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._raw is not None and not self._raw.is_closing():
            self._raw.resume_reading()
        # Records already in the BIO get no readiness callback of their own.
        self._loop.call_soon(self._resume_records)

    def _resume_records(self) -> None:
        if not self._reading_paused and self._app is not None:
            self._read_records()

    def is_reading(self) -> bool:
        return not self._reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        raw = self._raw.get_write_buffer_size() if self._raw is not None else 0
        return raw + self._outgoing.pending

    def get_write_buffer_limits(self) -> tuple[int, int]:
        if self._raw is None:
            return (0, 0)
        return self._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._app is not None
        return self._app


class _Ciphertext(asyncio.BufferedProtocol):
    """The plain transport's protocol: hands TLS records to the :class:`TLSTransport`."""

    def __init__(self, tls: TLSTransport) -> None:
        self.tls = tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tls._raw_made(transport)  # type: ignore[arg-type]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _scratch_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.tls._ciphertext(_scratch_buffer()[:nbytes])

    def eof_received(self) -> bool:
        return self.tls._raw_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tls._raw_lost(exc)

    def pause_writing(self) -> None:
        self.tls._raw_pause_writing()

    def resume_writing(self) -> None:
        self.tls._raw_resume_writing()


async def accept_tls(
    sock: socket.socket,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    context: ssl.SSLContext,
    *,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> tuple[TLSTransport, asyncio.BaseProtocol]:
    """Run the server side of a TLS handshake on an accepted socket, then the protocol on it.

    On failure the alert OpenSSL produced is sent before the socket is closed.

    Raises:
        ssl.SSLError, OSError: the handshake failed (the socket is closed).
        TimeoutError: it did not finish within ``handshake_timeout`` seconds.
    """
    return await _connect(sock, protocol_factory, context, True, None, handshake_timeout)


async def connect_tls(
    sock: socket.socket,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    context: ssl.SSLContext,
    *,
    server_hostname: str | None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> tuple[TLSTransport, asyncio.BaseProtocol]:
    """The client side of :func:`accept_tls`, on a connected socket."""
    return await _connect(
        sock, protocol_factory, context, False, server_hostname, handshake_timeout
    )


async def _connect(
    sock: socket.socket,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    context: ssl.SSLContext,
    server_side: bool,
    server_hostname: str | None,
    handshake_timeout: float,
) -> tuple[TLSTransport, asyncio.BaseProtocol]:
    loop = asyncio.get_running_loop()
    tls = TLSTransport(
        context, protocol_factory, server_side=server_side, server_hostname=server_hostname
    )
    try:
        await loop.connect_accepted_socket(lambda: _Ciphertext(tls), sock)
    except BaseException:
        sock.close()
        raise
    try:
        async with asyncio.timeout(handshake_timeout):
            await tls.handshake
    except (TimeoutError, asyncio.CancelledError):
        tls.abort()
        raise
    # A failed handshake closed the socket itself, after sending the alert.
    return tls, tls.get_protocol()
