"""``netkit bench`` driver for HTTP/1.1 (``http://``, ``https://``, ``http+unix://``):
:class:`HTTPRequests` sends the same request on a keep-alive connection, pipelined up to
``--pipeline``, and judges each response as httptools parses it
(:class:`~netkit.core.bench.http.ResponseReader`)."""

from __future__ import annotations

from itertools import repeat

from netkit.core.addresses import HTTPURL
from netkit.core.bench.http import HTTPLoad
from netkit.errors import PeerProtocolError
from netkit.net.bench.engine import RequestEngine, Run, Slot, report_close
from netkit.net.protocols import StreamProtocol

# Largest batch of pipelined requests kept as one buffer.
_MAX_BATCH_BYTES = 1 << 20


class HTTPRequestBytes:
    """One run's request, serialized once, and a batch of it for pipelined sends."""

    def __init__(self, load: HTTPLoad, url: HTTPURL, pipeline: int) -> None:
        self.load = load
        self.data = load.request_for(url).serialize()
        self.view = memoryview(self.data)
        reps = max(1, min(pipeline, _MAX_BATCH_BYTES // max(1, len(self.data))))
        self.batch = memoryview(self.data * reps)
        self.accepted = load.status.codes()


class HTTPRequests(RequestEngine, StreamProtocol):
    """HTTP/1.1 requests on one keep-alive connection; each response is checked in order.

    A response that says ``Connection: close`` (or is HTTP/1.0 without keep-alive) ends the
    connection: requests pipelined after it are errors, and the slot connects again.
    """

    pause_reading_on_backpressure = False  # we write the constant request, never rbuf views

    def __init__(self, run: Run, slot: Slot, request: HTTPRequestBytes) -> None:
        StreamProtocol.__init__(self)
        self.init_engine(run, slot)
        self.request = request
        self.load = request.load
        self.reader = self.load.reader()
        self._accepted = request.accepted
        self._server_closes = False  # a response said Connection: close

    def on_connect(self) -> None:
        self.start_requests()

    def transmit(self, n: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # failed: on_close accounts for these requests
        r = self.request
        nbytes = n * len(r.data)
        if n == 1:
            self.write(r.data)  # bytes: uvloop sends them without exporting a buffer
        elif nbytes <= len(r.batch):
            self.write(r.batch[:nbytes])
        else:
            self.write(*repeat(r.view, n))
        if self.run.recording:
            self.run.result.bytes_sent += nbytes

    def data_ready(self) -> None:
        view = self.rbuf.view()
        n = len(view)
        try:
            if self._server_closes:
                raise PeerProtocolError(f"{self.peer} sent data after Connection: close")
            self.reader.feed(view)
        finally:
            del view
            self.rbuf.consume(n)
        if self.run.recording:
            self.run.result.bytes_received += n
        self._judge()

    def _judge(self) -> None:
        """Count the responses parsed so far, oldest first."""
        responses = self.reader.responses
        run = self.run
        check = self.load.status
        accepted = self._accepted
        # Answers drained after the end of the run count (their requests were sent in it);
        # after the end was settled, their requests were counted unanswered.
        counted = run.recording and not run.settled
        good = 0
        while responses:
            if good + 1 > self.in_flight:
                responses.clear()
                raise PeerProtocolError(f"{self.peer} sent a response to no request")
            r = responses.popleft()
            if counted:
                run.result.statuses[r.status] += 1
            if not r.keep_alive:
                self.active = False  # nothing more is sent on this connection
                self._server_closes = True
            if r.status in accepted and r.body_ok:
                good += 1
            else:
                if good:
                    self.completed(good)
                    good = 0
                if not counted:
                    pass
                elif r.status not in accepted:
                    run.error(
                        f"{self.peer} answered {r.status} (expected {check.text})",
                        "status",
                        late=True,
                    )
                else:
                    run.error(
                        f"a response body from {self.peer} failed the check", "mismatch", late=True
                    )
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
        report_close(self.run, cause)
        self.lose_in_flight(cause)

    def finish(self) -> None:
        """Close at the end of the run."""
        self.stop_timer()
        self.close()
