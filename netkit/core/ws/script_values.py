"""The values inside a conversation script (``ws-client --script``): durations, ``${name}``
templates, payloads in hex or base64, and how the script's values are shown in messages.

Pure functions and small frozen classes; :mod:`netkit.core.ws.script` parses steps with them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from netkit.core.units import parse_duration
from netkit.errors import ConfigError

# ${name}; $${ is a literal "${".
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SHOWN = 60  # characters of a message shown in a failure


class ScriptValueError(ValueError):
    """A value in the script is not what its key takes (the parser adds where it is)."""


def variable_name(name: object) -> str:
    """``name`` when it can name a variable (``user``, ``token_2``).

    Raises:
        ScriptValueError: not a name.
    """
    if not isinstance(name, str) or not _VARIABLE.match(name):
        raise ScriptValueError(f"{name!r} is not a variable name (letters, digits, _)")
    return name


@dataclass(frozen=True)
class Template:
    """Text with ``${name}`` references, filled in from the variables when the step runs.

    Attributes:
        text: as written.
        names: the variables it uses.
    """

    text: str
    names: frozenset[str]

    @classmethod
    def parse(cls, value: object, key: str) -> Template:
        """A template from the script's value for ``key`` (a string).

        Raises:
            ScriptValueError: not a string, or a reference that is not a variable name.
        """
        if not isinstance(value, str):
            raise ScriptValueError(f"{key} must be a string, not {type_name(value)}")
        names = set()
        for m in _REFERENCE.finditer(value):
            if m.group(1) is not None:
                names.add(variable_name(m.group(1)))
        return cls(value, frozenset(names))

    def render(self, variables: dict[str, Any], escape: bool = False) -> str:
        """The text with every reference replaced by the variable's value as text
        (``escape``: as a regular expression that matches the value literally)."""

        def replace(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return "${"
            text = as_text(variables[m.group(1)])
            return re.escape(text) if escape else text

        return _REFERENCE.sub(replace, self.text)

    def placeholder(self) -> str:
        """The text with each reference replaced by a plain word: to check a regex early."""
        return _REFERENCE.sub(lambda m: "x" if m.group(1) else "${", self.text)


def as_text(value: Any) -> str:
    """A variable's value inside text: strings as they are, other JSON values as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def json_names(value: Any) -> frozenset[str]:
    """Every variable the strings inside a JSON value (keys included) refer to."""
    if isinstance(value, str):
        return Template.parse(value, "json").names
    if isinstance(value, dict):
        return frozenset().union(*(json_names(k) | json_names(v) for k, v in value.items()))
    if isinstance(value, list):
        return frozenset().union(*(json_names(v) for v in value))
    return frozenset()


def render_json(value: Any, variables: dict[str, Any]) -> Any:
    """``value`` with references filled in. A string that is exactly one reference takes
    the variable's value as it is (a captured number stays a number)."""
    if isinstance(value, str):
        m = _REFERENCE.fullmatch(value)
        if m is not None and m.group(1) is not None:
            return variables[m.group(1)]
        return Template.parse(value, "json").render(variables)
    if isinstance(value, dict):
        # Keys are text whatever the values are: a key never takes a variable's JSON value.
        return {
            Template.parse(k, "json").render(variables): render_json(v, variables)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_json(v, variables) for v in value]
    return value


def check_json(value: Any, key: str) -> Any:
    """``value`` when JSON can carry it (YAML dates and TOML times cannot).

    Raises:
        ScriptValueError: it holds something JSON has no type for.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ScriptValueError(f"{key}: {value!r} is not a JSON value") from None
    return value


def decode_bytes(encoding: str, value: object) -> bytes:
    """The bytes of a ``hex`` (spaces allowed) or ``base64`` value.

    Raises:
        ScriptValueError: not a string, or not valid in that encoding.
    """
    if not isinstance(value, str):
        raise ScriptValueError(f"{encoding} must be a string, not {type_name(value)}")
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise ScriptValueError(f"{encoding} {value!r} is not valid {encoding}") from None


def duration(value: object, key: str, *, positive: bool = False) -> float:
    """Seconds from a number or a string such as ``500ms`` or ``2s``.

    Args:
        positive: refuse zero (a timeout).

    Raises:
        ScriptValueError: neither, negative, or zero when ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ScriptValueError(f"{key} must be a duration such as 2s or 500ms")
    if isinstance(value, str):
        try:
            return parse_duration(value, option=key, positive=positive)
        except ConfigError as exc:
            raise ScriptValueError(str(exc)) from None
    if not value >= 0 or (positive and value == 0):  # "not >=": NaN too
        raise ScriptValueError(f"{key} must be a duration such as 2s or 500ms, more than zero")
    return float(value)


def type_name(value: object) -> str:
    """What the script gave, in the words of YAML and TOML (``a table``, ``a list``)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def show_message(is_text: bool, data: bytes) -> str:
    """A received message in a failure: ``text "hello"`` or ``binary 68 65 (2 bytes)``."""
    if is_text:
        text = data.decode("utf-8", "replace")
        more = "..." if len(text) > _SHOWN else ""
        return f"text {json.dumps(text[:_SHOWN], ensure_ascii=False)}{more}"
    more = " ..." if len(data) > _SHOWN // 3 else ""
    return f"binary {data[: _SHOWN // 3].hex(' ')}{more} ({len(data)} bytes)"
