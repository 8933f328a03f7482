"""Output: JSON lines, the prepared per-message events, and how they are buffered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from netkit import console
from netkit.console import ATOMIC_WRITE, Output


class Recorder:
    """Stands in for sys.stdout: keeps every write, to check sizes and order."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, data: str) -> int:
        self.writes.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in "".join(self.writes).splitlines()]


def record(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    # In the test itself, not a fixture: pytest's capture resets sys.stdout after fixtures.
    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    return recorder


@pytest.mark.timeout(10)
def test_prepared_event_is_the_line_event_would_print(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = record(monkeypatch)
    out = Output(json_mode=True)
    fixed = {"peer": '127.0.0.1:1 "%s" é', "n": None, "tags": [1, 2]}
    out.prepared_event("message", ("type", "size", "ok"), **fixed)("bin%ary", 32, True)
    out.event("message", None, **fixed, type="bin%ary", size=32, ok=True)
    prepared, plain = stdout.lines()
    assert list(prepared) == list(plain)  # same fields, same order
    assert prepared.pop("ts") != 0 and plain.pop("ts") != 0
    assert (
        prepared
        == plain
        == {"event": "message", **fixed, "type": "bin%ary", "size": 32, "ok": True}
    )


@pytest.mark.timeout(10)
def test_prepared_lines_wait_for_the_next_event_in_a_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = record(monkeypatch)
    out = Output(json_mode=True)
    log = out.prepared_event("message", ("size",))

    async def main() -> None:
        log(1)
        log(2)
        assert stdout.writes == []  # buffered: a write(2) per message would cost more
        out.event("close", None, code=1000)
        assert [line["event"] for line in stdout.lines()] == ["message", "message", "close"]
        assert len(stdout.writes) == 1
        log(3)
        # ... or for LAZY_FLUSH_S at most: wait for that timer, not for a fixed time.
        while len(stdout.writes) < 2:
            await asyncio.sleep(console.LAZY_FLUSH_S / 5)
        assert stdout.lines()[-1]["size"] == 3

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_no_write_exceeds_the_atomic_pipe_size(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = record(monkeypatch)
    out = Output(json_mode=True)
    log = out.prepared_event("message", ("size",), peer="127.0.0.1:40000")

    async def main() -> None:
        for i in range(2000):
            log(i)
        out.flush()

    asyncio.run(main())
    assert len(stdout.writes) > 1
    assert max(len(w) for w in stdout.writes) <= ATOMIC_WRITE
    assert all(w.endswith("\n") for w in stdout.writes)  # whole lines only
    assert [line["size"] for line in stdout.lines()] == list(range(2000))


@pytest.mark.timeout(10)
def test_outside_a_loop_every_line_is_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = record(monkeypatch)
    out = Output(json_mode=True)
    out.prepared_event("message", ("size",))(7)
    assert stdout.lines()[0]["size"] == 7


@pytest.mark.timeout(10)
def test_prepared_event_without_json_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = record(monkeypatch)
    Output(json_mode=False).prepared_event("message", ("size",))(7)
    assert stdout.writes == []


@pytest.mark.timeout(30)
def test_buffered_lines_are_written_at_exit_even_unbuffered() -> None:
    # The loop ends before the flush timer fires; the process exits without another event.
    code = textwrap.dedent(
        """
        import asyncio
        from netkit.console import Output
        out = Output(json_mode=True)
        log = out.prepared_event("message", ("size",))
        async def main():
            for i in range(3):
                log(i)
        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PYTHONUNBUFFERED": "1", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["size"] for line in done.stdout.splitlines()] == [0, 1, 2]
