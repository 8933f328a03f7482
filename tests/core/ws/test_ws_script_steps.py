"""Conversation scripts without a network: parsing YAML and TOML into steps, the checks made
before a run, what each kind of expect step accepts and captures, JSON paths, the failure
each way a connection ends maps to, and the JUnit report."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from netkit.core.jsonpath import JSONPath, JSONPathError
from netkit.core.junit import TestCase, junit_xml
from netkit.core.ws.script import (
    DEFAULT_TIMEOUT,
    Close,
    Expect,
    ExpectClose,
    Ping,
    ScriptFormat,
    Send,
    Wait,
    parse_script,
)
from netkit.core.ws.script_report import (
    ConnectionEnd,
    ScriptReport,
    StepResult,
    StepStatus,
    check_close,
    failed,
)
from netkit.errors import (
    CheckFailed,
    ConfigError,
    ConnectionLost,
    OperationTimeout,
    PeerProtocolError,
)

pytestmark = pytest.mark.timeout(10)


def yaml_script(text: str):
    return parse_script(text, source="s.yaml", fmt=ScriptFormat.YAML)


def toml_script(text: str):
    return parse_script(text, source="s.toml", fmt=ScriptFormat.TOML)


def test_yaml_and_toml_give_the_same_steps():
    from_yaml = yaml_script(
        "timeout: 2s\nsteps:\n"
        "  - {name: hi, send: hello}\n"
        "  - {expect: '^hello', timeout: 500ms}\n"
        "  - wait: 0.25\n"
        "  - ping: true\n"
        "  - close: {code: 4000, reason: done}\n"
        "  - expect_close: 4000\n"
    )
    from_toml = toml_script(
        'timeout = "2s"\n'
        '[[steps]]\nname = "hi"\nsend = "hello"\n'
        '[[steps]]\nexpect = "^hello"\ntimeout = "500ms"\n'
        "[[steps]]\nwait = 0.25\n"
        "[[steps]]\nping = true\n"
        '[[steps]]\nclose = { code = 4000, reason = "done" }\n'
        "[[steps]]\nexpect_close = 4000\n"
    )
    kinds = [Send, Expect, Wait, Ping, Close, ExpectClose]
    for script in (from_yaml, from_toml):
        assert [type(step) for step in script.steps] == kinds
        assert [step.index for step in script.steps] == [1, 2, 3, 4, 5, 6]
        assert script.steps[0].timeout == 2.0 and script.steps[1].timeout == 0.5
        assert script.steps[2].seconds == 0.25
        assert (script.steps[4].code, script.steps[4].reason) == (4000, "done")
        assert script.steps[5].code == 4000
    # YAML steps know their line; TOML ones do not.
    assert [step.line for step in from_yaml.steps] == [3, 4, 5, 6, 7, 8]
    assert from_toml.steps[0].line is None
    assert from_yaml.steps[0].label == 'step 1 "hi" (send)'


def test_the_default_timeout():
    (step,) = yaml_script("steps:\n  - expect: x\n").steps
    assert step.timeout == DEFAULT_TIMEOUT


def test_send_payloads_and_variables():
    script = yaml_script(
        "vars: {user: alice, n: 3}\nsteps:\n"
        "  - send: 'hi ${user} $${literal}'\n"
        "  - send: {json: {user: '${user}', n: '${n}', text: 'n=${n}'}}\n"
        "  - send: {hex: 'de ad'}\n"
        "  - send: {base64: '3q0='}\n"
    )
    variables = dict(script.variables)
    rendered = [step.render(variables) for step in script.steps]
    assert rendered == [
        (b"hi alice ${literal}", True),
        (b'{"user":"alice","n":3,"text":"n=3"}', True),
        (b"\xde\xad", False),
        (b"\xde\xad", False),
    ]


def test_regex_check_captures_named_and_numbered_groups():
    (step,) = yaml_script(
        "steps:\n  - expect: 'id=(?P<id>\\d+) (\\w+)'\n    capture: {word: 2}\n"
    ).steps
    assert step.sets == {"id", "word"}
    checked = step.matcher.check(True, b"id=42 ok", {}, dict(step.captures))
    assert checked.ok and checked.values == {"id": "42", "word": "ok"}
    missed = step.matcher.check(True, b"nothing", {}, dict(step.captures))
    assert (
        not missed.ok
        and missed.why
        == "expected text matching 'id=(?P<id>\\\\d+) (\\\\w+)', got text \"nothing\""
    )
    binary = step.matcher.check(False, b"id=42 ok", {}, dict(step.captures))
    assert not binary.ok and "got binary" in binary.why


def test_a_variable_in_a_regex_matches_literally():
    script = yaml_script("vars: {v: 'a.b'}\nsteps:\n  - expect: '^${v}$'\n")
    matcher = script.steps[0].matcher
    assert matcher.check(True, b"a.b", {"v": "a.b"}, {}).ok
    assert not matcher.check(True, b"axb", {"v": "a.b"}, {}).ok


def test_json_checks_and_captures():
    script = yaml_script(
        "steps:\n"
        "  - expect: {json: '$.items[1].id', equals: 7}\n"
        "    capture: {name: \"$.items[1]['the name']\"}\n"
        "  - expect: {json: {$.ok: true, $.n: 1}}\n"
        "  - expect: {json: $.token}\n"
    )
    first, second, third = script.steps
    doc = b'{"items": [{"id": 1}, {"id": 7, "the name": "seven"}]}'
    assert first.matcher.check(True, doc, {}, dict(first.captures)).values == {"name": "seven"}
    assert not first.matcher.check(True, b'{"items": []}', {}, {}).ok
    assert second.matcher.check(True, b'{"ok": true, "n": 1}', {}, {}).ok
    # JSON's true is not 1, and 1 is not true.
    assert not second.matcher.check(True, b'{"ok": 1, "n": 1}', {}, {}).ok
    assert not second.matcher.check(True, b'{"ok": true, "n": true}', {}, {}).ok
    assert third.matcher.check(True, b'{"token": null}', {}, {}).ok
    absent = third.matcher.check(True, b"{}", {}, {})
    assert not absent.ok and absent.why.startswith("$.token is missing")
    assert not third.matcher.check(True, b"not json", {}, {}).ok


def test_exact_text_and_bytes():
    script = yaml_script(
        "vars: {u: x}\nsteps:\n  - expect: {text: 'hi ${u}'}\n  - expect: {hex: '00 01'}\n"
    )
    text, data = (step.matcher for step in script.steps)
    assert text.check(True, b"hi bob", {"u": "bob"}, {}).ok
    assert not text.check(True, b"hi bob!", {"u": "bob"}, {}).ok
    assert data.check(False, b"\x00\x01", {}, {}).ok
    assert not data.check(True, b"\x00\x01", {}, {}).ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list\n", "s.yaml: a script is a table with a list of steps"),
        ("steps: []\n", "steps must be a non-empty list"),
        ("stepz: []\n", "unknown key 'stepz'"),
        ("steps:\n  - send: a\n    expect: b\n", "line 2, step 1: a step needs exactly one of"),
        ("steps:\n  - send: {yaml: x}\n", "line 2, step 1 (send): send: unknown key 'yaml'"),
        ("steps:\n  - send: {hex: zz}\n", "hex 'zz' is not valid hex"),
        ("steps:\n  - expect: {regex: a, text: b}\n", "exactly one of regex, text"),
        ("steps:\n  - expect: {text: a, equals: b}\n", "equals goes with json"),
        ("steps:\n  - expect: {json: '$.a b'}\n", "JSON path '$.a b': unexpected ' b'"),
        ("steps:\n  - expect: a\n    capture: {x: 1}\n", "the regex has no group 1"),
        ("steps:\n  - expect: {text: a}\n    capture: {x: 1}\n", "capture needs a regex or json"),
        ("steps:\n  - send: a\n    capture: {x: 1}\n", "send: unknown key 'capture'"),
        ("steps:\n  - wait: 1s\n    timeout: 2s\n", "a wait step has no timeout"),
        ("steps:\n  - ping: " + "x" * 126 + "\n", "ping payload is 126 bytes: at most 125"),
        ("steps:\n  - close: 1005\n", "1005 is not a code to send"),
        (
            "steps:\n  - expect_close: {code: 1000, why: x}\n",
            "expect_close takes true, a close code",
        ),
        (
            "steps:\n  - expect_close: true\n  - send: x\n",
            "the connection is closed after an expect_close",
        ),
        ("steps:\n  - send: '${later}'\n  - expect: '(?P<later>.)'\n", "${later} is not set"),
        ("steps:\n  - send: '${9x}'\n", "'9x' is not a variable name"),
        (
            "timeout: 0\nsteps:\n  - send: a\n",
            "timeout must be a duration such as 2s or 500ms, more than zero",
        ),
        ("vars: {when: 2024-01-01}\nsteps:\n  - send: a\n", "is not a JSON value"),
        ("steps:\n  - send: a\n - bad\n", "not valid YAML: "),
    ],
)
def test_invalid_scripts_name_the_problem(text, message):
    with pytest.raises(ConfigError) as caught:
        yaml_script(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_toml_errors_carry_the_line():
    with pytest.raises(ConfigError, match=r"s.toml: not valid TOML: .*line 2"):
        toml_script("[[steps]]\nsend = = 1\n")


def test_formats_by_suffix():
    assert ScriptFormat.for_name("a.YML") is ScriptFormat.YAML
    assert ScriptFormat.for_name("a.toml") is ScriptFormat.TOML
    with pytest.raises(ConfigError, match=r"a script is a \.yaml, \.yml or \.toml file"):
        ScriptFormat.for_name("a.json")


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("$", ()),
        ("$.a.b", ("a", "b")),
        ("a.b", ("a", "b")),
        ("$.list[0].x", ("list", 0, "x")),
        ("$['odd key'][-1]", ("odd key", -1)),
        ('$["q\\"d"]', ('q"d',)),
    ],
)
def test_json_paths_parse(path, parts):
    assert JSONPath.parse(path).parts == parts


def test_json_paths_find():
    doc = {"a": [{"b": None}], "n": 0}
    assert JSONPath.parse("$.a[0].b").find(doc) == (True, None)
    assert JSONPath.parse("$.a[1]").find(doc) == (False, None)
    assert JSONPath.parse("$.n.x").find(doc) == (False, None)
    assert JSONPath.parse("$.a.b").find(doc) == (False, None)
    with pytest.raises(JSONPathError):
        JSONPath.parse("$.a[x]")


def test_how_a_connection_end_fails_a_step():
    step = yaml_script("steps:\n  - name: w\n    expect: x\n").steps[0]

    def end(code, reason="", error=None):
        return ConnectionEnd("ws://h/", code, reason, error).failure(step, "a message")

    assert isinstance(end(1000), CheckFailed)  # a clean close: the expectation failed
    assert isinstance(end(1001), CheckFailed)
    assert isinstance(end(None), ConnectionLost)
    assert isinstance(end(1006), ConnectionLost)
    assert isinstance(end(1011, "boom"), PeerProtocolError)
    assert isinstance(end(1000, error=OperationTimeout("no pong")), OperationTimeout)
    assert str(end(1011, "boom")) == (
        'step 1 "w" (expect): ws://h/ closed the connection with 1011 (internal error) "boom"'
    )


def test_check_close():
    step = yaml_script("steps:\n  - expect_close: 4000\n").steps[0]
    assert check_close(step, 4000, None, ConnectionEnd("p", 4000, "x")) == '4000 (application) "x"'
    with pytest.raises(CheckFailed, match="expected close code 4000, got 1000"):
        check_close(step, 4000, None, ConnectionEnd("p", 1000))
    with pytest.raises(CheckFailed, match="expected close reason 'a'"):
        check_close(step, None, "a", ConnectionEnd("p", 1000, "b"))
    with pytest.raises(ConnectionLost):
        check_close(step, 4000, None, ConnectionEnd("p", 1006))


def test_the_junit_report():
    script = yaml_script(
        "name: suite\nsteps:\n  - send: a\n  - {name: reply, expect: b}\n  - send: c\n"
    )
    first, second, _ = script.steps
    report = ScriptReport(script)
    report.results.append(StepResult(first, StepStatus.PASSED, 0.5, 'text "a"'))
    error = failed(second, "expected text matching 'b', got text \"<&>\"")
    report.results.append(StepResult(second, StepStatus.FAILED, 0.25, error=error))
    report.error = error
    report.skip_rest()
    root = ET.fromstring(report.junit(timestamp="2026-01-01T00:00:00+00:00"))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "suite", "3", "1", "1",
    )  # fmt: skip
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["1 send", "2 reply", "3 send"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == str(error)
    assert cases[2].find("skipped") is not None
    # A failure outside the steps (opening) is one more case.
    opening = ScriptReport(script)
    opening.fail_outside_steps(ConnectionLost("refused"))
    names = [c.get("name") for c in ET.fromstring(opening.junit()).iter("testcase")]
    assert names == ["1 send", "2 reply", "3 send", "connection"]


def test_junit_xml_escapes_and_counts():
    document = junit_xml(
        "s",
        [
            TestCase("a", "s", 1.0),
            TestCase("b", "s", failure=("T", 'x < y & "z"')),
            TestCase("c", "s", skipped="no"),
        ],
    )
    suite = ET.fromstring(document).find("testsuite")
    assert suite is not None and suite.get("time") == "1.000000"
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("message") == 'x < y & "z"'


def test_expecting_the_server_to_drop_the_connection():
    step = yaml_script("steps:\n  - expect_close: 1006\n").steps[0]
    dropped = ConnectionEnd("p", None, error=ConnectionLost("reset"))
    assert check_close(step, 1006, None, dropped) == "no close frame"
    with pytest.raises(CheckFailed, match="expected close code 1006, got 1000"):
        check_close(step, 1006, None, ConnectionEnd("p", 1000))


def test_json_keys_stay_text_and_a_regex_made_invalid_by_a_value_fails_the_step():
    script = yaml_script(
        "vars: {k: {a: 1}, n: 'x,'}\nsteps:\n  - send: {json: {'${k}': '${k}'}}\n  - expect: 'a{${n}}'\n"
    )
    send, expect = script.steps
    variables = dict(script.variables)
    assert send.render(variables) == (b'{"{\\"a\\":1}":{"a":1}}', True)
    # a{1,0} does not compile: the step fails with why, no traceback.
    checked = expect.matcher.check(True, b"a", {"n": "1,0"}, {})
    assert not checked.ok and "(variables filled in) is not valid" in checked.why
    assert expect.matcher.check(True, b"a{x,}", variables, {}).ok  # a{x\,} matches literally
