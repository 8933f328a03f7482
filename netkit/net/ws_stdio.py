"""stdin and stdout as the byte stream of a bridge (``ws-client URL --stdio``).

:class:`StdioStream` is a :class:`~netkit.net.ws_bridge.StreamPeer` whose reading and writing
each run in a daemon thread: plain blocking ``os.read``/``os.write`` serve pipes, terminals,
sockets and regular files alike (an event loop cannot watch a regular file), and a thread
blocked reading a terminal never keeps the process from exiting. One read is in flight at a
time and the next waits until the bridge takes it, so a slow WebSocket slows stdin down;
writes queue up to :data:`HIGH_WATER` bytes before the bridge stops reading the WebSocket.

The end of stdout is a FIN: once every byte is written, stdout is pointed at /dev/null,
which closes the pipe (the reader sees EOF) without leaving file descriptor 1 free to be
reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from netkit.net.ws_bridge import Bridge
from netkit.net.zerocopy import Buffer

READ_SIZE = 1 << 16  # one binary message per read, at most this big
HIGH_WATER = 1 << 20  # bytes queued for stdout before the WebSocket stops being read


class StdioStream:
    """stdin → the bridge → stdout, each in its own daemon thread.

    Args:
        bridge: where stdin's bytes go and what writes to stdout.
        stdin, stdout: the file descriptors.
    """

    def __init__(self, bridge: Bridge, *, stdin: int = 0, stdout: int = 1) -> None:
        self.bridge = bridge
        self.stdin, self.stdout = stdin, stdout
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Condition()
        self._queue: deque[bytes | None] = deque()  # None: close stdout (a FIN)
        self._queued = 0  # bytes in the queue (under the lock)
        self._paused = False  # writing_paused was reported: tell the bridge when drained
        self._ending = False  # finish() or reset() was called
        self._go = threading.Event()  # the reader may read once more
        self._want_reading = True
        self._taken = True  # the last read was handed to the bridge (so another may start)
        # The stream is over (the bridge is told once) when stdout is closed and either stdin
        # ended or nothing more is wanted from it (the WebSocket is over, or a reset).
        self._stdin_done = False
        self._stdout_done = False
        self._all_done = False
        self._error: OSError | None = None
        self._told = False

    def start(self) -> None:
        """Start reading stdin and writing stdout."""
        self._go.set()
        for target, name in ((self._read_loop, "stdin"), (self._write_loop, "stdout")):
            threading.Thread(target=target, name=f"netkit-{name}", daemon=True).start()

    def _post(self, callback: Callable[..., Any], *args: Any) -> None:
        # From a thread to the loop; after the loop closed there is no one left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    # --- stdin ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            try:
                data = os.read(self.stdin, READ_SIZE)
            except OSError as exc:
                self._post(self._stdin_failed, exc)
                return
            if not data:
                self._post(self._stdin_eof)
                return
            self._post(self._arrived, data)

    def _stdin_eof(self) -> None:
        self._stdin_done = True
        self.bridge.stream_eof()
        self._maybe_over()

    def _stdin_failed(self, exc: OSError) -> None:
        self._stdin_done = True
        self._error = exc
        self.reset()

    def _arrived(self, data: bytes) -> None:
        self.bridge.stream_data(data)
        self._taken = False
        if self._want_reading:
            self._read_next()

    def _read_next(self) -> None:
        if not self._taken:
            self._taken = True
            self._go.set()

    def pause_reading(self) -> None:
        """Read no more of stdin until :meth:`resume_reading`."""
        self._want_reading = False

    def resume_reading(self) -> None:
        """Read stdin again."""
        self._want_reading = True
        self._read_next()

    # --- stdout --------------------------------------------------------------------------

    @property
    def writing_paused(self) -> bool:
        """True while more than :data:`HIGH_WATER` bytes wait for stdout."""
        with self._lock:
            if self._queued > HIGH_WATER:
                self._paused = True
            return self._paused

    def write(self, data: Buffer) -> None:
        """Queue ``data`` for stdout (a copy: the view is valid during the call only)."""
        if self._ending or not len(data):
            return
        with self._lock:
            self._queue.append(bytes(data))
            self._queued += len(data)
            self._lock.notify()

    def finish(self) -> None:
        """Close stdout once every queued byte is written."""
        self._end()

    def reset(self) -> int:
        """Close stdout now: what is queued is dropped and returned (a pipe has no RST)."""
        with self._lock:
            dropped, self._queued = self._queued, 0
            self._queue.clear()
        self._all_done = True
        self._end()
        return dropped

    def close(self) -> None:
        """The WebSocket is over: close stdout once written (stdin is left to the thread)."""
        self._all_done = True
        self._end()
        self._maybe_over()

    def _end(self) -> None:
        if self._ending:
            return
        self._ending = True
        with self._lock:
            self._queue.append(None)
            self._lock.notify()

    def _write_loop(self) -> None:
        error: OSError | None = None
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                data = self._queue.popleft()
            if data is None:
                break
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.stdout, view) :]
            except OSError as exc:  # EPIPE: the reader of stdout is gone
                error = exc
                break
            with self._lock:
                self._queued = max(self._queued - len(data), 0)  # reset() may have zeroed it
                drained = self._paused and self._queued == 0
                if drained:
                    self._paused = False
            if drained:
                self._post(self.bridge.stream_drained)
        with self._lock:
            unwritten, self._queued = self._queued, 0
            self._queue.clear()
        self._close_stdout()
        self._post(self._written, error, unwritten)

    def _close_stdout(self) -> None:
        # /dev/null in its place: the pipe closes, and fd 1 is not free for another file.
        try:
            null = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            os.close(self.stdout)
            return
        os.dup2(null, self.stdout)
        os.close(null)

    def _written(self, error: OSError | None, unwritten: int) -> None:
        if unwritten:
            self.bridge.to_stream.lost(unwritten)
        self._stdout_done = True
        if error is not None:  # EPIPE: the reader of stdout left, as a reset would say
            self._error = error
            self._all_done = True
        self._maybe_over()

    def _maybe_over(self) -> None:
        # stdin may still be read after stdout closed (a half-close): not over until it ends.
        if self._stdout_done and (self._stdin_done or self._all_done) and not self._told:
            self._told = True
            self.bridge.stream_lost(self._error)
