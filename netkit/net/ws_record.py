"""``ws-client --record``: a client connection that writes every event of its session to a
file as it happens, and reading a recording back for ``--replay``.

:class:`RecordingClientConnection` is a
:class:`~netkit.net.ws_client.WebSocketClientConnection` that tells its :class:`RecordFile`
about the open, each message sent and received, pings and pongs, the close frames and the
end; the lines themselves are :class:`~netkit.core.ws.recording.RecordWriter`'s. Times are
``perf_counter`` seconds since the connection opened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from netkit.core.ws.events import Accepted, HandshakeResponse, HealthCheck, Message, Rejected
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.protocol import State
from netkit.core.ws.recording import Recording, RecordWriter, parse_recording
from netkit.errors import ConfigError, PeerProtocolError, Setting
from netkit.net.ws_client import WebSocketClientConnection
from netkit.net.zerocopy import Buffer

RECORD, REPLAY = Setting("record"), Setting("replay")
_OPEN = State.OPEN


def read_recording(path: Path) -> Recording:
    """Read and parse the recording at ``path``.

    Raises:
        ConfigError: the file cannot be read.
        RecordingError: it is not a valid recording (the message names the line).
    """
    try:
        with path.open(encoding="utf-8") as f:
            return parse_recording(f, name=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(("cannot read ", REPLAY, f" {str(path)!r}: {why}")) from None


class RecordFile:
    """An open recording: the header is written at once, each event as it comes.

    Every line is flushed as written, so a session that dies leaves what it did on disk.

    Args:
        path: where to write (replaced if it exists).
        url: the URL connected to.
        subprotocols: the subprotocols offered.

    Raises:
        ConfigError: the file cannot be created.
    """

    def __init__(self, path: Path, url: str, subprotocols: tuple[str, ...]) -> None:
        self.writer = RecordWriter(url, subprotocols, time.time())
        try:
            self._file: IO[str] | None = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                ("cannot write ", RECORD, f" {str(path)!r}: {exc.strerror}")
            ) from None
        self._opened_at: float | None = None
        self.write(self.writer.header())

    def now(self) -> float:
        """Seconds since the connection opened (0 until then)."""
        if self._opened_at is None:
            return 0.0
        return time.perf_counter() - self._opened_at

    def start_clock(self) -> None:
        """The connection opened: times count from now."""
        self._opened_at = time.perf_counter()

    def write(self, line: str) -> None:
        """Write one line (nothing once closed)."""
        if self._file is not None:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class RecordingClientConnection(WebSocketClientConnection):
    """A client connection that writes its session to :attr:`record`."""

    def __init__(self, *args: Any, record: RecordFile, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record

    def _log(self, build: Callable[..., str], **fields: Any) -> None:
        self.record.write(build(self.record.now(), **fields))

    def on_handshake(self, event: Accepted | HealthCheck | Rejected | HandshakeResponse) -> None:
        self.record.start_clock()
        super().on_handshake(event)
        self._log(self.record.writer.opened, subprotocol=self.subprotocol)

    def send_message(self, data: Buffer | str, *, text: bool | None = None) -> None:
        if self.ws.state is _OPEN:
            is_text = text if text is not None else isinstance(data, str)
            payload = data.encode() if isinstance(data, str) else bytes(data)
            self._log(self.record.writer.message, sent=True, text=is_text, data=payload)
        super().send_message(data, text=text)

    def on_message(self, message: Message) -> None:
        self._log(
            self.record.writer.message,
            sent=False,
            text=bool(message.text),
            data=bytes(message.data),
        )
        super().on_message(message)

    def send_ping(
        self, payload: bytes = b"", answered: Callable[[float | None], None] | None = None
    ) -> bool:
        if not super().send_ping(payload, answered):
            return False
        keepalive = answered == self._keepalive_answered
        self._log(self.record.writer.ping, sent=True, data=payload, keepalive=keepalive)
        return True

    def on_ping(self, payload: Buffer) -> None:
        self._log(self.record.writer.ping, sent=False, data=bytes(payload))
        super().on_ping(payload)

    def on_pong(self, payload: Buffer) -> None:
        self._log(self.record.writer.pong, data=bytes(payload))
        super().on_pong(payload)

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        if self.ws.state is _OPEN:
            self._log(self.record.writer.close, sent=True, code=code, reason=reason)
        super().start_close(code, reason)

    def on_close_received(self, code: int, reason: str) -> None:
        self._log(self.record.writer.close, sent=False, code=code, reason=reason)
        super().on_close_received(code, reason)

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        super().on_closed(code, reason, error)
        self._log(
            self.record.writer.closed,
            code=self.close_code,
            reason=self.close_reason,
            initiator=self.close_initiator,
            clean=self.ws.close_received is not None,
        )
        self.record.close()
