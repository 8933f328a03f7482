"""Tests for netkit.core.units: sizes, durations and their formatting."""

from __future__ import annotations

import pytest

from netkit.core.units import format_size, parse_duration, parse_size
from netkit.errors import ConfigError, UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1500", 1500),
        ("1500b", 1500),
        ("1500B", 1500),
        ("1k", 1000),
        ("1KB", 1000),
        ("1kB", 1000),
        ("1KiB", 1024),
        ("64KiB", 65536),
        ("64kib", 65536),
        ("1M", 1_000_000),
        ("1MB", 1_000_000),
        ("1MiB", 1_048_576),
        ("0.5MiB", 524_288),
        ("1.5k", 1500),
        ("1G", 10**9),
        ("1GB", 10**9),
        ("2GiB", 2 * 1024**3),
        ("1e3", 1000),
        (" 2 KB ", 2000),
        (".5KiB", 512),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", " ", "KiB", "1TB", "1 2", "-1", "1,000", "abc", "1KiBs", "0x10", "1..5"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size such as 1500, 64KiB or 1MB") as info:
        parse_size(text)
    assert isinstance(info.value, UsageError)


def test_parse_size_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--max-frame 'huge' is not a size"):
        parse_size("huge", option="--max-frame")


def test_parse_size_overflow_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_size("1e400")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 2.0),
        ("2s", 2.0),
        ("2S", 2.0),
        ("0.25", 0.25),
        ("500ms", 0.5),
        ("500MS", 0.5),
        ("1.5m", 90.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("0", 0.0),
        (" 3 s ", 3.0),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text", ["", "s", "ms", "2 days", "-1s", "1d", "2sec", "1:30", "abc"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration such as 2s, 500ms or 1m"):
        parse_duration(text)


def test_parse_duration_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--timeout 'soon' is not a duration"):
        parse_duration("soon", option="--timeout")


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1024.0 KiB"),
        (1024 * 1024, "1.0 MiB"),
        (int(1.5 * 1024 * 1024), "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2 * 1024**4, "2048.0 GiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_format_size(nbytes: int, text: str) -> None:
    assert format_size(nbytes) == text


def test_format_size_of_parsed_size() -> None:
    assert format_size(parse_size("64KiB")) == "64.0 KiB"
    assert format_size(parse_size("1MB")) == "976.6 KiB"


def test_a_positive_duration_refuses_zero() -> None:
    assert parse_duration("0") == 0.0
    assert parse_duration("5s", positive=True) == 5.0
    with pytest.raises(ConfigError, match="--connect-timeout '0' must be more than zero"):
        parse_duration("0", option="--connect-timeout", positive=True)
