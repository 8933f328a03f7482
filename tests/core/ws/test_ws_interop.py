"""Interoperability with websockets' sans-I/O protocols, in memory (websockets is a test dep)."""

from __future__ import annotations

import pytest

from netkit.core.buffers import ReceiveBuffer
from netkit.core.ws.client import ClientHandshake
from netkit.core.ws.deflate import DeflateParams
from netkit.core.ws.events import Accepted, CloseReceived, Message
from netkit.core.ws.frames import Side
from netkit.core.ws.protocol import Protocol
from netkit.core.ws.server import ServerHandshake

websockets = pytest.importorskip("websockets")
from websockets.client import ClientProtocol  # noqa: E402
from websockets.extensions.permessage_deflate import (  # noqa: E402
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.server import ServerProtocol  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402

TEXT = " ".join(f"héllo {i * i}" for i in range(3000))


@pytest.mark.parametrize("deflate", [None, DeflateParams(client_no_context_takeover=True)])
def test_our_client_with_websockets_server(deflate: DeflateParams | None) -> None:
    theirs = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()], max_size=None)
    hs = ClientHandshake("localhost", "/", deflate=deflate)
    theirs.receive_data(hs.request())
    theirs.send_response(theirs.accept(theirs.events_received()[0]))
    buf = ReceiveBuffer()
    buf.extend(b"".join(theirs.data_to_send()))
    response = hs.receive_response(buf)
    assert response is not None and response.deflate == deflate
    ours = Protocol(Side.CLIENT, deflate=response.deflate, buffer=buf)
    for _ in range(2):  # twice, to exercise context takeover
        ours.send_text(TEXT, fragment_size=1000)
        for chunk in ours.data_to_send():
            theirs.receive_data(bytes(chunk))
        # websockets' sans-I/O layer hands out frames, not messages: join them.
        frames = theirs.events_received()
        assert frames[-1].fin and not any(f.fin for f in frames[:-1])
        assert b"".join(f.data for f in frames).decode() == TEXT
        theirs.send_binary(bytes(100_000))
        for chunk in theirs.data_to_send():
            ours.receive_data(chunk)
        assert ours.events_received() == [Message(bytes(100_000))]
    ours.send_close(1000, "bye")
    for chunk in ours.data_to_send():
        theirs.receive_data(bytes(chunk))
    for chunk in theirs.data_to_send():
        if chunk:
            ours.receive_data(chunk)
    assert ours.events_received() == [CloseReceived(1000, "bye")]


@pytest.mark.parametrize("deflate", [None, DeflateParams()])
def test_websockets_client_with_our_server(deflate: DeflateParams | None) -> None:
    theirs = ClientProtocol(
        parse_uri("ws://localhost/chat"), extensions=[ClientPerMessageDeflateFactory()]
    )
    theirs.send_request(theirs.connect())
    buf = ReceiveBuffer()
    buf.extend(b"".join(theirs.data_to_send()))
    result = ServerHandshake(paths={"/chat"}, deflate=deflate).receive_request(buf)
    assert isinstance(result, Accepted)
    theirs.receive_data(result.response)
    assert theirs.events_received()[0].status_code == 101
    ours = Protocol(Side.SERVER, deflate=result.deflate, buffer=buf)
    for _ in range(2):
        theirs.send_text(TEXT.encode())
        for chunk in theirs.data_to_send():
            ours.receive_data(chunk)
        (msg,) = ours.events_received()
        assert msg.as_text() == TEXT
        ours.send_text(TEXT, fragment_size=777)
        for chunk in ours.data_to_send():
            theirs.receive_data(bytes(chunk))
        # websockets' sans-I/O layer hands out frames, not messages: join them.
        frames = theirs.events_received()
        assert frames[-1].fin and not any(f.fin for f in frames[:-1])
        assert b"".join(f.data for f in frames).decode() == TEXT
