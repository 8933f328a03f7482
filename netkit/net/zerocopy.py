"""Moving bytes without copying them: vectored writes to asyncio transports."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence

Buffer = bytes | bytearray | memoryview

# Joining a few KiB costs less than a second send() syscall; above this we write parts one by one.
SMALL_JOIN = 4096


def has_vectored_writelines(transport: asyncio.BaseTransport) -> bool:
    """True when ``transport.writelines`` sends the parts without joining them.

    uvloop (writev), asyncio's SSL transport (writes each part into the TLS object) and
    CPython >= 3.12's socket transport (sendmsg) do; CPython 3.11's socket transport joins.
    """
    kind = type(transport)
    # Decided once per transport class: this is on the path of every multi-part write.
    vectored = _VECTORED.get(kind)
    if vectored is None:
        method = getattr(kind, "writelines", None)
        vectored = method is not None and method is not asyncio.WriteTransport.writelines
        _VECTORED[kind] = vectored
    return vectored


_VECTORED: dict[type, bool] = {}


def write_parts(transport: asyncio.WriteTransport, parts: Sequence[Buffer]) -> None:
    """Write several buffers (e.g. a frame header and its payload) without joining large ones."""
    if has_vectored_writelines(transport):
        transport.writelines(parts)
        return
    if sum(len(p) for p in parts) <= SMALL_JOIN:
        # A copy of at most 4 KiB: cheaper than one more syscall per part.
        transport.write(b"".join(parts))
        return
    for part in parts:
        transport.write(part)


def writer_for(transport: asyncio.WriteTransport) -> Callable[[Sequence[Buffer]], None]:
    """What :func:`write_parts` would do on ``transport``, decided once (per connection):
    its own ``writelines`` when vectored, else write_parts itself."""
    if has_vectored_writelines(transport):
        return transport.writelines
    return functools.partial(write_parts, transport)
