"""``lb --backends-file``: the backends read from a file, and read again on SIGHUP and
whenever the file changes, without dropping a connection.

The file holds one backend per line in the command line's syntax (blank lines and ``#``
comments allowed: :func:`netkit.core.balance.backends.parse_backends_text`). A reload applies
the new list to the running pool (:meth:`netkit.net.upstreams.BalancedPool.apply`): newcomers
join (ramping up under slow start), backends left out drain (their connections finish, no new
ones go to them), changed weights apply to the next choice. A file that does not parse leaves
the pool as it was and is reported with the line at fault.

Changes are found by polling the file's inode, size and modification time every
:data:`POLL_INTERVAL` seconds (one ``stat`` call: cheap, and it also sees an editor's
write-then-rename, which an inotify watch on the old inode would miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from netkit.core.balance.backends import Backend, parse_backends_text
from netkit.core.balance.pool import PoolChange
from netkit.errors import ConfigError
from netkit.net.upstreams import BalancedPool

POLL_INTERVAL = 1.0
"""Seconds between two looks at the file."""

OnReload = Callable[[str, dict[str, Any]], None]
"""Receives ``("reloaded" | "reload_failed", fields)``."""

Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    # What tells one version of the file from the next: inode, size, mtime (None: missing).
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_backends_file(path: Path) -> list[Backend]:
    """The backends in ``path``.

    Raises:
        ConfigError: the file cannot be read, or a line does not parse (named by number).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read backends file {path}: {reason}") from None
    return parse_backends_text(text, str(path))


class BackendsFile:
    """Keeps a :class:`BalancedPool` serving the backends that ``path`` lists.

    Args:
        path: the backends file (read once already, for the pool's first backends).
        upstream: the pool to keep in step.
        on_reload: told of each reload and each failed one.
        interval: seconds between two looks at the file.
        prepare: what the command does to the backends it reads before the pool gets them
            (lb: TLS for every backend under ``--backend-tls``); a ConfigError it raises
            fails the reload.
    """

    def __init__(
        self,
        path: Path,
        upstream: BalancedPool,
        *,
        on_reload: OnReload,
        interval: float = POLL_INTERVAL,
        prepare: Callable[[list[Backend]], list[Backend]] | None = None,
    ) -> None:
        self.path = path
        self.upstream = upstream
        self.on_reload = on_reload
        self.interval = interval
        self.prepare = prepare
        self._seen = _stamp(path)

    def reload(self, trigger: str = "SIGHUP") -> PoolChange | None:
        """Read the file again and apply it; None (and a ``reload_failed`` event) when it does
        not parse, the pool unchanged."""
        self._seen = _stamp(self.path)  # before reading: a write after it is seen next time
        fields: dict[str, Any] = {"file": str(self.path), "trigger": trigger, "pid": os.getpid()}
        try:
            backends = read_backends_file(self.path)
            if self.prepare is not None:
                backends = self.prepare(backends)
        except ConfigError as exc:
            self.on_reload("reload_failed", fields | {"error": str(exc)})
            return None
        change = self.upstream.apply(backends)
        self.on_reload("reloaded", fields | change.as_dict() | {"backends": len(backends)})
        return change

    def changed(self) -> bool:
        """True when the file is not the version last read (or has appeared or gone)."""
        return _stamp(self.path) != self._seen

    async def watch(self) -> None:
        """Reload whenever the file changes, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            if self.changed():
                self.reload("file changed")

    @contextlib.asynccontextmanager
    async def watching(self, _server: object = None) -> AsyncIterator[BackendsFile]:
        """``async with backends_file.watching():`` watches the file inside the block (a
        companion of :func:`netkit.commands.serving.run_server`)."""
        task = asyncio.create_task(self.watch(), name=f"watch {self.path}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
