"""A small JSON path: the subset of JSONPath that names one value in a document.

``$.user.name``, ``$.items[0].id``, ``$['odd key']``, ``user.name`` (the leading ``$`` may be
left out), ``$`` (the whole document). No wildcards, filters or slices: a path names exactly
one value or none. Used by ws-client's conversation scripts (``--script``) to check and
capture values in JSON messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"\[(-?[0-9]+)\]")
_QUOTED = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_MISSING = object()


class JSONPathError(ValueError):
    """A path that does not parse (the message says where)."""


@dataclass(frozen=True)
class JSONPath:
    """A parsed path: the keys (str) and indexes (int) from the document's root.

    Attributes:
        text: the path as written.
        parts: one key or index per step.
    """

    text: str
    parts: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> JSONPath:
        """Parse ``text``.

        Raises:
            JSONPathError: not a path of this grammar.
        """
        rest = text.strip()
        rest = rest[1:] if rest.startswith("$") else ("." + rest if rest else rest)
        parts: list[str | int] = []
        while rest:
            if rest.startswith("."):
                m = _NAME.match(rest, 1)
                if m is None:
                    raise JSONPathError(f"JSON path {text!r}: expected a key after '.'")
                parts.append(m.group())
                rest = rest[m.end() :]
            elif (m := _INDEX.match(rest)) is not None:
                parts.append(int(m.group(1)))
                rest = rest[m.end() :]
            elif (m := _QUOTED.match(rest)) is not None:
                quoted = m.group(1) if m.group(1) is not None else m.group(2)
                parts.append(re.sub(r"\\(.)", r"\1", quoted))
                rest = rest[m.end() :]
            else:
                raise JSONPathError(
                    f"JSON path {text!r}: unexpected {rest[:10]!r}"
                    " (write $.key, $.list[0] or $['key'])"
                )
        return cls(text, tuple(parts))

    def find(self, document: Any) -> tuple[bool, Any]:
        """``(True, value)`` for the value the path names, ``(False, None)`` when there is none."""
        value = document
        for part in self.parts:
            if isinstance(part, int):
                if not isinstance(value, list) or not -len(value) <= part < len(value):
                    return False, None
                value = value[part]
            else:
                if not isinstance(value, dict):
                    return False, None
                value = value.get(part, _MISSING)
                if value is _MISSING:
                    return False, None
        return True, value

    def __str__(self) -> str:
        return self.text
