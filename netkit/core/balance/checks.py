"""What ``lb``'s active checks say beyond "connected": HAProxy's ``option httpchk``.

``--check http:/healthz`` sends ``GET /healthz HTTP/1.1`` to every backend (over TLS when the
backend is reached over TLS) and judges the answer's status as HAProxy's ``http-check expect
status`` does: by default any 2xx or 3xx passes (HAProxy's httpchk default), ``--check-expect
200`` or ``--check-expect 2xx,301`` names the codes. The answer is parsed with
:class:`netkit.core.bench.http.ResponseReader` (httptools), the one HTTP/1.1 response parser
netkit has, and read no further than :attr:`HTTPCheck.max_read` bytes.

The plain send/expect probe (``--check-send``, ``--check-expect`` as a regular expression) is
:class:`netkit.core.balance.health.CheckProbe`; the I/O of both is in :mod:`netkit.net.health`.
"""

from __future__ import annotations

from dataclasses import dataclass

from netkit.core.bench.http import HTTPRequest, StatusCheck
from netkit.errors import ConfigError, Setting

CHECK, CHECK_EXPECT = Setting("check"), Setting("check_expect")
HTTP_PASS = StatusCheck(((200, 399),), "2xx,3xx")
"""The codes an HTTP check accepts when none are named (HAProxy: 2xx and 3xx)."""
CHECK_KINDS = "tcp, or http:/PATH"


@dataclass(frozen=True)
class HTTPCheck:
    """An HTTP health check: one ``GET`` on a fresh connection, judged by its status.

    Attributes:
        path: the request target (``/healthz``).
        expect: the status codes that pass.
        max_read: the most bytes read for the answer; a longer one fails the check.
    """

    path: str = "/"
    expect: StatusCheck = HTTP_PASS
    max_read: int = 16 * 1024  # HAProxy's tune.chksize

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n\t"):
            raise ConfigError(
                (CHECK, f" http:{self.path}: the path must start with / and hold no spaces")
            )

    def request(self, host: str) -> bytes:
        """The request's bytes, with ``host`` as its ``Host`` header."""
        headers = (("User-Agent", "netkit-lb-check"), ("Connection", "close"))
        return HTTPRequest("GET", self.path, host, headers).serialize()

    def verdict(self, status: int) -> tuple[bool, str]:
        """Whether ``status`` passes, and the check's result in words."""
        if self.expect.accepts(status):
            return True, f"HTTP {status}"
        return False, f"HTTP {status} from GET {self.path} (expected {self.expect.text})"

    def describe(self) -> str:
        """How the check is described in messages (``GET /healthz``)."""
        return f"GET {self.path}"


def parse_check(kind: str, expect: str | None = None) -> HTTPCheck | None:
    """``--check``: ``tcp`` (connect, and the send/expect probe) gives None; ``http:/PATH``
    (``http`` alone checks ``/``) an :class:`HTTPCheck` expecting ``expect``'s status codes.

    Raises:
        ConfigError: another kind, a bad path or bad status codes.
    """
    name, sep, path = kind.partition(":")
    name = name.strip().lower()
    if name == "tcp" and not sep:
        return None
    if name != "http":
        raise ConfigError((CHECK, f" {kind!r}: expected {CHECK_KINDS}"))
    status = HTTP_PASS if expect is None else StatusCheck.parse(expect, option=CHECK_EXPECT)
    return HTTPCheck(path or "/", status)
