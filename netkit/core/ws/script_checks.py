"""What an ``expect`` step of a conversation script checks in the next message: a regex, an
exact text, values at JSON paths, or exact bytes; and what it captures into variables.

Each kind is a class that parses its capture sources and checks a message
(:meth:`Matcher.check`), returning a :class:`Checked`. Pure logic, used by
:mod:`netkit.core.ws.script` (parsing) and :mod:`netkit.net.ws_script` (running).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from netkit.core.jsonpath import JSONPath, JSONPathError
from netkit.core.ws.script_values import (
    ScriptValueError,
    Template,
    as_text,
    check_json,
    decode_bytes,
    json_names,
    render_json,
    show_message,
    type_name,
)

Source = int | str | JSONPath  # a regex group (number or name), or a JSON path


@dataclass(frozen=True)
class Checked:
    """The verdict on one message.

    Attributes:
        ok: it is what the step expects.
        why: for a mismatch, what was expected and what came (one line); "" when ok.
        values: the captured variables, when ok.
    """

    ok: bool
    why: str = ""
    values: dict[str, Any] = field(default_factory=dict)


class Matcher(ABC):
    """How an ``expect`` step checks a message (one subclass per kind)."""

    KEYS: ClassVar[tuple[str, ...]] = ()  # the keys of the ``expect`` table that select it

    @property
    def names(self) -> frozenset[str]:
        """The variables the check uses."""
        return frozenset()

    @property
    def automatic(self) -> frozenset[str]:
        """The variables every passing message sets, without a ``capture`` table."""
        return frozenset()

    def capture_source(self, source: object) -> Source:
        """Check what ``capture: {var: SOURCE}`` names, for this kind of check.

        Raises:
            ScriptValueError: this kind cannot capture, or the source is not valid for it.
        """
        raise ScriptValueError("capture needs a regex or json expectation")

    @abstractmethod
    def check(
        self, is_text: bool, data: bytes, variables: dict[str, Any], captures: dict[str, Source]
    ) -> Checked:
        """Check one message; capture ``captures`` (variable → source) when it passes."""

    @abstractmethod
    def describe(self) -> str:
        """What it expects, for a passing step's line."""


def _need_text(is_text: bool, data: bytes, expected: str) -> Checked | None:
    if is_text:
        return None
    return Checked(False, f"expected {expected}, got {show_message(is_text, data)}")


@dataclass(frozen=True)
class RegexMatch(Matcher):
    """A text message in which the regex matches (``re.search``); named groups are captured.

    ``${name}`` in the pattern matches the variable's value literally.
    """

    KEYS: ClassVar[tuple[str, ...]] = ("regex",)
    pattern: Template
    groups: int = 0
    group_names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: object) -> RegexMatch:
        """From the pattern as written.

        Raises:
            ScriptValueError: not a string, or not a regular expression.
        """
        template = Template.parse(value, "regex")
        try:
            compiled = re.compile(template.placeholder())
        except re.error as exc:
            raise ScriptValueError(f"regex {template.text!r}: {exc}") from None
        return cls(template, compiled.groups, frozenset(compiled.groupindex))

    @property
    def names(self) -> frozenset[str]:
        return self.pattern.names

    @property
    def automatic(self) -> frozenset[str]:
        """The named groups: each is captured into the variable of its name."""
        return self.group_names

    def capture_source(self, source: object) -> Source:
        if isinstance(source, int) and not isinstance(source, bool):
            if not 0 <= source <= self.groups:
                raise ScriptValueError(f"the regex has no group {source}")
            return source
        if isinstance(source, str) and source in self.group_names:
            return source
        raise ScriptValueError(f"capture {source!r}: the regex has no such group")

    def check(
        self, is_text: bool, data: bytes, variables: dict[str, Any], captures: dict[str, Source]
    ) -> Checked:
        pattern = self.pattern.render(variables, escape=True)
        refused = _need_text(is_text, data, f"text matching {pattern!r}")
        if refused is not None:
            return refused
        try:
            m = re.search(pattern, data.decode("utf-8"))
        except re.error as exc:  # the values filled in made it invalid (a{${n}} with n="x,")
            return Checked(False, f"regex {pattern!r} (variables filled in) is not valid: {exc}")
        if m is None:
            return Checked(
                False, f"expected text matching {pattern!r}, got {show_message(True, data)}"
            )
        values: dict[str, Any] = {k: v for k, v in m.groupdict().items() if v is not None}
        for name, source in captures.items():
            assert not isinstance(source, JSONPath)
            values[name] = m.group(source) or ""
        return Checked(True, values=values)

    def describe(self) -> str:
        return f"text matching {self.pattern.text!r}"


@dataclass(frozen=True)
class TextEquals(Matcher):
    """A text message that is exactly this text (``${name}`` filled in)."""

    KEYS: ClassVar[tuple[str, ...]] = ("text",)
    text: Template

    @property
    def names(self) -> frozenset[str]:
        return self.text.names

    def check(
        self, is_text: bool, data: bytes, variables: dict[str, Any], captures: dict[str, Source]
    ) -> Checked:
        expected = self.text.render(variables)
        shown = json.dumps(expected, ensure_ascii=False)
        refused = _need_text(is_text, data, f"text {shown}")
        if refused is not None:
            return refused
        if data.decode("utf-8") != expected:
            return Checked(False, f"expected text {shown}, got {show_message(True, data)}")
        return Checked(True)

    def describe(self) -> str:
        return f"text {json.dumps(self.text.text, ensure_ascii=False)}"


_ABSENT = object()  # a JSON check without ``equals``: the path must exist


@dataclass(frozen=True)
class JSONMatch(Matcher):
    """A text message holding JSON with these values at these paths (or just the path, when
    no value is given). ``${name}`` in the expected values is filled in."""

    KEYS: ClassVar[tuple[str, ...]] = ("json", "equals")
    checks: tuple[tuple[JSONPath, Any], ...]

    @classmethod
    def parse(cls, table: dict[str, Any]) -> JSONMatch:
        """From ``json: PATH`` (with ``equals: VALUE`` or not), or ``json: {PATH: VALUE ...}``.

        Raises:
            ScriptValueError: a path that does not parse, or a value JSON cannot carry.
        """
        spec = table["json"]
        if isinstance(spec, str):
            expected = check_json(table["equals"], "equals") if "equals" in table else _ABSENT
            pairs = [(spec, expected)]
        elif isinstance(spec, dict) and spec and "equals" not in table:
            pairs = [(str(k), check_json(v, f"json {k!r}")) for k, v in spec.items()]
        else:
            raise ScriptValueError(
                "json takes a path (with equals: VALUE, or alone to require the path) "
                "or a table of paths and their values"
            )
        try:
            return cls(tuple((JSONPath.parse(path), value) for path, value in pairs))
        except JSONPathError as exc:
            raise ScriptValueError(str(exc)) from None

    @property
    def names(self) -> frozenset[str]:
        return frozenset().union(*(json_names(v) for _, v in self.checks if v is not _ABSENT))

    def capture_source(self, source: object) -> Source:
        if not isinstance(source, str):
            raise ScriptValueError(f"capture {source!r}: give a JSON path such as $.id")
        try:
            return JSONPath.parse(source)
        except JSONPathError as exc:
            raise ScriptValueError(str(exc)) from None

    def check(
        self, is_text: bool, data: bytes, variables: dict[str, Any], captures: dict[str, Source]
    ) -> Checked:
        refused = _need_text(is_text, data, "a JSON text message")
        if refused is not None:
            return refused
        try:
            document = json.loads(data)
        except ValueError:
            return Checked(False, f"expected JSON, got {show_message(True, data)}")
        for path, expected in self.checks:
            found, value = path.find(document)
            if not found:
                return Checked(False, f"{path} is missing in {show_message(True, data)}")
            if expected is not _ABSENT:
                want = render_json(expected, variables)
                # True == 1 in Python, not in JSON.
                if value != want or (type(value) is bool) != (type(want) is bool):
                    return Checked(False, f"expected {path} == {_json(want)}, got {_json(value)}")
        values: dict[str, Any] = {}
        for name, source in captures.items():
            assert isinstance(source, JSONPath)
            found, values[name] = source.find(document)
            if not found:
                return Checked(
                    False, f"capture {name}: {source} is missing in {show_message(True, data)}"
                )
        return Checked(True, values=values)

    def describe(self) -> str:
        return ", ".join(
            f"{p} present" if v is _ABSENT else f"{p} == {_json(v)}" for p, v in self.checks
        )


def _json(value: Any) -> str:
    return as_text(value) if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class BytesEquals(Matcher):
    """A binary message with exactly these bytes (given as ``hex`` or ``base64``)."""

    KEYS: ClassVar[tuple[str, ...]] = ("hex", "base64")
    data: bytes

    @classmethod
    def parse(cls, encoding: str, value: object) -> BytesEquals:
        """From the ``hex`` or ``base64`` value."""
        return cls(decode_bytes(encoding, value))

    def check(
        self, is_text: bool, data: bytes, variables: dict[str, Any], captures: dict[str, Source]
    ) -> Checked:
        if is_text or data != self.data:
            return Checked(
                False,
                f"expected {show_message(False, self.data)}, got {show_message(is_text, data)}",
            )
        return Checked(True)

    def describe(self) -> str:
        return show_message(False, self.data)


def parse_matcher(value: object) -> Matcher:
    """The check an ``expect`` step's value describes: a string is a regex; a table has
    ``regex``, ``text``, ``json`` (with ``equals``), ``hex`` or ``base64``.

    Raises:
        ScriptValueError: none of these, or more than one.
    """
    if isinstance(value, str):
        return RegexMatch.parse(value)
    if not isinstance(value, dict):
        raise ScriptValueError(f"expect takes a regex or a table, not {type_name(value)}")
    kinds = [k for k in ("regex", "text", "json", "hex", "base64") if k in value]
    unknown = sorted(set(value) - {"regex", "text", "json", "equals", "hex", "base64"})
    if unknown:
        raise ScriptValueError(
            f"expect: unknown key {unknown[0]!r} (use regex, text, json with equals, hex or base64)"
        )
    if len(kinds) != 1:
        raise ScriptValueError("expect needs exactly one of regex, text, json, hex or base64")
    kind = kinds[0]
    if "equals" in value and kind != "json":
        raise ScriptValueError("equals goes with json")
    if kind == "regex":
        return RegexMatch.parse(value["regex"])
    if kind == "text":
        return TextEquals(Template.parse(value["text"], "text"))
    if kind == "json":
        return JSONMatch.parse(value)
    return BytesEquals.parse(kind, value[kind])
