"""``ws-server --exec``: each client served by its own process, as websocketd does.

:class:`ProgramConnection` starts the program (``/bin/sh -c COMMAND``, in a session of its
own so that the whole pipeline can be signalled) once the upgrade is accepted, with the
environment :func:`~netkit.core.ws.program.program_environment` builds. Messages go to its
stdin (a line each, or raw with :attr:`~netkit.core.ws.program.Framing.BINARY`), its stdout
comes back as messages, its stderr is logged (``stderr`` events), never sent.

When the process ends, the connection closes with 1000 (exit status 0) or 1011 and the
status in the reason. When the client goes first, the process's stdin is closed and its
process group gets SIGTERM, then SIGKILL after ``kill_after`` seconds. The connection stays
counted by the server (``--max-connections``, the drain) until its process is reaped, so the
cap is a cap on processes too.

Flow control both ways, each direction on its own: while stdin's pipe is full (what it did
not take waits in :class:`~netkit.net.pipes.ChildPipes`) the client is not read; while the
client's socket cannot take more, stdout is not read. Neither blocks the other, so a client
that writes without reading its answers cannot wedge the connection (websocketd 0.4.1 stalls
there: benchmarks/README.md, issue 17).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Callable
from typing import Any, cast

import netkit
from netkit.core.ws.events import (
    Accepted,
    HandshakeResponse,
    HealthCheck,
    Message,
    Rejected,
    Request,
)
from netkit.core.ws.frames import CloseCode
from netkit.core.ws.program import (
    Framing,
    LineSplitter,
    Program,
    exit_close,
    exit_description,
    program_environment,
)
from netkit.core.ws.protocol import State
from netkit.core.ws.server import ServerHandshake
from netkit.errors import PeerProtocolError
from netkit.net.pipes import ChildPipes
from netkit.net.server import ServerConnection
from netkit.net.ws import WSTimeouts
from netkit.net.ws_server import Mode, ModeConnection, Room

__all__ = ["ProgramConnection"]

_OPEN = State.OPEN


class _ProgramExit(asyncio.SubprocessProtocol):
    """Tells its :class:`ProgramConnection` when the process exits (the pipes are
    :class:`~netkit.net.pipes.ChildPipes`, not the loop's)."""

    def __init__(self, conn: ProgramConnection) -> None:
        self.conn = conn
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def process_exited(self) -> None:
        self.conn.process_exited()


class ProgramConnection(ModeConnection):
    """A WebSocket connection served by a process of its own (``ws-server --exec``).

    Its events, besides ModeConnection's ``open``, ``close`` and ``message``: ``exec`` (the
    process started: ``pid``), ``stderr`` (a line it wrote there), ``signal`` (TERM or KILL
    sent to it), ``exit`` (it ended: ``status``, the ``reason``, ``client_gone`` when it was
    told to go because the client went, and ``stdin_dropped``, the bytes of messages that came
    after its stdin closed) and ``exec_failed``.

    Args:
        program: what to run and how messages meet its streams.
        log: receives (event, fields); None to log nothing.
        log_messages: also log every message, ping and pong.
        secure: the server speaks TLS (``HTTPS=on`` in the environment).
    """

    # Writes come from the process, not from the receive buffer: a full socket stops
    # stdout being read (pause_writing below), not the client being read.
    pause_reading_on_backpressure = False

    def __init__(
        self,
        handshake: ServerHandshake,
        *,
        program: Program,
        log: Callable[[str, dict[str, Any]], None] | None,
        log_messages: bool = False,
        max_size: int | None = 1 << 20,
        timeouts: WSTimeouts = WSTimeouts(),
        secure: bool = False,
        message_logger: Callable[[str], Callable[..., None]] | None = None,
    ) -> None:
        super().__init__(
            handshake,
            mode=Mode.SINK,  # on_message below replaces the mode's handling
            room=Room(),
            log=log,
            log_messages=log_messages,
            max_size=max_size,
            timeouts=timeouts,
            message_logger=message_logger,
        )
        self.program = program
        self.secure = secure
        self.pid: int | None = None
        self._line_end = program.framing.line_end
        self._stdout = LineSplitter(program.max_line) if program.framing is Framing.LINES else None
        self._stderr = LineSplitter(program.max_line)
        self._pending = bytearray()  # for stdin, written once per read from the socket
        self._pipes: ChildPipes | None = None
        self._process: asyncio.SubprocessTransport | None = None
        self._spawning: asyncio.Task[None] | None = None
        self._started = False  # the process was asked for (it may still be starting)
        self._exited = False  # the process exited (its output may still be coming)
        self._ended = False  # exited, output read, reaped (or never started)
        self._terminating = False
        self._holds = 0  # reasons not to read the socket: starting, stdin full
        self._kill_timer: asyncio.TimerHandle | None = None
        self._lost: tuple[Exception | None] | None = None  # connection_lost, not yet reported
        self._request: Request | None = None

    @property
    def stdin_dropped(self) -> int:
        """Bytes of messages not written to stdin because it had closed."""
        return self._pipes.dropped if self._pipes is not None else 0

    # --- starting ---------------------------------------------------------------------

    def on_handshake(self, event: Accepted | HealthCheck | Rejected | HandshakeResponse) -> None:
        if isinstance(event, Accepted):
            self._request = event.request
        super().on_handshake(event)

    def on_open(self) -> None:
        super().on_open()
        self._started = True
        self.hold_input(True)  # messages wait in the socket until stdin exists
        self._spawning = self._loop.create_task(self._spawn())

    def _environment(self) -> dict[str, str]:
        assert self._request is not None
        peername = self.transport.get_extra_info("peername") if self.transport else None
        return program_environment(
            self._request,
            remote=peername[:2] if isinstance(peername, tuple) else None,
            secure=self.secure,
            unique_id=secrets.token_hex(16),
            server_software=f"netkit/{netkit.__version__}",
            parent=os.environ,
        )

    async def _spawn(self) -> None:
        exit_watch = _ProgramExit(self)
        try:
            pipes = ChildPipes(
                on_stdout=self.stdout_received,
                on_stderr=self.stderr_received,
                on_stdin_full=self.hold_input,
            )
        except OSError as exc:
            self._not_started(exc)
            return
        assert pipes.child_ends is not None
        stdin, stdout, stderr = pipes.child_ends
        try:
            await self._loop.subprocess_exec(
                lambda: exit_watch,
                *self.program.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=self._environment(),
                start_new_session=True,  # its own process group: signals reach a pipeline
            )
        except OSError as exc:
            pipes.close()
            self._not_started(exc)
            return
        finally:
            self._spawning = None
        assert exit_watch.transport is not None
        self._pipes, self._process = pipes, exit_watch.transport
        pipes.started()
        self.pid = exit_watch.transport.get_pid()
        self._emit("exec", pid=self.pid, command=self.program.command)
        if self._terminating:  # the client went while the process started
            self._terminating = False
            self.terminate()
            return
        self._write_stdin()
        self.hold_input(False)

    def _not_started(self, exc: OSError) -> None:
        self._emit("exec_failed", error=f"{self.program.argv[0]}: {exc.strerror or exc}")
        self.start_close(CloseCode.INTERNAL_ERROR, "cannot start the program")
        self._reaped()

    # --- client -> stdin --------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        if self._log_message is not None:
            self._log_message("text" if message.text else "binary", len(message.data))
        pending = self._pending
        pending += message.data  # a copy: the message is a view of the receive buffer
        pending += self._line_end

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        if self._pending and self._pipes is not None:
            self._write_stdin()

    def _write_stdin(self) -> None:
        if self._pending and self._pipes is not None:
            data, self._pending = self._pending, bytearray()
            self._pipes.write(data)

    def hold_input(self, hold: bool) -> None:
        """Stop (True) or resume (False) reading the client, for one more or one fewer reason
        (the process starting, its stdin full)."""
        self._holds += 1 if hold else -1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if hold and self._holds == 1:
            transport.pause_reading()
        elif not hold and self._holds == 0:
            transport.resume_reading()

    # --- stdout -> client, stderr -> log ----------------------------------------------

    def stdout_received(self, data: bytes) -> None:
        """A chunk of the process's stdout (b"" at its end): its lines (or the chunk) as
        messages."""
        ws = self.ws
        if not data:
            rest = self._stdout.end() if self._stdout is not None else None
            if rest is not None and ws.state is _OPEN and ws.close_sent is None:
                self._send_lines([rest], rest.isascii())
                self.flush()
            self._maybe_ended()
            return
        if ws.state is not _OPEN or ws.close_sent is not None:
            return  # the client is going: nowhere to send it
        splitter = self._stdout
        if splitter is None:
            ws.send_binary(data)
            self.messages_out += 1
        else:
            self._send_lines(splitter.feed(data), data.isascii())
        self.flush()

    def _send_lines(self, lines: list[bytes], ascii_only: bool) -> None:
        ws = self.ws
        if ascii_only:  # the common case, checked once per chunk
            for line in lines:
                ws.send_text(line)
        else:
            for line in lines:
                # A line that is not UTF-8 cannot be a text message (RFC 6455 8.1): binary.
                try:
                    line.decode()
                except UnicodeDecodeError:
                    ws.send_binary(line)
                else:
                    ws.send_text(line)
        self.messages_out += len(lines)

    def stderr_received(self, data: bytes) -> None:
        """A chunk of the process's stderr (b"" at its end): one ``stderr`` event per line."""
        lines = self._stderr.feed(data)
        if not data and (rest := self._stderr.end()) is not None:
            lines.append(rest)
        for line in lines:
            self._emit("stderr", pid=self.pid, line=line.decode(errors="replace"))
        if not data:
            self._maybe_ended()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._pipes is not None:
            self._pipes.pause_stdout()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._pipes is not None:
            self._pipes.resume_stdout()

    # --- ending -----------------------------------------------------------------------

    def process_exited(self) -> None:
        """The process exited; it has ended once its stdout and stderr are read too."""
        self._exited = True
        self._maybe_ended()

    def _maybe_ended(self) -> None:
        # The process exited and every byte of its output was read, in either order.
        pipes, process = self._pipes, self._process
        if not self._exited or self._ended or pipes is None or pipes.output_open:
            return
        assert process is not None
        status = process.get_returncode()
        assert status is not None
        self._emit(
            "exit",
            pid=self.pid,
            status=status,
            reason=exit_description(status),
            client_gone=self._terminating,  # it was told to go (TERM), not ended on its own
            stdin_dropped=pipes.dropped,
        )
        pipes.close()
        process.close()
        if self.ws.state is _OPEN:
            self.start_close(*exit_close(status))
        self._reaped()

    def _reaped(self) -> None:
        self._ended = True
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if self._lost is not None:  # the client went first: the server counts it out now
            ServerConnection.on_close(self, self._lost[0])

    def terminate(self) -> None:
        """The client went: close the process's stdin, TERM its process group, and KILL it
        after ``kill_after`` seconds if it is still there."""
        if self._ended or self._terminating:
            return
        self._terminating = True
        if self._pipes is None:
            return  # still starting: _spawn terminates it once it exists
        self._pipes.close_stdin()
        self._signal(signal.SIGTERM)
        self._kill_timer = self._loop.call_later(self.program.kill_after, self._kill)

    def _kill(self) -> None:
        self._kill_timer = None
        if not self._ended and self.pid is not None:
            self._signal(signal.SIGKILL)

    def abort(self) -> None:
        """Drop the connection; at the end of the server's drain (it is being cut, and the
        server exits next) its process is killed at once: the drain was its grace period,
        and a process that ignores SIGTERM must not outlive the server."""
        super().abort()
        if getattr(self, "server", None) is not None and self.server.draining:
            self.terminate()
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self._kill()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.pid is not None
        self._emit("signal", pid=self.pid, signal=sig.name)
        # The group is the process's own (start_new_session); it exists until its last
        # member is reaped, so the number cannot name another group meanwhile.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def on_closed(self, code: int, reason: str, error: PeerProtocolError | None) -> None:
        super().on_closed(code, reason, error)
        self.terminate()

    def on_close(self, exc: Exception | None) -> None:
        self.terminate()
        self._pending.clear()
        if self._started and not self._ended:
            self._lost = (exc,)  # counted out once the process is reaped (_reaped)
            return
        super().on_close(exc)
