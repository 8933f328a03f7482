"""StampedReceiver over real UDP sockets: a datagram's arrival time is when the kernel received
it, not when the program got round to reading it (the UDP bitrate test's jitter)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from netkit.core.bench.bitrate import SenderLedger
from netkit.core.probe import make_probe
from netkit.net import datagram
from netkit.net.datagram import StampedReceiver

pytestmark = pytest.mark.timeout(30)

# The time between two sends whose arrival stamps the test compares (the quantity measured).
GAP_S = 0.05


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    sender.connect(receiver.getsockname())
    yield receiver, sender
    receiver.close()
    sender.close()


def test_arrivals_are_the_kernels_not_the_reads(pair: tuple[socket.socket, ...]) -> None:
    receiver, sender = pair
    reader = StampedReceiver(receiver, bytearray(2048))
    assert reader.stamped  # Linux on this machine
    before = time.time_ns()
    sender.send(b"first")
    time.sleep(GAP_S)  # the gap between the two arrivals, measured below
    sender.send(b"second")
    after = time.time_ns()
    (n1, addr1, first), (n2, _, second) = reader.recv(), reader.recv()
    read_at = time.time_ns()
    assert (n1, n2) == (5, 6) and addr1 == sender.getsockname()
    assert before <= first < second <= after <= read_at
    # Both were read together, after the second arrived; their stamps are GAP_S apart.
    assert second - first >= GAP_S * 1e9 * 0.9


def test_a_late_read_is_not_counted_as_jitter(pair: tuple[socket.socket, ...]) -> None:
    receiver, sender = pair
    reader = StampedReceiver(receiver, buf := bytearray(2048))
    ledger = SenderLedger(token=1)
    for seq in range(100):
        if seq == 99:  # the receiver is descheduled while 99 datagrams wait to be read
            time.sleep(GAP_S)
        sender.send(make_probe(seq, time.perf_counter_ns(), 200))
    for _ in range(100):
        n, _, arrived = reader.recv()
        assert ledger.datagram(memoryview(buf)[:n], arrived) == "ok"
    counts = ledger.counts(sent=100)
    assert counts.received == 100 and counts.lost == 0
    # Stamped when read, the 99 first would have waited GAP_S longer than the last: a jitter
    # of GAP_S / 16 (RFC 3550's gain), 3 ms.
    assert counts.jitter_ns < 1_000_000


def test_without_kernel_stamps_the_read_time_is_the_arrival(
    pair: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, sender = pair
    monkeypatch.setattr(datagram.platform, "machine", lambda: "sparc64")  # numbers it 0x21
    reader = StampedReceiver(receiver, bytearray(2048))
    assert not reader.stamped
    sender.send(b"x")
    time.sleep(GAP_S)  # the datagram waits: its arrival is read after this
    waited = time.perf_counter_ns()
    n, _, arrived = reader.recv()
    assert n == 1 and waited <= arrived <= time.perf_counter_ns()
