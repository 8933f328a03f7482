"""Following redirects of the opening handshake (ws-client ``-L``), sans I/O.

An upgrade answered 301, 302, 303, 307 or 308 with a ``Location`` is tried again at that URL,
resolved against the current one (RFC 3986 5.2); ``http://`` maps to ``ws://`` and
``https://`` to ``wss://``. :class:`RedirectChain` refuses what a careful client refuses: a
downgrade from TLS to plain text (unless allowed), a URL already visited (a loop), more than
``max_hops`` redirects, and credentials carried to another host (they are dropped, as curl
drops them).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass

from netkit.core.addresses import WSURL, parse_ws_url
from netkit.core.ws.http import UpgradeRefused
from netkit.errors import EndpointError, PeerProtocolError, Setting

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
ALLOW_DOWNGRADE = Setting("allow_insecure_redirect")
MAX_REDIRECTS = Setting("max_redirects")
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


@dataclass(frozen=True)
class RedirectPolicy:
    """Whether and how far redirects are followed."""

    max_hops: int = 10
    allow_downgrade: bool = False


def _base(url: WSURL) -> str:
    # A URL to resolve a Location against; a Unix socket's host stands in as "localhost".
    if url.unix_path is not None:
        return f"{'wss' if url.secure else 'ws'}://localhost{url.resource}"
    return str(url)


def resolve_location(url: WSURL, location: str) -> WSURL:
    """The URL ``location`` names, relative to ``url``, in ws:// or wss:// form.

    Raises:
        PeerProtocolError: a scheme other than ws, wss, http or https, or a URL that does
            not parse.
    """
    joined = urllib.parse.urlsplit(urllib.parse.urljoin(_base(url), location.strip()))
    scheme = _SCHEMES.get(joined.scheme.lower())
    if scheme is None:
        raise PeerProtocolError(
            f"{url} redirected to {location!r}: not a WebSocket or HTTP URL", close_code=None
        )
    resource = (joined.path or "/") + (f"?{joined.query}" if joined.query else "")
    relative = not urllib.parse.urlsplit(location.strip()).netloc
    if url.unix_path is not None and relative:  # the same socket, another resource
        return dataclasses.replace(url, secure=scheme == "wss", resource=resource)
    try:
        target = parse_ws_url(f"{scheme}://{joined.netloc.rpartition('@')[2]}{resource}")
    except EndpointError as exc:
        raise PeerProtocolError(
            f"{url} redirected to {location!r}: {exc}", close_code=None
        ) from None
    if (target.host, target.port) == (url.host, url.port) and url.unix_path is None:
        # Same origin: the credentials of the URL still apply (curl keeps them too).
        target = dataclasses.replace(target, user=url.user, password=url.password)
    return target


class RedirectChain:
    """The URLs one opening went through, and the decision on each redirect."""

    def __init__(self, url: WSURL, policy: RedirectPolicy | None) -> None:
        self.policy = policy
        self.visited = [url]

    @property
    def url(self) -> WSURL:
        """The URL to connect to now."""
        return self.visited[-1]

    def follow(self, refused: UpgradeRefused) -> WSURL | None:
        """The URL to try next after ``refused``, or None when it is no redirect to follow.

        Raises:
            PeerProtocolError: a redirect without a Location, to an unusable URL, a
                downgrade from wss, a loop, or one hop too many.
        """
        if self.policy is None or refused.status_code not in REDIRECT_STATUS:
            return None
        current = self.url
        said = f"{current} answered {refused.status_code}"
        location = refused.headers.get("Location")
        if not location:
            raise PeerProtocolError(f"{said} without a Location header", close_code=None)
        target = resolve_location(current, location)
        if current.secure and not target.secure and not self.policy.allow_downgrade:
            raise PeerProtocolError(
                f"{said}: refusing the redirect from TLS to plain text ({target})",
                close_code=None,
                hint=("pass ", ALLOW_DOWNGRADE, " to follow it"),
            )
        if target in self.visited:
            path = " -> ".join(str(u) for u in (*self.visited, target))
            raise PeerProtocolError(f"redirect loop: {path}", close_code=None)
        if len(self.visited) > self.policy.max_hops:
            raise PeerProtocolError(
                f"{said}: more than {self.policy.max_hops} redirects",
                close_code=None,
                hint=("raise ", MAX_REDIRECTS, " if the chain is meant to be that long"),
            )
        self.visited.append(target)
        return target
