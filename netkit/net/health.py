"""Active health checks for load-balancer backends.

Every ``interval`` seconds, each backend gets one check: a TCP (or Unix) connect within
``timeout``, optionally followed by a send/expect probe
(:class:`netkit.core.balance.health.CheckProbe`) or an HTTP request whose answer's status is
judged (:class:`netkit.core.balance.checks.HTTPCheck`). A check can start with the PROXY
header the traffic sends (HAProxy's ``check-send-proxy``: the check connection's own
addresses, before any TLS) and speaks TLS to a backend reached over TLS
(:class:`netkit.net.backend_tls.BackendTLS`): a handshake that fails verification fails the
check, and says why. The result goes into the backend's rise/fall
machine (:class:`netkit.core.balance.state.BackendState`); a change of state comes back as a
:class:`netkit.core.balance.health.HealthEvent` for the caller to
print. One asyncio task per backend: backends are few, and a slow one cannot delay the others.

Times given to the core are ``loop.time()``, so the caller should use the same clock for
``BackendPool.choose(now=...)`` (slow start compares the two).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from netkit.core.addresses import TCPEndpoint, UnixEndpoint
from netkit.core.balance.checks import HTTPCheck
from netkit.core.balance.health import CheckProbe, HealthEvent
from netkit.core.balance.state import AdminState, BackendState
from netkit.core.bench.http import ResponseReader
from netkit.core.proxy_protocol import encode as encode_proxy_header
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectionLost,
    LocalError,
    NetkitError,
    PeerProtocolError,
    Setting,
)
from netkit.net.backend_tls import BackendTLS
from netkit.net.connect import connect_raw, translate_connect_error
from netkit.net.protocols import StreamProtocol
from netkit.net.tls_layer import connect_tls

DEFAULT_INTERVAL = 2.0  # HAProxy's ``inter 2s``
CLOSE_WAIT = 1.0  # how long a finished check waits for its socket to close


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one active check.

    Attributes:
        backend: the backend's name (its endpoint).
        ok: the check passed.
        detail: one line: ``connected in 0.2 ms``, ``connection refused by 127.0.0.1:8001``...
        seconds: how long the check took.
        skipped: the check could not run here (out of descriptors or memory): no verdict on
            the backend either way.
        status: the HTTP status an HTTP check got, else None.
    """

    backend: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False
    status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields for a JSON event."""
        return {
            "backend": self.backend,
            "ok": self.ok,
            "detail": self.detail,
            "ms": round(self.seconds * 1000, 3),
            **({"skipped": True} if self.skipped else {}),
            **({"status": self.status} if self.status is not None else {}),
        }


class _ProbeConnection(StreamProtocol):
    """Sends the probe's bytes and resolves ``outcome`` when the reply matches (or cannot)."""

    # Our one small write never comes from the receive buffer; keep reading while it is queued.
    pause_reading_on_backpressure = False

    def __init__(self, probe: CheckProbe, target: str) -> None:
        super().__init__(max_buffer=probe.max_read)
        self.probe = probe
        self.target = target
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_connect(self) -> None:
        if self.probe.send:
            self.write(self.probe.send)
        if not self.probe.reads:
            self.outcome.set_result(
                f"sent {len(self.probe.send)} bytes" if self.probe.send else "connected"
            )

    def _got(self) -> str:
        data = bytes(self.rbuf.view(48))  # a copy of the start, for the message only
        return f"got {data!r}{'...' if len(self.rbuf) > 48 else ''}" if data else "got nothing"

    def data_ready(self) -> None:
        if self.outcome.done():
            self.rbuf.consume(len(self.rbuf))
            return
        view = self.rbuf.view()
        if self.probe.matches(view):
            self.outcome.set_result(f"reply matched {self.probe.describe()}")
        elif len(view) >= self.probe.max_read:
            self.outcome.set_exception(
                CheckFailed(
                    f"no match for {self.probe.describe()} in the first {self.probe.max_read} "
                    f"bytes from {self.target} ({self._got()})"
                )
            )

    def on_eof(self) -> bool | None:
        if not self.outcome.done():
            self.outcome.set_exception(
                ConnectionLost(
                    f"{self.target} closed the connection without a reply matching "
                    f"{self.probe.describe()} ({self._got()})"
                )
            )
        return None

    def on_close(self, exc: Exception | None) -> None:
        if not self.outcome.done():
            self.outcome.set_exception(
                self.error or ConnectionLost(f"connection to {self.target} was reset")
            )

    def no_reply(self, timeout: float) -> str:
        """The message for a reply that did not come in time."""
        return (
            f"no reply matching {self.probe.describe()} from {self.target} within "
            f"{timeout:g}s ({self._got()})"
        )


class _HTTPCheckConnection(_ProbeConnection):
    """Sends an HTTP check's request; ``outcome`` resolves when its answer's status passes."""

    def __init__(self, check: HTTPCheck, target: str, host: str) -> None:
        super().__init__(CheckProbe(max_read=check.max_read), target)
        self.check = check
        self.request = check.request(host)
        self.reader = ResponseReader()
        self.status: int | None = None
        self.received = 0

    def on_connect(self) -> None:
        self.write(self.request)

    def _judge(self) -> None:
        # The first complete answer decides; a longer or broken one fails the check.
        if self.reader.responses:
            self.status = self.reader.responses[0].status
            ok, detail = self.check.verdict(self.status)
            if ok:
                self.outcome.set_result(detail)
            else:
                self.outcome.set_exception(CheckFailed(detail))
        elif self.received >= self.check.max_read:
            self.outcome.set_exception(
                CheckFailed(
                    f"no complete HTTP answer to {self.check.describe()} in the first "
                    f"{self.check.max_read} bytes from {self.target}"
                )
            )

    def _not_http(self, exc: PeerProtocolError) -> CheckFailed:
        return CheckFailed(f"{self.target} gave no HTTP answer to {self.check.describe()}: {exc}")

    def data_ready(self) -> None:
        size = len(self.rbuf)
        if not self.outcome.done():
            self.received += size
            try:
                self.reader.feed(self.rbuf.view())
            except PeerProtocolError as exc:
                self.outcome.set_exception(self._not_http(exc))
            else:
                self._judge()
        self.rbuf.consume(size)

    def on_eof(self) -> bool | None:
        if not self.outcome.done():
            try:
                self.reader.eof()
            except PeerProtocolError as exc:
                self.outcome.set_exception(self._not_http(exc))
                return None
            self._judge()
        if not self.outcome.done():
            self.outcome.set_exception(
                ConnectionLost(
                    f"{self.target} closed the connection without answering {self.check.describe()}"
                )
            )
        return None

    def no_reply(self, timeout: float) -> str:
        return f"no HTTP answer to {self.check.describe()} from {self.target} within {timeout:g}s"


def _address(name: object) -> tuple[str, int] | None:
    # A socket's address as a PROXY header names it: (host, port) for TCP, else None.
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None


async def _open_check(
    endpoint: TCPEndpoint | UnixEndpoint,
    factory: Callable[[], _ProbeConnection],
    *,
    send_proxy: int,
    tls: tuple[ssl.SSLContext, str] | None,
    stage: list[str],
) -> _ProbeConnection:
    """Connect, send the PROXY header (in clear, before any TLS, as the traffic's), then
    the TLS handshake when ``tls``; the protocol is connected on return. ``stage[0]`` says
    what it is doing, for a timeout's message."""
    loop = asyncio.get_running_loop()
    sock = await connect_raw(endpoint, timeout=None)
    stage[0] = "in the TLS handshake with" if tls is not None else "connecting to"
    try:
        if send_proxy:
            try:
                local, peer = sock.getsockname(), sock.getpeername()
            except OSError:
                local = peer = None
            header = encode_proxy_header(send_proxy, _address(local), _address(peer))
            await loop.sock_sendall(sock, header)
        made: asyncio.BaseProtocol
        if tls is not None:
            _, made = await connect_tls(sock, factory, tls[0], server_hostname=tls[1])
        else:
            _, made = await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    assert isinstance(made, _ProbeConnection)
    return made


async def run_check(
    endpoint: TCPEndpoint | UnixEndpoint,
    *,
    timeout: float,
    probe: CheckProbe = CheckProbe(),
    http: HTTPCheck | None = None,
    send_proxy: int = 0,
    tls: tuple[ssl.SSLContext, str] | None = None,
) -> CheckResult:
    """Check one backend once: connect, then the probe, all within ``timeout`` seconds.

    Args:
        probe: the send/expect probe (unused with ``http``).
        http: send this HTTP check's request and judge the answer's status instead.
        send_proxy: start with a PROXY header of this version (1 or 2; 0: none).
        tls: (context, server name) to speak TLS with, or None for plain text.

    Never raises for a failed check: the failure is the result's ``detail``, in the words of
    :func:`netkit.net.connect.translate_connect_error` (``connection refused by 127.0.0.1:8001``,
    ``TLS certificate of 127.0.0.1:8443 not trusted: ...``).
    """
    target = str(endpoint)
    if http is not None:
        host = tls[1] if tls is not None else target
        host = "localhost" if isinstance(endpoint, UnixEndpoint) and tls is None else host
        factory: Callable[[], _ProbeConnection] = lambda: _HTTPCheckConnection(http, target, host)  # noqa: E731
    else:
        factory = lambda: _ProbeConnection(probe, target)  # noqa: E731
    start = time.perf_counter()  # durations: not loop.time(), 1 ms under uvloop
    conn: _ProbeConnection | None = None
    ok = skipped = False
    stage = ["connecting to"]
    try:
        async with asyncio.timeout(timeout):
            conn = await _open_check(endpoint, factory, send_proxy=send_proxy, tls=tls, stage=stage)
            detail = await conn.outcome
        ok = True
    except TimeoutError:
        detail = conn.no_reply(timeout) if conn else f"timed out {stage[0]} {target}"
    except LocalError as exc:
        detail, skipped = str(exc), True  # our limit, not the backend's failure
    except NetkitError as exc:
        detail = str(exc)
    except (OSError, ssl.SSLError) as exc:
        detail = str(translate_connect_error(exc, target))
    finally:
        if conn is not None:
            # A passed check says goodbye politely; a failed one may be stuck: reset it.
            if ok:
                conn.close()
            else:
                conn.abort()
    seconds = time.perf_counter() - start
    if conn is not None:
        await asyncio.wait([conn.closed], timeout=CLOSE_WAIT)
    if ok:
        detail = f"{detail} in {seconds * 1000:.1f} ms"
    status = conn.status if isinstance(conn, _HTTPCheckConnection) else None
    return CheckResult(target, ok, detail, seconds, skipped, status)


OnEvent = Callable[[HealthEvent], None]
OnCheck = Callable[[CheckResult], None]


class HealthChecker:
    """Runs active checks on every backend until stopped.

    Use as ``async with HealthChecker(pool.states, ...) as checker:`` (or ``start()`` /
    ``await stop()``), or run ``await checker.run()`` in a task of your own. The first check of
    each backend runs at once, then one every ``interval`` seconds (a check that overruns is
    not repeated to catch up).

    Args:
        states: the backends to watch (``BackendPool.states``).
        interval: seconds between the starts of two checks of one backend.
        timeout: seconds a check may take, connect and probe together (default: ``interval``,
            as HAProxy uses ``inter`` when no ``timeout check`` is set).
        probe: what to do after connecting (nothing by default).
        http: an HTTP check to run instead of ``probe``.
        send_proxy: start every check with a PROXY header of this version (0: none).
        tls: the TLS for backends reached over TLS (their checks speak it too).
        on_event: called with every state change (up/down), carrying the check's HTTP
            status and duration when a check caused it.
        on_check: called with every check's result.

    Raises:
        ConfigError: a non-positive interval or timeout.
    """

    def __init__(
        self,
        states: Sequence[BackendState],
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float | None = None,
        probe: CheckProbe = CheckProbe(),
        http: HTTPCheck | None = None,
        send_proxy: int = 0,
        tls: BackendTLS | None = None,
        on_event: OnEvent | None = None,
        on_check: OnCheck | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigError((Setting("check_interval"), f" must be positive (got {interval:g}s)"))
        timeout = interval if timeout is None else timeout
        if timeout <= 0:
            raise ConfigError((Setting("check_timeout"), f" must be positive (got {timeout:g}s)"))
        self.states = list(states)
        self.interval = interval
        self.timeout = timeout
        self.probe = probe
        self.http = http
        self.send_proxy = send_proxy
        self.tls = tls
        self.on_event = on_event
        self.on_check = on_check
        self.checks = 0
        self._task: asyncio.Task[None] | None = None
        self._added: set[asyncio.Task[None]] = set()

    async def check(self, state: BackendState) -> HealthEvent | None:
        """Check one backend now and feed the result to its health machine."""
        backend = state.backend
        result = await run_check(
            backend.endpoint,
            timeout=self.timeout,
            probe=self.probe,
            http=self.http,
            send_proxy=self.send_proxy,
            tls=self.tls.handshake(backend) if self.tls is not None else None,
        )
        now = asyncio.get_running_loop().time()
        self.checks += 1
        state.check_ms, state.check_status = round(result.seconds * 1000, 3), result.status
        state.check_ended(result.ok)
        event: HealthEvent | None
        if result.skipped:
            state.check_skipped(result.detail)
            event = None
        elif result.ok:
            event = state.check_passed(now, result.detail)
        else:
            event = state.check_failed(result.detail, now)
        if event is not None:
            event = replace(event, check_ms=state.check_ms, status=result.status)
        if self.on_check is not None:
            self.on_check(result)
        if event is not None and self.on_event is not None:
            self.on_event(event)
        return event

    async def check_all(self) -> list[HealthEvent]:
        """Check every backend once, concurrently; returns the state changes."""
        events = await asyncio.gather(*(self.check(s) for s in self.states))
        return [e for e in events if e is not None]

    async def _watch(self, state: BackendState) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not state.removed:  # a backend in maintenance is not checked (HAProxy's maint)
            if state.admin is not AdminState.MAINT:
                await self.check(state)
            now = loop.time()
            due = max(due + self.interval, now)
            await asyncio.sleep(due - now)

    async def run(self) -> None:
        """Check every backend forever (until cancelled).

        Raises:
            Whatever a callback raised: the other checks stop too.
        """
        tasks = [asyncio.create_task(self._watch(s), name=f"check {s.name}") for s in self.states]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def add(self, state: BackendState) -> None:
        """Check ``state`` too from now on (a backend added while running); a removed
        backend's checks end by themselves."""
        self.states.append(state)
        if self._task is not None:
            task = asyncio.create_task(self._watch(state), name=f"check {state.name}")
            self._added.add(task)
            task.add_done_callback(self._added.discard)

    def start(self) -> None:
        """Start checking in the background (call from inside the event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="health checks")

    async def stop(self) -> None:
        """Stop every check and wait until their sockets are closed.

        Raises:
            Whatever a callback raised while the checks ran.
        """
        task, self._task = self._task, None
        if task is None:
            return
        for added in list(self._added):
            added.cancel()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves

    async def __aenter__(self) -> HealthChecker:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
