"""``netkit bench`` driver for HTTP/1.1 (``http://``, ``https://``, ``http+unix://``):
:class:`HTTPRequests` sends the same request on a keep-alive connection, pipelined up to
``--pipeline``, and judges each response as httptools parses it
(:class:`~netkit.core.bench.http.ResponseReader`)."""

from __future__ import annotations

from itertools import repeat

from netkit.core.addresses import HTTPURL
from netkit.core.bench.http import HTTPLoad
from netkit.errors import NetkitError, PeerProtocolError
from netkit.net.bench.engine import RequestEngine, Run, Slot
from netkit.net.protocols import StreamProtocol

# Largest batch of pipelined requests kept as one buffer.
_MAX_BATCH_BYTES = 1 << 20
# What one read may take: the parser consumes every byte at once (it copies what it keeps:
# a header line cut by the read's end, a body for the check), so every connection of a run
# reads into the same buffer.
_READ_SIZE = 256 * 1024


class HTTPRequestBytes:
    """One run's request, serialized once, a batch of it for pipelined sends, and the buffer
    every connection of the run reads into."""

    def __init__(self, load: HTTPLoad, url: HTTPURL, pipeline: int) -> None:
        self.load = load
        self.data = load.request_for(url).serialize()
        self.size = len(self.data)
        self.view = memoryview(self.data)
        reps = max(1, min(pipeline, _MAX_BATCH_BYTES // max(1, len(self.data))))
        self.batch = memoryview(self.data * reps)
        self.accepted = load.status.codes()
        # The run's read buffer (one event loop: a read is parsed before the next one).
        self.scratch = memoryview(bytearray(_READ_SIZE))


class HTTPRequests(RequestEngine, StreamProtocol):
    """HTTP/1.1 requests on one keep-alive connection; each response is checked in order.

    A response that says ``Connection: close`` (or is HTTP/1.0 without keep-alive) ends the
    connection: requests pipelined after it are errors, and the slot connects again.
    """

    pause_reading_on_backpressure = False  # we write the constant request, never what we read

    def __init__(self, run: Run, slot: Slot, request: HTTPRequestBytes) -> None:
        StreamProtocol.__init__(self)
        self.init_engine(run, slot)
        self.request = request
        self.load = request.load
        self.reader = self.load.reader()
        self._accepted = request.accepted
        self._scratch = request.scratch
        self._server_closes = False  # a response said Connection: close

    def on_connect(self) -> None:
        self.start_requests()

    def transmit(self, n: int) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # failed: on_close accounts for these requests
        r = self.request
        nbytes = n * r.size
        if n == 1:  # once per request: StreamProtocol.write, inline
            self.bytes_out += nbytes
            self._write(r.data)  # bytes: uvloop sends them without exporting a buffer
        elif nbytes <= len(r.batch):
            self.write(r.batch[:nbytes])
        else:
            self.write(*repeat(r.view, n))
        if self.run.recording:
            self.run.result.bytes_sent += nbytes

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        # Once per response: the reader parses the whole read, so nothing stays in a
        # receive buffer (StreamProtocol's rbuf is not used).
        if self.error is not None:
            return
        self.bytes_in += nbytes
        try:
            if self._server_closes:
                raise PeerProtocolError(f"{self.peer} sent data after Connection: close")
            self.reader.feed(self._scratch[:nbytes])
            if self.run.recording:
                self.run.result.bytes_received += nbytes
            self._judge()
        except NetkitError as exc:
            self.fail(exc)

    def _judge(self) -> None:
        """Count the responses parsed so far, oldest first."""
        responses = self.reader.responses
        if not responses:
            return
        run = self.run
        statuses = run.result.statuses
        accepted = self._accepted
        # Answers drained after the end of the run count (their requests were sent in it);
        # after the end was settled, their requests were counted unanswered.
        counted = run.recording and not run.settled
        good = 0
        while responses:
            if good >= self.in_flight:
                responses.clear()
                raise PeerProtocolError(f"{self.peer} sent a response to no request")
            status, keep_alive, body_ok = responses.popleft()
            if counted:
                statuses[status] += 1
            if not keep_alive:
                self.active = False  # nothing more is sent on this connection
                self._server_closes = True
            if body_ok and status in accepted:
                good += 1
            else:
                if good:
                    self.completed(good)
                    good = 0
                if counted:
                    self._count_rejected(status)
                self.rejected(1)
            if self._server_closes:
                break
        if good:
            self.completed(good)
        if self._server_closes:
            if self.in_flight:  # pipelined after the close: never to be answered
                run.error(
                    f"{self.peer} closed the connection with requests pipelined",
                    "closed",
                    self.in_flight,
                )
                self.lose_in_flight()
            self.close()

    def _count_rejected(self, status: int) -> None:
        """Count the error a response that failed its checks is."""
        if status not in self._accepted:
            text = self.load.status.text
            self.run.error(f"{self.peer} answered {status} (expected {text})", "status", late=True)
        else:
            self.run.error(
                f"a response body from {self.peer} failed the check", "mismatch", late=True
            )

    def on_close(self, exc: Exception | None) -> None:
        if self.error is None and exc is None and not self._server_closes:
            try:
                if self.reader.eof():  # a body that ran to the end of the connection
                    self._server_closes = True
                    self._judge()
            except PeerProtocolError as err:
                self.error = err
        if self._server_closes and self.error is None:
            return  # the close the server announced; what it left unanswered is counted
        if self.error is not None or exc is not None:
            cause: BaseException | tuple[str, str] = self.error or exc  # type: ignore[assignment]
        elif self.in_flight:
            cause = (f"{self.peer} closed the connection", "closed")
        else:
            # Closed with nothing asked: an idle keep-alive connection may be closed
            # (RFC 9112 9.3); the slot connects again.
            self.lose_in_flight()
            return
        self.report_close(cause)
        self.lose_in_flight(cause)

    def finish(self) -> None:
        """Close at the end of the run."""
        self.stop_timer()
        self.close()
