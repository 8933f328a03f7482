"""Upstream addresses resolved once, for the relay's connection path (``lb``, ``proxy``).

A relay that asked the resolver for every client spent a thread-pool round trip per
connection (uvloop resolves on worker threads, a literal IP included). An
:class:`AddressBook` keeps each upstream endpoint's addresses: an IP literal or a Unix path
is known at once and never resolved; a name is resolved on first use and again by
:meth:`AddressBook.refresh` (at start, at each health-check round, on a reload), and
forgotten when every one of its addresses failed, so the next client resolves it anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.net.connect import Address, literal_addresses, resolve

Endpoint = TCPEndpoint | UnixEndpoint


class AddressBook:
    """Each endpoint's addresses, resolved at most once per :meth:`refresh`.

    Attributes:
        resolutions: how many times the resolver was asked (names only).
    """

    def __init__(self) -> None:
        self._known: dict[Endpoint, list[Address]] = {}
        self.resolutions = 0

    def cached(self, endpoint: Endpoint) -> list[Address] | None:
        """``endpoint``'s addresses without asking the resolver, or None when not known yet."""
        found = self._known.get(endpoint)
        if found is None and (found := literal_addresses(endpoint)) is not None:
            self._known[endpoint] = found
        return found

    async def lookup(self, endpoint: Endpoint) -> list[Address]:
        """``endpoint``'s addresses: known ones, or resolved now (and kept).

        Raises:
            socket.gaierror: the name does not resolve.
        """
        found = self.cached(endpoint)
        if found is None:
            found = await self._resolve(endpoint)
        return found

    async def _resolve(self, endpoint: Endpoint) -> list[Address]:
        self.resolutions += 1
        found = await resolve(endpoint)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{endpoint} has no address")
        self._known[endpoint] = found
        return found

    def forget(self, endpoint: Endpoint) -> None:
        """Every address of ``endpoint`` failed: a name is resolved again next time."""
        if literal_addresses(endpoint) is None:
            self._known.pop(endpoint, None)

    async def refresh(self, endpoints: list[Endpoint] | None = None) -> None:
        """Resolve the names among ``endpoints`` (default: every name known) again.

        A name that fails to resolve now keeps the addresses it had (the resolver may be
        briefly away); one never resolved stays unknown, and its next client asks.
        """
        todo = list(self._known) if endpoints is None else endpoints
        names = [ep for ep in todo if literal_addresses(ep) is None]
        for endpoint in names:
            with contextlib.suppress(OSError):
                await self._resolve(endpoint)


async def refresh_every(
    book: AddressBook, endpoints: Callable[[], list[Endpoint]], interval: float
) -> None:
    """Refresh ``book``'s names among ``endpoints()`` (asked anew each round: a reload may
    change them) now and every ``interval`` seconds, until cancelled."""
    while True:
        await book.refresh(endpoints())
        await asyncio.sleep(interval)
