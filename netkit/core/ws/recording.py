"""The file format of ``ws-client --record`` and ``--replay``: one session as JSON lines.

The first line is a header naming the format and its version, the URL and the subprotocols
offered; every other line is one event of the session, in order, each with ``t``, the
seconds since the connection opened::

    {"format": "netkit-ws-recording", "version": 1, "url": "ws://127.0.0.1:8765/",
     "subprotocols": [], "started": 1765065600.123456}
    {"t": 0.0, "event": "open", "subprotocol": null}
    {"t": 0.0012, "event": "sent", "type": "text", "bytes": 5, "text": "hello"}
    {"t": 0.0019, "event": "received", "type": "binary", "bytes": 3, "data": "AAEC",
     "encoding": "base64"}
    {"t": 0.5, "event": "ping", "direction": "sent", "data": "", "encoding": "base64",
     "keepalive": false}
    {"t": 0.5003, "event": "pong", "direction": "received", "data": "", "encoding": "base64"}
    {"t": 1.0, "event": "close", "direction": "sent", "code": 1000, "reason": ""}
    {"t": 1.0004, "event": "close", "direction": "received", "code": 1000, "reason": ""}
    {"t": 1.0005, "event": "closed", "code": 1000, "reason": "", "initiator": "client",
     "clean": true}

Messages have the shape of ws-client's ``--json`` events (:func:`message_json`: ``text``, or
``data`` in base64 as ``encoding`` says). :class:`RecordWriter` serializes events and
:func:`parse_recording` reads a file's lines back (a :class:`RecordingError` names the line
that does not parse). Pure logic: the file itself is written by ``netkit.net.ws_record``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from netkit.errors import ConfigError

FORMAT = "netkit-ws-recording"
VERSION = 1


class RecordingError(ConfigError):
    """A recording that does not parse (the message names the file and line)."""


def message_json(is_text: bool, data: bytes) -> dict[str, Any]:
    """A message as JSON fields: ``text``, or for a binary message the payload in ``data``,
    base64-encoded, as ``encoding`` says (the shape of ws-client's ``--json`` events)."""
    if is_text:
        return {"type": "text", "bytes": len(data), "text": data.decode("utf-8")}
    return {
        "type": "binary",
        "bytes": len(data),
        "data": base64.b64encode(data).decode("ascii"),
        "encoding": "base64",
    }


class Kind(enum.Enum):
    """The kinds of event a recording holds (the ``event`` field)."""

    OPEN = "open"
    SENT = "sent"
    RECEIVED = "received"
    PING = "ping"
    PONG = "pong"
    CLOSE = "close"  # a close frame, sent or received
    CLOSED = "closed"  # the connection is over: the close code, who started it


@dataclass(frozen=True)
class Recorded:
    """One event of a recording.

    Attributes:
        t: seconds since the connection opened.
        kind: what happened.
        sent: the client did it (a sent message, ping or close frame); False: the server.
        text: a text message (``data`` is its UTF-8).
        data: the message or ping/pong payload.
        keepalive: a ping sent by the keepalive timer (not by the user).
        code: the close code (``close``, ``closed``; None: no close frame).
        reason: the close reason.
        initiator: who started the closing handshake (``closed``): client, server or None.
        subprotocol: the subprotocol the server chose (``open``).
    """

    t: float
    kind: Kind
    sent: bool = False
    text: bool = False
    data: bytes = b""
    keepalive: bool = False
    code: int | None = None
    reason: str = ""
    initiator: str | None = None
    subprotocol: str | None = None


@dataclass(frozen=True)
class Recording:
    """A parsed recording: the header's URL and offered subprotocols, then the events."""

    url: str
    subprotocols: tuple[str, ...]
    events: tuple[Recorded, ...]

    @property
    def opened(self) -> Recorded | None:
        """The ``open`` event (None: the recording ends before the connection opened)."""
        return next((e for e in self.events if e.kind is Kind.OPEN), None)

    @property
    def closed(self) -> Recorded | None:
        """The ``closed`` event (None: the recording stops before the end)."""
        return next((e for e in self.events if e.kind is Kind.CLOSED), None)


# --- writing ---------------------------------------------------------------------------------


def _line(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n"


def _payload(data: bytes) -> dict[str, Any]:
    return {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def _direction(sent: bool) -> str:
    return "sent" if sent else "received"


class RecordWriter:
    """Serializes a session's events as lines of the recording format.

    Args:
        url: the URL connected to.
        subprotocols: the subprotocols offered.
        started: the wall-clock time (Unix seconds) the recording starts.
    """

    def __init__(self, url: str, subprotocols: Iterable[str], started: float) -> None:
        self.url = url
        self.subprotocols = list(subprotocols)
        self.started = started

    def header(self) -> str:
        """The first line: format, version, URL and subprotocols offered."""
        return _line(
            {
                "format": FORMAT,
                "version": VERSION,
                "url": self.url,
                "subprotocols": self.subprotocols,
                "started": round(self.started, 6),
            }
        )

    @staticmethod
    def _event(t: float, kind: Kind, **fields: Any) -> str:
        return _line({"t": round(t, 6), "event": kind.value, **fields})

    def opened(self, t: float, subprotocol: str | None) -> str:
        """The connection opened (``subprotocol``: the server's choice)."""
        return self._event(t, Kind.OPEN, subprotocol=subprotocol)

    def message(self, t: float, *, sent: bool, text: bool, data: bytes) -> str:
        """A message sent or received."""
        return self._event(t, Kind.SENT if sent else Kind.RECEIVED, **message_json(text, data))

    def ping(self, t: float, *, sent: bool, data: bytes, keepalive: bool = False) -> str:
        """A ping sent (by the user, or the keepalive timer) or received."""
        extra = {"keepalive": keepalive} if sent else {}
        return self._event(t, Kind.PING, direction=_direction(sent), **_payload(data), **extra)

    def pong(self, t: float, *, data: bytes) -> str:
        """A pong received."""
        return self._event(t, Kind.PONG, direction="received", **_payload(data))

    def close(self, t: float, *, sent: bool, code: int | None, reason: str) -> str:
        """A close frame sent or received."""
        return self._event(t, Kind.CLOSE, direction=_direction(sent), code=code, reason=reason)

    def closed(
        self, t: float, *, code: int | None, reason: str, initiator: str | None, clean: bool
    ) -> str:
        """The connection is over (``code`` 1006: no close frame)."""
        return self._event(
            t, Kind.CLOSED, code=code, reason=reason, initiator=initiator, clean=clean
        )


# --- reading ---------------------------------------------------------------------------------


class _Bad(Exception):
    """A field that does not parse (the reader adds where)."""


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise _Bad(f"{name!r} missing or not a {getattr(kind, '__name__', 'value')}")
    return value


def _data(obj: dict[str, Any]) -> bytes:
    if obj.get("encoding") != "base64":
        raise _Bad('"encoding" must be "base64"')
    try:
        return base64.b64decode(_field(obj, "data", str), validate=True)
    except binascii.Error:
        raise _Bad('"data" is not base64') from None


def _message(obj: dict[str, Any]) -> tuple[bool, bytes]:
    kind = obj.get("type")
    if kind == "text":
        return True, _field(obj, "text", str).encode("utf-8")
    if kind == "binary":
        return False, _data(obj)
    raise _Bad('"type" must be "text" or "binary"')


def _sent(obj: dict[str, Any]) -> bool:
    direction = obj.get("direction")
    if direction not in ("sent", "received"):
        raise _Bad('"direction" must be "sent" or "received"')
    return bool(direction == "sent")


def _code(obj: dict[str, Any]) -> int | None:
    code = obj.get("code")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise _Bad('"code" must be a number or null')
    return code


def _event(obj: dict[str, Any]) -> Recorded:
    t = float(_field(obj, "t", (int, float)))
    try:
        kind = Kind(obj.get("event"))
    except ValueError:
        raise _Bad(f"unknown event {obj.get('event')!r}") from None
    if kind in (Kind.SENT, Kind.RECEIVED):
        text, data = _message(obj)
        return Recorded(t, kind, sent=kind is Kind.SENT, text=text, data=data)
    if kind is Kind.OPEN:
        sub = obj.get("subprotocol")
        if sub is not None and not isinstance(sub, str):
            raise _Bad('"subprotocol" must be a string or null')
        return Recorded(t, kind, subprotocol=sub)
    if kind in (Kind.PING, Kind.PONG):
        keepalive = obj.get("keepalive") is True
        return Recorded(t, kind, sent=_sent(obj), data=_data(obj), keepalive=keepalive)
    reason = _field(obj, "reason", str)
    if kind is Kind.CLOSE:
        return Recorded(t, kind, sent=_sent(obj), code=_code(obj), reason=reason)
    initiator = obj.get("initiator")
    if initiator not in ("client", "server", None):
        raise _Bad('"initiator" must be "client", "server" or null')
    return Recorded(t, kind, code=_code(obj), reason=reason, initiator=initiator)


def _header(obj: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    if obj.get("format") != FORMAT:
        raise _Bad(f"not a {FORMAT} header")
    if obj.get("version") != VERSION:
        raise _Bad(f"version {obj.get('version')!r} is not supported (this netkit reads {VERSION})")
    subprotocols = obj.get("subprotocols", [])
    if not isinstance(subprotocols, list) or not all(isinstance(s, str) for s in subprotocols):
        raise _Bad('"subprotocols" must be a list of strings')
    return _field(obj, "url", str), tuple(subprotocols)


def parse_recording(lines: Iterable[str], name: str = "recording") -> Recording:
    """Read a recording from its lines (blank lines are skipped).

    Raises:
        RecordingError: a line is not JSON or not a valid event, the header is missing or
            of another version, or the times go backwards; the message names ``name`` and
            the line number.
    """
    header: tuple[str, tuple[str, ...]] | None = None
    events: list[Recorded] = []
    number = 0
    try:
        for number, line in enumerate(lines, 1):  # noqa: B007 (reported below)
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise _Bad("not a JSON object")
            if header is None:
                header = _header(obj)
                continue
            event = _event(obj)
            if events and event.t < events[-1].t:
                raise _Bad("time goes backwards")
            events.append(event)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{name} line {number}: not JSON ({exc.msg})") from None
    except _Bad as exc:
        raise RecordingError(f"{name} line {number}: {exc}") from None
    if header is None:
        raise RecordingError(f"{name} is empty: no {FORMAT} header")
    return Recording(url=header[0], subprotocols=header[1], events=tuple(events))
