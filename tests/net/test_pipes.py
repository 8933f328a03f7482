"""net/pipes.py in-process: ChildPipes with real child processes on the running loop."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from netkit.net.pipes import ChildPipes


class Child:
    """A child process started on ChildPipes, with what its pipes reported."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.full: list[bool] = []
        self.stdout_done = asyncio.Event()
        self.more_stdout = asyncio.Event()
        self.stderr_done = asyncio.Event()
        self.pipes = ChildPipes(
            on_stdout=self._out, on_stderr=self._err, on_stdin_full=self.full.append
        )
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def _out(self, data: bytes) -> None:
        self.stdout += data
        self.more_stdout.set()
        if not data:
            self.stdout_done.set()

    def _err(self, data: bytes) -> None:
        self.stderr += data
        if not data:
            self.stderr_done.set()

    async def start(self, command: str) -> Child:
        assert self.pipes.child_ends is not None
        stdin, stdout, stderr = self.pipes.child_ends
        self.process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, stdin=stdin, stdout=stdout, stderr=stderr
        )
        self.pipes.started()
        return self

    async def finish(self) -> int:
        await asyncio.wait_for(self.stdout_done.wait(), 10)
        await asyncio.wait_for(self.stderr_done.wait(), 10)
        code = await asyncio.wait_for(self.process.wait(), 10)
        self.pipes.close()
        self.pipes.close()  # a second close does nothing (no descriptor closed twice)
        return code


@pytest.mark.timeout(30)
def test_every_byte_through_cat_with_stdin_backpressure():
    payload = os.urandom(4 << 20)  # far more than a pipe holds: stdin fills, then drains

    async def main() -> Child:
        child = await Child().start("cat; echo done >&2")
        child.pipes.write(payload)
        child.pipes.close_stdin()  # what was not written yet would be dropped: count it
        return child

    async def run() -> tuple[Child, int]:
        child = await main()
        return child, await child.finish()

    child, code = asyncio.run(run())
    dropped = child.pipes.dropped
    assert code == 0
    # Closing stdin with bytes still unsent drops them, and says how many: the bytes that
    # came out plus those dropped are exactly what was written.
    assert len(child.stdout) + dropped == len(payload)
    assert child.stdout == payload[: len(child.stdout)]
    assert child.stderr == b"done\n"
    assert child.full[:1] == [True] and child.full[-1] is False


@pytest.mark.timeout(30)
def test_a_slow_reader_holds_stdin_until_it_drains():
    payload = os.urandom(1 << 20)

    async def run() -> tuple[bytes, list[bool], int]:
        child = await Child().start("sleep 0.2; cat")
        child.pipes.write(payload)
        assert child.full == [True]  # the pipe took part of it; the rest waits
        drained = asyncio.get_running_loop().create_future()
        child.pipes.on_stdin_full = lambda full: full or drained.set_result(None)
        await asyncio.wait_for(drained, 10)
        child.pipes.close_stdin()
        code = await child.finish()
        return bytes(child.stdout), child.full, code

    out, _full, code = asyncio.run(run())
    assert code == 0
    assert hashlib.sha256(out).digest() == hashlib.sha256(payload).digest()


@pytest.mark.timeout(30)
def test_writes_after_the_child_closed_stdin_are_counted_as_dropped():
    async def run() -> tuple[int, int]:
        child = await Child().start("exec 0<&-; echo closed; sleep 0.5")
        while b"closed" not in child.stdout:
            child.more_stdout.clear()
            await asyncio.wait_for(child.more_stdout.wait(), 5)
        child.pipes.write(b"x" * 10)
        child.pipes.write(b"y" * 5)
        code = await child.finish()
        return child.pipes.dropped, code

    dropped, code = asyncio.run(run())
    assert (dropped, code) == (15, 0)
