"""LatencyHistogram's mean and standard deviation equal HdrHistogram's own (which walk every
bucket and were the slowest part of writing a result)."""

from __future__ import annotations

import random

import pytest

from netkit.core.bench.histogram import HIGHEST_NS, LatencyHistogram


@pytest.mark.parametrize("count", [0, 1, 7, 5000])
def test_moments_match_the_library(count: int) -> None:
    rng = random.Random(count)
    h = LatencyHistogram()
    for _ in range(count):
        h.record(rng.choice([rng.randint(0, 2000), rng.randint(0, 50_000_000), HIGHEST_NS + 1]))
    if count == 0:
        assert (h.mean, h.stddev) == (0.0, 0.0)
        return
    assert h.mean == h.hdr.get_mean_value()
    assert h.stddev == pytest.approx(h.hdr.get_stddev(), rel=1e-12)
    other = LatencyHistogram.decode(h.encode())  # the same after a round trip
    assert (other.mean, other.stddev) == (h.mean, h.stddev)
