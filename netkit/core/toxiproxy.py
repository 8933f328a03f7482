"""toxiproxy's HTTP API as data: toxics ↔ netkit faults, proxies ↔ JSON, its error shapes.

toxiproxy (github.com/Shopify/toxiproxy) is driven over HTTP by client libraries in many
languages and by testcontainers; ``netkit proxy --api`` answers the same requests with the same
JSON, status codes and error bodies (``{"error": "proxy not found", "status": 404}``), so those
clients drive netkit unchanged. This module is the sans-I/O half: it parses request bodies into
netkit faults and proxy specs and renders them back; :mod:`netkit.net.toxiproxy` acts on the
relays.

A toxic is one fault, on one stream: ``upstream`` (client → upstream, netkit's ``up``) or
``downstream`` (``down``, toxiproxy's default); its ``toxicity`` is the fault's probability.
toxiproxy's types and their attributes (integers, in toxiproxy's units), as netkit faults:

=============  ======================================  ===========================================
type           attributes                              fault
=============  ======================================  ===========================================
latency        latency, jitter (ms)                    ``Latency(latency, jitter=jitter)``
bandwidth      rate (KB/s, 1 KB = 1000 bytes; 0: any)  ``Bandwidth(rate * 1000)``
slow_close     delay (ms)                              ``SlowClose(delay)``
timeout        timeout (ms; 0: never close)            ``BlackholeAfter(0, close_after=timeout)``
reset_peer     timeout (ms)                            ``ResetAfter(ms=timeout)``
slicer         average_size, size_variation (bytes),   ``Slice(average_size, delay=delay / 1000,
               delay (µs)                              variation=size_variation)``
limit_data     bytes                                   ``LimitData(bytes)``
=============  ======================================  ===========================================

netkit's own faults are extension types, named with the :data:`EXTENSION_PREFIX` ``netkit_``
(numbers may be fractional):

=====================  ===========================  ========================================
type                   attributes                   fault
=====================  ===========================  ========================================
netkit_refuse          (none; toxicity = chance)    ``Refuse()``: accept, then reset at once
netkit_accept_delay    delay (ms)                   ``AcceptDelay(delay)``
netkit_reset_after     bytes                        ``ResetAfter(size=bytes)``
netkit_blackhole       after, close_after (ms)      ``BlackholeAfter(after, close_after=...)``
=====================  ===========================  ========================================

``netkit_refuse`` and ``netkit_accept_delay`` act on new connections as a whole: their stream
is shown as ``both``, and a toxic of any type may be given ``"stream": "both"`` (an extension)
to act in both directions, as a fault from the command line does. Proxies take three extension
fields, shown only when set: ``seed`` (the fault RNG's seed), ``listen_tls``
(``{"cert": PATH, "key": PATH}`` or ``{"self_signed": true}``: TLS from clients) and
``upstream_tls`` (``true``, or ``{"cacert": PATH, "insecure": false, "server_hostname":
NAME}``: TLS to the upstream).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from netkit.core.addresses import parse_stream_endpoint
from netkit.core.faults import (
    AcceptDelay,
    Bandwidth,
    BlackholeAfter,
    Directions,
    Fault,
    Latency,
    LimitData,
    Refuse,
    ResetAfter,
    Slice,
    SlowClose,
)
from netkit.core.http_api import ApiError
from netkit.errors import NetkitError

VERSION: Final = "2.12.0"
"""The toxiproxy API version netkit answers ``GET /version`` with (clients compare it)."""

EXTENSION_PREFIX: Final = "netkit_"
"""Toxic types that are netkit's own faults start with this."""

DEFAULT_LISTEN: Final = "127.0.0.1:0"
"""Where a proxy created without ``listen`` listens: loopback, a free port (toxiproxy binds
every interface)."""

# toxiproxy's errors, word for word (api.go), as (message, status).
PROXY_NOT_FOUND: Final = ("proxy not found", 404)
PROXY_EXISTS: Final = ("proxy already exists", 409)
TOXIC_NOT_FOUND: Final = ("toxic not found", 404)
TOXIC_EXISTS: Final = ("toxic already exists", 409)
INVALID_TOXIC_TYPE: Final = ("invalid toxic type", 400)
INVALID_STREAM: Final = ("stream was invalid, can be either upstream or downstream", 400)


def api_error(error: tuple[str, int]) -> ApiError:
    """One of toxiproxy's errors (:data:`PROXY_NOT_FOUND` ...) as an :class:`ApiError`."""
    return ApiError(*error)


def bad_body(detail: str) -> ApiError:
    """400 ``bad request body: ...``, toxiproxy's answer to a body it cannot decode."""
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(name: str) -> ApiError:
    """400 ``missing required field: NAME``."""
    return ApiError(f"missing required field: {name}", 400)


STREAMS: Final[dict[str, Directions]] = {"upstream": "up", "downstream": "down", "both": "both"}
_STREAM_OF: Final = {direction: stream for stream, direction in STREAMS.items()}
F = TypeVar("F", bound=Fault)


# --- toxic types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToxicType:
    """One toxic type: its attributes, the fault it builds, and how a fault reads back.

    Attributes:
        name: the ``type`` field (``latency``).
        attributes: the attribute names, each with its unit (``ms``, ``bytes``, ``KB/s``,
            ``us``): sizes must be whole numbers, toxiproxy's own types take integers only.
        build: makes the fault from the attributes (every one present), its direction and
            probability.
        read: the attributes of a fault of this type, or None when it is not one.
    """

    name: str
    attributes: tuple[tuple[str, str], ...]
    build: Callable[[dict[str, float], Directions, float], Fault]
    read: Callable[[Fault], dict[str, float] | None]

    @property
    def extension(self) -> bool:
        """True for netkit's own types (``netkit_...``)."""
        return self.name.startswith(EXTENSION_PREFIX)

    def attributes_of(
        self, given: Mapping[str, Any], base: Mapping[str, float]
    ) -> dict[str, float]:
        """``base`` with the known attributes in ``given`` checked and put over it.

        Unknown attributes are ignored, as toxiproxy ignores them.

        Raises:
            ApiError: 400, an attribute is not a number of the right kind.
        """
        values = dict(base)
        for key, unit in self.attributes:
            if key not in given:
                continue
            value = given[key]
            whole = unit == "bytes" or not self.extension
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad_body(f"attribute {key} of a {self.name} toxic must be a number")
            if not math.isfinite(value) or (whole and not float(value).is_integer()):
                raise bad_body(f"attribute {key} of a {self.name} toxic must be a whole number")
            if value < 0:
                raise bad_body(f"attribute {key} of a {self.name} toxic must not be negative")
            values[key] = int(value) if whole else value
        return values


def _number(value: float) -> float:
    # Whole numbers as ints in JSON (toxiproxy's attributes are integers).
    return int(value) if float(value).is_integer() else value


def _always(_fault: Any) -> bool:
    return True


def _read(
    kind: type[F], attrs: Callable[[F], dict[str, float]], when: Callable[[F], bool] = _always
) -> Callable[[Fault], dict[str, float] | None]:
    # How a toxic type reads a fault back: its attributes when the fault is of ``kind`` (not a
    # subclass) and ``when`` holds, else None.
    def read(fault: Fault) -> dict[str, float] | None:
        if type(fault) is not kind or not isinstance(fault, kind) or not when(fault):
            return None
        return {k: _number(v) for k, v in attrs(fault).items()}

    return read


TOXIC_TYPES: Final[tuple[ToxicType, ...]] = (
    ToxicType(
        "latency",
        (("latency", "ms"), ("jitter", "ms")),
        lambda a, d, p: Latency(a["latency"], jitter=a["jitter"], direction=d, probability=p),
        _read(Latency, lambda f: {"latency": f.ms, "jitter": f.jitter}),
    ),
    ToxicType(
        "bandwidth",
        (("rate", "KB/s"),),
        lambda a, d, p: Bandwidth(a["rate"] * 1000, direction=d, probability=p),
        _read(Bandwidth, lambda f: {"rate": f.rate / 1000}),
    ),
    ToxicType(
        "slow_close",
        (("delay", "ms"),),
        lambda a, d, p: SlowClose(a["delay"], direction=d, probability=p),
        _read(SlowClose, lambda f: {"delay": f.ms}),
    ),
    ToxicType(
        "timeout",
        (("timeout", "ms"),),
        lambda a, d, p: BlackholeAfter(0, close_after=a["timeout"], direction=d, probability=p),
        _read(BlackholeAfter, lambda f: {"timeout": f.close_after}, lambda f: f.ms == 0),
    ),
    ToxicType(
        "reset_peer",
        (("timeout", "ms"),),
        lambda a, d, p: ResetAfter(ms=a["timeout"], direction=d, probability=p),
        _read(ResetAfter, lambda f: {"timeout": f.ms}, lambda f: f.size == 0),
    ),
    ToxicType(
        "slicer",
        (("average_size", "bytes"), ("size_variation", "bytes"), ("delay", "us")),
        lambda a, d, p: Slice(
            int(a["average_size"]),
            delay=a["delay"] / 1000,
            variation=int(a["size_variation"]),
            direction=d,
            probability=p,
        ),
        _read(
            Slice,
            lambda f: {
                "average_size": f.size,
                "size_variation": f.variation,
                "delay": round(f.delay * 1000, 3),
            },
        ),
    ),
    ToxicType(
        "limit_data",
        (("bytes", "bytes"),),
        lambda a, d, p: LimitData(int(a["bytes"]), direction=d, probability=p),
        _read(LimitData, lambda f: {"bytes": f.size}),
    ),
    ToxicType(
        "netkit_refuse",
        (),
        lambda a, d, p: Refuse(probability=p),
        _read(Refuse, lambda f: {}),
    ),
    ToxicType(
        "netkit_accept_delay",
        (("delay", "ms"),),
        lambda a, d, p: AcceptDelay(a["delay"], probability=p),
        _read(AcceptDelay, lambda f: {"delay": f.ms}),
    ),
    ToxicType(
        "netkit_reset_after",
        (("bytes", "bytes"),),
        lambda a, d, p: ResetAfter(size=int(a["bytes"]), direction=d, probability=p),
        _read(ResetAfter, lambda f: {"bytes": f.size}, lambda f: f.size > 0),
    ),
    ToxicType(
        "netkit_blackhole",
        (("after", "ms"), ("close_after", "ms")),
        lambda a, d, p: BlackholeAfter(
            a["after"], close_after=a["close_after"], direction=d, probability=p
        ),
        _read(BlackholeAfter, lambda f: {"after": f.ms, "close_after": f.close_after}),
    ),
)
"""Every toxic type, toxiproxy's then netkit's; a fault reads back as the first that fits."""

_TYPES: Final = {kind.name: kind for kind in TOXIC_TYPES}


def type_of(fault: Fault) -> tuple[ToxicType, dict[str, float]]:
    """The toxic type a fault shows as, and its attributes."""
    for kind in TOXIC_TYPES:
        attributes = kind.read(fault)
        if attributes is not None:
            return kind, attributes
    raise TypeError(f"no toxic type shows a {type(fault).__name__} fault")  # a new fault kind


# --- toxics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Toxic:
    """A named fault, as toxiproxy's API shows it."""

    name: str
    fault: Fault

    def as_json(self) -> dict[str, Any]:
        """The toxic's JSON: ``{"attributes", "name", "type", "stream", "toxicity"}``."""
        kind, attributes = type_of(self.fault)
        return {
            "attributes": attributes,
            "name": self.name,
            "type": kind.name,
            "stream": _STREAM_OF[self.fault.direction],
            "toxicity": self.fault.probability,
        }


def _object(body: Any, what: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_body(f"expected a JSON object{what}")
    return body


def _string(body: Mapping[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_body(f"field {key} must be a string")
    return value


def _toxicity(body: Mapping[str, Any], default: float) -> float:
    value = body.get("toxicity", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise bad_body("toxicity must be a number from 0 to 1")
    return float(value)


def _fault(build: Callable[[], Fault]) -> Fault:
    # A fault constructor's refusal (a size variation as large as the size) is the body's fault.
    try:
        return build()
    except NetkitError as exc:
        raise bad_body(str(exc)) from None


def parse_toxic(body: Any) -> Toxic:
    """A new toxic from ``POST /proxies/{proxy}/toxics``' JSON body.

    Defaults as toxiproxy's: stream ``downstream``, toxicity 1, name ``TYPE_STREAM``,
    attributes 0.

    Raises:
        ApiError: 400 for a body that is no toxic, an unknown stream or type.
    """
    body = _object(body)
    stream = _string(body, "stream", "downstream") or "downstream"
    direction = STREAMS.get(stream.lower())
    if direction is None:
        raise api_error(INVALID_STREAM)
    type_name = _string(body, "type")
    name = _string(body, "name") or f"{type_name}_{stream}"
    kind = _TYPES.get(type_name)
    if kind is None:
        raise api_error(INVALID_TOXIC_TYPE)
    attributes = kind.attributes_of(
        _object(body.get("attributes") or {}, " for attributes"),
        {key: 0 for key, _ in kind.attributes},
    )
    probability = _toxicity(body, 1.0)
    return Toxic(name, _fault(lambda: kind.build(attributes, direction, probability)))


def update_toxic(toxic: Toxic, body: Any) -> Toxic:
    """``toxic`` changed by ``POST/PATCH /proxies/{proxy}/toxics/{toxic}``' JSON body.

    As toxiproxy does, the attributes given replace those they name and the rest stay, the
    toxicity changes when given; name, type and stream do not change.

    Raises:
        ApiError: 400 for a body that does not fit the toxic's type.
    """
    body = _object(body)
    kind, current = type_of(toxic.fault)
    given = _object(body.get("attributes") or {}, " for attributes")
    attributes = kind.attributes_of(given, current)
    probability = _toxicity(body, toxic.fault.probability)
    fault = _fault(lambda: kind.build(attributes, toxic.fault.direction, probability))
    return replace(toxic, fault=fault)


def toxics_json(toxics: Iterable[tuple[str, Fault]]) -> list[dict[str, Any]]:
    """A proxy's toxics as toxiproxy lists them: upstream ones, then downstream (then both)."""
    listed = [Toxic(name, fault).as_json() for name, fault in toxics]
    order = {"upstream": 0, "downstream": 1}
    return sorted(listed, key=lambda t: order.get(t["stream"], 2))


# --- proxies -------------------------------------------------------------------------------

_EXTENSIONS: Final = ("seed", "listen_tls", "upstream_tls")
_SERVER_TLS_KEYS: Final = {"cert": str, "key": str, "self_signed": bool}
_CLIENT_TLS_KEYS: Final = {"cacert": str, "insecure": bool, "server_hostname": str}


@dataclass(frozen=True)
class ProxySpec:
    """What a proxy is asked to be: toxiproxy's fields and netkit's extensions.

    Attributes:
        name: unique among the proxies.
        listen: where it listens (``HOST:PORT``, ``unix:/path``).
        upstream: where it relays to.
        enabled: listening (True) or not.
        seed: the fault RNG's seed (repeatable runs), or None.
        listen_tls: TLS from clients (``cert``/``key`` or ``self_signed``), or None.
        upstream_tls: TLS to the upstream (``cacert``, ``insecure``, ``server_hostname``), or
            None.
    """

    name: str
    listen: str
    upstream: str
    enabled: bool = True
    seed: int | None = None
    listen_tls: dict[str, Any] | None = None
    upstream_tls: dict[str, Any] | None = None

    def as_json(self, toxics: Iterable[tuple[str, Fault]] = ()) -> dict[str, Any]:
        """The proxy's JSON: ``name``, ``listen``, ``upstream``, ``enabled``, ``toxics``, and
        the extensions that are set."""
        shown: dict[str, Any] = {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": toxics_json(toxics),
        }
        for key in _EXTENSIONS:
            if getattr(self, key) is not None:
                shown[key] = getattr(self, key)
        return shown

    def differs(self, other: ProxySpec) -> bool:
        """True when ``other`` listens or relays elsewhere (populate replaces such a proxy)."""
        return (self.listen, self.upstream) != (other.listen, other.upstream)


def _endpoint(text: str, field: str) -> str:
    try:
        parse_stream_endpoint(text)
    except NetkitError as exc:
        raise bad_body(f"{field}: {exc}") from None
    return text


def _tls(value: Any, field: str, keys: Mapping[str, type]) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    if value is True and field == "upstream_tls":
        return {}
    settings = _object(value, f" for {field}")
    for key, item in settings.items():
        if key not in keys or not isinstance(item, keys[key]):
            known = ", ".join(keys)
            raise bad_body(f"{field}.{key}: not one of {known} with a value of the right type")
    return dict(settings)


def _extensions(body: Mapping[str, Any]) -> dict[str, Any]:
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_body("seed must be a whole number")
    return {
        "seed": seed,
        "listen_tls": _tls(body.get("listen_tls"), "listen_tls", _SERVER_TLS_KEYS),
        "upstream_tls": _tls(body.get("upstream_tls"), "upstream_tls", _CLIENT_TLS_KEYS),
    }


def _enabled(body: Mapping[str, Any], default: bool) -> bool:
    value = body.get("enabled", default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_body("enabled must be true or false")
    return value


def parse_proxy(body: Any, *, where: str = "") -> ProxySpec:
    """A new proxy from ``POST /proxies``' JSON body (or one entry of ``/populate``'s).

    Args:
        where: said after a missing field's name (``" at proxy 2"`` for populate).

    Raises:
        ApiError: 400, the body is no proxy or lacks ``name`` or ``upstream``.
    """
    body = _object(body)
    name = _string(body, "name")
    if not name:
        raise missing_field(f"name{where}")
    upstream = _string(body, "upstream")
    if not upstream:
        raise missing_field(f"upstream{where}")
    listen = _string(body, "listen") or DEFAULT_LISTEN
    return ProxySpec(
        name,
        _endpoint(listen, "listen"),
        _endpoint(upstream, "upstream"),
        _enabled(body, True),
        **_extensions(body),
    )


def update_proxy(spec: ProxySpec, body: Any) -> ProxySpec:
    """``spec`` changed by ``POST/PATCH /proxies/{proxy}``' body: ``listen``, ``upstream``,
    ``enabled`` (the name does not change, nor do the extensions: a proxy's TLS and seed are
    set when it is created).

    Raises:
        ApiError: 400, a field of the wrong type, an endpoint that does not parse, or an
            extension that would change.
    """
    body = _object(body)
    listen = _string(body, "listen", spec.listen) or spec.listen
    upstream = _string(body, "upstream", spec.upstream) or spec.upstream
    for key, value in _extensions(body).items():
        if key in body and value != getattr(spec, key):
            raise bad_body(f"{key} is set when a proxy is created: delete it and create it anew")
    return replace(
        spec,
        listen=_endpoint(listen, "listen"),
        upstream=_endpoint(upstream, "upstream"),
        enabled=_enabled(body, spec.enabled),
    )


def parse_populate(body: Any) -> list[ProxySpec]:
    """The proxies of ``POST /populate``' body, a JSON array, every one checked first.

    Raises:
        ApiError: 400, not an array, or an entry that is no proxy.
    """
    if not isinstance(body, list):
        raise bad_body("expected a JSON array of proxies")
    return [parse_proxy(entry, where=f" at proxy {i}") for i, entry in enumerate(body, 1)]
