"""Tests for netkit.core.bench.bitrate and SequenceWindow: bitrates as iperf3 reads them, the
control datagrams against literal bytes, the receiver's counts, RFC 3550 jitter, the tally's
merging and JSON, and the --fail-if metrics of a bitrate run."""

from __future__ import annotations

import pytest

from netkit.core.bench.bitrate import (
    Control,
    ControlKind,
    DatagramTally,
    ReceiverCounts,
    SenderLedger,
    format_bitrate,
    parse_bitrate,
    parse_control,
)
from netkit.core.bench.plan import LoadPlan, Scenario
from netkit.core.bench.result import BenchResult, default_failures, merge_results
from netkit.core.bench.thresholds import parse_threshold
from netkit.core.probe import make_probe
from netkit.core.stats import SequenceWindow
from netkit.errors import ConfigError

# --- bitrates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits"),
    [("100M", 100e6), ("1G", 1e9), ("1g", 1e9), ("2.5k", 2500), ("800", 800), ("10Mbit/s", 1e7)],
)
def test_bitrates_use_powers_of_1000_as_iperf3(text: str, bits: float) -> None:
    assert parse_bitrate(text) == bits


@pytest.mark.parametrize("text", ["", "0", "-1M", "fast", "1X", "1e20"])
def test_bad_bitrates_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="bitrate"):
        parse_bitrate(text)


def test_format_bitrate() -> None:
    assert format_bitrate(943.2e6) == "943.2 Mbit/s"
    assert format_bitrate(1e9) == "1.0 Gbit/s"
    assert format_bitrate(12) == "12 bit/s"


def test_the_plan_paces_datagrams_at_the_bitrate() -> None:
    plan = LoadPlan(scenario=Scenario.BITRATE, bitrate=8e6, size=1000, connections=2,
                    total_connections=2)  # fmt: skip
    # 1000 datagrams/s in all, 500 per connection, the second offset by 1 ms
    first, second = plan.pacing(0), plan.pacing(1)
    assert first is not None and second is not None
    assert first.interval_ns == second.interval_ns == 2_000_000
    assert second.offset_ns == 1_000_000


def test_bitrate_belongs_to_its_scenario() -> None:
    with pytest.raises(ConfigError, match="bitrate"):
        LoadPlan(scenario=Scenario.ECHO, bitrate=1e6)
    with pytest.raises(ConfigError, match="bitrate"):
        LoadPlan(scenario=Scenario.BITRATE)
    with pytest.raises(ConfigError, match="warmup"):
        LoadPlan(scenario=Scenario.BITRATE, bitrate=1e6, warmup=1.0)


# --- control datagrams ---------------------------------------------------------------------


def test_control_datagrams_literal_bytes() -> None:
    start = Control(ControlKind.START, 0x0102030405060708)
    assert start.encode() == b"NKB1\x01\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"
    report = Control(ControlKind.REPORT, 1, sent=300)
    assert report.encode() == b"NKB1\x03\x00\x00\x00" + (1).to_bytes(8) + (300).to_bytes(8)
    counts = ReceiverCounts(received=9, duplicates=1, out_of_order=2, lost=3, corrupt=0,
                            bytes=900, jitter_ns=1500)  # fmt: skip
    data = Control(ControlKind.COUNTS, 7, counts=counts).encode()
    assert len(data) == 16 + 7 * 8
    assert data[16:24] == (9).to_bytes(8)
    for control in (start, report, Control(ControlKind.COUNTS, 7, counts=counts)):
        assert parse_control(control.encode()) == control


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NKB1",
        b"NKB2\x01\x00\x00\x00" + bytes(8),  # magic
        b"NKB1\x09\x00\x00\x00" + bytes(8),  # kind
        b"NKB1\x03\x00\x00\x00" + bytes(8),  # a REPORT without its count
        b"NKB1\x01\x00\x00\x00" + bytes(9),  # a START with a byte too many
        make_probe(1, 2, 64),
    ],
)
def test_anything_else_is_not_a_control_datagram(data: bytes) -> None:
    assert parse_control(data) is None


# --- the receiver --------------------------------------------------------------------------


def test_window_counts_duplicates_and_reordering_exactly() -> None:
    w = SequenceWindow(size=8)
    kinds = [w.add(s) for s in (0, 2, 1, 1, 5, 3, 5, 4)]
    assert kinds == ["ok", "ok", "reordered", "duplicate", "ok", "reordered", "duplicate",
                     "reordered"]  # fmt: skip
    assert (w.received, w.duplicates, w.reordered) == (6, 2, 3)
    assert w.lost(7) == 1  # 6 never came


def test_window_forgets_what_it_passed_and_stays_bounded() -> None:
    w = SequenceWindow(size=8)
    w.add(3)
    w.add(12)  # slots 4..11 are cleared: 11 was never seen
    assert w.add(11) == "reordered"
    assert w.add(3) == "reordered"  # older than the window: a late arrival, as iperf3 counts it
    w.add(2**64 - 1)  # any sequence number costs the same memory
    assert len(w._seen) == 8
    assert w.add(2**64 - 2) == "reordered"
    assert w.add(2**64 - 1) == "duplicate"


def test_window_wraps_around_its_ring() -> None:
    w = SequenceWindow(size=4)
    for s in range(0, 40, 3):
        assert w.add(s) == "ok"
    assert w.add(38) == "reordered"
    assert w.add(38) == "duplicate"
    assert w.received == 15


def test_window_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        SequenceWindow(size=6)


def test_ledger_jitter_is_rfc3550() -> None:
    ledger = SenderLedger(token=1)
    # transit times 10, 12, 11, 15 ms: D = 2, 1, 4 ms; J += (|D| - J) / 16 each time
    for seq, transit_ms in enumerate((10, 12, 11, 15)):
        sent = seq * 1_000_000
        assert ledger.datagram(make_probe(seq, sent, 100), sent + transit_ms * 1_000_000) == "ok"
    j = 0.0
    for d in (2e-3, 1e-3, 4e-3):
        j += (d - j) / 16
    counts = ledger.counts(sent=5)
    assert counts.jitter_ns == round(j * 1e9)
    assert (counts.received, counts.lost, counts.bytes) == (4, 1, 400)


def test_ledger_counts_corrupt_datagrams_apart() -> None:
    ledger = SenderLedger(token=1)
    bad = bytearray(make_probe(0, 0, 100))
    bad[50] ^= 1
    assert ledger.datagram(bad, 1) == "corrupt"
    assert ledger.datagram(make_probe(0, 0, 100), 1) == "ok"
    assert ledger.datagram(make_probe(0, 0, 100), 1) == "duplicate"
    counts = ledger.counts(1)
    assert (counts.corrupt, counts.received, counts.duplicates, counts.bytes) == (1, 1, 1, 100)


# --- results -------------------------------------------------------------------------------


def _result(tally: DatagramTally | None, **kw: object) -> BenchResult:
    return BenchResult(scenario=Scenario.BITRATE, target="udp://x", transport="udp",
                       connections=1, workers=1, pipeline=1, size=1000, rate=None,
                       duration_s=2.0, requests=100, datagrams=tally, **kw)  # type: ignore[arg-type]  # fmt: skip


def _tally(lost: int, jitter_ns: int) -> DatagramTally:
    tally = DatagramTally(bitrate=1e6)
    tally.add_counts(100, ReceiverCounts(received=100 - lost, lost=lost, duplicates=1,
                                         out_of_order=2, bytes=(100 - lost) * 1000,
                                         jitter_ns=jitter_ns))  # fmt: skip
    return tally


def test_tallies_merge_exactly_and_survive_json() -> None:
    merged = merge_results([_result(_tally(2, 1_000_000)), _result(_tally(4, 3_000_000))])
    t = merged.datagrams
    assert t is not None
    assert (t.sent, t.received, t.lost, t.duplicates, t.out_of_order) == (200, 194, 6, 2, 4)
    assert t.loss_pct == 3.0
    assert t.jitter_ms == 2.0  # the mean of the streams', as iperf3's sum line
    assert t.bitrate == 2e6
    data = merged.as_dict()["datagrams"]
    assert data["loss_pct"] == 3.0 and data["bitrate"] == 194 * 1000 * 8 / 2.0
    again = BenchResult.from_dict(merged.as_dict())
    assert again.datagrams == t


def test_fail_if_metrics_of_a_bitrate_run() -> None:
    result = _result(_tally(2, 3_000_000))
    assert parse_threshold("loss_pct>1").crossed(result)
    assert not parse_threshold("loss_pct>2%").crossed(result)
    assert parse_threshold("jitter_ms>2").crossed(result)
    assert not parse_threshold("jitter_ms>3").crossed(result)
    assert parse_threshold("duplicates>0").crossed(result)
    assert parse_threshold("bitrate<1M").crossed(result)  # 392 kbit/s received
    assert "no UDP bitrate figures" in parse_threshold("loss_pct>1").describe(_result(None))
    assert parse_threshold("loss_pct>1").crossed(_result(None))  # no figures fail the gate


def test_a_bitrate_run_without_a_report_fails() -> None:
    assert default_failures(_result(None)) == ["no receiver reported what it received"]
    assert default_failures(_result(_tally(100, 0))) == ["the receiver received no datagram"]
    assert default_failures(_result(_tally(0, 0))) == []
