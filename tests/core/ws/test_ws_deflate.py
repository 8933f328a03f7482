"""permessage-deflate (RFC 7692): the section 7.2.3 examples, negotiation, limits."""

from __future__ import annotations

import os
import zlib

import pytest

from netkit.core.ws.deflate import (
    DeflateParams,
    InvalidExtension,
    PerMessageDeflate,
    accept_offer,
    accept_response,
)
from netkit.core.ws.frames import Side
from netkit.errors import LocalProtocolError, PeerProtocolError

HELLO_DEFLATED = bytes.fromhex("f2 48 cd c9 c9 07 00")  # RFC 7692 7.2.3.1


def pair(params: DeflateParams = DeflateParams()) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    return PerMessageDeflate(params, Side.CLIENT), PerMessageDeflate(params, Side.SERVER)


# --- RFC 7692 section 7.2.3 examples ------------------------------------------------------


def test_rfc_hello_compressed() -> None:
    client, server = pair()
    assert client.compress(b"Hello") == HELLO_DEFLATED
    assert server.decompress(HELLO_DEFLATED, fin=True, max_size=None) == b"Hello"


def test_rfc_hello_fragmented_compressed() -> None:
    # 7.2.3.1, second example: the compressed "Hello" split over two frames.
    _, server = pair()
    out = server.decompress(bytes.fromhex("f2 48 cd"), fin=False, max_size=None)
    out += server.decompress(bytes.fromhex("c9 c9 07 00"), fin=True, max_size=None)
    assert out == b"Hello"


def test_rfc_sharing_lz77_window() -> None:
    # 7.2.3.2: the second "Hello" refers back to the first.
    client, server = pair()
    assert client.compress(b"Hello") == HELLO_DEFLATED
    assert client.compress(b"Hello") == bytes.fromhex("f2 00 11 00 00")
    assert server.decompress(HELLO_DEFLATED, fin=True, max_size=None) == b"Hello"
    assert server.decompress(bytes.fromhex("f2 00 11 00 00"), fin=True, max_size=None) == b"Hello"


def test_no_context_takeover_compresses_each_message_alone() -> None:
    client, server = pair(DeflateParams(client_no_context_takeover=True))
    assert client.compress(b"Hello") == HELLO_DEFLATED
    assert client.compress(b"Hello") == HELLO_DEFLATED
    for _ in range(2):
        assert server.decompress(HELLO_DEFLATED, fin=True, max_size=None) == b"Hello"


def test_server_decompressor_resets_when_client_has_no_context_takeover() -> None:
    # Two independent "Hello"s decode only if the decompressor starts afresh each time.
    _, server = pair(DeflateParams(client_no_context_takeover=True))
    fresh = zlib.compressobj(wbits=-15)
    first = fresh.compress(b"Hello Hello") + fresh.flush(zlib.Z_SYNC_FLUSH)
    assert server.decompress(first[:-4], fin=True, max_size=None) == b"Hello Hello"
    assert server.decompress(first[:-4], fin=True, max_size=None) == b"Hello Hello"


def test_rfc_stored_block() -> None:
    # 7.2.3.3: a DEFLATE block with no compression.
    _, server = pair()
    data = bytes.fromhex("00 05 00 fa ff 48 65 6c 6c 6f 00")
    assert server.decompress(data, fin=True, max_size=None) == b"Hello"


def test_rfc_bfinal_block_then_next_message() -> None:
    # 7.2.3.4: a block with BFINAL set ends the stream; the next message needs a new one.
    _, server = pair()
    data = bytes.fromhex("f3 48 cd c9 c9 07 00 00")
    assert server.decompress(data, fin=True, max_size=None) == b"Hello"
    assert server.decompress(HELLO_DEFLATED, fin=True, max_size=None) == b"Hello"


def test_rfc_two_deflate_blocks_in_one_message() -> None:
    # 7.2.3.5
    _, server = pair()
    data = bytes.fromhex("f2 48 05 00 00 00 ff ff ca c9 c9 07 00")
    assert server.decompress(data, fin=True, max_size=None) == b"Hello"


# --- limits -------------------------------------------------------------------------------


def test_decompression_bomb_is_stopped_at_max_size() -> None:
    client, server = pair()
    bomb = client.compress(bytes(10 * 1024 * 1024))
    assert len(bomb) < 20_000
    with pytest.raises(PeerProtocolError) as info:
        server.decompress(bomb, fin=True, max_size=1 << 20)
    assert info.value.close_code == 1009


@pytest.mark.parametrize("size", [0, 1, 1000, 65536])
def test_exactly_max_size_is_accepted(size: int) -> None:
    client, server = pair()
    data = os.urandom(size)
    assert server.decompress(client.compress(data), fin=True, max_size=size) == data
    with pytest.raises(PeerProtocolError) as info:
        server.decompress(client.compress(data + b"!"), fin=True, max_size=size)
    assert info.value.close_code == 1009


def test_garbage_is_1007() -> None:
    _, server = pair()
    with pytest.raises(PeerProtocolError) as info:
        server.decompress(b"\xff\xff\xff\xff", fin=True, max_size=None)
    assert info.value.close_code == 1007


@pytest.mark.parametrize("bits", range(8, 16))
def test_every_window_size_round_trips(bits: int) -> None:
    params = DeflateParams(client_max_window_bits=bits, server_max_window_bits=bits)
    client, server = pair(params)
    text = b"".join(b"%d lorem ipsum dolor %d " % (i, i * 7) for i in range(2000))
    for _ in range(2):
        assert server.decompress(client.compress(text), fin=True, max_size=None) == text
        assert client.decompress(server.compress(text), fin=True, max_size=None) == text


# --- negotiation (RFC 7692 section 7.1) ---------------------------------------------------


def test_offer_strings() -> None:
    assert DeflateParams().offer() == "permessage-deflate; client_max_window_bits"
    assert DeflateParams(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=12,
    ).offer() == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=12"
    )
    assert DeflateParams(server_max_window_bits=9).response() == (
        "permessage-deflate; server_max_window_bits=9"
    )


def offer(*params: tuple[str, str | None]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    return [("permessage-deflate", list(params))]


def test_accept_plain_offer() -> None:
    assert accept_offer(offer()) == DeflateParams()
    assert accept_offer(offer(("client_max_window_bits", None))) == DeflateParams()
    assert accept_offer([("x-other", [])]) is None


def test_accept_honours_client_requests() -> None:
    agreed = accept_offer(
        offer(("server_no_context_takeover", None), ("server_max_window_bits", "10"))
    )
    assert agreed == DeflateParams(server_no_context_takeover=True, server_max_window_bits=10)
    assert agreed.response() == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    )


def test_accept_applies_server_preferences() -> None:
    config = DeflateParams(
        client_no_context_takeover=True, server_max_window_bits=9, client_max_window_bits=10
    )
    agreed = accept_offer(
        offer(("server_max_window_bits", "12"), ("client_max_window_bits", None)), config
    )
    assert agreed == config
    # The client allows at most 9 for its own window: the smaller wins.
    agreed = accept_offer(offer(("client_max_window_bits", "9")), config)
    assert agreed is not None and agreed.client_max_window_bits == 9


def test_server_cannot_limit_client_window_unless_offered() -> None:
    assert accept_offer(offer(), DeflateParams(client_max_window_bits=10)) is None


@pytest.mark.parametrize(
    "params",
    [
        [("server_max_window_bits", "7")],
        [("server_max_window_bits", "16")],
        [("server_max_window_bits", "08")],
        [("server_max_window_bits", "abc")],
        [("server_max_window_bits", None)],
        [("client_max_window_bits", "1")],
        [("server_no_context_takeover", "1")],
        [("unknown", None)],
        [("client_no_context_takeover", None), ("client_no_context_takeover", None)],
    ],
)
def test_invalid_offers_are_declined(params: list[tuple[str, str | None]]) -> None:
    assert accept_offer([("permessage-deflate", params)]) is None
    # A valid fallback offer after the invalid one is taken.
    fallback = accept_offer([("permessage-deflate", params), ("permessage-deflate", [])])
    assert fallback == DeflateParams()


def test_client_checks_response() -> None:
    ours = DeflateParams()
    assert accept_response([], ours) == DeflateParams()
    assert accept_response(
        [("client_max_window_bits", "10"), ("client_no_context_takeover", None)], ours
    ) == DeflateParams(client_max_window_bits=10, client_no_context_takeover=True)


@pytest.mark.parametrize(
    ("params", "ours"),
    [
        ([("unknown", None)], DeflateParams()),
        ([("server_max_window_bits", "16")], DeflateParams()),
        ([("client_max_window_bits", None)], DeflateParams()),  # a value is required here
        ([("server_max_window_bits", "12")], DeflateParams(server_max_window_bits=10)),
        ([], DeflateParams(server_max_window_bits=10)),
        ([], DeflateParams(server_no_context_takeover=True)),
        ([("client_max_window_bits", "12")], DeflateParams(client_max_window_bits=10)),
        ([("server_no_context_takeover", None)] * 2, DeflateParams()),
    ],
)
def test_client_rejects_bad_responses(
    params: list[tuple[str, str | None]], ours: DeflateParams
) -> None:
    with pytest.raises(InvalidExtension):
        accept_response(params, ours)


def test_local_params_are_validated() -> None:
    with pytest.raises(LocalProtocolError):
        DeflateParams(server_max_window_bits=16)
    with pytest.raises(LocalProtocolError):
        DeflateParams(client_max_window_bits=7)
