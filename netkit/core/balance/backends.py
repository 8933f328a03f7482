"""Backends as the user writes them: ``ENDPOINT[,weight=N][,maxconn=N][,backup][,tls][,sni=NAME]``.

* A backend is *usable* when it is up and below its ``maxconn``. Backup backends are chosen
  only when no primary is usable (all down, full, or excluded by the caller). All usable
  backups share the load with the same algorithm (HAProxy's ``option allbackups``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from netkit.core.addresses import TCPEndpoint, UnixEndpoint, parse_stream_endpoint
from netkit.errors import ConfigError, NetkitError

MAX_WEIGHT = 256  # HAProxy's limit


@dataclass(frozen=True)
class Backend:
    """One backend from the command line.

    Attributes:
        endpoint: where to connect (TCP or a Unix socket).
        weight: relative share of new connections, 1-256.
        backup: used only when no primary backend is usable.
        maxconn: at most this many connections at once (connects in progress count), or None.
        tls: reached over TLS (``lb --backend-tls`` sets it for every backend).
        sni: the name to send and verify in its TLS handshake, or None for the default.
    """

    endpoint: TCPEndpoint | UnixEndpoint
    weight: int = 1
    backup: bool = False
    maxconn: int | None = None
    tls: bool = False
    sni: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise ConfigError(
                f"backend {self.endpoint}: weight {self.weight} is out of range (1-{MAX_WEIGHT})"
            )
        if self.maxconn is not None and self.maxconn < 1:
            raise ConfigError(f"backend {self.endpoint}: maxconn must be at least 1")

    @functools.cached_property
    def name(self) -> str:
        """The endpoint as a string: the backend's name in events and tables."""
        return str(self.endpoint)

    def __str__(self) -> str:
        options = [f"weight={self.weight}"] if self.weight != 1 else []
        if self.maxconn is not None:
            options.append(f"maxconn={self.maxconn}")
        if self.backup:
            options.append("backup")
        if self.tls:
            options.append("tls")
        if self.sni is not None:
            options.append(f"sni={self.sni}")
        return ",".join([self.name, *options])


_BACKEND_KEYS = ("weight", "maxconn", "backup", "tls", "sni")
_FLAGS = ("backup", "tls")  # options that take no value


def _parse_count(text: str, key: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"backend {whole!r}: {key}={text!r} is not a whole number")
    return int(text)


def parse_backend(text: str) -> Backend:
    """Parse ``ENDPOINT[,weight=N][,maxconn=N][,backup][,tls][,sni=NAME]``.

    The endpoint is ``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/path`` (it cannot contain a
    comma). Examples: ``127.0.0.1:8001,weight=3``, ``unix:/run/b.sock,backup``,
    ``[::1]:8002,maxconn=100,weight=2``.

    Raises:
        EndpointError: the endpoint does not parse.
        ConfigError: an unknown, repeated or invalid option.
    """
    whole = text.strip()
    endpoint_text, *options = whole.split(",")
    endpoint = parse_stream_endpoint(endpoint_text)
    values: dict[str, str | None] = {}
    for option in options:
        key, sep, value = option.strip().partition("=")
        key = key.strip().lower()
        if not key:
            raise ConfigError(f"backend {whole!r}: empty option (stray comma?)")
        if key not in _BACKEND_KEYS:
            raise ConfigError(
                f"backend {whole!r}: unknown option {key!r} (known: {', '.join(_BACKEND_KEYS)})"
            )
        if key in values:
            raise ConfigError(f"backend {whole!r}: {key} is given twice")
        values[key] = value.strip() if sep else None
    weight, maxconn, sni = 1, None, None
    for key, given in values.items():
        if key in _FLAGS:
            if given not in (None, "true", "yes", "1"):
                raise ConfigError(f"backend {whole!r}: {key} takes no value (write ',{key}')")
        elif not given:
            value = "NAME" if key == "sni" else "N"
            raise ConfigError(f"backend {whole!r}: {key} needs a value ({key}={value})")
        elif key == "weight":
            weight = _parse_count(given, key, whole)
        elif key == "sni":
            sni = given
        else:
            maxconn = _parse_count(given, key, whole)
    return Backend(
        endpoint,
        weight=weight,
        backup="backup" in values,
        maxconn=maxconn,
        tls="tls" in values or sni is not None,
        sni=sni,
    )


def parse_backends(texts: Sequence[str]) -> list[Backend]:
    """Parse every backend argument; the same endpoint twice, or only backups, is an error.

    Raises:
        EndpointError, ConfigError: as :func:`parse_backend`, and for the cases above.
    """
    return check_backends([parse_backend(text) for text in texts])


def check_backends(backends: list[Backend]) -> list[Backend]:
    """``backends`` if they make a pool: at least one, no endpoint twice, not only backups.

    Raises:
        ConfigError: they do not.
    """
    if not backends:
        raise ConfigError("no backends given")
    seen: set[TCPEndpoint | UnixEndpoint] = set()
    for backend in backends:
        if backend.endpoint in seen:
            raise ConfigError(f"backend {backend.name} is given twice")
        seen.add(backend.endpoint)
    if all(b.backup for b in backends):
        raise ConfigError("every backend is a backup: at least one must be a primary")
    return backends


def parse_backends_text(text: str, source: str = "backends file") -> list[Backend]:
    """Parse a backends file: one backend per line in the command line's syntax
    (:func:`parse_backend`); blank lines and ``#`` comments (whole-line or trailing) are
    skipped. The result is checked as :func:`parse_backends` checks the command line.

    Raises:
        ConfigError: a line that does not parse (``source`` line N: why), or a bad set.
    """
    backends: list[Backend] = []
    for number, line in enumerate(text.splitlines(), 1):
        spec = line.partition("#")[0].strip()
        if not spec:
            continue
        try:
            backends.append(parse_backend(spec))
        except NetkitError as exc:
            raise ConfigError(f"{source} line {number}: {exc}") from None
    try:
        return check_backends(backends)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
