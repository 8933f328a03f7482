"""netkit's pytest plugin: real servers and a fault proxy as fixtures, for any test suite.

It is registered through the ``pytest11`` entry point, so it is active wherever netkit is
installed (``-p no:netkit`` turns it off). Importing it costs nothing: netkit's servers and
event loop are imported only when a test asks for one of these fixtures.

* ``netkit_echo_server``: an echo server on a free loopback port (:func:`netkit.echo_server`):
  every byte sent comes back; ``netkit_echo_server.address`` (``.host``, ``.port``).
* ``netkit_ws_server``: a WebSocket echo server (:func:`netkit.ws_server`): connect to
  ``netkit_ws_server.url``.
* ``netkit_proxy``: a factory; ``proxy = netkit_proxy(upstream)`` starts a proxy in front of
  any address (``HOST:PORT``, ``unix:/path``, ``(host, port)``, or another fixture's server)
  and returns a :class:`~netkit.api.background.SyncProxy`: connect to ``proxy.address``, and
  change its faults while the test runs (``proxy.add(Latency(100))``, ``proxy.clear()``,
  ``proxy.cut()`` / ``proxy.restore()``). Keyword arguments are :func:`netkit.proxy`'s.
* ``netkit_background_loop`` (session): the event loop, in a background thread, that the
  servers run on; its handles' methods return once a change is in effect.

The two servers take :func:`netkit.echo_server`'s and :func:`netkit.ws_server`'s options
through indirect parametrization: ``@pytest.mark.parametrize("netkit_echo_server",
[{"framed": True}], indirect=True)``.

Every server a fixture starts is stopped when its test ends, passed or failed; connections
still open are closed. The handles are synchronous, so they work in synchronous tests and,
without blocking anything but the caller for a moment, in async ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from netkit.api.background import BackgroundLoop, Entered, SyncProxy
    from netkit.api.proxy import Target
    from netkit.api.servers import EchoServer
    from netkit.api.websocket import WebSocketServer


@pytest.fixture(scope="session")
def netkit_background_loop() -> Iterator[BackgroundLoop]:
    """The event loop (in a daemon thread) that netkit's fixtures run their servers on."""
    from netkit.api.background import BackgroundLoop

    with BackgroundLoop(name="netkit-pytest") as loop:
        yield loop


def _exit_all(entered: list[Entered[Any]]) -> None:
    # Stop every server, the last started first; the first failure is raised after all ran.
    first: BaseException | None = None
    for held in reversed(entered):
        try:
            held.exit()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


def _serve(
    loop: BackgroundLoop, request: pytest.FixtureRequest, start: Callable[..., Any]
) -> Iterator[Any]:
    # One server for the test, on the background loop, with the test's indirect options.
    options = dict(getattr(request, "param", None) or {})
    options.setdefault("drain_timeout", 0.0)  # a test's leftover connections are just closed
    held = loop.enter(start(**options))
    try:
        yield held.value
    finally:
        held.exit()


@pytest.fixture
def netkit_echo_server(
    netkit_background_loop: BackgroundLoop, request: pytest.FixtureRequest
) -> Iterator[EchoServer]:
    """A running echo server on a free loopback port (:func:`netkit.echo_server`).

    Connect to ``netkit_echo_server.address`` (or ``.host`` and ``.port``); every byte comes
    back. Options through indirect parametrization (``{"framed": True}``, ``{"tls": True}``).
    """
    from netkit.api.servers import echo_server

    yield from _serve(netkit_background_loop, request, echo_server)


@pytest.fixture
def netkit_ws_server(
    netkit_background_loop: BackgroundLoop, request: pytest.FixtureRequest
) -> Iterator[WebSocketServer]:
    """A running WebSocket server on a free loopback port (:func:`netkit.ws_server`), echoing
    every message by default: connect to ``netkit_ws_server.url``. Options through indirect
    parametrization (``{"mode": "broadcast"}``, ``{"subprotocols": ["chat"]}``)."""
    from netkit.api.websocket import ws_server

    yield from _serve(netkit_background_loop, request, ws_server)


@pytest.fixture
def netkit_proxy(netkit_background_loop: BackgroundLoop) -> Iterator[Callable[..., SyncProxy]]:
    """A factory of fault proxies: ``proxy = netkit_proxy(upstream, **options)``.

    ``upstream`` is any address :func:`netkit.proxy` takes (or a server fixture); the options
    are :func:`netkit.proxy`'s (``faults=[Latency(50)]``, ``listen=``, ``tls=`` ...). The
    proxy listens on a free loopback port: connect to ``proxy.address`` (or ``proxy.host``,
    ``proxy.port``). Every proxy made is stopped when the test ends.
    """
    from netkit.api.background import SyncProxy
    from netkit.api.proxy import proxy

    started: list[Entered[Any]] = []

    def start(upstream: Target, **options: Any) -> SyncProxy:
        options.setdefault("drain_timeout", 0.0)
        held = netkit_background_loop.enter(proxy(upstream, **options))
        started.append(held)
        return SyncProxy(netkit_background_loop, held.value)

    try:
        yield start
    finally:
        _exit_all(started)
