"""Allow and deny lists of client addresses: which clients a server serves (``--allow``,
``--deny``).

The semantics are ncat's (``allow_access`` in ncat_core.c), whatever order the rules come in:

1. a client that matches a deny rule is denied;
2. otherwise, when there is at least one allow rule, a client that matches none is denied;
3. otherwise the client is served.

So deny always wins over allow (``--allow 10.0.0.0/8 --deny 10.0.0.66`` serves all of 10/8
but one host), and an allow list alone turns everyone else away. A rule is a network in CIDR
notation or a host address (a /32 or /128), IPv4 or IPv6. An IPv4-mapped IPv6 client
(``::ffff:127.0.0.1``, what a dual-stack ``[::]`` listener sees) matches the IPv4 rules for
its IPv4 address (``127.0.0.0/8``) as well as the IPv6 rules for its own; a rule written as an
IPv4-mapped network (``::ffff:10.0.0.0/104``) is the IPv4 network it names. A link-local
client's zone (``fe80::1%eth0``) is not part of the match.

Sans-I/O: this module matches address strings; the servers (:mod:`netkit.net.server` and the
UDP servers) ask it at accept, or for each datagram of a source without a flow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from netkit.errors import ConfigError, Setting

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
# Verdicts remembered by address: a server checks the same clients again and again (a UDP
# source sends many datagrams); bounded, so a flood of sources cannot grow it without end.
CACHE_SIZE = 4096
# Denied UDP sources reported once each (see DeniedSources); bounded the same way.
REPORTED_SOURCES = 1024


def parse_network(text: str, setting: str = "allow") -> Network:
    """The network a rule names: ``10.0.0.0/8``, ``127.0.0.1``, ``::1``, ``fd00::/8``.

    An IPv4-mapped IPv6 network of /96 or longer is the IPv4 network it names.

    Raises:
        ConfigError: not an address or a network in CIDR notation (one line, naming
            ``setting``).
    """
    given = text.strip()
    try:
        network: Network = ipaddress.ip_network(given)
    except ValueError as exc:
        hint = _hint(given)
        raise ConfigError((Setting(setting), f" {text!r}: {hint or exc}")) from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _hint(text: str) -> str | None:
    # A CIDR with host bits set is a common slip: say which network was probably meant.
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if text and not any(c.isdigit() for c in text.split("/")[0].replace(":", "")):
            return "give an IP address or a network in CIDR notation, not a host name"
        return None
    return f"host bits are set; the network is {loose}"


def unix_socket_error() -> ConfigError:
    """The error for allow/deny lists on a Unix socket, whose clients have no address."""
    return ConfigError(
        (Setting("allow"), "/", Setting("deny"), ": a Unix socket's clients have no address")
    )


def rules_from_text(text: str) -> list[str]:
    """The rules in a rules file (``--allow-file``): one per line; blank lines and everything
    after a ``#`` are skipped."""
    rules = []
    for line in text.splitlines():
        rule = line.partition("#")[0].strip()
        if rule:
            rules.append(rule)
    return rules


def parse_address(host: str) -> Address | None:
    """The address of a client as a socket reports it (``127.0.0.1``, ``::1``,
    ``fe80::1%eth0``); None when it is not an IP address."""
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class Rule:
    """One ``allow`` or ``deny`` rule."""

    action: str
    network: Network

    def __str__(self) -> str:
        return f"{self.action} {self.network}"

    def matches(self, address: Address) -> bool:
        """Whether ``address`` (or the IPv4 address an IPv4-mapped one carries) is in it."""
        if address.version == self.network.version and address in self.network:
            return True
        mapped = getattr(address, "ipv4_mapped", None)
        return mapped is not None and self.network.version == 4 and mapped in self.network


@dataclass(frozen=True)
class Verdict:
    """Whether a client is served, and the rule that decided it (None: no rules matched and
    none were needed)."""

    allowed: bool
    rule: str | None = None


NO_ALLOW_RULE = "no allow rule matches"
"""The rule a :class:`Verdict` names when an allow list exists and the client is in none."""
NOT_AN_ADDRESS = "not an IP address"
"""The rule a :class:`Verdict` names for a client with no IP address (denied)."""


class AccessList:
    """Allow and deny rules, checked as ncat checks them (see the module docstring).

    An empty list allows everyone (and is false: a server skips the check).

    Args:
        allow: networks or addresses to serve (a list, or one as a string); when given, no
            one else is served.
        deny: networks or addresses never served, whatever ``allow`` says.

    Raises:
        ConfigError: a rule is not an address or a network in CIDR notation.
    """

    def __init__(self, allow: Iterable[str] | str = (), deny: Iterable[str] | str = ()) -> None:
        allow = [allow] if isinstance(allow, str) else allow  # one rule, not its characters
        deny = [deny] if isinstance(deny, str) else deny
        self.allow = tuple(Rule("allow", parse_network(t, "allow")) for t in allow)
        self.deny = tuple(Rule("deny", parse_network(t, "deny")) for t in deny)
        self._cache: dict[str, Verdict] = {}

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def __repr__(self) -> str:
        rules = ", ".join(str(r) for r in (*self.allow, *self.deny))
        return f"AccessList({rules})"

    def as_dict(self) -> dict[str, list[str]]:
        """The rules as a ``listening`` event reports them: networks, as they were normalized."""
        return {
            "allow": [str(r.network) for r in self.allow],
            "deny": [str(r.network) for r in self.deny],
        }

    def check(self, host: str) -> Verdict:
        """The verdict on a client at ``host`` (an address as a socket reports it)."""
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._decide(host)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[host] = verdict
        return verdict

    def _decide(self, host: str) -> Verdict:
        address = parse_address(host)
        if address is None:
            return Verdict(not self, None if not self else NOT_AN_ADDRESS)
        for rule in self.deny:
            if rule.matches(address):
                return Verdict(False, str(rule))
        for rule in self.allow:
            if rule.matches(address):
                return Verdict(True, str(rule))
        return Verdict(False, NO_ALLOW_RULE) if self.allow else Verdict(True)


class DeniedSources:
    """The denied sources of a UDP server already reported: one ``denied`` event per source,
    not one per datagram. Bounded: once it holds ``limit`` sources it starts afresh, so a
    flood from many sources costs events at the rate of new sources, never memory."""

    def __init__(self, limit: int = REPORTED_SOURCES) -> None:
        self.limit = limit
        self._seen: set[object] = set()

    def first(self, source: object) -> bool:
        """True the first time ``source`` is denied (report it), False after."""
        if source in self._seen:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen.add(source)
        return True
