"""Allow/deny lists (core/access.py): ncat's semantics, IPv4, IPv6, IPv4-mapped, bad rules."""

from __future__ import annotations

import ipaddress

import pytest

from netkit.core.access import (
    NO_ALLOW_RULE,
    NOT_AN_ADDRESS,
    AccessList,
    DeniedSources,
    Verdict,
    parse_network,
    rules_from_text,
)
from netkit.errors import ConfigError


def test_an_empty_list_allows_everyone_and_is_false() -> None:
    empty = AccessList()
    assert not empty
    assert empty.check("203.0.113.9") == Verdict(True)
    assert empty.check("::1") == Verdict(True)


def test_deny_only_turns_away_its_networks_and_names_the_rule() -> None:
    acl = AccessList(deny=["127.0.0.2", "10.0.0.0/8"])
    assert acl.check("127.0.0.2") == Verdict(False, "deny 127.0.0.2/32")
    assert acl.check("10.200.3.4") == Verdict(False, "deny 10.0.0.0/8")
    assert acl.check("127.0.0.1") == Verdict(True)
    assert acl.check("::1") == Verdict(True)


def test_allow_only_turns_away_everyone_else() -> None:
    acl = AccessList(allow=["192.168.1.0/24"])
    assert acl.check("192.168.1.77") == Verdict(True, "allow 192.168.1.0/24")
    assert acl.check("192.168.2.1") == Verdict(False, NO_ALLOW_RULE)
    assert acl.check("::1") == Verdict(False, NO_ALLOW_RULE)


@pytest.mark.parametrize("reverse", [False, True])
def test_deny_wins_over_allow_whatever_the_order(reverse: bool) -> None:
    # ncat's allow_access: deny is checked whatever the order the flags came in.
    allow, deny = ["10.0.0.0/8"], ["10.0.0.66"]
    acl = AccessList(allow, deny) if not reverse else AccessList(deny=deny, allow=allow)
    assert acl.check("10.0.0.66") == Verdict(False, "deny 10.0.0.66/32")
    assert acl.check("10.0.0.65") == Verdict(True, "allow 10.0.0.0/8")
    assert acl.check("11.0.0.1") == Verdict(False, NO_ALLOW_RULE)


def test_ipv6_networks_and_host_addresses() -> None:
    acl = AccessList(allow=["::1", "fd00::/8"], deny=["fd00:dead::/32"])
    assert acl.check("::1") == Verdict(True, "allow ::1/128")
    assert acl.check("fd12::5") == Verdict(True, "allow fd00::/8")
    assert acl.check("fd00:dead::1") == Verdict(False, "deny fd00:dead::/32")
    assert acl.check("fe80::1%lo") == Verdict(False, NO_ALLOW_RULE)  # the zone is no part
    assert AccessList(allow=["fe80::/10"]).check("fe80::1%eth0").allowed
    assert acl.check("127.0.0.1").allowed is False  # an IPv4 client, IPv6 rules only


def test_an_ipv4_mapped_client_matches_the_ipv4_rules() -> None:
    acl = AccessList(allow=["127.0.0.0/8"], deny=["127.0.0.2"])
    assert acl.check("::ffff:127.0.0.1") == Verdict(True, "allow 127.0.0.0/8")
    assert acl.check("::ffff:127.0.0.2") == Verdict(False, "deny 127.0.0.2/32")
    assert acl.check("::ffff:10.0.0.1") == Verdict(False, NO_ALLOW_RULE)
    # ... and the IPv6 rules for its own address.
    assert AccessList(deny=["::/0"]).check("::ffff:127.0.0.1").allowed is False
    assert AccessList(deny=["::/0"]).check("127.0.0.1").allowed is True


def test_a_rule_written_as_a_mapped_network_is_the_ipv4_network() -> None:
    assert parse_network("::ffff:10.0.0.0/104") == ipaddress.IPv4Network("10.0.0.0/8")
    acl = AccessList(deny=["::ffff:10.0.0.0/104"])
    assert acl.check("10.1.1.1") == Verdict(False, "deny 10.0.0.0/8")
    assert acl.check("::ffff:10.1.1.1").allowed is False
    assert parse_network("::/0") == ipaddress.IPv6Network("::/0")  # not inside ::ffff:0:0/96


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("10.1.2.3/8", "host bits are set; the network is 10.0.0.0/8"),
        ("localhost", "not a host name"),
        ("1.2.3.4/33", "does not appear to be"),
        ("300.1.1.1", "does not appear to be"),
        ("", "does not appear to be"),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_setting(rule: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AccessList(deny=[rule])
    message = str(caught.value)
    assert message.startswith(f"deny {rule!r}: ") and words in message
    assert "\n" not in message


def test_a_string_is_one_rule_not_its_characters() -> None:
    acl = AccessList(allow="127.0.0.1", deny="::1")
    assert [str(r) for r in (*acl.allow, *acl.deny)] == ["allow 127.0.0.1/32", "deny ::1/128"]
    assert acl.as_dict() == {"allow": ["127.0.0.1/32"], "deny": ["::1/128"]}


def test_a_client_without_an_ip_address_is_denied_when_there_are_rules() -> None:
    assert AccessList(deny=["10.0.0.0/8"]).check("(client)") == Verdict(False, NOT_AN_ADDRESS)
    assert AccessList().check("(client)") == Verdict(True)


def test_verdicts_are_cached_within_a_bound() -> None:
    acl = AccessList(deny=["10.0.0.0/8"])
    for i in range(5000):
        acl.check(f"10.{i // 256}.{i % 256}.1")
    assert 0 < len(acl._cache) <= 4096
    assert acl.check("10.0.0.1") == Verdict(False, "deny 10.0.0.0/8")


def test_rules_files_skip_blank_lines_and_comments() -> None:
    text = "# office\n10.0.0.0/8   # the LAN\n\n  ::1\n#127.0.0.1\n"
    assert rules_from_text(text) == ["10.0.0.0/8", "::1"]


def test_denied_sources_are_reported_once_and_the_memory_is_bounded() -> None:
    seen = DeniedSources(limit=3)
    assert seen.first(("10.0.0.1", 1)) and not seen.first(("10.0.0.1", 1))
    for port in range(2, 10):
        seen.first(("10.0.0.1", port))
    assert len(seen._seen) <= 3
