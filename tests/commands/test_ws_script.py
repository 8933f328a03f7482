"""ws-client --script end to end: the CLI as a subprocess running conversation files (YAML and
TOML) against the websockets library's server in a thread (which records what it received and
how the connection closed) and against ``netkit ws-server``; exit codes, the one-line error
naming the failed step, and the --junit report read back with xml.etree."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection

from netkit.cli import main
from tests.commands.conftest import NETKIT, assert_one_line_error, json_lines, run_netkit
from tests.commands.test_ws_client import DeafServer, Handler, LibServer, Seen, echo

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lib_server() -> Iterator[Callable[[Handler], LibServer]]:
    """Start websockets servers in threads (test_ws_client's), stopped after the test."""
    started: list[LibServer] = []

    def start(handler: Handler = echo) -> LibServer:
        started.append(LibServer(handler))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def junit_cases(path: Path) -> list[ET.Element]:
    suites = ET.parse(path).getroot()
    assert suites.tag == "testsuites"
    (suite,) = suites.findall("testsuite")
    return suite.findall("testcase")


def outcome(case: ET.Element) -> str:
    if case.find("failure") is not None:
        return "failed"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


# --- servers --------------------------------------------------------------------------------


async def echo_then_close_on_quit(ws: ServerConnection, seen: Seen) -> None:
    """Echo; on "quit", close with 4001 "bye"."""
    async for message in ws:
        seen.messages.append(message)
        if message == "quit":
            await ws.close(4001, "bye")
            return
        await ws.send(message)


async def login_service(ws: ServerConnection, seen: Seen) -> None:
    """A JSON service: a welcome with a session id, then answers that need that id."""
    await ws.send(json.dumps({"type": "welcome", "session": "s-4711", "limits": {"max": 3}}))
    async for message in ws:
        seen.messages.append(message)
        request = (
            json.loads(message) if isinstance(message, str) and message.startswith("{") else {}
        )
        if request.get("session") == "s-4711" and request.get("max") == 3:
            await ws.send(json.dumps({"status": "ok", "user": request.get("user")}))
        elif isinstance(message, str) and message.startswith("whoami "):
            await ws.send(f"token={message.split()[1]}")
        else:
            await ws.send(json.dumps({"status": "denied"}))


async def silent(ws: ServerConnection, seen: Seen) -> None:
    """Reads and records, never answers."""
    async for message in ws:
        seen.messages.append(message)


async def close_1011_on_message(ws: ServerConnection, seen: Seen) -> None:
    async for message in ws:
        seen.messages.append(message)
        await ws.close(1011, "internal")
        return


# --- conversations that pass ----------------------------------------------------------------

EVERY_STEP = """\
name: every step
timeout: 5s
vars:
  greeting: hello
steps:
  - name: greet
    send: "${greeting} world"
  - expect: '^hello (?P<who>\\w+)$'
  - send: {json: {op: echo, who: "${who}", n: 2}}
  - expect: {json: {"$.op": echo, "$.n": 2}}
  - send: {text: "exact ${who}"}
  - expect: {text: "exact world"}
  - send: {hex: "00 ff 10"}
  - expect: {base64: "AP8Q"}
  - ping: are you there
  - wait: 10ms
  - name: goodbye
    close: {code: 1000, reason: done}
  - expect_close: {code: 1000}
"""


def test_a_conversation_that_passes(lib_server, tmp_path):
    server = lib_server()
    script = write(tmp_path, "every.yaml", EVERY_STEP)
    report = tmp_path / "report.xml"
    result = run_netkit("ws-client", server.url(), "--script", str(script), "--junit", str(report))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 12 and all(line.startswith("ok") for line in lines), result.stdout
    assert "script passed: 12 steps" in result.stderr
    seen = server.connection()
    assert seen.messages == [
        "hello world",
        '{"op":"echo","who":"world","n":2}',
        "exact world",
        b"\x00\xff\x10",
    ]
    assert (seen.close_code, seen.close_reason) == (1000, "done")
    cases = junit_cases(report)
    assert [c.get("name") for c in cases][:3] == ["1 greet", "2 expect", "3 send"]
    assert len(cases) == 12 and {outcome(c) for c in cases} == {"passed"}


def test_the_example_file_runs_against_netkit_ws_server(netkit_server):
    server = netkit_server("ws-server", "127.0.0.1:0")
    example = ROOT / "examples" / "conversation.yaml"
    result = run_netkit("ws-client", server.listening["url"], "--script", str(example), "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all(e["status"] == "passed" for e in steps)
    assert steps[1]["name"] == "greeting comes back" and "who='alice'" in steps[1]["detail"]
    (summary,) = [e for e in events if e["event"] == "script"]
    assert summary["ok"] is True and summary["passed"] == summary["steps"] == len(steps)
    # The binary step's messages carry their payload as base64, as every JSON event does.
    binary = [e for e in events if e["event"] in ("sent", "received") and e["type"] == "binary"]
    assert [(e["data"], e["encoding"]) for e in binary] == [("3q2+7w==", "base64")] * 2


def test_captures_from_regex_groups_and_json_paths_are_sent_later(lib_server, tmp_path):
    server = lib_server(login_service)
    script = write(
        tmp_path,
        "login.toml",
        """\
[vars]
user = "alice"

[[steps]]
name = "welcome"
expect = { json = "$.type", equals = "welcome" }
capture = { sid = "$.session", max = "$.limits.max" }

[[steps]]
send = { json = { session = "${sid}", max = "${max}", user = "${user}" } }

[[steps]]
name = "logged in"
expect = { json = { "$.status" = "ok", "$.user" = "${user}" } }

[[steps]]
send = "whoami ${sid}"

[[steps]]
expect = 'token=(s-\\d+)'
capture = { token = 1 }

[[steps]]
send = "again ${token}"
""",
    )
    result = run_netkit("ws-client", server.url(), "--script", str(script), "--json")
    assert result.returncode == 0, result.stderr
    seen = server.connection()
    # The captured number went out as a number; the regex group went out in a later send.
    assert json.loads(seen.messages[0]) == {"session": "s-4711", "max": 3, "user": "alice"}
    assert seen.messages[1:] == ["whoami s-4711", "again s-4711"]


# --- conversations that fail ----------------------------------------------------------------

FAILS_AT_LOGIN = """\
name = "login flow"
timeout = "5s"

[[steps]]
send = { json = { user = "mallory" } }

[[steps]]
expect = { json = "$.type", equals = "welcome" }

[[steps]]
name = "login"
expect = { json = "$.status", equals = "ok" }

[[steps]]
send = "never sent"
"""


def test_a_conversation_that_fails_at_a_named_step(lib_server, tmp_path):
    server = lib_server(login_service)
    script = write(tmp_path, "fails.toml", FAILS_AT_LOGIN)
    report = tmp_path / "report.xml"
    result = run_netkit("ws-client", server.url(), "--script", str(script), "--junit", str(report))
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr)
    message = 'step 3 "login" (expect): expected $.status == "ok", got "denied"'
    assert message in result.stderr
    # The steps that passed are listed; the step after the failure never ran.
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["ok", "1"], ["ok", "2"]]
    seen = server.connection()
    assert "never sent" not in seen.messages
    assert seen.close_code == 1000  # the run closes the connection properly after a failure
    cases = junit_cases(report)
    assert [(c.get("name"), outcome(c)) for c in cases] == [
        ("1 send", "passed"),
        ("2 expect", "passed"),
        ("3 login", "failed"),
        ("4 send", "skipped"),
    ]
    failure = cases[2].find("failure")
    assert failure is not None
    assert failure.get("message") == message and failure.get("type") == "CheckFailed"
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("failures"), suite.get("skipped")) == (
        "login flow",
        "1",
        "1",
    )


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("step", 'step 2 "reply" (expect): no message arrived within 0.3s'),
        ("script", 'step 2 "reply" (expect): no message arrived within 0.3s'),
        ("run", 'step 2 "reply" (expect): the run did not finish within its deadline (--timeout)'),
    ],
)
def test_a_timeout_is_exit_4_naming_the_step(lib_server, tmp_path, where, expected):
    server = lib_server(silent)
    step_timeout = "    timeout: 300ms\n" if where == "step" else ""
    script = write(
        tmp_path,
        "silent.yaml",
        ("timeout: 300ms\n" if where == "script" else "timeout: 30s\n")
        + f"steps:\n  - send: anyone\n  - name: reply\n    expect: .\n{step_timeout}",
    )
    report = tmp_path / "report.xml"
    run_timeout = ["--timeout", "500ms"] if where == "run" else []
    started = time.monotonic()
    result = run_netkit(
        "ws-client", server.url(), "--script", str(script), "--junit", str(report), *run_timeout
    )
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 20  # the short timeout, not the 30 s default
    assert_one_line_error(result.stderr)
    assert expected in result.stderr
    failure = junit_cases(report)[1].find("failure")
    assert failure is not None and failure.get("type") == "OperationTimeout"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("ping: hello", 'step 2 "deaf" (ping): no pong arrived within 0.3s'),
        (
            "close: true",
            'step 2 "deaf" (close): the server did not answer our close frame within 0.3s',
        ),
    ],
)
def test_an_unanswered_ping_or_close_is_exit_4(tmp_path, step, expected):
    # The server accepts the upgrade and then ignores every frame (pings and close included).
    server = DeafServer(hang_up=False)
    script = write(
        tmp_path,
        "deaf.yaml",
        f"steps:\n  - send: x\n  - name: deaf\n    {step}\n    timeout: 300ms\n",
    )
    try:
        result = run_netkit(
            "ws-client", f"ws://127.0.0.1:{server.port}/", "--script", str(script),
            "--close-timeout", "300ms", "--ping-interval", "0",
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result.stderr)
    assert expected in result.stderr
    assert server.opcodes[-1] == 0x8  # the run still sent its close frame


def test_expect_close_checks_the_servers_code_and_reason(lib_server, tmp_path):
    server = lib_server(echo_then_close_on_quit)
    good = write(
        tmp_path,
        "good.yaml",
        "steps:\n  - send: quit\n  - expect_close: {code: 4001, reason: bye}\n",
    )
    bad = write(
        tmp_path, "bad.yaml", "steps:\n  - send: quit\n  - name: clean\n    expect_close: 1000\n"
    )
    passed = run_netkit("ws-client", server.url(), "--script", str(good))
    failed = run_netkit("ws-client", server.url(), "--script", str(bad))
    assert passed.returncode == 0, passed.stderr
    assert "4001" in passed.stdout
    assert failed.returncode == 1, failed.stderr
    assert_one_line_error(failed.stderr)
    assert (
        'step 2 "clean" (expect_close): expected close code 1000, got 4001 (application) "bye"'
        in failed.stderr
    )


def test_the_server_closing_with_an_error_code_while_a_step_waits_is_7(lib_server, tmp_path):
    server = lib_server(close_1011_on_message)
    script = write(tmp_path, "c.yaml", "steps:\n  - send: x\n  - expect: reply\n")
    result = run_netkit("ws-client", server.url(), "--script", str(script))
    assert result.returncode == 7, result.stderr
    assert_one_line_error(result.stderr)
    assert (
        "step 2 (expect):" in result.stderr and '1011 (internal error) "internal"' in result.stderr
    )


def test_a_connection_that_fails_is_3_and_a_junit_case(tmp_path, unused_tcp_port):
    script = write(tmp_path, "c.yaml", "steps:\n  - send: x\n")
    report = tmp_path / "report.xml"
    url = f"ws://127.0.0.1:{unused_tcp_port}/"
    result = run_netkit("ws-client", url, "--script", str(script), "--junit", str(report))
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    cases = junit_cases(report)
    assert [(c.get("name"), outcome(c)) for c in cases] == [
        ("1 send", "skipped"),
        ("connection", "failed"),
    ]


def test_ctrl_c_closes_with_1001_exits_130_and_writes_the_report(lib_server, tmp_path):
    server = lib_server()
    script = write(
        tmp_path, "long.yaml", "steps:\n  - send: x\n  - expect: x\n  - wait: 60s\n  - send: y\n"
    )
    report = tmp_path / "report.xml"
    proc = subprocess.Popen(
        [
            *NETKIT,
            "ws-client",
            server.url(),
            "--script",
            str(script),
            "--junit",
            str(report),
            "--json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        while b'"kind":"expect"' not in proc.stdout.readline():  # bounded by the pytest timeout
            pass
        proc.send_signal(signal.SIGINT)  # during the wait step
        rc = proc.wait(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 130
    seen = server.connection()
    assert (seen.close_code, seen.close_reason) == (1001, "going away")
    assert seen.messages == ["x"]
    outcomes = [outcome(case) for case in junit_cases(report)]
    assert outcomes == ["passed", "passed", "skipped", "skipped"]


# --- files that are not scripts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "a.yaml",
            "steps:\n  - send: a\n  - expect: {regexp: x}\n",
            "a.yaml: line 3, step 2 (expect): expect: unknown key 'regexp'",
        ),
        ("b.yaml", "steps:\n  - send: a\n   bad: [\n", "b.yaml: not valid YAML: "),
        ("c.toml", "[[steps]]\nsend = \n", "c.toml: not valid TOML: Invalid value (at line 2"),
        (
            "d.toml",
            '[[steps]]\nname = "hi"\nsend = "${nobody}"\n',
            'd.toml: step 1 "hi" (send): ${nobody} is not set',
        ),
        (
            "e.yaml",
            "steps:\n  - close: true\n  - send: late\n",
            "line 3, step 2 (send): only expect_close may follow a close step",
        ),
        (
            "f.yaml",
            "steps:\n  - ping: x\n    timeout: soon\n",
            "line 2, step 1 (ping): timeout 'soon' is not a duration",
        ),
        ("g.txt", "steps: []\n", "g.txt: a script is a .yaml, .yml or .toml file"),
    ],
)
def test_an_invalid_file_is_a_usage_error_naming_the_line_and_step(
    tmp_path, capsys, name, text, expected
):
    script = write(tmp_path, name, text)
    # In-process (the CLI's own entry point): the file is refused before anything connects,
    # and nothing listens at that address.
    status = main(["ws-client", "ws://127.0.0.1:9/", "--script", str(script)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert_one_line_error(err)
    assert expected in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["hello"], "--script cannot be used with MESSAGES"),
        (["--count", "1"], "--script cannot be used with --count"),
        (["--expect", "x"], "--script cannot be used with --expect"),
    ],
)
def test_script_is_a_mode_of_its_own(tmp_path, capsys, args, expected):
    script = write(tmp_path, "s.yaml", "steps:\n  - send: x\n")
    status = main(["ws-client", "ws://127.0.0.1:9/", *args, "--script", str(script)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert_one_line_error(err)
    assert expected in err


def test_junit_needs_a_script(capsys):
    status = main(["ws-client", "ws://127.0.0.1:9/", "hello", "--junit", "r.xml"])
    err = capsys.readouterr().err
    assert status == 2 and "--junit reports a --script run" in err, err


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""

    async def pick() -> int:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return port

    return asyncio.run(pick())
