"""Tests for netkit.net.backends_file (the file read, reloaded, watched) and for the pool's
health checks following a reload (HealthChecker.watch/unwatch through BalancedPool.apply),
in-process on real loopback sockets."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from netkit.core.balance.backends import Backend, parse_backends
from netkit.errors import ConfigError
from netkit.net.backends_file import BackendsFile, read_backends_file
from netkit.net.echo import EchoConnection
from netkit.net.upstreams import balanced_pool
from tests.net.conftest import Runner, Serve

pytestmark = pytest.mark.timeout(30)


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_read_backends_file_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read backends file .*No such file"):
        read_backends_file(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read backends file"):
        read_backends_file(tmp_path / "bin.txt")


def test_a_reload_follows_the_file_and_the_checks_follow_the_pool(
    run: Runner, serve: Serve, tmp_path: Path
) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as one, serve(EchoConnection) as two:
            path = tmp_path / "pool.txt"
            write(path, f"{one.endpoint}\n")
            upstream = balanced_pool(read_backends_file(path), check_interval=0.05)
            events: list[tuple[str, dict[str, Any]]] = []
            watcher = BackendsFile(
                path, upstream, on_reload=lambda k, f: events.append((k, f)), interval=0.02
            )
            upstream.start()
            checker = upstream.checker
            assert checker is not None
            async with watcher.watching():
                assert not watcher.changed()
                write(path, f"# two now\n{two.endpoint},weight=2\n")
                async with asyncio.timeout(5):
                    while not events:
                        await asyncio.sleep(0.01)
                kind, fields = events[0]
                assert kind == "reloaded" and fields["trigger"] == "file changed"
                assert fields["added"] == [str(two.endpoint)]
                assert fields["removed"] == [str(one.endpoint)]
                assert [s.name for s in checker.states] == [str(two.endpoint)]
                new = upstream.pool.state(str(two.endpoint))
                async with asyncio.timeout(5):  # the newcomer is checked
                    while not new.last_check:
                        await asyncio.sleep(0.01)
                assert new.last_check.startswith("connected")
                write(path, "127.0.0.1:1,weight=999\n")
                assert watcher.reload("SIGHUP") is None
                assert events[-1][0] == "reload_failed"
                assert "line 1" in events[-1][1]["error"]
                assert [s.name for s in upstream.pool.states] == [str(two.endpoint)]
                assert not watcher.changed()  # the SIGHUP read it: the poll will not again
            await upstream.stop()

    run(main())


def test_a_removed_backend_is_checked_no_more(run: Runner, serve: Serve) -> None:
    async def main() -> None:
        async with serve(EchoConnection) as live:
            dead = "127.0.0.1:1"  # refused: each check of it fails
            upstream = balanced_pool(
                parse_backends([str(live.endpoint), dead]), check_interval=0.02, fall=1
            )
            upstream.start()
            checker = upstream.checker
            assert checker is not None
            gone = upstream.pool.state(dead)
            async with asyncio.timeout(5):
                while not gone.check_failures:
                    await asyncio.sleep(0.01)
            upstream.apply(parse_backends([str(live.endpoint)]))
            failures, checks = gone.check_failures, checker.checks
            async with asyncio.timeout(5):  # the live one is checked on...
                while checker.checks < checks + 6:
                    await asyncio.sleep(0.01)
            assert gone.check_failures <= failures + 1  # ...the removed one at most once more
            assert checker.states == upstream.pool.states
            await upstream.stop()

    run(main())


def test_what_the_command_prepares_applies_and_its_refusal_fails_the_reload(
    run: Runner, tmp_path: Path
) -> None:
    async def main() -> None:
        path = tmp_path / "pool.txt"
        write(path, "127.0.0.1:1\n")
        upstream = balanced_pool(read_backends_file(path))
        events: list[tuple[str, dict[str, Any]]] = []

        def prepare(backends: list[Backend]) -> list[Backend]:
            if any(b.backup for b in backends):
                raise ConfigError("no backups today")
            return [replace(b, weight=7) for b in backends]

        watcher = BackendsFile(
            path, upstream, on_reload=lambda k, f: events.append((k, f)), prepare=prepare
        )
        write(path, "127.0.0.1:1\n127.0.0.1:2\n")
        watcher.reload()
        assert [s.backend.weight for s in upstream.pool.states] == [7, 7]
        write(path, "127.0.0.1:1\n127.0.0.1:3,backup\n")
        assert watcher.reload() is None
        assert events[-1] == ("reload_failed", events[-1][1])
        assert events[-1][1]["error"] == "no backups today"
        assert [s.name for s in upstream.pool.states] == ["127.0.0.1:1", "127.0.0.1:2"]

    run(main())
