"""Conversation scripts for ``ws-client --script FILE``: the file format (YAML or TOML), its
steps, and the checks made before anything is sent.

A script is a table with ``steps`` (a list), and optionally ``name``, ``timeout`` (each
step's default) and ``vars`` (variables set before the first step). Each step is a table
with one action and optionally ``name`` and ``timeout``::

    send: TEXT | {text: T} | {json: VALUE} | {hex: H} | {base64: B}
    expect: REGEX | {regex: R} | {text: T} | {json: PATH, equals: V} | {json: {PATH: V}}
            | {hex: H} | {base64: B}          (+ capture: {VAR: GROUP or PATH})
    wait: DURATION
    ping: PAYLOAD                             (the pong must come within the timeout)
    close: true | CODE | {code: C, reason: R}
    expect_close: true | CODE | {code: C, reason: R}

Each kind of step is a class (:class:`Send`, :class:`Expect`, :class:`Wait`, :class:`Ping`,
:class:`Close`, :class:`ExpectClose`). :func:`parse_script` turns a file's text into a
:class:`Script`, or raises :class:`~netkit.errors.ConfigError` naming the file, the line (YAML)
and the step. It also checks that every ``${name}`` is set by ``vars`` or an earlier capture,
and that nothing is sent after a close. The README's "Conversation scripts" section is the
user's reference; ``examples/conversation.yaml`` is a full example.
"""

from __future__ import annotations

import enum
import json
import tomllib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from netkit.core.ws.frames import is_valid_close_code
from netkit.core.ws.script_checks import Matcher, Source, parse_matcher
from netkit.core.ws.script_values import (
    ScriptValueError,
    Template,
    check_json,
    decode_bytes,
    duration,
    json_names,
    render_json,
    type_name,
    variable_name,
)
from netkit.errors import ConfigError

DEFAULT_TIMEOUT = 10.0  # a step's timeout when neither it nor the script gives one
_MAX_PING = 125  # RFC 6455 5.5: control frame payloads
_MAX_REASON = 123  # 5.5.1: a close reason after the 2-byte code


@dataclass(frozen=True, kw_only=True)
class Step(ABC):
    """One step of a conversation.

    Attributes:
        index: its place, from 1.
        name: as the script names it, or None.
        timeout: how long it may take, in seconds (its own, or the script's default).
        line: the line it starts on (YAML files), or None.
    """

    KIND: ClassVar[str] = ""  # its action's key
    TIMED: ClassVar[bool] = True  # takes a timeout
    EXTRA: ClassVar[tuple[str, ...]] = ()  # keys it takes besides the action, name, timeout
    index: int
    name: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    line: int | None = None

    @classmethod
    @abstractmethod
    def parse(cls, value: object, **common: Any) -> Step:
        """The step from its action's value (``common``: index, name, timeout, line, and the
        :attr:`EXTRA` keys given).

        Raises:
            ScriptValueError: the value is not what the action takes.
        """

    @property
    def label(self) -> str:
        """``step 3 "login" (expect)``: how messages name it."""
        named = f" {json.dumps(self.name, ensure_ascii=False)}" if self.name else ""
        return f"step {self.index}{named} ({self.KIND})"

    @property
    def uses(self) -> frozenset[str]:
        """The variables it needs."""
        return frozenset()

    @property
    def sets(self) -> frozenset[str]:
        """The variables it captures."""
        return frozenset()

    def describe(self) -> str:
        """What it does, in a few words."""
        return self.KIND


@dataclass(frozen=True, kw_only=True)
class Send(Step):
    """Send one message: text (``${name}`` filled in), JSON text, or binary bytes."""

    KIND: ClassVar[str] = "send"
    text: Template | None = None
    json_value: Any = None
    data: bytes | None = None

    @classmethod
    def parse(cls, value: object, **common: Any) -> Send:
        """From ``send:`` (a string, or a table with text, json, hex or base64)."""
        if isinstance(value, str):
            return cls(text=Template.parse(value, "send"), **common)
        if not isinstance(value, dict) or len(value) != 1:
            raise ScriptValueError(
                "send takes a string or a table with one of text, json, hex, base64"
            )
        ((key, inner),) = value.items()
        if key == "text":
            return cls(text=Template.parse(inner, "text"), **common)
        if key == "json":
            return cls(json_value=check_json(inner, "json"), **common)
        if key in ("hex", "base64"):
            return cls(data=decode_bytes(key, inner), **common)
        raise ScriptValueError(f"send: unknown key {key!r} (use text, json, hex or base64)")

    @property
    def uses(self) -> frozenset[str]:
        if self.text is not None:
            return self.text.names
        return json_names(self.json_value) if self.data is None else frozenset()

    def render(self, variables: dict[str, Any]) -> tuple[bytes, bool]:
        """The message to send, ``(payload, is_text)``."""
        if self.text is not None:
            return self.text.render(variables).encode(), True
        if self.data is not None:
            return self.data, False
        value = render_json(self.json_value, variables)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), True

    def describe(self) -> str:
        if self.text is not None:
            return f"send text {json.dumps(self.text.text, ensure_ascii=False)}"
        if self.data is not None:
            return f"send binary ({len(self.data)} bytes)"
        return "send json " + json.dumps(self.json_value, ensure_ascii=False)


@dataclass(frozen=True, kw_only=True)
class Expect(Step):
    """Receive the next message and check it; capture variables from it."""

    KIND: ClassVar[str] = "expect"
    EXTRA: ClassVar[tuple[str, ...]] = ("capture",)
    matcher: Matcher
    captures: tuple[tuple[str, Source], ...] = ()

    @classmethod
    def parse(cls, value: object, capture: object = None, **common: Any) -> Expect:
        """From ``expect:`` and the step's ``capture:`` table."""
        matcher = parse_matcher(value)
        captures: list[tuple[str, Source]] = []
        if capture is not None:
            if not isinstance(capture, dict) or not capture:
                raise ScriptValueError("capture takes a table: {variable: group or JSON path}")
            for name, source in capture.items():
                captures.append((variable_name(name), matcher.capture_source(source)))
        return cls(matcher=matcher, captures=tuple(captures), **common)

    @property
    def uses(self) -> frozenset[str]:
        return self.matcher.names

    @property
    def sets(self) -> frozenset[str]:
        return self.matcher.automatic | {name for name, _ in self.captures}

    def describe(self) -> str:
        return f"expect {self.matcher.describe()}"


@dataclass(frozen=True, kw_only=True)
class Wait(Step):
    """Pause; messages that arrive meanwhile wait for the next ``expect``."""

    KIND: ClassVar[str] = "wait"
    TIMED: ClassVar[bool] = False
    seconds: float

    @classmethod
    def parse(cls, value: object, **common: Any) -> Wait:
        """From ``wait: DURATION``."""
        return cls(seconds=duration(value, "wait"), **common)

    def describe(self) -> str:
        return f"wait {self.seconds:g}s"


@dataclass(frozen=True, kw_only=True)
class Ping(Step):
    """Send a ping; its pong must come within the step's timeout."""

    KIND: ClassVar[str] = "ping"
    payload: bytes = b""

    @classmethod
    def parse(cls, value: object, **common: Any) -> Ping:
        """From ``ping: PAYLOAD`` (``true`` or ``""``: four random bytes)."""
        if value is True:
            value = ""
        if not isinstance(value, str):
            raise ScriptValueError("ping takes a payload string (or true)")
        payload = value.encode()
        if len(payload) > _MAX_PING:
            raise ScriptValueError(f"ping payload is {len(payload)} bytes: at most {_MAX_PING}")
        return cls(payload=payload, **common)

    def describe(self) -> str:
        return f"ping {self.payload.decode()!r}" if self.payload else "ping"


def _close_spec(key: str, value: object) -> tuple[int | None, str | None]:
    """``true``, ``CODE`` or ``{code: C, reason: R}`` → (code, reason)."""
    if value is True:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"code": value}
    if not isinstance(value, dict) or set(value) - {"code", "reason"}:
        raise ScriptValueError(f"{key} takes true, a close code, or a table with code and reason")
    code, reason = value.get("code"), value.get("reason")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise ScriptValueError(f"{key}: code must be a number")
    if reason is not None and not isinstance(reason, str):
        raise ScriptValueError(f"{key}: reason must be a string")
    if reason is not None and len(reason.encode()) > _MAX_REASON:
        raise ScriptValueError(f"{key}: reason is longer than {_MAX_REASON} bytes")
    return code, reason


@dataclass(frozen=True, kw_only=True)
class Close(Step):
    """Send a close frame; the server must answer it within the step's timeout."""

    KIND: ClassVar[str] = "close"
    code: int = 1000
    reason: str = ""

    @classmethod
    def parse(cls, value: object, **common: Any) -> Close:
        """From ``close: true | CODE | {code, reason}``."""
        code, reason = _close_spec("close", value)
        code = 1000 if code is None else code
        if not is_valid_close_code(code):
            raise ScriptValueError(
                f"close: {code} is not a code to send (1000-1003, 1007-1014, 3000-4999)"
            )
        return cls(code=code, reason=reason or "", **common)

    def describe(self) -> str:
        return f"close {self.code}" + (f" {self.reason!r}" if self.reason else "")


@dataclass(frozen=True, kw_only=True)
class ExpectClose(Step):
    """The server's close: it must close (or have answered ours) with this code and reason."""

    KIND: ClassVar[str] = "expect_close"
    code: int | None = None  # None: any code
    reason: str | None = None  # None: any reason

    @classmethod
    def parse(cls, value: object, **common: Any) -> ExpectClose:
        """From ``expect_close: true | CODE | {code, reason}``."""
        code, reason = _close_spec("expect_close", value)
        if code is not None and not 1000 <= code <= 4999:
            raise ScriptValueError(f"expect_close: {code} is not a close code (1000-4999)")
        return cls(code=code, reason=reason, **common)

    def describe(self) -> str:
        said = "any code" if self.code is None else str(self.code)
        return f"expect close {said}" + (f" {self.reason!r}" if self.reason is not None else "")


# Every kind of step, by its action's key.
STEPS: dict[str, type[Step]] = {
    kind.KIND: kind for kind in (Send, Expect, Wait, Ping, Close, ExpectClose)
}
_COMMON = ("name", "timeout")


@dataclass(frozen=True)
class Script:
    """A parsed conversation.

    Attributes:
        source: the file it came from, as messages name it.
        steps: in order.
        name: the script's ``name`` (the JUnit suite), or None.
        variables: set by ``vars`` before the first step.
    """

    source: str
    steps: tuple[Step, ...]
    name: str | None = None
    variables: tuple[tuple[str, Any], ...] = ()


class ScriptFormat(enum.Enum):
    """The two file formats, chosen by the file's suffix."""

    YAML = "yaml"
    TOML = "toml"

    @classmethod
    def for_name(cls, filename: str) -> ScriptFormat:
        """The format of a file called ``filename``.

        Raises:
            ConfigError: neither .yaml/.yml nor .toml.
        """
        lower = filename.lower()
        if lower.endswith((".yaml", ".yml")):
            return cls.YAML
        if lower.endswith(".toml"):
            return cls.TOML
        raise ConfigError(f"{filename}: a script is a .yaml, .yml or .toml file")

    def load(self, text: str, source: str) -> tuple[Any, list[int]]:
        """The document, and the line each step starts on (YAML; empty for TOML).

        Raises:
            ConfigError: the text does not parse (the message has the line).
        """
        if self is ScriptFormat.TOML:
            try:
                return tomllib.loads(text), []
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        import yaml  # PyYAML: loaded for a YAML script only, not by every ws-client run

        try:
            return yaml.safe_load(text), _yaml_step_lines(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def _yaml_step_lines(text: str) -> list[int]:
    """The line of each item of the top-level ``steps`` list (for messages)."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "steps" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def parse_script(text: str, *, source: str, fmt: ScriptFormat) -> Script:
    """Parse and check a script.

    Args:
        text: the file's contents.
        source: the file's name, for messages.
        fmt: YAML or TOML.

    Raises:
        ConfigError: the file does not parse, or a step is not valid (the message names the
            file, the line for YAML, and the step).
    """
    document, lines = fmt.load(text, source)
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: a script is a table with a list of steps")
    unknown = sorted(set(document) - {"name", "timeout", "vars", "steps"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (a script has name, timeout, vars and steps)"
        )
    try:
        name = _optional_string(document.get("name"), "name")
        default = duration(document.get("timeout", DEFAULT_TIMEOUT), "timeout", positive=True)
        variables = _variables(document.get("vars", {}))
    except ScriptValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{source}: steps must be a non-empty list of steps")
    steps = []
    for index, raw in enumerate(raw_steps, 1):
        line = lines[index - 1] if index <= len(lines) else None
        try:
            steps.append(_parse_step(raw, index, default, line))
        except ScriptValueError as exc:
            raise ConfigError(f"{source}: {_where(index, line, raw)}: {exc}") from None
    script = Script(source, tuple(steps), name, tuple(variables.items()))
    _check_flow(script)
    return script


def _where(index: int, line: int | None, raw: object) -> str:
    """``line 7, step 3 "login" (expect)``, as much of it as the raw step tells."""
    table = raw if isinstance(raw, dict) else {}
    name = table.get("name")
    named = f" {json.dumps(name, ensure_ascii=False)}" if isinstance(name, str) else ""
    kinds = [key for key in table if key in STEPS]
    kind = f" ({kinds[0]})" if len(kinds) == 1 else ""
    return (f"line {line}, " if line is not None else "") + f"step {index}{named}{kind}"


def _optional_string(value: object, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ScriptValueError(f"{key} must be a string, not {type_name(value)}")
    return value


def _variables(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScriptValueError(f"vars must be a table, not {type_name(value)}")
    return {variable_name(k): check_json(v, f"vars {k!r}") for k, v in value.items()}


def _parse_step(raw: object, index: int, default: float, line: int | None) -> Step:
    if not isinstance(raw, dict):
        raise ScriptValueError(
            f"a step is a table with one of {', '.join(STEPS)}, not {type_name(raw)}"
        )
    actions = [key for key in raw if key in STEPS]
    if len(actions) != 1:
        found = f" (it has {', '.join(actions)})" if actions else ""
        raise ScriptValueError(f"a step needs exactly one of {', '.join(STEPS)}{found}")
    kind = actions[0]
    step_class = STEPS[kind]
    allowed = {kind, *_COMMON, *step_class.EXTRA}
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        raise ScriptValueError(
            f"{kind}: unknown key {unknown[0]!r} (a {kind} step has {', '.join(sorted(allowed - {kind}))})"
        )
    common: dict[str, Any] = {
        "index": index,
        "line": line,
        "name": _optional_string(raw.get("name"), "name"),
        "timeout": default,
    }
    if "timeout" in raw:
        if not step_class.TIMED:
            raise ScriptValueError(f"a {kind} step has no timeout (its value is how long it waits)")
        common["timeout"] = duration(raw["timeout"], "timeout", positive=True)
    extra = {key: raw[key] for key in step_class.EXTRA if key in raw}
    return step_class.parse(raw[kind], **extra, **common)


def _check_flow(script: Script) -> None:
    """Every variable is set before it is used; nothing is sent once the connection closes."""
    known = {name for name, _ in script.variables}
    closing = ended = False
    for step in script.steps:
        where = f"{script.source}: " + (f"line {step.line}, " if step.line else "") + step.label
        missing = sorted(step.uses - known)
        if missing:
            raise ConfigError(
                f"{where}: ${{{missing[0]}}} is not set by vars or a capture in an earlier step"
            )
        known |= step.sets
        if ended:
            raise ConfigError(f"{where}: the connection is closed after an expect_close step")
        if closing and not isinstance(step, ExpectClose):
            raise ConfigError(f"{where}: only expect_close may follow a close step")
        closing = closing or isinstance(step, Close)
        ended = isinstance(step, ExpectClose)
