"""A small JSON-over-HTTP/1.1 API, sans I/O: requests, responses and routes as data.

The connection that parses the bytes (with httptools) lives in :mod:`netkit.net.http_api`; this
module holds what an API answers with: a :class:`Request` (method, path, query, headers, body),
a :class:`Response` that serializes itself (``Content-Length`` always, JSON bodies), the
:class:`ApiError` every handler raises to answer with an error status, and :class:`Routes`, a
table of path patterns (``/proxies/{proxy}/toxics/{toxic}``) matched to handlers by method.
A path that matches no route answers 404; a route without the method answers 405.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

from netkit.core.ws.http import http_response
from netkit.errors import UsageError

Handler = TypeVar("Handler")


class ApiError(UsageError):
    """An answer with an error status; its body is ``{"error": message, "status": status}``.

    That is toxiproxy's error shape (its clients read ``error``); every API here uses it.

    Attributes:
        status: the HTTP status code.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> Response:
        """The response that reports this error."""
        return Response.json({"error": str(self), "status": self.status}, status=self.status)


@dataclass(frozen=True)
class Request:
    """One complete HTTP request.

    Attributes:
        method: ``GET``, ``POST`` ...
        path: the path as sent (still percent-encoded), without the query.
        query: the raw query string (may be empty).
        headers: header names in lower case, each with its last value.
        body: the body (empty when there is none).
    """

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON (an empty body is ``None``).

        Raises:
            ApiError: 400, the body is not JSON.
        """
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(f"bad request body: {exc}", 400) from None


@dataclass(frozen=True)
class Response:
    """One HTTP response: status, headers and body."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, value: Any, *, status: int = 200) -> Response:
        """A JSON response (``Content-Type: application/json``)."""
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, (("Content-Type", "application/json"),))

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        """A response without a body (204 No Content)."""
        return cls(status)

    def serialize(self, *, keep_alive: bool) -> bytes:
        """The bytes of the response, with ``Connection: close`` when the connection ends."""
        headers = list(self.headers)
        if not keep_alive:
            headers.append(("Connection", "close"))
        return http_response(self.status, HTTPStatus(self.status).phrase, headers, self.body)


@dataclass(frozen=True)
class _Route(Generic[Handler]):
    pattern: re.Pattern[str]
    methods: dict[str, Handler]


class Routes(Generic[Handler]):
    """Path patterns, each with a handler per method.

    A pattern's ``{name}`` parts match one path segment each and are handed back, decoded.
    """

    def __init__(self) -> None:
        self._routes: list[_Route[Handler]] = []

    def add(self, pattern: str, **methods: Handler) -> None:
        """Route ``pattern`` (``/proxies/{proxy}``) to a handler for each method (``GET=...``)."""
        regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        self._routes.append(_Route(re.compile(regex), dict(methods)))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler for ``method`` on ``path`` and the path's parameters.

        Raises:
            ApiError: 404, no route matches the path; 405, the route has no such method.
        """
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            handler = route.methods.get(method)
            if handler is None:
                allowed = ", ".join(route.methods)
                raise ApiError(f"method {method} not allowed on {path} (use {allowed})", 405)
            return handler, {k: unquote(v) for k, v in found.groupdict().items()}
        raise ApiError(f"no such path: {path}", 404)
