"""Tests for netkit.net.runtime: the one place that handles the stop signals."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import pytest

from netkit.net import runtime
from netkit.net.runtime import STOP_SIGNALS, run_until_signal
from tests.net.conftest import Runner

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
def test_a_stop_signal_requests_a_shutdown_and_a_second_forces_it(run: Runner, sig: int) -> None:
    async def main() -> None:
        async with run_until_signal() as shutdown:
            assert not shutdown.requested.is_set()
            os.kill(os.getpid(), sig)
            await shutdown.requested.wait()
            assert not shutdown.forced.is_set()
            assert shutdown.signum == sig
            assert shutdown.interrupted is (sig == signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)  # another signal: stop now
            await shutdown.forced.wait()
            assert shutdown.signum == sig  # the first one says how the run ended

    run(main())


def test_the_handlers_are_removed_on_leaving_the_block(run: Runner) -> None:
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="inside"):
            async with run_until_signal():
                raise RuntimeError("inside")
        # remove_signal_handler says False when no handler of the loop's is left
        return [loop.remove_signal_handler(sig) for sig in STOP_SIGNALS]

    assert run(main()) == [False] * len(STOP_SIGNALS)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_run_puts_what_exists_before_the_loop_out_of_the_collectors_sight() -> None:
    # A full collection then walks only what the run itself creates: with netkit's imports
    # it took 11.7 ms unfrozen, a stall for every connection (see runtime.run).
    async def frozen() -> int:
        return gc.get_freeze_count()

    try:
        assert runtime.run(frozen) > 10_000  # every module and function imported so far
    finally:
        gc.unfreeze()  # the rest of the suite runs as it did
