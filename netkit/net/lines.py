"""Lines of a file descriptor (standard input) for the event loop, read by a thread.

:class:`LineReader` serves ws-client's stdin when it is not a terminal (the interactive prompt
is :mod:`netkit.net.terminal_prompt`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator


class LineReader:
    """Lines of a file descriptor, read by a daemon thread and handed to the event loop.

    A thread, because asyncio cannot watch a regular file (``< file``) and a terminal read
    must not block the loop. It reads the descriptor with ``os.read``, not ``sys.stdin``:
    a daemon thread blocked inside a buffered reader's lock can make the interpreter abort at
    exit. At most ``_SLOTS`` chunks wait in memory (back-pressure on a fast producer).
    """

    _SLOTS = 16

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._slots = threading.Semaphore(self._SLOTS)
        threading.Thread(target=self._run, name="netkit-stdin", daemon=True).start()

    def _put(self, chunk: bytes | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        except RuntimeError:  # the loop is closed: the command is over
            return False
        return True

    def _run(self) -> None:
        try:
            while True:
                self._slots.acquire()
                chunk = os.read(self.fd, 65536)
                if not chunk or not self._put(chunk):
                    break
        except OSError:
            pass
        self._put(None)

    async def lines(self) -> AsyncIterator[bytes]:
        """Each line without its line ending (``\\n`` or ``\\r\\n``); a last unterminated
        line counts too."""
        pending = b""
        while True:
            chunk = await self._queue.get()
            self._slots.release()
            if chunk is None:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.removesuffix(b"\r")
        if pending:
            yield pending.removesuffix(b"\r")
