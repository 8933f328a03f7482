"""The chaos plan (``ws-server --chaos``): the spec grammar, seeded draws, and the frames it
writes, read back by netkit's own client protocol in memory."""

from __future__ import annotations

import pytest

from netkit.core.ws.chaos import (
    ConnectionChaos,
    Fin,
    Fragment,
    Interleave,
    LatePong,
    NoPong,
    Oversize,
    Reset,
    SlowRead,
    oversized,
    parse_chaos,
    parse_chaos_specs,
)
from netkit.core.ws.events import ConnectionClosed, Message, Ping
from netkit.core.ws.frames import CloseCode, Side
from netkit.core.ws.protocol import Protocol, State
from netkit.errors import ConfigError, LocalProtocolError


def client_reads(*buffers: object, max_size: int | None = 1 << 20) -> tuple[Protocol, list]:
    client = Protocol(Side.CLIENT, max_size=max_size)
    client.receive_data(b"".join(bytes(b) for b in buffers))  # type: ignore[arg-type]
    return client, client.events_received()


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("fragment=8", Fragment(8)),
        ("fragment=3,p=0.5", Fragment(3, probability=0.5)),
        ("interleave=2, probability=0.25", Interleave(2, probability=0.25)),
        ("oversize", Oversize((1 << 20) + 1)),
        ("oversize=64KiB", Oversize(65536)),
        ("late-pong=250ms", LatePong(0.25)),
        ("no-pong,p=1", NoPong()),
        ("slow-read=2s", SlowRead(2.0)),
        ("reset", Reset()),
        ("reset=3", Reset(messages=3)),
        ("fin=1.5s", Fin(delay=1.5)),
        ("fin=0", Fin()),
    ],
)
def test_specs_parse(spec, fault):
    assert parse_chaos(spec) == fault


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("explode", "unknown fault 'explode'"),
        ("fragment", "fragment needs a value"),
        ("fragment=1", "at least 2"),
        ("fragment=x", "not a whole number"),
        ("interleave=0", "at least 1"),
        ("no-pong=3", "takes no value"),
        ("fragment=4,up", "unknown modifier 'up'"),
        ("fragment=4,p=2", "p= takes a probability from 0 to 1"),
        ("oversize=0", "from 1 byte to 1 GiB"),
        ("late-pong=soon", "not a duration"),
    ],
)
def test_bad_specs_name_the_flag_and_the_problem(spec, problem):
    with pytest.raises(ConfigError) as caught:
        parse_chaos(spec)
    message, _ = caught.value.describe(lambda name: f"--{name}")
    assert message.startswith(f"--chaos {spec!r}") and problem in message


def test_fragments_reassemble_with_pings_between_them():
    chaos = ConnectionChaos(parse_chaos_specs(["fragment=5", "interleave=2"]), seed=1, number=1)
    text = "héllo wörld, ünïcode split inside characters"
    out = chaos.message_sent(text.encode(), True)
    assert len(out.pings) == 8  # 2 between each two of 5 frames
    _, events = client_reads(*out.frames)
    assert [type(e) for e in events] == [Ping] * 8 + [Message]
    assert [e.payload for e in events[:-1]] == out.pings
    assert events[-1].text is True and bytes(events[-1].data) == text.encode()
    assert [e["fault"] for e in chaos.take_events()] == ["fragment", "interleave"]


def test_more_frames_than_bytes_sends_empty_frames():
    chaos = ConnectionChaos([Fragment(4)], seed=1, number=1)
    out = chaos.message_sent(b"ab", False)
    _, events = client_reads(*out.frames)
    assert len(events) == 1 and bytes(events[0].data) == b"ab" and events[0].text is False
    assert sum(len(b) for b in out.frames) == 4 * 2 + 2  # four 2-byte headers and the data


def test_interleave_alone_splits_in_two():
    chaos = ConnectionChaos([Interleave(1)], seed=1, number=1)
    out = chaos.message_sent(b"payload", False)
    _, events = client_reads(*out.frames)
    assert [type(e) for e in events] == [Ping, Message]


def test_oversized_frame_provokes_1009_and_fits_a_larger_limit():
    frame = oversized(100_000)
    client, events = client_reads(*frame, max_size=65536)
    assert client.state is State.CLOSED or client.close_sent is not None
    assert client.close_sent is not None and client.close_sent[0] == CloseCode.MESSAGE_TOO_BIG
    assert all(not isinstance(e, Message) for e in events)
    _, events = client_reads(*frame, max_size=None)
    assert len(events) == 1 and bytes(events[0].data) == bytes(100_000)


def test_no_fault_drawn_leaves_the_message_alone():
    chaos = ConnectionChaos([Fragment(3, probability=0)], seed=1, number=1)
    assert chaos.message_sent(b"x", False).frames == []
    assert chaos.take_events() == []


def fault_trace(seed: int, number: int) -> list[dict[str, object]]:
    specs = ["fragment=3,p=0.5", "interleave=1,p=0.5", "slow-read=1ms,p=0.3"]
    specs += ["late-pong=5ms,p=0.5", "no-pong,p=0.2", "reset=7,p=0.5"]
    chaos = ConnectionChaos(parse_chaos_specs(specs), seed, number)
    chaos.opened()
    for n in range(30):
        chaos.message_received()
        chaos.message_sent(b"message %d" % n, True)
        if n % 3 == 0:
            chaos.ping_received()
    return chaos.take_events()


def test_same_seed_same_faults_other_seed_or_connection_others():
    trace = fault_trace(42, 1)
    assert trace == fault_trace(42, 1)
    assert {e["fault"] for e in trace} >= {"fragment", "interleave", "late-pong"}
    assert trace != fault_trace(43, 1)
    assert trace != fault_trace(42, 2)


def test_draws_per_unit_do_not_depend_on_how_pings_and_messages_interleave():
    specs = parse_chaos_specs(["fragment=2,p=0.5", "late-pong=1ms,p=0.5"])
    first, second = ConnectionChaos(specs, 5, 1), ConnectionChaos(specs, 5, 1)
    for _ in range(10):
        first.message_sent(b"m", False)
        first.ping_received()
    for _ in range(10):
        second.ping_received()
    for _ in range(10):
        second.message_sent(b"m", False)
    key = lambda e: (e["fault"], e.get("message", 0), e.get("ping", 0))  # noqa: E731
    assert sorted(first.take_events(), key=key) == sorted(second.take_events(), key=key)


def test_cuts_by_messages_and_by_time():
    chaos = ConnectionChaos([Reset(messages=2), Fin(delay=0.5)], seed=1, number=1)
    timed = chaos.opened()
    assert timed == [Fin(delay=0.5)]
    assert chaos.message_received() == (None, 0.0)
    assert chaos.message_received() == (Reset(messages=2), 0.0)
    assert (
        chaos.take_events() == [{"fault": "reset", "after_messages": 2, "message": 2}]
        and chaos.cuts == []
    )


def test_pings_answered_late_or_never():
    late = ConnectionChaos([LatePong(0.2)], seed=1, number=1)
    assert late.ping_received() == 0.2
    never = ConnectionChaos([LatePong(0.2), NoPong()], seed=1, number=1)
    assert never.ping_received() is None
    assert [e["ping"] for e in never.take_events()] == [1, 1]


def test_closing_after_a_chaos_message_is_an_ordinary_close():
    # The plan's frames leave the connection's state alone: its own close handshake follows.
    chaos = ConnectionChaos([Fragment(3)], seed=1, number=1)
    server = Protocol(Side.SERVER)
    server.send_close(CloseCode.NORMAL_CLOSURE)
    frames = chaos.message_sent(b"abc", False).frames
    client, events = client_reads(*frames, *server.data_to_send())
    assert bytes(events[0].data) == b"abc"
    client.receive_eof()
    assert any(isinstance(e, ConnectionClosed) for e in events + client.events_received())


def test_protocol_sends_chaos_frames_in_order_and_refuses_them_once_closing():
    server = Protocol(Side.SERVER)
    server.send_text("before")
    server.send_frames(ConnectionChaos([Fragment(2)], 1, 1).message_sent(b"xy", False).frames)
    server.send_text("after")
    _, events = client_reads(*server.data_to_send())
    assert [bytes(e.data) for e in events] == [b"before", b"xy", b"after"]
    server.send_close()
    with pytest.raises(LocalProtocolError):
        server.send_frames([b"\x82\x00"])


def test_queued_output_leaves_out_a_deferred_close_reply():
    # A message and the peer's close in one read: data_to_send() would answer the close
    # after the message's reply; a chaos cut takes the reply alone and never answers.
    server = Protocol(Side.SERVER)
    client = Protocol(Side.CLIENT)
    client.send_text("hi")
    client.send_close()
    server.receive_data(b"".join(bytes(b) for b in client.data_to_send()))
    events = server.events_received()
    server.send_text(bytes(events[0].data))
    queued = server.queued_output()
    _, echoed = client_reads(*queued)
    assert [bytes(e.data) for e in echoed] == [b"hi"]
    assert server.close_sent is None
