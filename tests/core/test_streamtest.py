"""The stream test's wire (netkit.core.streamtest) against literal bytes, and the stream
figures of a bench result: per direction, through JSON and merging."""

from __future__ import annotations

import pytest

from netkit.core.bench.plan import LoadPlan, Scenario
from netkit.core.bench.result import BenchResult, default_failures, merge_results
from netkit.core.bench.thresholds import parse_threshold
from netkit.core.streamtest import (
    OK_LINE,
    Answer,
    Direction,
    StreamReport,
    error_line,
    hello,
    parse_answer,
    parse_hello,
    take_line,
)
from netkit.errors import ConfigError, PeerProtocolError


def test_hello_and_answers_are_these_bytes() -> None:
    assert hello(Direction.REVERSE) == b"NETKIT-STREAM/1 reverse\n"
    assert OK_LINE == b"NETKIT-STREAM/1 ok\n"
    assert error_line("no\nway") == b"NETKIT-STREAM/1 error no way\n"
    assert len(error_line("x" * 200)) == 64
    for d in Direction:
        assert parse_hello(hello(d)) is d
    assert take_line(b"NETKIT-STREAM/1 bi") is None
    assert take_line(b"NETKIT-STREAM/1 bidir\nxyz") == 22


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "not a stream test hello"),
        (b"NETKIT-STREAM/1 sideways\n", "unknown direction"),
    ],
)
def test_bad_hellos_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(PeerProtocolError, match=message):
        parse_hello(line)


def test_a_hello_without_a_newline_is_refused_at_the_limit() -> None:
    with pytest.raises(PeerProtocolError, match="within 64 bytes"):
        take_line(b"x" * 64)


def test_answers() -> None:
    sent = hello(Direction.FORWARD)
    assert parse_answer(OK_LINE, sent, "p") is Answer.OK
    assert parse_answer(sent, sent, "p") is Answer.ECHO
    with pytest.raises(PeerProtocolError, match="p refused the stream test: busy"):
        parse_answer(error_line("busy"), sent, "p")
    with pytest.raises(PeerProtocolError, match="--mode stream"):
        parse_answer(b"SSH-2.0-OpenSSH\n", sent, "p")


def test_the_result_record_is_these_bytes() -> None:
    record = StreamReport(received=1, sent=2, elapsed_ns=3).encode()
    assert record == b"NKSTRES1" + bytes(7) + b"\1" + bytes(7) + b"\2" + bytes(7) + b"\3"
    assert StreamReport.decode(record, "p") == StreamReport(1, 2, 3)
    with pytest.raises(PeerProtocolError, match="without its result record"):
        StreamReport.decode(record[1:], "p")
    with pytest.raises(PeerProtocolError, match="valid result record"):
        StreamReport.decode(b"X" + record[1:], "p")


def stream_result(**kw: object) -> BenchResult:
    fields: dict[str, object] = dict(
        scenario=Scenario.STREAM,
        target="t",
        transport="tcp",
        connections=1,
        workers=1,
        pipeline=1,
        size=1,
        rate=None,
        duration_s=1.0,
        drain_s=0.25,
        requests=1,
    )
    fields.update(kw)
    return BenchResult(**fields)  # type: ignore[arg-type]


def test_directions_and_their_rates() -> None:
    r = stream_result(
        direction="bidir", bytes_sent=2_000_000, peer_received=2_000_000, peer_sent=500_000
    )
    r.bytes_received = 500_000
    shown = r.directions()
    assert shown["forward"] == {
        "sender_bytes": 2_000_000,
        "receiver_bytes": 2_000_000,
        "sender_mb_per_s": 2.0,  # written over the measured second
        "receiver_mb_per_s": 1.6,  # arrived over the second and the drain
    }
    assert shown["reverse"]["receiver_mb_per_s"] == 0.4
    assert parse_threshold("forward_mb_s<1.7").crossed(r)
    assert not parse_threshold("reverse_mb_s<0.3").crossed(r)
    back = BenchResult.from_dict(r.as_dict())
    assert back.directions() == shown
    merged = merge_results([r, back])
    assert (merged.peer_received, merged.peer_sent) == (4_000_000, 1_000_000)


def test_an_unreported_direction_is_unknown_and_fails_a_gate() -> None:
    r = stream_result(direction="forward", bytes_sent=10)
    assert r.directions()["forward"]["receiver_bytes"] is None
    assert parse_threshold("forward_mb_s<1").crossed(r)  # no figure is no pass
    assert parse_threshold("reverse_mb_s<1").describe(r).startswith("reverse_mb_s = not measured")


def test_reverse_fails_when_nothing_arrived() -> None:
    r = stream_result(direction="reverse", requests=0, peer_sent=0)
    assert default_failures(r) == ["no byte arrived from the server"]
    r.bytes_received = 1
    assert default_failures(r) == []


def test_different_directions_do_not_merge() -> None:
    with pytest.raises(ConfigError, match="directions: forward, reverse"):
        merge_results([stream_result(direction="forward"), stream_result(direction="reverse")])
    # A stream result saved before the stream test existed has no direction.
    with pytest.raises(ConfigError, match="directions: forward, none"):
        merge_results([stream_result(direction="forward"), stream_result(direction=None)])


def test_a_direction_needs_the_stream_scenario() -> None:
    with pytest.raises(ConfigError, match="applies to the stream scenario"):
        LoadPlan(direction=Direction.REVERSE)
    with pytest.raises(ConfigError, match="choose one of forward, reverse, bidir"):
        LoadPlan(scenario=Scenario.STREAM, direction="up")  # type: ignore[arg-type]
