"""Readiness for the relay's raw sockets from one epoll set of our own, nested in the loop.

uvloop's ``add_reader`` makes a libuv poll handle per descriptor, and each handle costs
syscalls to make and to drop (an ``ioctl``, an ``epoll_ctl`` add and delete to probe the
descriptor, up to three deletes when it goes, and an io_uring submission for the real
registration): on a short relayed connection that was a dozen ``epoll_ctl`` calls. A
:class:`Poller` keeps its own ``epoll`` set (as HAProxy does): a descriptor costs one
``epoll_ctl`` to add, one per change of interest, and nothing when it is closed (the kernel
drops a closed descriptor from the set). The set itself is one descriptor the loop watches;
when it is readable, one ``epoll_wait`` gathers every ready socket and calls their callbacks.

Level-triggered, like ``add_reader``/``add_writer``, whose shape it keeps (one reader and one
writer callback per descriptor). Linux only (:data:`POLLER_AVAILABLE`); one poller per event
loop (:func:`poller_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import weakref
from collections.abc import Callable

POLLER_AVAILABLE = hasattr(select, "epoll")
_IN = getattr(select, "EPOLLIN", 1)
_OUT = getattr(select, "EPOLLOUT", 4)
_ERR = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
_BATCH = 256

Callback = Callable[[], object]


class Poller:
    """An epoll set of our own, drained from the loop whenever it has ready descriptors."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop holds the poller (its reader callback), not the other way round: a
        # finished loop takes its poller, and the poller's descriptor, with it.
        self._loop = weakref.ref(loop)
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def add_reader(self, fd: int, callback: Callback) -> None:
        """Call ``callback()`` while ``fd`` is readable."""
        self._readers[fd] = callback
        if fd not in self._masks:  # the usual case, a new socket: registered directly
            self._masks[fd] = _IN
            self._epoll.register(fd, _IN)
        else:
            self._update(fd)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` for reading."""
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callback) -> None:
        """Call ``callback()`` while ``fd`` is writable."""
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        """Stop watching ``fd`` for writing."""
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def closing(self, fd: int) -> None:
        """``fd`` is about to be closed: forget it (closing takes it out of the set)."""
        self._readers.pop(fd, None)
        self._writers.pop(fd, None)
        self._masks.pop(fd, None)

    def _update(self, fd: int) -> None:
        mask = (_IN if fd in self._readers else 0) | (_OUT if fd in self._writers else 0)
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        if not mask:
            del self._masks[fd]
            with contextlib.suppress(OSError):  # closed already: the kernel dropped it
                self._epoll.unregister(fd)
        elif not old:
            self._masks[fd] = mask
            self._epoll.register(fd, mask)
        else:
            self._masks[fd] = mask
            self._epoll.modify(fd, mask)

    def _ready(self) -> None:
        try:
            events = self._epoll.poll(0, _BATCH)
        except InterruptedError:
            return
        readers, writers = self._readers, self._writers
        for fd, mask in events:
            # A callback may have closed or re-registered a descriptor met later in this
            # batch: the dictionaries say what is watched now (a spurious call finds EAGAIN).
            try:
                if mask & (_IN | _ERR) and (reader := readers.get(fd)) is not None:
                    reader()
                if mask & (_OUT | _ERR) and (writer := writers.get(fd)) is not None:
                    writer()
            except Exception as exc:  # as the loop does for its own callbacks: report, go on
                self._report(exc)

    def _report(self, exc: Exception) -> None:
        loop = self._loop()
        if loop is not None:
            loop.call_exception_handler(
                {"message": "exception in a relay readiness callback", "exception": exc}
            )

    def close(self) -> None:
        """Stop: the loop no longer watches the set, which is closed."""
        loop = self._loop()
        if not self._epoll.closed:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self._epoll.fileno())
            self._epoll.close()

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True when this is ``loop``'s poller and still open."""
        return self._loop() is loop and not self._epoll.closed


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()


_LAST: list[Poller | None] = [None]


def poller_for(loop: asyncio.AbstractEventLoop) -> Poller:
    """The poller of ``loop`` (made on first use; it lives as long as the loop)."""
    last = _LAST[0]
    if last is not None and last.serves(loop):
        return last  # one loop per process (or per worker) is the rule: no dictionary look-up
    poller = _POLLERS.get(loop)
    if poller is None or not poller.serves(loop):
        poller = _POLLERS[loop] = Poller(loop)
    _LAST[0] = poller
    return poller
