"""A child process's stdin, stdout and stderr as non-blocking pipes on the event loop.

:class:`ChildPipes` makes the three pipes, hands the child's ends to the spawn
(:attr:`ChildPipes.child_ends`) and keeps the parent's: stdout and stderr are read in the
loop's reader callbacks (``os.read``, each chunk handed on at once), stdin is written with
``os.write`` and only what the pipe does not take is buffered (a writer callback sends it
on, and the owner hears when stdin is full and when it drained).

Why not the loop's subprocess pipe transports: uvloop defers each pipe write to the end of
the loop iteration and hands each read on with ``call_soon``. With them a 32-byte line's
round trip through ``ws-server --exec cat`` took 99 us (median, 3,000 ping-pongs on
loopback); with these pipes, 22 us (websocketd: 14 us). Polling stdout for a few
microseconds after each write, as Go's threads spin before they park, was tried and left
out: no gain in the median on a loaded 2-CPU machine, and CPU burnt that ``cat`` needs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

__all__ = ["ChildPipes"]

READ_SIZE = 256 * 1024  # as asyncio's pipe transports read


class ChildPipes:
    """The parent's ends of a child's three standard streams.

    Args:
        on_stdout: receives each chunk of stdout; ``b""`` once at its end.
        on_stderr: the same for stderr.
        on_stdin_full: called with True when stdin's pipe is full (what is written is kept
            until it drains), with False when it has drained.
    """

    def __init__(
        self,
        *,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        on_stdin_full: Callable[[bool], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.on_stdin_full = on_stdin_full
        fds: list[int] = []
        try:
            for _ in range(3):
                fds.extend(os.pipe2(os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        stdin_r, self.stdin, self.stdout, stdout_w, self.stderr, stderr_w = fds
        self.child_ends: tuple[int, int, int] | None = (stdin_r, stdout_w, stderr_w)
        for fd in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(fd, False)
        self._unsent = b""  # what stdin's pipe did not take yet
        self._stdout_open = self._stderr_open = self._stdin_open = True
        self._stdout_paused = False
        self._closed = False
        self.dropped = 0  # bytes written after stdin closed (the child closed it, or we did)

    def started(self) -> None:
        """The child has its ends: close ours of them and start reading its output."""
        self._close_child_ends()
        self._loop.add_reader(self.stdout, self._stdout_ready)
        self._loop.add_reader(self.stderr, self._stderr_ready)

    def _close_child_ends(self) -> None:
        if self.child_ends is not None:
            for fd in self.child_ends:
                os.close(fd)
            self.child_ends = None

    @property
    def output_open(self) -> bool:
        """True until both stdout and stderr reached their end."""
        return self._stdout_open or self._stderr_open

    # --- stdout, stderr -------------------------------------------------------------------

    def _stdout_ready(self) -> None:
        self._read_stdout()

    def _read_stdout(self) -> bool:
        """Read stdout once; False when nothing was there."""
        try:
            data = os.read(self.stdout, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""  # EIO and the like: the stream is over
        if not data:
            self._stdout_open = False
            self._loop.remove_reader(self.stdout)
        self.on_stdout(data)
        return True

    def _stderr_ready(self) -> None:
        try:
            data = os.read(self.stderr, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._stderr_open = False
            self._loop.remove_reader(self.stderr)
        self.on_stderr(data)

    def pause_stdout(self) -> None:
        """Stop reading stdout (whoever gets it cannot take more)."""
        if self._stdout_open and not self._stdout_paused:
            self._stdout_paused = True
            self._loop.remove_reader(self.stdout)

    def resume_stdout(self) -> None:
        """Read stdout again."""
        if self._stdout_open and self._stdout_paused:
            self._stdout_paused = False
            self._loop.add_reader(self.stdout, self._stdout_ready)

    # --- stdin ----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray) -> None:
        """Write to stdin: at once what the pipe takes, the rest when it drains."""
        if not self._stdin_open:
            self.dropped += len(data)
            return
        if self._unsent:
            self._unsent += data
            return
        try:
            sent = os.write(self.stdin, data)
        except BlockingIOError:
            sent = 0
        except OSError:  # EPIPE: the child closed its stdin (or exited)
            self._stdin_gone(len(data))
            return
        if sent < len(data):
            self._unsent = bytes(data[sent:])
            self._loop.add_writer(self.stdin, self._stdin_ready)
            self.on_stdin_full(True)

    def _stdin_ready(self) -> None:
        try:
            sent = os.write(self.stdin, self._unsent)
        except BlockingIOError:
            return
        except OSError:
            self._stdin_gone(0)
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._loop.remove_writer(self.stdin)
            self.on_stdin_full(False)

    def _stdin_gone(self, more: int) -> None:
        self.dropped += more + len(self._unsent)
        if self._unsent:
            self._unsent = b""
            self.on_stdin_full(False)
        self.close_stdin()

    def close_stdin(self) -> None:
        """Close stdin (the child reads its end); what was not written yet is dropped."""
        if not self._stdin_open:
            return
        self._stdin_open = False
        if self._unsent:
            self.dropped += len(self._unsent)
            self._unsent = b""
            self.on_stdin_full(False)
        self._loop.remove_writer(self.stdin)
        os.close(self.stdin)

    def close(self) -> None:
        """Close every end still open (no callback after this); calling it again is a no-op."""
        if self._closed:
            return
        self._closed = True
        self._close_child_ends()
        self._unsent = b""
        if self._stdin_open:
            self._stdin_open = False
            self._loop.remove_writer(self.stdin)
            os.close(self.stdin)
        for fd in (self.stdout, self.stderr):
            self._loop.remove_reader(fd)
            os.close(fd)
        self._stdout_open = self._stderr_open = False
