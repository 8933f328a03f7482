"""Parsing the quantities people type: sizes (``64KiB``), durations (``500ms``), counts."""

from __future__ import annotations

import math
import re

from netkit.errors import ConfigError, Words, words

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "m": 60.0, "h": 3600.0}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")


def parse_size(text: str, *, option: Words = "size") -> int:
    """Parse a byte count: ``1500``, ``64KiB``, ``1MB`` (k/M/G are powers of 1000, KiB of 1024).

    ``option`` names what is parsed in the error message (a flag, or a setting).

    Raises:
        ConfigError: not a size.
    """
    m = _NUMBER_UNIT.match(text)
    unit = m.group(2).lower() if m else ""
    value = float(m.group(1)) * _SIZE_UNITS[unit] if m and unit in _SIZE_UNITS else math.nan
    if not math.isfinite(value):
        raise ConfigError(words(option, f" {text!r} is not a size such as 1500, 64KiB or 1MB"))
    return int(value)


def parse_duration(text: str, *, option: Words = "duration", positive: bool = False) -> float:
    """Parse a duration in seconds: ``2``, ``2s``, ``500ms``, ``1.5m``.

    Args:
        positive: refuse zero (for a timeout, where zero would make every attempt fail).

    Raises:
        ConfigError: not a duration, or zero when ``positive``.
    """
    m = _NUMBER_UNIT.match(text)
    unit = m.group(2).lower() if m else ""
    value = float(m.group(1)) * _DURATION_UNITS[unit] if m and unit in _DURATION_UNITS else math.nan
    if not math.isfinite(value):
        raise ConfigError(words(option, f" {text!r} is not a duration such as 2s, 500ms or 1m"))
    if positive and value <= 0:
        raise ConfigError(words(option, f" {text!r} must be more than zero"))
    return value


def format_size(nbytes: float) -> str:
    """Human-readable byte count with binary units (``1.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"
