"""The --record file format: lines written, read back, and the errors a bad file gets."""

from __future__ import annotations

import json

import pytest

from netkit.core.ws.recording import (
    FORMAT,
    Kind,
    Recorded,
    RecordingError,
    RecordWriter,
    message_json,
    parse_recording,
)

pytestmark = pytest.mark.timeout(10)

HEADER = '{"format":"netkit-ws-recording","version":1,"url":"ws://h/","subprotocols":["chat"],"started":1.5}\n'


def test_writer_lines_are_literal_json():
    w = RecordWriter("ws://h/", ["chat"], 1.5)
    assert w.header() == HEADER
    assert w.opened(0.0, "chat") == '{"t":0.0,"event":"open","subprotocol":"chat"}\n'
    assert w.message(0.25, sent=True, text=True, data="hé".encode()) == (
        '{"t":0.25,"event":"sent","type":"text","bytes":3,"text":"hé"}\n'
    )
    assert w.message(0.5, sent=False, text=False, data=b"\x00\x01\x02") == (
        '{"t":0.5,"event":"received","type":"binary","bytes":3,"data":"AAEC","encoding":"base64"}\n'
    )
    assert w.ping(1, sent=True, data=b"", keepalive=True) == (
        '{"t":1,"event":"ping","direction":"sent","data":"","encoding":"base64","keepalive":true}\n'
    )
    assert w.closed(2.0000004, code=1000, reason="", initiator="client", clean=True) == (
        '{"t":2.0,"event":"closed","code":1000,"reason":"","initiator":"client","clean":true}\n'
    )


def test_message_json_is_the_event_shape():
    assert message_json(True, b"hi") == {"type": "text", "bytes": 2, "text": "hi"}
    assert message_json(False, b"\xff") == {
        "type": "binary",
        "bytes": 1,
        "data": "/w==",
        "encoding": "base64",
    }


def test_round_trip_every_event():
    w = RecordWriter("ws://h/", ["chat"], 1.5)
    lines = [
        w.header(),
        w.opened(0.0, None),
        w.message(0.1, sent=True, text=True, data=b"a"),
        w.message(0.2, sent=False, text=False, data=b"\x00\xff"),
        w.ping(0.3, sent=True, data=b"p", keepalive=False),
        w.ping(0.35, sent=False, data=b"s"),
        w.pong(0.4, data=b"p"),
        w.close(0.5, sent=True, code=4000, reason="bye"),
        w.close(0.6, sent=False, code=4000, reason="bye"),
        "\n",  # blank lines are skipped
        w.closed(0.7, code=4000, reason="bye", initiator="client", clean=True),
    ]
    rec = parse_recording(lines)
    assert rec.url == "ws://h/" and rec.subprotocols == ("chat",)
    assert rec.events == (
        Recorded(0.0, Kind.OPEN),
        Recorded(0.1, Kind.SENT, sent=True, text=True, data=b"a"),
        Recorded(0.2, Kind.RECEIVED, data=b"\x00\xff"),
        Recorded(0.3, Kind.PING, sent=True, data=b"p"),
        Recorded(0.35, Kind.PING, data=b"s"),
        Recorded(0.4, Kind.PONG, data=b"p"),
        Recorded(0.5, Kind.CLOSE, sent=True, code=4000, reason="bye"),
        Recorded(0.6, Kind.CLOSE, code=4000, reason="bye"),
        Recorded(0.7, Kind.CLOSED, code=4000, reason="bye", initiator="client"),
    )
    assert rec.opened == rec.events[0] and rec.closed == rec.events[-1]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "f is empty: no netkit-ws-recording header"),
        (["{not json\n"], "f line 1: not JSON"),
        (['{"format":"other"}\n'], f"f line 1: not a {FORMAT} header"),
        (
            ['{"format":"netkit-ws-recording","version":2,"url":"u"}\n'],
            "f line 1: version 2 is not supported",
        ),
        ([HEADER, "[1]\n"], "f line 2: not a JSON object"),
        ([HEADER, '{"t":"x","event":"open"}\n'], "f line 2: 't' missing"),
        ([HEADER, '{"t":1,"event":"shout"}\n'], "f line 2: unknown event 'shout'"),
        ([HEADER, '{"t":1,"event":"sent","type":"blob"}\n'], 'f line 2: "type" must be'),
        ([HEADER, '{"t":1,"event":"sent","type":"text"}\n'], "f line 2: 'text' missing"),
        (
            [HEADER, '{"t":1,"event":"received","type":"binary","data":"@","encoding":"base64"}\n'],
            'f line 2: "data" is not base64',
        ),
        (
            [HEADER, '{"t":1,"event":"received","type":"binary","data":"AA==","encoding":"hex"}\n'],
            'f line 2: "encoding" must be "base64"',
        ),
        (
            [HEADER, '{"t":1,"event":"close","direction":"up","code":1000,"reason":""}\n'],
            'f line 2: "direction" must be',
        ),
        (
            [HEADER, '{"t":1,"event":"closed","code":"x","reason":"","initiator":null}\n'],
            'f line 2: "code" must be a number',
        ),
        (
            [HEADER, '{"t":2,"event":"open"}\n', '{"t":1,"event":"open"}\n'],
            "f line 3: time goes backwards",
        ),
    ],
)
def test_malformed_recordings_name_the_line(lines, message):
    with pytest.raises(RecordingError) as info:
        parse_recording(lines, name="f")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_header_fields_are_json():
    header = json.loads(RecordWriter("ws://x/", [], 0.0).header())
    assert header == {
        "format": FORMAT,
        "version": 1,
        "url": "ws://x/",
        "subprotocols": [],
        "started": 0.0,
    }
