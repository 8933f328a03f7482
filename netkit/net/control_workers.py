"""The control server of ``--workers N``: the parent answers ``--metrics`` and ``--api`` for
every worker process.

Each worker serves the control routes (:class:`~netkit.net.control.ControlApi`) on a private
Unix socket of its own; the parent, which has no relay, serves the public address with
:class:`WorkersControl`, which asks every worker over those sockets: ``/stats`` and
``/metrics`` are their snapshots merged (:func:`netkit.core.metrics.merge_stats`: counters
added up), ``GET /backends`` their rows merged, and every change (``POST``, ``PATCH``,
``DELETE``) is made in every worker, in turn, and answered with the first worker's answer (a
worker that answers otherwise makes it a 500 saying so). Each worker reports its own events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import httptools

from netkit.core.http_api import ApiError, Request, Response
from netkit.core.metrics import merge_server_rows, merge_stats
from netkit.net.metrics import prometheus_response

WORKER_TIMEOUT = 5.0
"""Seconds a worker has to answer the parent."""
MAX_ANSWER = 64 << 20
"""The largest answer read from a worker."""


class _Answer:
    # httptools' callbacks, collecting one response.
    def __init__(self) -> None:
        self.body = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


async def ask_worker(path: str, request: Request, *, timeout: float = WORKER_TIMEOUT) -> Response:
    """``request`` sent to the worker whose control socket is at ``path``; its response.

    Raises:
        ApiError: 502, the worker did not answer (in time, or at all).
    """
    target = request.path + (f"?{request.query}" if request.query else "")
    head = (
        f"{request.method} {target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(request.body)}\r\n\r\n"
    )
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(head.encode("latin-1") + request.body)
                got = 0
                while not answer.complete and (data := await reader.read(65536)):
                    got += len(data)
                    if got > MAX_ANSWER:
                        raise ApiError(f"a worker's answer is over {MAX_ANSWER} bytes", 502)
                    parser.feed_data(data)
            finally:
                writer.close()
    except (OSError, TimeoutError, httptools.HttpParserError) as exc:
        raise ApiError(f"a worker did not answer: {exc or type(exc).__name__}", 502) from None
    if not answer.complete:
        raise ApiError("a worker closed the connection before answering", 502)
    kept = tuple((k, v) for k, v in answer.headers if k.lower() == "content-type")
    return Response(parser.get_status_code(), bytes(answer.body), kept)


def _json(response: Response) -> Any:
    return json.loads(response.body) if response.body else None


class WorkersControl:
    """Answers the control routes in the parent by asking every worker (see the module).

    Args:
        workers: each worker's control socket path, by worker index.
    """

    def __init__(self, workers: Sequence[str]) -> None:
        self.workers = list(workers)

    async def __call__(self, request: Request) -> Response:
        """The response to ``request``, from every worker's."""
        if request.method == "GET":
            return await self._read(request)
        answers = [await ask_worker(path, request) for path in self.workers]  # in turn
        first = answers[0]
        differing = [i for i, a in enumerate(answers) if a.status != first.status]
        if differing:
            raise ApiError(
                f"the workers answered differently: worker 0 {first.status}, "
                + ", ".join(f"worker {i} {answers[i].status}" for i in differing),
                500,
            )
        return first

    async def _read(self, request: Request) -> Response:
        # /metrics is made here from the workers' snapshots, not from their texts.
        asked = Request("GET", "/stats") if request.path == "/metrics" else request
        answers = await asyncio.gather(*(ask_worker(path, asked) for path in self.workers))
        failed = [a for a in answers if a.status != 200]
        if failed:
            return failed[0]
        bodies = [_json(a) for a in answers]
        if request.path in ("/stats", "/metrics"):
            merged = merge_stats(bodies)
            if request.path == "/metrics":
                return prometheus_response(merged)
            return Response.json(merged)
        if request.path == "/backends":
            rows: dict[str, list[dict[str, Any]]] = {}
            for body in bodies:
                for row in body["backends"]:
                    rows.setdefault(row["backend"], []).append(row)
            return Response.json({"backends": [merge_server_rows(r) for r in rows.values()]})
        if request.path.startswith("/backends/"):
            return Response.json(merge_server_rows(bodies))
        return answers[0]
