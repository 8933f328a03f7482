"""The flags of the control server beside ``lb`` and ``proxy`` (``--metrics``, ``lb --api``),
turned into its listeners and what runs beside the relay (:mod:`netkit.net.control`).

The listeners are made at once, so that the ``listening`` event can say where they are; the
control modules (and prometheus_client with them) are imported only when a flag asks for them.
With ``--workers N`` each worker serves the control routes on a private Unix socket (in a
directory only this user can enter) and the parent serves the public addresses by asking them
all (:mod:`netkit.net.control_workers`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netkit.commands.serving import Companion, together
from netkit.core.addresses import UnixEndpoint, parse_stream_endpoint
from netkit.net.server import make_listener
from netkit.net.sockets import listener_address

RelaysOf = Callable[[], Iterable[tuple[str, Any]]]


@dataclass
class ControlServers:
    """What ``--metrics``/``--api`` add to :func:`~netkit.commands.serving.run_server`.

    Attributes:
        companion: runs beside the relay, in its process (each worker's, with workers).
        supervise: with workers, runs in the parent: the public control server.
    """

    companion: Companion | None
    supervise: Callable[[], contextlib.AbstractContextManager[Any]] | None = None


def control_servers(
    details: dict[str, Any],
    *,
    name: str,
    metrics: str | None,
    api: str | None = None,
    workers: int = 1,
    relays: RelaysOf | None = None,
) -> ControlServers:
    """The control servers ``--metrics`` and ``--api`` ask for, listening now (their addresses
    go into ``details``, the ``listening`` event's fields); nothing when neither is given.

    Args:
        name: the relay's name in the metrics (``lb``, or proxy's ``--name``).
        api: lb's runtime API (the backends' routes, and the metrics' too).
        workers: worker processes (``--workers``).
        relays: the relays the metrics cover, when not just the command's own server (one
            process only: proxy's ``--api``, which refuses ``--workers``).
    """
    public: dict[str, socket.socket] = {}
    for flag, text in (("metrics", metrics), ("api", api)):
        if text is not None:
            public[flag] = make_listener(parse_stream_endpoint(text))
            details[flag] = listener_address(public[flag])
    if not public:
        return ControlServers(None)
    from netkit.net.control import control_companion

    if workers == 1:
        beside = [
            control_companion(sock, name=name, relays=relays, control=flag == "api")
            for flag, sock in public.items()
        ]
        return ControlServers(together(*beside))
    private = Path(tempfile.mkdtemp(prefix="netkit-control-"))  # mode 0700
    paths = [str(private / f"worker{i}.sock") for i in range(workers)]
    socks = [make_listener(UnixEndpoint(path), socket_mode=0o600) for path in paths]
    in_worker = control_companion(
        _own_socket(socks, [*public.values()]), name=name, control=api is not None
    )
    return ControlServers(
        in_worker, lambda: _serve_workers(list(public.values()), socks, paths, private)
    )


def _own_socket(
    socks: list[socket.socket], public: list[socket.socket]
) -> Callable[[], socket.socket]:
    # In a worker: its own private socket; the others' and the public ones are closed.
    def pick() -> socket.socket:
        from netkit.net.workers import worker_index

        index = worker_index()
        assert index is not None, "called in a worker"
        for sock in [*public, *socks]:
            if sock is not socks[index]:
                sock.close()
        return socks[index]

    return pick


@contextlib.contextmanager
def _serve_workers(
    public: list[socket.socket], socks: list[socket.socket], paths: list[str], private: Path
) -> Iterator[None]:
    # In the parent, once the workers run: the public addresses, answered by asking them.
    from netkit.api.background import BackgroundLoop
    from netkit.net.control_workers import WorkersControl
    from netkit.net.http_api import serving_api

    for sock in socks:  # the workers have them now
        sock.close()
    try:
        with BackgroundLoop(name="netkit-control") as loop:
            served = [loop.enter(serving_api(sock, WorkersControl(paths))) for sock in public]
            try:
                yield
            finally:
                for entered in served:
                    entered.exit()
    finally:
        shutil.rmtree(private, ignore_errors=True)
