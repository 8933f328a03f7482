"""Delays between attempts: exponential back-off with a cap, and optional jitter.

One back-off for every retry netkit makes: ``open_stream``'s ``--retry`` (no jitter: a
service coming up is waited for as fast as the schedule allows) and ws-client's
``--reconnect`` (jittered, so that many clients dropped together do not come back together).
"""

from __future__ import annotations

import random


class Backoff:
    """Delays between attempts: ``first``, doubling up to ``limit``, until ``reset``.

    Args:
        first: the first delay, in seconds.
        limit: the cap: no delay is longer.
        jitter: the fraction of each delay drawn at random (0: none; 0.5: each delay is
            between half and all of the exponential one, "equal jitter"; 1: anywhere from 0).
        rng: the random source for the jitter (a seeded one repeats its delays).
    """

    def __init__(
        self,
        first: float = 0.05,
        limit: float = 0.5,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        self.first, self.limit, self.jitter = first, limit, jitter
        self.delay = first
        self._rng = rng if rng is not None else random.Random()

    def next(self) -> float:
        """The delay to wait now; the next one is twice as long (at most ``limit``)."""
        delay = min(self.delay, self.limit)
        self.delay = min(delay * 2, self.limit)
        if self.jitter:
            delay -= delay * self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        """An attempt succeeded: start again from ``first``."""
        self.delay = self.first
